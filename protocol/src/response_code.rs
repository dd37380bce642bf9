//! DE39 response codes: the one table that maps a decision to the wire.

use std::fmt;

/// A DE39 value. The switch's own decisions use the named codes; an issuer's
/// answer may carry any other two characters, kept as [`ResponseCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    Approved,
    InvalidMerchant,
    DoNotHonor,
    InvalidTransaction,
    InvalidAmount,
    InvalidCardNumber,
    FormatError,
    ExpiredCard,
    NotPermittedToCardholder,
    NotPermittedToTerminal,
    ExceedsAmountLimit,
    ExceedsFrequencyLimit,
    IssuerUnavailable,
    DuplicateTransmission,
    SystemMalfunction,
    /// A code outside the switch's own table, as received.
    Other([u8; 2]),
}

/// Every named code with its DE39 value and meaning. Tests pin this table.
const TABLE: [(ResponseCode, &str, &str); 15] = [
    (ResponseCode::Approved, "00", "approved"),
    (ResponseCode::InvalidMerchant, "03", "invalid merchant"),
    (ResponseCode::DoNotHonor, "05", "do not honor"),
    (
        ResponseCode::InvalidTransaction,
        "12",
        "invalid transaction",
    ),
    (ResponseCode::InvalidAmount, "13", "invalid amount"),
    (ResponseCode::InvalidCardNumber, "14", "invalid card number"),
    (ResponseCode::FormatError, "30", "format error"),
    (ResponseCode::ExpiredCard, "54", "expired card"),
    (
        ResponseCode::NotPermittedToCardholder,
        "57",
        "transaction not permitted to cardholder",
    ),
    (
        ResponseCode::NotPermittedToTerminal,
        "58",
        "transaction not permitted to terminal",
    ),
    (
        ResponseCode::ExceedsAmountLimit,
        "61",
        "exceeds amount limit",
    ),
    (
        ResponseCode::ExceedsFrequencyLimit,
        "65",
        "exceeds frequency limit",
    ),
    (
        ResponseCode::IssuerUnavailable,
        "91",
        "issuer or switch unavailable",
    ),
    (
        ResponseCode::DuplicateTransmission,
        "94",
        "duplicate transmission",
    ),
    (ResponseCode::SystemMalfunction, "96", "system malfunction"),
];

impl ResponseCode {
    /// The code for two DE39 characters, or `None` if they are not printable.
    pub fn parse(code: &[u8]) -> Option<ResponseCode> {
        let code: [u8; 2] = code.try_into().ok()?;
        if !code.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        Some(
            TABLE
                .iter()
                .find(|(_, value, _)| value.as_bytes() == code)
                .map_or(ResponseCode::Other(code), |(named, _, _)| *named),
        )
    }

    /// The two DE39 characters.
    pub fn as_str(&self) -> &str {
        match self {
            ResponseCode::Other(code) => std::str::from_utf8(code).unwrap_or("??"),
            named => TABLE
                .iter()
                .find(|(code, _, _)| code == named)
                .map_or("??", |(_, value, _)| value),
        }
    }

    /// What the code means, for people.
    pub fn description(&self) -> &'static str {
        TABLE
            .iter()
            .find(|(code, _, _)| code == self)
            .map_or("issuer response", |(_, _, meaning)| meaning)
    }

    /// Whether the transaction was approved.
    pub fn is_approved(&self) -> bool {
        *self == ResponseCode::Approved
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_pinned() {
        let pinned: Vec<(&str, &str)> = TABLE
            .iter()
            .map(|(code, _, meaning)| (code.as_str(), *meaning))
            .collect();
        assert_eq!(
            pinned,
            [
                ("00", "approved"),
                ("03", "invalid merchant"),
                ("05", "do not honor"),
                ("12", "invalid transaction"),
                ("13", "invalid amount"),
                ("14", "invalid card number"),
                ("30", "format error"),
                ("54", "expired card"),
                ("57", "transaction not permitted to cardholder"),
                ("58", "transaction not permitted to terminal"),
                ("61", "exceeds amount limit"),
                ("65", "exceeds frequency limit"),
                ("91", "issuer or switch unavailable"),
                ("94", "duplicate transmission"),
                ("96", "system malfunction"),
            ]
        );
        for (code, value, _) in TABLE {
            assert_eq!(ResponseCode::parse(value.as_bytes()), Some(code));
        }
    }

    #[test]
    fn other_codes_are_kept_as_received() {
        let code = ResponseCode::parse(b"51").unwrap();
        assert_eq!(code, ResponseCode::Other(*b"51"));
        assert_eq!(code.as_str(), "51");
        assert!(!code.is_approved());
        assert!(ResponseCode::parse(b"5").is_none());
        assert!(ResponseCode::parse(b"5 ").is_none());
        assert!(ResponseCode::Approved.is_approved());
    }
}
