//! What one transaction leaves on disk, and the rows the reads give back.
//!
//! A [`JournalRecord`] has a field for everything the journal keeps and no
//! field for what it must never keep: there is nowhere to put a PAN in clear,
//! track data, a CVV or a PIN block. The card appears only as its token, its
//! BIN and its last four digits, and, sealed, in the vault rider.

use std::fmt;

use protocol::domain::{Channel, DeclineReason, Token, TransactionId};
use protocol::ids::{AuthCode, MerchantId, Rrn, Stan, TerminalId, Text, TransmissionTime};
use protocol::{Amount, Currency, Mti, Pan, ResponseCode};

use crate::error::JournalError;

/// The longest `Idempotency-Key` the journal stores.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// The longest merchant name an idempotency entry is filed under.
pub const IDEMPOTENCY_MERCHANT_LENGTH_MAX: usize = 64;
/// The largest stored response body of an idempotent request.
pub const RESPONSE_JSON_LENGTH_MAX: usize = 16 * 1024;
/// The longest acquirer name a record carries.
pub const ACQUIRER_LENGTH_MAX: usize = 64;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// 0100, or `POST /v1/authorizations`.
    Authorization,
    /// 0200.
    Purchase,
    /// 0400, or `POST /v1/authorizations/{id}/reversal`.
    Reversal,
    /// 0420.
    ReversalAdvice,
}

/// Every kind and its stable name in the journal.
const KINDS: [(RecordKind, &str); 4] = [
    (RecordKind::Authorization, "authorization"),
    (RecordKind::Purchase, "purchase"),
    (RecordKind::Reversal, "reversal"),
    (RecordKind::ReversalAdvice, "reversal_advice"),
];

impl RecordKind {
    /// The stable name stored in the journal.
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("unknown", |(_, name)| name)
    }

    /// The kind with this stored name.
    pub fn from_name(name: &str) -> Option<RecordKind> {
        KINDS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(kind, _)| *kind)
    }

    /// Whether the record undoes another (0400/0420 and the JSON reversal).
    pub fn is_reversal(self) -> bool {
        matches!(self, RecordKind::Reversal | RecordKind::ReversalAdvice)
    }
}

/// Microseconds spent in each stage before the journal. The journal's own
/// wait is measured by the switch after `append` returns, so it is not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimings {
    pub decode_us: u32,
    pub decide_us: u32,
    pub vault_us: u32,
}

/// A PAN encrypted with AES-256-GCM under vault key `key_id`, with the token
/// as associated data, so a ciphertext copied beside another token fails to
/// open.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedPan {
    pub token: Token,
    pub key_id: u32,
    pub nonce: [u8; 12],
    /// The encrypted digits followed by the 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedPan")
            .field("token", &self.token)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The stored answer to an HTTP request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyEntry {
    /// The merchant the API key acts for; keys are unique per merchant.
    pub merchant_id: String,
    /// The `Idempotency-Key` header as the switch keeps it: a keyed digest
    /// in hex ([`Vault::digest`](crate::Vault::digest)), never the key as
    /// sent, which a client may have filled with a PAN.
    pub key: String,
    /// The keyed digest of the request in its canonical form (it holds card
    /// data): the same key with another request is answered 422.
    pub request_hash: [u8; 32],
    /// The response body sent, to send again byte for byte.
    pub response_json: String,
    /// The HTTP status sent.
    pub status: u16,
}

/// A request's claim on its idempotency key, written to the journal's store
/// before the request is decided, so that two nodes given one key at once
/// decide it once: the second finds the first's claim (or its stored
/// answer) and decides nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// As in [`IdempotencyEntry`].
    pub merchant_id: String,
    /// The key's digest, as in [`IdempotencyEntry`].
    pub key: String,
    /// The digest of the claiming request.
    pub request_hash: [u8; 32],
    /// The transaction that will carry the answer: only its record
    /// completes the claim.
    pub claimed_by: TransactionId,
    pub claimed_at_ms: u64,
    /// A claim still pending that was made before this is stale (its node
    /// died, or its request outlived any client): this claim takes it over,
    /// and the old request's late record is then refused.
    pub stale_before_ms: u64,
}

impl IdempotencyClaim {
    /// What every backend does with this claim, given the claim its table
    /// holds for the key now (holder, claimed at), once it has found no
    /// stored answer.
    pub(crate) fn against(&self, held: Option<(TransactionId, u64)>) -> ClaimStep {
        match held {
            None => ClaimStep::Insert,
            // The same claim again (a writer's retry): still this request's.
            Some((by, _)) if by == self.claimed_by => ClaimStep::Keep,
            Some((_, at_ms)) if at_ms >= self.stale_before_ms => ClaimStep::InFlight,
            Some((by, _)) => ClaimStep::TakeOver(by),
        }
    }
}

