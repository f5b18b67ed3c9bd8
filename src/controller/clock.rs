//! The one clock the controller reads (time is an input: tests replace it).

use std::sync::Arc;

use jiff::Timestamp;

/// The clock the controller reads (tests may replace it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}
