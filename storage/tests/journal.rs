//! The journal against real SQLite files: group commit, durability before
//! the answer, shedding, failure and recovery, reversals exactly once,
//! and migrations. Replay, idempotency and lookups are in
//! `conformance.rs`, run against every backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::{NOW_MS, TestStore, approved, db_path, id_at, reversal_of, token};
use protocol::domain::DeclineReason;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};
use storage::{
    AppendOutcome, IdempotencyEntry, JournalConfig, JournalError, JournalRecord, SealedPan,
    SqliteStore, StorageError, StoreReader,
};

fn config() -> JournalConfig {
    JournalConfig {
        queue_capacity: 4096,
        batch_rows_max: 1024,
        busy_timeout_ms: 2000,
    }
}

/// A second, independent connection to the same file, as another process
/// would have.
async fn raw_connection(path: &std::path::Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

async fn count_ids(conn: &mut SqliteConnection, ids: &[protocol::domain::TransactionId]) -> usize {
    let mut found = 0;
    for id in ids {
        let row = sqlx::query("SELECT count(*) FROM transactions WHERE id = ?")
            .bind(id.as_bytes().as_slice())
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        found += usize::try_from(row.get::<i64, _>(0)).unwrap();
    }
    found
}

#[tokio::test]
async fn an_append_is_on_disk_when_it_returns() {
    let t = TestStore::open(config()).await;
    let mut record = approved(NOW_MS, token(1), "000001");
    record.reason = Some(DeclineReason::CardCountLimit);
    record.original_id = None;
    let outcome = t.journal.append(record.clone()).await.unwrap();
    assert_eq!(outcome, AppendOutcome::Recorded);
    // Not through the store's pool: a connection the journal never touched.
    let mut other = raw_connection(&t.path()).await;
    assert_eq!(count_ids(&mut other, &[record.id]).await, 1);
    // Every field comes back as written.
    let stored = t.store.transaction(record.id).await.unwrap().unwrap();
    assert_eq!(stored.record, record);
    assert_eq!(stored.reversed_by, None);
    assert!(t.store.transaction(id_at(NOW_MS)).await.unwrap().is_none());

    // And after the whole process state is gone: close, reopen.
    let dir = t.close().await;
    let (journal, store) = SqliteStore::open(&db_path(dir.path()), config())
        .await
        .unwrap();
    assert_eq!(
        store.transaction(record.id).await.unwrap().unwrap().record,
        record
    );
    journal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let t = TestStore::open(config()).await;
    let journal = t.journal.clone();
    let tasks: Vec<_> = (0..500u32)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move {
                let record = approved(
                    NOW_MS + u64::from(n),
                    token(u8::try_from(n % 200).unwrap()),
                    "000001",
                );
                let id = record.id;
                (id, journal.append(record).await)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let (id, outcome) = task.await.unwrap();
        assert_eq!(outcome, Ok(AppendOutcome::Recorded));
        ids.push(id);
    }
    let stats = t.journal.stats();
    assert_eq!(stats.records, 500);
    assert_eq!(stats.failed_batches, 0);
    // Batching: far fewer commits than records.
    assert!(stats.batches < 100, "{stats:?}");
    assert!(stats.batch_rows_largest > 5, "{stats:?}");
    assert_eq!(stats.batch_sizes.iter().sum::<u64>(), stats.batches);
    let mut other = raw_connection(&t.path()).await;
    assert_eq!(count_ids(&mut other, &ids).await, 500);
    for id in &ids {
        assert!(t.store.transaction(*id).await.unwrap().is_some());
    }
}

/// Holds the database's write lock from another connection, as a second
/// process or a stuck disk would, until dropped or released.
struct WriteLock {
    conn: SqliteConnection,
}

impl WriteLock {
    async fn take(path: &std::path::Path) -> WriteLock {
        let mut conn = raw_connection(path).await;
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        WriteLock { conn }
    }

    async fn release(mut self) {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut self.conn)
            .await
            .unwrap();
        self.conn.close().await.unwrap();
    }
}

