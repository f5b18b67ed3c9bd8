//! Measurement accounting, conditions and argument resolution (pure).

pub mod accounting;
pub mod args;
pub mod condition;
pub mod value;