/// What a backend does with a claim: see [`IdempotencyClaim::against`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimStep {
    Insert,
    Keep,
    InFlight,
    /// Replace the stale claim of this request.
    TakeOver(TransactionId),
}

impl ClaimStep {
    /// The outcome a caller gets once the step is applied.
    pub(crate) fn outcome(self) -> ClaimOutcome {
        match self {
            ClaimStep::Insert | ClaimStep::Keep => ClaimOutcome::Claimed { took_over: None },
            ClaimStep::InFlight => ClaimOutcome::InFlight,
            ClaimStep::TakeOver(by) => ClaimOutcome::Claimed {
                took_over: Some(by),
            },
        }
    }
}

/// Who keeps `record` (carrying an idempotency key) from being written, if
/// anyone: the request whose claim is on the key now, or else the record
/// whose answer is stored under it. A key with neither is free (a record
/// written without a claim, as before claims existed). The one rule every
/// backend's commit applies.
pub(crate) fn key_taken_by(
    record: TransactionId,
    claimed_by: Option<TransactionId>,
    answered_by: Option<TransactionId>,
) -> Option<TransactionId> {
    match claimed_by {
        Some(by) if by != record => Some(by),
        _ => answered_by.filter(|by| *by != record),
    }
}

/// The records of a batch that are written, when `taken` (per record,
/// who holds its key: [`key_taken_by`]) refuses some; `None` when it
/// refuses none, the usual case, so nothing is copied.
pub(crate) fn records_kept(
    batch: &[JournalRecord],
    taken: &[Option<TransactionId>],
) -> Option<Vec<JournalRecord>> {
    taken.iter().any(Option::is_some).then(|| {
        batch
            .iter()
            .zip(taken)
            .filter(|(_, taken)| taken.is_none())
            .map(|(record, _)| record.clone())
            .collect()
    })
}

/// Every record's outcome, in batch order: the refused ones' (from `taken`)
/// between those of the records written.
pub(crate) fn with_refused(
    taken: Vec<Option<TransactionId>>,
    written: Vec<AppendOutcome>,
) -> Vec<AppendOutcome> {
    if taken.is_empty() {
        return written;
    }
    let mut written = written.into_iter();
    taken
        .into_iter()
        .map(|taken| match taken {
            Some(by) => AppendOutcome::IdempotencyKeyTaken { by },
            None => written.next().unwrap_or(AppendOutcome::Recorded),
        })
        .collect()
}

/// A claim as the journal's writer is handed it: to make, or to give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// Claim the key, unless it is answered or claimed by a live request.
    Claim(IdempotencyClaim),
    /// Give up the claim that `claimed_by` holds on the merchant's key (its
    /// answer asked for a retry, or its record was never written). Nothing
    /// happens if another request holds it now.
    Release {
        merchant_id: String,
        key: String,
        claimed_by: TransactionId,
    },
}

impl KeyClaim {
    /// The merchant and key digest it is about.
    pub fn key(&self) -> (&str, &str) {
        match self {
            KeyClaim::Claim(claim) => (&claim.merchant_id, &claim.key),
            KeyClaim::Release {
                merchant_id, key, ..
            } => (merchant_id, key),
        }
    }

    /// Refuses a key the idempotency table could not hold.
    pub fn validate(&self) -> Result<(), JournalError> {
        let (merchant_id, key) = self.key();
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
            return refuse("idempotency.key", "must be 1 to 255 bytes");
        }
        if merchant_id.is_empty() || merchant_id.len() > IDEMPOTENCY_MERCHANT_LENGTH_MAX {
            return refuse("idempotency.merchant_id", "must be 1 to 64 bytes");
        }
        Ok(())
    }
}

/// What the store did with a [`KeyClaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is this request's to decide. `took_over` names the request
    /// whose stale claim it replaced.
    Claimed { took_over: Option<TransactionId> },
    /// Another request claimed the key and is still within its time.
    InFlight,
    /// The key was answered: the stored answer (its request digest tells a
    /// replay from another request under the same key).
    Answered(IdempotencyEntry),
    /// A release: the claim is gone, or was not this request's.
    Released,
}

