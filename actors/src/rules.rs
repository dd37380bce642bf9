//! Checks that need no state, run before a request reaches the actors: the
//! card number's check digit, the expiry month, the amount, blocked BINs.
//!
//! They are pure functions of the request, the configuration and the time, so
//! the ingress can run them on its own task and only requests that pass cost a
//! trip to a shard.

use protocol::domain::{Authorization, DeclineReason};
use protocol::{Amount, Pan};

/// The switch-wide rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    /// The largest amount the switch accepts, in minor units. Zero is never
    /// accepted.
    pub amount_max: Amount,
    /// Card ranges the switch declines with 57.
    pub blocked_bins: Vec<BinRange>,
}

impl Default for RuleConfig {
    fn default() -> RuleConfig {
        RuleConfig {
            amount_max: Amount::MAX,
            blocked_bins: Vec::new(),
        }
    }
}

/// An inclusive range of BINs with 6 to 8 digits, such as `400000-400999` or
/// the single `41111111`. A PAN is in the range when its first `digits`
/// digits, read as a number, lie between the bounds, so 6- and 8-digit
/// ranges can sit side by side in one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinRange {
    first: u32,
    last: u32,
    digits: u8,
}

impl BinRange {
    /// The fewest digits a BIN range may name.
    pub const DIGITS_MIN: usize = 6;
    /// The most digits a BIN range may name.
    pub const DIGITS_MAX: usize = 8;

    /// A range from its bounds: the same number of digits (6 to 8) each, and
    /// `first <= last`. `None` otherwise.
    pub fn new(first: &str, last: &str) -> Option<BinRange> {
        if first.len() != last.len() {
            return None;
        }
        let (first_value, last_value) = (bin_value(first)?, bin_value(last)?);
        (first_value <= last_value).then_some(BinRange {
            first: first_value,
            last: last_value,
            digits: u8::try_from(first.len()).ok()?,
        })
    }

    /// Parses `first-last` or a single BIN, as a configuration file writes
    /// them.
    pub fn parse(text: &str) -> Option<BinRange> {
        match text.split_once('-') {
            Some((first, last)) => BinRange::new(first.trim(), last.trim()),
            None => BinRange::new(text.trim(), text.trim()),
        }
    }

    /// Whether the PAN's leading digits fall in the range.
    pub fn contains(&self, pan: &Pan) -> bool {
        // `Pan::bin` is the one masked-safe view of the leading digits: a BIN
        // may be stored and shown, the rest of the PAN may not.
        bin_value(pan.bin(usize::from(self.digits)))
            .is_some_and(|bin| (self.first..=self.last).contains(&bin))
    }
}