/// Waits until a record just spawned has been queued and taken by the
/// writer (which then sits on a held lock).
async fn writer_took_everything(journal: &storage::Journal) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    wait_for(|| journal.stats().queue_depth == 0).await;
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_at_once() {
    let t = TestStore::open(JournalConfig {
        queue_capacity: 4,
        batch_rows_max: 1,
        busy_timeout_ms: 10_000,
    })
    .await;
    // The writer takes the first record and then waits on the lock.
    let lock = WriteLock::take(&t.path()).await;
    let journal = t.journal.clone();
    let mut waiting = vec![tokio::spawn({
        let journal = journal.clone();
        async move { journal.append(approved(NOW_MS, token(1), "000001")).await }
    })];
    writer_took_everything(&journal).await;
    for n in 0..4 {
        let journal = journal.clone();
        waiting.push(tokio::spawn(async move {
            journal
                .append(approved(NOW_MS + n, token(1), "000001"))
                .await
        }));
    }
    wait_for(|| journal.stats().queue_depth == 4).await;

    let started = Instant::now();
    let refused = t.journal.append(approved(NOW_MS, token(1), "000001")).await;
    assert_eq!(refused, Err(JournalError::QueueFull));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(t.journal.stats().queue_full, 1);

    // The queued records are not lost: once the lock goes, all commit.
    lock.release().await;
    for task in waiting {
        assert_eq!(task.await.unwrap(), Ok(AppendOutcome::Recorded));
    }
    assert_eq!(t.journal.stats().records, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_whole_batches_then_the_writer_recovers() {
    let t = TestStore::open(JournalConfig {
        busy_timeout_ms: 200,
        ..config()
    })
    .await;
    let lock = WriteLock::take(&t.path()).await;
    let tasks: Vec<_> = (0..40u64)
        .map(|n| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                let record = approved(NOW_MS + n, token(2), "000001");
                let id = record.id;
                (id, journal.append(record).await)
            })
        })
        .collect();
    let mut failed = Vec::new();
    for task in tasks {
        let (id, outcome) = task.await.unwrap();
        assert_eq!(outcome, Err(JournalError::Unavailable));
        failed.push(id);
    }
    let stats = t.journal.stats();
    assert_eq!(stats.failed_records, 40);
    assert!(
        stats.failed_batches >= 1 && stats.failed_batches < 40,
        "{stats:?}"
    );
    assert_eq!(stats.batches, 0);
    lock.release().await;

    // The next batch commits, and nothing of the failed ones was written.
    let record = approved(NOW_MS, token(2), "000002");
    assert_eq!(
        t.journal.append(record.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    let mut other = raw_connection(&t.path()).await;
    assert_eq!(count_ids(&mut other, &failed).await, 0);
    assert_eq!(count_ids(&mut other, &[record.id]).await, 1);
}

const VAULT_DDL: &str = "CREATE TABLE vault (
    token         BLOB    NOT NULL PRIMARY KEY CHECK (length(token) = 16),
    key_id        INTEGER NOT NULL,
    nonce         BLOB    NOT NULL CHECK (length(nonce) = 12),
    ciphertext    BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID, STRICT";

fn sealed(n: u8) -> SealedPan {
    SealedPan {
        token: token(n),
        key_id: 1,
        nonce: [n; 12],
        ciphertext: vec![n; 32],
    }
}

fn keyed(n: u8) -> IdempotencyEntry {
    IdempotencyEntry {
        merchant_id: "M0001".to_owned(),
        key: format!("key-{n}"),
        request_hash: [n; 32],
        response_json: format!(r#"{{"status":"approved","n":{n}}}"#),
        status: 201,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_half_way_leaves_nothing_then_the_writer_recovers() {
    let t = TestStore::open(config()).await;
    // Another connection drops the vault table: each batch writes its
    // transactions rows first, then fails on the vault rider.
    let mut other = raw_connection(&t.path()).await;
    sqlx::raw_sql("DROP TABLE vault")
        .execute(&mut other)
        .await
        .unwrap();
    let records: Vec<_> = (0..20u8)
        .map(|n| {
            let mut record = approved(NOW_MS, token(n), "000001");
            record.sealed_pan = Some(sealed(n));
            record.idempotency = Some(keyed(n));
            record
        })
        .collect();
    let tasks: Vec<_> = records
        .iter()
        .cloned()
        .map(|record| {
            let journal = t.journal.clone();
            tokio::spawn(async move { journal.append(record).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(JournalError::Unavailable));
    }
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    assert_eq!(count_ids(&mut other, &ids).await, 0);
    // The idempotency riders rolled back with their records.
    for n in 0..20 {
        assert!(
            t.store
                .idempotent_response("M0001", &format!("key-{n}"))
                .await
                .unwrap()
                .is_none()
        );
    }

    sqlx::raw_sql(VAULT_DDL).execute(&mut other).await.unwrap();
    let retried = records[0].clone();
    assert_eq!(
        t.journal.append(retried.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(count_ids(&mut other, &[retried.id]).await, 1);
    assert_eq!(t.store.sealed_pan(token(0)).await.unwrap(), Some(sealed(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_reversals_give_back_exactly_once() {
    let t = TestStore::open(config()).await;
    let original = approved(NOW_MS, token(3), "000003");
    t.journal.append(original.clone()).await.unwrap();
    let tasks: Vec<_> = (0..50u64)
        .map(|n| {
            let journal = t.journal.clone();
            let reversal = reversal_of(&original, NOW_MS + 1 + n);
            tokio::spawn(async move { (reversal.id, journal.append(reversal).await.unwrap()) })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let firsts: Vec<_> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == AppendOutcome::Recorded)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(firsts.len(), 1, "{outcomes:?}");
    let winner = firsts[0];
    for (id, outcome) in &outcomes {
        if *id != winner {
            assert_eq!(*outcome, AppendOutcome::AlreadyReversed { by: winner });
        }
    }
    let stored = t.store.transaction(original.id).await.unwrap().unwrap();
    assert_eq!(stored.reversed_by, Some(winner));
    // Every reversal is journaled, the losers too.
    for (id, _) in &outcomes {
        let reversal = t.store.transaction(*id).await.unwrap().unwrap();
        assert_eq!(reversal.record.original_id, Some(original.id));
    }

    // Two reversals of one original inside one batch: the first wins.
    let other = approved(NOW_MS, token(4), "000004");
    t.journal.append(other.clone()).await.unwrap();
    let (first, second) = (reversal_of(&other, NOW_MS), reversal_of(&other, NOW_MS));
    let lock = WriteLock::take(&t.path()).await;
    let blocker = tokio::spawn({
        let journal = t.journal.clone();
        async move { journal.append(approved(NOW_MS, token(9), "000009")).await }
    });
    writer_took_everything(&t.journal).await;
    let a = tokio::spawn({
        let journal = t.journal.clone();
        let first = first.clone();
        async move { journal.append(first).await }
    });
    wait_for(|| t.journal.stats().queue_depth == 1).await;
    let b = tokio::spawn({
        let journal = t.journal.clone();
        let second = second.clone();
        async move { journal.append(second).await }
    });
    wait_for(|| t.journal.stats().queue_depth == 2).await;
    lock.release().await;
    blocker.await.unwrap().unwrap();
    assert_eq!(a.await.unwrap(), Ok(AppendOutcome::Recorded));
    assert_eq!(
        b.await.unwrap(),
        Ok(AppendOutcome::AlreadyReversed { by: first.id })
    );
    assert_eq!(t.journal.stats().batch_rows_last, 2);
}

#[tokio::test]
async fn migrations_run_once_and_reopening_is_fine() {
    let t = TestStore::open(config()).await;
    let record = approved(NOW_MS, token(1), "000001");
    t.journal.append(record.clone()).await.unwrap();
    // Migration 2: the acquirer a mutual-TLS request came in under.
    let from_acquirer = JournalRecord {
        acquirer: Some("acq-north".to_owned()),
        ..approved(NOW_MS + 1, token(2), "000002")
    };
    t.journal.append(from_acquirer.clone()).await.unwrap();
    let stored = t
        .store
        .transaction(from_acquirer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.record.acquirer.as_deref(), Some("acq-north"));
    assert_eq!(
        t.store
            .transaction(record.id)
            .await
            .unwrap()
            .unwrap()
            .record
            .acquirer,
        None
    );
    let dir = t.close().await;
    let path = db_path(dir.path());
    for _ in 0..2 {
        let (journal, store) = SqliteStore::open(&path, config()).await.unwrap();
        assert!(store.transaction(record.id).await.unwrap().is_some());
        journal.close().await;
        store.close().await;
    }
    let mut conn = raw_connection(&path).await;
    let rows = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|row| row.get::<i64, _>(0)).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");

    // A file from a newer build is refused rather than written to.
    sqlx::raw_sql("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    match SqliteStore::open(&path, config()).await {
        Err(StorageError::SchemaTooNew {
            found: 99,
            known: 4,
        }) => {}
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn records_that_could_leak_card_data_are_refused_before_queueing() {
    let t = TestStore::open(config()).await;
    let mut pan_as_bin = approved(NOW_MS, token(1), "000001");
    pan_as_bin.bin = Some("4111111111111111".to_owned());
    assert!(matches!(
        t.journal.append(pan_as_bin).await,
        Err(JournalError::InvalidRecord { field: "bin", .. })
    ));
    let mut pan_as_last4 = approved(NOW_MS, token(1), "000001");
    pan_as_last4.last4 = Some("4111111111111111".to_owned());
    assert!(matches!(
        t.journal.append(pan_as_last4).await,
        Err(JournalError::InvalidRecord { field: "last4", .. })
    ));
    let mut wrong_token = approved(NOW_MS, token(1), "000001");
    wrong_token.sealed_pan = Some(sealed(2));
    assert!(matches!(
        t.journal.append(wrong_token).await,
        Err(JournalError::InvalidRecord {
            field: "sealed_pan",
            ..
        })
    ));
    let mut keyed_reversal = reversal_of(&approved(NOW_MS, token(1), "000001"), NOW_MS);
    keyed_reversal.idempotency = Some(keyed(1));
    assert!(matches!(
        t.journal.append(keyed_reversal).await,
        Err(JournalError::InvalidRecord {
            field: "idempotency",
            ..
        })
    ));
    assert_eq!(t.journal.stats().batches, 0);
}

#[tokio::test]
async fn close_writes_what_was_queued_and_refuses_the_rest() {
    let t = TestStore::open(config()).await;
    let journal = t.journal.clone();
    let queued: Vec<_> = (0..20)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move {
                journal
                    .append(approved(NOW_MS + n, token(1), "000001"))
                    .await
            })
        })
        .collect();
    // On this single-threaded runtime each spawned append queues its record
    // the first time it is polled; yielding lets all of them run first.
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert!(t.journal.is_running());
    t.journal.close().await;
    assert!(!t.journal.is_running());
    for task in queued {
        assert_eq!(task.await.unwrap(), Ok(AppendOutcome::Recorded));
    }
    assert_eq!(
        t.journal.append(approved(NOW_MS, token(1), "000001")).await,
        Err(JournalError::Closed)
    );
    t.journal.close().await;
}

/// Figures for a burst: prints commits and records per second. Run with
/// `cargo test --release -p storage --test journal burst -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::as_conversions,
    reason = "rates printed for a person: u64 to f64 rounding past 2^53 cannot show"
)]
async fn burst_of_appends_from_many_tasks() {
    const TASKS: u64 = 200;
    const PER_TASK: u64 = 50;
    let t = TestStore::open(config()).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                for n in 0..PER_TASK {
                    let at = NOW_MS + task * PER_TASK + n;
                    let outcome = journal
                        .append(approved(at, token(u8::try_from(task).unwrap()), "000001"))
                        .await;
                    assert_eq!(outcome, Ok(AppendOutcome::Recorded));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = t.journal.stats();
    assert_eq!(stats.records, TASKS * PER_TASK);
    let seconds = elapsed.as_secs_f64();
    println!(
        "burst: {} appends from {TASKS} tasks in {:.3} s: {} commits ({:.0}/s), \
         {:.0} records/s, batch avg {:.1}, largest {}, sizes by power of two {:?}",
        stats.records,
        seconds,
        stats.batches,
        stats.batches as f64 / seconds,
        stats.records as f64 / seconds,
        stats.batch_rows_avg(),
        stats.batch_rows_largest,
        stats.batch_sizes,
    );
    assert!(stats.batches < stats.records / 4, "{stats:?}");

    // For scale: one task appending alone commits one record per batch.
    const ALONE: u64 = 100;
    let started = Instant::now();
    for n in 0..ALONE {
        t.journal
            .append(approved(NOW_MS + n, token(1), "000002"))
            .await
            .unwrap();
    }
    let alone = started.elapsed().as_secs_f64();
    println!(
        "alone: {ALONE} sequential appends in {alone:.3} s: {:.0} commits/s, {:.2} ms per commit",
        ALONE as f64 / alone,
        alone * 1000.0 / ALONE as f64,
    );
    assert_eq!(t.journal.stats().batch_rows_last, 1);
}

/// A journal written before idempotency claims (schema version 2), with a
/// stored answer in it, is brought to version 3 on open: its rows read as
/// before, and a claim on the answered key gets that answer.
#[tokio::test]
async fn a_journal_from_before_claims_is_migrated_and_keeps_its_answers() {
    let t = TestStore::open(config()).await;
    let entry = IdempotencyEntry {
        merchant_id: "M0001".to_owned(),
        key: "order-1".to_owned(),
        request_hash: [5; 32],
        response_json: r#"{"status":"approved"}"#.to_owned(),
        status: 201,
    };
    let record = JournalRecord {
        idempotency: Some(entry.clone()),
        ..approved(NOW_MS, token(1), "000001")
    };
    assert_eq!(
        t.journal.append(record.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    let dir = t.close().await;
    let path = db_path(dir.path());
    // Back to version 3, as the file of an older switch.
    let mut conn = raw_connection(&path).await;
    sqlx::raw_sql("DROP TABLE idempotency_claims; DELETE FROM schema_migrations WHERE version = 4")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let (journal, store) = SqliteStore::open(&path, config()).await.unwrap();
    assert!(store.transaction(record.id).await.unwrap().is_some());
    assert_eq!(
        store.idempotent_response("M0001", "order-1").await.unwrap(),
        Some(entry.clone())
    );
    let claim = storage::IdempotencyClaim {
        merchant_id: "M0001".to_owned(),
        key: "order-1".to_owned(),
        request_hash: [5; 32],
        claimed_by: id_at(NOW_MS + 1),
        claimed_at_ms: NOW_MS + 1,
        stale_before_ms: 0,
    };
    assert_eq!(
        journal.claim(claim).await,
        Ok(storage::ClaimOutcome::Answered(entry))
    );
    journal.close().await;
    store.close().await;
    let mut conn = raw_connection(&path).await;
    let versions: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}
