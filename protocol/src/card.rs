//! Card data, which must never leak.
//!
//! [`Pan`] holds a primary account number. Its `Debug` and `Display` print
//! only the first six and last four digits (`411111******1111`), its digits are
//! wiped from memory when it is dropped, and the clear digits are reachable
//! only through [`Pan::expose`]: the codec, the tokenizer and the vault call it,
//! nothing else should. [`SensitiveText`] and [`PinBlock`] do the same for
//! track data, CVVs and PIN blocks, which are never shown at all.
//! [`mask_pan_runs`] masks card numbers the same way in text that came from
//! outside (a URL path, a header) before the switch records it.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Digits a PAN may have (ISO/IEC 7812).
pub const PAN_LENGTH_MIN: usize = 12;
/// Digits a PAN may have (ISO/IEC 7812).
pub const PAN_LENGTH_MAX: usize = 19;

/// A primary account number: 12 to 19 ASCII digits.
///
/// Parsing checks the digits and the length, not the Luhn check digit: a
/// wrong check digit is a decline (DE39 14) decided by the switch's rules,
/// not a malformed message, so [`Pan::luhn_valid`] is asked separately.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Pan {
    digits: [u8; PAN_LENGTH_MAX],
    length: u8,
}

impl Pan {
    /// A PAN from ASCII digits, or `None` if they are not 12 to 19 digits.
    pub fn parse(digits: &[u8]) -> Option<Pan> {
        if !(PAN_LENGTH_MIN..=PAN_LENGTH_MAX).contains(&digits.len())
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let mut pan = Pan {
            digits: [0; PAN_LENGTH_MAX],
            length: u8::try_from(digits.len()).ok()?,
        };
        pan.digits.get_mut(..digits.len())?.copy_from_slice(digits);
        Some(pan)
    }

    /// The clear digits. Every call is a place card data can leak from: only
    /// the codec, the tokenizer and the vault may call it.
    pub fn expose(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(self.digits()).unwrap_or_default()
    }

    fn digits(&self) -> &[u8] {
        self.digits
            .get(..usize::from(self.length))
            .unwrap_or_default()
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        usize::from(self.length)
    }

    /// Always false: a PAN has at least 12 digits.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Whether the last digit is the Luhn check digit of the others.
    pub fn luhn_valid(&self) -> bool {
        let sum: u32 = self
            .digits()
            .iter()
            .rev()
            .enumerate()
            .map(|(i, d)| {
                let d = u32::from(d - b'0');
                if i % 2 == 1 {
                    let doubled = d * 2;
                    if doubled > 9 { doubled - 9 } else { doubled }
                } else {
                    d
                }
            })
            .sum();
        sum.is_multiple_of(10)
    }

    /// The bank identification number: the first `length` digits (6 or 8).
    pub fn bin(&self, length: usize) -> &str {
        self.expose().get(..length.min(8)).unwrap_or_default()
    }

    /// The last four digits.
    pub fn last4(&self) -> &str {
        let all = self.expose();
        all.get(all.len().saturating_sub(4)..).unwrap_or_default()
    }

    /// The PAN as people may see it: first six, stars, last four.
    pub fn masked(&self) -> String {
        let mut masked = self.digits().to_vec();
        mask_digits(&mut masked);
        String::from_utf8(masked).unwrap_or_default()
    }
}

/// Digits shown at the start and at the end of a masked card number.
const SHOWN_FIRST: usize = 6;
const SHOWN_LAST: usize = 4;

/// Stars every digit of `run` but the first six and the last four, leaving
/// anything else (the separators of `4111 1111 1111 1111`) in place: the
/// one masking rule, for [`Pan`] and for [`mask_pan_runs`].
fn mask_digits(run: &mut [u8]) {
    let digits = run.iter().filter(|byte| byte.is_ascii_digit()).count();
    let shown_until = digits.saturating_sub(SHOWN_LAST);
    for (seen, byte) in run
        .iter_mut()
        .filter(|byte| byte.is_ascii_digit())
        .enumerate()
    {
        if seen >= SHOWN_FIRST && seen < shown_until {
            *byte = b'*';
        }
    }
}

