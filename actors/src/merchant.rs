//! A merchant's limits and the little state they need: the approved volume of
//! the current UTC day and the approvals of the current second.
//!
//! Merchants are configured, not discovered, so their state lives as long as
//! the shard and is never evicted; a request for a merchant the shard does not
//! know is declined before any state is touched.

use protocol::Amount;
use protocol::domain::DeclineReason;
use protocol::ids::Text;

use crate::velocity::Shortfall;

const MS_PER_DAY: u64 = 86_400_000;

/// What a merchant may do. `None` means no limit of that kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MerchantLimits {
    /// The largest single amount, in minor units (13 above it).
    pub amount_max_per_transaction: Option<Amount>,
    /// The most approved volume per UTC calendar day (61 above it).
    pub daily_volume_max: Option<Amount>,
    /// The merchant category codes (DE18) it may send; `None` allows any,
    /// and a request without an MCC passes (58 for one not listed).
    pub allowed_mccs: Option<Vec<Text<4>>>,
    /// The most approvals in one wall-clock second (58 above it).
    pub tps_max: Option<u32>,
}

/// A merchant's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MerchantState {
    /// Days since the epoch of `volume_minor`.
    day: u64,
    volume_minor: u64,
    /// Unix second of `second_count`.
    second: u64,
    second_count: u32,
}

impl MerchantState {
    /// A merchant with nothing approved, as of `now_ms`.
    pub fn new(now_ms: u64) -> MerchantState {
        MerchantState {
            day: now_ms / MS_PER_DAY,
            second: now_ms / 1000,
            ..MerchantState::default()
        }
    }

    /// Moves to `now_ms` if it is later; a clock that steps back keeps the
    /// current day and second, so a volume is never counted twice.
    fn advance(&mut self, now_ms: u64) {
        let day = now_ms / MS_PER_DAY;
        if day > self.day {
            self.day = day;
            self.volume_minor = 0;
        }
        let second = now_ms / 1000;
        if second > self.second {
            self.second = second;
            self.second_count = 0;
        }
    }

    /// The volume approved so far today (the day of the latest operation).
    pub fn daily_volume(&self) -> Amount {
        Amount::from_minor(self.volume_minor).unwrap_or(Amount::MAX)
    }

    /// Checks one request at `at_ms` and, if it passes, counts it toward
    /// today's volume and this second's ceiling. The order is fixed: amount,
    /// MCC, TPS, daily volume, so the cheapest and most specific reasons win.
    pub fn check(
        &mut self,
        limits: &MerchantLimits,
        mcc: Option<Text<4>>,
        amount: Amount,
        at_ms: u64,
    ) -> Result<(), DeclineReason> {
        self.advance(at_ms);
        if limits
            .amount_max_per_transaction
            .is_some_and(|max| amount > max)
        {
            return Err(DeclineReason::MerchantAmountLimit);
        }
        if let (Some(allowed), Some(mcc)) = (&limits.allowed_mccs, mcc)
            && !allowed.contains(&mcc)
        {
            return Err(DeclineReason::MccNotAllowed);
        }
        if limits.tps_max.is_some_and(|max| self.second_count >= max) {
            return Err(DeclineReason::MerchantTpsCeiling);
        }
        let volume = self.volume_minor.saturating_add(amount.minor());
        if limits
            .daily_volume_max
            .is_some_and(|max| volume > max.minor())
        {
            return Err(DeclineReason::MerchantDailyVolume);
        }
        // A request stamped before the current day or second (the clock of
        // its sender lagged) counts in the current one: the safe side.
        self.volume_minor = volume;
        self.second_count = self.second_count.saturating_add(1);
        Ok(())
    }

    /// Undoes the `check` just made, in the same turn of the shard (the card
    /// declined it, or its asker went away): the current day and second are
    /// the ones it was counted in.
    pub(crate) fn release(&mut self, amount: Amount) {
        debug_assert!(self.volume_minor >= amount.minor(), "release without check");
        debug_assert!(self.second_count > 0, "release without check");
        self.volume_minor = self.volume_minor.saturating_sub(amount.minor());
        self.second_count = self.second_count.saturating_sub(1);
    }

