//! The one domain `Authorization` and `Reversal` both ingresses build, and
//! the `Decision` the switch makes about an authorization.
//!
//! The ISO 8583 ingress builds an [`Authorization`] from a
//! [`crate::iso::CardRequest`], the HTTP ingress from a
//! [`crate::json::CheckedAuthorization`]; from there on the path is the same:
//! rules, tokenization, card and merchant actors, journal. A [`Reversal`]
//! names its original by acquirer keys (ISO 8583) or by id (JSON), and the
//! switch finds the original itself, so both reversals take one path too.
//! Declines are data:
//! every [`DeclineReason`] maps to its DE39 code in one table here, which a
//! test pins, and to a stable name for the journal and metrics.

use std::fmt;

use crate::amount::{Amount, Currency};
use crate::card::{Expiry, Pan};
use crate::ids::{AuthCode, MerchantId, Rrn, Stan, TerminalId, Text, TransmissionTime};
use crate::response_code::ResponseCode;

/// A card's token: a keyed hash of its PAN, so the same PAN always gives the
/// same token without a vault read, and the token alone reveals nothing.
/// Actors key cards by token, never by PAN.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token([u8; 16]);

impl Token {
    /// The prefix of a token's text form.
    pub const PREFIX: &'static str = "tok_";

    /// A token from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Token {
        Token(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the text form `tok_` + 32 hex digits.
    pub fn parse(text: &str) -> Option<Token> {
        parse_prefixed_hex(text, Token::PREFIX).map(Token)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            Token::PREFIX,
            crate::encoding::to_hex(&self.0).to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

/// A transaction's id: 48 bits of milliseconds since the Unix epoch, then 80
/// random bits, so ids sort by time and never collide across nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId([u8; 16]);

impl TransactionId {
    /// The prefix of an id's text form.
    pub const PREFIX: &'static str = "tx_";

    /// An id for a transaction created at `unix_ms`, with `random` bits.
    pub fn new(unix_ms: u64, random: [u8; 10]) -> TransactionId {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        TransactionId(bytes)
    }

    /// An id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> TransactionId {
        TransactionId(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Milliseconds since the Unix epoch when the id was made.
    pub fn unix_ms(&self) -> u64 {
        self.0[..6]
            .iter()
            .fold(0u64, |ms, &b| (ms << 8) | u64::from(b))
    }

    /// Parses the text form `tx_` + 32 hex digits.
    pub fn parse(text: &str) -> Option<TransactionId> {
        parse_prefixed_hex(text, TransactionId::PREFIX).map(TransactionId)
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            TransactionId::PREFIX,
            crate::encoding::to_hex(&self.0).to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionId({self})")
    }
}

fn parse_prefixed_hex(text: &str, prefix: &str) -> Option<[u8; 16]> {
    let hex = text.strip_prefix(prefix)?;
    if hex.len() != 32 {
        return None;
    }
    crate::encoding::from_hex(hex)?.try_into().ok()
}

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// ISO 8583 over TCP.
    Iso,
    /// JSON over HTTP.
    Http,
}

impl Channel {
    /// A stable name for the journal, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Iso => "iso",
            Channel::Http => "http",
        }
    }
}

/// What a card request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    /// 0100, or `POST /v1/authorizations`: hold the amount.
    Authorization,
    /// 0200: authorize and capture.
    Purchase,
}

/// The keys an acquirer identifies a request by, for duplicate detection,
/// reversal matching and the reply's echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcquirerKeys {
    pub stan: Stan,
    pub rrn: Option<Rrn>,
    pub transmitted_at: Option<TransmissionTime>,
    /// The acquirer marked the request a repeat (0101, 0201, 0401, 0421):
    /// it sent the original and got no answer.
    pub repeat: bool,
}

