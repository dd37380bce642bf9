//! Lookups on the read pool, and turning rows back into typed values.
//!
//! The same queries as the embedded backend's, in PostgreSQL's dialect:
//! numbered parameters, and the kinds asked for bound as one array. Every
//! one is answered from an index (a test checks the query plans).

use std::future::Future;
use std::pin::Pin;

use sqlx::Executor;

use protocol::domain::{Token, TransactionId};

use super::claims::IDEMPOTENT_RESPONSE;
use super::store::PostgresStore;
use crate::columns::{
    Columns, idempotency_entry_from, record_from, replay_row_from, sealed_pan_from,
    stored_transaction_from,
};
use crate::convert::to_i64;
use crate::record::{
    IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan,
    StoredTransaction,
};
use crate::store::{StoreFuture, StoreReader};

pub(crate) const SELECT_TRANSACTION: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    ", (SELECT reversal_id FROM reversals WHERE original_id = transactions.id) AS reversed_by \
     FROM transactions WHERE id = $1"
);

pub(crate) const FIND_ORIGINAL_AT: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    " FROM transactions \
     WHERE terminal_id = $1 AND stan = $2 AND merchant_id = $3 AND transmitted_at = $4 \
       AND acquirer IS NOT DISTINCT FROM $5 AND created_at_ms >= $6 \
       AND kind = ANY($7::text[]) \
     ORDER BY created_at_ms DESC LIMIT 1"
);

pub(crate) const FIND_ORIGINAL_ANY_TIME: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    " FROM transactions \
     WHERE terminal_id = $1 AND stan = $2 AND merchant_id = $3 \
       AND acquirer IS NOT DISTINCT FROM $4 AND created_at_ms >= $5 \
       AND kind = ANY($6::text[]) \
     ORDER BY created_at_ms DESC LIMIT 1"
);

/// The replay query: approved authorizations and purchases with a token,
/// each with the amount of it that stands: its own less what its first
/// reversal (the one in `reversals`) gave back, at most all of it. One
/// wholly reversed is left out; one partly reversed still counts once.
/// The same rule as the in-memory backend's. The first three conditions
/// repeat the partial index's own `WHERE`, which is how the planner knows it
/// may use the index.
pub(crate) const APPROVED_SINCE: &str = "\
    SELECT t.id, t.token, t.merchant_id, t.currency_numeric, t.created_at_ms, \
           t.amount_minor - LEAST(COALESCE(g.amount_minor, 0), t.amount_minor) \
               AS amount_minor \
    FROM transactions t \
    LEFT JOIN reversals r ON r.original_id = t.id \
    LEFT JOIN transactions g ON g.id = r.reversal_id \
    WHERE t.response_code = '00' AND t.kind IN ('authorization', 'purchase') \
      AND t.token IS NOT NULL \
      AND (t.created_at_ms, t.id) > ($1, $2) \
      AND t.amount_minor > COALESCE(g.amount_minor, 0) \
    ORDER BY t.created_at_ms, t.id LIMIT $3";

/// Ids begin with their creation time in milliseconds, so every id at or
/// after the smallest id of `since_ms` was created since: a range scan of
/// the primary key that stops at its first row.
pub(crate) const RECORDED_SINCE: &str = "SELECT id FROM transactions WHERE id >= $1 LIMIT 1";

pub(crate) const SEALED_PAN: &str =
    "SELECT token, key_id, nonce, ciphertext FROM vault WHERE token = $1";

impl StoreReader for PostgresStore {
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>> {
        Box::pin(async move {
            let query = sqlx::query(SELECT_TRANSACTION).bind(id.as_bytes().as_slice());
            let row = self
                .bounded("read a transaction", query.fetch_optional(&self.pool))
                .await?;
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
            if kinds.is_empty() {
                return Ok(None);
            }
            let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
            let query = match &keys.transmitted_at {
                Some(_) => sqlx::query(FIND_ORIGINAL_AT),
                None => sqlx::query(FIND_ORIGINAL_ANY_TIME),
            }
            .bind(keys.terminal_id.as_str())
            .bind(keys.stan.as_str())
            .bind(keys.merchant_id.as_str());
            let query = match &keys.transmitted_at {
                Some(at) => query.bind(at.as_str()),
                None => query,
            }
            .bind(keys.acquirer.as_deref())
            .bind(to_i64(created_since_ms))
            .bind(kinds);
            let row = self
                .bounded(
                    "find an original by acquirer keys",
                    query.fetch_optional(&self.pool),
                )
                .await?;
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
            let query = sqlx::query(IDEMPOTENT_RESPONSE).bind(merchant_id).bind(key);
            let row = self
                .bounded(
                    "read an idempotency entry",
                    query.fetch_optional(&self.pool),
                )
                .await?;
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
            // an empty bytea sorts before every 16-byte id.
            let (at_ms, id): (u64, &[u8]) = match &after {
                Some(cursor) if cursor.at_ms >= since_ms => (cursor.at_ms, cursor.id.as_bytes()),
                _ => (since_ms, &[]),
            };
            let query = sqlx::query(APPROVED_SINCE)
                .bind(to_i64(at_ms))
                .bind(id)
                .bind(i64::from(rows_max));
            let rows = self
                .bounded(
                    "read approved transactions for replay",
                    query.fetch_all(&self.pool),
                )
                .await?;
            rows.iter().map(replay_row_from).collect()
        })
    }

