//! [`Engine::authorize`]: a card request from either ingress, as a short
//! sequence of the steps in the sibling files, each with one exit.

use std::sync::atomic::Ordering;

use protocol::domain::{
    Authorization, Channel, Decision, DeclineReason, TransactionId, TransactionKind,
};
use std::sync::Arc;

use protocol::ids::Text;
use storage::{AppendOutcome, JournalError, RecordKind, StageTimings, StoreReader};

use crate::clock::{Deadline, Stopwatch};
use crate::engine::acquirer::Acquirer;
use crate::engine::decide;
use crate::engine::duplicates::Check;
use crate::engine::fleet_settle::{Settle, settle};
use crate::engine::idempotency::{self, Idempotent};
use crate::engine::parts::Engine;
use crate::engine::policy::Policy;
use crate::engine::record::{Answer, CardFacts, CardOutcome, Draft, IdempotencyRequest};
use crate::ops::metrics::Shed;

/// What an ingress knows of a card request beyond the domain
/// [`Authorization`]: who sent it, its wire extras for the journal, and how
/// long decoding it took.
#[derive(Debug, Default)]
pub struct Received<'a> {
    /// The acquirer a mutual-TLS client certificate named; `None` on plain
    /// TCP and on HTTP.
    pub acquirer: Option<&'a Acquirer>,
    /// DE3, for the journal; JSON requests carry none.
    pub processing_code: Option<Text<6>>,
    /// Time the ingress spent decoding the request, recorded with it.
    pub decode_us: u64,
    /// When its answer stops being of use (the listener's or acquirer's
    /// `deadline_ms` after it arrived): past it the request is shed, 91
    /// (HTTP 503), unless its record is already being written. `None`: no
    /// deadline.
    pub deadline: Option<Deadline>,
    /// The configuration the ingress admitted it under (its admission
    /// rate, on HTTP its key), which it is then decided by; `None`: the
    /// engine's configuration when the decision starts.
    pub policy: Option<Arc<Policy>>,
}

impl Engine {
    /// Decides a card request and journals it; the outcome is returned only
    /// after its record is committed. A request from a mutual-TLS acquirer
    /// is recorded under its name, and declined without asking the actors
    /// when its merchant or terminal is not the acquirer's. Until velocity
    /// is replayed ([`Engine::replay`]) nothing is decided: 91, not
    /// journaled.
    pub async fn authorize(
        &self,
        authorization: Authorization,
        received: Received<'_>,
    ) -> CardOutcome {
        // Without a key nothing can take it over: the outcome is the answer.
        match self.authorize_keyed(authorization, received, None).await {
            Ok(outcome) | Err(KeyTaken { outcome, .. }) => outcome,
        }
    }

    /// [`Engine::authorize`] for a request with an idempotency key (see
    /// `idempotency.rs`): the key is claimed durably before anything is
    /// decided, so one key is decided once across nodes and retries; a key
    /// answered gets its stored reply, and one in flight 409.
    pub async fn authorize_idempotent(
        &self,
        authorization: Authorization,
        received: Received<'_>,
        request: IdempotencyRequest,
    ) -> Idempotent {
        if !self.replayed() {
            // 91 before anything is claimed.
            return Idempotent::Decided(self.authorize(authorization, received).await);
        }
        let Some(_in_flight) = self.keys_in_flight.enter(&request) else {
            return Idempotent::InProgress;
        };
        let now_ms = self.world.clock.now_ms();
        let id = self.world.transaction_id(now_ms);
        if let Err(answer) = idempotency::claim(&self.world, &request, id, now_ms).await {
            return answer;
        }
        let (merchant_id, key, request_hash) = (
            request.merchant_id.clone(),
            request.key.clone(),
            request.request_hash,
        );
        let claimed = Some(KeyClaimed { id, request });
        match self.authorize_keyed(authorization, received, claimed).await {
            Ok(outcome) => {
                idempotency::release_if_retry(&self.world, &outcome, merchant_id, key, id).await;
                Idempotent::Decided(outcome)
            }
            Err(KeyTaken { by, .. }) => {
                tracing::warn!(%by, "an idempotency key was taken over before this request's commit; nothing of it was written");
                idempotency::after_key_taken(&self.world, &merchant_id, &key, request_hash).await
            }
        }
    }

