//! The embedded journal writer: one connection, one transaction per batch.
//!
//! Each table is written with multi-row `INSERT`s. SQL text is built once at
//! start for a few fixed row counts (256, 64, 16, 4, 1) and a batch is cut
//! greedily into those, so the connection's statement cache holds a handful
//! of prepared statements instead of one per batch size, and a batch of 300
//! records is 6 statements rather than 300 round trips to sqlx's worker
//! thread.

use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, Row, Sqlite, SqliteConnection};

use protocol::domain::TransactionId;

use super::claims;
use crate::convert::{count_u64, to_i64};
use crate::error::StorageError;
use crate::journal::JournalBackend;
use crate::record::{
    AppendOutcome, ClaimOutcome, JournalRecord, KeyClaim, records_kept, with_refused,
};

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// Row counts a multi-row statement is prepared for, largest first. 256 rows
/// of the widest table (24 columns) bind 6,144 parameters, well inside
/// SQLite's limit of 32,766.
const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// The number of columns in [`transaction_columns!`].
const TRANSACTION_COLUMN_COUNT: usize = 24;

/// One multi-row `INSERT` per entry of [`CHUNK_ROWS`].
#[derive(Debug)]
struct ChunkedInsert {
    statements: Vec<(usize, String)>,
}

impl ChunkedInsert {
    fn new(head: &str, columns: usize, tail: &str) -> ChunkedInsert {
        let row = format!("({})", vec!["?"; columns].join(", "));
        let statements = CHUNK_ROWS
            .iter()
            .map(|&rows| {
                let values = vec![row.as_str(); rows].join(", ");
                (rows, format!("{head} VALUES {values} {tail}"))
            })
            .collect();
        ChunkedInsert { statements }
    }

    /// The largest prepared statement that fits in `rows`.
    fn fitting(&self, rows: usize) -> Option<&(usize, String)> {
        self.statements.iter().find(|(size, _)| *size <= rows)
    }

    /// Inserts every row, binding each with `bind`; returns rows written.
    async fn insert<'q, T>(
        &'q self,
        conn: &mut SqliteConnection,
        rows: &'q [T],
        bind: impl Fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
        operation: &'static str,
    ) -> Result<u64, StorageError> {
        let mut rest = rows;
        let mut written = 0;
        while let Some((size, sql)) = self.fitting(rest.len()) {
            let (chunk, tail) = rest.split_at(*size);
            let query = chunk.iter().fold(sqlx::query(sql), &bind);
            written += query
                .execute(&mut *conn)
                .await
                .map_err(StorageError::database(operation))?
                .rows_affected();
            rest = tail;
        }
        Ok(written)
    }
}

/// Every statement the writer runs, built once.
#[derive(Debug)]
struct Statements {
    transactions: ChunkedInsert,
    reversals: ChunkedInsert,
    vault: ChunkedInsert,
    idempotency: ChunkedInsert,
}

impl Statements {
    fn new() -> Statements {
        Statements {
            // No ON CONFLICT: a duplicate id is a bug upstream, and failing
            // the batch is better than acknowledging a record that is not
            // the one on disk.
            transactions: ChunkedInsert::new(
                concat!("INSERT INTO transactions (", transaction_columns!(), ")"),
                TRANSACTION_COLUMN_COUNT,
                "",
            ),
            reversals: ChunkedInsert::new(
                "INSERT INTO reversals (original_id, reversal_id, created_at_ms)",
                3,
                "ON CONFLICT (original_id) DO NOTHING",
            ),
            vault: ChunkedInsert::new(
                "INSERT INTO vault (token, key_id, nonce, ciphertext, created_at_ms)",
                5,
                "ON CONFLICT (token) DO NOTHING",
            ),
            idempotency: ChunkedInsert::new(
                "INSERT INTO idempotency (merchant_id, idempotency_key, request_hash, \
                 response_json, status, transaction_id, created_at_ms)",
                7,
                "ON CONFLICT (merchant_id, idempotency_key) DO NOTHING",
            ),
        }
    }
}

/// The embedded backend's writer. Holds its one connection; after any
/// failure it drops it and opens a fresh one for the next batch, so no
/// half-finished transaction or broken handle outlives the batch it failed.
#[derive(Debug)]
pub(crate) struct SqliteJournalWriter {
    conn: Option<SqliteConnection>,
    options: SqliteConnectOptions,
    statements: Statements,
}

impl SqliteJournalWriter {
    pub(crate) fn new(conn: SqliteConnection, options: SqliteConnectOptions) -> Self {
        SqliteJournalWriter {
            conn: Some(conn),
            options,
            statements: Statements::new(),
        }
    }
}

/// The writer's connection, opened afresh after a failure dropped it.
async fn connection<'c>(
    conn: &'c mut Option<SqliteConnection>,
    options: &SqliteConnectOptions,
) -> Result<&'c mut SqliteConnection, StorageError> {
    let open = match conn.take() {
        Some(open) => open,
        None => SqliteConnection::connect_with(options)
            .await
            .map_err(StorageError::database("reconnect the journal writer"))?,
    };
    Ok(conn.insert(open))
}