/// A card request, from either ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub channel: Channel,
    pub kind: TransactionKind,
    pub pan: Pan,
    pub expiry: Option<Expiry>,
    pub amount: Amount,
    pub currency: Currency,
    /// DE42, space-padded to 15 as on the wire; the JSON `merchant_id` is
    /// padded the same way, so one merchant has one key on both ingresses.
    pub merchant_id: MerchantId,
    /// DE41, space-padded to 8.
    pub terminal_id: TerminalId,
    pub mcc: Option<Text<4>>,
    /// ISO 8583 requests carry them; JSON requests do not.
    pub keys: Option<AcquirerKeys>,
}

/// What a reversal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversalKind {
    /// 0400, or `POST /v1/authorizations/{id}/reversal`: undo the original.
    Reversal,
    /// 0420: the acquirer tells the switch it has already reversed.
    Advice,
}

/// How a reversal names the request it reverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OriginalRef {
    /// ISO 8583: by the original's acquirer keys. With DE90 they are the
    /// terminal (DE41, the same on both), DE90's original STAN and
    /// transmission time; without DE90, the reversal's own STAN and terminal
    /// and no time (the most recent match).
    Keys {
        terminal_id: TerminalId,
        stan: Stan,
        transmitted_at: Option<TransmissionTime>,
    },
    /// JSON: by the id the switch gave the original.
    Id(TransactionId),
}

/// How much a reversal gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversedAmount {
    /// All of the original's amount (a JSON reversal without `amount`).
    Whole,
    /// What is reversed: DE4 (less DE95's actual transaction amount, what
    /// stands, when the acquirer sends DE95), or the JSON `amount`. A
    /// reversal by id must name from 1 to the original's amount; one by
    /// acquirer keys is recorded as the acquirer sent it and gives back at
    /// most the original's. The reversal's record holds this amount, which
    /// is what velocity replay takes off its original.
    Part(Amount),
    /// A JSON `amount` above any amount a request can carry: refused like any
    /// amount above the original's, once the original is found (so an
    /// unknown id is still "not found" first).
    OverMaximum,
}

/// A reversal, from either ingress. What it does not state itself (a JSON
/// reversal has no currency, terminal or keys) is the original's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    pub channel: Channel,
    pub kind: ReversalKind,
    pub original: OriginalRef,
    pub amount: ReversedAmount,
    /// DE49; `None`: the original's.
    pub currency: Option<Currency>,
    /// DE42, or the merchant of the JSON request's API key; only that
    /// merchant's transactions can be reversed by id.
    pub merchant_id: MerchantId,
    /// DE41; `None`: the original's.
    pub terminal_id: Option<TerminalId>,
    /// The reversal's own keys (DE11, DE37, DE7, a repeat's MTI); JSON
    /// reversals carry none.
    pub keys: Option<AcquirerKeys>,
}

/// Pads `text` with spaces to `N` bytes, as fixed `ans` fields are on the
/// wire. `None` if it is longer than `N` or not printable ASCII.
pub fn pad<const N: usize>(text: &str) -> Option<Text<N>> {
    if text.len() > N {
        return None;
    }
    let mut padded = [b' '; N];
    padded
        .get_mut(..text.len())?
        .copy_from_slice(text.as_bytes());
    Text::parse(&padded)
}

