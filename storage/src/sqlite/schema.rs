//! The embedded schema, as a versioned list of migrations.
//!
//! Each migration runs once, in order, inside the same `BEGIN IMMEDIATE`
//! transaction that records it in `schema_migrations`, so two processes
//! opening one file at once cannot both apply it, and a failed migration
//! leaves the file at the version before. Released migrations are never
//! edited: a change is a new entry at the end.
//!
//! Ids and tokens are 16-byte BLOBs; tables are `STRICT`, so a value of the
//! wrong type is refused rather than stored. The `CHECK`s on `bin` and
//! `last4` are the last line against a PAN written into the wrong column.

use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row};

use crate::error::StorageError;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "journal, reversals, vault, idempotency",
        sql: r#"
-- The journal. WITHOUT ROWID: the table is stored in its primary key's
-- b-tree, and ids start with their creation time, so inserts land at the
-- right edge and no second index on id is kept up.
CREATE TABLE transactions (
    id               BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    created_at_ms    INTEGER NOT NULL,
    channel          TEXT    NOT NULL CHECK (channel IN ('iso', 'http')),
    kind             TEXT    NOT NULL
        CHECK (kind IN ('authorization', 'purchase', 'reversal', 'reversal_advice')),
    mti              TEXT    NOT NULL CHECK (length(mti) = 4),
    processing_code  TEXT    CHECK (length(processing_code) = 6),
    amount_minor     INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency_numeric INTEGER NOT NULL,
    merchant_id      TEXT    NOT NULL,
    terminal_id      TEXT    NOT NULL,
    stan             TEXT    CHECK (length(stan) = 6),
    rrn              TEXT    CHECK (length(rrn) = 12),
    transmitted_at   TEXT    CHECK (length(transmitted_at) = 10),
    token            BLOB    CHECK (length(token) = 16),
    bin              TEXT    CHECK (length(bin) BETWEEN 6 AND 8),
    last4            TEXT    CHECK (length(last4) = 4),
    response_code    TEXT    NOT NULL CHECK (length(response_code) = 2),
    auth_code        TEXT,
    reason           TEXT,
    original_id      BLOB    CHECK (length(original_id) = 16),
    decode_us        INTEGER NOT NULL,
    decide_us        INTEGER NOT NULL,
    vault_us         INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

-- Repeats, retransmissions and DE90 find their original by the acquirer's
-- keys. Partial: JSON requests have no STAN.
CREATE INDEX transactions_by_acquirer_keys
    ON transactions (terminal_id, stan, transmitted_at, created_at_ms)
    WHERE stan IS NOT NULL;

-- The replay at start walks approved card requests in time order. Partial,
-- so it holds only the rows the replay reads.
CREATE INDEX transactions_approved
    ON transactions (created_at_ms, id)
    WHERE response_code = '00' AND kind IN ('authorization', 'purchase')
        AND token IS NOT NULL;

-- One row per reversed original. The primary key is what makes a reversal's
-- give-back happen once: of concurrent reversals of one original, exactly
-- one insert wins. No foreign key on original_id: an original is checked by
-- the switch before it reverses, and a batch must not fail for someone
-- else's reversal.
CREATE TABLE reversals (
    original_id   BLOB    NOT NULL PRIMARY KEY CHECK (length(original_id) = 16),
    reversal_id   BLOB    NOT NULL REFERENCES transactions (id),
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

-- token -> PAN sealed with AES-256-GCM; key_id names the key, so rotated
-- keys keep opening old rows.
CREATE TABLE vault (
    token         BLOB    NOT NULL PRIMARY KEY CHECK (length(token) = 16),
    key_id        INTEGER NOT NULL,
    nonce         BLOB    NOT NULL CHECK (length(nonce) = 12),
    ciphertext    BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

-- Stored answers to HTTP requests with an Idempotency-Key. A rowid table:
-- a response body can be kilobytes, too large for a WITHOUT ROWID row.
CREATE TABLE idempotency (
    merchant_id     TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    request_hash    BLOB    NOT NULL CHECK (length(request_hash) = 32),
    response_json   TEXT    NOT NULL,
    status          INTEGER NOT NULL,
    transaction_id  BLOB    NOT NULL REFERENCES transactions (id),
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
) STRICT;
"#,
    },
    Migration {
        version: 2,
        name: "acquirer identified by its TLS client certificate",
        sql: r#"
-- The configured acquirer a request came in under on a mutual-TLS listener;
-- NULL for plain connections and JSON requests. A name from the switch's
-- configuration, never card data.
ALTER TABLE transactions ADD COLUMN acquirer TEXT
    CHECK (length(acquirer) BETWEEN 1 AND 64);
"#,
    },
    Migration {
        version: 3,
        name: "originals matched within their merchant and acquirer",
        sql: r#"
-- A request's original is found by its acquirer keys within its owner:
-- the merchant (DE42) is in the index, so two merchants (or acquirers,
-- checked on the few rows left) sharing a terminal id and STAN read only
-- their own rows.
CREATE INDEX transactions_by_request_keys
    ON transactions (terminal_id, stan, merchant_id, transmitted_at, created_at_ms)
    WHERE stan IS NOT NULL;
DROP INDEX transactions_by_acquirer_keys;
"#,
    },
    Migration {
        version: 4,
        name: "idempotency keys claimed before their request is decided",
        sql: r#"
-- A request's claim on its Idempotency-Key, written before it is decided:
-- a second request with the key, on any node, finds it and answers 409
-- instead of deciding. The claiming record's commit completes the claim
-- (its row goes, the answer goes to idempotency) only if claimed_by is
-- still its id. A claim older than the switch's bound may be taken over by
-- a retry (claimed_by changes); the old request's record is then refused.
-- No foreign key on claimed_by: the claim comes before its record. Older
-- rows of idempotency are untouched and read as before.
CREATE TABLE idempotency_claims (
    merchant_id     TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    request_hash    BLOB    NOT NULL CHECK (length(request_hash) = 32),
    claimed_by      BLOB    NOT NULL CHECK (length(claimed_by) = 16),
    claimed_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
) WITHOUT ROWID, STRICT;
"#,
    },
];

/// The newest version this build knows.
pub(crate) fn version_known() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database up to [`version_known`]; returns the version found.
pub(crate) async fn migrate(
    conn: &mut SqliteConnection,
    options: &SqliteConnectOptions,
) -> Result<i64, StorageError> {
    let open = |source| StorageError::Open {
        path: options.get_filename().to_path_buf(),
        source,
    };
    // IMMEDIATE takes the write lock now, so a second process opening the
    // same file waits here instead of racing to apply the same migration.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(open)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER NOT NULL PRIMARY KEY,
            name          TEXT    NOT NULL,
            applied_at_ms INTEGER NOT NULL
        ) STRICT",
    )
    .execute(&mut *tx)
    .await
    .map_err(open)?;
    let found: i64 = sqlx::query("SELECT coalesce(max(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(open)?;
    let known = version_known();
    if found > known {
        return Err(StorageError::SchemaTooNew { found, known });
    }
    let now_ms = crate::clock::unix_ms_now();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let failed = |source| StorageError::Migration {
            version: migration.version,
            name: migration.name,
            source,
        };
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(open)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rise_one_by_one() {
        for (version, migration) in (1..).zip(MIGRATIONS) {
            assert_eq!(migration.version, version, "{}", migration.name);
        }
    }
}
