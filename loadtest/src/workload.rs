//! The workload: which request goes out as request number `i`. Everything
//! is a pure function of `--seed` and `i` (the card, the amount, the message
//! type, whether the card is made invalid), so a run is reproducible whatever
//! the connection count, and two runs with one seed offer the same traffic.

use crate::error::Error;
use crate::rng::{SplitMix64, Zipf, mix};
use crate::units::{ascii_digit, digits, to_f64, to_u64_saturating};

/// The request types the load tester sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// 0100, or `POST /v1/authorizations` over HTTP.
    Authorization,
    /// 0200.
    Financial,
    /// 0400, reversing an earlier approval of the same connection.
    Reversal,
    /// 0800 echo (DE70 301).
    Network,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 4] = [
        Kind::Authorization,
        Kind::Financial,
        Kind::Reversal,
        Kind::Network,
    ];

    /// The request MTI, which is also the kind's name in reports.
    pub fn mti(self) -> &'static str {
        match self {
            Kind::Authorization => "0100",
            Kind::Financial => "0200",
            Kind::Reversal => "0400",
            Kind::Network => "0800",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        match self {
            Kind::Authorization => 0,
            Kind::Financial => 1,
            Kind::Reversal => 2,
            Kind::Network => 3,
        }
    }

    fn parse(mti: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.mti() == mti)
    }
}

/// `--mix`: integer weights per request type, such as `0100=80,0200=20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u64; 4],
    total: u64,
}

impl Mix {
    /// Parses `MTI=WEIGHT[,MTI=WEIGHT...]`.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut weights = [0u64; 4];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (mti, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not MTI=WEIGHT"))?;
            let kind = Kind::parse(mti.trim())
                .ok_or_else(|| format!("`{mti}` is not one of 0100, 0200, 0400, 0800"))?;
            let weight: u64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight `{weight}` is not a whole number"))?;
            weights[kind.index()] += weight;
        }
        let total = weights.iter().sum();
        if total == 0 {
            return Err("the weights add up to 0".to_owned());
        }
        Ok(Mix { weights, total })
    }

    /// The kind for a uniform draw.
    fn pick(&self, rng: &mut SplitMix64) -> Kind {
        let mut draw = rng.below(self.total);
        for kind in Kind::ALL {
            let weight = self.weights[kind.index()];
            if draw < weight {
                return kind;
            }
            draw -= weight;
        }
        Kind::Authorization
    }

    /// The kinds with a weight, in table order.
    pub fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        Kind::ALL
            .into_iter()
            .filter(|kind| self.weights[kind.index()] > 0)
    }
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            weights: [1, 0, 0, 0],
            total: 1,
        }
    }
}

/// `--amount`: the distribution of amounts, in minor units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AmountDistribution {
    /// `N`: always N.
    Fixed(u64),
    /// `MIN-MAX`: uniform, both ends included.
    Uniform { min: u64, max: u64 },
    /// `lognormal:MEDIAN:SIGMA`: card spend is close to log-normal, a long
    /// tail of large tickets over many small ones.
    LogNormal { median: f64, sigma: f64 },
}

/// The largest amount DE4's 12 digits hold.
const AMOUNT_MAX: u64 = 999_999_999_999;

impl AmountDistribution {
    /// Parses `N`, `MIN-MAX` or `lognormal:MEDIAN:SIGMA`.
    pub fn parse(text: &str) -> Result<AmountDistribution, String> {
        let number = |s: &str| -> Result<u64, String> {
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=AMOUNT_MAX).contains(n))
                .ok_or_else(|| format!("`{s}` is not an amount from 1 to {AMOUNT_MAX}"))
        };
        if let Some(rest) = text.strip_prefix("lognormal:") {
            let (median, sigma) = rest
                .split_once(':')
                .ok_or("lognormal needs MEDIAN:SIGMA, such as lognormal:2500:1.0")?;
            let median = to_f64(number(median)?);
            let sigma: f64 = sigma
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 5.0)
                .ok_or_else(|| format!("sigma `{sigma}` is not a number from 0 to 5"))?;
            return Ok(AmountDistribution::LogNormal { median, sigma });
        }
        if let Some((min, max)) = text.split_once('-') {
            let (min, max) = (number(min)?, number(max)?);
            if min > max {
                return Err(format!("{min} is over {max}"));
            }
            return Ok(AmountDistribution::Uniform { min, max });
        }
        number(text).map(AmountDistribution::Fixed)
    }

    fn sample(&self, rng: &mut SplitMix64) -> u64 {
        match *self {
            AmountDistribution::Fixed(amount) => amount,
            AmountDistribution::Uniform { min, max } => min + rng.below(max - min + 1),
            AmountDistribution::LogNormal { median, sigma } => {
                let amount = median * (sigma * rng.next_normal()).exp();
                to_u64_saturating(amount.round()).clamp(1, AMOUNT_MAX)
            }
        }
    }
}

