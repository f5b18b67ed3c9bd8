//! The one clock of the test cluster: wall time derived from tokio's clock, so that a test running
//! with a paused tokio clock (`#[tokio::test(start_paused = true)]`) drives every simulated
//! controller, timestamp and delay.

use std::time::Duration;

use jiff::Timestamp;

/// Wall-clock time that advances with `tokio::time::Instant`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall: Timestamp,
    base: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::starting_at(Timestamp::now())
    }
}

impl Clock {
    /// A clock reading `start` now and advancing with tokio's clock from here on.
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            base_wall: start,
            base: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_wall + elapsed_span(elapsed)
    }

    /// The tokio instant matching a wall timestamp (for deadlines).
    pub fn instant_of(&self, at: Timestamp) -> tokio::time::Instant {
        let since = at.duration_since(self.base_wall);
        let secs = since.as_secs_f64().max(0.0);
        self.base + Duration::from_secs_f64(secs)
    }

    /// `now` in the second-precision RFC 3339 form of `metav1.Time`.
    pub fn now_rfc3339(&self) -> String {
        format_time(self.now())
    }

    /// `now` in the microsecond RFC 3339 form of `metav1.MicroTime`.
    pub fn now_micro(&self) -> String {
        self.now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

fn elapsed_span(elapsed: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(elapsed).unwrap_or(jiff::SignedDuration::MAX)
}

/// Formats a timestamp as `metav1.Time` does (seconds, UTC, `Z`).
pub fn format_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses a `metav1.Time` string.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}
