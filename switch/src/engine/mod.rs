//! The path every card request and reversal takes, whichever ingress it came
//! in on. The ingresses turn their wire into a domain
//! [`Authorization`](protocol::domain::Authorization) or
//! [`Reversal`](protocol::domain::Reversal) and the outcome back into their
//! reply; nothing here knows a wire beyond recording a request's channel.
//!
//! ```text
//! Engine::replay()                                        replay.rs
//!   the journal's last 24 h of approvals -> actors, page by page; until
//!   it is done authorize and reverse answer 91 and decide nothing
//!
//! Engine::authorize(Authorization, Received)              authorize.rs
//!   token = vault.tokenize(PAN)                  once per request
//!   duplicates.check -> New(slot) | Answered(first) | Refused   duplicates.rs
//!   decide, by the Policy the ingress took (policy.rs): acquirer
//!           permit, rules, card and merchant shards,
//!           fleet confirmation -> Decision + Reservation          decide.rs
//!   vault.seal_if_new_with_token, Draft -> JournalRecord          record.rs
//!   journal append (group commit)
//!     committed: slot.recorded  -> retransmissions get this answer
//!     failed:    give the Reservation back, slot.not_recorded (96, 91)
//!     refused (a keyed record whose claim was taken over): nothing
//!                written, the Reservation given back
//!   -> CardOutcome, only after the commit
//!
//! Engine::authorize_idempotent(.., IdempotencyRequest)   authorize.rs
//!   in flight here? 409; claim the key in the journal's store  idempotency.rs
//!     answered -> stored reply | 422; claimed, not stale -> 409
//!   authorize as above, the record completing the claim
//!   an answer asking for a retry releases the claim
//!   -> Idempotent
//!
//! Engine::reverse(Reversal, acquirer)                     reverse.rs
//!   acquirer permit -> original by keys or id -> Draft -> journal
//!   -> first reversal of an approved original: give back min(amount, original)
//!   -> ReversalOutcome
//! ```
//!
//! The engine reaches the world only through `World` (`world.rs`): a wall
//! clock (`actors::Clock`), a [`Random`] source for ids and auth codes, the
//! actors, the vault, the journal and its reader, and a
//! [`FleetStore`](crate::fleet::FleetStore), so tests drive it in-process
//! with a manual clock and in-memory stores. Monotonic stage times come from
//! [`crate::clock`].
//!
//! - `parts.rs`: what an engine is built from, and readiness.
//! - `policy.rs`: [`Policy`], the rules, limits and admission rates a
//!   request is decided by, one snapshot that a configuration reload
//!   swaps whole.
//! - `ids.rs`: transaction ids and auth codes from the random source.
//! - `duplicate_key.rs`: the keys a request is known by, with its owner
//!   (merchant, acquirer), as the duplicate check and reversals match them.
//! - `fleet_claim.rs`: a request's keys claimed in Redis, and the answers
//!   nodes share there (used by `duplicates.rs` and `fleet_settle.rs`).
//! - `fleet_settle.rs`: in a fleet, after the node's decision, one Redis
//!   call claims the request's keys and confirms its velocity.
//! - [`acquirer`]: who sent a request over mutual TLS, and what it may send.

pub mod acquirer;
mod authorize;
mod decide;
mod duplicate_key;
mod duplicates;
mod fleet_claim;
mod fleet_settle;
mod idempotency;
mod ids;
mod parts;
mod policy;
mod record;
mod replay;
mod reverse;
mod world;

pub use authorize::Received;
pub use idempotency::{CLAIM_STALE_AFTER_MS, Idempotent};
pub use ids::{OsRandom, Random, SeededRandom};
pub use parts::{Engine, EngineParts};
pub use policy::Policy;
pub use record::{CardOutcome, IdempotencyRequest, ReversalOutcome, ReversalRefusal};
