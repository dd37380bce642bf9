//! The embedded backend: SQLite in WAL mode, one file under the data
//! directory, no server to install.
//!
//! [`SqliteStore::open`] opens one dedicated writer connection, runs the
//! schema migrations on it, hands it to the journal's writer task, and opens
//! a small pool of read-only connections for lookups. In WAL mode readers
//! never block the writer and the writer never blocks readers, so a
//! `GET /v1/transactions/{id}` does not stall a commit.
//!
//! The modules, in the order a record flows through them:
//!
//! - `writer`: the journal's writer connection, one transaction per batch
//!   of multi-row `INSERT`s.
//! - `claims`: idempotency keys claimed before their request is decided,
//!   on the writer's connection, and the checks a batch makes of them.
//! - `schema`: the versioned migrations.
//! - `store`: [`SqliteStore::open`], which starts both sides.
//! - `reads`: [`SqliteStore`] answering [`StoreReader`](crate::StoreReader).
//! - `rewrap`: [`SqliteStore`] answering
//!   [`VaultMaintenance`](crate::VaultMaintenance).

mod claims;
mod reads;
mod rewrap;
pub(crate) mod schema;
mod store;
mod writer;

pub use store::SqliteStore;
