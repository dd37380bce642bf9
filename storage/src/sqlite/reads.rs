//! Lookups on the read pool, and turning rows back into typed values.
//!
//! Every query here is answered from an index (a test checks the query
//! plans), so lookup cost does not grow with the journal.

use protocol::domain::{Token, TransactionId};

use super::{SqliteStore, to_i64};
use crate::columns::{Columns, record_from, sealed_pan_from};
use crate::error::StorageError;
use crate::record::{
    IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan,
    StoredTransaction,
};
use crate::store::StoreReader;

pub(crate) const SELECT_TRANSACTION: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    ", (SELECT reversal_id FROM reversals WHERE original_id = transactions.id) AS reversed_by \
     FROM transactions WHERE id = ?"
);

/// Kinds are bound as four parameters; a shorter list repeats its first.
const KINDS_BOUND: usize = 4;

pub(crate) const FIND_ORIGINAL_AT: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    " FROM transactions \
     WHERE terminal_id = ? AND stan = ? AND transmitted_at = ? AND created_at_ms >= ? \
       AND kind IN (?, ?, ?, ?) \
     ORDER BY created_at_ms DESC LIMIT 1"
);

pub(crate) const FIND_ORIGINAL_ANY_TIME: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    " FROM transactions \
     WHERE terminal_id = ? AND stan = ? AND created_at_ms >= ? \
       AND kind IN (?, ?, ?, ?) \
     ORDER BY created_at_ms DESC LIMIT 1"
);

/// The first three conditions repeat the partial index's own `WHERE` word
/// for word, which is how SQLite knows it may use the index.
pub(crate) const APPROVED_SINCE: &str = "\
    SELECT id, token, merchant_id, amount_minor, currency_numeric, created_at_ms \
    FROM transactions \
    WHERE response_code = '00' AND kind IN ('authorization', 'purchase') \
      AND token IS NOT NULL \
      AND (created_at_ms, id) > (?, ?) \
      AND NOT EXISTS (SELECT 1 FROM reversals WHERE original_id = transactions.id) \
    ORDER BY created_at_ms, id LIMIT ?";

pub(crate) const IDEMPOTENT_RESPONSE: &str = "\
    SELECT merchant_id, idempotency_key, request_hash, response_json, status \
    FROM idempotency WHERE merchant_id = ? AND idempotency_key = ?";

pub(crate) const SEALED_PAN: &str =
    "SELECT token, key_id, nonce, ciphertext FROM vault WHERE token = ?";

impl SqliteStore {
    /// See [`StoreReader::transaction`].
    pub async fn transaction(
        &self,
        id: TransactionId,
    ) -> Result<Option<StoredTransaction>, StorageError> {
        let row = sqlx::query(SELECT_TRANSACTION)
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(StorageError::database("read a transaction"))?;
        row.map(|row| {
            let columns = Columns::new(&row, "transactions");
            Ok(StoredTransaction {
                record: record_from(&columns)?,
                reversed_by: columns.optional_id("reversed_by")?,
            })
        })
        .transpose()
    }

    /// See [`StoreReader::find_original`].
    pub async fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> Result<Option<JournalRecord>, StorageError> {
        let Some(first) = kinds.first() else {
            return Ok(None);
        };
        let mut query = match &keys.transmitted_at {
            Some(at) => sqlx::query(FIND_ORIGINAL_AT)
                .bind(keys.terminal_id.as_str())
                .bind(keys.stan.as_str())
                .bind(at.as_str()),
            None => sqlx::query(FIND_ORIGINAL_ANY_TIME)
                .bind(keys.terminal_id.as_str())
                .bind(keys.stan.as_str()),
        }
        .bind(to_i64(created_since_ms));
        for index in 0..KINDS_BOUND {
            query = query.bind(kinds.get(index).unwrap_or(first).as_str());
        }
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(StorageError::database("find an original by acquirer keys"))?;
        row.map(|row| record_from(&Columns::new(&row, "transactions")))
            .transpose()
    }

