//! [`Engine::reverse`]: a reversal from either ingress.
//!
//! ```text
//! replayed? (91) -> acquirer permit (58)
//!   -> by keys: an original with these keys and owner still in flight, here or
//!      (with DE90) on another node of the fleet? wait for its answer
//!   -> find the original (by acquirer keys within the reversal's merchant and
//!      acquirer, or by id; 96 when the lookup fails)
//!   -> journal the reversal (an unknown original by keys is acknowledged and journaled too);
//!      a failed commit is read back: committed -> as recorded, else 96
//!   -> the first reversal of an approved original gives its velocity back, once
//! ```
//!
//! The `reversals` table's key on the original decides, in the commit,
//! which reversal is first, so two reversals racing on two nodes still give
//! back once. The record holds the amount reversed: replay at start takes
//! that (at most all of it) off its original, so a partial reversal leaves
//! standing after a restart what it left standing before.

use std::sync::atomic::Ordering;

use protocol::domain::{OriginalRef, Reversal, ReversalKind, ReversedAmount, TransactionId};
use protocol::ids::TerminalId;
use protocol::{Amount, Currency};
use storage::{
    AppendOutcome, JournalError, JournalRecord, OriginalKeys, RecordKind, StageTimings, StoreReader,
};

use crate::clock::Deadline;
use crate::engine::acquirer::Acquirer;
use crate::engine::authorize::Committed;
use crate::engine::decide::{self, Reservation};
use crate::engine::parts::Engine;
use crate::engine::record::{Answer, CardFacts, Draft, ReversalOutcome, ReversalRefusal};
use crate::engine::world::World;
use crate::ops::metrics::Shed;

/// How far back a reversal by acquirer keys looks for its original.
const REVERSAL_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The kinds of record a reversal can reverse.
const REVERSIBLE: [RecordKind; 2] = [RecordKind::Authorization, RecordKind::Purchase];

impl Engine {
    /// Finds the original `reversal` names, journals the reversal and, if it
    /// is the first for that original and the original was approved, gives
    /// its velocity back once: the whole of what it reverses, at most the
    /// original's amount. `acquirer`: the acquirer a mutual-TLS client
    /// certificate named, held to its own merchants and terminals.
    pub async fn reverse(
        &self,
        reversal: Reversal,
        acquirer: Option<&Acquirer>,
    ) -> ReversalOutcome {
        self.reverse_within(reversal, acquirer, None).await
    }

    /// [`Engine::reverse`] for a reversal whose answer is of use only until
    /// `deadline`: past it, before its record is written, it is shed (91,
    /// HTTP 503) with nothing journaled or given back, and the acquirer's
    /// retry is decided afresh. A wait for an original in flight ends at
    /// the deadline too.
    pub async fn reverse_within(
        &self,
        reversal: Reversal,
        acquirer: Option<&Acquirer>,
        deadline: Option<Deadline>,
    ) -> ReversalOutcome {
        self.try_reverse(&reversal, acquirer, deadline)
            .await
            .unwrap_or_else(ReversalOutcome::Refused)
    }