/// BINs of the generated cards: well-known test ranges of the big schemes,
/// none inside 400000-400099, which the demo configuration blocks.
pub const BINS: [&str; 8] = [
    "411111", "424242", "455673", "510510", "535310", "222300", "601100", "356600",
];

/// What request `i` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    /// Card number, 0-based, into the `--cards` population.
    pub card: u64,
    /// Minor units.
    pub amount: u64,
    /// Index into `--merchants`.
    pub merchant: usize,
    /// Send a PAN whose Luhn check digit is wrong.
    pub invalid_card: bool,
}

/// Everything that decides the traffic.
#[derive(Debug, Clone)]
pub struct Workload {
    pub seed: u64,
    pub cards: u64,
    /// `None` for uniform card popularity (`--zipf 0`).
    pub zipf: Option<Zipf>,
    pub amounts: AmountDistribution,
    pub mix: Mix,
    /// DE42 values, space-padded to 15.
    pub merchants: Vec<String>,
    pub invalid_fraction: f64,
    /// ISO 4217 numeric, for DE49.
    pub currency: u16,
    /// DE18.
    pub mcc: String,
    /// Two digits of the expiry year: cards expire a few years from now.
    expiry_year_base: u8,
}

/// Salt for card numbers, so card `j` and request `j` draw different values.
const CARD_SALT: u64 = 0x00CA_7D00_0000_0000;

impl Workload {
    /// A workload; checks the values the CLI cannot check alone.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seed: u64,
        cards: u64,
        zipf_exponent: f64,
        amounts: AmountDistribution,
        mix: Mix,
        merchants: &[String],
        invalid_fraction: f64,
        currency: u16,
        mcc: &str,
    ) -> Result<Workload, Error> {
        if cards == 0 {
            return Err(Error::flag("cards", "must be at least 1"));
        }
        if !zipf_exponent.is_finite() || !(0.0..=10.0).contains(&zipf_exponent) {
            return Err(Error::flag(
                "zipf",
                "must be a number from 0 (uniform) to 10",
            ));
        }
        if !(0.0..=1.0).contains(&invalid_fraction) {
            return Err(Error::flag(
                "invalid-cards",
                "must be a fraction from 0 to 1",
            ));
        }
        if merchants.is_empty() {
            return Err(Error::flag("merchants", "name at least one merchant"));
        }
        let mut padded = Vec::with_capacity(merchants.len());
        for merchant in merchants {
            if merchant.is_empty()
                || merchant.len() > 15
                || !merchant.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(Error::flag(
                    "merchants",
                    format!("`{merchant}` is not 1 to 15 printable characters without spaces"),
                ));
            }
            padded.push(format!("{merchant:<15}"));
        }
        if mcc.len() != 4 || !mcc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::flag("mcc", "must be 4 digits"));
        }
        Ok(Workload {
            seed,
            cards,
            zipf: Zipf::new(cards, zipf_exponent),
            amounts,
            mix,
            merchants: padded,
            invalid_fraction,
            currency,
            mcc: mcc.to_owned(),
            // Two digits, 0..=99, always fit.
            expiry_year_base: u8::try_from(crate::clock::current_year().rem_euclid(100))
                .unwrap_or(0),
        })
    }

    /// What request `index` is.
    pub fn plan(&self, index: u64) -> Plan {
        let mut rng = SplitMix64::new(mix(self.seed, index));
        let kind = self.mix.pick(&mut rng);
        let card = match &self.zipf {
            Some(zipf) => zipf.sample(&mut rng) - 1,
            None => rng.below(self.cards),
        };
        let amount = self.amounts.sample(&mut rng);
        let merchant = rng.index_below(self.merchants.len());
        let invalid_card = self.invalid_fraction > 0.0 && rng.next_f64() < self.invalid_fraction;
        Plan {
            kind,
            card,
            amount,
            merchant,
            invalid_card,
        }
    }

    /// The 16 ASCII digits of card `card`: a BIN from [`BINS`], nine seeded
    /// digits and the Luhn check digit (made wrong when `invalid`).
    pub fn pan(&self, card: u64, invalid: bool) -> [u8; 16] {
        let mut rng = SplitMix64::new(mix(self.seed ^ CARD_SALT, card));
        let mut digits = [b'0'; 16];
        let bin = BINS[rng.index_below(BINS.len())].as_bytes();
        digits[..6].copy_from_slice(bin);
        for digit in &mut digits[6..15] {
            *digit = ascii_digit(rng.below(10));
        }
        let check = luhn_check_digit(&digits[..15]);
        digits[15] = if invalid {
            b'0' + (check - b'0' + 1) % 10
        } else {
            check
        };
        digits
    }

    /// YYMM of card `card`: two to five years ahead, any month.
    pub fn expiry(&self, card: u64) -> [u8; 4] {
        let r = mix(self.seed ^ CARD_SALT ^ 0xE, card);
        let year = (u64::from(self.expiry_year_base) + 2 + r % 4) % 100;
        let month = 1 + (r >> 8) % 12;
        let mut out = [0u8; 4];
        out[..2].copy_from_slice(&digits::<2>(year));
        out[2..].copy_from_slice(&digits::<2>(month));
        out
    }
}

