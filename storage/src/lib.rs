//! Durable state of the switch: the transaction journal and the token vault.
//! It never decides an authorization; it records what was decided, durably,
//! before the answer leaves.
//!
//! The modules, in the order a record flows through them:
//!
//! - [`vault`]: [`Vault::tokenize`] turns a PAN into its [`Token`] by keyed
//!   hash (no I/O, on the hot path); [`Vault::seal_if_new`] encrypts a PAN
//!   not yet stored with AES-256-GCM under a versioned key, as a rider on
//!   the journal record.
//! - [`record`]: [`JournalRecord`], everything one transaction leaves on
//!   disk (token, BIN, last four, keys, decision, timings), with no field for
//!   a PAN in clear, track data, CVV or PIN block; and the rows reads give
//!   back.
//! - [`journal`]: group commit. [`Journal::append`] queues a record in a
//!   bounded queue; one writer task per backend connection writes every
//!   waiting record in one transaction through a [`JournalBackend`], commits,
//!   and only then answers each caller. [`Journal::claim`] claims an HTTP
//!   request's idempotency key through the same writers before the request
//!   is decided; a record whose key another request holds is never written.
//! - The backends, each a [`JournalBackend`] for the writer and a
//!   [`StoreReader`] and [`VaultMaintenance`] for the rest, written once:
//!   - [`sqlite`]: the embedded default, SQLite in WAL mode: the writer
//!     connection with multi-row inserts, versioned schema migrations, and
//!     [`SqliteStore`], the read pool;
//!   - [`postgres`]: the server backend shared by a fleet, PostgreSQL 15 or
//!     Aurora: several writer connections, one statement per batch, and
//!     [`PostgresStore`];
//!   - [`log`]: the embedded segment log, an append-only file of
//!     checksummed frames, one `write` and one `fdatasync` per batch, its
//!     reads answered from tables in memory rebuilt at start, and
//!     [`LogStore`];
//!   - `memory` (feature `memory`, for tests): the same tables in memory,
//!     with controls to fail, hold or lose a batch and to crash.
//!
//!   The log and the memory backend keep their state in one set of tables
//!   with indexes (`tables`), which follows the SQL backends' rules.
//!
//!   Both SQL backends decode rows with one set of decoders (`columns`) and
//!   read the wall clock in one place (`clock`).
//! - [`store`]: [`StoreReader`], the lookups by index (transaction by id,
//!   original by acquirer keys, idempotency entry, sealed PAN) and the paged
//!   replay of approvals that rebuilds velocity windows at start.
//! - [`AnyStore`]: whichever backend the switch was configured with, as one
//!   cloneable handle ([`AnyStore::new`]).
//! - [`rewrap`]: after a key rotation, [`rewrap_batch`] moves vault rows to
//!   the active key a bounded batch at a time, with a compare-and-set so a
//!   concurrent change is never overwritten; [`VaultMaintenance`] is what a
//!   backend provides for it.
//! - [`error`]: [`StorageError`], naming what failed and never carrying card
//!   data, and [`JournalError`], the answer one append gets.
//!
//! - `baseline` (feature `baseline`, built for loadtest only): the
//!   database's own limits (`K_copy`, `K_1`, `L_1`) for benchmarks, measured
//!   beside the journal's figures.
//!
//! [`Token`]: protocol::domain::Token

// Declared first: the macro it defines (`transaction_columns!`) is then in
// scope in every module below.
#[macro_use]
mod columns;

mod any_store;
#[cfg(feature = "baseline")]
pub mod baseline;
mod claim_plan;
mod clock;
mod convert;
pub mod error;
pub mod journal;
pub mod log;
#[cfg(feature = "memory")]
pub mod memory;
pub mod postgres;
pub mod record;
pub mod rewrap;
pub mod sqlite;
pub mod store;
mod tables;
pub mod vault;

pub use any_store::AnyStore;
pub use error::{JournalError, StorageError};
pub use journal::{
    BATCH_ROWS_BOUNDS, COMMIT_TIME_BOUNDS_US, Journal, JournalBackend, JournalConfig, JournalStats,
};
pub use log::{LogConfig, LogStore};
pub use postgres::{PostgresConfig, PostgresStore, PostgresWriter};
pub use record::{
    AppendOutcome, ClaimOutcome, IdempotencyClaim, IdempotencyEntry, JournalRecord, KeyClaim,
    OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan, StageTimings, StoredTransaction,
    bin_and_last4,
};
pub use rewrap::{
    REWRAP_BATCH_ROWS_MAX, RewrapBatch, Rewrapped, VaultMaintenance, VerifyReport, rewrap_batch,
    verify_all,
};
pub use sqlite::SqliteStore;
pub use store::{ReplayPages, StoreFuture, StoreReader, replay_approved};
pub use vault::{DigestPurpose, KeyringChange, KeyringView, Vault, VaultKeys, fill_random};