    async fn try_reverse(
        &self,
        reversal: &Reversal,
        acquirer: Option<&Acquirer>,
        deadline: Option<Deadline>,
    ) -> Result<ReversalOutcome, ReversalRefusal> {
        let world = &self.world;
        // Before replay the original's velocity is not back in the actors:
        // a give-back now would be undone when replay restores it.
        if !self.replayed() {
            return Err(ReversalRefusal::Starting);
        }
        let shed = || {
            world.metrics.count_shed(reversal.channel, Shed::Deadline);
            ReversalRefusal::Overloaded
        };
        if deadline.is_some_and(|deadline| deadline.has_passed()) {
            return Err(shed());
        }
        // An acquirer reverses only its own merchants' and terminals'
        // requests: anything else is answered 58 and neither journaled nor
        // given back, as it reverses nothing.
        if let Some(acquirer) = acquirer
            && !reversal
                .terminal_id
                .is_some_and(|terminal| acquirer.permits(&reversal.merchant_id, &terminal))
        {
            tracing::info!(acquirer = %acquirer.name, "reversal for a merchant or terminal not the acquirer's answered 58");
            return Err(ReversalRefusal::AcquirerNotPermitted);
        }
        let original = match reversal.original {
            OriginalRef::Keys {
                terminal_id,
                stan,
                transmitted_at,
            } => {
                // The original is the reversal's merchant's and acquirer's:
                // another's under the same terminal and STAN is not it.
                let keys = OriginalKeys {
                    terminal_id,
                    stan,
                    transmitted_at,
                    merchant_id: reversal.merchant_id,
                    acquirer: acquirer.map(|acquirer| acquirer.name.to_string()),
                };
                let waiting = self.duplicates.wait_for_in_flight(world, &keys);
                match deadline {
                    Some(deadline) => tokio::select! {
                        () = waiting => {}
                        () = deadline.sleep() => return Err(shed()),
                    },
                    None => waiting.await,
                }
                find_by_keys(world, &keys).await?
            }
            OriginalRef::Id(id) => find_by_id(world, reversal, id).await?,
        };
        let stated = Stated::of(reversal, original.as_ref())?;

        let now_ms = world.clock.now_ms();
        let id = world.transaction_id(now_ms);
        let record = Draft {
            id,
            at_ms: now_ms,
            channel: reversal.channel,
            kind: match reversal.kind {
                ReversalKind::Reversal => RecordKind::Reversal,
                ReversalKind::Advice => RecordKind::ReversalAdvice,
            },
            processing_code: original.as_ref().and_then(|o| o.processing_code),
            amount: stated.amount,
            currency: stated.currency,
            merchant_id: reversal.merchant_id,
            terminal_id: stated.terminal_id,
            keys: reversal.keys,
            card: original
                .as_ref()
                .map(CardFacts::of_record)
                .unwrap_or_default(),
            answer: Answer::Acknowledged,
            original_id: original.as_ref().map(|o| o.id),
            acquirer,
            timings: StageTimings::default(),
            sealed_pan: None,
            idempotency: None,
        }
        .record();

        let first = match world.append(reversal.channel, record, deadline).await {
            Ok(AppendOutcome::Recorded) => true,
            Ok(AppendOutcome::AlreadyReversed { .. }) => false,
            // A reversal carries no idempotency key, so no backend refuses
            // one for a key; one refused would not be written: nothing is
            // acknowledged or given back for it.
            Ok(AppendOutcome::IdempotencyKeyTaken { by }) => {
                tracing::error!(%by, "a reversal was refused for an idempotency key it cannot carry");
                return Err(ReversalRefusal::JournalFailed);
            }
            // Never written: shed, the acquirer's retry decided afresh.
            Err(error @ (JournalError::QueueFull | JournalError::Expired)) => {
                self.not_recorded(reversal.channel, &error);
                return Err(ReversalRefusal::Overloaded);
            }
            // A failed commit may have committed: read back, as for an
            // authorization, before anything is answered or given back.
            Err(error) => match self.committed(Err(error), id).await {
                Committed::Yes => holds_original(world, original.as_ref(), id).await,
                Committed::No(error) | Committed::Unknown(error) => {
                    world
                        .metrics
                        .journal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "reversal journal append failed; answering 96");
                    return Err(ReversalRefusal::JournalFailed);
                }
            },
        };
        if first
            && let Some(original) = original.as_ref().filter(|o| o.response_code.is_approved())
            && let Some(token) = original.token
        {
            // An approval decided on local limits while Redis was away
            // (`on_redis_down = "local"`) was never counted in Redis; the
            // journal does not say which, so that mode may under-count after
            // its reversal, as it already lets each node approve up to the
            // limit on its own.
            // A partial reversal gives back what it reverses and leaves the
            // original counted once, as replay counts it after a restart.
            let amount = stated.amount.min(original.amount);
            decide::give_back(
                world,
                Reservation {
                    token,
                    merchant_id: original.merchant_id,
                    amount,
                    at_ms: original.created_at_ms,
                    in_fleet: true,
                },
                amount == original.amount,
            )
            .await;
        }
        Ok(ReversalOutcome::Recorded {
            id,
            original: original.map(|o| o.id),
            first,
        })
    }
}

