//! An HTTP request's `Idempotency-Key`, as one step of a transaction's life
//! ([`Engine::authorize_idempotent`](crate::engine::Engine::authorize_idempotent)):
//!
//! ```text
//! key in flight on this node?                  -> InProgress (409), at once
//! claim (merchant, key digest, request digest, transaction id, now)
//!   in the journal's store, through the group commit:
//!     answered        -> the stored reply (same request) | KeyReused (422)
//!     claimed by a request within CLAIM_STALE_AFTER_MS  -> InProgress (409)
//!     free, or claimed longer ago (its node died)        -> this request's
//! decide and record; the commit stores the reply and completes the claim
//!   only while the claim is still this request's:
//!     written                    -> Decided
//!     refused (claim taken over) -> nothing written, velocity given back,
//!                                   the stored reply or InProgress (409)
//! an answer asking for a retry (503) -> the claim is released
//! ```
//!
//! The in-memory set answers a second request on the same node without a
//! round trip to the store; the durable claim is what holds across nodes
//! (two switches on one PostgreSQL) and across a client that gives up.

use std::collections::HashSet;
use std::sync::Mutex;

use protocol::domain::{Decision, TransactionId};
use storage::{ClaimOutcome, IdempotencyClaim, IdempotencyEntry, StoreReader};

use crate::engine::record::{CardOutcome, IdempotencyRequest};
use crate::engine::world::World;

/// How long a claim holds its key with no answer before a retry may take
/// it over: ten seconds. Longer than a request takes from its claim to its
/// commit while the switch is alive (the journal's and PostgreSQL's
/// statement timeouts are a few seconds), so a claim is taken over when its
/// node died, or its request is stuck past every timeout. Taking over a
/// live request is still safe, only unkind: its late record is refused,
/// its velocity given back, and its client answered 409, whose retry gets
/// the stored reply. Short, because a client retrying after a switch was
/// killed gets 409 until then (measured by the crash test: with a minute,
/// web clients still had no answer 30 s after the restart). Not
/// configurable: nothing an operator tunes makes another bound safer.
pub const CLAIM_STALE_AFTER_MS: u64 = 10_000;

/// What an authorization with an idempotency key is answered.
#[derive(Debug, Clone)]
pub enum Idempotent {
    /// Decided now (the outcome may ask for a retry: 503).
    Decided(CardOutcome),
    /// Answered before: the stored reply, byte for byte.
    Replayed { status: u16, body: String },
    /// Another request with the key is being decided, here or on another
    /// node: 409.
    InProgress,
    /// The key was used with another request: 422.
    KeyReused,
    /// The key could not be claimed (the journal is full or failing):
    /// 503, nothing decided.
    Unavailable,
}

/// Keys being decided on this node: (merchant, key digest).
#[derive(Debug, Default)]
pub(crate) struct KeysInFlight {
    keys: Mutex<HashSet<(String, String)>>,
}

impl KeysInFlight {
    /// Marks the request's key in flight, or `None` if it already is.
    pub(crate) fn enter(&self, request: &IdempotencyRequest) -> Option<InFlight<'_>> {
        let key = (request.merchant_id.clone(), request.key.clone());
        let entered = self
            .keys
            .lock()
            .map(|mut keys| keys.insert(key.clone()))
            .unwrap_or(false);
        // `then`, not `then_some`: a guard built for a refused request would
        // free the key of the request that holds it when dropped.
        entered.then(|| InFlight { keys: self, key })
    }
}

/// A key in flight, freed when dropped, on every exit (a cancelled task
/// included).
pub(crate) struct InFlight<'a> {
    keys: &'a KeysInFlight,
    key: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

/// Claims `request`'s key for transaction `id` in the journal's store;
/// `Err` is the answer when the key is not this request's to decide.
pub(crate) async fn claim(
    world: &World,
    request: &IdempotencyRequest,
    id: TransactionId,
    now_ms: u64,
) -> Result<(), Idempotent> {
    let claim = IdempotencyClaim {
        merchant_id: request.merchant_id.clone(),
        key: request.key.clone(),
        request_hash: request.request_hash,
        claimed_by: id,
        claimed_at_ms: now_ms,
        stale_before_ms: now_ms.saturating_sub(CLAIM_STALE_AFTER_MS),
    };
    match world.journal.claim(claim).await {
        Ok(ClaimOutcome::Claimed { took_over: None }) => Ok(()),
        Ok(ClaimOutcome::Claimed {
            took_over: Some(stale),
        }) => {
            tracing::warn!(%stale, "an idempotency claim with no answer for a minute was taken over");
            Ok(())
        }
        Ok(ClaimOutcome::InFlight) => Err(Idempotent::InProgress),
        Ok(ClaimOutcome::Answered(entry)) => Err(stored(&entry, request.request_hash)),
        Ok(ClaimOutcome::Released) => Err(Idempotent::Unavailable),
        Err(error) => {
            tracing::warn!(%error, "an idempotency key could not be claimed; answering 503");
            Err(Idempotent::Unavailable)
        }
    }
}

/// The answer to a request whose record was refused because another
/// request took its key over: that request's stored reply, or 409 while it
/// is still being decided.
pub(crate) async fn after_key_taken(
    world: &World,
    merchant_id: &str,
    key: &str,
    request_hash: [u8; 32],
) -> Idempotent {
    match world.store.idempotent_response(merchant_id, key).await {
        Ok(Some(entry)) => stored(&entry, request_hash),
        Ok(None) => Idempotent::InProgress,
        Err(error) => {
            tracing::warn!(%error, "idempotency lookup failed");
            Idempotent::InProgress
        }
    }
}

/// Gives back the claim `claimed_by` holds after an answer that asks for a
/// retry, so the retry is decided afresh. Only that request's claim is
/// released: a record that did commit (an ambiguous commit read back) has
/// completed it already, and one taken over is another's. A claim that
/// cannot be released (the journal failing) goes stale after
/// [`CLAIM_STALE_AFTER_MS`] and is taken over.
pub(crate) async fn release_if_retry(
    world: &World,
    outcome: &CardOutcome,
    merchant_id: String,
    key: String,
    claimed_by: TransactionId,
) {
    if !matches!(outcome.decision, Decision::Declined { reason } if reason.asks_for_retry()) {
        return;
    }
    if let Err(error) = world.journal.release(merchant_id, key, claimed_by).await {
        tracing::warn!(%error, "an idempotency claim could not be released; it goes stale in a minute");
    }
}

/// A stored reply, for the same request; 422 for another.
fn stored(entry: &IdempotencyEntry, request_hash: [u8; 32]) -> Idempotent {
    if entry.request_hash == request_hash {
        Idempotent::Replayed {
            status: entry.status,
            body: entry.response_json.clone(),
        }
    } else {
        Idempotent::KeyReused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str) -> IdempotencyRequest {
        IdempotencyRequest {
            merchant_id: "ACME0000001".to_owned(),
            key: key.to_owned(),
            request_hash: [1; 32],
            render: |_| (201, String::new()),
        }
    }

    /// A key stays in flight until its holder is done, however many other
    /// requests with it are refused meanwhile.
    #[test]
    fn a_refused_request_never_frees_the_holders_key() {
        let keys = KeysInFlight::default();
        let held = keys.enter(&request("a"));
        assert!(held.is_some());
        for _ in 0..3 {
            assert!(keys.enter(&request("a")).is_none());
        }
        assert!(keys.enter(&request("b")).is_some(), "another key is free");
        drop(held);
        assert!(
            keys.enter(&request("a")).is_some(),
            "free once its holder is done"
        );
    }
}
