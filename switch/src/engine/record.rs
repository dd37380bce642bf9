//! What the engine answers and what it journals: the outcome types the
//! ingresses turn into their replies, and [`Draft`], the one builder of a
//! journal record, for authorizations and reversals alike.

use protocol::domain::{
    AcquirerKeys, Authorization, Channel, Decision, DeclineReason, Token, TransactionId,
};
use protocol::ids::{MerchantId, TerminalId, Text};
use protocol::{Amount, Currency, Mti, Pan, ResponseCode};
use storage::{IdempotencyEntry, JournalRecord, RecordKind, SealedPan, StageTimings};

use crate::engine::acquirer::Acquirer;

/// What the switch answered to a card request.
#[derive(Debug, Clone)]
pub struct CardOutcome {
    pub id: TransactionId,
    pub decision: Decision,
    pub token: Option<Token>,
    pub last4: String,
    pub amount: Amount,
    pub currency: Currency,
    pub created_at_ms: u64,
}

impl CardOutcome {
    /// The answer `decision` to `authorization`, as transaction `id` of
    /// `at_ms`.
    pub(crate) fn of(
        authorization: &Authorization,
        token: Token,
        id: TransactionId,
        at_ms: u64,
        decision: Decision,
    ) -> CardOutcome {
        CardOutcome {
            id,
            decision,
            token: Some(token),
            last4: authorization.pan.last4().to_owned(),
            amount: authorization.amount,
            currency: authorization.currency,
            created_at_ms: at_ms,
        }
    }

    pub fn response_code(&self) -> ResponseCode {
        self.decision.response_code()
    }
}

/// An HTTP request's idempotency key: its stored reply is rendered from the
/// outcome and committed in the same transaction as the record.
#[derive(Debug)]
pub struct IdempotencyRequest {
    pub merchant_id: String,
    /// The key's digest in hex (`Vault::digest`), never the key as sent.
    pub key: String,
    /// The keyed digest of the request's canonical form.
    pub request_hash: [u8; 32],
    /// Renders the reply (status, JSON) that a replay returns.
    pub render: fn(&CardOutcome) -> (u16, String),
}

impl IdempotencyRequest {
    /// The entry stored beside the record: the reply to `outcome`, rendered
    /// before the commit, so a replay returns exactly it. `None` for an
    /// outcome that asks the client to try again: the client was answered
    /// 503, not this reply, and its retry must be decided afresh.
    pub(crate) fn entry(self, outcome: &CardOutcome) -> Option<IdempotencyEntry> {
        if let Decision::Declined { reason } = outcome.decision
            && reason.asks_for_retry()
        {
            return None;
        }
        let (status, response_json) = (self.render)(outcome);
        Some(IdempotencyEntry {
            merchant_id: self.merchant_id,
            key: self.key,
            request_hash: self.request_hash,
            response_json,
            status,
        })
    }
}

/// What the switch answered to a reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// Journaled and answered 00.
    Recorded {
        id: TransactionId,
        /// The original it reversed; `None` when none was found (an unknown
        /// original is acknowledged and journaled as such).
        original: Option<TransactionId>,
        /// False when the original had already been reversed: nothing was
        /// given back again.
        first: bool,
    },
    /// Answered without a record; nothing was given back.
    Refused(ReversalRefusal),
}

/// Why a reversal was answered without a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalRefusal {
    /// The acquirer may not act for the reversal's merchant or terminal: 58.
    AcquirerNotPermitted,
    /// The original could not be looked up: 96.
    LookupFailed,
    /// The journal could not record the reversal: 96.
    JournalFailed,
    /// By id: no such transaction of the reversal's merchant.
    UnknownOriginal,
    /// By id: the transaction is not an authorization or purchase.
    NotReversible,
    /// By id: the amount is not from 1 to the original's.
    AmountOutOfRange,
    /// Velocity is not replayed yet: 91, nothing journaled or given back.
    Starting,
    /// Shed: its deadline came, or the journal's queue was full, before it
    /// was written. 91 (HTTP 503), nothing journaled or given back; the
    /// acquirer's retry is decided afresh.
    Overloaded,
}

impl ReversalOutcome {
    /// The DE39 code. The refusals of a reversal by id have codes too,
    /// though only the JSON ingress, which answers with HTTP statuses,
    /// reverses by id.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            ReversalOutcome::Recorded { .. } => ResponseCode::Approved,
            ReversalOutcome::Refused(refusal) => match refusal {
                ReversalRefusal::AcquirerNotPermitted => {
                    DeclineReason::AcquirerNotPermitted.response_code()
                }
                ReversalRefusal::LookupFailed | ReversalRefusal::JournalFailed => {
                    ResponseCode::SystemMalfunction
                }
                ReversalRefusal::UnknownOriginal | ReversalRefusal::NotReversible => {
                    ResponseCode::InvalidTransaction
                }
                ReversalRefusal::AmountOutOfRange => ResponseCode::InvalidAmount,
                ReversalRefusal::Starting => DeclineReason::Starting.response_code(),
                ReversalRefusal::Overloaded => DeclineReason::Overloaded.response_code(),
            },
        }
    }
}

