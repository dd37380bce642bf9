//! The PostgreSQL journal writer: one connection, one statement per batch.
//!
//! A batch is sent as column arrays and written by a single statement whose
//! four data-modifying CTEs each do one multi-row `INSERT ... SELECT FROM
//! UNNEST(...)`: transactions, reversals, vault entries, idempotency
//! entries (the statements and their binds are in `batch`). The statement
//! text does not depend on the batch size, so each connection prepares it
//! once.
//!
//! A batch without idempotency keys (every ISO request) is that statement
//! alone, its own transaction: one round trip, the commit included. It has
//! no `ON CONFLICT` on ids and originals, so it commits only when every
//! record is new and every first reversal wins, and then each outcome
//! follows from the batch itself. Anything else fails it whole with a
//! unique violation, and the batch is written again as any batch with keys
//! is: BEGIN, the claims checked, the statement with `ON CONFLICT DO
//! NOTHING`, the tables asked who holds what, COMMIT.
//!
//! There, who holds a reversal's original or an idempotency key is decided
//! by reading the table, not by whose insert happened to run. So writing a
//! batch that is already committed changes nothing and answers what the
//! first write answered: that is what makes it safe to retry a batch whose
//! connection dropped around its commit, when nobody can say whether it
//! committed.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};
use tokio::time::Instant;

use protocol::domain::TransactionId;

use super::batch::{BatchRows, INSERT_BATCH, INSERT_BATCH_WHOLE, TAKEN, reversed_original};
use super::claims;
use super::session::{
    PostgresConfig, WRITER_APPLICATION_NAME, connect, session_settings, timed_out,
};
use crate::columns::{Columns, record_from};
use crate::convert::count_u64;
use crate::error::StorageError;
use crate::journal::JournalBackend;
use crate::record::{
    AppendOutcome, ClaimOutcome, JournalRecord, KeyClaim, records_kept, with_refused,
};

/// Rows already in `transactions` with a batch's ids, to tell a retried
/// batch (the same records) from a clash (another record under an id).
const SELECT_EXISTING: &str = concat!(
    "SELECT ",
    transaction_columns!(),
    " FROM transactions WHERE id = ANY($1::bytea[])"
);

/// Who holds each original a batch reverses.
const SELECT_REVERSAL_HOLDERS: &str =
    "SELECT original_id, reversal_id FROM reversals WHERE original_id = ANY($1::bytea[])";

/// Who holds each idempotency key a batch carries.
const SELECT_IDEMPOTENCY_HOLDERS: &str = "\
    SELECT i.merchant_id, i.idempotency_key, i.transaction_id \
    FROM idempotency AS i \
    JOIN UNNEST($1::text[], $2::text[]) AS k (merchant_id, idempotency_key) \
      ON i.merchant_id = k.merchant_id AND i.idempotency_key = k.idempotency_key";

/// The PostgreSQL backend's writer: one connection. After any failure it
/// drops the connection and opens a fresh one for the next batch, so no
/// half-finished transaction or broken socket outlives the batch it failed.
///
/// Public so that tests and benchmarks can drive batches directly; the
/// switch gets its writers from [`PostgresStore::open`](crate::PostgresStore::open).
#[derive(Debug)]
pub struct PostgresWriter {
    conn: Option<PgConnection>,
    options: PgConnectOptions,
    settings: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
}

impl PostgresWriter {
    /// Opens a writer connection with `config`'s timeouts.
    pub async fn connect(
        options: &PgConnectOptions,
        config: &PostgresConfig,
    ) -> Result<PostgresWriter, StorageError> {
        let mut writer = PostgresWriter {
            conn: None,
            options: options.clone().application_name(WRITER_APPLICATION_NAME),
            settings: session_settings(
                config.statement_timeout_ms,
                config.journal.busy_timeout_ms,
                false,
            ),
            connect_timeout: Duration::from_millis(u64::from(config.connect_timeout_ms)),
            statement_timeout: Duration::from_millis(u64::from(config.statement_timeout_ms)),
        };
        writer.conn = Some(writer.reconnect().await?);
        Ok(writer)
    }

    async fn reconnect(&self) -> Result<PgConnection, StorageError> {
        connect(&self.options, self.connect_timeout, &self.settings).await
    }

    /// One attempt: connect if needed, write, commit. On any error the
    /// connection is dropped, never reused.
    async fn write_once(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self.reconnect().await?;
                self.conn.insert(conn)
            }
        };
        let written = write_batch_on(conn, batch).await;
        if written.is_err() {
            // Dropping closes the socket; the server rolls back whatever
            // the batch left open. No goodbye is sent: on a broken
            // connection it could wait for ever.
            self.conn = None;
        }
        written
    }
}

