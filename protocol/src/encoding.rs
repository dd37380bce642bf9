//! Byte-level representations of a value on the wire.
//!
//! Inside the switch every field value has one canonical form: ASCII characters
//! for the text classes (`n`, `a`, `an`, `ans`, `ns`, `z`, `x+n`) and raw bytes
//! for class `b`. A [`DataEncoding`] says how that canonical form travels:
//! as is (ASCII, binary), translated (EBCDIC), packed two digits a byte (BCD)
//! or spelled out as hex-ASCII. Decoding and encoding check the value against
//! its field's [`ContentClass`].

use serde::Deserialize;

use crate::content_class::ContentClass;
use crate::error::{DecodeError, EncodeError, Location};

/// How a field's value travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    /// Text as ASCII bytes.
    Ascii,
    /// Text as EBCDIC (code page 500) bytes.
    Ebcdic,
    /// Digits packed two a byte; an odd count is padded with a leading zero nibble.
    Bcd,
    /// Raw bytes (class `b` only).
    Binary,
    /// Raw bytes spelled as two upper-case hex digits each (class `b` only).
    Hex,
}

/// How the length prefix of a variable field travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthEncoding {
    /// Decimal digits in ASCII: 2 for LLVAR, 3 for LLLVAR.
    Ascii,
    /// Decimal digits in EBCDIC: 2 for LLVAR, 3 for LLLVAR.
    Ebcdic,
    /// Decimal digits in BCD: 1 byte for LLVAR, 2 for LLLVAR.
    Bcd,
    /// A big-endian unsigned integer: 1 byte for LLVAR, 2 for LLLVAR.
    Binary,
}

/// What a variable field's length prefix counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthCounts {
    /// Units of the value: digits or characters for text, bytes for class `b`.
    Value,
    /// Bytes on the wire (differs from `value` for BCD and hex-ASCII data).
    Wire,
}

impl LengthEncoding {
    /// Bytes the prefix takes for a field with `digits` length digits (2 or 3).
    pub fn prefix_width(self, digits: usize) -> usize {
        match self {
            LengthEncoding::Ascii | LengthEncoding::Ebcdic => digits,
            LengthEncoding::Bcd | LengthEncoding::Binary => digits.div_ceil(2),
        }
    }

    /// The largest count the prefix can say for a field with `digits` digits.
    pub fn prefix_max(self, digits: usize) -> usize {
        let decimal_max = match digits {
            2 => 99,
            _ => 999,
        };
        match self {
            LengthEncoding::Binary if digits == 2 => 255,
            LengthEncoding::Binary => 65_535,
            _ => decimal_max,
        }
    }

    /// Reads a length prefix. `prefix` is exactly `prefix_width` bytes.
    pub fn read(self, prefix: &[u8], location: Location) -> Result<usize, DecodeError> {
        match self {
            LengthEncoding::Ascii => read_decimal(prefix.iter().copied(), location),
            LengthEncoding::Ebcdic => {
                read_decimal(prefix.iter().map(|&b| ebcdic_to_ascii(b)), location)
            }
            LengthEncoding::Bcd => {
                let mut length = 0usize;
                for (position, &b) in prefix.iter().enumerate() {
                    let (high, low) = (b >> 4, b & 0x0F);
                    if high > 9 || low > 9 {
                        return Err(DecodeError::NotBcd { location, position });
                    }
                    length = length * 100 + usize::from(high) * 10 + usize::from(low);
                }
                Ok(length)
            }
            LengthEncoding::Binary => Ok(prefix
                .iter()
                .fold(0usize, |length, &b| (length << 8) | usize::from(b))),
        }
    }

    /// Writes a length prefix of `width` bytes. The caller has checked that
    /// `length` fits ([`LengthEncoding::prefix_max`]).
    pub fn write(self, length: usize, width: usize, out: &mut Vec<u8>) {
        match self {
            LengthEncoding::Ascii | LengthEncoding::Ebcdic => {
                let start = out.len();
                out.resize(start + width, b'0');
                let digits = out.get_mut(start..).unwrap_or_default();
                write_decimal(length, digits);
                if self == LengthEncoding::Ebcdic {
                    digits.iter_mut().for_each(|d| *d = ascii_to_ebcdic(*d));
                }
            }
            LengthEncoding::Bcd => {
                let mut digits = [b'0'; 4];
                write_decimal(length, &mut digits);
                let used = digits.get(4 - width * 2..).unwrap_or_default();
                for pair in used.chunks_exact(2) {
                    if let [high, low] = pair {
                        out.push(((high - b'0') << 4) | (low - b'0'));
                    }
                }
            }
            LengthEncoding::Binary => push_low_bytes(length, width, out),
        }
    }
}