    fn recorded_since(&self, since_ms: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let first = TransactionId::new(since_ms, [0; 10]);
            let query = sqlx::query(RECORDED_SINCE).bind(first.as_bytes().as_slice());
            let row = self
                .bounded(
                    "look for records since a time",
                    query.fetch_optional(&self.pool),
                )
                .await?;
            Ok(row.is_some())
        })
    }

    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>> {
        Box::pin(async move {
            let query = sqlx::query(SEALED_PAN).bind(token.as_bytes().as_slice());
            let row = self
                .bounded("read a vault entry", query.fetch_optional(&self.pool))
                .await?;
            row.as_ref().map(sealed_pan_from).transpose()
        })
    }

    /// Asks the database a trivial question on a read connection: `Ok` when
    /// it answers within the connect and statement timeouts. For
    /// `/health/ready`, beside [`Journal::is_running`](crate::Journal::is_running).
    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let pool = &self.pool;
            self.bounded(
                "check the database answers",
                pool.execute(sqlx::raw_sql("SELECT 1")),
            )
            .await
            .map(|_| ())
        })
    }

    /// Closes the read connections, waiting at most the read timeout for a
    /// server that no longer answers. Close the journal too
    /// ([`Journal::close`](crate::Journal::close)) to close the writer
    /// connections.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if tokio::time::timeout(self.read_timeout, self.pool.close())
                .await
                .is_err()
            {
                tracing::warn!("closing the read connections timed out");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::{Connection, Executor, PgConnection};

    use super::*;
    use crate::postgres::PostgresConfig;
    use sqlx::Row;

    /// Every lookup can be answered from its index (or a primary key), so
    /// its cost does not grow with the journal. Sequential scans are priced
    /// out, as on a table of millions of rows; a plan that still scans has
    /// no index to use.
    ///
    /// Needs a server: runs under scripts/test-env (see
    /// storage/tests/common/postgres.rs for the rules when it is missing).
    #[tokio::test]
    async fn every_lookup_uses_an_index() {
        let Some(admin_url) = crate::postgres::session::test_database_url() else {
            return;
        };
        let name = format!("switch_test_plans_{}", std::process::id());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.execute(sqlx::raw_sql(&statement)).await.unwrap();
        }
        let options = std::str::FromStr::from_str(&admin_url)
            .map(|o: sqlx::postgres::PgConnectOptions| o.database(&name))
            .unwrap();
        let (journal, store) =
            PostgresStore::open_with_options(options.clone(), PostgresConfig::default())
                .await
                .unwrap();
        let mut conn = PgConnection::connect_with(&options).await.unwrap();
        conn.execute("SET enable_seqscan = off").await.unwrap();
        let id = [0u8; 16];
        let kinds = vec!["authorization"];
        for (sql, index) in [
            (SELECT_TRANSACTION, "transactions_pkey"),
            (FIND_ORIGINAL_AT, "transactions_by_request_keys"),
            (FIND_ORIGINAL_ANY_TIME, "transactions_by_request_keys"),
            (APPROVED_SINCE, "transactions_approved"),
            (IDEMPOTENT_RESPONSE, "idempotency_pkey"),
            (SEALED_PAN, "vault_pkey"),
            (RECORDED_SINCE, "transactions_pkey"),
        ] {
            let explain = format!("EXPLAIN {sql}");
            let query = sqlx::query(&explain);
            let query = match sql {
                SELECT_TRANSACTION | SEALED_PAN | RECORDED_SINCE => query.bind(id.as_slice()),
                FIND_ORIGINAL_AT => query
                    .bind("TERM0001")
                    .bind("000001")
                    .bind("M0001")
                    .bind("1122183000")
                    .bind(Some("north"))
                    .bind(0i64)
                    .bind(kinds.clone()),
                FIND_ORIGINAL_ANY_TIME => query
                    .bind("TERM0001")
                    .bind("000001")
                    .bind("M0001")
                    .bind(None::<&str>)
                    .bind(0i64)
                    .bind(kinds.clone()),
                APPROVED_SINCE => query.bind(0i64).bind(id.as_slice()).bind(100i64),
                _ => query.bind("M0001").bind("key"),
            };
            let plan: Vec<String> = query
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>(0))
                .collect();
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan"), "{sql}:\n{plan}");
            assert!(plan.contains(index), "{sql}:\n{plan}");
        }
        conn.close().await.unwrap();
        journal.close().await;
        store.close().await;
        admin
            .execute(sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await
            .unwrap();
    }
}
