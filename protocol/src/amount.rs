//! Money: [`Amount`] in minor units and [`Currency`] by ISO 4217.

use std::fmt;

use crate::encoding::write_decimal;

/// An amount in the currency's minor units (cents for USD, yen for JPY).
///
/// On the wire (DE4, DE5, DE6) it is 12 digits, so the largest amount the
/// switch can carry is 999 999 999 999 minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

impl Amount {
    /// The largest amount a 12-digit field holds.
    pub const MAX: Amount = Amount(999_999_999_999);

    /// An amount of `minor` units, or `None` over [`Amount::MAX`].
    pub fn from_minor(minor: u64) -> Option<Amount> {
        (minor <= Amount::MAX.0).then_some(Amount(minor))
    }

    /// Minor units.
    pub fn minor(self) -> u64 {
        self.0
    }

    /// An amount from the 12 ASCII digits of DE4.
    pub fn from_field(digits: &[u8]) -> Option<Amount> {
        if digits.len() != 12 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(Amount(
            digits
                .iter()
                .fold(0u64, |total, d| total * 10 + u64::from(d - b'0')),
        ))
    }

    /// The 12 ASCII digits of DE4.
    pub fn to_field(self) -> [u8; 12] {
        let mut digits = [b'0'; 12];
        write_decimal(self.0, &mut digits);
        digits
    }

    /// The sum, or `None` if it would pass [`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).and_then(Amount::from_minor)
    }

    /// The difference, or `None` if `other` is the larger.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An ISO 4217 currency: alphabetic code, numeric code and minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    alpha: [u8; 3],
    numeric: u16,
    minor_units: u8,
}

impl Currency {
    const fn new(alpha: [u8; 3], numeric: u16, minor_units: u8) -> Currency {
        Currency {
            alpha,
            numeric,
            minor_units,
        }
    }

    /// A currency by its alphabetic code (`"USD"`) or its numeric code
    /// (`"840"`), as the JSON API and DE49 carry it.
    pub fn parse(code: &str) -> Option<Currency> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 {
            return None;
        }
        if bytes.iter().all(u8::is_ascii_digit) {
            let numeric = bytes.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
            return Currency::from_numeric(numeric);
        }
        let upper = [
            bytes[0].to_ascii_uppercase(),
            bytes[1].to_ascii_uppercase(),
            bytes[2].to_ascii_uppercase(),
        ];
        // The table is in alphabetic order (a test holds it there).
        CURRENCIES
            .binary_search_by(|c| c.alpha.cmp(&upper))
            .ok()
            .and_then(|at| CURRENCIES.get(at))
            .copied()
    }

    /// A currency by its ISO 4217 numeric code. Every request's DE49 is
    /// looked up here, so by an index rather than a walk of the table.
    pub fn from_numeric(numeric: u16) -> Option<Currency> {
        let at = *BY_NUMERIC.get(usize::from(numeric))?;
        CURRENCIES.get(usize::from(at).checked_sub(1)?).copied()
    }

    /// The alphabetic code, for example `USD`.
    pub fn alpha(&self) -> &str {
        std::str::from_utf8(&self.alpha).unwrap_or("???")
    }

    /// The numeric code, for example 840.
    pub fn numeric(&self) -> u16 {
        self.numeric
    }

    /// The numeric code as the three digits of DE49.
    pub fn numeric_field(&self) -> [u8; 3] {
        // Every ISO 4217 numeric code has three digits.
        let mut digits = [b'0'; 3];
        write_decimal(self.numeric, &mut digits);
        digits
    }

    /// Digits after the decimal point (2 for USD, 0 for JPY, 3 for BHD).
    pub fn minor_units(&self) -> u8 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({} {:03})", self.alpha(), self.numeric)
    }
}

/// ISO 4217 as published (list one, active codes), generated from the
/// maintenance agency's table. Codes without minor units (funds, metals)
/// are listed with 0.
/// One place per numeric code 0-999: its currency's place in
/// [`CURRENCIES`] plus one, or 0 for none.
static BY_NUMERIC: std::sync::LazyLock<[u8; 1000]> = std::sync::LazyLock::new(|| {
    let mut index = [0u8; 1000];
    for (at, currency) in (1u8..).zip(CURRENCIES.iter()) {
        if let Some(slot) = index.get_mut(usize::from(currency.numeric)) {
            *slot = at;
        }
    }
    index
});

