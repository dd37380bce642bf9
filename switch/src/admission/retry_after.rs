//! When a request refused at admission may try again: what both the rate
//! limit and the lockout answer, and what `Retry-After` carries.

/// A refused request may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub us: u64,
}

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1: what `Retry-After` carries.
    pub fn seconds(self) -> u64 {
        self.us.div_ceil(1_000_000).max(1)
    }
}
