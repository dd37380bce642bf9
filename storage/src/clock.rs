//! The crate's one reader of the wall clock.
//!
//! Only bookkeeping columns (when a migration ran, when a benchmark row was
//! made) read it; the records themselves carry the time the switch gave
//! them. Durations in async code are measured with `tokio::time::Instant`,
//! which follows tokio's paused test clock, so there is no monotonic clock
//! here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub(crate) fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
