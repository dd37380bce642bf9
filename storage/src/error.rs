//! The crate's errors.
//!
//! [`StorageError`] is what a backend or the vault reports: it names the
//! operation, table or key that failed and never carries card data (no PAN,
//! no decrypted bytes; sqlx's own messages name tables and constraints, never
//! bound values). [`JournalError`] is the small, copyable answer one
//! `Journal::append` gets: the switch maps it to a response code, and the
//! writer logs the underlying `StorageError` once per batch instead of once
//! per waiter.

use std::path::PathBuf;

/// Something in the storage layer is broken or was given bad input.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database file could not be opened or configured.
    #[error("opening the database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// The journal's writer thread could not be started.
    #[error("starting the journal's writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    /// A schema migration failed; the database is left at the version before it.
    #[error("schema migration {version} ({name}): {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The file was migrated by a newer build; refusing to write to it.
    #[error("the database has schema version {found}, newer than the {known} this build knows")]
    SchemaTooNew { found: i64, known: i64 },
    /// A statement failed.
    #[error("{operation}: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A batch wrote a different number of rows than it holds records: the
    /// transaction is rolled back rather than acknowledging a partial batch.
    #[error("a batch of {expected} records wrote {written} rows to {table}")]
    RowCount {
        table: &'static str,
        expected: usize,
        written: u64,
    },
    /// A stored value this build cannot read back.
    #[error("{table}.{column} holds a value this build cannot read")]
    Corrupt {
        table: &'static str,
        column: &'static str,
    },
    /// The segment log's file system call failed.
    #[error("{operation} ({path}): {source}")]
    Log {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A segment of the log is damaged somewhere a crash cannot have torn
    /// it (not the tail of the last segment): the switch does not start on
    /// it, since going on would lose what follows.
    #[error(
        "the journal segment {path} is corrupt at byte {offset}: {why}; refusing to start (only a torn tail of the last segment is cut off by itself)"
    )]
    LogCorrupt {
        path: PathBuf,
        offset: u64,
        why: &'static str,
    },
    /// An `fdatasync` of the log failed earlier: what reached the disk is
    /// unknown, so the log takes no more writes until a restart reads it.
    #[error("the journal {path} failed to sync earlier and takes no more writes until restarted")]
    LogFailed { path: PathBuf },
    /// A record that must not be written (see `JournalRecord::validate`).
    #[error("record refused: {field}: {reason}")]
    InvalidRecord {
        field: &'static str,
        reason: &'static str,
    },
    /// The vault keys given at start are unusable.
    #[error("vault keys: {0}")]
    Keys(&'static str),
    /// A key rotation would remove a key that stored PANs still use.
    #[error(
        "vault key {key_id} cannot be removed: stored PANs are still sealed under it; rewrap them first"
    )]
    KeyInUse { key_id: u32 },
    /// A key rotation would remove the key new PANs are sealed under now.
    #[error(
        "vault key {key_id} is the active key and cannot be removed in the same reload; make another key active first"
    )]
    KeyActive { key_id: u32 },
    /// A key rotation gives a known key id a different key.
    #[error("vault key id {key_id} now names a different key; a key id names one key for ever")]
    KeyChanged { key_id: u32 },
    /// A sealed PAN names an encryption key this process was not given.
    #[error("vault key {key_id} is not configured")]
    UnknownKey { key_id: u32 },
    /// Encrypting a PAN failed.
    #[error("sealing a PAN under vault key {key_id} failed")]
    Seal { key_id: u32 },
    /// A sealed PAN failed authentication: tampered, moved to another token,
    /// or sealed under a different key with the same id.
    #[error("a sealed PAN under vault key {key_id} failed authentication")]
    Unseal { key_id: u32 },
}

impl StorageError {
    /// Wraps a sqlx error with the operation that failed.
    pub(crate) fn database(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
        move |source| StorageError::Database { operation, source }
    }
}

/// Why one `Journal::append` did not record its record.
///
/// | error            | meaning                                   | the switch answers          |
/// |------------------|-------------------------------------------|-----------------------------|
/// | `QueueFull`      | shed at once, nothing written             | 91, or HTTP 503             |
/// | `Expired`        | its deadline came first, nothing written  | 91, or HTTP 503             |
/// | `Unavailable`    | the batch did not commit, nothing written | 96, or HTTP 503             |
/// | `Closed`         | the journal is shutting down              | 96, or HTTP 503             |
/// | `InvalidRecord`  | a bug in the caller: the record is refused | 96, and log it             |
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The bounded queue in front of the writer is full.
    #[error("the journal queue is full")]
    QueueFull,
    /// The record's deadline ([`Journal::append_by`](crate::Journal::append_by))
    /// came before the writer could commit it: it was not written.
    #[error("the record's deadline passed before the journal could commit it")]
    Expired,
    /// The batch holding this record was not confirmed committed. Usually
    /// none of it is on disk, but a commit whose answer was lost (a dropped
    /// connection or a passed deadline after COMMIT was sent) may have
    /// committed: read the record back before telling anyone it failed.
    #[error("the journal could not commit")]
    Unavailable,
    /// The journal was closed, or its writer is gone.
    #[error("the journal is closed")]
    Closed,
    /// The record breaks a rule of the journal and was not queued.
    #[error("record refused: {field}: {reason}")]
    InvalidRecord {
        field: &'static str,
        reason: &'static str,
    },
}
