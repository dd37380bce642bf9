//! `[storage]` and `[journal]`: where transactions are kept and the queue
//! in front of it, as the storage crate takes them.

use storage::{JournalConfig, LogConfig, PostgresConfig};

use super::check::{Check, ConfigError};
use super::raw::{Backend, RawJournal, RawStorage};

/// The journal's backend with what it needs to open.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// SQLite files under `data_dir`.
    Sqlite { journal: JournalConfig },
    /// The segment log's files under `data_dir`.
    Log { log: LogConfig },
    /// PostgreSQL or Aurora PostgreSQL. The URL may hold a password, so it is
    /// never printed.
    Postgres {
        database_url: String,
        postgres: PostgresConfig,
    },
}

impl StorageSettings {
    pub fn backend(&self) -> Backend {
        match self {
            StorageSettings::Sqlite { .. } => Backend::Sqlite,
            StorageSettings::Log { .. } => Backend::Log,
            StorageSettings::Postgres { .. } => Backend::Postgres,
        }
    }
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageSettings::Sqlite { journal } => {
                f.debug_struct("Sqlite").field("journal", journal).finish()
            }
            StorageSettings::Log { log } => f.debug_struct("Log").field("log", log).finish(),
            StorageSettings::Postgres { postgres, .. } => f
                .debug_struct("Postgres")
                .field("database_url", &"[redacted]")
                .field("postgres", postgres)
                .finish(),
        }
    }
}

/// `[journal]`: the queue and batches, on either backend.
pub(super) fn journal(check: &Check, raw: &RawJournal) -> Result<JournalConfig, ConfigError> {
    Ok(JournalConfig {
        queue_capacity: check.positive("journal.queue_capacity", raw.queue_capacity)?,
        batch_rows_max: check.positive("journal.batch_rows_max", raw.batch_rows_max)?,
        ..JournalConfig::default()
    })
}

/// `[storage]`; `database_url` is `--database-url` / `DATABASE_URL` when
/// given, over the file's. The URL and the connection settings are checked
/// whatever the backend, so a file stays valid when only `backend` changes.
pub(super) fn storage(
    check: &Check,
    raw: &RawStorage,
    journal: JournalConfig,
    database_url: Option<&str>,
) -> Result<StorageSettings, ConfigError> {
    let database_url = match (database_url, &raw.database_url) {
        (Some(url), _) => Some(url.to_owned()),
        (None, None) => None,
        (None, Some(value)) => Some(check.url("storage.database_url", value)?),
    };
    let database_url = match (raw.backend, database_url) {
        (Backend::Sqlite | Backend::Log, _) => None,
        (Backend::Postgres, Some(url)) => Some(url),
        (Backend::Postgres, None) => {
            return Err(check.error(
                "storage.database_url",
                "backend \"postgres\" needs a URL: set it here (env:NAME or file:PATH), or pass --database-url or DATABASE_URL",
            ));
        }
    };
    let postgres = PostgresConfig {
        journal,
        writer_connections: check.positive("storage.writer_connections", raw.writer_connections)?,
        read_connections: check.positive("storage.read_connections", raw.read_connections)?,
        connect_timeout_ms: check.positive("storage.connect_timeout_ms", raw.connect_timeout_ms)?,
        statement_timeout_ms: check
            .positive("storage.statement_timeout_ms", raw.statement_timeout_ms)?,
    };
    let segment_bytes = check.positive("storage.segment_bytes", raw.segment_bytes)?;
    Ok(match (raw.backend, database_url) {
        (_, Some(database_url)) => StorageSettings::Postgres {
            database_url,
            postgres,
        },
        (Backend::Log, None) => StorageSettings::Log {
            log: LogConfig {
                journal,
                segment_bytes,
            },
        },
        (_, None) => StorageSettings::Sqlite { journal },
    })
}
