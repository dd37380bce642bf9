//! The database's own limits, measured the way DESIGN.md names them, so a
//! journal figure is always read as a ratio to the same database on the same
//! machine in the same run:
//!
//! - `L_1`: the latency of one commit holding one row (percentiles);
//! - `K_1`: commits per second, one row each, one connection, back to back;
//! - `K_copy`: rows per second of one raw bulk insert of identical rows
//!   (COPY on PostgreSQL; on SQLite, which has no COPY, one transaction of
//!   500-row INSERTs).
//!
//! Rows have the shape of an approved authorization in `transactions`, with
//! the real table's constraints and indexes: on PostgreSQL a scratch table
//! `LIKE transactions INCLUDING ALL` in the same database (dropped after), on
//! SQLite a fresh file migrated with the journal's schema and its pragmas
//! (WAL, `synchronous = FULL`). Nothing here touches the switch's own rows.
//!
//! `loadtest bench` calls these beside the end-to-end figures.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Executor};
use tokio::time::Instant;

use crate::clock::unix_ms_now;
use crate::convert::count_u64;
use crate::error::StorageError;
use crate::vault::fill_random;

/// The scratch table on PostgreSQL.
const PG_TABLE: &str = "baseline_transactions";

/// What one baseline run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// `K_copy`: rows per second of the best of three bulk inserts.
    pub k_copy_rows_per_s: f64,
    pub k_copy_rows: usize,
    /// `K_1`: single-row commits per second.
    pub k_1_commits_per_s: f64,
    pub k_1_commits: usize,
    /// `L_1`: one single-row commit, in microseconds.
    pub l_1_us_p50: f64,
    pub l_1_us_p99: f64,
    pub l_1_us_mean: f64,
}

/// How much each baseline does.
#[derive(Debug, Clone, Copy)]
pub struct BaselineSize {
    /// Rows of one bulk insert (`K_copy`).
    pub bulk_rows: usize,
    /// Sequential single-row commits (`K_1`, `L_1`).
    pub single_commits: usize,
}

impl Default for BaselineSize {
    fn default() -> BaselineSize {
        BaselineSize {
            bulk_rows: 20_000,
            single_commits: 1_000,
        }
    }
}

/// The columns every baseline row fills, in bind order.
const COLUMNS: &str = "id, created_at_ms, channel, kind, mti, processing_code, amount_minor, \
    currency_numeric, merchant_id, terminal_id, stan, rrn, transmitted_at, token, bin, last4, \
    response_code, auth_code, decode_us, decide_us, vault_us";
const PLACEHOLDERS: &str = "$1, $2, 'iso', 'authorization', '0100', '000000', $3, 840, \
    'ACME0000001', 'TERM0001', $4, $5, '1122093000', $6, '411111', '1111', '00', '123456', \
    12, 30, 4";

/// The varying parts of row `n`: a fresh id and token, a STAN and RRN.
struct Row {
    id: [u8; 16],
    token: [u8; 16],
    stan: String,
    rrn: String,
}

impl Row {
    fn new(n: usize) -> Row {
        let mut id = [0u8; 16];
        let mut token = [0u8; 16];
        fill_random(&mut id);
        fill_random(&mut token);
        Row {
            id,
            token,
            stan: format!("{:06}", n % 1_000_000),
            rrn: format!("{:012}", n),
        }
    }
}

/// A count as `f64`, for a rate or a mean.
#[allow(
    clippy::as_conversions,
    reason = "usize to f64 has no From; these counts are thousands, far below f64's exact 2^53"
)]
fn count_f64(count: usize) -> f64 {
    count as f64
}

/// Percentiles and rate of the single-row commits.
fn single_commit_figures(latencies: &mut [Duration], elapsed: Duration) -> (f64, f64, f64, f64) {
    latencies.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |per_mille: usize| {
        let index = (latencies.len().saturating_mul(per_mille) / 1000)
            .min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().map_or(0.0, us)
    };
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|d| us(*d)).sum::<f64>() / count_f64(latencies.len())
    };
    let rate = count_f64(latencies.len()) / elapsed.as_secs_f64().max(1e-9);
    (rate, at(500), at(990), mean)
}

