//! The server backend: PostgreSQL 15, or Aurora PostgreSQL, shared by every
//! switch node of a fleet.
//!
//! [`PostgresStore::open`] migrates the schema (under an advisory lock, so
//! nodes starting together migrate once), opens `writer_connections`
//! dedicated writer connections and hands them to the journal
//! ([`Journal::start_many`](crate::Journal::start_many)), and opens a small
//! pool of read connections for lookups. The SQL is plain PostgreSQL 15: no
//! extensions, nothing Aurora refuses.
//!
//! The modules, in the order a record flows through them:
//!
//! - `session`: [`PostgresConfig`] and how every connection is opened: the
//!   session settings and a connect bounded in time.
//! - `writer`: [`PostgresWriter`], one connection, one statement per batch:
//!   alone, its own transaction, for a batch without idempotency keys whose
//!   ids and originals are all free; otherwise in a transaction with
//!   `ON CONFLICT DO NOTHING`, so a batch retried after a lost connection
//!   leaves nothing twice; it decides each record's outcome.
//! - `batch`: that statement (a multi-row insert per table from `UNNEST`
//!   arrays) in its two forms, and the batch laid out as its arrays.
//! - `claims`: idempotency keys claimed before their request is decided,
//!   on a writer connection, and the checks a batch makes of them.
//! - `schema`: the versioned migrations.
//! - `store`: [`PostgresStore::open`], which starts both sides, and the
//!   time bound on every read.
//! - `reads`: [`PostgresStore`] answering [`StoreReader`](crate::StoreReader).
//! - `rewrap`: [`PostgresStore`] answering
//!   [`VaultMaintenance`](crate::VaultMaintenance).
//!
//! A database that goes away fails a batch within the configured timeouts
//! instead of hanging: `statement_timeout` and `lock_timeout` on the server,
//! and a deadline on the client for a server that no longer answers at all.

mod batch;
mod claims;
mod reads;
mod rewrap;
pub(crate) mod schema;
mod session;
mod store;
mod writer;

pub use session::{PostgresConfig, READER_APPLICATION_NAME, WRITER_APPLICATION_NAME};
pub use store::PostgresStore;
pub use writer::PostgresWriter;