fn read_decimal(
    digits: impl Iterator<Item = u8>,
    location: Location,
) -> Result<usize, DecodeError> {
    let mut length = 0usize;
    for b in digits {
        match b {
            b'0'..=b'9' => length = length * 10 + usize::from(b - b'0'),
            b'+' | b'-' => return Err(DecodeError::LengthPrefixSigned { location }),
            _ => return Err(DecodeError::LengthPrefixNotDigits { location }),
        }
    }
    Ok(length)
}

/// Code page 500 to ASCII for the printable range; 0 where there is no mapping.
const EBCDIC_TO_ASCII: [u8; 256] = [
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5B, 0x2E, 0x3C, 0x28, 0x2B, 0x21,
    0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5D, 0x24, 0x2A, 0x29, 0x3B, 0x5E,
    0x2D, 0x2F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2C, 0x25, 0x5F, 0x3E, 0x3F,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x3A, 0x23, 0x40, 0x27, 0x3D, 0x22,
    0x00, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x7E, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7C, 0x00, 0x00, 0x00, 0x00,
    0x7B, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x7D, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F, 0x50, 0x51, 0x52, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x5C, 0x00, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// ASCII to code page 500 for the printable range; 0 where there is no mapping.
const ASCII_TO_EBCDIC: [u8; 128] = [
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x4F, 0x7F, 0x7B, 0x5B, 0x6C, 0x50, 0x7D, 0x4D, 0x5D, 0x5C, 0x4E, 0x6B, 0x60, 0x4B, 0x61,
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0x7A, 0x5E, 0x4C, 0x7E, 0x6E, 0x6F,
    0x7C, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
    0xD7, 0xD8, 0xD9, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0x4A, 0xE0, 0x5A, 0x5F, 0x6D,
    0x79, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xC0, 0xBB, 0xD0, 0xA1, 0x00,
];

/// One EBCDIC byte as ASCII, or 0 if it has no printable mapping.
pub fn ebcdic_to_ascii(b: u8) -> u8 {
    EBCDIC_TO_ASCII[usize::from(b)]
}

/// One ASCII byte as EBCDIC, or 0 if it has no printable mapping.
pub fn ascii_to_ebcdic(b: u8) -> u8 {
    ASCII_TO_EBCDIC.get(usize::from(b)).copied().unwrap_or(0)
}

/// Writes `n` in decimal, right-aligned in `out` with leading zeros, as a
/// fixed-width numeric field holds it. Digits that do not fit are dropped;
/// callers check the value's range first.
pub(crate) fn write_decimal<T>(n: T, out: &mut [u8])
where
    T: Copy + From<u8> + std::ops::Div<Output = T> + std::ops::Rem<Output = T>,
    u8: TryFrom<T>,
{
    let ten = T::from(10);
    let mut rest = n;
    for slot in out.iter_mut().rev() {
        // A remainder of a division by ten always fits a byte.
        *slot = b'0' + u8::try_from(rest % ten).unwrap_or(0);
        rest = rest / ten;
    }
}

/// Appends the low `count` bytes of `n`, most significant first, as binary
/// length fields carry it. Higher bytes are dropped; callers check the
/// value's range first.
pub(crate) fn push_low_bytes(n: usize, count: usize, out: &mut Vec<u8>) {
    let bytes = n.to_be_bytes();
    out.extend_from_slice(
        bytes
            .get(bytes.len().saturating_sub(count)..)
            .unwrap_or_default(),
    );
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `bytes` as upper-case hex-ASCII.
pub fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX_UPPER[usize::from(b >> 4)]);
        out.push(HEX_UPPER[usize::from(b & 0x0F)]);
    }
}

/// `bytes` as an upper-case hex string.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut out);
    // Only ASCII hex digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// The value of one hex digit, either case.
pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Appends the bytes that the hex-ASCII `text` spells. Both cases are read.
pub fn extend_from_hex(
    text: &[u8],
    location: Location,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    if !text.len().is_multiple_of(2) {
        return Err(DecodeError::NotHex {
            location,
            position: text.len(),
        });
    }
    out.reserve(text.len() / 2);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let (Some(&h), Some(&l)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let high = hex_value(h).ok_or(DecodeError::NotHex {
            location,
            position: i * 2,
        })?;
        let low = hex_value(l).ok_or(DecodeError::NotHex {
            location,
            position: i * 2 + 1,
        })?;
        out.push((high << 4) | low);
    }
    Ok(())
}

/// Bytes from a hex string, for configuration and the CLI.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 2);
    extend_from_hex(text.as_bytes(), Location::Header, &mut out).ok()?;
    Some(out)
}

