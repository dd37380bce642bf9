//! A request's acquirer keys claimed in Redis, so one node of the fleet
//! decides it and the others wait for that node's answer, and what the
//! claim's script says of the approval it confirms with it (`settle.rs`);
//! see `engine/fleet_claim.rs` for how the engine uses them.
//!
//! ```text
//! (nothing)  --claim-->  pending:<deadline>    Claim::Mine, or TakenOver if
//!                                              Redis may have lost the keys
//! pending, before its deadline                 a copy gets Claim::Pending and waits
//! pending past its deadline, or lapsed  --claim-->  pending   Claim::TakenOver
//! pending  --answer-->  the answer             a copy gets Claim::Answered
//! pending  --release--> lapsed
//! (nothing) --a reversal looks--> reversed   Claim::Reversed: not decided
//! ```
//!
//! A claim's key is kept for the duplicate window whatever it holds, and
//! `d:since` says since when Redis has held the fleet's claims (`since.rs`).
//! So a claim won over absent keys once that is a whole window ago
//! ([`Claim::Mine`]) means no node answered them, and the winner need not
//! ask the journal. A claim that lapsed (its node died, could not share its
//! answer, or gave it up unsure whether its record committed), or absent
//! keys Redis may have lost (a flush, a failover to an empty replica:
//! `d:since` is gone too, and set afresh), vouch for nothing: the winner gets
//! [`Claim::TakenOver`] and asks the journal first.
//! An eviction of a claim's key alone is not seen: give Redis memory enough
//! not to evict (`maxmemory-policy noeviction` makes it refuse instead).

use protocol::Amount;
use protocol::domain::{DeclineReason, Token};

/// What Redis holds for a request's acquirer keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node claimed the keys, which no node held within the duplicate
    /// window: it decides the request.
    Mine,
    /// This node claimed the keys, but Redis cannot vouch that no node
    /// answered them: another node's claim lapsed without an answer (that
    /// node may have recorded one), or Redis has not held the fleet's
    /// claims for a whole window (it may have lost them). The journal is
    /// asked before the request is decided.
    TakenOver,
    /// Another node is deciding it now.
    Pending,
    /// A reversal of it found no original before any node claimed it
    /// (`FleetStore::reversing`); nothing is claimed.
    Reversed,
    /// Another node answered it: its answer, as
    /// [`FleetStore::answer`](super::FleetStore::answer) wrote it.
    Answered(String),
}

/// The Redis key of a request's acquirer keys, with the owner they belong
/// to: the merchant (DE42, all 15 characters) and the acquirer a mutual-TLS
/// certificate named (empty for none; a name is never empty). Terminal ids
/// repeat across acquirers and merchants, so without the owner two of them
/// would share a key. The terminal is the hash tag, so one terminal's keys
/// share a Redis Cluster slot; the acquirer, the one part of varying length
/// that may hold a colon, comes last.
pub fn request_key(
    terminal_id: &str,
    stan: &str,
    transmitted_at: Option<&str>,
    merchant_id: &str,
    acquirer: Option<&str>,
) -> String {
    format!(
        "d:{{{terminal_id}}}:{stan}:{}:{merchant_id}:{}",
        transmitted_at.unwrap_or("-"),
        acquirer.unwrap_or_default()
    )
}

impl Claim {
    /// What the claim script (`CLAIM_LUA`) answered.
    pub(super) fn read(held: Option<String>) -> Claim {
        match held {
            None => Claim::Mine,
            Some(value) if value == "taken-over" => Claim::TakenOver,
            Some(value) if value == "pending" => Claim::Pending,
            Some(value) if value == "reversed" => Claim::Reversed,
            Some(answer) => Claim::Answered(answer),
        }
    }
}

/// An approval a node's card actors made, for the fleet to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub token: Token,
    pub amount: Amount,
    /// When it was decided: the buckets it counts in.
    pub at_ms: u64,
}

/// What the fleet did with an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Velocity {
    /// Nothing counted: there was no approval, or the claim is another
    /// node's.
    NotAsked,
    /// Within the card's global limits, and counted.
    Counted,
    /// Over a global limit (65, 61): nothing counted.
    Declined(DeclineReason),
    /// The store holds no whole generation of velocity (lost, being
    /// rebuilt): nothing counted, and `on_redis_down` applies.
    NotBuilt,
}

/// What one [`FleetStore::settle`](super::FleetStore::settle) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Who holds the request's keys; [`Claim::Mine`] for a request without
    /// keys (nothing to claim: this node decides it).
    pub claim: Claim,
    pub velocity: Velocity,
}

impl Claim {
    /// Whether this node now holds the keys (and decides the request).
    pub fn is_this_nodes(&self) -> bool {
        matches!(self, Claim::Mine | Claim::TakenOver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_share_the_terminal_hash_tag_and_name_their_owner() {
        assert_eq!(
            request_key(
                "TERM0001",
                "000042",
                Some("1122183000"),
                "ACME0000001    ",
                Some("north")
            ),
            "d:{TERM0001}:000042:1122183000:ACME0000001    :north"
        );
        assert_eq!(
            request_key("TERM0001", "000042", None, "ACME0000001    ", None),
            "d:{TERM0001}:000042:-:ACME0000001    :"
        );
    }
}