/// The Luhn check digit (ASCII) that completes `payload`.
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    let mut sum = 0u32;
    // The digit left of the check digit is doubled, then every second one.
    for (i, &b) in payload.iter().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    ascii_digit(u64::from(10 - sum % 10))
}

/// Whether `digits` pass the Luhn check.
pub fn luhn_valid(digits: &[u8]) -> bool {
    match digits.split_last() {
        Some((&last, payload)) => luhn_check_digit(payload) == last,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(seed: u64) -> Workload {
        Workload::new(
            seed,
            1000,
            0.0,
            AmountDistribution::parse("lognormal:2500:1.0").unwrap(),
            Mix::parse("0100=60,0200=30,0400=5,0800=5").unwrap(),
            &["ACME0000001".to_owned()],
            0.1,
            840,
            "5411",
        )
        .unwrap()
    }

    #[test]
    fn luhn_matches_known_numbers() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"5500005555555559"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert_eq!(luhn_check_digit(b"411111111111111"), b'1');
    }

    #[test]
    fn cards_are_luhn_valid_reproducible_and_outside_the_blocked_bins() {
        let w = workload(42);
        for card in 0..2000 {
            let pan = w.pan(card, false);
            assert!(luhn_valid(&pan), "{}", String::from_utf8_lossy(&pan));
            let bin: u32 = std::str::from_utf8(&pan[..6]).unwrap().parse().unwrap();
            assert!(!(400_000..=400_099).contains(&bin));
            assert!(!luhn_valid(&w.pan(card, true)));
            assert_eq!(pan, workload(42).pan(card, false));
            let expiry = w.expiry(card);
            assert!(protocol::Expiry::parse(&expiry).is_some());
        }
        assert_ne!(w.pan(1, false), workload(43).pan(1, false));
    }

    #[test]
    fn plans_are_a_function_of_seed_and_index() {
        let (a, b) = (workload(7), workload(7));
        let mut kinds = [0u32; 4];
        let mut invalid = 0;
        for i in 0..10_000 {
            let plan = a.plan(i);
            assert_eq!(plan, b.plan(i));
            assert!(plan.card < 1000);
            assert!(plan.amount >= 1);
            kinds[plan.kind.index()] += 1;
            invalid += u32::from(plan.invalid_card);
        }
        assert!((5700..6300).contains(&kinds[0]), "{kinds:?}");
        assert!((2700..3300).contains(&kinds[1]), "{kinds:?}");
        assert!((800..1200).contains(&invalid), "{invalid}");
        assert_ne!(
            (0..50).map(|i| a.plan(i)).collect::<Vec<_>>(),
            (0..50).map(|i| workload(8).plan(i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn flags_parse_and_refuse_nonsense() {
        assert_eq!(
            AmountDistribution::parse("1500"),
            Ok(AmountDistribution::Fixed(1500))
        );
        assert_eq!(
            AmountDistribution::parse("100-200"),
            Ok(AmountDistribution::Uniform { min: 100, max: 200 })
        );
        assert!(AmountDistribution::parse("200-100").is_err());
        assert!(AmountDistribution::parse("0").is_err());
        assert!(AmountDistribution::parse("lognormal:2500").is_err());
        assert!(Mix::parse("0100=1,0300=1").is_err());
        assert!(Mix::parse("0100=0").is_err());
        assert_eq!(
            Mix::parse("0800=1,0100=3")
                .unwrap()
                .kinds()
                .collect::<Vec<_>>(),
            vec![Kind::Authorization, Kind::Network]
        );
        let mut rng = SplitMix64::new(1);
        let uniform = AmountDistribution::Uniform { min: 5, max: 7 };
        for _ in 0..100 {
            assert!((5..=7).contains(&uniform.sample(&mut rng)));
        }
    }
}