    /// Decides and records a card request; with `claimed`, as the request
    /// holding that idempotency key, whose record is refused (`Err`, its
    /// velocity given back) if the key was taken over meanwhile.
    async fn authorize_keyed(
        &self,
        authorization: Authorization,
        received: Received<'_>,
        claimed: Option<KeyClaimed>,
    ) -> Result<CardOutcome, KeyTaken> {
        let world = &self.world;
        // The PAN is hashed once: the duplicate check, the actors and the
        // vault all take this token.
        let tokenizing = Stopwatch::start();
        let token = world.vault.tokenize(&authorization.pan);
        let tokenize_us = tokenizing.elapsed_us();
        if let Some(refused) = self.refuse_before_replay(&authorization, token) {
            return Ok(refused);
        }
        let deadline = received.deadline;
        let past_deadline = || deadline.is_some_and(|deadline| deadline.has_passed());
        if past_deadline() {
            world
                .metrics
                .count_shed(authorization.channel, Shed::Deadline);
            return Ok(self.undecided(&authorization, token, DeclineReason::Overloaded));
        }

        let slot = match self
            .duplicates
            .check(world, &authorization, token, received.acquirer)
            .await
        {
            Check::New(slot) => slot,
            Check::Answered(first) => return Ok(first),
            Check::Refused(refusal) => return Ok(refusal),
        };
        // The duplicate check may have waited for a copy in flight: nothing
        // is reserved yet, so a request out of time costs nothing more.
        if past_deadline() {
            world
                .metrics
                .count_shed(authorization.channel, Shed::Deadline);
            let reason = DeclineReason::Overloaded;
            return Ok(slot.refused(world, &authorization, token, reason).await);
        }

        let policy = received.policy.unwrap_or_else(|| self.policy());
        let decided =
            decide::decide(world, &policy, &authorization, token, received.acquirer).await;
        // In a fleet: the keys claimed and the velocity confirmed in one
        // Redis call; a request another node holds is answered from there.
        let (slot, decided) = match settle(world, slot, &authorization, token, decided).await {
            Settle::Record(slot, decided) => (slot, decided),
            Settle::Answer(outcome) => return Ok(outcome),
        };

        let sealing = Stopwatch::start();
        let sealed_pan = world
            .vault
            .seal_if_new_with_token(&authorization.pan, token);
        let vault_us = tokenize_us.saturating_add(sealing.elapsed_us());
        // Marked as stored only once the commit holds it.
        let sealed_now = sealed_pan.is_some();
        let id = match &claimed {
            Some(claimed) => claimed.id,
            None => world.transaction_id(decided.at_ms),
        };
        let outcome = CardOutcome::of(&authorization, token, id, decided.at_ms, decided.decision);
        let record = Draft {
            id: outcome.id,
            at_ms: decided.at_ms,
            channel: authorization.channel,
            kind: match authorization.kind {
                TransactionKind::Authorization => RecordKind::Authorization,
                TransactionKind::Purchase => RecordKind::Purchase,
            },
            processing_code: received.processing_code,
            amount: authorization.amount,
            currency: authorization.currency,
            merchant_id: authorization.merchant_id,
            terminal_id: authorization.terminal_id,
            keys: authorization.keys,
            card: CardFacts::of_pan(&authorization.pan, token),
            answer: Answer::Decided(decided.decision),
            original_id: None,
            acquirer: received.acquirer,
            timings: StageTimings {
                decode_us: saturating_u32(received.decode_us),
                decide_us: saturating_u32(decided.decide_us),
                vault_us: saturating_u32(vault_us),
            },
            sealed_pan,
            idempotency: claimed.and_then(|claimed| claimed.request.entry(&outcome)),
        }
        .record();

        // The writer does not write a record it cannot commit before the
        // deadline (Expired, below); one it has taken is answered as
        // committed, whatever the time.
        let appended = world.append(authorization.channel, record, deadline).await;
        if let Ok(AppendOutcome::IdempotencyKeyTaken { by }) = appended {
            // Not written: another request holds the key now. Nothing of
            // this decision stands, so its velocity is given back.
            let outcome = CardOutcome {
                decision: Decision::Declined {
                    reason: DeclineReason::JournalUnavailable,
                },
                ..outcome
            };
            if let Some(reservation) = decided.reservation {
                decide::give_back(world, reservation, true).await;
            }
            slot.not_recorded(world, &outcome).await;
            return Err(KeyTaken { by, outcome });
        }
        Ok(match self.committed(appended, outcome.id).await {
            Committed::Yes => {
                if sealed_now {
                    world.vault.remember_sealed(&token);
                }
                slot.recorded(world, &outcome);
                outcome
            }
            Committed::No(error) => {
                // Nothing is approved that is not on disk: the velocity this
                // approval took is given back.
                let outcome = CardOutcome {
                    decision: Decision::Declined {
                        reason: self.not_recorded(authorization.channel, &error),
                    },
                    ..outcome
                };
                if let Some(reservation) = decided.reservation {
                    decide::give_back(world, reservation, true).await;
                }
                slot.not_recorded(world, &outcome).await;
                outcome
            }
            Committed::Unknown(error) => {
                // Neither the commit nor the read-back answered: the record
                // may be on disk. The answer is 96, and the velocity stays
                // taken, so the doubt can cost a spare decline, never an
                // extra approval.
                let outcome = CardOutcome {
                    decision: Decision::Declined {
                        reason: self.not_recorded(authorization.channel, &error),
                    },
                    ..outcome
                };
                slot.not_recorded(world, &outcome).await;
                outcome
            }
        })
    }

