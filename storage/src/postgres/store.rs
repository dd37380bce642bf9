//! [`PostgresStore`]: opening the server backend (migrations, writers, the
//! read pool), and the time bound on every read.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::schema;
use super::session::{
    MIGRATION_APPLICATION_NAME, MIGRATION_TIMEOUT_MS, PostgresConfig, READER_APPLICATION_NAME,
    apply_settings, connect, session_settings, timed_out,
};
use super::writer::PostgresWriter;
use crate::error::StorageError;
use crate::journal::Journal;

/// The read side of the PostgreSQL backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// The bound on one lookup, waiting for a connection included.
    pub(super) read_timeout: Duration,
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

    /// Runs one read within the read timeout: a server that stops
    /// answering fails a lookup instead of holding its caller.
    pub(super) async fn bounded<T>(
        &self,
        operation: &'static str,
        read: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.read_timeout, read)
            .await
            .unwrap_or_else(|_| Err(timed_out(operation, self.read_timeout)))
            .map_err(StorageError::database(operation))
    }
}