    /// See [`StoreReader::idempotent_response`].
    pub async fn idempotent_response(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyEntry>, StorageError> {
        let row = sqlx::query(IDEMPOTENT_RESPONSE)
            .bind(merchant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StorageError::database("read an idempotency entry"))?;
        row.map(|row| {
            let columns = Columns::new(&row, "idempotency");
            Ok(IdempotencyEntry {
                merchant_id: columns.get("merchant_id")?,
                key: columns.get("idempotency_key")?,
                request_hash: columns.bytes("request_hash")?,
                response_json: columns.get("response_json")?,
                status: columns.number("status")?,
            })
        })
        .transpose()
    }

    /// See [`StoreReader::approved_since`].
    pub async fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Result<Vec<ReplayRow>, StorageError> {
        // With no cursor, start just before the first id at `since_ms`: an
        // empty BLOB sorts before every 16-byte id.
        let (at_ms, id): (u64, &[u8]) = match &after {
            Some(cursor) if cursor.at_ms >= since_ms => (cursor.at_ms, cursor.id.as_bytes()),
            _ => (since_ms, &[]),
        };
        let rows = sqlx::query(APPROVED_SINCE)
            .bind(to_i64(at_ms))
            .bind(id)
            .bind(i64::from(rows_max))
            .fetch_all(&self.pool)
            .await
            .map_err(StorageError::database(
                "read approved transactions for replay",
            ))?;
        rows.iter()
            .map(|row| {
                let columns = Columns::new(row, "transactions");
                Ok(ReplayRow {
                    id: columns.id("id")?,
                    token: Token::from_bytes(columns.bytes("token")?),
                    merchant_id: columns.text("merchant_id")?,
                    amount: columns.amount("amount_minor")?,
                    currency: columns.currency("currency_numeric")?,
                    at_ms: columns.number("created_at_ms")?,
                })
            })
            .collect()
    }

    /// See [`StoreReader::sealed_pan`].
    pub async fn sealed_pan(&self, token: Token) -> Result<Option<SealedPan>, StorageError> {
        let row = sqlx::query(SEALED_PAN)
            .bind(token.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(StorageError::database("read a vault entry"))?;
        row.as_ref().map(sealed_pan_from).transpose()
    }
}

impl StoreReader for SqliteStore {
    async fn transaction(
        &self,
        id: TransactionId,
    ) -> Result<Option<StoredTransaction>, StorageError> {
        SqliteStore::transaction(self, id).await
    }

    async fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> Result<Option<JournalRecord>, StorageError> {
        SqliteStore::find_original(self, keys, kinds, created_since_ms).await
    }

    async fn idempotent_response(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyEntry>, StorageError> {
        SqliteStore::idempotent_response(self, merchant_id, key).await
    }

    async fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Result<Vec<ReplayRow>, StorageError> {
        SqliteStore::approved_since(self, since_ms, after, rows_max).await
    }

    async fn sealed_pan(&self, token: Token) -> Result<Option<SealedPan>, StorageError> {
        SqliteStore::sealed_pan(self, token).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection, Row, SqliteConnection};

    use super::*;
    use crate::JournalConfig;

    /// Every lookup is a SEARCH by index (or the primary key), never a SCAN
    /// of a table, so its cost does not grow with the journal.
    #[tokio::test]
    async fn every_lookup_searches_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.db");
        let (journal, store) = SqliteStore::open(&path, JournalConfig::default())
            .await
            .unwrap();
        let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        for (sql, parameters, index) in [
            (SELECT_TRANSACTION, 1, "PRIMARY KEY"),
            (FIND_ORIGINAL_AT, 8, "transactions_by_acquirer_keys"),
            (FIND_ORIGINAL_ANY_TIME, 7, "transactions_by_acquirer_keys"),
            (APPROVED_SINCE, 3, "transactions_approved"),
            (IDEMPOTENT_RESPONSE, 2, "sqlite_autoindex_idempotency_1"),
            (SEALED_PAN, 1, "PRIMARY KEY"),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query(&explain);
            for _ in 0..parameters {
                query = query.bind(None::<i64>);
            }
            let plan: Vec<String> = query
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
            assert!(
                plan.first().is_some_and(|step| step.contains(index)),
                "{sql}: {plan:?}"
            );
        }
        journal.close().await;
        store.close().await;
    }
}
