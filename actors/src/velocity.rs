//! Bucketed sliding windows of approved count and amount, in fixed memory.
//!
//! A [`Ring`] of `K` buckets, each `BUCKET_S` seconds wide, remembers the
//! approvals of the bucket holding "now" and of the `K - 1` before it. An
//! approval is therefore counted for between `(K - 1) * BUCKET_S` and
//! `K * BUCKET_S` seconds: a 6 x 10 s ring is a window of 50 to 60 s. The
//! ring does not store which bucket is current; its owner keeps one `head_s`
//! (the latest second it has seen) for all its rings, so a card pays four
//! bytes for its clock, not four per window.
//!
//! Buckets are small to keep a card near 200 bytes: counts are `u16` and
//! amounts `u32` minor units, and both *saturate*. A bucket at its maximum
//! means "at least this much" and stays there until it leaves the window
//! (a give-back does not lower it). A window holding a saturated bucket is
//! over any limit of that kind: its true total is at least the maximum, so
//! for a limit below the maximum the plain sum already declines, and for a
//! limit above it declining is the safe answer. Saturation can therefore only
//! turn an approval into a decline, never the reverse, and it needs 65 535
//! approvals or 42 949 672.95 units of a two-decimal currency in one bucket of
//! one card.

use protocol::Amount;
use protocol::domain::DeclineReason;

/// The limits of one window. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowLimit {
    /// The most approvals the window may hold.
    pub count_max: Option<u32>,
    /// The most approved amount, in minor units, the window may hold.
    pub amount_max: Option<Amount>,
}

impl WindowLimit {
    /// No limit.
    pub const NONE: WindowLimit = WindowLimit {
        count_max: None,
        amount_max: None,
    };
}

/// What a window holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Approvals in the window (a lower bound when `count_saturated`).
    pub count: u64,
    /// Approved minor units in the window (a lower bound when
    /// `amount_saturated`).
    pub amount_minor: u64,
    /// A bucket's count reached `u16::MAX`.
    pub count_saturated: bool,
    /// A bucket's amount reached `u32::MAX`.
    pub amount_saturated: bool,
}

impl Totals {
    /// Whether one more approval of `amount` fits `limit`: the count is
    /// checked before the amount, so a window full on both says 65.
    pub fn admit(&self, limit: &WindowLimit, amount: Amount) -> Result<(), DeclineReason> {
        if let Some(count_max) = limit.count_max
            && (self.count_saturated || self.count + 1 > u64::from(count_max))
        {
            return Err(DeclineReason::CardCountLimit);
        }
        if let Some(amount_max) = limit.amount_max
            && (self.amount_saturated
                || self.amount_minor.saturating_add(amount.minor()) > amount_max.minor())
        {
            return Err(DeclineReason::CardAmountLimit);
        }
        Ok(())
    }
}

/// A give-back asked to remove more than a bucket held. The bucket is left at
/// zero; the caller decides how loudly to complain, since only it knows
/// whether the approval was ever counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall;

/// `K` buckets of `BUCKET_S` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring<const K: usize, const BUCKET_S: u32> {
    counts: [u16; K],
    amounts: [u32; K],
}

impl<const K: usize, const BUCKET_S: u32> Default for Ring<K, BUCKET_S> {
    fn default() -> Self {
        Ring {
            counts: [0; K],
            amounts: [0; K],
        }
    }
}

impl<const K: usize, const BUCKET_S: u32> Ring<K, BUCKET_S> {
    /// `K` as a `u32`, for bucket arithmetic. A ring has a few dozen buckets,
    /// so the cast cannot truncate; a const cannot call `u32::try_from`.
    #[allow(clippy::as_conversions)]
    const BUCKETS: u32 = K as u32;

    /// The longest an approval is remembered, in seconds.
    pub const WINDOW_S: u32 = Self::BUCKETS * BUCKET_S;

    fn bucket(second: u32) -> u32 {
        second / BUCKET_S
    }

