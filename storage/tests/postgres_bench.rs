//! Figures for the PostgreSQL journal, measured against the same server in
//! one run, with the baselines of DESIGN.md beside them:
//!
//! - the journal: 10,000 appends from 200 concurrent tasks, with 1 and with
//!   4 writer connections (elapsed, batches, records/s, average batch);
//! - `L_1` and `K_1`: one row per commit, one connection, no journal;
//! - `K_copy`: raw bulk insert of identical rows, by COPY and by the
//!   journal's own UNNEST statement given all 10,000 rows at once.
//!
//! Not a test of correctness (it asserts only counts), and slow, so it runs
//! only when asked:
//!
//! ```text
//! SWITCH_BENCH=1 scripts/test-env cargo test --release -p storage \
//!     --test postgres_bench -- --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Rates and percentiles printed for a person: the counts are thousands, and
// converting each to f64 by hand would only add noise.
#![allow(clippy::as_conversions)]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::postgres::{TestDatabase, count_rows};
use common::{NOW_MS, approved, token};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use storage::{
    AppendOutcome, JournalBackend, JournalConfig, JournalRecord, PostgresConfig, PostgresStore,
    PostgresWriter, StoreReader,
};
use tokio::time::Instant;

const TASKS: u64 = 200;
const PER_TASK: u64 = 50;
const RECORDS: u64 = TASKS * PER_TASK;
/// Sequential single-row commits for L_1 and K_1.
const SINGLE_COMMITS: usize = 1000;
/// Rows of one bulk insert for K_copy.
const BULK_ROWS: usize = 10_000;

fn bench_config(writer_connections: usize) -> PostgresConfig {
    PostgresConfig {
        journal: JournalConfig {
            queue_capacity: 16_384,
            batch_rows_max: 1024,
            busy_timeout_ms: 30_000,
        },
        writer_connections,
        read_connections: 2,
        connect_timeout_ms: 10_000,
        statement_timeout_ms: 30_000,
    }
}