impl DataEncoding {
    /// Wire bytes taken by a value of `units` value units.
    pub fn wire_len(self, units: usize) -> usize {
        match self {
            DataEncoding::Ascii | DataEncoding::Ebcdic | DataEncoding::Binary => units,
            DataEncoding::Bcd => units.div_ceil(2),
            DataEncoding::Hex => units * 2,
        }
    }

    /// Decodes `wire` (exactly the field's bytes) holding `units` value units,
    /// checks it against `class`, and appends the canonical value to `out`.
    pub fn decode(
        self,
        wire: &[u8],
        units: usize,
        class: ContentClass,
        location: Location,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let start = out.len();
        match self {
            DataEncoding::Ascii | DataEncoding::Binary => out.extend_from_slice(wire),
            DataEncoding::Ebcdic => {
                for (position, &b) in wire.iter().enumerate() {
                    let c = ebcdic_to_ascii(b);
                    if c == 0 {
                        out.truncate(start);
                        return Err(DecodeError::NotEbcdic { location, position });
                    }
                    out.push(c);
                }
            }
            DataEncoding::Bcd => {
                let odd = units % 2 == 1;
                for (i, &b) in wire.iter().enumerate() {
                    let (high, low) = (b >> 4, b & 0x0F);
                    if i == 0 && odd {
                        if high != 0 {
                            return Err(DecodeError::BcdPadNotZero { location });
                        }
                    } else {
                        if high > 9 {
                            out.truncate(start);
                            return Err(DecodeError::NotBcd {
                                location,
                                position: i,
                            });
                        }
                        out.push(b'0' + high);
                    }
                    if low > 9 {
                        out.truncate(start);
                        return Err(DecodeError::NotBcd {
                            location,
                            position: i,
                        });
                    }
                    out.push(b'0' + low);
                }
            }
            DataEncoding::Hex => extend_from_hex(wire, location, out)?,
        }
        let value = out.get(start..).unwrap_or_default();
        if let Some(position) = class.first_invalid(value) {
            out.truncate(start);
            return Err(DecodeError::NotInClass {
                location,
                class,
                position,
            });
        }
        Ok(())
    }

