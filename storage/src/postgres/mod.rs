//! The server backend: PostgreSQL 15, or Aurora PostgreSQL, shared by every
//! switch node of a fleet.
//!
//! [`PostgresStore::open`] migrates the schema (under an advisory lock, so
//! nodes starting together migrate once), opens `writer_connections`
//! dedicated writer connections and hands them to the journal
//! ([`Journal::start_many`]), and opens a small pool of read connections
//! for lookups. The SQL is plain PostgreSQL 15: no extensions, nothing
//! Aurora refuses.
//!
//! The modules, in the order a record flows through them:
//!
//! - `writer`: [`PostgresWriter`], one connection, one statement per batch
//!   (a multi-row insert per table from `UNNEST` arrays) in one transaction,
//!   `ON CONFLICT DO NOTHING` everywhere, so a batch retried after a lost
//!   connection leaves nothing twice.
//! - `schema`: the versioned migrations.
//! - `reads`: [`PostgresStore`] answering [`StoreReader`](crate::StoreReader).
//!
//! A database that goes away fails a batch within the configured timeouts
//! instead of hanging: `statement_timeout` and `lock_timeout` on the server,
//! and a deadline on the client for a server that no longer answers at all.

/// The columns of `transactions`, in the writer's bind order; a macro so
/// that SQL text can be built with `concat!` at compile time. The same list
/// as the embedded backend's.
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

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};

use crate::error::StorageError;
use crate::journal::{Journal, JournalConfig};
pub use writer::PostgresWriter;

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
const MIGRATION_TIMEOUT_MS: u32 = 60_000;

/// The `application_name` of the writer connections, to find them in
/// `pg_stat_activity`.
pub const WRITER_APPLICATION_NAME: &str = "switch-journal-writer";
/// The `application_name` of the connection that migrates at start.
const MIGRATION_APPLICATION_NAME: &str = "switch-journal-migration";
/// The `application_name` of the read pool's connections.
pub const READER_APPLICATION_NAME: &str = "switch-journal-reader";

/// The read side of the PostgreSQL backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The bound on one lookup, waiting for a connection included.
    read_timeout: Duration,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host
    /// [:port]/database[?sslmode=...]`), migrates it, and starts the journal
    /// with `config.writer_connections` writers on the current tokio runtime.
    ///
    /// Every connection is opened here, so a database that cannot be reached
    /// fails the start rather than the first append. Errors never contain
    /// the URL, which may hold a password.
    pub async fn open(
        url: &str,
        config: PostgresConfig,
    ) -> Result<(Journal, PostgresStore), StorageError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StorageError::database("read the database URL"))?;
        PostgresStore::open_with_options(options, config).await
    }

    /// [`PostgresStore::open`] with the connection options already built,
    /// for a caller that assembles them from parts (a password from a
    /// secret store, TLS roots) rather than one URL.
    pub async fn open_with_options(
        options: PgConnectOptions,
        config: PostgresConfig,
    ) -> Result<(Journal, PostgresStore), StorageError> {
        let connect_timeout = Duration::from_millis(u64::from(config.connect_timeout_ms));

        let mut conn = connect(
            &options.clone().application_name(MIGRATION_APPLICATION_NAME),
            connect_timeout,
            &session_settings(
                MIGRATION_TIMEOUT_MS.max(config.statement_timeout_ms),
                MIGRATION_TIMEOUT_MS.max(config.journal.busy_timeout_ms),
                false,
            ),
        )
        .await?;
        schema::migrate(&mut conn).await?;
        let _ = conn.close().await;

        let writer_connections = config.writer_connections.max(1);
        let mut writers = Vec::with_capacity(writer_connections);
        for _ in 0..writer_connections {
            writers.push(PostgresWriter::connect(&options, &config).await?);
        }

        let settings: Arc<str> = session_settings(
            config.statement_timeout_ms,
            config.journal.busy_timeout_ms,
            true,
        )
        .into();
        let pool = PgPoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .min_connections(0)
            .acquire_timeout(connect_timeout)
            .after_connect(move |conn, _| {
                let settings = Arc::clone(&settings);
                Box::pin(async move { apply_settings(conn, &settings).await })
            })
            .connect_with(options.application_name(READER_APPLICATION_NAME))
            .await
            .map_err(StorageError::database("open the read connections"))?;

        let journal = Journal::start_many(writers, &config.journal);
        let read_timeout =
            connect_timeout + Duration::from_millis(u64::from(config.statement_timeout_ms));
        Ok((journal, PostgresStore { pool, read_timeout }))
    }

    /// Asks the database a trivial question on a read connection: `Ok` when
    /// it answers within the connect and statement timeouts. For
    /// `/health/ready`, beside [`Journal::is_running`].
    pub async fn check(&self) -> Result<(), StorageError> {
        let pool = &self.pool;
        self.bounded(
            "check the database answers",
            pool.execute(sqlx::raw_sql("SELECT 1")),
        )
        .await
        .map(|_| ())
    }

    /// Closes the read connections, waiting at most the read timeout for a
    /// server that no longer answers. Close the journal too
    /// ([`Journal::close`]) to close the writer connections.
    pub async fn close(&self) {
        if tokio::time::timeout(self.read_timeout, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("closing the read connections timed out");
        }
    }
}

/// The session settings every connection starts with.
///
/// `statement_timeout` and `lock_timeout` keep a stuck statement from
/// holding a batch (and its waiting callers) for ever;
/// `idle_in_transaction_session_timeout` lets the server abort a batch whose
/// writer vanished mid-transaction, releasing its locks; `synchronous_commit`
/// is forced on because an append is acknowledged only after COMMIT, and
/// with it off COMMIT returns before the WAL is flushed.
fn session_settings(statement_timeout_ms: u32, lock_timeout_ms: u32, read_only: bool) -> String {
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
async fn apply_settings(conn: &mut PgConnection, settings: &str) -> Result<(), sqlx::Error> {
    // `conn.execute(raw_sql)`, not `raw_sql.execute(conn)`: the latter's
    // lifetime bounds make futures that hold it fail to be `Send`
    // (sqlx issue 3150).
    conn.execute(sqlx::raw_sql(settings)).await.map(|_| ())
}

/// Opens one connection within `timeout` and applies `settings`.
async fn connect(
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
fn timed_out(what: &str, after: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "PostgreSQL did not answer {what} within {} ms",
            after.as_millis()
        ),
    ))
}

/// A `u64` for a PostgreSQL bigint. Values past `i64::MAX` are refused by
/// `JournalRecord::validate` before they get here; saturating keeps the
/// writer total anyway.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch, for bookkeeping columns.
fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