impl JournalBackend for PostgresWriter {
    /// Writes the batch; if the connection turns out to be gone (killed,
    /// restarted server, failover), reconnects and writes it once more.
    /// The second write is safe whether or not the first committed: it then
    /// finds the batch in place and answers as the first would have. The
    /// whole call, retry included, ends within the connect and statement
    /// timeouts.
    async fn write_batch(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        let bound = self.connect_timeout + self.statement_timeout;
        let deadline = Instant::now() + bound;
        let mut retried = false;
        loop {
            match tokio::time::timeout_at(deadline, self.write_once(batch)).await {
                Ok(Ok(outcomes)) => return Ok(outcomes),
                Ok(Err(error)) if !retried && is_connection_lost(&error) => {
                    tracing::warn!(%error, records = batch.len(), "journal connection lost; writing the batch again on a new one");
                    retried = true;
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    // The attempt was dropped mid-flight: its connection
                    // is in an unknown state.
                    self.conn = None;
                    return Err(StorageError::Database {
                        operation: "write a journal batch",
                        source: timed_out("a journal batch", bound),
                    });
                }
            }
        }
    }

    /// Claims are not written again after a lost connection: the caller is
    /// answered 503 and retries, and a claim that did commit is then found
    /// as its own ([`IdempotencyClaim::against`](crate::IdempotencyClaim)).
    async fn write_claims(
        &mut self,
        claims: &[KeyClaim],
    ) -> Result<Vec<ClaimOutcome>, StorageError> {
        let bound = self.connect_timeout + self.statement_timeout;
        let attempt = async {
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => {
                    let conn = self.reconnect().await?;
                    self.conn.insert(conn)
                }
            };
            claims::write_claims(conn, claims).await
        };
        let written = tokio::time::timeout(bound, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Database {
                    operation: "write idempotency claims",
                    source: timed_out("idempotency claims", bound),
                })
            });
        if written.is_err() {
            self.conn = None;
        }
        written
    }

    async fn close(mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // A goodbye to a server that no longer answers would wait for ever,
        // and shutdown with it; after the timeout the socket is just dropped.
        match tokio::time::timeout(self.connect_timeout, conn.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "closing a journal writer connection"),
            Err(_) => tracing::warn!("closing a journal writer connection timed out"),
        }
    }
}

/// Whether `error` says the connection is gone rather than that the batch
/// was refused: worth one more try on a new connection.
fn is_connection_lost(error: &StorageError) -> bool {
    let StorageError::Database { source, .. } = error else {
        return false;
    };
    match source {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::TimedOut,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: the server is shutting
            // down or starting (pg_terminate_backend, restart, failover);
            // 40001/40P01: a serialization failure or deadlock, which a
            // second try in a fresh transaction resolves.
            code.starts_with("08")
                || ["57P01", "57P02", "57P03", "40001", "40P01"].contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// Writes a batch without idempotency keys as one statement that is its own
/// transaction; any other batch, or one whose id or original that statement
/// finds taken, in a transaction that asks the tables who holds what.
async fn write_batch_on(
    conn: &mut PgConnection,
    batch: &[JournalRecord],
) -> Result<Vec<AppendOutcome>, StorageError> {
    if batch.iter().all(|r| r.idempotency.is_none()) {
        match write_whole_batch(conn, batch).await {
            Err(StorageError::Database {
                source: sqlx::Error::Database(error),
                ..
            }) if error.code().as_deref() == Some(TAKEN) => {
                // Nothing was written: the statement rolled back whole.
            }
            written => return written,
        }
    }
    write_batch_in_transaction(conn, batch).await
}

/// [`INSERT_BATCH_WHOLE`]: one round trip, and the commit with it.
async fn write_whole_batch(
    conn: &mut PgConnection,
    batch: &[JournalRecord],
) -> Result<Vec<AppendOutcome>, StorageError> {
    let rows = BatchRows::new(batch);
    rows.bind(sqlx::query(INSERT_BATCH_WHOLE))
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database("insert a journal batch"))?;
    // Every record and every first reversal of each original was written.
    let mut outcomes = vec![AppendOutcome::Recorded; batch.len()];
    let written = count_u64(rows.reversals.len());
    mark_reversed(batch, &rows.reversals, &mut outcomes, written)?;
    Ok(outcomes)
}

/// Answers `AlreadyReversed` to each reversal in `batch` whose original
/// `holders` says another reversal holds.
fn mark_reversed(
    batch: &[JournalRecord],
    holders: &HashMap<TransactionId, TransactionId>,
    outcomes: &mut [AppendOutcome],
    reversals_written: u64,
) -> Result<(), StorageError> {
    for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
        let Some(original) = reversed_original(record) else {
            continue;
        };
        let by = *holders.get(&original).ok_or(StorageError::RowCount {
            table: "reversals",
            expected: holders.len(),
            written: reversals_written,
        })?;
        if by != record.id {
            *outcome = AppendOutcome::AlreadyReversed { by };
        }
    }
    Ok(())
}

