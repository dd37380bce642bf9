//! The content classes of ISO 8583 (`n`, `a`, `an`, `ans`, `ns`, `z`, `x+n`,
//! `b`): what characters a field's value may hold.
//!
//! A class is checked on the canonical (ASCII) value, whatever encoding the
//! field travels in, and is named in the errors that report a byte outside
//! it, so it sits below both [`crate::encoding`] and [`crate::error`].

use std::fmt;

use serde::Deserialize;

/// What characters a field may hold (ISO 8583 attribute notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ContentClass {
    /// Numeric digits.
    #[serde(rename = "n")]
    N,
    /// Letters (and space, which fixed-length fields use as padding).
    #[serde(rename = "a")]
    A,
    /// Letters, digits and space.
    #[serde(rename = "an")]
    An,
    /// Printable ASCII: letters, digits, space and special characters.
    #[serde(rename = "ans")]
    Ans,
    /// Digits and special characters.
    #[serde(rename = "ns")]
    Ns,
    /// Track 2 and 3 code set: digits and the field separators `=` and `D`.
    #[serde(rename = "z")]
    Z,
    /// A sign, `C` (credit) or `D` (debit), then digits.
    #[serde(rename = "x+n")]
    XN,
    /// Raw bytes.
    #[serde(rename = "b")]
    B,
}

impl fmt::Display for ContentClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContentClass::N => "n",
            ContentClass::A => "a",
            ContentClass::An => "an",
            ContentClass::Ans => "ans",
            ContentClass::Ns => "ns",
            ContentClass::Z => "z",
            ContentClass::XN => "x+n",
            ContentClass::B => "b",
        })
    }
}

const DIGIT: u8 = 1;
const ALPHA: u8 = 2;
const SPACE: u8 = 4;
const SPECIAL: u8 = 8;
const TRACK: u8 = 16;

/// One byte of flags per ASCII byte value, so a class check is a table look-up
/// and an AND, with no branch per character class.
// `b as u8` cannot truncate: the loop stops below 256. A const initializer
// cannot call `u8::try_from`, which is not a const function.
#[allow(clippy::as_conversions)]
const CHAR_FLAGS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_digit() {
            DIGIT | TRACK
        } else if c.is_ascii_alphabetic() {
            if c == b'D' { ALPHA | TRACK } else { ALPHA }
        } else if c == b' ' {
            SPACE
        } else if c == b'=' {
            SPECIAL | TRACK
        } else if c >= 0x21 && c <= 0x7E {
            SPECIAL
        } else {
            0
        };
        b += 1;
    }
    table
};

impl ContentClass {
    fn allowed_flags(self) -> u8 {
        match self {
            ContentClass::N => DIGIT,
            ContentClass::A => ALPHA | SPACE,
            ContentClass::An => ALPHA | DIGIT | SPACE,
            ContentClass::Ans => ALPHA | DIGIT | SPACE | SPECIAL,
            ContentClass::Ns => DIGIT | SPECIAL,
            ContentClass::Z => TRACK,
            // The sign is checked apart; what follows it is digits.
            ContentClass::XN => DIGIT,
            ContentClass::B => 0,
        }
    }

    /// The index of the first byte of `value` this class does not allow.
    pub fn first_invalid(self, value: &[u8]) -> Option<usize> {
        match self {
            ContentClass::B => None,
            ContentClass::XN => match value.first() {
                None => None,
                Some(b'C' | b'D') => {
                    first_without(value.get(1..).unwrap_or_default(), DIGIT).map(|i| i + 1)
                }
                Some(_) => Some(0),
            },
            ContentClass::Z => first_without(value, TRACK).filter(|&i| {
                // `D` is a track separator, all other letters are not.
                value.get(i) != Some(&b'D')
            }),
            class => first_without(value, class.allowed_flags()),
        }
    }

    /// Whether values of this class are text (ASCII) rather than raw bytes.
    pub fn is_text(self) -> bool {
        self != ContentClass::B
    }
}

fn first_without(value: &[u8], flags: u8) -> Option<usize> {
    value
        .iter()
        .position(|&b| CHAR_FLAGS[usize::from(b)] & flags == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_accept_and_reject_what_iso_8583_says() {
        use ContentClass::*;
        assert_eq!(N.first_invalid(b"0123456789"), None);
        assert_eq!(N.first_invalid(b"12a4"), Some(2));
        assert_eq!(N.first_invalid(b"12 4"), Some(2));
        assert_eq!(A.first_invalid(b"AB cd"), None);
        assert_eq!(A.first_invalid(b"AB1"), Some(2));
        assert_eq!(An.first_invalid(b"AB12 x"), None);
        assert_eq!(An.first_invalid(b"AB-1"), Some(2));
        assert_eq!(Ans.first_invalid(b"ACME *STORE* #12, IL"), None);
        assert_eq!(Ans.first_invalid(b"tab\there"), Some(3));
        assert_eq!(Ans.first_invalid(&[b'a', 0x80]), Some(1));
        assert_eq!(Ns.first_invalid(b"12-34/56"), None);
        assert_eq!(Ns.first_invalid(b"12A"), Some(2));
        assert_eq!(Z.first_invalid(b"4111111111111111=2512101"), None);
        assert_eq!(Z.first_invalid(b"4111111111111111D2512101"), None);
        assert_eq!(Z.first_invalid(b"41111E"), Some(5));
        assert_eq!(XN.first_invalid(b"C00001500"), None);
        assert_eq!(XN.first_invalid(b"D00001500"), None);
        assert_eq!(XN.first_invalid(b"X00001500"), Some(0));
        assert_eq!(XN.first_invalid(b"C0000150D"), Some(8));
        assert_eq!(B.first_invalid(&[0, 0xFF, 0x80]), None);
    }
}
