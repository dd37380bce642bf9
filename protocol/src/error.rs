//! The typed errors of the protocol crate.
//!
//! Three enums, because their callers do three different things with them:
//! a [`DecodeError`] is bad input from a peer (answer DE39 30, or close that one
//! connection when the frame itself is broken); an [`EncodeError`] is a message
//! this side built that the dialect cannot carry (a bug, or bad CLI input); a
//! [`SpecError`] is a bad dialect file, which stops the process at start.

use std::fmt;
use std::path::PathBuf;

use crate::content_class::ContentClass;

/// Where in a message a problem sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The frame's length header.
    LengthHeader,
    /// The fixed header (for example a TPDU) before the MTI.
    Header,
    /// The message type indicator.
    Mti,
    /// The primary bitmap.
    PrimaryBitmap,
    /// The secondary bitmap (data element 1).
    SecondaryBitmap,
    /// Data element 2 to 128.
    Field(u8),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::LengthHeader => f.write_str("length header"),
            Location::Header => f.write_str("header"),
            Location::Mti => f.write_str("MTI"),
            Location::PrimaryBitmap => f.write_str("primary bitmap"),
            Location::SecondaryBitmap => f.write_str("secondary bitmap"),
            Location::Field(n) => write!(f, "field {n}"),
        }
    }
}

impl Location {
    /// The data element number, when the location is one.
    pub fn field(self) -> Option<u8> {
        match self {
            Location::Field(n) => Some(n),
            _ => None,
        }
    }
}

/// Everything that can be wrong with bytes that arrive from a peer.
///
/// No variant carries field contents, so an error can be logged or returned
/// to a client without leaking card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{location}: truncated, needs {needed} bytes but {available} remain")]
    Truncated {
        location: Location,
        needed: usize,
        available: usize,
    },
    #[error("field {field}: length {length} is over the maximum {length_max}")]
    FieldTooLong {
        field: u8,
        length: usize,
        length_max: usize,
    },
    #[error("{location}: byte {position} is not allowed in a `{class}` value")]
    NotInClass {
        location: Location,
        class: ContentClass,
        position: usize,
    },
    #[error("{location}: length prefix is not decimal digits")]
    LengthPrefixNotDigits { location: Location },
    #[error("{location}: length prefix carries a sign")]
    LengthPrefixSigned { location: Location },
    #[error(
        "field {field}: a length counted in wire bytes must be even for hex data, got {length}"
    )]
    OddHexLength { field: u8, length: usize },
    #[error("{location}: byte {position} is not a hex digit")]
    NotHex { location: Location, position: usize },
    #[error("{location}: byte {position} is not a BCD digit")]
    NotBcd { location: Location, position: usize },
    #[error("{location}: the pad nibble of an odd-length BCD value is not zero")]
    BcdPadNotZero { location: Location },
    #[error("{location}: byte {position} has no mapping in EBCDIC")]
    NotEbcdic { location: Location, position: usize },
    #[error("field {field}: the bitmap names a field this dialect does not define")]
    UnknownField { field: u8 },
    #[error("the bitmap announces a third bitmap (bit 65), which is not supported")]
    TertiaryBitmap,
    #[error("{count} bytes follow the last field")]
    TrailingBytes { count: usize },
    #[error("frame length {length} is over the maximum {length_max}")]
    FrameTooLong { length: usize, length_max: usize },
    #[error("frame length is zero")]
    FrameEmpty,
    #[error("field {field} is required for MTI {mti} but is missing")]
    MissingField { field: u8, mti: crate::Mti },
    #[error("field {field}: {reason}")]
    InvalidField { field: u8, reason: &'static str },
    #[error("MTI {mti} is not a request this switch accepts")]
    UnsupportedMti { mti: crate::Mti },
    #[error("ICC data: {reason} at offset {offset}")]
    Tlv { reason: &'static str, offset: usize },
}

impl DecodeError {
    /// Whether the message's type was read before the error: only then can
    /// the message be answered (with DE39 30).
    pub fn mti_was_read(&self) -> bool {
        match self {
            DecodeError::Truncated { location, .. }
            | DecodeError::NotInClass { location, .. }
            | DecodeError::NotEbcdic { location, .. }
            | DecodeError::NotBcd { location, .. } => !matches!(
                location,
                Location::LengthHeader | Location::Header | Location::Mti
            ),
            DecodeError::FrameTooLong { .. } | DecodeError::FrameEmpty => false,
            DecodeError::LengthPrefixNotDigits { location }
            | DecodeError::LengthPrefixSigned { location } => *location != Location::LengthHeader,
            _ => true,
        }
    }

    /// The data element the error is about, if any. The switch uses it to name
    /// the field in its logs and counters; the acquirer gets DE39 30.
    pub fn field(&self) -> Option<u8> {
        match self {
            DecodeError::Truncated { location, .. }
            | DecodeError::NotInClass { location, .. }
            | DecodeError::LengthPrefixNotDigits { location }
            | DecodeError::LengthPrefixSigned { location }
            | DecodeError::NotHex { location, .. }
            | DecodeError::NotBcd { location, .. }
            | DecodeError::BcdPadNotZero { location }
            | DecodeError::NotEbcdic { location, .. } => location.field(),
            DecodeError::FieldTooLong { field, .. }
            | DecodeError::OddHexLength { field, .. }
            | DecodeError::UnknownField { field }
            | DecodeError::MissingField { field, .. }
            | DecodeError::InvalidField { field, .. } => Some(*field),
            DecodeError::Tlv { .. } => Some(55),
            DecodeError::TertiaryBitmap => Some(65),
            DecodeError::TrailingBytes { .. }
            | DecodeError::FrameTooLong { .. }
            | DecodeError::FrameEmpty
            | DecodeError::UnsupportedMti { .. } => None,
        }
    }
}

/// A message this side built that its dialect cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field {field}: this dialect does not define it")]
    UnknownField { field: u8 },
    #[error("field {field}: fixed length {length} expected, value has {actual}")]
    WrongLength {
        field: u8,
        length: usize,
        actual: usize,
    },
    #[error("field {field}: length {length} is over the maximum {length_max}")]
    FieldTooLong {
        field: u8,
        length: usize,
        length_max: usize,
    },
    #[error("{location}: byte {position} is not allowed in a `{class}` value")]
    NotInClass {
        location: Location,
        class: ContentClass,
        position: usize,
    },
    #[error("{location}: byte {position} cannot be written in EBCDIC")]
    NotEbcdic { location: Location, position: usize },
    #[error("MTI must be 4 digits")]
    InvalidMti,
    #[error("header must be {length} bytes, got {actual}")]
    WrongHeaderLength { length: usize, actual: usize },
    #[error("message of {length} bytes is over the frame maximum {length_max}")]
    FrameTooLong { length: usize, length_max: usize },
}

/// A dialect file that cannot be used, with the file, the element and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: cannot be read: {reason}")]
    Unreadable { file: PathBuf, reason: String },
    #[error("{file}: {reason}")]
    Syntax { file: PathBuf, reason: String },
    #[error("{file}: field {field}: {reason}")]
    Field {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{file}: {key}: {reason}")]
    Setting {
        file: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("no built-in dialect named `{name}` (built in: iso87, iso87-hex)")]
    UnknownDialect { name: String },
}
