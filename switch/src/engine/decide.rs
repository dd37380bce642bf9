//! The decision on a card request, and the velocity it takes:
//!
//! ```text
//! acquirer permit (58) -> rules (14, 54, 13, 57)
//!   -> card and merchant shards (65, 61; 03, 13, 58, 61; 91 when shed)
//!   -> Decision, and the Reservation to give back if it is not recorded
//! ```
//!
//! In a fleet this is the node's own decision: Redis then confirms an
//! approval's card velocity in the same call that claims the request's
//! keys (`fleet_settle.rs`).
//!
//! An approval counts in the card's and merchant's windows at once; nothing
//! may stay counted that is not on disk, so the caller gives the
//! [`Reservation`] back when the record fails, and a reversal gives its
//! original's back the same way.

use actors::{CardCheck, GiveBack};
use protocol::Amount;
use protocol::domain::{Authorization, Decision, DeclineReason, Token};
use protocol::ids::MerchantId;

use crate::clock::Stopwatch;
use crate::engine::acquirer::Acquirer;
use crate::engine::ids;
use crate::engine::policy::Policy;
use crate::engine::world::World;
use crate::ops::metrics::{Shed, Stage};

/// Velocity an approval counted: what is given back if it is not recorded,
/// or when it is reversed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub(crate) token: Token,
    pub(crate) merchant_id: MerchantId,
    pub(crate) amount: Amount,
    /// When it was counted: a give-back finds the buckets by this time.
    pub(crate) at_ms: u64,
    /// Also counted in the fleet's store, so given back there too.
    pub(crate) in_fleet: bool,
}

/// A card request decided.
#[derive(Debug)]
pub(crate) struct Decided {
    pub(crate) decision: Decision,
    /// When it was decided: the record is journaled with this instant, so a
    /// later give-back finds the buckets the approval was counted in.
    pub(crate) at_ms: u64,
    /// What an approval took; `None` for a decline.
    pub(crate) reservation: Option<Reservation>,
    pub(crate) decide_us: u64,
}

/// Decides `authorization` for the card `token` by `policy`'s rules and
/// limits. A request from a mutual-TLS
/// `acquirer` for a merchant or terminal not its own is declined without
/// asking the actors.
pub(crate) async fn decide(
    world: &World,
    policy: &Policy,
    authorization: &Authorization,
    token: Token,
    acquirer: Option<&Acquirer>,
) -> Decided {
    let deciding = Stopwatch::start();
    let at_ms = world.clock.now_ms();
    let permitted = acquirer.is_none_or(|acquirer| {
        acquirer.permits(&authorization.merchant_id, &authorization.terminal_id)
    });
    let local = match actors::check_rules(authorization, &policy.rules, at_ms) {
        // Before the rules' answer is used and before the actors: a merchant
        // or terminal that is not this acquirer's takes no card's or
        // merchant's velocity.
        _ if !permitted => Decision::Declined {
            reason: DeclineReason::AcquirerNotPermitted,
        },
        Err(reason) => Decision::Declined { reason },
        Ok(()) => match world
            .shards
            .decide_at(
                CardCheck {
                    token,
                    merchant_id: authorization.merchant_id,
                    mcc: authorization.mcc,
                    amount: authorization.amount,
                },
                at_ms,
                &policy.limits,
            )
            .await
        {
            Ok(()) => Decision::Approved {
                auth_code: ids::auth_code(world.random.as_ref()),
            },
            Err(reason) => Decision::Declined { reason },
        },
    };
    if local
        == (Decision::Declined {
            reason: DeclineReason::Overloaded,
        })
    {
        world
            .metrics
            .count_shed(authorization.channel, Shed::Mailbox);
    }
    let reservation = local.is_approved().then_some(Reservation {
        token,
        merchant_id: authorization.merchant_id,
        amount: authorization.amount,
        at_ms,
        in_fleet: false,
    });
    let decide_us = deciding.elapsed_us();
    world
        .metrics
        .record(authorization.channel, Stage::Decide, decide_us);
    Decided {
        decision: local,
        at_ms,
        reservation,
        decide_us,
    }
}

/// Gives back the velocity `reservation` counted: in the shards, and in the
/// fleet's store if it was counted there. `whole`: all of the approval, so
/// it stops counting as a transaction; else a partial reversal's amount,
/// which leaves it counted once on its card.
pub(crate) async fn give_back(world: &World, reservation: Reservation, whole: bool) {
    world
        .shards
        .give_back(GiveBack {
            token: reservation.token,
            merchant_id: reservation.merchant_id,
            amount: reservation.amount,
            original_at_ms: reservation.at_ms,
            whole,
        })
        .await;
    // A failure leaves the card over-counted until its bucket expires: a
    // spare decline, never an extra approval.
    if reservation.in_fleet
        && let Some(fleet) = &world.fleet
        && let Err(error) = fleet
            .give_back(
                reservation.token,
                reservation.amount,
                whole,
                reservation.at_ms,
            )
            .await
    {
        world.count_fleet_error();
        tracing::warn!(%error, "redis give-back failed; the card stays counted until its bucket expires");
    }
}