/// Everything one transaction leaves in the journal.
///
/// `sealed_pan` and `idempotency` are riders: written in the same database
/// transaction as the record, so neither exists on disk without the other.
/// Reads give records back with both riders `None`; they are read through
/// their own lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub id: TransactionId,
    pub created_at_ms: u64,
    pub channel: Channel,
    pub kind: RecordKind,
    /// The request's MTI (0100, 0201, ...); JSON requests carry the MTI of
    /// their ISO equivalent.
    pub mti: Mti,
    /// DE3.
    pub processing_code: Option<Text<6>>,
    pub amount: Amount,
    /// Stored as its ISO 4217 numeric code.
    pub currency: Currency,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub stan: Option<Stan>,
    pub rrn: Option<Rrn>,
    /// DE7.
    pub transmitted_at: Option<TransmissionTime>,
    pub token: Option<Token>,
    /// The first 6 or 8 digits; see [`bin_and_last4`].
    pub bin: Option<String>,
    /// The last 4 digits.
    pub last4: Option<String>,
    pub response_code: ResponseCode,
    pub auth_code: Option<AuthCode>,
    /// Why it was declined; stored as [`DeclineReason::as_str`].
    pub reason: Option<DeclineReason>,
    /// For a reversal that found its original: the original's id. Setting it
    /// is what claims the original's give-back (see [`AppendOutcome`]).
    pub original_id: Option<TransactionId>,
    /// The configured acquirer whose TLS client certificate the request came
    /// in under (mutual TLS on the ISO 8583 listener); `None` on a plain
    /// connection and for JSON requests. A name from the switch's own
    /// configuration, never anything the client sent.
    pub acquirer: Option<String>,
    pub timings: StageTimings,
    /// The vault entry for this card, when it is new to this process.
    pub sealed_pan: Option<SealedPan>,
    /// The stored response of an HTTP request with an `Idempotency-Key`.
    pub idempotency: Option<IdempotencyEntry>,
}

/// The BIN and last four digits a record may keep of `pan`.
///
/// PCI DSS allows the first eight digits beside the last four only for PANs
/// of 16 digits or more; a shorter PAN keeps six, so at least two digits of
/// every PAN stay unknown even to someone holding the whole journal.
pub fn bin_and_last4(pan: &Pan) -> (String, String) {
    let bin_length = if pan.len() >= 16 { 8 } else { 6 };
    (pan.bin(bin_length).to_owned(), pan.last4().to_owned())
}

fn refuse(field: &'static str, reason: &'static str) -> Result<(), JournalError> {
    Err(JournalError::InvalidRecord { field, reason })
}

fn all_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

impl JournalRecord {
    /// Checks the rules a backend relies on, before the record is queued, so
    /// one bad record is refused alone instead of failing a whole batch.
    pub fn validate(&self) -> Result<(), JournalError> {
        if i64::try_from(self.created_at_ms).is_err() {
            return refuse("created_at_ms", "past the year 292 million");
        }
        // BIN and last four are the only card digits the journal keeps; these
        // two checks are what stops a full PAN put in the wrong field.
        if let Some(bin) = &self.bin
            && (!(6..=8).contains(&bin.len()) || !all_digits(bin))
        {
            return refuse("bin", "must be 6 to 8 digits");
        }
        if let Some(last4) = &self.last4
            && (last4.len() != 4 || !all_digits(last4))
        {
            return refuse("last4", "must be 4 digits");
        }
        match (self.kind.is_reversal(), self.original_id) {
            (false, Some(_)) => return refuse("original_id", "only a reversal has an original"),
            (true, Some(original)) if original == self.id => {
                return refuse("original_id", "a reversal cannot reverse itself");
            }
            _ => {}
        }
        if let Some(acquirer) = &self.acquirer
            && (acquirer.is_empty()
                || acquirer.len() > ACQUIRER_LENGTH_MAX
                || !acquirer.bytes().all(|b| b.is_ascii_graphic()))
        {
            return refuse("acquirer", "must be 1 to 64 printable characters");
        }
        if let Some(sealed) = &self.sealed_pan
            && self.token != Some(sealed.token)
        {
            return refuse("sealed_pan", "must be sealed under the record's token");
        }
        if let Some(entry) = &self.idempotency {
            // Reversals are idempotent by their original already, and keeping
            // keys to card requests means one record never has two outcomes.
            if self.kind.is_reversal() {
                return refuse(
                    "idempotency",
                    "only authorizations and purchases carry a key",
                );
            }
            if entry.key.is_empty() || entry.key.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
                return refuse("idempotency.key", "must be 1 to 255 bytes");
            }
            if entry.merchant_id.is_empty()
                || entry.merchant_id.len() > IDEMPOTENCY_MERCHANT_LENGTH_MAX
            {
                return refuse("idempotency.merchant_id", "must be 1 to 64 bytes");
            }
            if entry.response_json.len() > RESPONSE_JSON_LENGTH_MAX {
                return refuse("idempotency.response_json", "over 16 KiB");
            }
        }
        Ok(())
    }
}

