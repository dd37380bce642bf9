//! The parts of a payload around its fields: the MTI and the primary and
//! secondary bitmaps, in each wire form a dialect may choose, and the reader
//! that takes bytes off the payload in order.

use crate::content_class::ContentClass;
use crate::encoding::{self, hex_value, push_hex};
use crate::error::{DecodeError, EncodeError, Location};
use crate::mti::Mti;
use crate::spec::{BitmapEncoding, MtiEncoding};

/// The unread rest of a payload.
pub(super) struct Reader<'a> {
    pub(super) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(
        &mut self,
        length: usize,
        location: Location,
    ) -> Result<&'a [u8], DecodeError> {
        match self.rest.split_at_checked(length) {
            Some((taken, rest)) => {
                self.rest = rest;
                Ok(taken)
            }
            None => Err(DecodeError::Truncated {
                location,
                needed: length,
                available: self.rest.len(),
            }),
        }
    }
}

pub(super) fn decode_mti(
    encoding: MtiEncoding,
    reader: &mut Reader<'_>,
) -> Result<Mti, DecodeError> {
    match encoding {
        MtiEncoding::Ascii => mti_from_digits(reader.take(4, Location::Mti)?),
        MtiEncoding::Ebcdic => {
            let wire = reader.take(4, Location::Mti)?;
            let mut digits = [0u8; 4];
            for (digit, &b) in digits.iter_mut().zip(wire) {
                *digit = encoding::ebcdic_to_ascii(b);
            }
            mti_from_digits(&digits)
        }
        MtiEncoding::Bcd => {
            let wire = reader.take(2, Location::Mti)?;
            let mut digits = [0u8; 4];
            for (pair, &b) in digits.chunks_exact_mut(2).zip(wire) {
                if let [high, low] = pair {
                    // A nibble over 9 becomes a non-digit and is reported.
                    *high = b'0'.wrapping_add(b >> 4);
                    *low = b'0'.wrapping_add(b & 0x0F);
                }
            }
            mti_from_digits(&digits)
        }
    }
}

/// An MTI that the codec has read as text, or an error naming the MTI: the
/// first byte that is not a digit, or a short read.
fn mti_from_digits(digits: &[u8]) -> Result<Mti, DecodeError> {
    match digits.iter().position(|d| !d.is_ascii_digit()) {
        Some(position) => Err(DecodeError::NotInClass {
            location: Location::Mti,
            class: ContentClass::N,
            position,
        }),
        None => Mti::parse(digits).ok_or(DecodeError::Truncated {
            location: Location::Mti,
            needed: 4,
            available: digits.len(),
        }),
    }
}

pub(super) fn encode_mti(
    encoding: MtiEncoding,
    mti: Mti,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let digits = mti.as_bytes();
    match encoding {
        MtiEncoding::Ascii => out.extend_from_slice(digits),
        MtiEncoding::Ebcdic => out.extend(digits.iter().map(|&d| encoding::ascii_to_ebcdic(d))),
        MtiEncoding::Bcd => {
            for pair in digits.chunks_exact(2) {
                if let [high, low] = pair {
                    out.push(((high - b'0') << 4) | (low - b'0'));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn decode_bitmap(
    encoding: BitmapEncoding,
    reader: &mut Reader<'_>,
    location: Location,
) -> Result<u64, DecodeError> {
    let wire = reader.take(encoding.wire_len(), location)?;
    let mut bytes = [0u8; 8];
    match encoding {
        BitmapEncoding::Binary => bytes.copy_from_slice(wire),
        BitmapEncoding::Hex => {
            for (i, (byte, pair)) in bytes.iter_mut().zip(wire.chunks_exact(2)).enumerate() {
                let [high, low] = pair else { continue };
                let high = hex_value(*high).ok_or(DecodeError::NotHex {
                    location,
                    position: i * 2,
                })?;
                let low = hex_value(*low).ok_or(DecodeError::NotHex {
                    location,
                    position: i * 2 + 1,
                })?;
                *byte = (high << 4) | low;
            }
        }
    }
    Ok(u64::from_be_bytes(bytes))
}

/// The primary (fields 1-64) and secondary (65-128) halves of a bitmap.
pub(super) fn bitmap_halves(present: u128) -> [u64; 2] {
    let bytes = present.to_be_bytes();
    let (high, low) = bytes.split_at(8);
    [high, low].map(|half| u64::from_be_bytes(half.try_into().unwrap_or_default()))
}

pub(super) fn encode_bitmap(encoding: BitmapEncoding, bitmap: u64, out: &mut Vec<u8>) {
    match encoding {
        BitmapEncoding::Binary => out.extend_from_slice(&bitmap.to_be_bytes()),
        BitmapEncoding::Hex => push_hex(&bitmap.to_be_bytes(), out),
    }
}