async fn write_batch_in_transaction(
    conn: &mut PgConnection,
    batch: &[JournalRecord],
) -> Result<Vec<AppendOutcome>, StorageError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(StorageError::database("begin a journal batch"))?;
    // A record whose key another request's claim holds is not written at
    // all; one that loses its key to a stored answer is removed below.
    let taken = if batch.iter().any(|r| r.idempotency.is_some()) {
        claims::claimed_by_others(&mut tx, batch).await?
    } else {
        Vec::new()
    };
    let kept = records_kept(batch, &taken);
    let batch = kept.as_deref().unwrap_or(batch);
    let rows = BatchRows::new(batch);
    let counts = rows
        .bind(sqlx::query(INSERT_BATCH))
        .fetch_one(&mut *tx)
        .await
        .map_err(StorageError::database("insert a journal batch"))?;
    let count = |index: usize| -> Result<u64, StorageError> {
        counts
            .try_get::<i64, _>(index)
            .ok()
            .and_then(|count| u64::try_from(count).ok())
            .ok_or(StorageError::Corrupt {
                table: "transactions",
                column: "count",
            })
    };
    let transactions_written = count(0)?;
    let reversals_written = count(1)?;
    let idempotency_written = count(3)?;

    // Fewer rows than records: some ids are taken. By this very batch, on a
    // retry, is fine; by any other record, the batch is refused whole.
    if transactions_written != count_u64(batch.len()) {
        check_already_written(&mut tx, batch, transactions_written).await?;
    }

    let mut outcomes = vec![AppendOutcome::Recorded; batch.len()];
    if !rows.reversals.is_empty() {
        // Every first reversal of each original won its insert, the usual
        // case: the holders are known. Otherwise ask the table.
        let holders = if reversals_written == count_u64(rows.reversals.len()) {
            rows.reversals.clone()
        } else {
            reversal_holders(&mut tx, &rows.reversals).await?
        };
        mark_reversed(batch, &holders, &mut outcomes, reversals_written)?;
    }
    if !rows.keys.is_empty() {
        let holders = if idempotency_written == count_u64(rows.keys.len()) {
            rows.keys.clone()
        } else {
            idempotency_holders(&mut tx, &rows.keys).await?
        };
        for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            let Some(entry) = &record.idempotency else {
                continue;
            };
            let key = (entry.merchant_id.as_str(), entry.key.as_str());
            let by = *holders.get(&key).ok_or(StorageError::RowCount {
                table: "idempotency",
                expected: rows.keys.len(),
                written: idempotency_written,
            })?;
            if by != record.id {
                *outcome = AppendOutcome::IdempotencyKeyTaken { by };
            }
        }
        let refused: Vec<TransactionId> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, AppendOutcome::IdempotencyKeyTaken { .. }))
            .map(|(record, _)| record.id)
            .collect();
        if !refused.is_empty() {
            claims::delete_refused(&mut tx, &refused).await?;
        }
        let written: Vec<&JournalRecord> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(record, outcome)| {
                record.idempotency.is_some() && **outcome == AppendOutcome::Recorded
            })
            .map(|(record, _)| record)
            .collect();
        claims::complete_claims(&mut tx, &written).await?;
    }

    tx.commit()
        .await
        .map_err(StorageError::database("commit a journal batch"))?;
    Ok(with_refused(taken, outcomes))
}

/// Checks that every record of `batch` is in `transactions` exactly as
/// given: true of a batch written before (a retry), false when another
/// record holds one of the ids.
async fn check_already_written(
    conn: &mut PgConnection,
    batch: &[JournalRecord],
    written: u64,
) -> Result<(), StorageError> {
    let clash = StorageError::RowCount {
        table: "transactions",
        expected: batch.len(),
        written,
    };
    let ids: Vec<&[u8]> = batch.iter().map(|r| r.id.as_bytes().as_slice()).collect();
    let rows = sqlx::query(SELECT_EXISTING)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::database("read back a batch's transactions"))?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in &rows {
        let record = record_from(&Columns::new(row, "transactions"))?;
        stored.insert(record.id, record);
    }
    for record in batch {
        let Some(on_disk) = stored.get(&record.id) else {
            return Err(clash);
        };
        // Reads give records back without their riders.
        let written_as = JournalRecord {
            sealed_pan: None,
            idempotency: None,
            ..record.clone()
        };
        if *on_disk != written_as {
            tracing::error!(id = %record.id, "another record holds a journal record's id");
            return Err(clash);
        }
    }
    Ok(())
}

