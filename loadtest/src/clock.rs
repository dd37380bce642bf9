//! Wall-clock date fields for requests: DE7 (MMDDhhmmss), DE12 (hhmmss) and
//! DE13 (MMDD), all in UTC. DE7 is part of the switch's duplicate key
//! (terminal, STAN, DE7), so it must be the real time: two runs an hour apart
//! reuse STANs but never DE7.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
            let (_, month, day) = civil_from_days((second / 86_400) as i64);
            let in_day = second % 86_400;
            let parts = [
                month as u64,
                day as u64,
                in_day / 3600,
                in_day / 60 % 60,
                in_day % 60,
            ];
            for (slot, value) in self.transmitted_at.chunks_exact_mut(2).zip(parts) {
                slot[0] = b'0' + (value / 10) as u8;
                slot[1] = b'0' + (value % 10) as u8;
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
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400;
    civil_from_days(days as i64).0
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
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 UTC time of `time`, to the second, for reports.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
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
}
