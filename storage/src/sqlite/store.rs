//! [`SqliteStore`]: opening the embedded backend, and its read pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection};

use super::schema;
use super::writer::SqliteJournalWriter;
use crate::error::StorageError;
use crate::journal::{Journal, JournalConfig};

/// Read connections. Lookups are single index probes that finish in tens of
/// microseconds, so a few connections (each with its own sqlx worker thread)
/// serve a 2-core machine; more would only add threads.
const READ_CONNECTIONS: u32 = 4;

/// The read side of the embedded backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    path: PathBuf,
    /// For the vault rewrap's short write transactions, beside the journal
    /// writer (see `rewrap`). Behind an `Arc`: the options are large and the
    /// store is cloned and moved.
    pub(super) write_options: Arc<SqliteConnectOptions>,
}

/// How long a vault rewrap batch waits for SQLite's write lock.
const REWRAP_BUSY_TIMEOUT_MS: u64 = 30_000;

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
        let writer_options = writer_options(base.clone());
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
        // The vault rewrap writes on its own connection. The journal's writer
        // commits back to back under load, and SQLite's busy handler does not
        // queue waiters, so a rewrap batch may lose the race for the write
        // lock many times in a row: it waits longer than the journal would
        // (seen: `database is locked` after one second while the journal
        // appended at full speed), since a rewrap is a background job that
        // can wait and the journal must not.
        let write_options = Arc::new(
            writer_options
                .clone()
                .busy_timeout(Duration::from_millis(REWRAP_BUSY_TIMEOUT_MS)),
        );
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
}

/// How the journal's writer connection is opened (and reopened after a
/// failed batch): the durability of every acknowledged answer rests on it.
fn writer_options(base: SqliteConnectOptions) -> SqliteConnectOptions {
    base.create_if_missing(true)
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
        .pragma("temp_store", "memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An acknowledged commit survives a power cut only with `synchronous =
    /// FULL` in WAL mode (`NORMAL` fsyncs at checkpoints only): pinned here,
    /// on a connection opened exactly as the writer's is.
    #[tokio::test]
    async fn the_writer_fsyncs_every_commit_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let base = SqliteConnectOptions::new().filename(dir.path().join("journal.sqlite"));
        let mut conn = SqliteConnection::connect_with(&writer_options(base))
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(journal_mode, "wal");
    }
}
