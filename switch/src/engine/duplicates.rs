//! Whether a card request was answered already: every place an earlier
//! answer to the same acquirer keys may be, behind one check.
//!
//! ```text
//! keys (terminal, STAN, DE7; merchant, acquirer)
//!                            -> in flight here?   wait for its answer
//!                            -> answered recently here (recent index)?
//!                            -> a repeat, or after a restart: the journal
//!   -> Check::New(slot) | Check::Answered(first answer, or 94) | Check::Refused(96)
//! ```
//!
//! In a fleet the claim in Redis (claimed or answered by a node?) and the
//! journal behind it come after the node's decision, in the same call that
//! confirms its velocity (`fleet_settle.rs`), using the slot's helpers
//! below.
//!
//! A retransmission or repeat of a request already answered gets the same
//! answer and is counted once; the same keys with another card or amount are
//! a different request reusing keys: 94. Keys belong to their owner: the
//! same terminal and STAN under another merchant (DE42) or another acquirer
//! (a plain-TCP client is "none") are another request, decided on its own,
//! since terminal ids repeat everywhere (`TERM0001`). A request without keys (JSON; its
//! `Idempotency-Key` plays that part at the HTTP ingress) is always new.
//!
//! The [`Slot`] a new request gets holds its keys from the check to its
//! answer, so a copy arriving meanwhile waits instead of being decided twice;
//! finishing it hands the answer to those copies, and dropping it unanswered
//! (a cancelled task) frees the keys.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::Amount;
use protocol::domain::{Authorization, Decision, DeclineReason, Token, TransactionId};

use crate::config::DuplicateSettings;
use crate::engine::acquirer::Acquirer;
use storage::{JournalRecord, OriginalKeys, RecordKind, StorageError, StoreReader};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::engine::duplicate_key::{DuplicateKey, KeyMap};
use crate::engine::fleet_claim::{encode_answer, wait_while_pending};
use crate::engine::record::CardOutcome;
use crate::engine::world::World;

/// How far back the journal is asked for a retransmission's original.
const DUPLICATE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// What the duplicate check found.
#[derive(Debug)]
pub(crate) enum Check<'a> {
    /// Not answered before (or no keys): decide it. The slot holds its keys
    /// until it is finished with the answer.
    New(Slot<'a>),
    /// Answered before: the first answer, or 94 for the same keys with
    /// another card or amount. Copies waiting on this request got it too.
    Answered(CardOutcome),
    /// It cannot be told whether the keys were answered: 91 (Redis away and
    /// `on_redis_down = "decline"`) or 96 (the journal lookup failed), not
    /// recorded. Copies waiting on this request got it too.
    Refused(CardOutcome),
}

/// The duplicate check's memory: requests in flight, and requests answered
/// within the window.
pub(crate) struct Duplicates {
    /// Requests between their check and their answer, so a retransmission
    /// arriving meanwhile waits for the first one's answer instead of being
    /// decided twice.
    in_flight: Mutex<KeyMap<watch::Receiver<Option<CardOutcome>>>>,
    recent: Mutex<RecentRequests>,
    window_ms: u64,
    /// Until then, a request the index has not seen may still have been
    /// answered before the restart, so the journal is asked. Set at start,
    /// and only if the journal holds requests from the window before it.
    journal_check_until_ms: AtomicU64,
    /// Answers being written to the fleet after their replies, so a node
    /// that stops finishes them first (`Engine::finish_fleet_answers`).
    answers: TaskTracker,
}

impl Duplicates {
    pub(crate) fn new(settings: DuplicateSettings) -> Duplicates {
        Duplicates {
            in_flight: Mutex::new(KeyMap::default()),
            recent: Mutex::new(RecentRequests {
                map: KeyMap::default(),
                order: VecDeque::new(),
                window_ms: settings.window_ms,
                entries_max: settings.entries_max,
            }),
            window_ms: settings.window_ms,
            journal_check_until_ms: AtomicU64::new(0),
            answers: TaskTracker::new(),
        }
    }