/// Measures the three baselines on the PostgreSQL database at `url`, whose
/// `transactions` table must exist (the switch migrates it at start).
pub async fn postgres(url: &str, size: BaselineSize) -> Result<Baselines, StorageError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(StorageError::database("reading the database URL"))?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(StorageError::database("connecting for the baselines"))?;
    let result = postgres_on(&mut conn, size).await;
    // The scratch table goes whatever happened.
    let _ = conn
        .execute(format!("DROP TABLE IF EXISTS {PG_TABLE}").as_str())
        .await;
    let _ = conn.close().await;
    result
}

async fn postgres_on(
    conn: &mut PgConnection,
    size: BaselineSize,
) -> Result<Baselines, StorageError> {
    conn.execute(
        format!(
            "DROP TABLE IF EXISTS {PG_TABLE}; \
             CREATE TABLE {PG_TABLE} (LIKE transactions INCLUDING ALL)"
        )
        .as_str(),
    )
    .await
    .map_err(StorageError::database("creating the baseline table"))?;

    // L_1 and K_1: autocommit, one row a statement.
    let insert = format!("INSERT INTO {PG_TABLE} ({COLUMNS}) VALUES ({PLACEHOLDERS})");
    let mut latencies = Vec::with_capacity(size.single_commits);
    let started = Instant::now();
    for n in 0..size.single_commits {
        let row = Row::new(n);
        let one = Instant::now();
        sqlx::query(&insert)
            .bind(row.id.as_slice())
            .bind(unix_ms_now())
            .bind(2500_i64)
            .bind(&row.stan)
            .bind(&row.rrn)
            .bind(row.token.as_slice())
            .execute(&mut *conn)
            .await
            .map_err(StorageError::database("a single-row commit"))?;
        latencies.push(one.elapsed());
    }
    let (k_1, p50, p99, mean) = single_commit_figures(&mut latencies, started.elapsed());

    // K_copy: COPY of identical rows in text format, best of three.
    let mut best = Duration::MAX;
    for round in 0..3 {
        conn.execute(format!("TRUNCATE {PG_TABLE}").as_str())
            .await
            .map_err(StorageError::database("emptying the baseline table"))?;
        let mut text = Vec::with_capacity(size.bulk_rows * 200);
        let created = unix_ms_now();
        for n in 0..size.bulk_rows {
            let row = Row::new(round * size.bulk_rows + n);
            text.extend_from_slice(
                format!(
                    "\\\\x{}\t{created}\tiso\tauthorization\t0100\t000000\t2500\t840\t\
                     ACME0000001\tTERM0001\t{}\t{}\t1122093000\t\\\\x{}\t411111\t1111\t00\t\
                     123456\t12\t30\t4\n",
                    hex(&row.id),
                    row.stan,
                    row.rrn,
                    hex(&row.token)
                )
                .as_bytes(),
            );
        }
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("COPY {PG_TABLE} ({COLUMNS}) FROM STDIN"))
            .await
            .map_err(StorageError::database("starting COPY"))?;
        copy.send(text)
            .await
            .map_err(StorageError::database("sending COPY rows"))?;
        let written = copy
            .finish()
            .await
            .map_err(StorageError::database("finishing COPY"))?;
        best = best.min(started.elapsed());
        if written != count_u64(size.bulk_rows) {
            return Err(StorageError::RowCount {
                table: PG_TABLE,
                expected: size.bulk_rows,
                written,
            });
        }
    }
    Ok(Baselines {
        backend: "postgres",
        k_copy_rows_per_s: count_f64(size.bulk_rows) / best.as_secs_f64().max(1e-9),
        k_copy_rows: size.bulk_rows,
        k_1_commits_per_s: k_1,
        k_1_commits: size.single_commits,
        l_1_us_p50: p50,
        l_1_us_p99: p99,
        l_1_us_mean: mean,
    })
}

/// Rows of one multi-row INSERT on SQLite: 6 parameters each, far inside
/// SQLite's limit of 32 766.
const SQLITE_BULK_ROWS: usize = 500;