/// `text` with every run of [`PAN_LENGTH_MIN`] or more digits masked as a
/// [`Pan`] masks itself (`411111******1111`), for text from outside that
/// the switch records: a URL path or a header in the audit log or a log
/// line. A client can type a card number anywhere, so any run as long as a
/// PAN can be is masked, Luhn-valid or not, including runs longer than a
/// PAN (a PAN with more digits stuck to it). A run may be split by single
/// spaces or dashes, as people write card numbers; the separators stay.
/// Text without such a run is returned as it was, without a copy.
pub fn mask_pan_runs(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let is_separator = |byte: u8| byte == b' ' || byte == b'-';
    let mut masked: Option<Vec<u8>> = None;
    let mut start = 0;
    while let Some(&first) = bytes.get(start) {
        if !first.is_ascii_digit() {
            start += 1;
            continue;
        }
        let (mut end, mut digits) = (start, 0);
        while let Some(&byte) = bytes.get(end) {
            if byte.is_ascii_digit() {
                digits += 1;
            } else if !(is_separator(byte) && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)) {
                break;
            }
            end += 1;
        }
        if digits >= PAN_LENGTH_MIN
            && let Some(run) = masked
                .get_or_insert_with(|| bytes.to_vec())
                .get_mut(start..end)
        {
            mask_digits(run);
        }
        start = end;
    }
    match masked {
        // Only ASCII digits were replaced, by an ASCII star: still UTF-8.
        Some(masked) => Cow::Owned(String::from_utf8(masked).unwrap_or_default()),
        None => Cow::Borrowed(text),
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Reads a PAN from a JSON string. The error never repeats the input.
impl<'de> Deserialize<'de> for Pan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Pan, D::Error> {
        struct PanVisitor;
        impl serde::de::Visitor<'_> for PanVisitor {
            type Value = Pan;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string of 12 to 19 digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Pan, E> {
                Pan::parse(text.as_bytes())
                    .ok_or_else(|| E::custom("pan must be a string of 12 to 19 digits"))
            }
            // serde's default messages quote the value; these must not.
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Pan, E> {
                Err(E::custom(
                    "pan must be a string of 12 to 19 digits, not a number",
                ))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Pan, E> {
                Err(E::custom(
                    "pan must be a string of 12 to 19 digits, not a number",
                ))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Pan, E> {
                Err(E::custom(
                    "pan must be a string of 12 to 19 digits, not a number",
                ))
            }
        }
        // `deserialize_any`, so a number reaches `visit_u64` above instead of
        // serde_json's own message, which would quote it.
        deserializer.deserialize_any(PanVisitor)
    }
}

/// A PAN is written out masked; the clear digits never leave through serde.
impl Serialize for Pan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// A card's expiry date, YYMM as in DE14 and the JSON `expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry {
    /// Two-digit year.
    pub year: u8,
    /// Month, 1 to 12.
    pub month: u8,
}

impl Expiry {
    /// YYMM as four ASCII digits, with a month from 01 to 12.
    pub fn parse(yymm: &[u8]) -> Option<Expiry> {
        let [y1, y2, m1, m2] = <[u8; 4]>::try_from(yymm).ok()?;
        if ![y1, y2, m1, m2].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let month = (m1 - b'0') * 10 + (m2 - b'0');
        (1..=12).contains(&month).then_some(Expiry {
            year: (y1 - b'0') * 10 + (y2 - b'0'),
            month,
        })
    }

    /// YYMM.
    pub fn to_field(self) -> [u8; 4] {
        [
            b'0' + self.year / 10,
            b'0' + self.year % 10,
            b'0' + self.month / 10,
            b'0' + self.month % 10,
        ]
    }

    /// Whether the card has expired at the end of its month, seen from
    /// `(year, month)` of today (two-digit year, 2000-2099).
    pub fn is_expired_at(self, year: u8, month: u8) -> bool {
        (self.year, self.month) < (year, month)
    }
}

/// Text that must never be shown: track data, a CVV. `Debug` prints only its
/// length; the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SensitiveText(String);

impl SensitiveText {
    /// Wraps `text`.
    pub fn new(text: String) -> SensitiveText {
        SensitiveText(text)
    }

    /// The clear text; as with [`Pan::expose`], every call is a place to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SensitiveText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} chars]", self.0.len())
    }
}