impl JournalBackend for SqliteJournalWriter {
    async fn write_batch(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        let conn = connection(&mut self.conn, &self.options).await?;
        let written = write_batch_in_transaction(conn, &self.statements, batch).await;
        if written.is_err()
            && let Some(conn) = self.conn.take()
        {
            // Closing rolls back whatever the failed batch left open.
            let _ = conn.close().await;
        }
        written
    }

    async fn write_claims(
        &mut self,
        claims: &[KeyClaim],
    ) -> Result<Vec<ClaimOutcome>, StorageError> {
        let conn = connection(&mut self.conn, &self.options).await?;
        let written = claims::write_claims_unsynced(conn, claims).await;
        if written.is_err()
            && let Some(conn) = self.conn.take()
        {
            let _ = conn.close().await;
        }
        written
    }

    async fn close(mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Copy the WAL into the main file and empty it now: the read
            // pool's connections are read-only and cannot, and a restart
            // then starts from one file instead of replaying a large WAL.
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
            {
                tracing::warn!(%error, "checkpointing the journal at close");
            }
            if let Err(error) = conn.close().await {
                tracing::warn!(%error, "closing the journal writer connection");
            }
        }
    }
}

async fn write_batch_in_transaction(
    conn: &mut SqliteConnection,
    statements: &Statements,
    batch: &[JournalRecord],
) -> Result<Vec<AppendOutcome>, StorageError> {
    // IMMEDIATE takes the write lock before the first insert, so a lock held
    // elsewhere fails the batch here (after the busy timeout) rather than
    // half-way through it.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StorageError::database("begin a journal batch"))?;
    // A record whose idempotency key another request holds (its claim, or
    // its stored answer) is not written at all, nor anything riding on it:
    // at most one record per key stands.
    let taken = if batch.iter().any(|r| r.idempotency.is_some()) {
        claims::keys_taken(&mut tx, batch).await?
    } else {
        Vec::new()
    };
    let kept = records_kept(batch, &taken);
    let batch = kept.as_deref().unwrap_or(batch);
    let written = statements
        .transactions
        .insert(&mut tx, batch, bind_transaction, "insert transactions")
        .await?;
    if written != count_u64(batch.len()) {
        return Err(StorageError::RowCount {
            table: "transactions",
            expected: batch.len(),
            written,
        });
    }
    let mut outcomes = vec![AppendOutcome::Recorded; batch.len()];

    let reversals: Vec<&JournalRecord> = batch
        .iter()
        .filter(|r| r.kind.is_reversal() && r.original_id.is_some())
        .collect();
    let inserted = statements
        .reversals
        .insert(&mut tx, &reversals, bind_reversal, "insert reversals")
        .await?;
    // Every insert won, the usual case: every reversal is first. Otherwise
    // ask, per reversal, which one holds its original; a duplicate inside
    // this batch loses to the one before it, as the rows go in in order.
    if inserted != count_u64(reversals.len()) {
        for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            let Some(original) = record.original_id.filter(|_| record.kind.is_reversal()) else {
                continue;
            };
            let by = reversal_holder(&mut tx, &original).await?;
            if by != record.id {
                *outcome = AppendOutcome::AlreadyReversed { by };
            }
        }
    }

    let sealed: Vec<&JournalRecord> = batch.iter().filter(|r| r.sealed_pan.is_some()).collect();
    // A token already in the vault is skipped: the same card sealed twice
    // holds the same PAN.
    statements
        .vault
        .insert(&mut tx, &sealed, bind_sealed_pan, "insert vault entries")
        .await?;

    let keyed: Vec<&JournalRecord> = batch.iter().filter(|r| r.idempotency.is_some()).collect();
    let inserted = statements
        .idempotency
        .insert(
            &mut tx,
            &keyed,
            bind_idempotency,
            "insert idempotency entries",
        )
        .await?;
    // Every key was checked free above, and this is the only writer.
    if inserted != count_u64(keyed.len()) {
        return Err(StorageError::RowCount {
            table: "idempotency",
            expected: keyed.len(),
            written: inserted,
        });
    }
    if !keyed.is_empty() {
        claims::complete_claims(&mut tx, batch).await?;
    }

    tx.commit()
        .await
        .map_err(StorageError::database("commit a journal batch"))?;
    Ok(with_refused(taken, outcomes))
}

/// The reversal that holds `original`, inside the batch's transaction.
async fn reversal_holder(
    conn: &mut SqliteConnection,
    original: &TransactionId,
) -> Result<TransactionId, StorageError> {
    let row = sqlx::query("SELECT reversal_id FROM reversals WHERE original_id = ?")
        .bind(original.as_bytes().as_slice())
        .fetch_one(&mut *conn)
        .await
        .map_err(StorageError::database("look up who reversed an original"))?;
    holder_id(&row, "reversals", "reversal_id")
}