/// The record every measurement writes, with a fresh id.
fn row(n: u64) -> JournalRecord {
    approved(NOW_MS + n, token((n % 251) as u8), "000001")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_journal_figures() {
    if std::env::var("SWITCH_BENCH").as_deref() != Ok("1") {
        println!("skipped: set SWITCH_BENCH=1 (and run under scripts/test-env) for figures");
        return;
    }
    let Some(db) = TestDatabase::create().await else {
        panic!("SWITCH_BENCH=1 needs DATABASE_URL: run under scripts/test-env");
    };
    // Migrate once; every measurement below starts from an empty table.
    let (journal, store) = PostgresStore::open(&db.url, bench_config(1)).await.unwrap();
    journal.close().await;
    store.close().await;
    let mut conn = db.connect().await;
    let empty = async |conn: &mut PgConnection| {
        for statement in [
            "TRUNCATE transactions, reversals, vault, idempotency",
            "CHECKPOINT",
        ] {
            sqlx::raw_sql(statement).execute(&mut *conn).await.unwrap();
        }
    };

    for writers in [1, 4] {
        empty(&mut conn).await;
        let (journal, store) = PostgresStore::open(&db.url, bench_config(writers))
            .await
            .unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    for n in 0..PER_TASK {
                        let outcome = journal.append(row(task * PER_TASK + n)).await;
                        assert_eq!(outcome, Ok(AppendOutcome::Recorded));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let stats = journal.stats();
        assert_eq!(stats.records, RECORDS);
        println!(
            "journal, {writers} writer connection(s): {RECORDS} appends from {TASKS} tasks in \
             {seconds:.3} s: {:.0} records/s, {} batches ({:.0} commits/s), batch avg {:.1}, \
             largest {}, sizes by power of two {:?}",
            RECORDS as f64 / seconds,
            stats.batches,
            stats.batches as f64 / seconds,
            stats.batch_rows_avg(),
            stats.batch_rows_largest,
            stats.batch_sizes,
        );

        // One caller alone: one record per commit, through the journal.
        let started = Instant::now();
        for n in 0..SINGLE_COMMITS as u64 {
            journal.append(row(1_000_000 + n)).await.unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "journal, {writers} writer connection(s), one caller: {SINGLE_COMMITS} sequential \
             appends: {:.3} ms each, {:.0} commits/s",
            seconds * 1000.0 / SINGLE_COMMITS as f64,
            SINGLE_COMMITS as f64 / seconds,
        );
        journal.close().await;
        store.close().await;
        assert_eq!(
            count_rows(&mut conn, "transactions").await,
            (RECORDS + SINGLE_COMMITS as u64) as i64
        );
    }

    // L_1 and K_1: a row per commit on a plain connection, no journal.
    empty(&mut conn).await;
    let insert_one = "INSERT INTO transactions (id, created_at_ms, channel, kind, mti, \
        processing_code, amount_minor, currency_numeric, merchant_id, terminal_id, stan, rrn, \
        transmitted_at, token, bin, last4, response_code, auth_code, reason, original_id, \
        decode_us, decide_us, vault_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
        $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)";
    let mut latencies = Vec::with_capacity(SINGLE_COMMITS);
    let started = Instant::now();
    for n in 0..SINGLE_COMMITS as u64 {
        let r = row(2_000_000 + n);
        let one = Instant::now();
        sqlx::query(insert_one)
            .bind(r.id.as_bytes().as_slice())
            .bind(r.created_at_ms as i64)
            .bind(r.channel.as_str())
            .bind(r.kind.as_str())
            .bind(r.mti.as_str())
            .bind(r.processing_code.as_ref().map(|t| t.as_str()))
            .bind(r.amount.minor() as i64)
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
            .bind(None::<&str>)
            .bind(None::<&[u8]>)
            .bind(i64::from(r.timings.decode_us))
            .bind(i64::from(r.timings.decide_us))
            .bind(i64::from(r.timings.vault_us))
            .execute(&mut conn)
            .await
            .unwrap();
        latencies.push(one.elapsed());
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "K_1: {:.0} commits/s; L_1: mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms \
         ({SINGLE_COMMITS} single-row INSERTs, autocommit, one connection)",
        SINGLE_COMMITS as f64 / seconds,
        mean.as_secs_f64() * 1000.0,
        percentile(0.50).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
    );

    // K_copy by COPY: identical rows in text format, one statement.
    let mut best_copy = f64::MAX;
    for round in 0..3u64 {
        empty(&mut conn).await;
        let mut rows = Vec::new();
        for n in 0..BULK_ROWS as u64 {
            rows.extend_from_slice(copy_line(&row(round * 100_000_000 + n)).as_bytes());
        }
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(
                "COPY transactions (id, created_at_ms, channel, kind, mti, processing_code, \
                 amount_minor, currency_numeric, merchant_id, terminal_id, stan, rrn, \
                 transmitted_at, token, bin, last4, response_code, auth_code, reason, \
                 original_id, decode_us, decide_us, vault_us) FROM STDIN",
            )
            .await
            .unwrap();
        copy.send(rows).await.unwrap();
        let written = copy.finish().await.unwrap();
        best_copy = best_copy.min(started.elapsed().as_secs_f64());
        assert_eq!(written, BULK_ROWS as u64);
    }
    println!(
        "K_copy (COPY, {BULK_ROWS} rows in one statement and commit, best of 3): {:.0} rows/s",
        BULK_ROWS as f64 / best_copy
    );

    // K_copy by UNNEST: the journal's own statement given all rows at once.
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let mut writer = PostgresWriter::connect(&options, &bench_config(1))
        .await
        .unwrap();
    let mut best_unnest = f64::MAX;
    for round in 0..3u64 {
        empty(&mut conn).await;
        let batch: Vec<_> = (0..BULK_ROWS as u64)
            .map(|n| row(1_000_000_000 + round * 100_000_000 + n))
            .collect();
        let started = Instant::now();
        let outcomes = writer.write_batch(&batch).await.unwrap();
        best_unnest = best_unnest.min(started.elapsed().as_secs_f64());
        assert_eq!(outcomes.len(), BULK_ROWS);
    }
    writer.close().await;
    println!(
        "K_copy (the journal's UNNEST statement, {BULK_ROWS} rows in one batch, best of 3): \
         {:.0} rows/s",
        BULK_ROWS as f64 / best_unnest
    );
    assert_eq!(
        count_rows(&mut conn, "transactions").await,
        BULK_ROWS as i64
    );
    conn.close().await.unwrap();
    db.drop().await;
}

/// One row of `transactions` in COPY's text format.
fn copy_line(r: &JournalRecord) -> String {
    let bytea = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("\\\\x{hex}")
    };
    let text = |value: Option<&str>| value.unwrap_or("\\N").to_owned();
    [
        bytea(r.id.as_bytes()),
        r.created_at_ms.to_string(),
        r.channel.as_str().to_owned(),
        r.kind.as_str().to_owned(),
        r.mti.as_str().to_owned(),
        text(r.processing_code.as_ref().map(|t| t.as_str())),
        r.amount.minor().to_string(),
        r.currency.numeric().to_string(),
        r.merchant_id.as_str().to_owned(),
        r.terminal_id.as_str().to_owned(),
        text(r.stan.as_ref().map(|t| t.as_str())),
        text(r.rrn.as_ref().map(|t| t.as_str())),
        text(r.transmitted_at.as_ref().map(|t| t.as_str())),
        r.token
            .as_ref()
            .map_or("\\N".to_owned(), |t| bytea(t.as_bytes())),
        text(r.bin.as_deref()),
        text(r.last4.as_deref()),
        r.response_code.as_str().to_owned(),
        text(r.auth_code.as_ref().map(|t| t.as_str())),
        "\\N".to_owned(),
        "\\N".to_owned(),
        r.timings.decode_us.to_string(),
        r.timings.decide_us.to_string(),
        r.timings.vault_us.to_string(),
    ]
    .join("\t")
        + "\n"
}