    /// Appends the wire form of the canonical `value`, checked against `class`.
    pub fn encode(
        self,
        value: &[u8],
        class: ContentClass,
        location: Location,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if let Some(position) = class.first_invalid(value) {
            return Err(EncodeError::NotInClass {
                location,
                class,
                position,
            });
        }
        match self {
            DataEncoding::Ascii | DataEncoding::Binary => out.extend_from_slice(value),
            DataEncoding::Ebcdic => {
                for (position, &c) in value.iter().enumerate() {
                    let e = ascii_to_ebcdic(c);
                    if e == 0 {
                        return Err(EncodeError::NotEbcdic { location, position });
                    }
                    out.push(e);
                }
            }
            DataEncoding::Bcd => {
                // Only class `n` reaches here (the spec loader enforces it),
                // so every byte is an ASCII digit.
                let (head, pairs) = value.split_at(value.len() % 2);
                if let Some(&d) = head.first() {
                    out.push(d - b'0');
                }
                for pair in pairs.chunks_exact(2) {
                    if let [h, l] = pair {
                        out.push(((h - b'0') << 4) | (l - b'0'));
                    }
                }
            }
            DataEncoding::Hex => push_hex(value, out),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Location = Location::Field(2);

    fn decode(
        encoding: DataEncoding,
        wire: &[u8],
        units: usize,
        class: ContentClass,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        encoding
            .decode(wire, units, class, HERE, &mut out)
            .map(|()| out)
    }

    fn encode(
        encoding: DataEncoding,
        value: &[u8],
        class: ContentClass,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        encoding.encode(value, class, HERE, &mut out).map(|()| out)
    }

    #[test]
    fn ascii_round_trips_and_checks_class() {
        assert_eq!(
            decode(DataEncoding::Ascii, b"000123", 6, ContentClass::N).unwrap(),
            b"000123"
        );
        assert_eq!(
            decode(DataEncoding::Ascii, b"00x123", 6, ContentClass::N),
            Err(DecodeError::NotInClass {
                location: HERE,
                class: ContentClass::N,
                position: 2
            })
        );
        assert_eq!(
            encode(DataEncoding::Ascii, b"000123", ContentClass::N).unwrap(),
            b"000123"
        );
        assert!(encode(DataEncoding::Ascii, b"0001x3", ContentClass::N).is_err());
    }

    #[test]
    fn ebcdic_round_trips_printable_ascii() {
        let text: Vec<u8> = (0x20u8..0x7F).collect();
        let wire = encode(DataEncoding::Ebcdic, &text, ContentClass::Ans).unwrap();
        assert_eq!(&wire[..3], &[0x40, 0x4F, 0x7F]);
        assert_eq!(
            decode(DataEncoding::Ebcdic, &wire, wire.len(), ContentClass::Ans).unwrap(),
            text
        );
        assert_eq!(
            encode(DataEncoding::Ebcdic, b"1234", ContentClass::N).unwrap(),
            [0xF1, 0xF2, 0xF3, 0xF4]
        );
        assert_eq!(
            decode(DataEncoding::Ebcdic, &[0xF1, 0x00], 2, ContentClass::N),
            Err(DecodeError::NotEbcdic {
                location: HERE,
                position: 1
            })
        );
    }

    #[test]
    fn bcd_packs_two_digits_a_byte_with_left_zero_pad() {
        assert_eq!(
            encode(DataEncoding::Bcd, b"123456", ContentClass::N).unwrap(),
            [0x12, 0x34, 0x56]
        );
        assert_eq!(
            encode(DataEncoding::Bcd, b"12345", ContentClass::N).unwrap(),
            [0x01, 0x23, 0x45]
        );
        assert_eq!(
            decode(DataEncoding::Bcd, &[0x01, 0x23, 0x45], 5, ContentClass::N).unwrap(),
            b"12345"
        );
        assert_eq!(
            decode(DataEncoding::Bcd, &[0x12, 0x34, 0x56], 6, ContentClass::N).unwrap(),
            b"123456"
        );
        assert_eq!(
            decode(DataEncoding::Bcd, &[0x11, 0x23], 3, ContentClass::N),
            Err(DecodeError::BcdPadNotZero { location: HERE })
        );
        assert_eq!(
            decode(DataEncoding::Bcd, &[0x12, 0x3A], 4, ContentClass::N),
            Err(DecodeError::NotBcd {
                location: HERE,
                position: 1
            })
        );
        assert_eq!(DataEncoding::Bcd.wire_len(5), 3);
    }

    #[test]
    fn hex_round_trips_and_reads_lower_case() {
        assert_eq!(
            encode(DataEncoding::Hex, &[0x9F, 0x26, 0x0A], ContentClass::B).unwrap(),
            b"9F260A"
        );
        assert_eq!(
            decode(DataEncoding::Hex, b"9f260A", 3, ContentClass::B).unwrap(),
            [0x9F, 0x26, 0x0A]
        );
        assert_eq!(
            decode(DataEncoding::Hex, b"9G", 1, ContentClass::B),
            Err(DecodeError::NotHex {
                location: HERE,
                position: 1
            })
        );
        assert_eq!(DataEncoding::Hex.wire_len(8), 16);
        assert_eq!(from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(to_hex(&[0xAB, 0x01]), "AB01");
    }

    #[test]
    fn length_prefixes_in_every_encoding() {
        for (encoding, width, length, wire) in [
            (LengthEncoding::Ascii, 2, 19usize, vec![b'1', b'9']),
            (LengthEncoding::Ascii, 3, 7, vec![b'0', b'0', b'7']),
            (LengthEncoding::Ebcdic, 3, 120, vec![0xF1, 0xF2, 0xF0]),
            (LengthEncoding::Bcd, 1, 19, vec![0x19]),
            (LengthEncoding::Bcd, 2, 999, vec![0x09, 0x99]),
            (LengthEncoding::Binary, 1, 200, vec![200]),
            (LengthEncoding::Binary, 2, 510, vec![0x01, 0xFE]),
        ] {
            let mut out = Vec::new();
            encoding.write(length, width, &mut out);
            assert_eq!(out, wire, "{encoding:?} {length}");
            assert_eq!(
                encoding.read(&wire, HERE),
                Ok(length),
                "{encoding:?} {length}"
            );
        }
        assert_eq!(
            LengthEncoding::Ascii.read(b"1x", HERE),
            Err(DecodeError::LengthPrefixNotDigits { location: HERE })
        );
        assert_eq!(
            LengthEncoding::Ascii.read(b"-1", HERE),
            Err(DecodeError::LengthPrefixSigned { location: HERE })
        );
        assert_eq!(
            LengthEncoding::Ascii.read(b"+1", HERE),
            Err(DecodeError::LengthPrefixSigned { location: HERE })
        );
        assert_eq!(
            LengthEncoding::Ascii.read(b" 1", HERE),
            Err(DecodeError::LengthPrefixNotDigits { location: HERE })
        );
        assert_eq!(
            LengthEncoding::Ebcdic.read(&[0x60, 0xF1], HERE),
            Err(DecodeError::LengthPrefixSigned { location: HERE })
        );
        assert_eq!(
            LengthEncoding::Bcd.read(&[0x1A], HERE),
            Err(DecodeError::NotBcd {
                location: HERE,
                position: 0
            })
        );
        assert_eq!(LengthEncoding::Binary.prefix_max(2), 255);
        assert_eq!(LengthEncoding::Bcd.prefix_width(3), 2);
    }
}