/// Why the switch said no. Each reason has one DE39 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeclineReason {
    /// The PAN fails the Luhn check.
    InvalidCardNumber,
    /// The card's expiry month has passed.
    ExpiredCard,
    /// The amount is zero or over the switch's maximum.
    InvalidAmount,
    /// The card's BIN is in a blocked range.
    BlockedBin,
    /// The card's approvals in a window reached their count limit.
    CardCountLimit,
    /// The card's approved amount in a window would pass its limit.
    CardAmountLimit,
    /// The amount is over the merchant's per-transaction limit.
    MerchantAmountLimit,
    /// The merchant's approved volume today would pass its limit.
    MerchantDailyVolume,
    /// The merchant category code is not allowed for this merchant.
    MccNotAllowed,
    /// The merchant is over its transactions-per-second ceiling.
    MerchantTpsCeiling,
    /// The merchant is not configured on this switch.
    UnknownMerchant,
    /// The acquirer identified by its TLS client certificate may not act for
    /// this merchant (DE42) or terminal (DE41).
    AcquirerNotPermitted,
    /// A shard's mailbox was full: the request was shed, not queued.
    Overloaded,
    /// The switch is starting: velocity is not yet replayed from the
    /// journal, so nothing is decided (a card's limits would be empty).
    Starting,
    /// The journal could not commit the record, so nothing is approved.
    JournalUnavailable,
    /// The same keys arrived earlier with a different card or amount.
    DuplicateMismatch,
    /// A field of the request is malformed.
    FormatError,
    /// The message type or processing code is not supported.
    InvalidTransaction,
}

/// Every reason, its DE39 code and its stable name. Tests pin this table.
const DECLINES: [(DeclineReason, ResponseCode, &str); 18] = [
    (
        DeclineReason::InvalidCardNumber,
        ResponseCode::InvalidCardNumber,
        "invalid_card_number",
    ),
    (
        DeclineReason::ExpiredCard,
        ResponseCode::ExpiredCard,
        "expired_card",
    ),
    (
        DeclineReason::InvalidAmount,
        ResponseCode::InvalidAmount,
        "invalid_amount",
    ),
    (
        DeclineReason::BlockedBin,
        ResponseCode::NotPermittedToCardholder,
        "blocked_bin",
    ),
    (
        DeclineReason::CardCountLimit,
        ResponseCode::ExceedsFrequencyLimit,
        "card_count_limit",
    ),
    (
        DeclineReason::CardAmountLimit,
        ResponseCode::ExceedsAmountLimit,
        "card_amount_limit",
    ),
    (
        DeclineReason::MerchantAmountLimit,
        ResponseCode::InvalidAmount,
        "merchant_amount_limit",
    ),
    (
        DeclineReason::MerchantDailyVolume,
        ResponseCode::ExceedsAmountLimit,
        "merchant_daily_volume",
    ),
    (
        DeclineReason::MccNotAllowed,
        ResponseCode::NotPermittedToTerminal,
        "mcc_not_allowed",
    ),
    (
        DeclineReason::MerchantTpsCeiling,
        ResponseCode::NotPermittedToTerminal,
        "merchant_tps_ceiling",
    ),
    (
        DeclineReason::UnknownMerchant,
        ResponseCode::InvalidMerchant,
        "unknown_merchant",
    ),
    (
        DeclineReason::AcquirerNotPermitted,
        ResponseCode::NotPermittedToTerminal,
        "acquirer_not_permitted",
    ),
    (
        DeclineReason::Overloaded,
        ResponseCode::IssuerUnavailable,
        "overloaded",
    ),
    (
        DeclineReason::Starting,
        ResponseCode::IssuerUnavailable,
        "starting",
    ),
    (
        DeclineReason::JournalUnavailable,
        ResponseCode::SystemMalfunction,
        "journal_unavailable",
    ),
    (
        DeclineReason::DuplicateMismatch,
        ResponseCode::DuplicateTransmission,
        "duplicate_mismatch",
    ),
    (
        DeclineReason::FormatError,
        ResponseCode::FormatError,
        "format_error",
    ),
    (
        DeclineReason::InvalidTransaction,
        ResponseCode::InvalidTransaction,
        "invalid_transaction",
    ),
];

impl DeclineReason {
    fn entry(self) -> (ResponseCode, &'static str) {
        DECLINES
            .iter()
            .find(|(reason, _, _)| *reason == self)
            .map_or(
                (ResponseCode::SystemMalfunction, "unknown"),
                |(_, code, name)| (*code, name),
            )
    }

    /// The DE39 code.
    pub fn response_code(self) -> ResponseCode {
        self.entry().0
    }