    /// Looks for an earlier answer to `authorization`'s keys everywhere one
    /// may be; `token` is its card's. A request from an `acquirer` that may
    /// not send for its merchant or terminal is never matched: it would
    /// read another acquirer's answer and auth code by sending its keys.
    /// It goes on to be declined 58 without touching any velocity.
    pub(crate) async fn check(
        &self,
        world: &World,
        authorization: &Authorization,
        token: Token,
        acquirer: Option<&Acquirer>,
    ) -> Check<'_> {
        let permitted = acquirer.is_none_or(|acquirer| {
            acquirer.permits(&authorization.merchant_id, &authorization.terminal_id)
        });
        let (Some(keys), true) = (authorization.keys, permitted) else {
            return Check::New(Slot::holding(self, None, None));
        };
        let key = DuplicateKey::new(
            authorization.terminal_id,
            keys.stan,
            keys.transmitted_at,
            authorization.merchant_id,
            acquirer.map(|acquirer| Arc::clone(&acquirer.name)),
        );
        let mut slot = match self.enter(key.clone()).await {
            Ok(slot) => slot,
            // A copy of a request in flight: its answer, published by the
            // first request's own slot.
            Err(first) => {
                return Check::Answered(answer_duplicate(world, first, token, authorization));
            }
        };
        let recent = self.recent.lock().ok().and_then(|recent| recent.get(&key));
        if let Some(recent) = recent {
            let first = recent.outcome(authorization);
            return Check::Answered(slot.answered(world, first, token, authorization));
        }
        // In a fleet the original may be another node's: its acquirer keys
        // are claimed in Redis after the node's actors decide, in the same
        // call that confirms the decision's velocity (`fleet_settle.rs`),
        // which then asks the journal when the claim cannot vouch. A fresh
        // claim skips the after-restart check: Redis keeps every claim and
        // answer of the fleet for the duplicate window, so it means no node
        // answered these keys in it. (Measured: a journal read per request
        // for two minutes after a restart halved a fleet node's rate.)
        if world.fleet.is_some() {
            slot.fleet_key = Some(key.redis_key());
            return Check::New(slot);
        }
        // The journal is asked for a repeat, and after a restart (see
        // `journal_check_until_ms`).
        let after_restart =
            world.clock.now_ms() < self.journal_check_until_ms.load(Ordering::Relaxed);
        if keys.repeat || after_restart {
            return slot.look_in_journal(world, authorization, token).await;
        }
        Check::New(slot)
    }

    /// Waits until requests with these keys (and owner) that are between
    /// their duplicate check and their answer have been answered (committed
    /// or not): a reversal of an original still in flight must find it in
    /// the journal, not miss it and leave it counted. On this node that is
    /// its in-flight map; in a fleet, with DE90 (the original's keys whole),
    /// also a claim another node holds pending in Redis, waited for at most
    /// the claim's pending time (`wait_while_pending`).
    /// `transmitted_at: None` (a reversal without DE90) matches any time,
    /// which a Redis key cannot: such a reversal waits only for this node.
    pub(crate) async fn wait_for_in_flight(&self, world: &World, keys: &OriginalKeys) {
        let key = DuplicateKey::of_original(keys);
        let waiting: Vec<watch::Receiver<Option<CardOutcome>>> = match self.in_flight.lock() {
            // With DE90 the original's keys are known whole: one lookup.
            Ok(in_flight) if key.names_its_time() => {
                in_flight.get(&key).cloned().into_iter().collect()
            }
            // Without it, any transmission time: the in-flight map is bounded
            // by the connections and their requests in flight.
            Ok(in_flight) => in_flight
                .iter()
                .filter(|(held, _)| held.matches_at_any_time(&key))
                .map(|(_, receiver)| receiver.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        // An original in flight here is answered here: its claim in Redis
        // has nothing more to say (and stays pending if its answer could not
        // be shared there).
        let in_flight_here = !waiting.is_empty();
        for mut receiver in waiting {
            // An error: that request ended without an answer (cancelled),
            // so there is nothing more to wait for.
            let _ = receiver.wait_for(Option::is_some).await;
        }
        if let Some(fleet) = &world.fleet
            && key.names_its_time()
            && !in_flight_here
        {
            wait_while_pending(world, fleet.as_ref(), &key.redis_key()).await;
        }
    }

    /// Takes the in-flight slot for `key`, or, if another request holds it,
    /// waits for that request's answer.
    async fn enter(&self, key: DuplicateKey) -> Result<Slot<'_>, CardOutcome> {
        loop {
            let waiting = {
                let Ok(mut in_flight) = self.in_flight.lock() else {
                    // A poisoned map: decide without guarding the keys.
                    return Ok(Slot::holding(self, Some(key), None));
                };
                match in_flight.get(&key) {
                    Some(receiver) => receiver.clone(),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        in_flight.insert(key.clone(), receiver);
                        return Ok(Slot::holding(self, Some(key), Some(sender)));
                    }
                }
            };
            let mut receiver = waiting;
            // An error means the first request ended without an answer (its
            // task was cancelled); its slot is gone, so look again.
            if receiver.wait_for(Option::is_some).await.is_err() {
                continue;
            }
            let first = receiver.borrow().clone();
            if let Some(first) = first {
                return Err(first);
            }
        }
    }

    /// Waits for the answers still being written to the fleet; none is
    /// started after this.
    pub(crate) async fn finish_fleet_answers(&self) {
        self.answers.close();
        self.answers.wait().await;
    }

    /// At start: if the journal holds requests answered within the duplicate
    /// window before now, their retransmissions must be found in the journal
    /// until the window has passed, since the in-memory index starts empty.
    /// Declines count as much as approvals: a retransmission of a request
    /// declined just before a restart gets that decline, not a second
    /// decision that could approve it.
    pub(crate) async fn check_journal_after_restart(
        &self,
        world: &World,
    ) -> Result<(), StorageError> {
        let now_ms = world.clock.now_ms();
        if world
            .store
            .recorded_since(now_ms.saturating_sub(self.window_ms))
            .await?
        {
            self.journal_check_until_ms
                .store(now_ms.saturating_add(self.window_ms), Ordering::Relaxed);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Duplicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplicates")
            .field("window_ms", &self.window_ms)
            .finish_non_exhaustive()
    }
}