    /// Takes back the volume of an approval made at `original_at_ms`, if that
    /// was today: yesterday's volume no longer limits anything. The TPS
    /// ceiling is not given back; that second is over. `Err(Shortfall)` says
    /// today's volume held less than `amount`, which means the approval was
    /// never counted or was given back already; the volume is left at zero.
    pub fn give_back(
        &mut self,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Shortfall> {
        self.advance(now_ms);
        if original_at_ms / MS_PER_DAY != self.day {
            return Ok(());
        }
        match self.volume_minor.checked_sub(amount.minor()) {
            Some(volume) => {
                self.volume_minor = volume;
                Ok(())
            }
            None => {
                self.volume_minor = 0;
                Err(Shortfall)
            }
        }
    }

    /// Counts the volume of an approval made at `at_ms` without checking any
    /// limit, if it was today (journal replay at start).
    pub fn restore(&mut self, amount: Amount, at_ms: u64, now_ms: u64) {
        self.advance(now_ms.max(at_ms));
        if at_ms / MS_PER_DAY == self.day {
            self.volume_minor = self.volume_minor.saturating_add(amount.minor());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-06-15T12:00:00Z.
    const T0: u64 = 1_749_988_800_000;
    const HOUR: u64 = 3_600_000;

    fn minor(units: u64) -> Amount {
        Amount::from_minor(units).unwrap()
    }

    fn mcc(code: &str) -> Option<Text<4>> {
        Text::parse(code.as_bytes())
    }

    fn limits() -> MerchantLimits {
        MerchantLimits {
            amount_max_per_transaction: Some(minor(1_000)),
            daily_volume_max: Some(minor(2_500)),
            allowed_mccs: Some(vec![Text::parse(b"5411").unwrap()]),
            tps_max: Some(3),
        }
    }

    #[test]
    fn amount_over_the_transaction_limit_declines_13() {
        let mut merchant = MerchantState::new(T0);
        let over = merchant.check(&limits(), mcc("5411"), minor(1_001), T0);
        assert_eq!(over, Err(DeclineReason::MerchantAmountLimit));
        assert_eq!(
            merchant.check(&limits(), mcc("5411"), minor(1_000), T0),
            Ok(())
        );
    }

    #[test]
    fn an_mcc_not_allowed_declines_58_and_none_passes() {
        let mut merchant = MerchantState::new(T0);
        let other = merchant.check(&limits(), mcc("7995"), minor(1), T0);
        assert_eq!(other, Err(DeclineReason::MccNotAllowed));
        assert_eq!(merchant.check(&limits(), None, minor(1), T0), Ok(()));
        let any = MerchantLimits::default();
        assert_eq!(merchant.check(&any, mcc("7995"), minor(1), T0), Ok(()));
    }

    #[test]
    fn the_tps_ceiling_holds_for_one_second() {
        let mut merchant = MerchantState::new(T0);
        for i in 0..3 {
            assert_eq!(
                merchant.check(&limits(), None, minor(1), T0 + i * 300),
                Ok(())
            );
        }
        let fourth = merchant.check(&limits(), None, minor(1), T0 + 999);
        assert_eq!(fourth, Err(DeclineReason::MerchantTpsCeiling));
        assert_eq!(
            merchant.check(&limits(), None, minor(1), T0 + 1_000),
            Ok(())
        );
    }

    #[test]
    fn daily_volume_declines_61_until_utc_midnight() {
        let limits = MerchantLimits {
            daily_volume_max: Some(minor(2_500)),
            ..MerchantLimits::default()
        };
        let mut merchant = MerchantState::new(T0);
        assert_eq!(merchant.check(&limits, None, minor(2_000), T0), Ok(()));
        let over = merchant.check(&limits, None, minor(501), T0 + HOUR);
        assert_eq!(over, Err(DeclineReason::MerchantDailyVolume));
        assert_eq!(merchant.check(&limits, None, minor(500), T0 + HOUR), Ok(()));
        assert_eq!(merchant.daily_volume(), minor(2_500));
        // T0 is noon UTC: midnight is twelve hours on.
        let before_midnight = T0 + 12 * HOUR - 1;
        let still = merchant.check(&limits, None, minor(1), before_midnight);
        assert_eq!(still, Err(DeclineReason::MerchantDailyVolume));
        assert_eq!(
            merchant.check(&limits, None, minor(2_500), T0 + 12 * HOUR),
            Ok(())
        );
    }

    #[test]
    fn give_back_frees_todays_volume_once() {
        let limits = MerchantLimits {
            daily_volume_max: Some(minor(100)),
            ..MerchantLimits::default()
        };
        let mut merchant = MerchantState::new(T0);
        assert_eq!(merchant.check(&limits, None, minor(100), T0), Ok(()));
        assert_eq!(merchant.give_back(minor(100), T0, T0 + HOUR), Ok(()));
        assert_eq!(merchant.daily_volume(), minor(0));
        assert_eq!(
            merchant.give_back(minor(100), T0, T0 + HOUR),
            Err(Shortfall)
        );
        assert_eq!(merchant.daily_volume(), minor(0));
        // Yesterday's approval gives nothing back today.
        assert_eq!(merchant.check(&limits, None, minor(100), T0 + HOUR), Ok(()));
        assert_eq!(
            merchant.give_back(minor(100), T0 - 24 * HOUR, T0 + HOUR),
            Ok(())
        );
        assert_eq!(merchant.daily_volume(), minor(100));
    }

    #[test]
    fn restore_counts_only_today() {
        let limits = MerchantLimits {
            daily_volume_max: Some(minor(100)),
            ..MerchantLimits::default()
        };
        let mut merchant = MerchantState::new(T0);
        merchant.restore(minor(60), T0 - HOUR, T0);
        merchant.restore(minor(60), T0 - 13 * HOUR, T0);
        assert_eq!(merchant.daily_volume(), minor(60));
        let over = merchant.check(&limits, None, minor(41), T0);
        assert_eq!(over, Err(DeclineReason::MerchantDailyVolume));
        assert_eq!(merchant.check(&limits, None, minor(40), T0), Ok(()));
    }

    #[test]
    fn release_undoes_a_check() {
        let mut merchant = MerchantState::new(T0);
        let limits = limits();
        for _ in 0..3 {
            assert_eq!(merchant.check(&limits, None, minor(10), T0), Ok(()));
        }
        merchant.release(minor(10));
        assert_eq!(merchant.daily_volume(), minor(20));
        assert_eq!(merchant.check(&limits, None, minor(10), T0), Ok(()));
    }
}