/// In alphabetic order, for [`Currency::parse`]'s binary search.
const CURRENCIES: [Currency; 178] = [
    Currency::new(*b"AED", 784, 2),
    Currency::new(*b"AFN", 971, 2),
    Currency::new(*b"ALL", 8, 2),
    Currency::new(*b"AMD", 51, 2),
    Currency::new(*b"AOA", 973, 2),
    Currency::new(*b"ARS", 32, 2),
    Currency::new(*b"AUD", 36, 2),
    Currency::new(*b"AWG", 533, 2),
    Currency::new(*b"AZN", 944, 2),
    Currency::new(*b"BAM", 977, 2),
    Currency::new(*b"BBD", 52, 2),
    Currency::new(*b"BDT", 50, 2),
    Currency::new(*b"BHD", 48, 3),
    Currency::new(*b"BIF", 108, 0),
    Currency::new(*b"BMD", 60, 2),
    Currency::new(*b"BND", 96, 2),
    Currency::new(*b"BOB", 68, 2),
    Currency::new(*b"BOV", 984, 2),
    Currency::new(*b"BRL", 986, 2),
    Currency::new(*b"BSD", 44, 2),
    Currency::new(*b"BTN", 64, 2),
    Currency::new(*b"BWP", 72, 2),
    Currency::new(*b"BYN", 933, 2),
    Currency::new(*b"BZD", 84, 2),
    Currency::new(*b"CAD", 124, 2),
    Currency::new(*b"CDF", 976, 2),
    Currency::new(*b"CHE", 947, 2),
    Currency::new(*b"CHF", 756, 2),
    Currency::new(*b"CHW", 948, 2),
    Currency::new(*b"CLF", 990, 4),
    Currency::new(*b"CLP", 152, 0),
    Currency::new(*b"CNY", 156, 2),
    Currency::new(*b"COP", 170, 2),
    Currency::new(*b"COU", 970, 2),
    Currency::new(*b"CRC", 188, 2),
    Currency::new(*b"CUP", 192, 2),
    Currency::new(*b"CVE", 132, 2),
    Currency::new(*b"CZK", 203, 2),
    Currency::new(*b"DJF", 262, 0),
    Currency::new(*b"DKK", 208, 2),
    Currency::new(*b"DOP", 214, 2),
    Currency::new(*b"DZD", 12, 2),
    Currency::new(*b"EGP", 818, 2),
    Currency::new(*b"ERN", 232, 2),
    Currency::new(*b"ETB", 230, 2),
    Currency::new(*b"EUR", 978, 2),
    Currency::new(*b"FJD", 242, 2),
    Currency::new(*b"FKP", 238, 2),
    Currency::new(*b"GBP", 826, 2),
    Currency::new(*b"GEL", 981, 2),
    Currency::new(*b"GHS", 936, 2),
    Currency::new(*b"GIP", 292, 2),
    Currency::new(*b"GMD", 270, 2),
    Currency::new(*b"GNF", 324, 0),
    Currency::new(*b"GTQ", 320, 2),
    Currency::new(*b"GYD", 328, 2),
    Currency::new(*b"HKD", 344, 2),
    Currency::new(*b"HNL", 340, 2),
    Currency::new(*b"HTG", 332, 2),
    Currency::new(*b"HUF", 348, 2),
    Currency::new(*b"IDR", 360, 2),
    Currency::new(*b"ILS", 376, 2),
    Currency::new(*b"INR", 356, 2),
    Currency::new(*b"IQD", 368, 3),
    Currency::new(*b"IRR", 364, 2),
    Currency::new(*b"ISK", 352, 0),
    Currency::new(*b"JMD", 388, 2),
    Currency::new(*b"JOD", 400, 3),
    Currency::new(*b"JPY", 392, 0),
    Currency::new(*b"KES", 404, 2),
    Currency::new(*b"KGS", 417, 2),
    Currency::new(*b"KHR", 116, 2),
    Currency::new(*b"KMF", 174, 0),
    Currency::new(*b"KPW", 408, 2),
    Currency::new(*b"KRW", 410, 0),
    Currency::new(*b"KWD", 414, 3),
    Currency::new(*b"KYD", 136, 2),
    Currency::new(*b"KZT", 398, 2),
    Currency::new(*b"LAK", 418, 2),
    Currency::new(*b"LBP", 422, 2),
    Currency::new(*b"LKR", 144, 2),
    Currency::new(*b"LRD", 430, 2),
    Currency::new(*b"LSL", 426, 2),
    Currency::new(*b"LYD", 434, 3),
    Currency::new(*b"MAD", 504, 2),
    Currency::new(*b"MDL", 498, 2),
    Currency::new(*b"MGA", 969, 2),
    Currency::new(*b"MKD", 807, 2),
    Currency::new(*b"MMK", 104, 2),
    Currency::new(*b"MNT", 496, 2),
    Currency::new(*b"MOP", 446, 2),
    Currency::new(*b"MRU", 929, 2),
    Currency::new(*b"MUR", 480, 2),
    Currency::new(*b"MVR", 462, 2),
    Currency::new(*b"MWK", 454, 2),
    Currency::new(*b"MXN", 484, 2),
    Currency::new(*b"MXV", 979, 2),
    Currency::new(*b"MYR", 458, 2),
    Currency::new(*b"MZN", 943, 2),
    Currency::new(*b"NAD", 516, 2),
    Currency::new(*b"NGN", 566, 2),
    Currency::new(*b"NIO", 558, 2),
    Currency::new(*b"NOK", 578, 2),
    Currency::new(*b"NPR", 524, 2),
    Currency::new(*b"NZD", 554, 2),
    Currency::new(*b"OMR", 512, 3),
    Currency::new(*b"PAB", 590, 2),
    Currency::new(*b"PEN", 604, 2),
    Currency::new(*b"PGK", 598, 2),
    Currency::new(*b"PHP", 608, 2),
    Currency::new(*b"PKR", 586, 2),
    Currency::new(*b"PLN", 985, 2),
    Currency::new(*b"PYG", 600, 0),
    Currency::new(*b"QAR", 634, 2),
    Currency::new(*b"RON", 946, 2),
    Currency::new(*b"RSD", 941, 2),
    Currency::new(*b"RUB", 643, 2),
    Currency::new(*b"RWF", 646, 0),
    Currency::new(*b"SAR", 682, 2),
    Currency::new(*b"SBD", 90, 2),
    Currency::new(*b"SCR", 690, 2),
    Currency::new(*b"SDG", 938, 2),
    Currency::new(*b"SEK", 752, 2),
    Currency::new(*b"SGD", 702, 2),
    Currency::new(*b"SHP", 654, 2),
    Currency::new(*b"SLE", 925, 2),
    Currency::new(*b"SOS", 706, 2),
    Currency::new(*b"SRD", 968, 2),
    Currency::new(*b"SSP", 728, 2),
    Currency::new(*b"STN", 930, 2),
    Currency::new(*b"SVC", 222, 2),
    Currency::new(*b"SYP", 760, 2),
    Currency::new(*b"SZL", 748, 2),
    Currency::new(*b"THB", 764, 2),
    Currency::new(*b"TJS", 972, 2),
    Currency::new(*b"TMT", 934, 2),
    Currency::new(*b"TND", 788, 3),
    Currency::new(*b"TOP", 776, 2),
    Currency::new(*b"TRY", 949, 2),
    Currency::new(*b"TTD", 780, 2),
    Currency::new(*b"TWD", 901, 2),
    Currency::new(*b"TZS", 834, 2),
    Currency::new(*b"UAH", 980, 2),
    Currency::new(*b"UGX", 800, 0),
    Currency::new(*b"USD", 840, 2),
    Currency::new(*b"USN", 997, 2),
    Currency::new(*b"UYI", 940, 0),
    Currency::new(*b"UYU", 858, 2),
    Currency::new(*b"UYW", 927, 4),
    Currency::new(*b"UZS", 860, 2),
    Currency::new(*b"VED", 926, 2),
    Currency::new(*b"VES", 928, 2),
    Currency::new(*b"VND", 704, 0),
    Currency::new(*b"VUV", 548, 0),
    Currency::new(*b"WST", 882, 2),
    Currency::new(*b"XAD", 396, 2),
    Currency::new(*b"XAF", 950, 0),
    Currency::new(*b"XAG", 961, 0),
    Currency::new(*b"XAU", 959, 0),
    Currency::new(*b"XBA", 955, 0),
    Currency::new(*b"XBB", 956, 0),
    Currency::new(*b"XBC", 957, 0),
    Currency::new(*b"XBD", 958, 0),
    Currency::new(*b"XCD", 951, 2),
    Currency::new(*b"XCG", 532, 2),
    Currency::new(*b"XDR", 960, 0),
    Currency::new(*b"XOF", 952, 0),
    Currency::new(*b"XPD", 964, 0),
    Currency::new(*b"XPF", 953, 0),
    Currency::new(*b"XPT", 962, 0),
    Currency::new(*b"XSU", 994, 0),
    Currency::new(*b"XTS", 963, 0),
    Currency::new(*b"XUA", 965, 0),
    Currency::new(*b"XXX", 999, 0),
    Currency::new(*b"YER", 886, 2),
    Currency::new(*b"ZAR", 710, 2),
    Currency::new(*b"ZMW", 967, 2),
    Currency::new(*b"ZWG", 924, 2),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_through_de4() {
        let amount = Amount::from_field(b"000000012345").unwrap();
        assert_eq!(amount.minor(), 12345);
        assert_eq!(&amount.to_field(), b"000000012345");
        assert_eq!(Amount::MAX.to_field(), *b"999999999999");
        assert!(Amount::from_field(b"00000001234").is_none());
        assert!(Amount::from_field(b"00000001234x").is_none());
        assert!(Amount::from_minor(1_000_000_000_000).is_none());
        assert!(
            Amount::MAX
                .checked_add(Amount::from_minor(1).unwrap())
                .is_none()
        );
    }

    #[test]
    fn currencies_by_alpha_and_numeric() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!((usd.numeric(), usd.minor_units()), (840, 2));
        assert_eq!(Currency::parse("840"), Some(usd));
        assert_eq!(Currency::parse("usd"), Some(usd));
        assert_eq!(&usd.numeric_field(), b"840");
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("BHD").unwrap().minor_units(), 3);
        assert_eq!(&Currency::parse("048").unwrap().numeric_field(), b"048");
        assert_eq!(Currency::parse("978").unwrap().alpha(), "EUR");
        assert!(Currency::parse("XXY").is_none());
        assert!(Currency::parse("000").is_none());
        assert!(Currency::parse("US").is_none());
        assert!(Currency::parse("€€").is_none());
    }

    #[test]
    fn every_currency_is_found_by_both_its_codes() {
        assert!(
            CURRENCIES.windows(2).all(|w| w[0].alpha < w[1].alpha),
            "not in alphabetic order"
        );
        for currency in CURRENCIES {
            assert_eq!(Currency::parse(currency.alpha()), Some(currency));
            assert_eq!(Currency::from_numeric(currency.numeric()), Some(currency));
            let digits = currency.numeric_field();
            assert_eq!(
                Currency::parse(std::str::from_utf8(&digits).unwrap()),
                Some(currency)
            );
        }
        assert_eq!(Currency::from_numeric(0), None);
        assert_eq!(Currency::from_numeric(1000), None);
        assert_eq!(Currency::from_numeric(u16::MAX), None);
    }

    #[test]
    fn the_table_has_no_duplicate_codes() {
        for (i, a) in CURRENCIES.iter().enumerate() {
            for b in &CURRENCIES[i + 1..] {
                assert_ne!(a.alpha, b.alpha);
                assert_ne!(a.numeric, b.numeric, "{a:?} {b:?}");
            }
        }
    }
}
