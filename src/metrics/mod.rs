//! Metric providers: the I/O half of analysis. Each takes a fully resolved request from
//! [`crate::analysis::run`] and returns a value or an error message for the measurement.

pub mod job;
pub mod judge;
pub mod prometheus;
pub mod web;