/// A request's hold on its keys, from its duplicate check to its answer:
/// in this node's in-flight map and, in a fleet, as a claim in Redis.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    duplicates: &'a Duplicates,
    /// `None` for a request without acquirer keys.
    key: Option<DuplicateKey>,
    /// The in-flight entry's sender, while this request holds it.
    sender: Option<watch::Sender<Option<CardOutcome>>>,
    /// In a fleet, the Redis key of the request's acquirer keys, claimed
    /// with its velocity after the node's actors decide.
    fleet_key: Option<String>,
    /// Whether this node holds that claim: its answer, or its giving up,
    /// goes to Redis.
    holds_claim: bool,
}

impl<'a> Slot<'a> {
    fn holding(
        duplicates: &'a Duplicates,
        key: Option<DuplicateKey>,
        sender: Option<watch::Sender<Option<CardOutcome>>>,
    ) -> Slot<'a> {
        Slot {
            duplicates,
            key,
            sender,
            fleet_key: None,
            holds_claim: false,
        }
    }

    /// The Redis key to claim for the request, in a fleet.
    pub(crate) fn fleet_key(&self) -> Option<&str> {
        self.fleet_key.as_deref()
    }

    /// This node won the fleet's claim on the request's keys.
    pub(crate) fn hold_claim(&mut self) {
        self.holds_claim = true;
    }

    /// Looks for the request's original in the journal: for a repeat,
    /// after a restart, and in a fleet whose claim cannot vouch that no
    /// node answered it. `New` when there is none.
    pub(crate) async fn look_in_journal(
        self,
        world: &World,
        authorization: &Authorization,
        token: Token,
    ) -> Check<'a> {
        let Some(keys) = self.key.as_ref().map(DuplicateKey::original_keys) else {
            return Check::New(self);
        };
        let since_ms = world.clock.now_ms().saturating_sub(DUPLICATE_WINDOW_MS);
        let kinds = [RecordKind::Authorization, RecordKind::Purchase];
        match world.store.find_original(&keys, &kinds, since_ms).await {
            Ok(Some(original)) => {
                Check::Answered(self.answered(world, answer_of(&original), token, authorization))
            }
            Ok(None) => Check::New(self),
            Err(error) => {
                tracing::warn!(%error, "duplicate check failed; answering 96");
                let reason = DeclineReason::JournalUnavailable;
                Check::Refused(self.refused(world, authorization, token, reason).await)
            }
        }
    }

    /// The request's answer is committed: a retransmission gets it from now
    /// on, from the recent index, the fleet, and copies waiting now.
    pub(crate) fn recorded(self, world: &World, outcome: &CardOutcome) {
        if let (Some(key), Some(token), Ok(mut recent)) =
            (&self.key, outcome.token, self.duplicates.recent.lock())
        {
            recent.insert(
                key.clone(),
                Recent {
                    id: outcome.id,
                    decision: outcome.decision,
                    token,
                    amount: outcome.amount,
                    at_ms: outcome.created_at_ms,
                },
            );
        }
        self.share_with_fleet(world, outcome);
        self.publish(outcome);
    }

    /// The request's answer could not be recorded: copies waiting now get
    /// it, but a later retransmission must be decided afresh, so the fleet's
    /// claim is given up.
    pub(crate) async fn not_recorded(self, world: &World, outcome: &CardOutcome) {
        self.release_in_fleet(world).await;
        self.publish(outcome);
    }

    /// Answers with an earlier answer. A claim this node holds in the fleet
    /// gets that earlier answer too (it came from the journal), so another
    /// node's copy is answered from Redis instead of waiting on a claim
    /// nobody will answer.
    pub(crate) fn answered(
        self,
        world: &World,
        first: CardOutcome,
        token: Token,
        authorization: &Authorization,
    ) -> CardOutcome {
        self.share_with_fleet(world, &first);
        let outcome = answer_duplicate(world, first, token, authorization);
        self.publish(&outcome);
        outcome
    }

    /// Answers `reason` without deciding or recording; a claim this node
    /// holds in the fleet is given up, so a retransmission is decided afresh.
    pub(crate) async fn refused(
        self,
        world: &World,
        authorization: &Authorization,
        token: Token,
        reason: DeclineReason,
    ) -> CardOutcome {
        let now_ms = world.clock.now_ms();
        let outcome = CardOutcome::of(
            authorization,
            token,
            world.transaction_id(now_ms),
            now_ms,
            Decision::Declined { reason },
        );
        self.release_in_fleet(world).await;
        self.publish(&outcome);
        outcome
    }

    /// Leaves `outcome` in the fleet for the keys this node claimed, after
    /// the reply: a task of its own writes it, so the request's reply waits
    /// for one Redis round trip (its claim), not two. A node that dies
    /// before the write leaves its claim pending; it lapses, and the next
    /// claim of these keys asks the journal, which holds the record.
    fn share_with_fleet(&self, world: &World, outcome: &CardOutcome) {
        let (Some(fleet), Some(redis_key), true) =
            (&world.fleet, &self.fleet_key, self.holds_claim)
        else {
            return;
        };
        let fleet = Arc::clone(fleet);
        let metrics = Arc::clone(&world.metrics);
        let (redis_key, answer) = (redis_key.clone(), encode_answer(outcome));
        let ttl_ms = self.duplicates.window_ms;
        self.duplicates.answers.spawn(async move {
            if let Err(error) = fleet.answer(&redis_key, &answer, ttl_ms).await {
                metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "redis: the answer could not be shared with the fleet");
            }
        });
    }

    /// Gives up the claim this node holds in the fleet, if any: it lapses,
    /// so the next claim of these keys asks the journal (this request may
    /// be on disk when its commit could not be read back).
    async fn release_in_fleet(&self, world: &World) {
        if let (Some(fleet), Some(redis_key), true) =
            (&world.fleet, &self.fleet_key, self.holds_claim)
            && let Err(error) = fleet.release(redis_key).await
        {
            world.count_fleet_error();
            tracing::warn!(%error, "redis: a claim could not be released");
        }
    }

    /// Hands the answer to any copy waiting on these keys; dropping the slot
    /// then frees them.
    fn publish(&self, outcome: &CardOutcome) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(Some(outcome.clone()));
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let (Some(key), Some(sender)) = (&self.key, &self.sender) else {
            return;
        };
        if let Ok(mut in_flight) = self.duplicates.in_flight.lock()
            && in_flight
                .get(key)
                .is_some_and(|receiver| receiver.same_channel(&sender.subscribe()))
        {
            in_flight.remove(key);
        }
    }
}

