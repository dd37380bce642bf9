//! The audit log: who did what, from where, and whether it was allowed,
//! in an append-only file (`data_dir/audit.log`, one JSON object a line)
//! whose entries are hash-chained, so an edit, a deletion or a reordering is
//! found by `switch audit verify`.
//!
//! ```text
//! {"seq":1,"time":"2026-11-22T21:30:00.000Z","actor":"switch","event":"switch.start",
//!  "outcome":"ok","origin":"local","resource":"iso=...,http=...",
//!  "prev_hash":"000…0","hash":"3f1c…"}
//! ```
//!
//! - `event.rs`: [`AuditEvent`], what callers record, and the [`events`]
//!   the switch names.
//! - `chain.rs`: the chain itself: how an event becomes an [`AuditEntry`]
//!   after the [`ChainHead`], and [`verify`], which walks a whole log and
//!   names the first line that breaks it ([`ChainError`]).
//! - `writer.rs`: [`Audit`], the handle callers hold, its writer thread,
//!   and the reading of the file's tail (to continue the chain on open and
//!   for `GET /admin/audit`).
//!
//! Callers never wait for the disk: [`Audit::record`] puts the event on a
//! bounded queue and returns; a dedicated thread takes every event waiting,
//! writes them with one `write` and one `fsync`, and goes back for more. If
//! the queue is full the event is dropped and counted
//! (`switch_audit_dropped_total`), so a flood of requests can neither block
//! the hot path nor grow memory. Rare events that must not be lost (start,
//! stop, key and configuration changes) use [`Audit::record_or_wait`].
//!
//! Nothing secret is ever recorded: the actor is a key's name and role,
//! never the key. A card number a client typed into a path would reach the
//! resource field, so the chain masks card numbers in every field
//! (`protocol::mask_pan_runs`) before an entry is hashed and written.
//!
//! What the chain cannot show by itself is the loss of the newest entries
//! (a truncated tail): the switch logs the chain's head (seq and hash) when
//! it stops, so a log kept elsewhere anchors it.

mod chain;
mod event;
mod writer;

pub use chain::{AuditEntry, ChainError, ChainHead, verify};
pub use event::{AuditEvent, LOCAL_ORIGIN, SYSTEM_ACTOR, events};
pub use writer::{Audit, AuditError, AuditOptions};