/// What a record may keep of the card: its token, BIN and last four.
#[derive(Debug, Clone, Default)]
pub(crate) struct CardFacts {
    pub(crate) token: Option<Token>,
    pub(crate) bin: Option<String>,
    pub(crate) last4: Option<String>,
}

impl CardFacts {
    /// What a record keeps of `pan`, whose token is `token`.
    pub(crate) fn of_pan(pan: &Pan, token: Token) -> CardFacts {
        CardFacts {
            token: Some(token),
            bin: Some(pan.bin(6).to_owned()),
            last4: Some(pan.last4().to_owned()),
        }
    }

    /// What `record` kept of its card, for a record about it (a reversal).
    pub(crate) fn of_record(record: &JournalRecord) -> CardFacts {
        CardFacts {
            token: record.token,
            bin: record.bin.clone(),
            last4: record.last4.clone(),
        }
    }
}

/// What a record says the switch answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// An authorization's decision.
    Decided(Decision),
    /// A reversal: acknowledged 00, with no auth code.
    Acknowledged,
}

/// A journal record before it is written. [`Draft::record`] is the one place
/// a [`JournalRecord`] is built, so the fields every record shares (the MTI
/// of its kind, the acquirer keys, the answer, the acquirer's name) are
/// filled one way for authorizations and reversals.
#[derive(Debug)]
pub(crate) struct Draft<'a> {
    pub(crate) id: TransactionId,
    pub(crate) at_ms: u64,
    pub(crate) channel: Channel,
    pub(crate) kind: RecordKind,
    /// DE3: an authorization's own, a reversal's original's.
    pub(crate) processing_code: Option<Text<6>>,
    pub(crate) amount: Amount,
    pub(crate) currency: Currency,
    pub(crate) merchant_id: MerchantId,
    pub(crate) terminal_id: TerminalId,
    /// The request's own keys (ISO 8583); JSON requests carry none.
    pub(crate) keys: Option<AcquirerKeys>,
    pub(crate) card: CardFacts,
    pub(crate) answer: Answer,
    /// A reversal's original, when found.
    pub(crate) original_id: Option<TransactionId>,
    pub(crate) acquirer: Option<&'a Acquirer>,
    pub(crate) timings: StageTimings,
    pub(crate) sealed_pan: Option<SealedPan>,
    pub(crate) idempotency: Option<IdempotencyEntry>,
}

impl Draft<'_> {
    /// The record to append.
    pub(crate) fn record(self) -> JournalRecord {
        let (response_code, auth_code, reason) = match self.answer {
            Answer::Decided(decision) => (
                decision.response_code(),
                decision.auth_code().copied(),
                match decision {
                    Decision::Declined { reason } => Some(reason),
                    Decision::Approved { .. } => None,
                },
            ),
            Answer::Acknowledged => (ResponseCode::Approved, None, None),
        };
        JournalRecord {
            id: self.id,
            created_at_ms: self.at_ms,
            channel: self.channel,
            kind: self.kind,
            // Repeats (0101, 0401, ...) are journaled under the MTI of the
            // request they repeat; JSON requests under their ISO equivalent.
            mti: match self.kind {
                RecordKind::Authorization => Mti::AUTHORIZATION_REQUEST,
                RecordKind::Purchase => Mti::FINANCIAL_REQUEST,
                RecordKind::Reversal => Mti::REVERSAL_REQUEST,
                RecordKind::ReversalAdvice => Mti::REVERSAL_ADVICE,
            },
            processing_code: self.processing_code,
            amount: self.amount,
            currency: self.currency,
            merchant_id: self.merchant_id,
            terminal_id: self.terminal_id,
            stan: self.keys.map(|keys| keys.stan),
            rrn: self.keys.and_then(|keys| keys.rrn),
            transmitted_at: self.keys.and_then(|keys| keys.transmitted_at),
            token: self.card.token,
            bin: self.card.bin,
            last4: self.card.last4,
            response_code,
            auth_code,
            reason,
            original_id: self.original_id,
            acquirer: self.acquirer.map(|acquirer| acquirer.name.to_string()),
            timings: self.timings,
            sealed_pan: self.sealed_pan,
            idempotency: self.idempotency,
        }
    }
}
