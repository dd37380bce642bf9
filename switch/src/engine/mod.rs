//! The path every card request takes, whichever ingress it came in on:
//!
//! ```text
//! Authorization -> rules -> duplicate check -> token (vault)
//!   -> card shard (velocity) -> merchant shard (limits) -> auth code
//!   -> journal (group commit) -> reply, only after the commit
//! ```
//!
//! The ISO 8583 and HTTP ingresses build the domain `Authorization` and turn
//! the [`CardOutcome`] back into their own reply; nothing here knows which
//! wire a request came in on beyond recording its channel.

pub mod acquirer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actors::{CardCheck, Clock, GiveBack, RuleConfig, Shards};
use protocol::domain::{
    AcquirerKeys, Authorization, Channel, Decision, DeclineReason, Token, TransactionId,
    TransactionKind,
};
use protocol::ids::{self, AuthCode, TerminalId};
use protocol::iso::{self, CardRequest, NetworkCode, OriginalData, Request, ReversalRequest};
use protocol::{Amount, Currency, Message, Mti, ResponseCode};
use storage::{
    AnyStore, AppendOutcome, IdempotencyEntry, Journal, JournalError, JournalRecord, OriginalKeys,
    RecordKind, StageTimings, StoreReader, Vault,
};
use tokio::sync::watch;

use crate::admission::AdmissionRates;
use crate::config::DuplicateSettings;
use crate::engine::acquirer::Acquirer;
use crate::fleet::{Claim, Fleet, OnRedisDown};
use crate::ops::metrics::{Metrics, Stage};

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
    pub fn response_code(&self) -> ResponseCode {
        self.decision.response_code()
    }
}

/// What the switch answered to a reversal.
#[derive(Debug, Clone)]
pub struct ReversalOutcome {
    pub id: TransactionId,
    pub code: ResponseCode,
    /// The original it reversed, if found.
    pub original: Option<TransactionId>,
    /// False when the original had already been reversed: nothing was given back again.
    pub first: bool,
}

/// How long a node's claim on a request's keys may stay pending in Redis
/// (a node that dies mid-decision frees them after this).
const CLAIM_PENDING_MS: u64 = 10_000;
/// How long a copy of a request waits for another node's answer.
const CLAIM_WAIT_MS: u64 = 2_000;

/// An answer as the fleet shares it in Redis: id, decision, auth code,
/// token, amount, time. No card data: the token stands for the card.
fn encode_answer(outcome: &CardOutcome) -> String {
    let (decision, auth_code) = match outcome.decision {
        Decision::Approved { auth_code } => ("approved", auth_code.as_str().to_owned()),
        Decision::Declined { reason } => (reason.as_str(), "-".to_owned()),
    };
    let token = outcome.token.map(|t| t.to_string()).unwrap_or_default();
    format!(
        "{}|{decision}|{auth_code}|{token}|{}|{}",
        outcome.id,
        outcome.amount.minor(),
        outcome.created_at_ms
    )
}

/// Reads an answer [`encode_answer`] wrote; the PAN's last four and the
/// currency are the retransmission's own (they are the same request).
fn decode_answer(text: &str, authorization: &Authorization) -> Option<CardOutcome> {
    let mut parts = text.split('|');
    let id = TransactionId::parse(parts.next()?)?;
    let decision = match (parts.next()?, parts.next()?) {
        ("approved", code) => Decision::Approved {
            auth_code: AuthCode::parse(code.as_bytes())?,
        },
        (reason, _) => Decision::Declined {
            reason: DeclineReason::from_name(reason)?,
        },
    };
    let token = Token::parse(parts.next()?)?;
    let amount = Amount::from_minor(parts.next()?.parse().ok()?)?;
    let created_at_ms = parts.next()?.parse().ok()?;
    Some(CardOutcome {
        id,
        decision,
        token: Some(token),
        last4: authorization.pan.last4().to_owned(),
        amount,
        currency: authorization.currency,
        created_at_ms,
    })
}

/// How far back a retransmission is matched with its original.
const DUPLICATE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// How far back a reversal looks for its original.
const REVERSAL_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// An HTTP request's idempotency key: its stored reply is rendered from the
/// outcome and committed in the same transaction as the record.
#[derive(Debug)]
pub struct IdempotencyRequest {
    pub merchant_id: String,
    pub key: String,
    pub request_hash: [u8; 32],
    /// Renders the reply (status, JSON) that a replay returns.
    pub render: fn(&CardOutcome) -> (u16, String),
}

/// Keys an acquirer identifies one request by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DuplicateKey {
    terminal_id: TerminalId,
    stan: ids::Stan,
    transmitted_at: Option<ids::TransmissionTime>,
}

/// Requests answered in the last `window_ms`, by acquirer keys, so a
/// retransmission is recognized without a journal read on the hot path.
///
/// Measured: a journal lookup per request (a hop to SQLite's connection
/// thread and back) cost more CPU than the rest of the decision; the switch
/// peaked at about 10 000 requests/s with it. The journal is still asked on a
/// miss while the index cannot know the answer: during the first window after
/// start (requests answered before the restart), and for a repeat (0101,
/// 0201) whose original is older than the window.
struct RecentRequests {
    map: HashMap<DuplicateKey, Recent>,
    /// Keys in the order they were answered, for eviction.
    order: std::collections::VecDeque<(u64, DuplicateKey)>,
    window_ms: u64,
    entries_max: usize,
}