/// [`PLACEHOLDERS`] with SQLite's `?` for each `$N`, so the parameters of
/// a multi-row statement are taken in order.
fn anonymous_placeholders() -> String {
    let mut out = String::with_capacity(PLACEHOLDERS.len());
    let mut chars = PLACEHOLDERS.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// `INSERT INTO transactions (...) VALUES (...), (...)` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let row = format!("({})", anonymous_placeholders());
    let values = vec![row.as_str(); rows].join(", ");
    format!("INSERT INTO transactions ({COLUMNS}) VALUES {values}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Measures the three baselines on a fresh SQLite file in `dir`, migrated
/// with the journal's schema and opened with the journal's pragmas. The file
/// is removed after.
pub async fn sqlite(dir: &Path, size: BaselineSize) -> Result<Baselines, StorageError> {
    let path = dir.join("baseline.sqlite");
    let result = sqlite_at(&path, size).await;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    result
}

async fn sqlite_at(path: &Path, size: BaselineSize) -> Result<Baselines, StorageError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("cache_size", "-65536");
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    crate::sqlite::schema::migrate(&mut conn, &options).await?;
    let insert = format!(
        "INSERT INTO transactions ({COLUMNS}) VALUES ({})",
        anonymous_placeholders()
    );

    let mut latencies = Vec::with_capacity(size.single_commits);
    let started = Instant::now();
    for n in 0..size.single_commits {
        let row = Row::new(n);
        let one = Instant::now();
        sqlx::query(&insert)
            .bind(row.id.as_slice())
            .bind(unix_ms_now())
            .bind(2500_i64)
            .bind(&row.stan)
            .bind(&row.rrn)
            .bind(row.token.as_slice())
            .execute(&mut conn)
            .await
            .map_err(StorageError::database("a single-row commit"))?;
        latencies.push(one.elapsed());
    }
    let (k_1, p50, p99, mean) = single_commit_figures(&mut latencies, started.elapsed());

    let bulk_insert = multi_row_insert(SQLITE_BULK_ROWS);
    let mut best = Duration::MAX;
    for round in 0..3 {
        conn.execute("DELETE FROM transactions")
            .await
            .map_err(StorageError::database("emptying the baseline table"))?;
        let rows: Vec<Row> = (0..size.bulk_rows)
            .map(|n| Row::new((round + 1) * size.bulk_rows + n))
            .collect();
        let created = unix_ms_now();
        let started = Instant::now();
        let mut transaction = conn
            .begin()
            .await
            .map_err(StorageError::database("starting the bulk insert"))?;
        // SQLite has no COPY: its bulk path is multi-row INSERTs, as dense
        // as the parameter limit allows, in one transaction. (Row by row
        // through sqlx costs a hop to its worker thread per row and measured
        // 16 000 rows/s, below the journal itself.)
        for chunk in rows.chunks(SQLITE_BULK_ROWS) {
            let sql = if chunk.len() == SQLITE_BULK_ROWS {
                &bulk_insert
            } else {
                &multi_row_insert(chunk.len())
            };
            let query = chunk.iter().fold(sqlx::query(sql), |query, row| {
                query
                    .bind(row.id.as_slice())
                    .bind(created)
                    .bind(2500_i64)
                    .bind(&row.stan)
                    .bind(&row.rrn)
                    .bind(row.token.as_slice())
            });
            query
                .execute(&mut *transaction)
                .await
                .map_err(StorageError::database("a bulk insert"))?;
        }
        transaction
            .commit()
            .await
            .map_err(StorageError::database("committing the bulk insert"))?;
        best = best.min(started.elapsed());
    }
    let _ = conn.close().await;
    Ok(Baselines {
        backend: "sqlite",
        k_copy_rows_per_s: count_f64(size.bulk_rows) / best.as_secs_f64().max(1e-9),
        k_copy_rows: size.bulk_rows,
        k_1_commits_per_s: k_1,
        k_1_commits: size.single_commits,
        l_1_us_p50: p50,
        l_1_us_p99: p99,
        l_1_us_mean: mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_baselines_measure_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let size = BaselineSize {
            // One full multi-row statement and a shorter one.
            bulk_rows: 700,
            single_commits: 20,
        };
        let figures = sqlite(dir.path(), size).await.unwrap();
        assert_eq!(figures.backend, "sqlite");
        assert_eq!(figures.k_copy_rows, 700);
        assert!(figures.k_copy_rows_per_s > 0.0);
        assert!(figures.k_1_commits_per_s > 0.0);
        assert!(figures.l_1_us_p50 > 0.0);
        assert!(figures.l_1_us_p99 >= figures.l_1_us_p50);
        // The scratch file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
