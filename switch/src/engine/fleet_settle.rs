//! In a fleet, what follows the node's own decision on a card request: one
//! call to the fleet's store ([`FleetStore::settle`], one Redis round trip)
//! that claims the request's acquirer keys and, when the claim is this
//! node's, confirms an approval's card velocity; then what the claim's
//! outcome asks for.
//!
//! ```text
//! claim + velocity (one script)
//!   mine          velocity: counted | 65, 61 | lost: on_redis_down
//!   taken over    the same, then the journal: an original's answer wins,
//!                 and what this decision took is given back
//!   pending       nothing counted in Redis; wait for that node's answer:
//!                 its answer | lapsed meanwhile: 96 | no answer: on_redis_down
//!   answered      nothing counted in Redis; that answer (or 94)
//!   reversed      a reversal found no original first: 96, not recorded,
//!                 unless the journal holds it
//!   store away    on_redis_down: 91, not recorded | the journal, then the
//!                 node's own decision ("local")
//! ```
//!
//! A claim that is not this node's leaves the card's velocity in Redis
//! untouched (the script counts only for the claim's holder), and what the
//! node's actors reserved for it is given back: one decision per acquirer
//! keys across the fleet, one count per decision.

use std::sync::atomic::Ordering;

use protocol::domain::{Authorization, Decision, DeclineReason, Token};

use crate::engine::decide::{self, Decided};
use crate::engine::duplicates::{Check, Slot};
use crate::engine::fleet_claim::{CLAIM_PENDING_MS, Waited, read_answer, wait_for_answer};
use crate::engine::record::CardOutcome;
use crate::engine::world::World;
use crate::fleet::{Approval, Claim, FleetStore, OnRedisDown, Settled, Velocity};

/// What the fleet left to do with a request the node decided.
#[derive(Debug)]
pub(crate) enum Settle<'a> {
    /// This node's decision stands (its velocity confirmed, or the decline
    /// the fleet turned it into): record it.
    Record(Slot<'a>, Decided),
    /// Answered without recording this decision, whose velocity was given
    /// back: another node's answer, the journal's, or a refusal (91, 96).
    Answer(CardOutcome),
}

/// Claims the request's keys and confirms `decided`'s velocity in the
/// fleet, when there is one.
pub(crate) async fn settle<'a>(
    world: &World,
    mut slot: Slot<'a>,
    authorization: &Authorization,
    token: Token,
    decided: Decided,
) -> Settle<'a> {
    let Some(fleet) = world.fleet.as_deref() else {
        return Settle::Record(slot, decided);
    };
    let approval = decided.reservation.map(|reservation| Approval {
        token: reservation.token,
        amount: reservation.amount,
        at_ms: reservation.at_ms,
    });
    let settled = fleet
        .settle(slot.fleet_key(), CLAIM_PENDING_MS, approval)
        .await;
    let Settled { claim, velocity } = match settled {
        Ok(settled) => settled,
        Err(error) => {
            world.count_fleet_error();
            tracing::warn!(%error, "redis: the request could not be claimed or confirmed");
            if slot.fleet_key().is_none() {
                // Nothing to claim: only the velocity is unknown.
                let decided = velocity_unknown(world, fleet, decided).await;
                return Settle::Record(slot, decided);
            }
            return keys_unknown(world, fleet, slot, authorization, token, decided).await;
        }
    };
    let ask_journal = match claim {
        Claim::Mine => authorization.keys.is_some_and(|keys| keys.repeat),
        Claim::TakenOver => true,
        Claim::Answered(text) => {
            return match read_answer(&text, authorization) {
                Ok(first) => {
                    give_back(world, &decided).await;
                    Settle::Answer(slot.answered(world, first, token, authorization))
                }
                Err(()) => keys_unknown(world, fleet, slot, authorization, token, decided).await,
            };
        }
        Claim::Pending => {
            return wait(world, fleet, slot, authorization, token, decided).await;
        }
        Claim::Reversed => {
            return reversed_first(world, slot, authorization, token, decided).await;
        }
    };
    slot.hold_claim();
    let decided = match velocity {
        Velocity::NotAsked => decided,
        Velocity::Counted => Decided {
            reservation: decided.reservation.map(|reservation| decide::Reservation {
                in_fleet: true,
                ..reservation
            }),
            ..decided
        },
        Velocity::Declined(reason) => declined(world, decided, reason).await,
        Velocity::NotBuilt => velocity_unknown(world, fleet, decided).await,
    };
    if ask_journal {
        return from_journal(world, slot, authorization, token, decided).await;
    }
    Settle::Record(slot, decided)
}