fn holder_id(
    row: &SqliteRow,
    table: &'static str,
    column: &'static str,
) -> Result<TransactionId, StorageError> {
    let bytes: &[u8] = row
        .try_get(0)
        .map_err(|_| StorageError::Corrupt { table, column })?;
    bytes
        .try_into()
        .map(TransactionId::from_bytes)
        .map_err(|_| StorageError::Corrupt { table, column })
}

fn bind_transaction<'q>(query: SqliteQuery<'q>, r: &'q JournalRecord) -> SqliteQuery<'q> {
    query
        .bind(r.id.as_bytes().as_slice())
        .bind(to_i64(r.created_at_ms))
        .bind(r.channel.as_str())
        .bind(r.kind.as_str())
        .bind(r.mti.as_str())
        .bind(r.processing_code.as_ref().map(|t| t.as_str()))
        .bind(to_i64(r.amount.minor()))
        .bind(i64::from(r.currency.numeric()))
        .bind(r.merchant_id.as_str())
        .bind(r.terminal_id.as_str())
        .bind(r.stan.as_ref().map(|t| t.as_str()))
        .bind(r.rrn.as_ref().map(|t| t.as_str()))
        .bind(r.transmitted_at.as_ref().map(|t| t.as_str()))
        .bind(r.token.as_ref().map(|t| t.as_bytes().as_slice()))
        .bind(r.bin.as_deref())
        .bind(r.last4.as_deref())
        .bind(r.response_code.as_str())
        .bind(r.auth_code.as_ref().map(|t| t.as_str()))
        .bind(r.reason.map(|reason| reason.as_str()))
        .bind(r.original_id.as_ref().map(|id| id.as_bytes().as_slice()))
        .bind(i64::from(r.timings.decode_us))
        .bind(i64::from(r.timings.decide_us))
        .bind(i64::from(r.timings.vault_us))
        .bind(r.acquirer.as_deref())
}

fn bind_reversal<'q>(query: SqliteQuery<'q>, r: &'q &'q JournalRecord) -> SqliteQuery<'q> {
    query
        .bind(r.original_id.as_ref().map(|id| id.as_bytes().as_slice()))
        .bind(r.id.as_bytes().as_slice())
        .bind(to_i64(r.created_at_ms))
}

fn bind_sealed_pan<'q>(query: SqliteQuery<'q>, r: &'q &'q JournalRecord) -> SqliteQuery<'q> {
    let sealed = r.sealed_pan.as_ref();
    query
        .bind(sealed.map(|s| s.token.as_bytes().as_slice()))
        .bind(sealed.map(|s| i64::from(s.key_id)))
        .bind(sealed.map(|s| s.nonce.as_slice()))
        .bind(sealed.map(|s| s.ciphertext.as_slice()))
        .bind(to_i64(r.created_at_ms))
}

fn bind_idempotency<'q>(query: SqliteQuery<'q>, r: &'q &'q JournalRecord) -> SqliteQuery<'q> {
    let entry = r.idempotency.as_ref();
    query
        .bind(entry.map(|e| e.merchant_id.as_str()))
        .bind(entry.map(|e| e.key.as_str()))
        .bind(entry.map(|e| e.request_hash.as_slice()))
        .bind(entry.map(|e| e.response_json.as_str()))
        .bind(entry.map(|e| i64::from(e.status)))
        .bind(r.id.as_bytes().as_slice())
        .bind(to_i64(r.created_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims commit without an fsync of their own; the records after them
    /// must not: the connection is back at `synchronous = FULL` (2).
    #[tokio::test]
    async fn records_after_claims_are_fsynced_again() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, store) = crate::SqliteStore::open(
            &dir.path().join("journal.sqlite"),
            crate::JournalConfig::default(),
        )
        .await
        .unwrap();
        journal.close().await;
        drop(store);
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("journal.sqlite"))
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let conn = SqliteConnection::connect_with(&options).await.unwrap();
        let mut writer = SqliteJournalWriter::new(conn, options);
        let claim = KeyClaim::Release {
            merchant_id: "M0001".to_owned(),
            key: "key-1".to_owned(),
            claimed_by: TransactionId::new(1, [0; 10]),
        };
        writer.write_claims(&[claim]).await.unwrap();
        let conn = writer.conn.as_mut().unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
    }

    #[test]
    fn batches_split_into_prepared_sizes() {
        let insert = ChunkedInsert::new("INSERT INTO t (a, b)", 2, "");
        let mut rest = 300;
        let mut sizes = Vec::new();
        while let Some((size, _)) = insert.fitting(rest) {
            sizes.push(*size);
            rest -= size;
        }
        assert_eq!(sizes, [256, 16, 16, 4, 4, 4]);
        assert_eq!(
            insert.fitting(1).unwrap().1,
            "INSERT INTO t (a, b) VALUES (?, ?) "
        );
        assert!(insert.fitting(0).is_none());
    }
}
