//! Framing: the length header in front of every message on a stream.
//!
//! [`Framing::check`] looks at the start of a receive buffer and says whether a
//! whole frame is there. An incomplete buffer is the normal state of a TCP
//! stream between reads and is `Ok(None)`, not an error; only a header that can
//! never become a valid frame (not digits, zero, over the maximum) is an error,
//! and the caller closes that one connection.

use serde::Deserialize;

use crate::encoding::{push_low_bytes, write_decimal};
use crate::error::{DecodeError, EncodeError, Location};

/// The largest frame any dialect may declare, whatever its header can say.
/// It bounds what one connection can make the switch buffer.
pub const FRAME_LENGTH_LIMIT: usize = 1 << 20;

/// The length header in front of each message. It counts the bytes after
/// itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthHeader {
    /// No header: one buffer is one message (files and the CLI, never TCP).
    None,
    /// Two bytes, big-endian.
    Binary2,
    /// Four bytes, big-endian.
    Binary4,
    /// Four ASCII decimal digits.
    Ascii4,
}

impl LengthHeader {
    /// Bytes the header takes.
    pub fn width(self) -> usize {
        match self {
            LengthHeader::None => 0,
            LengthHeader::Binary2 => 2,
            LengthHeader::Binary4 | LengthHeader::Ascii4 => 4,
        }
    }

    /// The largest length the header can state.
    pub fn capacity(self) -> usize {
        match self {
            LengthHeader::None => usize::MAX,
            LengthHeader::Binary2 => 0xFFFF,
            LengthHeader::Binary4 => 0xFFFF_FFFF,
            LengthHeader::Ascii4 => 9999,
        }
    }
}

/// A length header and the largest frame accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The header in front of each message.
    pub length_header: LengthHeader,
    /// The largest message, in bytes after the header.
    pub frame_length_max: usize,
}

/// Where a whole frame sits in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBounds {
    /// Bytes of length header.
    pub header: usize,
    /// Bytes of message after the header.
    pub payload: usize,
}

impl FrameBounds {
    /// Bytes the whole frame takes.
    pub fn total(self) -> usize {
        self.header + self.payload
    }
}

impl Framing {
    /// Whether `buf` starts with a whole frame: `Ok(Some(bounds))` if so,
    /// `Ok(None)` if more bytes are needed, `Err` if the header is broken.
    pub fn check(&self, buf: &[u8]) -> Result<Option<FrameBounds>, DecodeError> {
        let width = self.length_header.width();
        let payload = match self.length_header {
            LengthHeader::None => buf.len(),
            header => {
                let Some(raw) = buf.get(..width) else {
                    return Ok(None);
                };
                match header {
                    LengthHeader::Ascii4 => {
                        let mut length = 0usize;
                        for &b in raw {
                            match b {
                                b'0'..=b'9' => length = length * 10 + usize::from(b - b'0'),
                                b'+' | b'-' => {
                                    return Err(DecodeError::LengthPrefixSigned {
                                        location: Location::LengthHeader,
                                    });
                                }
                                _ => {
                                    return Err(DecodeError::LengthPrefixNotDigits {
                                        location: Location::LengthHeader,
                                    });
                                }
                            }
                        }
                        length
                    }
                    _ => raw
                        .iter()
                        .fold(0usize, |length, &b| (length << 8) | usize::from(b)),
                }
            }
        };
        if payload == 0 {
            return Err(DecodeError::FrameEmpty);
        }
        if payload > self.frame_length_max {
            return Err(DecodeError::FrameTooLong {
                length: payload,
                length_max: self.frame_length_max,
            });
        }
        let bounds = FrameBounds {
            header: width,
            payload,
        };
        Ok((buf.len() >= bounds.total()).then_some(bounds))
    }

