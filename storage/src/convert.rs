//! Number conversions the journal and both backends share, each checked
//! once here instead of a silent `as` at every use.

/// A `u64` for a SQL INTEGER or bigint. Values past `i64::MAX` are refused
/// by `JournalRecord::validate` before they get here; saturating keeps the
/// writers total anyway.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A count of records or rows as the `u64` the counters and the databases
/// report. `usize` is at most 64 bits on every target Rust supports, so
/// the saturation never happens; it only keeps the conversion total.
pub(crate) fn count_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}
