//! Time, as the load tester reads it.
//!
//! - [`Instant`]: the monotonic clock every intended send time, latency,
//!   timeout and tick is read from. It is a `Copy` wrapper of
//!   `std::time::Instant` whose methods inline to the std calls, so reading
//!   time costs the same single `clock_gettime` as before and is as precise
//!   (nanoseconds): the load tester's timing is its product. This is the
//!   crate's one clock module, and the only place `std::time::Instant` is
//!   named, so a reader finds every timer from here.
//! - Wall-clock date fields for requests: DE7 (MMDDhhmmss), DE12 (hhmmss)
//!   and DE13 (MMDD), all in UTC. DE7 is part of the switch's duplicate key
//!   (terminal, STAN, DE7), so it must be the real time: two runs an hour
//!   apart reuse STANs but never DE7.

use std::ops::Add;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::units::digits;

/// A reading of the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
// The one place the crate holds a `std::time::Instant` (see the module
// docs); everything else takes this wrapper.
#[allow(clippy::disallowed_types)]
pub struct Instant(std::time::Instant);

// The std calls themselves, inlined: no extra work per reading.
#[allow(clippy::disallowed_types)]
impl Instant {
    /// Now.
    #[inline]
    pub fn now() -> Instant {
        Instant(std::time::Instant::now())
    }

    /// How long after `earlier` this is; zero if it is not after.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }

    /// How long ago this was.
    #[inline]
    pub fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Panics only past the clock's range (hundreds of years), as std does.
    #[inline]
    fn add(self, later: Duration) -> Instant {
        Instant(self.0 + later)
    }
}

/// For tokio's timers (`sleep_until`): the same reading.
impl From<Instant> for tokio::time::Instant {
    #[inline]
    fn from(instant: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(instant.0)
    }
}

/// Whole days since 1970-01-01 of `seconds` since then, as
/// [`civil_from_days`] takes them.
fn days_of(seconds: u64) -> i64 {
    // At most u64::MAX / 86400, far inside i64: the fallback is never taken.
    i64::try_from(seconds / 86_400).unwrap_or(i64::MAX)
}

/// Date fields for one second of wall-clock time, recomputed only when the
/// second changes (a connection sends thousands of requests a second).
#[derive(Debug, Clone, Default)]
pub struct DateFields {
    second: u64,
    /// DE7, MMDDhhmmss.
    pub transmitted_at: [u8; 10],
}

impl DateFields {
    /// Brings the fields up to `now`.
    pub fn update(&mut self, now: SystemTime) -> &DateFields {
        let second = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second != self.second || self.transmitted_at[0] == 0 {
            self.second = second;
            let (_, month, day) = civil_from_days(days_of(second));
            let in_day = second % 86_400;
            let parts = [
                u64::from(month),
                u64::from(day),
                in_day / 3600,
                in_day / 60 % 60,
                in_day % 60,
            ];
            for (slot, value) in self.transmitted_at.chunks_exact_mut(2).zip(parts) {
                slot.copy_from_slice(&digits::<2>(value));
            }
        }
        self
    }

    /// DE12, hhmmss.
    pub fn local_time(&self) -> &[u8] {
        &self.transmitted_at[4..10]
    }

    /// DE13, MMDD.
    pub fn local_date(&self) -> &[u8] {
        &self.transmitted_at[0..4]
    }
}

/// The current year (UTC).
pub fn current_year() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    civil_from_days(days_of(seconds)).0
}

/// Year, month and day of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Day 1..=31 and month 1..=12 always fit: the fallbacks are never taken.
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 UTC time of `time`, to the second, for reports.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (year, month, day) = civil_from_days(days_of(seconds));
    let in_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let at = UNIX_EPOCH + Duration::from_secs(1_732_300_200); // 2024-11-22 18:30:00
        let mut fields = DateFields::default();
        fields.update(at);
        assert_eq!(&fields.transmitted_at, b"1122183000");
        assert_eq!(fields.local_time(), b"183000");
        assert_eq!(fields.local_date(), b"1122");
        assert_eq!(rfc3339(at), "2024-11-22T18:30:00Z");
    }

    #[test]
    fn instants_add_and_compare_like_std() {
        let start = Instant::now();
        let later = start + Duration::from_millis(5);
        assert!(later > start);
        assert_eq!(
            later.saturating_duration_since(start),
            Duration::from_millis(5)
        );
        assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
        assert_eq!(start.max(later), later);
        let tokio_later: tokio::time::Instant = later.into();
        assert_eq!(
            tokio_later.duration_since(tokio::time::Instant::from(start)),
            Duration::from_millis(5)
        );
        assert!(start.elapsed() < Duration::from_secs(60));
    }
}
