//! Measurement accounting, conditions and argument resolution (pure).

pub mod accounting;
pub mod args;
pub mod build_run;
pub mod condition;
pub mod history;
pub mod jsonpath;
pub mod judge;
pub mod rollout_args;
pub mod run;
pub mod template;
pub mod validation;
pub mod value;
