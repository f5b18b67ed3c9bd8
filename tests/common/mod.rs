//! The planner tests' helpers, which live in the test support crate
//! (`sluice_test_support::world`); this module keeps `mod common;` working for the tests that
//! still import them through it.
#![allow(unused_imports)]

pub use sluice_test_support::world::*;