    /// Whether the record `id` was committed. A failed commit can be
    /// ambiguous (the batch committed but its answer was lost: a dropped
    /// connection or a passed deadline after COMMIT was sent), so it is read
    /// back before anything is answered or given back. A full queue or a
    /// closed journal never wrote anything. Authorizations and reversals
    /// (`reverse.rs`) alike.
    pub(super) async fn committed(
        &self,
        appended: Result<storage::AppendOutcome, JournalError>,
        id: TransactionId,
    ) -> Committed {
        let error = match appended {
            Ok(_) => return Committed::Yes,
            Err(error @ JournalError::Unavailable) => error,
            Err(error) => return Committed::No(error),
        };
        match self.world.store.transaction(id).await {
            Ok(Some(_)) => {
                tracing::warn!(
                    "the journal reported a failed commit, but the record is committed; answered as committed"
                );
                Committed::Yes
            }
            Ok(None) => Committed::No(error),
            Err(read) => {
                tracing::warn!(%read, "a failed commit could not be read back");
                Committed::Unknown(error)
            }
        }
    }

    /// Why a record that failed to append is declined, counted: a full queue
    /// or a deadline the writer could not meet is load shed (91, HTTP 503);
    /// a failed commit is 96.
    pub(super) fn not_recorded(&self, channel: Channel, error: &JournalError) -> DeclineReason {
        let metrics = &self.world.metrics;
        let reason = match error {
            JournalError::QueueFull => {
                metrics.count_shed(channel, Shed::JournalQueue);
                DeclineReason::Overloaded
            }
            JournalError::Expired => {
                metrics.count_shed(channel, Shed::Deadline);
                DeclineReason::Overloaded
            }
            _ => {
                metrics.journal_failures.fetch_add(1, Ordering::Relaxed);
                DeclineReason::JournalUnavailable
            }
        };
        tracing::warn!(%error, code = %reason.response_code(), "journal append failed");
        reason
    }
}

impl Engine {
    /// `reason`, answered to a request neither decided nor recorded.
    pub(super) fn undecided(
        &self,
        authorization: &Authorization,
        token: protocol::domain::Token,
        reason: DeclineReason,
    ) -> CardOutcome {
        let now_ms = self.world.clock.now_ms();
        CardOutcome::of(
            authorization,
            token,
            self.world.transaction_id(now_ms),
            now_ms,
            Decision::Declined { reason },
        )
    }
}

/// An idempotency key claimed for transaction `id`, whose record carries
/// the request's reply.
struct KeyClaimed {
    id: TransactionId,
    request: IdempotencyRequest,
}

/// A record refused because another request, `by`, holds its key: nothing
/// of it was written, and `outcome` (declined, never sent) was given back.
struct KeyTaken {
    by: TransactionId,
    outcome: CardOutcome,
}

/// What a read-back found of a record whose append reported a failure.
pub(super) enum Committed {
    Yes,
    No(JournalError),
    /// Neither the commit nor the read-back could tell.
    Unknown(JournalError),
}

/// A stage time for the journal's 32-bit columns (71 minutes at most).
fn saturating_u32(us: u64) -> u32 {
    u32::try_from(us).unwrap_or(u32::MAX)
}