    /// A stable snake_case name for the journal, logs and metrics.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// Whether this decline says the switch could not decide or record the
    /// request now (shed at a full queue, a store away, the journal failing,
    /// velocity not yet replayed after a start)
    /// rather than deciding about it: the client should try again. The JSON
    /// API answers these 503, and an idempotency key is not bound to them,
    /// so a retry with the same key is decided afresh.
    pub fn asks_for_retry(self) -> bool {
        matches!(
            self,
            DeclineReason::Overloaded | DeclineReason::JournalUnavailable | DeclineReason::Starting
        )
    }

    /// The reason with this stable name.
    pub fn from_name(name: &str) -> Option<DeclineReason> {
        DECLINES
            .iter()
            .find(|(_, _, n)| *n == name)
            .map(|(reason, _, _)| *reason)
    }
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the switch answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved { auth_code: AuthCode },
    Declined { reason: DeclineReason },
}

impl Decision {
    /// The DE39 code.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Decision::Approved { .. } => ResponseCode::Approved,
            Decision::Declined { reason } => reason.response_code(),
        }
    }

    /// The auth code, when approved.
    pub fn auth_code(&self) -> Option<&AuthCode> {
        match self {
            Decision::Approved { auth_code } => Some(auth_code),
            Decision::Declined { .. } => None,
        }
    }

    /// Whether approved.
    pub fn is_approved(&self) -> bool {
        matches!(self, Decision::Approved { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decline_table_is_pinned() {
        let pinned: Vec<(&str, String)> = DECLINES
            .iter()
            .map(|(r, _, _)| (r.as_str(), r.response_code().as_str().to_owned()))
            .collect();
        assert_eq!(
            pinned
                .iter()
                .map(|(n, c)| (*n, c.as_str()))
                .collect::<Vec<_>>(),
            [
                ("invalid_card_number", "14"),
                ("expired_card", "54"),
                ("invalid_amount", "13"),
                ("blocked_bin", "57"),
                ("card_count_limit", "65"),
                ("card_amount_limit", "61"),
                ("merchant_amount_limit", "13"),
                ("merchant_daily_volume", "61"),
                ("mcc_not_allowed", "58"),
                ("merchant_tps_ceiling", "58"),
                ("unknown_merchant", "03"),
                ("acquirer_not_permitted", "58"),
                ("overloaded", "91"),
                ("starting", "91"),
                ("journal_unavailable", "96"),
                ("duplicate_mismatch", "94"),
                ("format_error", "30"),
                ("invalid_transaction", "12"),
            ]
        );
        for (reason, _, name) in DECLINES {
            assert_eq!(DeclineReason::from_name(name), Some(reason));
        }
    }

    #[test]
    fn ids_and_tokens_round_trip_their_text() {
        let id = TransactionId::new(1_795_000_000_123, [7; 10]);
        assert_eq!(id.unix_ms(), 1_795_000_000_123);
        let text = id.to_string();
        assert!(text.starts_with("tx_") && text.len() == 35, "{text}");
        assert_eq!(TransactionId::parse(&text), Some(id));
        assert!(TransactionId::new(1, [0; 10]) < TransactionId::new(2, [0; 10]));
        assert!(TransactionId::parse("tx_123").is_none());
        assert!(TransactionId::parse(&text.replace("tx_", "tok_")).is_none());
        let token = Token::from_bytes([0xAB; 16]);
        assert_eq!(token.to_string(), format!("tok_{}", "ab".repeat(16)));
        assert_eq!(Token::parse(&token.to_string()), Some(token));
    }

    #[test]
    fn padding_matches_the_wire() {
        assert_eq!(pad::<15>("M0001").unwrap().as_str(), "M0001          ");
        assert_eq!(pad::<8>("TERM0001").unwrap().as_str(), "TERM0001");
        assert!(pad::<8>("TERM00012").is_none());
        assert!(pad::<8>("TÉRM").is_none());
    }
}
