//! A card's velocity state: approved count and amount over the last minute,
//! hour and day, in 184 bytes whatever the card does.
//!
//! | window | buckets     | an approval counts for |
//! |--------|-------------|------------------------|
//! | minute | 6 x 10 s    | 50 to 60 s             |
//! | hour   | 12 x 5 min  | 55 to 60 min           |
//! | day    | 12 x 2 h    | 22 to 24 h             |
//!
//! The day window has 2-hour buckets rather than hourly ones to stay under
//! the 200-byte budget per card (24 hourly buckets would make the state 256
//! bytes). A limit "per day" is then forgotten 22 to 24 hours after the
//! approval instead of 23 to 24; the three shapes are the constants below,
//! one line each to change.
//!
//! Every operation takes the time it is about and moves the card's clock
//! forward first, so buckets that came round are emptied before anything is
//! read. A give-back or a restore names the time of the original approval and
//! lands in the bucket that approval fell in, which is what makes a give-back
//! exact rather than a guess.

use protocol::Amount;
use protocol::domain::DeclineReason;

use crate::velocity::{Ring, Shortfall, Totals, WindowLimit};

type MinuteRing = Ring<6, 10>;
type HourRing = Ring<12, 300>;
type DayRing = Ring<12, 7_200>;

/// The windows a card is limited over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    /// All windows, shortest first: the order limits are checked in.
    pub const ALL: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    /// How many buckets the window has.
    pub fn bucket_count(self) -> u32 {
        self.length_s() / self.bucket_s()
    }

    /// How wide one bucket is, in seconds.
    pub fn bucket_s(self) -> u32 {
        match self {
            Window::Minute => 10,
            Window::Hour => 300,
            Window::Day => 7_200,
        }
    }

    /// The longest an approval counts, in seconds.
    pub fn length_s(self) -> u32 {
        match self {
            Window::Minute => MinuteRing::WINDOW_S,
            Window::Hour => HourRing::WINDOW_S,
            Window::Day => DayRing::WINDOW_S,
        }
    }
}

/// Limits for every card, one per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CardLimits {
    pub per_minute: WindowLimit,
    pub per_hour: WindowLimit,
    pub per_day: WindowLimit,
}

impl CardLimits {
    /// The limit of one window.
    pub fn of(&self, window: Window) -> &WindowLimit {
        match window {
            Window::Minute => &self.per_minute,
            Window::Hour => &self.per_hour,
            Window::Day => &self.per_day,
        }
    }
}

/// One card's windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardState {
    /// The latest second any operation was about. It only moves forward, so
    /// a clock that steps back cannot make a bucket look newer than it is.
    head_s: u32,
    minute: MinuteRing,
    hour: HourRing,
    day: DayRing,
}

/// Unix seconds as a card stores them: `u32` lasts until 2106.
fn second_of(unix_ms: u64) -> u32 {
    u32::try_from(unix_ms / 1000).unwrap_or(u32::MAX)
}

impl CardState {
    /// A card with nothing in any window, as of `now_ms`.
    pub fn new(now_ms: u64) -> CardState {
        CardState {
            head_s: second_of(now_ms),
            minute: MinuteRing::default(),
            hour: HourRing::default(),
            day: DayRing::default(),
        }
    }

    /// Whether an approval at `at_ms` would still count anywhere at `now_ms`:
    /// the day window is the longest, so it decides.
    pub fn would_hold(at_ms: u64, now_ms: u64) -> bool {
        DayRing::holds(second_of(now_ms), second_of(at_ms))
    }

    fn advance(&mut self, now_ms: u64) {
        let to_s = second_of(now_ms).max(self.head_s);
        self.minute.advance(self.head_s, to_s);
        self.hour.advance(self.head_s, to_s);
        self.day.advance(self.head_s, to_s);
        self.head_s = to_s;
    }

    /// What one window holds at `now_ms` (or at the last operation, if
    /// that was later).
    pub fn totals_at(&mut self, window: Window, now_ms: u64) -> Totals {
        self.advance(now_ms);
        self.totals(window)
    }