/// Reads sensitive text from JSON; errors never repeat the input.
impl<'de> Deserialize<'de> for SensitiveText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SensitiveText, D::Error> {
        struct TextVisitor;
        impl serde::de::Visitor<'_> for TextVisitor {
            type Value = SensitiveText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SensitiveText, E> {
                Ok(SensitiveText(text.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SensitiveText, E> {
                Err(E::custom("must be a string, not a number"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SensitiveText, E> {
                Err(E::custom("must be a string, not a number"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SensitiveText, E> {
                Err(E::custom("must be a string, not a number"))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// An encrypted PIN block (DE52). Never shown, wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PinBlock([u8; 8]);

impl PinBlock {
    /// The eight bytes of DE52, or `None` for any other length.
    pub fn parse(bytes: &[u8]) -> Option<PinBlock> {
        Some(PinBlock(bytes.try_into().ok()?))
    }

    /// The bytes, for forwarding to an issuer.
    pub fn expose(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Debug for PinBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinBlock([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_masks_itself_everywhere() {
        let pan = Pan::parse(b"4111111111111111").unwrap();
        assert_eq!(format!("{pan}"), "411111******1111");
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        assert_eq!(serde_json::to_string(&pan).unwrap(), "\"411111******1111\"");
        assert_eq!(pan.expose(), "4111111111111111");
        let short = Pan::parse(b"4222222222222").unwrap();
        assert_eq!(short.masked(), "422222***2222");
        let long = Pan::parse(b"6759649826438453000").unwrap();
        assert_eq!(long.masked(), "675964*********3000");
        assert_eq!(long.bin(8), "67596498");
        assert_eq!(long.last4(), "3000");
    }

    #[test]
    fn runs_as_long_as_a_pan_are_masked_wherever_they_are() {
        let masked = |text: &str| mask_pan_runs(text).into_owned();
        // In a path, Luhn-valid or not, as long as a PAN can be or longer.
        assert_eq!(
            masked("GET /v1/transactions/4111111111111111"),
            "GET /v1/transactions/411111******1111"
        );
        assert_eq!(masked("/x/4111111111111112/y"), "/x/411111******1112/y");
        assert_eq!(masked("411111222233"), "411111**2233");
        assert_eq!(masked("4111111111111111301299"), "411111************1299");
        assert_eq!(masked("tx_0a4111111111111111ff"), "tx_0a411111******1111ff");
        // Written as people write card numbers: the separators stay.
        assert_eq!(masked("4111 1111 1111 1111"), "4111 11** **** 1111");
        assert_eq!(
            masked("key=4111-1111-1111-1111;"),
            "key=4111-11**-****-1111;"
        );
        // Two runs, each masked on its own.
        assert_eq!(
            masked("5105105105105100,4222222222222"),
            "510510******5100,422222***2222"
        );
        // The same rule as the PAN's own.
        let pan = Pan::parse(b"6759649826438453000").unwrap();
        assert_eq!(masked(pan.expose()), pan.masked());
        // Shorter runs, and separators that do not join digits, are left
        // alone, without a copy.
        for kept in [
            "GET /metrics",
            "12345678901",
            "2026-12-03 19:45:24.123",
            "1234 5678 901",
            "41111111--11111111",
            "ä 4111 ü",
            "",
        ] {
            assert!(
                matches!(mask_pan_runs(kept), Cow::Borrowed(same) if same == kept),
                "{kept}"
            );
        }
    }

    #[test]
    fn pan_parse_checks_digits_and_length() {
        assert!(Pan::parse(b"41111111111").is_none());
        assert!(Pan::parse(b"41111111111111111111").is_none());
        assert!(Pan::parse(b"41111111111x1111").is_none());
        assert!(Pan::parse(b"4111111111111111").is_some());
    }

    #[test]
    fn luhn() {
        for valid in [
            "4111111111111111",
            "5500005555555559",
            "378282246310005",
            "6011111111111117",
            "4222222222222",
        ] {
            assert!(
                Pan::parse(valid.as_bytes()).unwrap().luhn_valid(),
                "{valid}"
            );
        }
        for invalid in ["4111111111111112", "5500005555555558", "378282246310006"] {
            assert!(
                !Pan::parse(invalid.as_bytes()).unwrap().luhn_valid(),
                "{invalid}"
            );
        }
    }

    #[test]
    fn json_errors_never_repeat_the_pan() {
        let error = serde_json::from_str::<Pan>("4111111111111111")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("4111111111111111"), "{error}");
        let error = serde_json::from_str::<Pan>("\"41111111111111x1\"")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("41111111111111x1"), "{error}");
        let error = serde_json::from_str::<SensitiveText>("123")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("123"), "{error}");
    }

    #[test]
    fn expiry() {
        let expiry = Expiry::parse(b"2512").unwrap();
        assert_eq!((expiry.year, expiry.month), (25, 12));
        assert_eq!(&expiry.to_field(), b"2512");
        assert!(Expiry::parse(b"2513").is_none());
        assert!(Expiry::parse(b"2500").is_none());
        assert!(Expiry::parse(b"25a1").is_none());
        assert!(!expiry.is_expired_at(25, 12));
        assert!(expiry.is_expired_at(26, 1));
    }

    #[test]
    fn secrets_never_print() {
        let cvv = SensitiveText::new("123".to_owned());
        assert_eq!(format!("{cvv:?}"), "[redacted 3 chars]");
        let pin = PinBlock::parse(&[0x12; 8]).unwrap();
        assert_eq!(format!("{pin:?}"), "PinBlock([redacted])");
        assert!(PinBlock::parse(&[0; 7]).is_none());
    }
}
