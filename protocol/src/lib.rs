//! Wire formats and domain primitives of the switch. No I/O lives here: every
//! function takes bytes or values and returns values or a typed error, so the
//! same code serves the TCP ingress, the HTTP ingress, the load tester, the
//! CLI and the fuzzer.
//!
//! The modules, in the order a message from an acquirer flows through them:
//!
//! - [`framing`]: the length header (2- or 4-byte binary, 4-digit ASCII) that
//!   says whether a buffer holds a whole message yet. An incomplete buffer is
//!   normal, not an error.
//! - [`message`]: [`Message`], the MTI plus data elements 2-128, decoded from
//!   and encoded to one frame's payload by a [`Spec`].
//! - [`encoding`]: the byte-level conversions a field can use on the wire
//!   (ASCII, EBCDIC, BCD, raw binary, hex-ASCII).
//! - [`content_class`]: the content classes (`n`, `an`, `ans`, `z`, `b`, ...)
//!   a value is checked against, whatever its encoding.
//! - [`spec`]: dialects as data. A [`Spec`] is a table of [`FieldSpec`]s plus the
//!   representation of the MTI, bitmaps and frame, built in (`iso87`,
//!   `iso87-hex`) or loaded from a TOML file under `config/specs/`.
//! - [`tlv`]: BER-TLV for DE55 (EMV chip data), parsed into tags and rebuilt
//!   byte-identical.
//! - [`card`], [`amount`], [`mti`], [`response_code`]: domain primitives.
//!   [`Pan`] masks itself in every `Debug` and `Display` and wipes its digits on
//!   drop; the clear digits are reached only through [`Pan::expose`].
//! - [`ids`]: [`Text`](ids::Text), fixed-length printable text, and the
//!   identifiers made of it (STAN, terminal, merchant, RRN, auth code,
//!   transmission time). Both the wire views and the domain key requests by
//!   them, so they sit below both.
//! - [`iso`]: typed views of the requests in the wire contract (0100/0200,
//!   0400/0420, 0800) and the building of their responses.
//! - [`json`]: the request and response bodies of the HTTP API.
//! - [`domain`]: the one `Authorization` both ingresses build, and the
//!   `Decision` about it, with the table from decline reason to DE39.
//!
//! Errors are data: [`DecodeError`] names the element and the reason for every
//! way inbound bytes can be wrong, and nothing reachable from bytes panics,
//! loops, or allocates more than a bounded multiple of the frame.

pub mod amount;
pub mod card;
pub mod content_class;
pub mod domain;
pub mod encoding;
pub mod error;
pub mod framing;
pub mod ids;
pub mod iso;
pub mod json;
pub mod message;
pub mod mti;
pub mod response_code;
pub mod spec;
pub mod tlv;

pub use amount::{Amount, Currency};
pub use card::{Expiry, Pan, PinBlock, SensitiveText, mask_pan_runs};
pub use error::{DecodeError, EncodeError, Location, SpecError};
pub use framing::{Framing, LengthHeader};
pub use message::Message;
pub use mti::Mti;
pub use response_code::ResponseCode;
pub use spec::{FieldSpec, Spec};