/// What a retransmission needs of its original's answer.
#[derive(Debug, Clone, Copy)]
struct Recent {
    id: TransactionId,
    decision: Decision,
    token: Token,
    amount: Amount,
    at_ms: u64,
}

impl RecentRequests {
    fn get(&self, key: &DuplicateKey) -> Option<Recent> {
        self.map.get(key).copied()
    }

    fn insert(&mut self, key: DuplicateKey, recent: Recent) {
        let oldest_ms = recent.at_ms.saturating_sub(self.window_ms);
        while let Some(&(at_ms, old)) = self.order.front() {
            if at_ms >= oldest_ms && self.order.len() < self.entries_max {
                break;
            }
            self.order.pop_front();
            if self.map.get(&old).is_some_and(|entry| entry.at_ms == at_ms) {
                self.map.remove(&old);
            }
        }
        self.order.push_back((recent.at_ms, key));
        self.map.insert(key, recent);
    }
}

/// A request's place in the in-flight map, from its duplicate check to its
/// answer. Dropping it, answered or not (a cancelled task), frees the keys.
struct InFlightSlot<'a> {
    engine: &'a Engine,
    key: DuplicateKey,
    sender: watch::Sender<Option<CardOutcome>>,
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.engine.in_flight.lock()
            && in_flight
                .get(&self.key)
                .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()))
        {
            in_flight.remove(&self.key);
        }
    }
}

/// What an engine is built from.
pub struct EngineParts {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub rules: RuleConfig,
    /// Shared with the vault admin routes, which rotate its keyring.
    pub vault: Arc<Vault>,
    pub shards: Shards,
    pub journal: Journal,
    pub store: AnyStore,
    pub duplicates: DuplicateSettings,
    /// Shared card velocity in Redis; `None` on a single node.
    pub fleet: Option<Fleet>,
    /// Per-merchant admission rates, checked by both ingresses.
    pub limits: Arc<AdmissionRates>,
}

impl std::fmt::Debug for EngineParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineParts").finish_non_exhaustive()
    }
}

/// The shared path of both ingresses.
pub struct Engine {
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    rules: RuleConfig,
    vault: Arc<Vault>,
    shards: Shards,
    journal: Journal,
    store: AnyStore,
    /// Requests between their duplicate check and their journal commit, so a
    /// retransmission arriving meanwhile waits for the first one's answer
    /// instead of being decided twice.
    in_flight: Mutex<HashMap<DuplicateKey, watch::Receiver<Option<CardOutcome>>>>,
    recent: Mutex<RecentRequests>,
    /// Until then, a request the index has not seen may still have been
    /// answered before the restart, so the journal is asked. Set at start,
    /// and only if the journal holds requests from the window before it.
    journal_check_until_ms: std::sync::atomic::AtomicU64,
    ready: AtomicBool,
    database_answers: AtomicBool,
    fleet: Option<Fleet>,
    redis_answers: AtomicBool,
    limits: Arc<AdmissionRates>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn random_id(now_ms: u64) -> TransactionId {
    let mut random = [0u8; 10];
    storage::fill_random(&mut random);
    TransactionId::new(now_ms, random)
}

fn auth_code() -> AuthCode {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKLMNPQRSTUVWX";
    let mut random = [0u8; 6];
    storage::fill_random(&mut random);
    let code = random.map(|b| ALPHABET[usize::from(b % 32)]);
    match AuthCode::parse(&code) {
        Some(code) => code,
        // Six characters of a printable alphabet always parse.
        None => unreachable!("auth code alphabet is printable"),
    }
}

impl Engine {
    pub fn new(parts: EngineParts) -> Engine {
        let EngineParts {
            metrics,
            clock,
            rules,
            vault,
            shards,
            journal,
            store,
            duplicates,
            fleet,
            limits,
        } = parts;
        Engine {
            metrics,
            clock,
            rules,
            vault,
            shards,
            journal,
            store,
            in_flight: Mutex::new(HashMap::new()),
            recent: Mutex::new(RecentRequests {
                map: HashMap::new(),
                order: std::collections::VecDeque::new(),
                window_ms: duplicates.window_ms,
                entries_max: duplicates.entries_max,
            }),
            journal_check_until_ms: std::sync::atomic::AtomicU64::new(0),
            ready: AtomicBool::new(false),
            database_answers: AtomicBool::new(true),
            fleet,
            redis_answers: AtomicBool::new(true),
            limits,
        }
    }