fn bin_value(digits: &str) -> Option<u32> {
    if !(BinRange::DIGITS_MIN..=BinRange::DIGITS_MAX).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

/// Runs the rules in a fixed order (Luhn, expiry, amount, BIN), so one
/// request always gets the same reason whatever else is wrong with it.
///
/// A request without an expiry passes the expiry rule: whether one is
/// required is the ingress's contract (the JSON API requires it, DE14 is
/// optional in ISO 8583).
pub fn check_rules(
    auth: &Authorization,
    rules: &RuleConfig,
    now_ms: u64,
) -> Result<(), DeclineReason> {
    if !auth.pan.luhn_valid() {
        return Err(DeclineReason::InvalidCardNumber);
    }
    if let Some(expiry) = auth.expiry {
        let (year, month) = utc_year_month(now_ms);
        // Expiry carries a two-digit year meaning 2000-2099; a clock past
        // 2099 sees every such card as expired, which is the safe side.
        let expired = match u8::try_from(year.saturating_sub(2000)) {
            Ok(year_2digit) if year_2digit <= 99 => expiry.is_expired_at(year_2digit, month),
            _ => true,
        };
        if expired {
            return Err(DeclineReason::ExpiredCard);
        }
    }
    if auth.amount == Amount::default() || auth.amount > rules.amount_max {
        return Err(DeclineReason::InvalidAmount);
    }
    if rules
        .blocked_bins
        .iter()
        .any(|range| range.contains(&auth.pan))
    {
        return Err(DeclineReason::BlockedBin);
    }
    Ok(())
}

/// The UTC calendar year and month (1-12) of a Unix time in milliseconds.
///
/// Howard Hinnant's `civil_from_days`, restricted to days on or after the
/// epoch (a `u64` time cannot be earlier), so no date crate is needed.
pub fn utc_year_month(unix_ms: u64) -> (u32, u8) {
    const MS_PER_DAY: u64 = 86_400_000;
    const DAYS_PER_ERA: u64 = 146_097;
    // Days from 0000-03-01 to 1970-01-01: eras start in March so that the
    // leap day is the last day of a computed year.
    let z = unix_ms / MS_PER_DAY + 719_468;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z - era * DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (
        u32::try_from(year).unwrap_or(u32::MAX),
        u8::try_from(month).unwrap_or(12),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::domain::{Channel, TransactionKind, pad};
    use protocol::{Currency, Expiry};

    /// 2025-06-15T12:00:00Z.
    const JUNE_2025_MS: u64 = 1_749_988_800_000;

    fn auth(pan: &str, expiry: &str, amount: u64) -> Authorization {
        Authorization {
            channel: Channel::Iso,
            kind: TransactionKind::Authorization,
            pan: Pan::parse(pan.as_bytes()).unwrap(),
            expiry: Expiry::parse(expiry.as_bytes()),
            amount: Amount::from_minor(amount).unwrap(),
            currency: Currency::parse("USD").unwrap(),
            merchant_id: pad("M1").unwrap(),
            terminal_id: pad("T1").unwrap(),
            mcc: None,
            keys: None,
        }
    }

    fn rules() -> RuleConfig {
        RuleConfig {
            amount_max: Amount::from_minor(100_000).unwrap(),
            blocked_bins: vec![
                BinRange::parse("400000-400999").unwrap(),
                BinRange::parse("55000055").unwrap(),
            ],
        }
    }

    #[test]
    fn year_and_month_in_utc() {
        assert_eq!(utc_year_month(0), (1970, 1));
        assert_eq!(utc_year_month(JUNE_2025_MS), (2025, 6));
        // 2000-02-29T00:00:00Z, a leap day of a century year.
        assert_eq!(utc_year_month(951_782_400_000), (2000, 2));
        // 2024-12-31T23:59:59.999Z and one millisecond later.
        assert_eq!(utc_year_month(1_735_689_599_999), (2024, 12));
        assert_eq!(utc_year_month(1_735_689_600_000), (2025, 1));
        // 2100-03-01T00:00:00Z, after a century year that is not leap.
        assert_eq!(utc_year_month(4_107_542_400_000), (2100, 3));
    }

    #[test]
    fn a_good_request_passes() {
        assert_eq!(
            check_rules(
                &auth("4111111111111111", "2712", 500),
                &rules(),
                JUNE_2025_MS
            ),
            Ok(())
        );
    }

    #[test]
    fn luhn_fails_with_14() {
        let result = check_rules(
            &auth("4111111111111112", "2712", 500),
            &rules(),
            JUNE_2025_MS,
        );
        assert_eq!(result, Err(DeclineReason::InvalidCardNumber));
    }

    #[test]
    fn a_card_is_good_through_its_expiry_month() {
        let card = "4111111111111111";
        // 2025-06-30T23:59:59.999Z: still June.
        let last_ms_of_june = 1_751_327_999_999;
        let ok = check_rules(&auth(card, "2506", 1), &rules(), last_ms_of_june);
        assert_eq!(ok, Ok(()));
        let expired = check_rules(&auth(card, "2506", 1), &rules(), last_ms_of_june + 1);
        assert_eq!(expired, Err(DeclineReason::ExpiredCard));
        let last_year = check_rules(&auth(card, "2412", 1), &rules(), JUNE_2025_MS);
        assert_eq!(last_year, Err(DeclineReason::ExpiredCard));
        let mut no_expiry = auth(card, "", 1);
        no_expiry.expiry = None;
        assert_eq!(check_rules(&no_expiry, &rules(), JUNE_2025_MS), Ok(()));
    }

    #[test]
    fn amount_zero_or_over_the_maximum_fails_with_13() {
        let card = "4111111111111111";
        for amount in [0, 100_001] {
            let result = check_rules(&auth(card, "2712", amount), &rules(), JUNE_2025_MS);
            assert_eq!(result, Err(DeclineReason::InvalidAmount), "{amount}");
        }
        let at_max = check_rules(&auth(card, "2712", 100_000), &rules(), JUNE_2025_MS);
        assert_eq!(at_max, Ok(()));
    }

    #[test]
    fn blocked_bins_fail_with_57() {
        // 4009990000000005 passes Luhn and sits at the top of a 6-digit range;
        // 5500005555555559 is under the 8-digit BIN 55000055.
        for blocked in ["4000000000000002", "4009990000000005", "5500005555555559"] {
            let result = check_rules(&auth(blocked, "2712", 1), &rules(), JUNE_2025_MS);
            assert_eq!(result, Err(DeclineReason::BlockedBin), "{blocked}");
        }
        let outside = check_rules(&auth("4010000000000000", "2712", 1), &rules(), JUNE_2025_MS);
        assert_eq!(outside, Ok(()));
    }

    #[test]
    fn rules_run_in_order() {
        // A blocked, expired card with a bad check digit and amount zero is
        // declined for its check digit, and so on down the list.
        let r = rules();
        let now = JUNE_2025_MS;
        let all_wrong = auth("4000000000000003", "2401", 0);
        assert_eq!(
            check_rules(&all_wrong, &r, now),
            Err(DeclineReason::InvalidCardNumber)
        );
        let expired_zero_blocked = auth("4000000000000002", "2401", 0);
        assert_eq!(
            check_rules(&expired_zero_blocked, &r, now),
            Err(DeclineReason::ExpiredCard)
        );
        let zero_blocked = auth("4000000000000002", "2712", 0);
        assert_eq!(
            check_rules(&zero_blocked, &r, now),
            Err(DeclineReason::InvalidAmount)
        );
    }

    #[test]
    fn bin_ranges_parse_strictly() {
        assert!(BinRange::parse("41111").is_none());
        assert!(BinRange::parse("411111111").is_none());
        assert!(BinRange::parse("411111-4111111").is_none());
        assert!(BinRange::parse("411112-411111").is_none());
        assert!(BinRange::parse("41111x").is_none());
        assert_eq!(
            BinRange::parse(" 400000 - 400999 "),
            BinRange::new("400000", "400999")
        );
    }
}
