//! Numbers from one type to another, and into text: counts as `f64` for
//! rates and percentiles, measured floats back to whole numbers, durations
//! in nanoseconds, nanoseconds for people, and numbers as the ASCII digits
//! of ISO 8583 fields.
//!
//! The two conversions Rust can only write with `as` (`u64` to `f64`, `f64`
//! to `u64`) are here and nowhere else, each with why it is safe, so the
//! rest of the crate converts without a silent cast.

use std::time::Duration;

/// `n` as an `f64`, for rates, shares and percentiles. Exact up to 2^53
/// (about 9 * 10^15): no count of requests and no nanosecond latency of a
/// run comes near it, and above it the value is off by less than one part
/// in 2^53, far below what a rate or a percentile shows.
#[allow(clippy::as_conversions)]
#[inline]
pub fn to_f64(n: u64) -> f64 {
    // std has no `From<u64> for f64` because of the rounding above 2^53.
    n as f64
}

/// `x` as a whole number, the fraction cut off (round first to round):
/// negative values and NaN give 0, values past `u64::MAX` give `u64::MAX`.
/// That saturation is what a measured rate, amount or latency should
/// become, and it is exactly what a float-to-integer `as` does.
#[allow(clippy::as_conversions)]
#[inline]
pub fn to_u64_saturating(x: f64) -> u64 {
    // Float-to-integer `as` saturates and maps NaN to 0 (the Rust
    // reference, "numeric cast"); std has no `TryFrom<f64>` to say it.
    x as u64
}

/// `duration` in whole nanoseconds, saturating at `u64::MAX` (584 years),
/// the unit of the latency histograms.
#[inline]
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The ASCII digit of `n`'s last decimal place.
#[inline]
pub fn ascii_digit(n: u64) -> u8 {
    // `n % 10` is below 10, so it always fits and the fallback is never taken.
    b'0' + u8::try_from(n % 10).unwrap_or(0)
}

/// `N` as exactly `W` ASCII digits (the low `W` digits).
pub fn digits<const W: usize>(mut n: u64) -> [u8; W] {
    let mut out = [b'0'; W];
    for slot in out.iter_mut().rev() {
        *slot = ascii_digit(n);
        n /= 10;
    }
    out
}

/// `ns` for people: `850ns`, `42µs`, `1.20ms`, `1.50s`.
pub fn format_ns(ns: u64) -> String {
    let ns_f64 = to_f64(ns);
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 10_000 {
        format!("{:.1}µs", ns_f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.0}µs", ns_f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns_f64 / 1e6)
    } else {
        format!("{:.2}s", ns_f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(4_250), "4.2µs");
        assert_eq!(format_ns(42_000), "42µs");
        assert_eq!(format_ns(1_204_000), "1.20ms");
        assert_eq!(format_ns(1_500_000_000), "1.50s");
    }

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(to_f64(1 << 53), 9_007_199_254_740_992.0);
        assert_eq!(to_u64_saturating(2.9), 2);
        assert_eq!(to_u64_saturating(-1.0), 0);
        assert_eq!(to_u64_saturating(f64::NAN), 0);
        assert_eq!(to_u64_saturating(1e30), u64::MAX);
        assert_eq!(duration_ns(Duration::from_micros(3)), 3_000);
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
    }

    #[test]
    fn numbers_become_fixed_width_digits() {
        assert_eq!(digits::<6>(42), *b"000042");
        assert_eq!(digits::<2>(1234), *b"34");
        assert_eq!(ascii_digit(7), b'7');
        assert_eq!(ascii_digit(19), b'9');
    }
}
