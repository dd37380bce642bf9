//! Lookups on the read pool, and turning rows back into typed values.
//!
//! Every query here is answered from an index (a test checks the query
//! plans), so lookup cost does not grow with the journal.

use std::future::Future;
use std::pin::Pin;

use protocol::domain::{Token, TransactionId};

use super::claims::IDEMPOTENT_RESPONSE;
use super::store::SqliteStore;
use crate::columns::{
    Columns, idempotency_entry_from, record_from, replay_row_from, sealed_pan_from,
    stored_transaction_from,
};
use crate::convert::to_i64;
use crate::error::StorageError;
use crate::record::{
    IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan,
    StoredTransaction,
};
use crate::store::{StoreFuture, StoreReader};

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
     WHERE terminal_id = ? AND stan = ? AND merchant_id = ? AND transmitted_at = ? \
       AND acquirer IS ? AND created_at_ms >= ? AND kind IN (?, ?, ?, ?) \
     ORDER BY created_at_ms DESC LIMIT 1"
);

pub(crate) const FIND_ORIGINAL_ANY_TIME: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    " FROM transactions \
     WHERE terminal_id = ? AND stan = ? AND merchant_id = ? \
       AND acquirer IS ? AND created_at_ms >= ? AND kind IN (?, ?, ?, ?) \
     ORDER BY created_at_ms DESC LIMIT 1"
);

/// The replay query: approved authorizations and purchases with a token,
/// each with the amount of it that stands: its own less what its first
/// reversal (the one in `reversals`) gave back, at most all of it. One
/// wholly reversed is left out; one partly reversed still counts once.
/// The same rule as the in-memory backend's. The first three conditions repeat
/// the partial index's own `WHERE` word for word, which is how SQLite knows
/// it may use the index.
pub(crate) const APPROVED_SINCE: &str = "\
    SELECT t.id, t.token, t.merchant_id, t.currency_numeric, t.created_at_ms, \
           t.amount_minor - MIN(COALESCE(g.amount_minor, 0), t.amount_minor) \
               AS amount_minor \
    FROM transactions t \
    LEFT JOIN reversals r ON r.original_id = t.id \
    LEFT JOIN transactions g ON g.id = r.reversal_id \
    WHERE t.response_code = '00' AND t.kind IN ('authorization', 'purchase') \
      AND t.token IS NOT NULL \
      AND (t.created_at_ms, t.id) > (?, ?) \
      AND t.amount_minor > COALESCE(g.amount_minor, 0) \
    ORDER BY t.created_at_ms, t.id LIMIT ?";

/// Ids begin with their creation time in milliseconds, so every id at or
/// after the smallest id of `since_ms` was created since: a range scan of
/// the primary key that stops at its first row.
pub(crate) const RECORDED_SINCE: &str = "SELECT id FROM transactions WHERE id >= ? LIMIT 1";

pub(crate) const SEALED_PAN: &str =
    "SELECT token, key_id, nonce, ciphertext FROM vault WHERE token = ?";

impl StoreReader for SqliteStore {
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>> {
        Box::pin(async move {
            let row = sqlx::query(SELECT_TRANSACTION)
                .bind(id.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(StorageError::database("read a transaction"))?;
            row.as_ref().map(stored_transaction_from).transpose()
        })
    }

    fn find_original<'a>(
        &'a self,
        keys: &'a OriginalKeys,
        kinds: &'a [RecordKind],
        created_since_ms: u64,
    ) -> StoreFuture<'a, Option<JournalRecord>> {
        Box::pin(async move {
            let Some(first) = kinds.first() else {
                return Ok(None);
            };
            let query = match &keys.transmitted_at {
                Some(_) => sqlx::query(FIND_ORIGINAL_AT),
                None => sqlx::query(FIND_ORIGINAL_ANY_TIME),
            }
            .bind(keys.terminal_id.as_str())
            .bind(keys.stan.as_str())
            .bind(keys.merchant_id.as_str());
            let mut query = match &keys.transmitted_at {
                Some(at) => query.bind(at.as_str()),
                None => query,
            }
            .bind(keys.acquirer.as_deref())
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
        })
    }

    fn idempotent_response<'a>(
        &'a self,
        merchant_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<IdempotencyEntry>> {
        Box::pin(async move {
            let row = sqlx::query(IDEMPOTENT_RESPONSE)
                .bind(merchant_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(StorageError::database("read an idempotency entry"))?;
            row.as_ref().map(idempotency_entry_from).transpose()
        })
    }

    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<ReplayRow>> {
        Box::pin(async move {
            // With no cursor, start just before the first id at `since_ms`:
            // an empty BLOB sorts before every 16-byte id.
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
            rows.iter().map(replay_row_from).collect()
        })
    }

    fn recorded_since(&self, since_ms: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let first = TransactionId::new(since_ms, [0; 10]);
            let row = sqlx::query(RECORDED_SINCE)
                .bind(first.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(StorageError::database("look for records since a time"))?;
            Ok(row.is_some())
        })
    }

    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>> {
        Box::pin(async move {
            let row = sqlx::query(SEALED_PAN)
                .bind(token.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(StorageError::database("read a vault entry"))?;
            row.as_ref().map(sealed_pan_from).transpose()
        })
    }

    /// The embedded file is always there once open.
    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Closes the read connections. Close the journal too
    /// ([`Journal::close`](crate::Journal::close)) to checkpoint and release
    /// the file.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.pool.close())
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
            (FIND_ORIGINAL_AT, 10, "transactions_by_request_keys"),
            (FIND_ORIGINAL_ANY_TIME, 9, "transactions_by_request_keys"),
            (APPROVED_SINCE, 3, "transactions_approved"),
            (IDEMPOTENT_RESPONSE, 2, "sqlite_autoindex_idempotency_1"),
            (SEALED_PAN, 1, "PRIMARY KEY"),
            (RECORDED_SINCE, 1, "PRIMARY KEY"),
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