/// What the journal did with a record, once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Written. For a reversal with an `original_id`, it is the first reversal
    /// of that original: the switch gives back the original's velocity.
    /// For a record with an idempotency entry, the entry is stored.
    Recorded,
    /// Written, but the original had already been reversed by `by` (earlier,
    /// or earlier in the same batch): the switch gives nothing back and
    /// answers as it answered `by`.
    AlreadyReversed { by: TransactionId },
    /// NOT written, nor anything riding on it: another request, `by`,
    /// holds the record's idempotency key (its claim was taken over by
    /// `by`, or `by`'s answer is stored). No approval of this record stands;
    /// the switch gives its velocity back. At most one record per key is
    /// ever written.
    IdempotencyKeyTaken { by: TransactionId },
}

/// A record read back, with whether it has been reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransaction {
    pub record: JournalRecord,
    pub reversed_by: Option<TransactionId>,
}

/// The keys an acquirer identifies a request by (DE41, DE11, DE7): what a
/// reversal's DE90 or a repeat names its original with, held to the
/// original's owner. Terminal ids repeat across acquirers and merchants
/// (`TERM0001` is everywhere), so the same terminal and STAN under another
/// merchant or acquirer name another request, never this one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginalKeys {
    pub terminal_id: TerminalId,
    pub stan: Stan,
    /// `None` matches any transmission time, most recent first.
    pub transmitted_at: Option<TransmissionTime>,
    /// The merchant (DE42) the original was for.
    pub merchant_id: MerchantId,
    /// The acquirer the original came in under (mutual TLS); `None` matches
    /// only records without one (plain TCP).
    pub acquirer: Option<String>,
}

/// An approved authorization or purchase that is not wholly reversed, for
/// rebuilding velocity windows at start. It counts as one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRow {
    pub id: TransactionId,
    pub token: Token,
    pub merchant_id: MerchantId,
    /// What stands of it: its amount less what its first reversal gave back
    /// (never zero; a wholly reversed approval has no row).
    pub amount: Amount,
    pub currency: Currency,
    pub at_ms: u64,
}

impl ReplayRow {
    /// Where the next page starts.
    pub fn cursor(&self) -> ReplayCursor {
        ReplayCursor {
            at_ms: self.at_ms,
            id: self.id,
        }
    }
}

/// The position after the last row of a replay page: rows come in
/// `(at_ms, id)` order, and the next page starts strictly after this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplayCursor {
    pub at_ms: u64,
    pub id: TransactionId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for (kind, name) in KINDS {
            assert_eq!(kind.as_str(), name);
            assert_eq!(RecordKind::from_name(name), Some(kind));
        }
        assert_eq!(RecordKind::from_name("refund"), None);
    }

    #[test]
    fn short_pans_keep_a_six_digit_bin() {
        let visa = Pan::parse(b"4111111111111111").unwrap();
        assert_eq!(
            bin_and_last4(&visa),
            ("41111111".to_owned(), "1111".to_owned())
        );
        let amex = Pan::parse(b"378282246310005").unwrap();
        assert_eq!(
            bin_and_last4(&amex),
            ("378282".to_owned(), "0005".to_owned())
        );
    }
}

/// A plain approval for unit tests of the journal and its backends.
#[cfg(test)]
pub(crate) mod sample {
    #![allow(clippy::unwrap_used)]

    use protocol::domain::{Channel, TransactionId, pad};
    use protocol::{Amount, Currency, Mti, ResponseCode};

    use super::{JournalRecord, RecordKind, StageTimings};

    /// Approval `n`: id and time from `n`, no card, no riders.
    pub(crate) fn record(n: u64) -> JournalRecord {
        JournalRecord {
            id: TransactionId::new(n, [0; 10]),
            created_at_ms: n,
            channel: Channel::Iso,
            kind: RecordKind::Authorization,
            mti: Mti::AUTHORIZATION_REQUEST,
            processing_code: None,
            amount: Amount::from_minor(100).unwrap(),
            currency: Currency::parse("USD").unwrap(),
            merchant_id: pad("M0001").unwrap(),
            terminal_id: pad("TERM0001").unwrap(),
            stan: None,
            rrn: None,
            transmitted_at: None,
            token: None,
            bin: None,
            last4: None,
            response_code: ResponseCode::Approved,
            auth_code: None,
            reason: None,
            original_id: None,
            acquirer: None,
            timings: StageTimings::default(),
            sealed_pan: None,
            idempotency: None,
        }
    }
}