    /// Splits the first whole frame off `buf`: its message bytes and the bytes
    /// it took in all. `Ok(None)` if `buf` does not yet hold a whole frame.
    pub fn split<'a>(&self, buf: &'a [u8]) -> Result<Option<(&'a [u8], usize)>, DecodeError> {
        Ok(self.check(buf)?.and_then(|bounds| {
            buf.get(bounds.header..bounds.total())
                .map(|payload| (payload, bounds.total()))
        }))
    }

    /// Appends the length header for a message of `payload_length` bytes.
    pub fn write_header(
        &self,
        payload_length: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if payload_length > self.frame_length_max {
            return Err(EncodeError::FrameTooLong {
                length: payload_length,
                length_max: self.frame_length_max,
            });
        }
        match self.length_header {
            LengthHeader::None => {}
            LengthHeader::Binary2 => push_low_bytes(payload_length, 2, out),
            LengthHeader::Binary4 => push_low_bytes(payload_length, 4, out),
            LengthHeader::Ascii4 => {
                let mut digits = [b'0'; 4];
                write_decimal(payload_length, &mut digits);
                out.extend_from_slice(&digits);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(length_header: LengthHeader) -> Framing {
        Framing {
            length_header,
            frame_length_max: 100,
        }
    }

    #[test]
    fn each_header_round_trips() {
        for header in [
            LengthHeader::Binary2,
            LengthHeader::Binary4,
            LengthHeader::Ascii4,
        ] {
            let framing = framing(header);
            let mut frame = Vec::new();
            framing.write_header(5, &mut frame).unwrap();
            assert_eq!(frame.len(), header.width());
            frame.extend_from_slice(b"hello");
            frame.extend_from_slice(b"next");
            assert_eq!(
                framing.split(&frame),
                Ok(Some((&b"hello"[..], header.width() + 5))),
                "{header:?}"
            );
        }
        let mut ascii = Vec::new();
        framing(LengthHeader::Ascii4)
            .write_header(42, &mut ascii)
            .unwrap();
        assert_eq!(ascii, b"0042");
        let mut binary = Vec::new();
        framing(LengthHeader::Binary2)
            .write_header(99, &mut binary)
            .unwrap();
        assert_eq!(binary, [0x00, 0x63]);
    }

    #[test]
    fn an_incomplete_frame_is_not_an_error() {
        let framing = framing(LengthHeader::Binary2);
        assert_eq!(framing.check(&[]), Ok(None));
        assert_eq!(framing.check(&[0x00]), Ok(None));
        assert_eq!(framing.check(&[0x00, 0x05, b'a', b'b']), Ok(None));
        assert_eq!(
            framing.check(&[0x00, 0x02, b'a', b'b']),
            Ok(Some(FrameBounds {
                header: 2,
                payload: 2
            }))
        );
    }

    #[test]
    fn broken_headers_are_errors() {
        assert_eq!(
            framing(LengthHeader::Binary2).check(&[0x00, 0x00]),
            Err(DecodeError::FrameEmpty)
        );
        assert_eq!(
            framing(LengthHeader::Binary2).check(&[0x00, 0x65]),
            Err(DecodeError::FrameTooLong {
                length: 101,
                length_max: 100
            })
        );
        assert_eq!(
            framing(LengthHeader::Binary4).check(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::FrameTooLong {
                length: 0xFFFF_FFFF,
                length_max: 100
            })
        );
        assert_eq!(
            framing(LengthHeader::Ascii4).check(b"00a1"),
            Err(DecodeError::LengthPrefixNotDigits {
                location: Location::LengthHeader
            })
        );
        assert_eq!(
            framing(LengthHeader::Ascii4).check(b"-001"),
            Err(DecodeError::LengthPrefixSigned {
                location: Location::LengthHeader
            })
        );
        assert_eq!(
            framing(LengthHeader::Binary2).write_header(101, &mut Vec::new()),
            Err(EncodeError::FrameTooLong {
                length: 101,
                length_max: 100
            })
        );
    }

    #[test]
    fn no_header_takes_the_whole_buffer() {
        assert_eq!(
            framing(LengthHeader::None).split(b"abc"),
            Ok(Some((&b"abc"[..], 3)))
        );
        assert_eq!(
            framing(LengthHeader::None).check(b""),
            Err(DecodeError::FrameEmpty)
        );
    }
}
