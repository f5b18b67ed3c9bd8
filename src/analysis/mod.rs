//! Measurement accounting, conditions and argument resolution (pure).

pub mod condition;
pub mod value;