    /// The slot of an approval at `at_s`, seen from `head_s`, or `None` when
    /// it has left the window (or, after a clock jump back, lies ahead of it,
    /// which the owner prevents by never moving `head_s` back).
    fn slot(head_s: u32, at_s: u32) -> Option<usize> {
        let age = Self::bucket(head_s).checked_sub(Self::bucket(at_s))?;
        (age < Self::BUCKETS).then_some(Self::slot_of(Self::bucket(at_s)))
    }

    /// Where bucket number `bucket` lives in the arrays.
    fn slot_of(bucket: u32) -> usize {
        // Below `K`, which is a `usize`.
        usize::try_from(bucket % Self::BUCKETS).unwrap_or(0)
    }

    /// Whether an approval at `at_s` is still inside the window at `head_s`.
    pub fn holds(head_s: u32, at_s: u32) -> bool {
        Self::slot(head_s, at_s).is_some()
    }

    /// Moves "now" from `from_s` to `to_s`, emptying the buckets that come
    /// round again. Time moving back (`to_s < from_s`) changes nothing.
    pub fn advance(&mut self, from_s: u32, to_s: u32) {
        let (from, to) = (Self::bucket(from_s), Self::bucket(to_s));
        if to <= from {
            return;
        }
        if to - from >= Self::BUCKETS {
            *self = Ring::default();
            return;
        }
        for bucket in from + 1..=to {
            let slot = Self::slot_of(bucket);
            self.counts[slot] = 0;
            self.amounts[slot] = 0;
        }
    }

    /// Counts one approval of `amount` at `at_s`, if it is inside the window.
    pub fn add(&mut self, head_s: u32, at_s: u32, amount: Amount) {
        if let Some(slot) = Self::slot(head_s, at_s) {
            self.counts[slot] = self.counts[slot].saturating_add(1);
            self.amounts[slot] = self.amounts[slot].saturating_add(amount_u32(amount));
        }
    }

    /// Removes `count` approvals (1, or 0 for a partial reversal, after
    /// which part of the approval still stands) and `amount` at `at_s`, if it
    /// is inside the window. A saturated bucket keeps its value: it may hold
    /// more than its maximum, so nothing can be taken from it exactly.
    pub fn take(
        &mut self,
        head_s: u32,
        at_s: u32,
        count: u16,
        amount: Amount,
    ) -> Result<(), Shortfall> {
        let Some(slot) = Self::slot(head_s, at_s) else {
            return Ok(());
        };
        let mut result = Ok(());
        if self.counts[slot] != u16::MAX {
            self.counts[slot] = self.counts[slot].checked_sub(count).unwrap_or_else(|| {
                result = Err(Shortfall);
                0
            });
        }
        if self.amounts[slot] != u32::MAX {
            let take = u32::try_from(amount.minor()).unwrap_or(u32::MAX);
            self.amounts[slot] = self.amounts[slot].checked_sub(take).unwrap_or_else(|| {
                result = Err(Shortfall);
                0
            });
        }
        result
    }

    /// What the window holds.
    pub fn totals(&self) -> Totals {
        Totals {
            count: self.counts.iter().map(|&c| u64::from(c)).sum(),
            amount_minor: self.amounts.iter().map(|&a| u64::from(a)).sum(),
            count_saturated: self.counts.contains(&u16::MAX),
            amount_saturated: self.amounts.contains(&u32::MAX),
        }
    }

    /// Whether every bucket is empty.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0) && self.amounts.iter().all(|&a| a == 0)
    }
}

