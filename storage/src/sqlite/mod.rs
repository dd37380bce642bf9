//! The embedded backend: SQLite in WAL mode, one file under the data
//! directory, no server to install.
//!
//! [`SqliteStore::open`] opens one dedicated writer connection, runs the
//! schema migrations on it, hands it to the journal's writer task, and opens
//! a small pool of read-only connections for lookups. In WAL mode readers
//! never block the writer and the writer never blocks readers, so a
//! `GET /v1/transactions/{id}` does not stall a commit.

/// The columns of `transactions`, in the writer's bind order; a macro so
/// that SQL text can be built with `concat!` at compile time.
macro_rules! transaction_columns {
    () => {
        "id, created_at_ms, channel, kind, mti, processing_code, amount_minor, \
         currency_numeric, merchant_id, terminal_id, stan, rrn, transmitted_at, token, bin, \
         last4, response_code, auth_code, reason, original_id, decode_us, decide_us, vault_us, \
         acquirer"
    };
}

mod reads;
mod rewrap;
pub(crate) mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection};

use crate::error::StorageError;
use crate::journal::{Journal, JournalConfig};
use writer::SqliteJournalWriter;

/// Read connections. Lookups are single index probes that finish in tens of
/// microseconds, so a few connections (each with its own sqlx worker thread)
/// serve a 2-core machine; more would only add threads.
const READ_CONNECTIONS: u32 = 4;

/// The read side of the embedded backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// For the vault rewrap's short write transactions, beside the journal
    /// writer (see `rewrap`).
    /// Boxed: the options are large and the store is cloned and moved.
    write_options: std::sync::Arc<SqliteConnectOptions>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, migrates it, and
    /// starts the journal writer on the current tokio runtime.
    ///
    /// Re-opening an existing file is fine: migrations already applied are
    /// skipped. The directory must exist.
    pub async fn open(
        path: &Path,
        config: JournalConfig,
    ) -> Result<(Journal, SqliteStore), StorageError> {
        let opened = |source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_millis(u64::from(config.busy_timeout_ms)))
            .foreign_keys(true);
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The switch answers only after `append` returns, and `append`
            // returns only after COMMIT. In WAL mode `synchronous = NORMAL`
            // fsyncs only at checkpoints, so a committed batch could vanish
            // with a power cut after its approvals were sent. FULL fsyncs the
            // WAL on every commit; group commit pays that once per batch.
            .synchronous(SqliteSynchronous::Full)
            // 64 MiB of page cache for the writer (SQLite's default is 2 MiB):
            // the vault's and the acquirer-key index's inserts land on random
            // pages, and re-reading them from the file on every batch showed
            // in the profile. Measured with `loadtest bench`: S_rr 7 000/s ->
            // 9 700/s, S_pipe 11 800/s -> 17 200/s (noisy, same machine).
            .pragma("cache_size", "-65536")
            // A multi-row INSERT inside the batch's transaction keeps a
            // statement journal (to undo that statement alone); by default it
            // is a temporary file, and writing it showed in the profile. In
            // memory it costs no system call, and durability does not depend
            // on it (the WAL does). Measured with two runs each of a closed
            // loop, 64 x 4: 16 500 -> 19 200 requests/s, 60 -> 51 us of CPU
            // per request.
            .pragma("temp_store", "memory");
        let mut conn = SqliteConnection::connect_with(&writer_options)
            .await
            .map_err(opened)?;
        schema::migrate(&mut conn, &writer_options).await?;
        // Opened after the writer, which has made the file and its WAL.
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(Duration::from_millis(
                u64::from(config.busy_timeout_ms).max(1000),
            ))
            .connect_with(base.read_only(true))
            .await
            .map_err(opened)?;
        let write_options = std::sync::Arc::new(writer_options.clone());
        let journal = Journal::start(SqliteJournalWriter::new(conn, writer_options), &config);
        Ok((
            journal,
            SqliteStore {
                pool,
                path: path.to_path_buf(),
                write_options,
            },
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the read connections. Close the journal too
    /// ([`Journal::close`]) to checkpoint and release the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A `u64` for a SQLite INTEGER. Values past `i64::MAX` are refused by
/// `JournalRecord::validate` before they get here; saturating keeps the
/// writer total anyway.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch, for bookkeeping columns.
pub(crate) fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