/// Another node held the keys pending: its answer once it leaves one, with
/// what this node's actors took given back.
async fn wait<'a>(
    world: &World,
    fleet: &dyn FleetStore,
    mut slot: Slot<'a>,
    authorization: &Authorization,
    token: Token,
    decided: Decided,
) -> Settle<'a> {
    let Some(redis_key) = slot.fleet_key() else {
        return Settle::Record(slot, decided);
    };
    match wait_for_answer(world, fleet, redis_key, authorization).await {
        Ok(Waited::Answered(first)) => {
            give_back(world, &decided).await;
            Settle::Answer(slot.answered(world, first, token, authorization))
        }
        // Given up again at once, so the next copy is decided.
        Ok(Waited::Claimed) => {
            give_back(world, &decided).await;
            slot.hold_claim();
            let reason = DeclineReason::JournalUnavailable;
            Settle::Answer(slot.refused(world, authorization, token, reason).await)
        }
        Ok(Waited::Reversed) => reversed_first(world, slot, authorization, token, decided).await,
        Err(()) => keys_unknown(world, fleet, slot, authorization, token, decided).await,
    }
}

/// A reversal of these keys found no original and marked them before any
/// node claimed them: the original, arriving late, is not decided after
/// its reversal (96, not recorded; its velocity given back), unless the
/// journal holds it (Redis lost its keys since it was answered).
async fn reversed_first<'a>(
    world: &World,
    slot: Slot<'a>,
    authorization: &Authorization,
    token: Token,
    decided: Decided,
) -> Settle<'a> {
    give_back(world, &decided).await;
    match slot.look_in_journal(world, authorization, token).await {
        Check::New(slot) => {
            let reason = DeclineReason::JournalUnavailable;
            Settle::Answer(slot.refused(world, authorization, token, reason).await)
        }
        Check::Answered(outcome) | Check::Refused(outcome) => Settle::Answer(outcome),
    }
}

/// The fleet could not tell whose the request's keys are (Redis away, or
/// another node's claim pending past the wait): 91, not recorded
/// (`on_redis_down = "decline"`), or the shared journal is asked and the
/// node's own decision stands ("local").
async fn keys_unknown<'a>(
    world: &World,
    fleet: &dyn FleetStore,
    slot: Slot<'a>,
    authorization: &Authorization,
    token: Token,
    decided: Decided,
) -> Settle<'a> {
    match fleet.on_redis_down() {
        OnRedisDown::Decline => {
            give_back(world, &decided).await;
            let reason = DeclineReason::Overloaded;
            Settle::Answer(slot.refused(world, authorization, token, reason).await)
        }
        OnRedisDown::Local => {
            count_fallback(world, &decided);
            from_journal(world, slot, authorization, token, decided).await
        }
    }
}

/// The card's velocity in the fleet is unknown (Redis away, or its
/// velocity lost and not rebuilt yet): an approval stands on the node's
/// own limits ("local"), or is declined 91 and recorded ("decline").
async fn velocity_unknown(world: &World, fleet: &dyn FleetStore, decided: Decided) -> Decided {
    match fleet.on_redis_down() {
        OnRedisDown::Local => {
            count_fallback(world, &decided);
            decided
        }
        // A timed-out script may still have counted the approval in Redis;
        // it is not given back there, as that could remove another node's
        // approval. The card is over-counted until the bucket expires: a
        // spare decline, never an extra approval.
        OnRedisDown::Decline => declined(world, decided, DeclineReason::Overloaded).await,
    }
}

/// An approval kept on the node's own limits while Redis cannot confirm it.
fn count_fallback(world: &World, decided: &Decided) {
    if decided.reservation.is_some() {
        world
            .metrics
            .fleet_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("redis failed; deciding on local limits");
    }
}

/// `decided` turned into a decline for `reason`, its velocity given back.
async fn declined(world: &World, decided: Decided, reason: DeclineReason) -> Decided {
    give_back(world, &decided).await;
    Decided {
        decision: Decision::Declined { reason },
        reservation: None,
        ..decided
    }
}

/// The journal's original, if it holds one, answers instead of `decided`,
/// whose velocity is then given back.
async fn from_journal<'a>(
    world: &World,
    slot: Slot<'a>,
    authorization: &Authorization,
    token: Token,
    decided: Decided,
) -> Settle<'a> {
    match slot.look_in_journal(world, authorization, token).await {
        Check::New(slot) => Settle::Record(slot, decided),
        Check::Answered(outcome) | Check::Refused(outcome) => {
            give_back(world, &decided).await;
            Settle::Answer(outcome)
        }
    }
}

/// Gives back what `decided` took, in the actors and, if it was counted
/// there, in the fleet.
async fn give_back(world: &World, decided: &Decided) {
    if let Some(reservation) = decided.reservation {
        decide::give_back(world, reservation, true).await;
    }
}
