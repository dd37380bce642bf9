//! Time as people and logs read it.

/// `unix_ms` as an RFC 3339 UTC timestamp with milliseconds, as the JSON API
/// and the audit log write times: `2025-11-22T21:20:00.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm). It
    // is written for signed days; from the epoch on every term is positive,
    // so it runs in u64 as it is.
    let seconds = unix_ms / 1000;
    let days = seconds / 86_400;
    let time = seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_763_846_400_123), "2025-11-22T21:20:00.123Z");
        // Leap days, year ends and a century that is not a leap year.
        assert_eq!(rfc3339(951_825_600_000), "2000-02-29T12:00:00.000Z");
        assert_eq!(rfc3339(946_684_799_999), "1999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(94_608_000_000), "1972-12-31T00:00:00.000Z");
    }
}