    /// Per-merchant admission rates (HTTP checks them before its handler).
    pub fn limits(&self) -> &AdmissionRates {
        &self.limits
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Ready once the journal is open and velocity is replayed, and for as
    /// long as the journal's writer is taking records and the database
    /// answers (see [`Engine::watch_database`]).
    ///
    /// In a fleet that declines while Redis is away, Redis must answer too;
    /// a fleet that falls back to local limits can still decide without it.
    pub fn is_ready(&self) -> bool {
        let redis_needed = self
            .fleet
            .as_ref()
            .is_some_and(|fleet| fleet.on_redis_down == OnRedisDown::Decline);
        self.ready.load(Ordering::Acquire)
            && self.journal.is_running()
            && self.database_answers.load(Ordering::Relaxed)
            && (!redis_needed || self.redis_answers.load(Ordering::Relaxed))
    }

    /// Asks the database once a second whether it answers, for
    /// `/health/ready`: a PostgreSQL that went away keeps the writers alive
    /// (their batches fail with 96), so the writer's state alone would not
    /// tell. Ends when `shutdown` fires.
    pub async fn watch_database(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let answers = self.store.check().await.is_ok();
            if answers != self.database_answers.swap(answers, Ordering::Relaxed) {
                if answers {
                    tracing::info!("the database answers again");
                } else {
                    tracing::warn!("the database does not answer; not ready");
                }
            }
            if let Some(fleet) = &self.fleet {
                let answers = fleet.ping().await.is_ok();
                if answers != self.redis_answers.swap(answers, Ordering::Relaxed) {
                    if answers {
                        tracing::info!("redis answers again");
                    } else {
                        tracing::warn!("redis does not answer");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// At start: if the journal holds requests answered within the duplicate
    /// window before now, their retransmissions must be found in the journal
    /// until the window has passed, since the in-memory index starts empty.
    pub async fn check_journal_for_duplicates_after_restart(
        &self,
    ) -> Result<(), storage::StorageError> {
        let now_ms = self.clock.now_ms();
        let window_ms = self.recent.lock().map_or(0, |recent| recent.window_ms);
        let since_ms = now_ms.saturating_sub(window_ms);
        // Approvals are what a retransmission must not count twice; a request
        // declined just before a restart and retransmitted just after is
        // decided again, which can only give the acquirer a fresher answer.
        let recent = !self
            .store
            .approved_since(since_ms, None, 1)
            .await?
            .is_empty();
        if recent {
            self.journal_check_until_ms
                .store(now_ms.saturating_add(window_ms), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Answers one decoded ISO 8583 request; `None` if it deserves no answer
    /// (it is itself a response). `acquirer`: the acquirer a mutual-TLS
    /// connection's client certificate named; `None` on plain TCP.
    pub async fn handle_iso(
        &self,
        message: &Message,
        acquirer: Option<&Acquirer>,
    ) -> Option<Message> {
        match Request::parse(message) {
            Ok(Request::Network(request)) => {
                let code = match request.code {
                    NetworkCode::SignOn | NetworkCode::SignOff | NetworkCode::Echo => {
                        ResponseCode::Approved
                    }
                    NetworkCode::Other(_) => ResponseCode::InvalidTransaction,
                };
                iso::response(message, code, None)
            }
            Ok(Request::Card(request)) => {
                // A merchant over its rate is refused before the vault, the
                // actors and the journal, so its flood costs others nothing.
                // Not journaled, like a request shed at a full mailbox: under
                // a flood a record per refusal would put the flood's weight
                // on the journal the limit protects. It is counted instead
                // (switch_rate_limited_total), and a retransmission is
                // decided afresh.
                if self.limits.admit(request.merchant_id).is_err() {
                    self.metrics.count_rate_limited(Channel::Iso);
                    return iso::response(message, ResponseCode::IssuerUnavailable, None);
                }
                let outcome = self.authorize_iso(&request, acquirer).await;
                iso::response(
                    message,
                    outcome.response_code(),
                    outcome.decision.auth_code(),
                )
            }
            Ok(Request::Reversal(request)) => {
                let outcome = self.reverse_iso(&request, acquirer).await;
                iso::response(message, outcome.code, None)
            }
            Err(protocol::DecodeError::UnsupportedMti { .. }) => {
                iso::response(message, ResponseCode::InvalidTransaction, None)
            }
            Err(error) => {
                self.metrics
                    .messages_malformed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(mti = %message.mti(), %error, "request with a bad field answered 30");
                iso::response(message, ResponseCode::FormatError, None)
            }
        }
    }

    async fn authorize_iso(
        &self,
        request: &CardRequest,
        acquirer: Option<&Acquirer>,
    ) -> CardOutcome {
        let authorization = Authorization {
            channel: Channel::Iso,
            kind: match request.kind {
                iso::RequestKind::Financial => TransactionKind::Purchase,
                _ => TransactionKind::Authorization,
            },
            pan: request.pan.clone(),
            expiry: request.expiry,
            amount: request.amount,
            currency: request.currency,
            merchant_id: request.merchant_id,
            terminal_id: request.terminal_id,
            mcc: request.mcc,
            keys: Some(AcquirerKeys {
                stan: request.stan,
                rrn: request.rrn,
                transmitted_at: request.transmitted_at,
                repeat: request.repeat,
            }),
        };
        let mti = if request.kind == iso::RequestKind::Financial {
            Mti::FINANCIAL_REQUEST
        } else {
            Mti::AUTHORIZATION_REQUEST
        };
        self.authorize(
            authorization,
            mti,
            Some(request.processing_code),
            None,
            acquirer,
        )
        .await
    }

    /// Decides a card request and journals it; the outcome is returned only
    /// after its record is committed. A request from a mutual-TLS
    /// `acquirer` is recorded under its name, and declined without asking
    /// the actors when its merchant or terminal is not the acquirer's.
    pub async fn authorize(
        &self,
        authorization: Authorization,
        mti: Mti,
        processing_code: Option<ids::Text<6>>,
        idempotency: Option<IdempotencyRequest>,
        acquirer: Option<&Acquirer>,
    ) -> CardOutcome {
        let duplicate_key = authorization.keys.map(|keys| DuplicateKey {
            terminal_id: authorization.terminal_id,
            stan: keys.stan,
            transmitted_at: keys.transmitted_at,
        });
        let token = self.vault.tokenize(&authorization.pan);

        // A retransmission or repeat of a request already answered gets the
        // same answer and is counted once; the same keys with another card or
        // amount are a different request reusing keys: 94.
        let mut publisher = None;
        // In a fleet: the Redis key of this request's acquirer keys, once
        // this node has claimed it; it gets the answer after the commit.
        let mut fleet_claim: Option<String> = None;
        if let Some(key) = duplicate_key {
            loop {
                let waiting = {
                    let Ok(mut in_flight) = self.in_flight.lock() else {
                        break;
                    };
                    match in_flight.get(&key) {
                        Some(receiver) => Some(receiver.clone()),
                        None => {
                            let (sender, receiver) = watch::channel(None);
                            in_flight.insert(key, receiver);
                            publisher = Some(InFlightSlot {
                                engine: self,
                                key,
                                sender,
                            });
                            None
                        }
                    }
                };
                let Some(mut receiver) = waiting else { break };
                // An error means the first request ended without an answer
                // (its task was cancelled); its slot is gone, so look again.
                if receiver.wait_for(Option::is_some).await.is_err() {
                    continue;
                }
                let first = receiver.borrow().clone();
                if let Some(first) = first {
                    return self.answer_duplicate(first, token, authorization.amount);
                }
            }
            let recent = self.recent.lock().ok().and_then(|recent| recent.get(&key));
            if let Some(recent) = recent {
                let first = CardOutcome {
                    id: recent.id,
                    decision: recent.decision,
                    token: Some(recent.token),
                    last4: authorization.pan.last4().to_owned(),
                    amount: recent.amount,
                    currency: authorization.currency,
                    created_at_ms: recent.at_ms,
                };
                let outcome = self.answer_duplicate(first, token, authorization.amount);
                self.finish_in_flight(publisher, &outcome);
                return outcome;
            }
            let repeat = authorization.keys.is_some_and(|keys| keys.repeat);
            let keys = OriginalKeys {
                terminal_id: key.terminal_id,
                stan: key.stan,
                transmitted_at: key.transmitted_at,
            };
            let since_ms = self.clock.now_ms().saturating_sub(DUPLICATE_WINDOW_MS);
            // In a fleet the original may be another node's: its acquirer keys
            // are claimed in Redis, so a copy sent to a second node waits for
            // the first node's answer instead of being decided twice.
            let mut claimed = false;
            if let Some(fleet) = &self.fleet {
                let redis_key = crate::fleet::request_key(
                    key.terminal_id.as_str().trim_end(),
                    key.stan.as_str(),
                    key.transmitted_at.as_ref().map(|at| at.as_str()),
                );
                match self.claim_in_fleet(fleet, &redis_key, &authorization).await {
                    Ok(None) => {
                        fleet_claim = Some(redis_key);
                        claimed = true;
                    }
                    Ok(Some(first)) => {
                        let outcome = self.answer_duplicate(first, token, authorization.amount);
                        self.finish_in_flight(publisher, &outcome);
                        return outcome;
                    }
                    Err(()) if fleet.on_redis_down == OnRedisDown::Decline => {
                        let outcome = self.declined_without_record(
                            &authorization,
                            token,
                            DeclineReason::Overloaded,
                        );
                        self.finish_in_flight(publisher, &outcome);
                        return outcome;
                    }
                    // "local": the shared journal below is the fallback.
                    Err(()) => {}
                }
            }
            // The journal is asked for a repeat, in a fleet whose Redis could
            // not be asked, and after a restart (see above). A fleet node
            // that claimed the keys skips the after-restart check: Redis
            // keeps every answer of the fleet for the duplicate window, so a
            // claim won means no node answered these keys in it. (Measured:
            // a journal read per request for two minutes after a restart
            // halved a fleet node's rate.)
            let after_restart =
                self.clock.now_ms() < self.journal_check_until_ms.load(Ordering::Relaxed);
            let ask_journal = repeat
                || (self.fleet.is_some() && !claimed)
                || (self.fleet.is_none() && after_restart);
            if ask_journal {
                match self
                    .store
                    .find_original(
                        &keys,
                        &[RecordKind::Authorization, RecordKind::Purchase],
                        since_ms,
                    )
                    .await
                {
                    Ok(Some(original)) => {
                        let first = CardOutcome {
                            id: original.id,
                            decision: match original.auth_code {
                                Some(auth_code) if original.response_code.is_approved() => {
                                    Decision::Approved { auth_code }
                                }
                                _ => Decision::Declined {
                                    reason: original.reason.unwrap_or(DeclineReason::FormatError),
                                },
                            },
                            token: original.token,
                            last4: original.last4.clone().unwrap_or_default(),
                            amount: original.amount,
                            currency: original.currency,
                            created_at_ms: original.created_at_ms,
                        };
                        let outcome = self.answer_duplicate(first, token, authorization.amount);
                        self.finish_in_flight(publisher, &outcome);
                        return outcome;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "duplicate check failed; answering 96");
                        let outcome = self.declined_without_record(
                            &authorization,
                            token,
                            DeclineReason::JournalUnavailable,
                        );
                        self.finish_in_flight(publisher, &outcome);
                        return outcome;
                    }
                }
            }
        }

        let decide_started = Instant::now();
        let now_ms = self.clock.now_ms();
        let permitted = acquirer.is_none_or(|acquirer| {
            acquirer.permits(&authorization.merchant_id, &authorization.terminal_id)
        });
        let local = match actors::check_rules(&authorization, &self.rules, now_ms) {
            // Before the rules' answer is used and before the actors: a
            // merchant or terminal that is not this acquirer's takes no
            // card's or merchant's velocity.
            _ if !permitted => Decision::Declined {
                reason: DeclineReason::AcquirerNotPermitted,
            },
            Err(reason) => Decision::Declined { reason },
            // The same instant the record is journaled with: a give-back later
            // finds the bucket this approval was counted in.
            Ok(()) => match self
                .shards
                .decide_at(
                    CardCheck {
                        token,
                        merchant_id: authorization.merchant_id,
                        mcc: authorization.mcc,
                        amount: authorization.amount,
                    },
                    now_ms,
                )
                .await
            {
                Ok(()) => Decision::Approved {
                    auth_code: auth_code(),
                },
                Err(reason) => Decision::Declined { reason },
            },
        };
        if local
            == (Decision::Declined {
                reason: DeclineReason::Overloaded,
            })
        {
            self.metrics.shed.fetch_add(1, Ordering::Relaxed);
        }
        // In a fleet, the node's approval is only a cache's opinion: Redis
        // holds the card's velocity across all nodes and has the last word.
        let (decision, fleet_counted) = if local.is_approved() {
            match self.confirm_with_fleet(token, &authorization, now_ms).await {
                Ok(fleet_counted) => (local, fleet_counted),
                Err(reason) => (Decision::Declined { reason }, false),
            }
        } else {
            (local, false)
        };
        let decide_us = decide_started.elapsed().as_micros() as u64;
        self.metrics
            .record(authorization.channel, Stage::Decide, decide_us);

        let (token, sealed) = self.vault.seal_if_new(&authorization.pan);
        // Marked as stored only once the commit holds it.
        let sealed_now = sealed.is_some();
        let id = random_id(now_ms);
        let mut outcome = CardOutcome {
            id,
            decision,
            token: Some(token),
            last4: authorization.pan.last4().to_owned(),
            amount: authorization.amount,
            currency: authorization.currency,
            created_at_ms: now_ms,
        };
        let idempotency = idempotency.map(|request| {
            let (status, response_json) = (request.render)(&outcome);
            IdempotencyEntry {
                merchant_id: request.merchant_id,
                key: request.key,
                request_hash: request.request_hash,
                response_json,
                status,
            }
        });
        let record = JournalRecord {
            id,
            created_at_ms: now_ms,
            channel: authorization.channel,
            kind: match authorization.kind {
                TransactionKind::Authorization => RecordKind::Authorization,
                TransactionKind::Purchase => RecordKind::Purchase,
            },
            mti,
            processing_code,
            amount: authorization.amount,
            currency: authorization.currency,
            merchant_id: authorization.merchant_id,
            terminal_id: authorization.terminal_id,
            stan: authorization.keys.map(|k| k.stan),
            rrn: authorization.keys.and_then(|k| k.rrn),
            transmitted_at: authorization.keys.and_then(|k| k.transmitted_at),
            token: Some(token),
            bin: Some(authorization.pan.bin(6).to_owned()),
            last4: Some(authorization.pan.last4().to_owned()),
            response_code: decision.response_code(),
            auth_code: decision.auth_code().copied(),
            reason: match decision {
                Decision::Declined { reason } => Some(reason),
                Decision::Approved { .. } => None,
            },
            original_id: None,
            acquirer: acquirer.map(|acquirer| acquirer.name.clone()),
            timings: StageTimings {
                decode_us: 0,
                decide_us: decide_us as u32,
                vault_us: 0,
            },
            sealed_pan: sealed,
            idempotency,
        };
        let journal_started = Instant::now();
        let appended = self.journal.append(record).await;
        self.metrics.record(
            authorization.channel,
            Stage::JournalWait,
            journal_started.elapsed().as_micros() as u64,
        );
        match appended {
            Ok(_) => {
                if sealed_now {
                    self.vault.remember_sealed(&token);
                }
                // Only an answer on disk may be given again to a retransmission.
                if let (Some(key), Ok(mut recent)) = (duplicate_key, self.recent.lock()) {
                    recent.insert(
                        key,
                        Recent {
                            id,
                            decision: outcome.decision,
                            token,
                            amount: authorization.amount,
                            at_ms: now_ms,
                        },
                    );
                }
                if let (Some(fleet), Some(redis_key)) = (&self.fleet, &fleet_claim) {
                    let ttl_ms = self
                        .recent
                        .lock()
                        .map_or(DUPLICATE_WINDOW_MS, |recent| recent.window_ms);
                    if let Err(error) = fleet
                        .answer(redis_key, &encode_answer(&outcome), ttl_ms)
                        .await
                    {
                        self.metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "redis: the answer could not be shared with the fleet");
                    }
                }
            }
            Err(error) => {
                // Nothing is approved that is not on disk: the velocity this
                // approval took is given back. A full queue is load shed at
                // once (91, HTTP 503); a failed commit is 96.
                let reason = if matches!(error, JournalError::QueueFull) {
                    self.metrics.shed.fetch_add(1, Ordering::Relaxed);
                    DeclineReason::Overloaded
                } else {
                    self.metrics
                        .journal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    DeclineReason::JournalUnavailable
                };
                tracing::warn!(%error, code = %reason.response_code(), "journal append failed");
                if decision.is_approved() {
                    self.give_back_approval(token, &authorization, now_ms, fleet_counted)
                        .await;
                }
                outcome.decision = Decision::Declined { reason };
                // Not recorded: a retransmission must be decided afresh.
                if let (Some(fleet), Some(redis_key)) = (&self.fleet, &fleet_claim)
                    && let Err(error) = fleet.release(redis_key).await
                {
                    self.metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "redis: a claim could not be released");
                }
            }
        }
        self.finish_in_flight(publisher, &outcome);
        outcome
    }

    /// Claims a request's acquirer keys in Redis: `Ok(None)` when this node
    /// decides it, `Ok(Some(first))` when another node answered it, waiting
    /// while that node decides; `Err(())` when Redis cannot tell (down, or a
    /// claim pending past its deadline).
    async fn claim_in_fleet(
        &self,
        fleet: &Fleet,
        redis_key: &str,
        authorization: &Authorization,
    ) -> Result<Option<CardOutcome>, ()> {
        let deadline = Instant::now() + std::time::Duration::from_millis(CLAIM_WAIT_MS);
        loop {
            match fleet.claim(redis_key, CLAIM_PENDING_MS).await {
                Ok(Claim::Mine) => return Ok(None),
                Ok(Claim::Answered(text)) => {
                    return decode_answer(&text, authorization)
                        .map(Some)
                        .ok_or_else(|| {
                            tracing::warn!("redis: an answer in the fleet could not be read");
                        });
                }
                Ok(Claim::Pending) if Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Ok(Claim::Pending) => {
                    tracing::warn!(
                        "redis: another node's claim stayed pending; not deciding twice"
                    );
                    return Err(());
                }
                Err(error) => {
                    self.metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "redis: the request's keys could not be claimed");
                    return Err(());
                }
            }
        }
    }

    /// Asks Redis to check and count an approval the node's actors made.
    /// `Ok(true)`: counted in Redis; `Ok(false)`: no fleet, or Redis failed
    /// and `on_redis_down = "local"` keeps the node's decision. A decline
    /// (Redis's, or 91 while Redis is away) gives the node's reservation back.
    async fn confirm_with_fleet(
        &self,
        token: Token,
        authorization: &Authorization,
        at_ms: u64,
    ) -> Result<bool, DeclineReason> {
        let Some(fleet) = &self.fleet else {
            return Ok(false);
        };
        let reason = match fleet.reserve(&token, authorization.amount, at_ms).await {
            Ok(Ok(())) => return Ok(true),
            Ok(Err(reason)) => reason,
            Err(error) => {
                self.metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
                match fleet.on_redis_down {
                    OnRedisDown::Local => {
                        self.metrics.fleet_fallbacks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "redis failed; deciding on local limits");
                        return Ok(false);
                    }
                    OnRedisDown::Decline => {
                        // A timed-out script may still have counted the
                        // approval in Redis; it is not given back there, as
                        // that could remove another node's approval. The
                        // card is over-counted until the bucket expires: a
                        // spare decline, never an extra approval.
                        tracing::warn!(%error, "redis failed; answering 91");
                        DeclineReason::Overloaded
                    }
                }
            }
        };
        self.give_back_approval(token, authorization, at_ms, false)
            .await;
        Err(reason)
    }

    /// Gives back the velocity an approval took when the approval could not
    /// be recorded: nothing is approved that is not on disk. `fleet_counted`:
    /// Redis counted it too, so Redis gives it back as well.
    async fn give_back_approval(
        &self,
        token: Token,
        authorization: &Authorization,
        at_ms: u64,
        fleet_counted: bool,
    ) {
        self.shards
            .give_back(GiveBack {
                token,
                merchant_id: authorization.merchant_id,
                amount: authorization.amount,
                original_at_ms: at_ms,
            })
            .await;
        if fleet_counted {
            self.give_back_in_fleet(token, authorization.amount, at_ms)
                .await;
        }
    }

    /// Gives one approval back in Redis. A failure leaves the card
    /// over-counted until its bucket expires: a spare decline, never an
    /// extra approval.
    async fn give_back_in_fleet(&self, token: Token, amount: Amount, original_at_ms: u64) {
        if let Some(fleet) = &self.fleet
            && let Err(error) = fleet.give_back(&token, amount, original_at_ms).await
        {
            self.metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "redis give-back failed; the card stays counted until its bucket expires");
        }
    }

    /// Hands the answer to any retransmission waiting on these keys; the
    /// slot's drop then frees them.
    fn finish_in_flight(&self, publisher: Option<InFlightSlot<'_>>, outcome: &CardOutcome) {
        if let Some(publisher) = publisher {
            let _ = publisher.sender.send(Some(outcome.clone()));
        }
    }

    fn answer_duplicate(&self, first: CardOutcome, token: Token, amount: Amount) -> CardOutcome {
        if first.token == Some(token) && first.amount == amount {
            self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
            first
        } else {
            CardOutcome {
                decision: Decision::Declined {
                    reason: DeclineReason::DuplicateMismatch,
                },
                ..first
            }
        }
    }

    fn declined_without_record(
        &self,
        authorization: &Authorization,
        token: Token,
        reason: DeclineReason,
    ) -> CardOutcome {
        let now_ms = self.clock.now_ms();
        CardOutcome {
            id: random_id(now_ms),
            decision: Decision::Declined { reason },
            token: Some(token),
            last4: authorization.pan.last4().to_owned(),
            amount: authorization.amount,
            currency: authorization.currency,
            created_at_ms: now_ms,
        }
    }

    async fn reverse_iso(
        &self,
        request: &ReversalRequest,
        acquirer: Option<&Acquirer>,
    ) -> ReversalOutcome {
        // An acquirer reverses only its own merchants' and terminals'
        // requests: anything else is answered 58 and neither journaled nor
        // given back, as it reverses nothing.
        if let Some(acquirer) = acquirer
            && !acquirer.permits(&request.merchant_id, &request.terminal_id)
        {
            tracing::info!(acquirer = %acquirer.name, "reversal for a merchant or terminal not the acquirer's answered 58");
            return ReversalOutcome {
                id: random_id(self.clock.now_ms()),
                code: DeclineReason::AcquirerNotPermitted.response_code(),
                original: None,
                first: false,
            };
        }
        let (stan, transmitted_at) = match &request.original {
            Some(OriginalData {
                stan,
                transmitted_at,
                ..
            }) => (*stan, Some(*transmitted_at)),
            None => (request.stan, None),
        };
        let keys = OriginalKeys {
            terminal_id: request.terminal_id,
            stan,
            transmitted_at,
        };
        let since_ms = self.clock.now_ms().saturating_sub(REVERSAL_WINDOW_MS);
        let original = self
            .store
            .find_original(
                &keys,
                &[RecordKind::Authorization, RecordKind::Purchase],
                since_ms,
            )
            .await;
        let original = match original {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "original lookup failed; answering 96");
                return ReversalOutcome {
                    id: random_id(self.clock.now_ms()),
                    code: ResponseCode::SystemMalfunction,
                    original: None,
                    first: false,
                };
            }
        };
        let kind = if request.kind == iso::RequestKind::ReversalAdvice {
            RecordKind::ReversalAdvice
        } else {
            RecordKind::Reversal
        };
        let mti = if kind == RecordKind::ReversalAdvice {
            Mti::REVERSAL_ADVICE
        } else {
            Mti::REVERSAL_REQUEST
        };
        self.reverse(
            original,
            kind,
            mti,
            Channel::Iso,
            request.amount,
            request.currency,
            request.merchant_id,
            request.terminal_id,
            Some(AcquirerKeys {
                stan: request.stan,
                rrn: request.rrn,
                transmitted_at: request.transmitted_at,
                repeat: request.repeat,
            }),
            acquirer.map(|acquirer| acquirer.name.clone()),
        )
        .await
    }

