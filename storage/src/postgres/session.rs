//! How every PostgreSQL connection of the backend is configured and opened:
//! [`PostgresConfig`], the session settings, and a connect bounded in time.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::error::StorageError;
use crate::journal::JournalConfig;

/// How to reach and use the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The queue and batch bounds. `busy_timeout_ms` becomes the server's
    /// `lock_timeout`: how long a statement waits for a row or table lock
    /// held by someone else before its batch fails.
    pub journal: JournalConfig,
    /// Writer connections, each with its own writer task on the one queue.
    /// PostgreSQL commits on several connections at once; two or three keep
    /// a commit always in flight.
    pub writer_connections: usize,
    /// Connections in the read pool for lookups and replay.
    pub read_connections: u32,
    /// How long opening a connection, or waiting for a pooled read
    /// connection, may take.
    pub connect_timeout_ms: u32,
    /// The server's `statement_timeout` on every connection. With
    /// `connect_timeout_ms` it also bounds, on the client, one batch (retry
    /// included) and one lookup: a database that stops answering fails an
    /// append with `Unavailable`, and a lookup with an error, at most
    /// `connect_timeout_ms + statement_timeout_ms` after it started.
    pub statement_timeout_ms: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            journal: JournalConfig::default(),
            writer_connections: 2,
            read_connections: 4,
            connect_timeout_ms: 2000,
            statement_timeout_ms: 2000,
        }
    }
}

/// The longest a migration may wait, for the advisory lock held by another
/// node migrating or for locks on the tables it changes.
pub(super) const MIGRATION_TIMEOUT_MS: u32 = 60_000;

/// The `application_name` of the writer connections, to find them in
/// `pg_stat_activity`.
pub const WRITER_APPLICATION_NAME: &str = "switch-journal-writer";
/// The `application_name` of the connection that migrates at start.
pub(super) const MIGRATION_APPLICATION_NAME: &str = "switch-journal-migration";
/// The `application_name` of the read pool's connections.
pub const READER_APPLICATION_NAME: &str = "switch-journal-reader";

/// The session settings every connection starts with.
///
/// `statement_timeout` and `lock_timeout` keep a stuck statement from
/// holding a batch (and its waiting callers) for ever;
/// `idle_in_transaction_session_timeout` lets the server abort a batch whose
/// writer vanished mid-transaction, releasing its locks; `synchronous_commit`
/// is forced on because an append is acknowledged only after COMMIT, and
/// with it off COMMIT returns before the WAL is flushed.
pub(super) fn session_settings(
    statement_timeout_ms: u32,
    lock_timeout_ms: u32,
    read_only: bool,
) -> String {
    let statement_timeout_ms = statement_timeout_ms.max(1);
    let mut settings = format!(
        "SET statement_timeout = {statement_timeout_ms}; \
         SET lock_timeout = {}; \
         SET idle_in_transaction_session_timeout = {statement_timeout_ms}; \
         SET synchronous_commit = on;",
        lock_timeout_ms.max(1)
    );
    if read_only {
        settings.push_str(" SET default_transaction_read_only = on;");
    }
    settings
}

/// Runs the `SET` statements of [`session_settings`] on a new connection.
pub(super) async fn apply_settings(
    conn: &mut PgConnection,
    settings: &str,
) -> Result<(), sqlx::Error> {
    // `conn.execute(raw_sql)`, not `raw_sql.execute(conn)`: the latter's
    // lifetime bounds make futures that hold it fail to be `Send`
    // (sqlx issue 3150).
    conn.execute(sqlx::raw_sql(settings)).await.map(|_| ())
}

/// Opens one connection within `timeout` and applies `settings`.
pub(super) async fn connect(
    options: &PgConnectOptions,
    timeout: Duration,
    settings: &str,
) -> Result<PgConnection, StorageError> {
    let connecting = async {
        let mut conn = PgConnection::connect_with(options).await?;
        apply_settings(&mut conn, settings).await?;
        Ok(conn)
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or_else(|_| Err(timed_out("connecting", timeout)))
        .map_err(StorageError::database("connect to PostgreSQL"))
}

/// A sqlx error for a server that did not answer in time.
pub(super) fn timed_out(what: &str, after: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "PostgreSQL did not answer {what} within {} ms",
            after.as_millis()
        ),
    ))
}

/// The test server's URL from `scripts/test-env`, for the unit tests that
/// need one; without it they are skipped, unless CI or
/// SWITCH_REQUIRE_DATABASES requires them (the rules of
/// storage/tests/common/postgres.rs).
#[cfg(test)]
pub(super) fn test_database_url() -> Option<String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    let required = ["CI", "SWITCH_REQUIRE_DATABASES"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
    assert!(
        !required,
        "DATABASE_URL is not set, and CI or SWITCH_REQUIRE_DATABASES requires the \
         PostgreSQL tests: run them under scripts/test-env"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: DATABASE_URL not set (run under scripts/test-env)"
    );
    None
}