/// An amount as a bucket holds it: amounts over `u32::MAX` saturate the
/// bucket, which the module's saturation rule makes safe.
fn amount_u32(amount: Amount) -> u32 {
    u32::try_from(amount.minor()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Minute = Ring<6, 10>;

    fn minor(units: u64) -> Amount {
        Amount::from_minor(units).unwrap()
    }

    #[test]
    fn an_approval_leaves_the_window_within_one_bucket_of_its_length() {
        let mut ring = Minute::default();
        ring.add(1_005, 1_005, minor(7));
        assert_eq!(ring.totals().count, 1);
        // Bucket 100 is current until 1 059; at 1 059 it is five buckets old.
        ring.advance(1_005, 1_059);
        assert_eq!(ring.totals().count, 1);
        assert!(Minute::holds(1_059, 1_005));
        ring.advance(1_059, 1_060);
        assert_eq!(ring.totals(), Totals::default());
        assert!(!Minute::holds(1_060, 1_005));
        assert!(ring.is_empty());
    }

    #[test]
    fn a_long_jump_empties_everything() {
        let mut ring = Minute::default();
        for second in 0..60 {
            ring.add(second, second, minor(1));
            ring.advance(second, second + 1);
        }
        assert_eq!(ring.totals().count, 50);
        ring.advance(60, 10_000);
        assert!(ring.is_empty());
    }

    #[test]
    fn time_moving_back_changes_nothing() {
        let mut ring = Minute::default();
        ring.add(100, 100, minor(5));
        ring.advance(100, 10);
        assert_eq!(ring.totals().amount_minor, 5);
        // An approval stamped after `head_s` is not counted: the owner moves
        // its head forward first, so this only happens if it did not.
        ring.add(100, 200, minor(5));
        assert_eq!(ring.totals().amount_minor, 5);
    }

    #[test]
    fn sub_takes_from_the_bucket_the_approval_fell_in() {
        let mut ring = Minute::default();
        ring.add(100, 95, minor(10));
        ring.add(100, 100, minor(20));
        assert_eq!(ring.take(100, 95, 1, minor(10)), Ok(()));
        let totals = ring.totals();
        assert_eq!((totals.count, totals.amount_minor), (1, 20));
        // The bucket of second 95 is empty now: a second give-back of it
        // falls short and leaves zero, not a wrapped-around count.
        assert_eq!(ring.take(100, 95, 1, minor(10)), Err(Shortfall));
        let totals = ring.totals();
        assert_eq!((totals.count, totals.amount_minor), (1, 20));
        // Outside the window there is nothing to give back and no shortfall.
        assert_eq!(ring.take(1_000, 95, 1, minor(10)), Ok(()));
    }

    #[test]
    fn saturated_buckets_stay_saturated_and_decline_any_limit() {
        let mut ring = Minute::default();
        ring.add(0, 0, minor(u64::from(u32::MAX) + 5));
        let totals = ring.totals();
        assert!(totals.amount_saturated);
        assert_eq!(ring.take(0, 0, 1, minor(1)), Ok(()));
        assert!(ring.totals().amount_saturated);
        let huge = WindowLimit {
            count_max: None,
            amount_max: Some(Amount::MAX),
        };
        assert_eq!(
            ring.totals().admit(&huge, minor(1)),
            Err(DeclineReason::CardAmountLimit)
        );

        let mut ring = Minute::default();
        for _ in 0..u16::MAX {
            ring.add(0, 0, minor(1));
        }
        ring.add(0, 0, minor(1));
        let totals = ring.totals();
        assert!(totals.count_saturated);
        assert_eq!(totals.count, u64::from(u16::MAX));
        let many = WindowLimit {
            count_max: Some(u32::MAX),
            amount_max: None,
        };
        assert_eq!(
            totals.admit(&many, minor(1)),
            Err(DeclineReason::CardCountLimit)
        );
    }

    #[test]
    fn admit_checks_count_then_amount() {
        let totals = Totals {
            count: 2,
            amount_minor: 90,
            ..Totals::default()
        };
        let limit = WindowLimit {
            count_max: Some(3),
            amount_max: Some(minor(100)),
        };
        assert_eq!(totals.admit(&limit, minor(10)), Ok(()));
        assert_eq!(
            totals.admit(&limit, minor(11)),
            Err(DeclineReason::CardAmountLimit)
        );
        let full = Totals { count: 3, ..totals };
        assert_eq!(
            full.admit(&limit, minor(11)),
            Err(DeclineReason::CardCountLimit)
        );
        assert_eq!(full.admit(&WindowLimit::NONE, minor(11)), Ok(()));
    }
}