    /// Reverses `original` (if found): journals the reversal and, if it is
    /// the first for that original and the original was approved, gives its
    /// velocity back once.
    #[allow(clippy::too_many_arguments)]
    pub async fn reverse(
        &self,
        original: Option<JournalRecord>,
        kind: RecordKind,
        mti: Mti,
        channel: Channel,
        amount: Amount,
        currency: Currency,
        merchant_id: ids::MerchantId,
        terminal_id: TerminalId,
        keys: Option<AcquirerKeys>,
        acquirer: Option<String>,
    ) -> ReversalOutcome {
        let now_ms = self.clock.now_ms();
        let id = random_id(now_ms);
        let record = JournalRecord {
            id,
            created_at_ms: now_ms,
            channel,
            kind,
            mti,
            processing_code: original.as_ref().and_then(|o| o.processing_code),
            amount,
            currency,
            merchant_id,
            terminal_id,
            stan: keys.map(|k| k.stan),
            rrn: keys.and_then(|k| k.rrn),
            transmitted_at: keys.and_then(|k| k.transmitted_at),
            token: original.as_ref().and_then(|o| o.token),
            bin: original.as_ref().and_then(|o| o.bin.clone()),
            last4: original.as_ref().and_then(|o| o.last4.clone()),
            response_code: ResponseCode::Approved,
            auth_code: None,
            // An unknown original is acknowledged and journaled as such.
            reason: None,
            original_id: original.as_ref().map(|o| o.id),
            acquirer,
            timings: StageTimings::default(),
            sealed_pan: None,
            idempotency: None,
        };
        let started = Instant::now();
        let appended = self.journal.append(record).await;
        self.metrics.record(
            channel,
            Stage::JournalWait,
            started.elapsed().as_micros() as u64,
        );
        match appended {
            Ok(AppendOutcome::Recorded | AppendOutcome::IdempotencyKeyTaken { .. }) => {
                if let Some(original) = original.as_ref().filter(|o| o.response_code.is_approved())
                    && let Some(token) = original.token
                {
                    self.shards
                        .give_back(GiveBack {
                            token,
                            merchant_id: original.merchant_id,
                            // A partial reversal gives back what it reverses.
                            amount: amount.min(original.amount),
                            original_at_ms: original.created_at_ms,
                        })
                        .await;
                    // An approval decided on local limits while Redis was
                    // away (`on_redis_down = "local"`) was never counted in
                    // Redis; the journal does not say which, so that mode
                    // may under-count after its reversal, as it already
                    // lets each node approve up to the limit on its own.
                    self.give_back_in_fleet(
                        token,
                        amount.min(original.amount),
                        original.created_at_ms,
                    )
                    .await;
                }
                ReversalOutcome {
                    id,
                    code: ResponseCode::Approved,
                    original: original.map(|o| o.id),
                    first: true,
                }
            }
            Ok(AppendOutcome::AlreadyReversed { .. }) => ReversalOutcome {
                id,
                code: ResponseCode::Approved,
                original: original.map(|o| o.id),
                first: false,
            },
            Err(error) => {
                self.metrics
                    .journal_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "reversal journal append failed; answering 96");
                ReversalOutcome {
                    id,
                    code: ResponseCode::SystemMalfunction,
                    original: original.map(|o| o.id),
                    first: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stan: &str) -> DuplicateKey {
        DuplicateKey {
            terminal_id: ids::Text::parse(b"TERM0001").unwrap(),
            stan: ids::Text::parse(stan.as_bytes()).unwrap(),
            transmitted_at: None,
        }
    }

    fn recent(at_ms: u64) -> Recent {
        Recent {
            id: TransactionId::new(at_ms, [0; 10]),
            decision: Decision::Declined {
                reason: DeclineReason::InvalidAmount,
            },
            token: Token::from_bytes([1; 16]),
            amount: Amount::from_minor(100).unwrap(),
            at_ms,
        }
    }

    #[test]
    fn answers_shared_in_the_fleet_read_back() {
        let authorization = Authorization {
            channel: Channel::Iso,
            kind: TransactionKind::Authorization,
            pan: protocol::Pan::parse(b"4111111111111111").unwrap(),
            expiry: None,
            amount: Amount::from_minor(1250).unwrap(),
            currency: protocol::Currency::parse("EUR").unwrap(),
            merchant_id: protocol::domain::pad("ACME0000001").unwrap(),
            terminal_id: ids::Text::parse(b"TERM0001").unwrap(),
            mcc: None,
            keys: None,
        };
        for decision in [
            Decision::Approved {
                auth_code: AuthCode::parse(b"A1B2C3").unwrap(),
            },
            Decision::Declined {
                reason: DeclineReason::CardCountLimit,
            },
        ] {
            let outcome = CardOutcome {
                id: TransactionId::new(1_795_000_000_000, [9; 10]),
                decision,
                token: Some(Token::from_bytes([3; 16])),
                last4: "1111".to_owned(),
                amount: Amount::from_minor(1250).unwrap(),
                currency: protocol::Currency::parse("EUR").unwrap(),
                created_at_ms: 1_795_000_000_000,
            };
            let text = encode_answer(&outcome);
            assert!(!text.contains("4111111111111111"), "{text}");
            let read = decode_answer(&text, &authorization).unwrap();
            assert_eq!(
                (read.id, read.decision, read.token, read.amount),
                (outcome.id, outcome.decision, outcome.token, outcome.amount)
            );
            assert_eq!(read.created_at_ms, outcome.created_at_ms);
        }
        assert!(decode_answer("tx_1|approved", &authorization).is_none());
    }

    #[test]
    fn the_recent_index_forgets_after_its_window_and_at_its_cap() {
        let mut index = RecentRequests {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            window_ms: 1_000,
            entries_max: 3,
        };
        index.insert(key("000001"), recent(10_000));
        index.insert(key("000002"), recent(10_500));
        assert!(index.get(&key("000001")).is_some());
        index.insert(key("000003"), recent(11_200));
        assert!(index.get(&key("000001")).is_none(), "older than the window");
        assert!(index.get(&key("000002")).is_some());
        index.insert(key("000004"), recent(11_300));
        index.insert(key("000005"), recent(11_400));
        assert_eq!(index.map.len(), 3, "at most entries_max");
        assert!(index.get(&key("000002")).is_none(), "the oldest goes first");
        // A key answered again (a new transmission time would differ; the
        // same keys again are a duplicate) keeps its newest entry.
        index.insert(key("000004"), recent(11_500));
        assert_eq!(index.get(&key("000004")).unwrap().at_ms, 11_500);
    }
}
