//! The PostgreSQL schema, as a versioned list of migrations.
//!
//! The same tables, columns and checks as the embedded schema, in
//! PostgreSQL's types: `bytea` for ids, tokens and ciphertexts, `bigint` for
//! every integer (SQLite's INTEGER is 64 bits too), `text` for the rest. A
//! reader of one schema can read the other.
//!
//! Migrations run at start inside one transaction that first takes an
//! advisory lock: nodes of a fleet starting at once queue on the lock, and
//! each one after the first finds the migrations applied. DDL in PostgreSQL
//! is transactional, so a failed migration leaves the database at the
//! version before. Released migrations are never edited: a change is a new
//! entry at the end.

use sqlx::{Connection, Executor, PgConnection, Row};

use crate::error::StorageError;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// The advisory lock key migrations hold: "swjourn1" in ASCII, a number no
/// other application is likely to pick.
const MIGRATION_LOCK_KEY: i64 = 0x7377_6a6f_7572_6e31;

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "journal, reversals, vault, idempotency",
        sql: r#"
-- The journal. Ids start with their creation time, so inserts land at the
-- right edge of the primary key's b-tree.
CREATE TABLE transactions (
    id               bytea   NOT NULL PRIMARY KEY CHECK (octet_length(id) = 16),
    created_at_ms    bigint  NOT NULL,
    channel          text    NOT NULL CHECK (channel IN ('iso', 'http')),
    kind             text    NOT NULL
        CHECK (kind IN ('authorization', 'purchase', 'reversal', 'reversal_advice')),
    mti              text    NOT NULL CHECK (length(mti) = 4),
    processing_code  text    CHECK (length(processing_code) = 6),
    amount_minor     bigint  NOT NULL CHECK (amount_minor >= 0),
    currency_numeric bigint  NOT NULL,
    merchant_id      text    NOT NULL,
    terminal_id      text    NOT NULL,
    stan             text    CHECK (length(stan) = 6),
    rrn              text    CHECK (length(rrn) = 12),
    transmitted_at   text    CHECK (length(transmitted_at) = 10),
    token            bytea   CHECK (octet_length(token) = 16),
    -- Digits only as well as the length: the last line against a PAN
    -- written into the wrong column.
    bin              text    CHECK (bin ~ '^[0-9]{6,8}$'),
    last4            text    CHECK (last4 ~ '^[0-9]{4}$'),
    response_code    text    NOT NULL CHECK (length(response_code) = 2),
    auth_code        text,
    reason           text,
    original_id      bytea   CHECK (octet_length(original_id) = 16),
    decode_us        bigint  NOT NULL,
    decide_us        bigint  NOT NULL,
    vault_us         bigint  NOT NULL
);

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
-- give-back happen once: of concurrent reversals of one original, on any
-- writer connection of any node, exactly one insert wins. No foreign key on
-- original_id: an original is checked by the switch before it reverses,
-- and a batch must not fail for someone else's reversal.
CREATE TABLE reversals (
    original_id   bytea   NOT NULL PRIMARY KEY CHECK (octet_length(original_id) = 16),
    reversal_id   bytea   NOT NULL REFERENCES transactions (id),
    created_at_ms bigint  NOT NULL
);

-- token -> PAN sealed with AES-256-GCM; key_id names the key, so rotated
-- keys keep opening old rows.
CREATE TABLE vault (
    token         bytea   NOT NULL PRIMARY KEY CHECK (octet_length(token) = 16),
    key_id        bigint  NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    nonce         bytea   NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext    bytea   NOT NULL,
    created_at_ms bigint  NOT NULL
);

-- Stored answers to HTTP requests with an Idempotency-Key. The body is
-- text, not jsonb: it is sent again byte for byte.
CREATE TABLE idempotency (
    merchant_id     text    NOT NULL,
    idempotency_key text    NOT NULL,
    request_hash    bytea   NOT NULL CHECK (octet_length(request_hash) = 32),
    response_json   text    NOT NULL,
    status          bigint  NOT NULL,
    transaction_id  bytea   NOT NULL REFERENCES transactions (id),
    created_at_ms   bigint  NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
"#,
    },
    Migration {
        version: 2,
        name: "acquirer identified by its TLS client certificate",
        sql: r#"
-- The configured acquirer a request came in under on a mutual-TLS listener;
-- NULL for plain connections and JSON requests. A name from the switch's
-- configuration, never card data. Nullable without a default: adding it
-- rewrites no rows, so it is instant on a large journal.
ALTER TABLE transactions ADD COLUMN acquirer text
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
-- their own rows. IF NOT EXISTS: on a large journal an operator may build
-- it beforehand with CREATE INDEX CONCURRENTLY (this migration runs in a
-- transaction, where that cannot), and this step then only drops the old.
CREATE INDEX IF NOT EXISTS transactions_by_request_keys
    ON transactions (terminal_id, stan, merchant_id, transmitted_at, created_at_ms)
    WHERE stan IS NOT NULL;
DROP INDEX IF EXISTS transactions_by_acquirer_keys;
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
    merchant_id     text    NOT NULL,
    idempotency_key text    NOT NULL,
    request_hash    bytea   NOT NULL CHECK (octet_length(request_hash) = 32),
    claimed_by      bytea   NOT NULL CHECK (octet_length(claimed_by) = 16),
    claimed_at_ms   bigint  NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
"#,
    },
];

/// The newest version this build knows.
pub(crate) fn version_known() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database up to [`version_known`]; returns the version found.
pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<i64, StorageError> {
    let failed = StorageError::database;
    let mut tx = conn
        .begin()
        .await
        .map_err(failed("begin the schema migration"))?;
    // Before anything else, even CREATE TABLE IF NOT EXISTS: two sessions
    // running that at once can both pass the IF NOT EXISTS and one fails.
    // The lock is released by COMMIT or ROLLBACK.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(failed("take the schema migration lock"))?;
    // `executor.execute(raw_sql)`: see `apply_settings`.
    (&mut *tx)
        .execute(sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version       bigint NOT NULL PRIMARY KEY,
                name          text   NOT NULL,
                applied_at_ms bigint NOT NULL
            )",
        ))
        .await
        .map_err(failed("create schema_migrations"))?;
    let found: i64 = sqlx::query("SELECT coalesce(max(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(failed("read the schema version"))?;
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
        (&mut *tx)
            .execute(sqlx::raw_sql(migration.sql))
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    }
    tx.commit()
        .await
        .map_err(StorageError::database("commit the schema migration"))?;
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

    /// The embedded and server schemas keep the same tables and columns.
    #[test]
    fn the_same_columns_as_the_embedded_schema() {
        let columns = |sql: &str| -> Vec<String> {
            sql.lines()
                .map(str::trim)
                .filter(|line| {
                    !line.is_empty()
                        && !line.starts_with("--")
                        && !line.starts_with("CREATE")
                        && !line.starts_with("ON ")
                        && !line.starts_with("WHERE")
                        && !line.starts_with("AND")
                        && !line.starts_with("CHECK")
                        && !line.starts_with(')')
                })
                .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
                .collect()
        };
        let embedded = crate::sqlite::schema::MIGRATIONS;
        assert_eq!(embedded.len(), MIGRATIONS.len());
        for (sqlite, postgres) in embedded.iter().zip(MIGRATIONS) {
            assert_eq!(columns(sqlite.sql), columns(postgres.sql));
        }
    }
}
