//! Identifiers and other fixed-length text the switch copies out of a request:
//! the STAN, terminal, merchant, RRN, auth code and transmission time.
//!
//! They sit below both the wire views ([`crate::iso`]) and the domain
//! ([`crate::domain`]), because the domain, the actors and the journal key
//! requests by them without reading ISO 8583. Each is a [`Text`] of the
//! length its data element has on the wire, so a value copied from a field
//! needs no allocation and compares as plain bytes.

use std::fmt;

/// Fixed-length printable text copied out of a field, such as DE41.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<const N: usize>([u8; N]);

impl<const N: usize> Text<N> {
    /// Exactly `N` printable ASCII bytes, or `None`.
    pub fn parse(bytes: &[u8]) -> Option<Text<N>> {
        let text: [u8; N] = bytes.try_into().ok()?;
        text.iter()
            .all(|b| (0x20..0x7F).contains(b))
            .then_some(Text(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// DE11, the system trace audit number.
pub type Stan = Text<6>;
/// DE41, the card acceptor terminal identification.
pub type TerminalId = Text<8>;
/// DE42, the card acceptor identification code (the merchant).
pub type MerchantId = Text<15>;
/// DE37, the retrieval reference number.
pub type Rrn = Text<12>;
/// DE38, the authorization identification response.
pub type AuthCode = Text<6>;
/// DE7, transmission date and time, MMDDhhmmss.
pub type TransmissionTime = Text<10>;