/// The answer to a copy of `first`: the same, counted once, if it carries
/// the same card and amount; 94 otherwise.
fn answer_duplicate(
    world: &World,
    first: CardOutcome,
    token: Token,
    authorization: &Authorization,
) -> CardOutcome {
    if first.token == Some(token) && first.amount == authorization.amount {
        world.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
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

/// The answer a journaled request was given.
fn answer_of(original: &JournalRecord) -> CardOutcome {
    CardOutcome {
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
    }
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
    map: KeyMap<Recent>,
    /// Keys in the order they were answered, for eviction.
    order: VecDeque<(u64, DuplicateKey)>,
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

impl Recent {
    /// The answer as first given; the last four and the currency are the
    /// retransmission's own (they are the same request).
    fn outcome(&self, authorization: &Authorization) -> CardOutcome {
        CardOutcome {
            id: self.id,
            decision: self.decision,
            token: Some(self.token),
            last4: authorization.pan.last4().to_owned(),
            amount: self.amount,
            currency: authorization.currency,
            created_at_ms: self.at_ms,
        }
    }
}

impl RecentRequests {
    fn get(&self, key: &DuplicateKey) -> Option<Recent> {
        self.map.get(key).copied()
    }

    fn insert(&mut self, key: DuplicateKey, recent: Recent) {
        let oldest_ms = recent.at_ms.saturating_sub(self.window_ms);
        while let Some(&(at_ms, _)) = self.order.front() {
            if at_ms >= oldest_ms && self.order.len() < self.entries_max {
                break;
            }
            if let Some((_, old)) = self.order.pop_front()
                && self.map.get(&old).is_some_and(|entry| entry.at_ms == at_ms)
            {
                self.map.remove(&old);
            }
        }
        self.order.push_back((recent.at_ms, key.clone()));
        self.map.insert(key, recent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ids::Text;

    fn key(stan: &str) -> DuplicateKey {
        DuplicateKey::new(
            Text::parse(b"TERM0001").unwrap(),
            Text::parse(stan.as_bytes()).unwrap(),
            None,
            protocol::domain::pad("ACME0000001").unwrap(),
            None,
        )
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
    fn the_recent_index_forgets_after_its_window_and_at_its_cap() {
        let mut index = RecentRequests {
            map: KeyMap::default(),
            order: VecDeque::new(),
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
