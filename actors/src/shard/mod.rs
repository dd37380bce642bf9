//! Shard actors: one tokio task per shard, each owning the cards and merchants
//! whose keys hash to it, fed by a bounded mailbox.
//!
//! A shard handles one message to completion before the next, so a card's
//! windows change in the order its requests reached the shard, and no state is
//! shared: the shard owns its maps, so no lock. [`Shards`] is the handle the
//! ingress holds; it picks the shard by the entity's key and carries the
//! answer back on a oneshot channel.
//!
//! A decision visits the card's shard, then the merchant's. When both keys
//! land on one shard the two steps are one message, decided atomically; when
//! they differ, the card's reservation is held by a guard that gives it back
//! if the merchant declines or its mailbox is full. If the asker stops
//! waiting (its future is dropped, say by a timeout), a step not yet answered
//! is undone by the shard, which finds nobody to answer, and an approval
//! answered but not yet read is given back by the future's guards. So no path
//! leaves a reservation counted that nobody will journal.
//!
//! Shards never wait on one another: only the handle sends, so every mailbox
//! drains, and a give-back may wait for room without any risk of deadlock.
//!
//! The files, in the order a request passes through them:
//!
//! - `config`, `request`: what the shards are started with, the [`Limits`]
//!   each decision carries, and what the ingress asks them ([`ShardConfig`];
//!   [`CardCheck`], [`GiveBack`], [`Restore`]).
//! - `handle`: [`Shards`], which starts the shard tasks, routes each step to
//!   the shard that owns its key, sheds when a mailbox is full, and guards a
//!   reservation until its answer is heard.
//! - `hash`: which shard owns a key, and the hasher of the shards' maps.
//! - `message`: what a mailbox carries from the handle to a shard.
//! - `actor`: one shard's task, which takes its mailbox in batches and
//!   decides, gives back and restores against the state it owns.
//! - `cards`: a shard's table of cards, and the sweep that evicts idle ones.
//! - `stats`: what the shards count and the handle reports ([`ShardStats`]).

mod actor;
mod cards;
mod config;
mod handle;
mod hash;
mod message;
mod request;
mod stats;

pub use cards::CARD_SLOT_BYTES;
pub use config::{Limits, ShardConfig};
pub use handle::Shards;
pub use request::{CardCheck, GiveBack, Restore};
pub use stats::{ShardLoad, ShardStats};