async fn reversal_holders(
    conn: &mut PgConnection,
    firsts: &HashMap<TransactionId, TransactionId>,
) -> Result<HashMap<TransactionId, TransactionId>, StorageError> {
    let originals: Vec<&[u8]> = firsts.keys().map(|id| id.as_bytes().as_slice()).collect();
    let rows = sqlx::query(SELECT_REVERSAL_HOLDERS)
        .bind(originals)
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::database("look up who reversed an original"))?;
    rows.iter()
        .map(|row| {
            Ok((
                id_column(row, 0, "reversals", "original_id")?,
                id_column(row, 1, "reversals", "reversal_id")?,
            ))
        })
        .collect()
}

async fn idempotency_holders<'b>(
    conn: &mut PgConnection,
    firsts: &HashMap<(&'b str, &'b str), TransactionId>,
) -> Result<HashMap<(&'b str, &'b str), TransactionId>, StorageError> {
    let (merchants, keys): (Vec<&str>, Vec<&str>) = firsts.keys().copied().unzip();
    let rows = sqlx::query(SELECT_IDEMPOTENCY_HOLDERS)
        .bind(merchants)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::database(
            "look up who holds an idempotency key",
        ))?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let merchant: String = row.try_get(0).map_err(|_| StorageError::Corrupt {
            table: "idempotency",
            column: "merchant_id",
        })?;
        let key: String = row.try_get(1).map_err(|_| StorageError::Corrupt {
            table: "idempotency",
            column: "idempotency_key",
        })?;
        let holder = id_column(row, 2, "idempotency", "transaction_id")?;
        found.insert((merchant, key), holder);
    }
    // Keyed again by the batch's own strings, which outlive the rows.
    Ok(firsts
        .keys()
        .filter_map(|&(merchant, key)| {
            found
                .get(&(merchant.to_owned(), key.to_owned()))
                .map(|&holder| ((merchant, key), holder))
        })
        .collect())
}

fn id_column(
    row: &PgRow,
    index: usize,
    table: &'static str,
    column: &'static str,
) -> Result<TransactionId, StorageError> {
    let bytes: &[u8] = row
        .try_get(index)
        .map_err(|_| StorageError::Corrupt { table, column })?;
    bytes
        .try_into()
        .map(TransactionId::from_bytes)
        .map_err(|_| StorageError::Corrupt { table, column })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::{Connection, Executor};

    use super::*;
    use crate::postgres::session::test_database_url;

    async fn synchronous_commit(conn: &mut PgConnection) -> String {
        sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// An append is acknowledged once its COMMIT returns; with
    /// `synchronous_commit` off, COMMIT returns before the WAL is flushed,
    /// and a server crash then loses acknowledged records. A role (or
    /// database, or server) whose default is off must not reach the
    /// writer's sessions, on its first connection or on a reconnect.
    ///
    /// Needs a server: runs under scripts/test-env.
    #[tokio::test]
    async fn writer_sessions_commit_synchronously_whatever_the_role_default() {
        let Some(admin_url) = test_database_url() else {
            return;
        };
        // A role of its own, so no other test's sessions start with it off.
        let role = format!("switch_test_async_{}", std::process::id());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        for statement in [
            format!("DROP ROLE IF EXISTS {role}"),
            format!("CREATE ROLE {role} LOGIN"),
            format!("ALTER ROLE {role} SET synchronous_commit = off"),
        ] {
            admin.execute(sqlx::raw_sql(&statement)).await.unwrap();
        }
        let options = std::str::FromStr::from_str(&admin_url)
            .map(|o: PgConnectOptions| o.username(&role))
            .unwrap();

        // The role's default reaches a plain session...
        let mut plain = PgConnection::connect_with(&options).await.unwrap();
        assert_eq!(
            synchronous_commit(&mut plain).await,
            "off",
            "the role default"
        );
        plain.close().await.unwrap();
        // ...and not the writer's, nor the one it opens after a failure.
        let mut writer = PostgresWriter::connect(&options, &PostgresConfig::default())
            .await
            .unwrap();
        let conn = writer.conn.as_mut().expect("connected");
        assert_eq!(synchronous_commit(conn).await, "on");
        let mut reconnected = writer.reconnect().await.unwrap();
        assert_eq!(synchronous_commit(&mut reconnected).await, "on");
        reconnected.close().await.unwrap();
        writer.close().await;

        admin
            .execute(sqlx::raw_sql(&format!("DROP ROLE {role}")))
            .await
            .unwrap();
    }
}