    /// What one window holds as of the last operation.
    pub fn totals(&self, window: Window) -> Totals {
        match window {
            Window::Minute => self.minute.totals(),
            Window::Hour => self.hour.totals(),
            Window::Day => self.day.totals(),
        }
    }

    /// Approves and counts `amount` at `at_ms` if one more approval of it
    /// fits every window's limit; otherwise changes nothing and says which
    /// limit it would pass (windows shortest first, count before amount).
    pub fn check_and_reserve(
        &mut self,
        limits: &CardLimits,
        amount: Amount,
        at_ms: u64,
    ) -> Result<(), DeclineReason> {
        self.advance(at_ms);
        for window in Window::ALL {
            self.totals(window).admit(limits.of(window), amount)?;
        }
        self.add(amount, at_ms);
        Ok(())
    }

    /// Takes back an approval of `amount` made at `original_at_ms` from every
    /// window it still counts in. `Err(Shortfall)` says a window held less
    /// than that, which means this approval was never counted or was given
    /// back already; the window is left at zero either way.
    pub fn give_back(
        &mut self,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Shortfall> {
        self.take_back(amount, original_at_ms, now_ms, true)
    }

    /// Takes back `amount` of an approval made at `original_at_ms` and
    /// leaves the approval counted once in every window: a partial reversal,
    /// after which part of it stands, as the journal's replay counts it
    /// after a restart.
    pub fn give_back_part(
        &mut self,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Shortfall> {
        self.take_back(amount, original_at_ms, now_ms, false)
    }

    /// Takes `amount` out of the bucket of `original_at_ms` in every window,
    /// and the approval's count too when `whole`. Every window is tried, so
    /// one short window does not leave the others counted.
    fn take_back(
        &mut self,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
        whole: bool,
    ) -> Result<(), Shortfall> {
        self.advance(now_ms);
        let (head_s, at_s, count) = (self.head_s, second_of(original_at_ms), u16::from(whole));
        let minute = self.minute.take(head_s, at_s, count, amount);
        let hour = self.hour.take(head_s, at_s, count, amount);
        let day = self.day.take(head_s, at_s, count, amount);
        minute.and(hour).and(day)
    }

    /// Counts an approval of `amount` made at `at_ms` without checking any
    /// limit: the journal says it happened, so it counts, even if the limits
    /// have since been lowered.
    pub fn restore(&mut self, amount: Amount, at_ms: u64, now_ms: u64) {
        self.advance(now_ms.max(at_ms));
        self.add(amount, at_ms);
    }

    fn add(&mut self, amount: Amount, at_ms: u64) {
        let at_s = second_of(at_ms);
        self.minute.add(self.head_s, at_s, amount);
        self.hour.add(self.head_s, at_s, amount);
        self.day.add(self.head_s, at_s, amount);
    }

    /// Whether nothing counts in any window at `now_ms`. Such a card can be
    /// dropped and recreated empty later without changing any decision.
    pub fn is_idle(&mut self, now_ms: u64) -> bool {
        self.advance(now_ms);
        // Every approval enters the day window and leaves it last, but a
        // restore older than an hour enters only the day window, so all
        // three are asked rather than reasoning about which implies which.
        self.day.is_empty() && self.hour.is_empty() && self.minute.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-06-15T12:00:00Z, on a two-hour boundary.
    const T0: u64 = 1_749_988_800_000;
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;

    fn minor(units: u64) -> Amount {
        Amount::from_minor(units).unwrap()
    }

    fn counts(limit: u32) -> WindowLimit {
        WindowLimit {
            count_max: Some(limit),
            amount_max: None,
        }
    }

    fn amounts(limit: u64) -> WindowLimit {
        WindowLimit {
            count_max: None,
            amount_max: Some(minor(limit)),
        }
    }

    #[test]
    fn the_state_fits_the_budget() {
        assert_eq!(std::mem::size_of::<CardState>(), 184);
        assert_eq!(Window::Day.bucket_count(), 12);
        assert_eq!(Window::Hour.length_s(), 3_600);
    }

    #[test]
    fn five_a_minute_then_65_until_the_minute_passes() {
        let limits = CardLimits {
            per_minute: counts(5),
            ..CardLimits::default()
        };
        let mut card = CardState::new(T0);
        for i in 0..5 {
            assert_eq!(
                card.check_and_reserve(&limits, minor(1), T0 + i * SECOND),
                Ok(())
            );
        }
        let sixth = card.check_and_reserve(&limits, minor(1), T0 + 5 * SECOND);
        assert_eq!(sixth, Err(DeclineReason::CardCountLimit));
        // A decline counts nothing.
        assert_eq!(card.totals(Window::Minute).count, 5);
        let later = card.check_and_reserve(&limits, minor(1), T0 + 61 * SECOND);
        assert_eq!(later, Ok(()));
    }

    #[test]
    fn amount_over_the_hour_declines_61_until_the_hour_passes() {
        let limits = CardLimits {
            per_hour: amounts(1_000),
            ..CardLimits::default()
        };
        let mut card = CardState::new(T0);
        assert_eq!(card.check_and_reserve(&limits, minor(600), T0), Ok(()));
        assert_eq!(
            card.check_and_reserve(&limits, minor(400), T0 + 10 * MINUTE),
            Ok(())
        );
        let over = card.check_and_reserve(&limits, minor(1), T0 + 30 * MINUTE);
        assert_eq!(over, Err(DeclineReason::CardAmountLimit));
        // The first 600 leaves after 60 minutes; the 400 is still there.
        let after = T0 + 61 * MINUTE;
        assert_eq!(
            card.check_and_reserve(&limits, minor(601), after),
            Err(DeclineReason::CardAmountLimit)
        );
        assert_eq!(card.check_and_reserve(&limits, minor(600), after), Ok(()));
    }

    #[test]
    fn the_day_window_remembers_for_a_day() {
        let limits = CardLimits {
            per_day: WindowLimit {
                count_max: Some(2),
                amount_max: Some(minor(500)),
            },
            ..CardLimits::default()
        };
        let mut card = CardState::new(T0);
        assert_eq!(card.check_and_reserve(&limits, minor(450), T0), Ok(()));
        let amount_over = card.check_and_reserve(&limits, minor(51), T0 + 3 * HOUR);
        assert_eq!(amount_over, Err(DeclineReason::CardAmountLimit));
        assert_eq!(
            card.check_and_reserve(&limits, minor(50), T0 + 3 * HOUR),
            Ok(())
        );
        let count_over = card.check_and_reserve(&limits, minor(1), T0 + 21 * HOUR);
        assert_eq!(count_over, Err(DeclineReason::CardCountLimit));
        // T0's bucket leaves at T0 + 24 h; the one of T0 + 3 h is still there.
        assert_eq!(
            card.check_and_reserve(&limits, minor(1), T0 + 24 * HOUR),
            Ok(())
        );
        let count_over = card.check_and_reserve(&limits, minor(1), T0 + 24 * HOUR);
        assert_eq!(count_over, Err(DeclineReason::CardCountLimit));
    }

    #[test]
    fn a_partial_give_back_leaves_the_approval_counted() {
        let mut card = CardState::new(T0);
        assert_eq!(
            card.check_and_reserve(&CardLimits::default(), minor(100), T0),
            Ok(())
        );
        assert_eq!(card.give_back_part(minor(30), T0, T0 + SECOND), Ok(()));
        for window in Window::ALL {
            let totals = card.totals(window);
            assert_eq!((totals.count, totals.amount_minor), (1, 70), "{window:?}");
        }
        assert_eq!(
            card.give_back_part(minor(71), T0, T0 + SECOND),
            Err(Shortfall)
        );
    }

    #[test]
    fn a_give_back_restores_headroom_once() {
        let limits = CardLimits {
            per_minute: counts(2),
            per_day: amounts(100),
            ..CardLimits::default()
        };
        let mut card = CardState::new(T0);
        assert_eq!(card.check_and_reserve(&limits, minor(40), T0), Ok(()));
        assert_eq!(
            card.check_and_reserve(&limits, minor(60), T0 + SECOND),
            Ok(())
        );
        assert_eq!(
            card.check_and_reserve(&limits, minor(1), T0 + 2 * SECOND),
            Err(DeclineReason::CardCountLimit)
        );
        assert_eq!(
            card.give_back(minor(60), T0 + SECOND, T0 + 3 * SECOND),
            Ok(())
        );
        assert_eq!(card.totals(Window::Minute).count, 1);
        assert_eq!(card.totals(Window::Day).amount_minor, 40);
        // Twice is a bug in the caller: nothing goes below zero.
        assert_eq!(card.give_back(minor(40), T0, T0 + 4 * SECOND), Ok(()));
        assert_eq!(
            card.give_back(minor(40), T0, T0 + 4 * SECOND),
            Err(Shortfall)
        );
        for window in Window::ALL {
            assert_eq!(card.totals(window), Totals::default(), "{window:?}");
        }
    }

    #[test]
    fn a_give_back_after_the_minute_still_frees_the_day() {
        let limits = CardLimits {
            per_minute: counts(1),
            per_day: amounts(100),
            ..CardLimits::default()
        };
        let mut card = CardState::new(T0);
        assert_eq!(card.check_and_reserve(&limits, minor(100), T0), Ok(()));
        assert_eq!(card.give_back(minor(100), T0, T0 + 2 * HOUR), Ok(()));
        assert_eq!(card.totals(Window::Day), Totals::default());
        assert_eq!(
            card.check_and_reserve(&limits, minor(100), T0 + 2 * HOUR),
            Ok(())
        );
        // Outside every window a give-back has nothing to do.
        assert_eq!(
            card.give_back(minor(100), T0 - 30 * HOUR, T0 + 2 * HOUR),
            Ok(())
        );
    }

    #[test]
    fn restore_counts_toward_limits() {
        let limits = CardLimits {
            per_hour: counts(3),
            ..CardLimits::default()
        };
        let now = T0 + HOUR;
        let mut card = CardState::new(now);
        card.restore(minor(5), now - 10 * MINUTE, now);
        card.restore(minor(5), now - 20 * MINUTE, now);
        // Too old for the hour, still in the day.
        card.restore(minor(5), now - 2 * HOUR, now);
        assert_eq!(card.totals(Window::Hour).count, 2);
        assert_eq!(card.totals(Window::Day).count, 3);
        assert_eq!(card.check_and_reserve(&limits, minor(1), now), Ok(()));
        assert_eq!(
            card.check_and_reserve(&limits, minor(1), now),
            Err(DeclineReason::CardCountLimit)
        );
        assert!(CardState::would_hold(now - 2 * HOUR, now));
        assert!(!CardState::would_hold(now - 25 * HOUR, now));
    }

    #[test]
    fn a_card_is_idle_once_every_window_is_empty() {
        let mut card = CardState::new(T0);
        assert!(card.is_idle(T0));
        card.restore(minor(5), T0, T0);
        assert!(!card.is_idle(T0 + 23 * HOUR));
        assert!(card.is_idle(T0 + 24 * HOUR));
    }

    #[test]
    fn a_clock_stepping_back_neither_forgets_nor_double_counts() {
        let limits = CardLimits {
            per_minute: counts(2),
            ..CardLimits::default()
        };
        let mut card = CardState::new(T0);
        assert_eq!(
            card.check_and_reserve(&limits, minor(1), T0 + 30 * SECOND),
            Ok(())
        );
        // A request stamped earlier arrives later: it counts in its own bucket.
        assert_eq!(
            card.check_and_reserve(&limits, minor(1), T0 + 5 * SECOND),
            Ok(())
        );
        assert_eq!(
            card.check_and_reserve(&limits, minor(1), T0),
            Err(DeclineReason::CardCountLimit)
        );
        assert_eq!(card.give_back(minor(1), T0 + 5 * SECOND, T0), Ok(()));
        assert_eq!(card.totals(Window::Minute).count, 1);
    }
}