/// The original a reversal names by acquirer keys (and owner): the most
/// recent authorization or purchase within the window, if any.
async fn find_by_keys(
    world: &World,
    keys: &OriginalKeys,
) -> Result<Option<JournalRecord>, ReversalRefusal> {
    let since_ms = world.clock.now_ms().saturating_sub(REVERSAL_WINDOW_MS);
    world
        .store
        .find_original(keys, &REVERSIBLE, since_ms)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "original lookup failed; answering 96");
            ReversalRefusal::LookupFailed
        })
}

/// The original a reversal names by `id`: the reversal's merchant's
/// transaction, which must exist and be reversible (another merchant's is
/// "unknown", so ids cannot be probed).
async fn find_by_id(
    world: &World,
    reversal: &Reversal,
    id: TransactionId,
) -> Result<Option<JournalRecord>, ReversalRefusal> {
    match world.store.transaction(id).await {
        Ok(Some(stored)) if stored.record.merchant_id == reversal.merchant_id => {
            if REVERSIBLE.contains(&stored.record.kind) {
                Ok(Some(stored.record))
            } else {
                Err(ReversalRefusal::NotReversible)
            }
        }
        Ok(_) => Err(ReversalRefusal::UnknownOriginal),
        Err(error) => {
            tracing::warn!(%error, "transaction lookup failed");
            Err(ReversalRefusal::LookupFailed)
        }
    }
}

/// Whether the reversal `id`, committed although its commit reported a
/// failure, is the first of its original (the one the `reversals` table
/// holds), read back. If that cannot be read, it is taken as not the first:
/// nothing is given back, so the doubt can cost a spare decline until the
/// approval leaves its windows (or a restart replays it), never an extra
/// approval.
async fn holds_original(
    world: &World,
    original: Option<&JournalRecord>,
    id: TransactionId,
) -> bool {
    let Some(original) = original else {
        return true;
    };
    match world.store.transaction(original.id).await {
        Ok(stored) => stored.is_some_and(|stored| stored.reversed_by == Some(id)),
        Err(error) => {
            tracing::warn!(%error, "a committed reversal's original could not be read back; nothing given back");
            false
        }
    }
}

/// What the reversal record says: the reversal's own amount, currency and
/// terminal, or the original's where it states none.
struct Stated {
    amount: Amount,
    currency: Currency,
    terminal_id: TerminalId,
}

impl Stated {
    fn of(
        reversal: &Reversal,
        original: Option<&JournalRecord>,
    ) -> Result<Stated, ReversalRefusal> {
        let by_id = matches!(reversal.original, OriginalRef::Id(_));
        let amount = match (reversal.amount, original) {
            (ReversedAmount::Part(amount), Some(original)) if by_id => {
                // The JSON contract: from 1 to the authorized amount.
                if amount.minor() > 0 && amount <= original.amount {
                    amount
                } else {
                    return Err(ReversalRefusal::AmountOutOfRange);
                }
            }
            // What the acquirer reverses (DE4, less DE95 where sent); the
            // give-back, and the replay after a restart, take at most the
            // original's amount.
            (ReversedAmount::Part(amount), _) => amount,
            (ReversedAmount::Whole, Some(original)) => original.amount,
            (ReversedAmount::OverMaximum, _) => return Err(ReversalRefusal::AmountOutOfRange),
            // All of an original that was not found: nothing to record.
            (ReversedAmount::Whole, None) => return Err(ReversalRefusal::UnknownOriginal),
        };
        let currency = reversal
            .currency
            .or(original.map(|o| o.currency))
            .ok_or(ReversalRefusal::UnknownOriginal)?;
        let terminal_id = reversal
            .terminal_id
            .or(original.map(|o| o.terminal_id))
            .ok_or(ReversalRefusal::UnknownOriginal)?;
        Ok(Stated {
            amount,
            currency,
            terminal_id,
        })
    }
}
