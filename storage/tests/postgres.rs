//! The journal against a real PostgreSQL server: group commit on one and on
//! several writer connections, durability before the answer, batches of
//! every size, retried batches, killed connections, a server that stops
//! answering or refuses connections, reversals exactly once, migrations,
//! and a scan for card numbers. Replay, idempotency and lookups are in
//! `conformance.rs`, run against every backend.
//!
//! Run under `scripts/test-env`, which starts a throwaway server and sets
//! `DATABASE_URL`; each test makes a database of its own on it. Without
//! `DATABASE_URL` every test returns at once (see `common::postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Counts are compared with PostgreSQL's bigint `count(*)`; converting each
// one by hand would only add noise.
#![allow(clippy::as_conversions)]

mod common;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::leak::{contains, hex, needles, test_pans};
use common::postgres::{
    Proxy, TestDatabase, config, count_ids, count_rows, with_address, with_database,
};
use common::{NOW_MS, approved, declined, id_at, keys, reversal_of, token};
use protocol::domain::{DeclineReason, Token, TransactionId};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, Row};
use storage::postgres::WRITER_APPLICATION_NAME;
use storage::{
    AppendOutcome, IdempotencyEntry, Journal, JournalBackend, JournalConfig, JournalError,
    JournalRecord, PostgresConfig, PostgresStore, PostgresWriter, RecordKind, SealedPan,
    StorageError, StoreReader, Vault, bin_and_last4,
};
use tokio::time::Instant;

/// A journal and store on a fresh database.
struct Pg {
    db: TestDatabase,
    journal: Journal,
    store: PostgresStore,
}

impl Pg {
    async fn open(config: PostgresConfig) -> Option<Pg> {
        let db = TestDatabase::create().await?;
        let (journal, store) = PostgresStore::open(&db.url, config).await.unwrap();
        Some(Pg { db, journal, store })
    }

    /// Closes the journal and the read pool, and drops the database.
    async fn finish(self) {
        self.journal.close().await;
        self.store.close().await;
        self.db.drop().await;
    }
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until a record just spawned has been queued and taken by the
/// writer (which then waits on a held lock).
async fn writer_took_everything(journal: &Journal) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    wait_for(|| journal.stats().queue_depth == 0).await;
}

/// Holds a lock on `transactions` from another connection that blocks
/// every insert, as a long migration or a stuck session would.
struct TableLock {
    conn: PgConnection,
}

impl TableLock {
    async fn take(db: &TestDatabase) -> TableLock {
        let mut conn = db.connect().await;
        conn.execute(sqlx::raw_sql(
            "BEGIN; LOCK TABLE transactions IN EXCLUSIVE MODE",
        ))
        .await
        .unwrap();
        TableLock { conn }
    }

    async fn release(mut self) {
        self.conn.execute(sqlx::raw_sql("ROLLBACK")).await.unwrap();
        self.conn.close().await.unwrap();
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A token no other record of this process uses.
fn unique_token() -> Token {
    let mut bytes = [0xA5u8; 16];
    bytes[8..].copy_from_slice(&NEXT_TOKEN.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    Token::from_bytes(bytes)
}

fn sealed(token: Token) -> SealedPan {
    let n = token.as_bytes()[15];
    SealedPan {
        token,
        key_id: 1,
        nonce: [n; 12],
        ciphertext: vec![n; 32],
    }
}

fn keyed(merchant: &str, key: &str) -> IdempotencyEntry {
    IdempotencyEntry {
        merchant_id: merchant.to_owned(),
        key: key.to_owned(),
        request_hash: [7; 32],
        response_json: format!(r#"{{"status":"approved","key":"{key}"}}"#),
        status: 201,
    }
}

/// Record `n` of a mixed workload: a new card sealed with an idempotency
/// key, a decline, a reversal, a plain purchase.
fn mixed(n: usize) -> JournalRecord {
    let at = NOW_MS + n as u64;
    match n % 4 {
        0 => {
            let token = unique_token();
            JournalRecord {
                sealed_pan: Some(sealed(token)),
                idempotency: Some(keyed("M0001", &format!("mixed-{}", id_at(at)))),
                ..approved(at, token, "000001")
            }
        }
        1 => declined(at, unique_token(), DeclineReason::CardCountLimit),
        2 => reversal_of(&approved(at, unique_token(), "000002"), at),
        _ => JournalRecord {
            kind: RecordKind::Purchase,
            ..approved(at, unique_token(), "000003")
        },
    }
}

/// The futures the switch spawns must be `Send`.
#[allow(dead_code)]
fn futures_are_send(store: &PostgresStore, writer: &mut PostgresWriter) {
    fn send<T: Send>(_: T) {}
    send(PostgresStore::open("", PostgresConfig::default()));
    send(store.transaction(id_at(NOW_MS)));
    send(store.check());
    send(writer.write_batch(&[]));
}

#[tokio::test]
async fn an_append_is_in_the_database_when_it_returns() {
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let mut record = approved(NOW_MS, token(1), "000001");
    record.reason = Some(DeclineReason::CardCountLimit);
    assert_eq!(
        t.journal.append(record.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    // Not through the store's pool: a connection the journal never touched.
    let mut other = t.db.connect().await;
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &[record.id]).await,
        1
    );
    // Every field comes back as written.
    let stored = t.store.transaction(record.id).await.unwrap().unwrap();
    assert_eq!(stored.record, record);
    assert_eq!(stored.reversed_by, None);
    assert!(t.store.transaction(id_at(NOW_MS)).await.unwrap().is_none());
    t.store.check().await.unwrap();

    // And from a new process's connections.
    t.journal.close().await;
    t.store.close().await;
    let (journal, store) = PostgresStore::open(&t.db.url, config(1)).await.unwrap();
    assert_eq!(
        store.transaction(record.id).await.unwrap().unwrap().record,
        record
    );
    Pg {
        db: t.db,
        journal,
        store,
    }
    .finish()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let tasks: Vec<_> = (0..500u32)
        .map(|n| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                let record = approved(NOW_MS + u64::from(n), token((n % 200) as u8), "000001");
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
    let mut other = t.db.connect().await;
    assert_eq!(count_ids(&mut other, "transactions", "id", &ids).await, 500);
    t.finish().await;
}

/// Writer connections open on database `name`.
async fn writer_sessions(conn: &mut PgConnection, name: &str) -> i64 {
    sqlx::query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
    )
    .bind(name)
    .bind(WRITER_APPLICATION_NAME)
    .fetch_one(conn)
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_writers_share_one_queue_and_close_waits_for_all() {
    let Some(t) = Pg::open(config(4)).await else {
        return;
    };
    let mut other = t.db.connect().await;
    assert_eq!(writer_sessions(&mut other, &t.db.name).await, 4);

    let tasks: Vec<_> = (0..200u64)
        .map(|task| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..10 {
                    let record = approved(NOW_MS + task * 10 + n, token(task as u8), "000001");
                    ids.push(record.id);
                    assert_eq!(journal.append(record).await, Ok(AppendOutcome::Recorded));
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let stats = t.journal.stats();
    assert_eq!(stats.records, 2000, "{stats:?}");
    assert_eq!(stats.failed_batches, 0, "{stats:?}");
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &ids).await,
        2000
    );

    // Close with records still queued: every one is written, by whichever
    // writer takes it, before close returns.
    let queued: Vec<_> = (0..300u64)
        .map(|n| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                journal
                    .append(approved(NOW_MS + n, token(1), "000002"))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t.journal.close().await;
    assert!(!t.journal.is_running());
    let mut written = 0;
    for task in queued {
        match task.await.unwrap() {
            Ok(AppendOutcome::Recorded) => written += 1,
            Err(JournalError::Closed) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(t.journal.stats().records, 2000 + written);
    assert_eq!(
        count_rows(&mut other, "transactions").await,
        2000 + written as i64
    );
    assert_eq!(
        t.journal.append(approved(NOW_MS, token(1), "000001")).await,
        Err(JournalError::Closed)
    );
    // Every writer has said goodbye; the server drops a session a moment
    // after its client leaves.
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer_sessions(&mut other, &t.db.name).await != 0 {
        assert!(Instant::now() < deadline, "writer connections left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.close().await.unwrap();
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_every_size_commit_exactly_their_rows() {
    const BATCH_ROWS_MAX: usize = 50;
    let config = PostgresConfig {
        journal: JournalConfig {
            batch_rows_max: BATCH_ROWS_MAX,
            ..config(1).journal
        },
        ..config(1)
    };
    let Some(t) = Pg::open(config).await else {
        return;
    };
    let options = PgConnectOptions::from_str(&t.db.url).unwrap();
    let mut writer = PostgresWriter::connect(&options, &config).await.unwrap();
    let mut other = t.db.connect().await;
    let mut expected = [0i64; 4];
    let mut next = 0;
    for size in 1..=BATCH_ROWS_MAX {
        let batch: Vec<_> = (next..next + size).map(mixed).collect();
        next += size;
        let outcomes = writer.write_batch(&batch).await.unwrap();
        assert_eq!(outcomes, vec![AppendOutcome::Recorded; size], "size {size}");
        expected[0] += size as i64;
        expected[1] += batch.iter().filter(|r| r.original_id.is_some()).count() as i64;
        expected[2] += batch.iter().filter(|r| r.sealed_pan.is_some()).count() as i64;
        expected[3] += batch.iter().filter(|r| r.idempotency.is_some()).count() as i64;
        for (table, rows) in ["transactions", "reversals", "vault", "idempotency"]
            .into_iter()
            .zip(expected)
        {
            assert_eq!(
                count_rows(&mut other, table).await,
                rows,
                "{table} after {size}"
            );
        }
        let ids: Vec<_> = batch.iter().map(|r| r.id).collect();
        assert_eq!(
            count_ids(&mut other, "transactions", "id", &ids).await,
            size as i64
        );
    }
    writer.close().await;

    // Through the journal: no batch over the maximum, every record there.
    let tasks: Vec<_> = (0..200)
        .map(|task| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..5 {
                    let record = mixed(10_000 + task * 5 + n);
                    ids.push(record.id);
                    assert_eq!(journal.append(record).await, Ok(AppendOutcome::Recorded));
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let stats = t.journal.stats();
    assert_eq!(stats.records, 1000);
    assert!(
        stats.batch_rows_largest <= BATCH_ROWS_MAX as u64,
        "{stats:?}"
    );
    assert!(stats.batches >= 20, "{stats:?}");
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &ids).await,
        1000
    );
    t.finish().await;
}

#[tokio::test]
async fn a_batch_written_twice_is_stored_once() {
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let options = PgConnectOptions::from_str(&t.db.url).unwrap();
    let mut writer = PostgresWriter::connect(&options, &config(1)).await.unwrap();
    let card = unique_token();
    let first = JournalRecord {
        sealed_pan: Some(sealed(card)),
        idempotency: Some(keyed("M0001", "order-1")),
        ..approved(NOW_MS, card, "000001")
    };
    let original = approved(NOW_MS - 10, unique_token(), "000002");
    let reversal_a = reversal_of(&original, NOW_MS + 1);
    let reversal_b = reversal_of(&original, NOW_MS + 2);
    let same_key = JournalRecord {
        idempotency: Some(keyed("M0001", "order-1")),
        ..approved(NOW_MS + 3, card, "000003")
    };
    // From an acquirer over mutual TLS: the retry compares that column too.
    let plain = JournalRecord {
        acquirer: Some("acq-north".to_owned()),
        ..approved(NOW_MS + 4, unique_token(), "000004")
    };
    let batch = vec![
        first.clone(),
        reversal_a.clone(),
        reversal_b.clone(),
        same_key.clone(),
        plain.clone(),
    ];
    let expected = vec![
        AppendOutcome::Recorded,
        AppendOutcome::Recorded,
        AppendOutcome::AlreadyReversed { by: reversal_a.id },
        AppendOutcome::IdempotencyKeyTaken { by: first.id },
        AppendOutcome::Recorded,
    ];
    assert_eq!(writer.write_batch(&batch).await.unwrap(), expected);
    // As after a connection lost around COMMIT: the same batch again. The
    // answers are the first write's, and nothing is there twice.
    assert_eq!(writer.write_batch(&batch).await.unwrap(), expected);
    let mut other = t.db.connect().await;
    // Four: the record refused for its key is not written, either time.
    for (table, rows) in [
        ("transactions", 4),
        ("reversals", 1),
        ("vault", 1),
        ("idempotency", 1),
    ] {
        assert_eq!(count_rows(&mut other, table).await, rows, "{table}");
    }
    assert!(t.store.transaction(same_key.id).await.unwrap().is_none());
    let stored = t.store.transaction(original.id).await.unwrap();
    assert!(stored.is_none(), "the original was never journaled here");
    assert_eq!(
        t.store
            .idempotent_response("M0001", "order-1")
            .await
            .unwrap(),
        Some(keyed("M0001", "order-1"))
    );

    // Another record under a journaled id is not a retry: the batch is
    // refused whole.
    let fresh = approved(NOW_MS + 5, unique_token(), "000005");
    let impostor = JournalRecord {
        amount: protocol::Amount::from_minor(999).unwrap(),
        ..plain.clone()
    };
    match writer.write_batch(&[fresh.clone(), impostor]).await {
        Err(StorageError::RowCount {
            table: "transactions",
            expected: 2,
            written: 1,
        }) => {}
        other => panic!("expected RowCount, got {other:?}"),
    }
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &[fresh.id]).await,
        0
    );
    assert_eq!(
        writer
            .write_batch(std::slice::from_ref(&fresh))
            .await
            .unwrap(),
        vec![AppendOutcome::Recorded]
    );
    writer.close().await;
    t.finish().await;
}

/// A batch without idempotency keys is one statement that commits itself:
/// one round trip to the server, no BEGIN and COMMIT around it. When that
/// statement finds the batch is not whole (written before, an id taken, an
/// original reversed by an earlier batch) it writes nothing, and the writer
/// asks the tables in a transaction, answering as it always has: a new
/// card's vault row commits with the record naming its token or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_keys_is_one_round_trip_and_otherwise_answers_as_before() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let proxy = Proxy::start(db.server()).await;
    let options = PgConnectOptions::from_str(&with_address(&db.url, proxy.port)).unwrap();
    // Migrates.
    let (journal, store) = PostgresStore::open(&db.url, config(1)).await.unwrap();
    let mut writer = PostgresWriter::connect(&options, &config(1)).await.unwrap();
    // The first batch on a connection also prepares its statement.
    let warm_up = approved(NOW_MS - 20, unique_token(), "000009");
    writer
        .write_batch(std::slice::from_ref(&warm_up))
        .await
        .unwrap();

    let card = unique_token();
    let new_card = JournalRecord {
        sealed_pan: Some(sealed(card)),
        ..approved(NOW_MS, card, "000001")
    };
    let original = approved(NOW_MS - 10, unique_token(), "000002");
    let reversal_a = reversal_of(&original, NOW_MS + 1);
    let reversal_b = reversal_of(&original, NOW_MS + 2);
    let batch = vec![new_card.clone(), reversal_a.clone(), reversal_b.clone()];
    let expected = vec![
        AppendOutcome::Recorded,
        AppendOutcome::Recorded,
        AppendOutcome::AlreadyReversed { by: reversal_a.id },
    ];
    let before = proxy.round_trips();
    assert_eq!(writer.write_batch(&batch).await.unwrap(), expected);
    assert_eq!(proxy.round_trips() - before, 1, "one round trip a batch");

    // Written again, as after a connection lost around its commit: the same
    // answers, nothing twice.
    assert_eq!(writer.write_batch(&batch).await.unwrap(), expected);
    let mut other = db.connect().await;
    for (table, rows) in [("transactions", 4), ("reversals", 1), ("vault", 1)] {
        assert_eq!(count_rows(&mut other, table).await, rows, "{table}");
    }

    // A later batch reversing the same original: the earlier reversal holds it.
    let reversal_c = reversal_of(&original, NOW_MS + 3);
    assert_eq!(
        writer
            .write_batch(std::slice::from_ref(&reversal_c))
            .await
            .unwrap(),
        vec![AppendOutcome::AlreadyReversed { by: reversal_a.id }]
    );

    // A new card's record beside another record under a journaled id: the
    // batch is refused whole, the card's vault row with it.
    let other_card = unique_token();
    let with_card = JournalRecord {
        sealed_pan: Some(sealed(other_card)),
        ..approved(NOW_MS + 4, other_card, "000004")
    };
    let impostor = JournalRecord {
        amount: protocol::Amount::from_minor(999).unwrap(),
        ..new_card.clone()
    };
    match writer.write_batch(&[with_card.clone(), impostor]).await {
        Err(StorageError::RowCount {
            table: "transactions",
            expected: 2,
            written: 1,
        }) => {}
        other => panic!("expected RowCount, got {other:?}"),
    }
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &[with_card.id]).await,
        0
    );
    assert_eq!(store.sealed_pan(other_card).await.unwrap(), None);
    // Alone it goes in, with its vault row.
    assert_eq!(
        writer
            .write_batch(std::slice::from_ref(&with_card))
            .await
            .unwrap(),
        vec![AppendOutcome::Recorded]
    );
    assert_eq!(
        store.sealed_pan(other_card).await.unwrap(),
        Some(sealed(other_card))
    );

    writer.close().await;
    journal.close().await;
    store.close().await;
    drop(proxy);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_connections_lose_no_acknowledged_record() {
    let Some(t) = Pg::open(config(2)).await else {
        return;
    };
    let loading = Arc::new(AtomicBool::new(true));
    let killer = tokio::spawn({
        let db_url = t.db.url.clone();
        let db_name = t.db.name.clone();
        let loading = Arc::clone(&loading);
        async move {
            let mut admin = PgConnection::connect(&db_url).await.unwrap();
            let mut kills = 0i64;
            while loading.load(Ordering::Relaxed) {
                kills += sqlx::query(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
                     FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                )
                .bind(&db_name)
                .bind(WRITER_APPLICATION_NAME)
                .fetch_one(&mut admin)
                .await
                .unwrap()
                .get::<i64, _>(0);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            kills
        }
    });
    let tasks: Vec<_> = (0..100u64)
        .map(|task| {
            let journal = t.journal.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for n in 0..30 {
                    let record = mixed((task * 30 + n) as usize);
                    let id = record.id;
                    answers.push((id, journal.append(record).await));
                }
                answers
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for task in tasks {
        for (id, answer) in task.await.unwrap() {
            match answer {
                Ok(AppendOutcome::Recorded) => acknowledged.push(id),
                Err(JournalError::Unavailable) => failed.push(id),
                other => panic!("{other:?}"),
            }
        }
    }
    loading.store(false, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    let stats = t.journal.stats();
    println!(
        "{kills} writer connections killed; {} acknowledged, {} failed, in {} batches",
        acknowledged.len(),
        failed.len(),
        stats.batches
    );
    assert!(
        kills > 0,
        "no connection was killed: the test proves nothing"
    );
    assert_eq!(acknowledged.len() + failed.len(), 3000);

    let mut other = t.db.connect().await;
    // Every acknowledged record is there, and the id is the primary key,
    // so once.
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &acknowledged).await,
        acknowledged.len() as i64
    );
    // A failed one may be there (its COMMIT reached the server, the answer
    // did not), at most once; nothing else is.
    let failed_present = count_ids(&mut other, "transactions", "id", &failed).await;
    println!("{failed_present} of the failed records are in the journal all the same");
    assert!(failed_present <= failed.len() as i64);
    assert!(!acknowledged.is_empty());
    assert_eq!(
        count_rows(&mut other, "transactions").await,
        acknowledged.len() as i64 + failed_present
    );
    // The writers reconnect by themselves.
    assert_eq!(
        t.journal.append(approved(NOW_MS, token(1), "000001")).await,
        Ok(AppendOutcome::Recorded)
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_reversals_give_back_exactly_once() {
    // Four writers: the reversals race across connections, not only
    // inside one batch.
    let Some(t) = Pg::open(config(4)).await else {
        return;
    };
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
    for (id, _) in &outcomes {
        let reversal = t.store.transaction(*id).await.unwrap().unwrap();
        assert_eq!(reversal.record.original_id, Some(original.id));
    }
    t.finish().await;

    // Two reversals of one original inside one batch: the first wins.
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let other = approved(NOW_MS, token(4), "000004");
    t.journal.append(other.clone()).await.unwrap();
    let (first, second) = (reversal_of(&other, NOW_MS), reversal_of(&other, NOW_MS));
    let lock = TableLock::take(&t.db).await;
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
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_also_when_nodes_start_together() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // Four nodes opening an empty database at the same moment.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PostgresStore::open(&url, config(1)).await })
        })
        .collect();
    let mut opened = Vec::new();
    for open in opens {
        opened.push(open.await.unwrap().unwrap());
    }
    let record = approved(NOW_MS, token(1), "000001");
    opened[0].0.append(record.clone()).await.unwrap();
    // Migration 2: the acquirer a mutual-TLS request came in under, through
    // the UNNEST batch and read back.
    let from_acquirer = JournalRecord {
        acquirer: Some("acq-north".to_owned()),
        ..approved(NOW_MS + 1, token(2), "000002")
    };
    opened[0].0.append(from_acquirer.clone()).await.unwrap();
    let stored = opened[1]
        .1
        .transaction(from_acquirer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.record.acquirer.as_deref(), Some("acq-north"));
    for (journal, store) in &opened {
        assert!(store.transaction(record.id).await.unwrap().is_some());
        journal.close().await;
        store.close().await;
    }
    // Reopening later is fine too.
    for _ in 0..2 {
        let (journal, store) = PostgresStore::open(&db.url, config(1)).await.unwrap();
        assert!(store.transaction(record.id).await.unwrap().is_some());
        journal.close().await;
        store.close().await;
    }
    let mut conn = db.connect().await;
    let rows = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|row| row.get::<i64, _>(0)).collect();
    assert_eq!(versions, [1, 2, 3, 4]);

    // A database migrated by a newer build is refused rather than written.
    conn.execute(sqlx::raw_sql(
        "INSERT INTO schema_migrations VALUES (99, 'future', 0)",
    ))
    .await
    .unwrap();
    conn.close().await.unwrap();
    match PostgresStore::open(&db.url, config(1)).await {
        Err(StorageError::SchemaTooNew {
            found: 99,
            known: 4,
        }) => {}
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
    db.drop().await;
}

const VAULT_DDL: &str = "CREATE TABLE vault (
    token         bytea   NOT NULL PRIMARY KEY CHECK (octet_length(token) = 16),
    key_id        bigint  NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    nonce         bytea   NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext    bytea   NOT NULL,
    created_at_ms bigint  NOT NULL
)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_half_way_leaves_nothing_then_the_writer_recovers() {
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let mut other = t.db.connect().await;
    other
        .execute(sqlx::raw_sql("DROP TABLE vault"))
        .await
        .unwrap();
    let records: Vec<_> = (0..20u8)
        .map(|n| JournalRecord {
            sealed_pan: Some(sealed(token(n))),
            idempotency: Some(keyed("M0001", &format!("key-{n}"))),
            ..approved(NOW_MS, token(n), "000001")
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
    assert_eq!(count_ids(&mut other, "transactions", "id", &ids).await, 0);
    assert_eq!(count_rows(&mut other, "idempotency").await, 0);

    other.execute(sqlx::raw_sql(VAULT_DDL)).await.unwrap();
    let retried = records[0].clone();
    assert_eq!(
        t.journal.append(retried.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(
        count_ids(&mut other, "transactions", "id", &[retried.id]).await,
        1
    );
    assert_eq!(
        t.store.sealed_pan(token(0)).await.unwrap(),
        Some(sealed(token(0)))
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_fails_appends_within_the_timeouts() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let proxy = Proxy::start(db.server()).await;
    let config = PostgresConfig {
        connect_timeout_ms: 500,
        statement_timeout_ms: 1000,
        ..config(1)
    };
    let (journal, store) = PostgresStore::open(&with_address(&db.url, proxy.port), config)
        .await
        .unwrap();
    assert_eq!(
        journal.append(approved(NOW_MS, token(1), "000001")).await,
        Ok(AppendOutcome::Recorded)
    );

    // The network drops the server without a reset: nothing answers.
    proxy.freeze();
    let started = Instant::now();
    let lost = approved(NOW_MS, token(1), "000002");
    assert_eq!(
        journal.append(lost.clone()).await,
        Err(JournalError::Unavailable)
    );
    let waited = started.elapsed();
    // connect_timeout_ms + statement_timeout_ms, and scheduling slack.
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    let started = Instant::now();
    assert!(store.check().await.is_err());
    assert!(started.elapsed() < Duration::from_millis(2500));

    // Back again: the next batch reconnects by itself.
    proxy.thaw();
    let record = approved(NOW_MS, token(1), "000003");
    assert_eq!(
        journal.append(record.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    store.check().await.unwrap();
    assert!(store.transaction(record.id).await.unwrap().is_some());
    journal.close().await;
    store.close().await;
    drop(proxy);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_connections_fails_appends_then_the_writer_reconnects() {
    let Some(t) = Pg::open(config(2)).await else {
        return;
    };
    assert_eq!(
        t.journal.append(approved(NOW_MS, token(1), "000001")).await,
        Ok(AppendOutcome::Recorded)
    );
    let mut admin = t.db.admin().await;
    admin
        .execute(sqlx::raw_sql(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            t.db.name
        )))
        .await
        .unwrap();
    assert!(t.db.terminate(WRITER_APPLICATION_NAME).await > 0);
    let started = Instant::now();
    for n in 0..5 {
        assert_eq!(
            t.journal
                .append(approved(NOW_MS + n, token(1), "000002"))
                .await,
            Err(JournalError::Unavailable)
        );
    }
    // Refused, not timed out: each fails at once.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(t.journal.is_running());

    admin
        .execute(sqlx::raw_sql(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            t.db.name
        )))
        .await
        .unwrap();
    admin.close().await.unwrap();
    for n in 0..5 {
        assert_eq!(
            t.journal
                .append(approved(NOW_MS + n, token(1), "000003"))
                .await,
            Ok(AppendOutcome::Recorded)
        );
    }

    // A server that is not there at all fails the start, quickly.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    assert!(
        PostgresStore::open(&with_address(&t.db.url, closed_port), config(1))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_fails_the_batch_within_the_lock_or_statement_timeout() {
    for (busy_timeout_ms, statement_timeout_ms) in [(300, 10_000), (10_000, 300)] {
        let config = PostgresConfig {
            journal: JournalConfig {
                busy_timeout_ms,
                ..config(1).journal
            },
            statement_timeout_ms,
            ..config(1)
        };
        let Some(t) = Pg::open(config).await else {
            return;
        };
        let lock = TableLock::take(&t.db).await;
        let started = Instant::now();
        assert_eq!(
            t.journal.append(approved(NOW_MS, token(1), "000001")).await,
            Err(JournalError::Unavailable)
        );
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_millis(2000), "{waited:?}");
        lock.release().await;
        assert_eq!(
            t.journal.append(approved(NOW_MS, token(1), "000002")).await,
            Ok(AppendOutcome::Recorded)
        );
        t.finish().await;
    }
}

/// Writes records, sealed PANs and idempotency entries for several cards,
/// then looks for the card numbers in every column of every table (typed:
/// text as text, bytea as its raw bytes, numbers as decimal), in a
/// `pg_dump` of the database, and, when the server is the one
/// scripts/test-env started, in its data files and WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pan_reaches_the_database() {
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let vault = Vault::new(keys(1), 1024).unwrap();
    let pans = test_pans();
    let mut written = Vec::new();
    for (n, pan) in pans.iter().enumerate() {
        assert!(pan.luhn_valid(), "{pan}");
        let (token, sealed) = vault.seal_if_new(pan);
        let (bin, last4) = bin_and_last4(pan);
        let record = JournalRecord {
            bin: Some(bin),
            last4: Some(last4.clone()),
            sealed_pan: sealed,
            idempotency: Some(IdempotencyEntry {
                merchant_id: "M0001".to_owned(),
                key: format!("order-{n}"),
                request_hash: [n as u8; 32],
                response_json: format!(
                    r#"{{"status":"approved","token":"{token}","last4":"{last4}"}}"#
                ),
                status: 201,
            }),
            ..approved(NOW_MS + n as u64, token, "000001")
        };
        t.journal.append(record.clone()).await.unwrap();
        vault.remember_sealed(&token);
        written.push(record);
    }
    for record in &written {
        let again = JournalRecord {
            idempotency: None,
            sealed_pan: None,
            ..approved(NOW_MS + 100, record.token.unwrap(), "000002")
        };
        t.journal.append(again).await.unwrap();
        t.journal
            .append(reversal_of(record, NOW_MS + 200))
            .await
            .unwrap();
    }
    for pan in &pans {
        let revealed = vault
            .reveal(&t.store, vault.tokenize(pan))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revealed.expose(), pan.expose());
    }
    let needles: Vec<_> = pans.iter().flat_map(needles).collect();
    let key_material = keys(1);
    let mut forbidden_keys = vec![key_material.tokenization_key];
    forbidden_keys.extend(key_material.encryption_keys.iter().map(|(_, key)| *key));

    // Every value of every column, typed.
    let mut conn = t.db.connect().await;
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut values_scanned = 0;
    let mut seen_bin = false;
    for column in &columns {
        let (table, name, data_type): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        let select = if data_type == "bytea" {
            format!("SELECT {name} FROM {table} WHERE {name} IS NOT NULL")
        } else {
            format!("SELECT convert_to({name}::text, 'UTF8') FROM {table} WHERE {name} IS NOT NULL")
        };
        for row in sqlx::query(&select).fetch_all(&mut conn).await.unwrap() {
            let value: Vec<u8> = row.get(0);
            values_scanned += 1;
            seen_bin |= value == b"45320151";
            for needle in &needles {
                assert!(
                    !contains(&value, &needle.bytes),
                    "{} found in {table}.{name}",
                    needle.what
                );
            }
            for key in &forbidden_keys {
                assert!(
                    !contains(&value, key),
                    "a vault key found in {table}.{name}"
                );
            }
        }
    }
    // The scan looked at real data: the allowed parts are there.
    assert!(seen_bin);
    assert!(values_scanned > 500, "{values_scanned}");

    // The dump an operator would take. It prints bytea as hex, so a PAN in
    // a bytea column shows as the hex of its digits; only whole PANs are
    // looked for in hex, which random bytes do not spell by chance.
    let pg_dump = std::env::var("SWITCH_PG_BIN")
        .map(|bin| format!("{bin}/pg_dump"))
        .unwrap_or_else(|_| "pg_dump".to_owned());
    let dump = std::process::Command::new(&pg_dump)
        .arg("--dbname")
        .arg(&t.db.url)
        .output()
        .unwrap_or_else(|error| {
            panic!("{pg_dump} cannot run ({error}); scripts/test-env sets SWITCH_PG_BIN")
        });
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = dump.stdout;
    assert!(contains(&dump, b"45320151"));
    for needle in &needles {
        assert!(
            !contains(&dump, &needle.bytes),
            "{} found in pg_dump",
            needle.what
        );
        if needle.whole {
            assert!(
                !contains(&dump, &hex(&needle.bytes)),
                "{} found in pg_dump as hex",
                needle.what
            );
        }
    }

    // The server's own files: the table files and the WAL, which hold
    // every row image written. The WAL is the whole cluster's, other
    // tests' fixtures included (a ciphertext of 32 bytes 0x35 reads
    // "5555..."), so only whole PANs are looked for there.
    if let Ok(dir) = std::env::var("SWITCH_TEST_ENV_DIR") {
        conn.execute(sqlx::raw_sql("CHECKPOINT")).await.unwrap();
        let oid: i64 =
            sqlx::query("SELECT oid::int8 FROM pg_database WHERE datname = current_database()")
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get(0);
        let data = std::path::Path::new(&dir).join("pg");
        let mut files = Vec::new();
        for (folder, whole_only) in [
            (data.join("base").join(oid.to_string()), false),
            (data.join("pg_wal"), true),
        ] {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    files.push((path, whole_only));
                }
            }
        }
        let mut seen_bin = false;
        for (path, whole_only) in &files {
            // The server recycles WAL segments as it goes.
            let bytes = match std::fs::read(path) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                read => read.unwrap(),
            };
            seen_bin |= contains(&bytes, b"45320151");
            for needle in needles.iter().filter(|n| n.whole || !whole_only) {
                assert!(
                    !contains(&bytes, &needle.bytes),
                    "{} found in {}",
                    needle.what,
                    path.display()
                );
            }
        }
        assert!(seen_bin, "the scan of the data files found no data");
    }
    conn.close().await.unwrap();
    t.finish().await;
}

/// The database the proxy tests and helpers build their URLs from parses
/// back as expected; a guard on the test helpers themselves.
#[test]
fn test_urls_are_rewritten_as_meant() {
    assert_eq!(
        with_database("postgres://u@127.0.0.1:5432/switch_test", "x"),
        "postgres://u@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(
        with_address("postgres://u:p@h:1/db?sslmode=disable", 7),
        "postgres://u:p@127.0.0.1:7/db?sslmode=disable"
    );
    let ids: HashSet<TransactionId> = (0..100).map(|_| id_at(NOW_MS)).collect();
    assert_eq!(ids.len(), 100);
}

/// The benchmark baselines are built with the `baseline` feature only.
#[cfg(feature = "baseline")]
#[tokio::test]
async fn baselines_measure_on_a_scratch_table_and_leave_the_journal_alone() {
    let Some(t) = Pg::open(config(1)).await else {
        return;
    };
    let record = approved(NOW_MS, token(2), "000001");
    t.journal.append(record.clone()).await.unwrap();
    let size = storage::baseline::BaselineSize {
        bulk_rows: 300,
        single_commits: 20,
    };
    let figures = storage::baseline::postgres(&t.db.url, size).await.unwrap();
    assert_eq!(figures.backend, "postgres");
    assert_eq!(figures.k_copy_rows, 300);
    assert!(figures.k_copy_rows_per_s > 0.0);
    assert!(figures.k_1_commits_per_s > 0.0);
    assert!(figures.l_1_us_p99 >= figures.l_1_us_p50);
    let mut conn = t.db.connect().await;
    // The journal's table holds only its own record; the scratch table is gone.
    assert_eq!(count_rows(&mut conn, "transactions").await, 1);
    let scratch: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('baseline_transactions')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(scratch, None);
    t.finish().await;
}

/// Two nodes (two stores, each with its writers, on one database) claim
/// one idempotency key at the same moment: exactly one gets it, the other
/// is told it is in flight, however their writers' transactions interleave.
/// Then the holder's record completes the claim and a record of the other
/// request under the key is not written.
#[tokio::test]
async fn two_nodes_claiming_one_key_at_once_get_one_claim() {
    let Some(t) = Pg::open(config(2)).await else {
        return;
    };
    let (south, south_store) = PostgresStore::open(&t.db.url, config(2)).await.unwrap();
    let claim = |key: &str, claimed_by| storage::IdempotencyClaim {
        merchant_id: "M0001".to_owned(),
        key: key.to_owned(),
        request_hash: [1; 32],
        claimed_by,
        claimed_at_ms: NOW_MS,
        stale_before_ms: 0,
    };
    for n in 0..20 {
        let key = format!("race-{n}");
        let (north_id, south_id) = (id_at(NOW_MS), id_at(NOW_MS));
        let (at_north, at_south) = tokio::join!(
            t.journal.claim(claim(&key, north_id)),
            south.claim(claim(&key, south_id))
        );
        let claimed = |outcome: &storage::ClaimOutcome| {
            matches!(outcome, storage::ClaimOutcome::Claimed { took_over: None })
        };
        let (at_north, at_south) = (at_north.unwrap(), at_south.unwrap());
        let (holder, other) = match (claimed(&at_north), claimed(&at_south)) {
            (true, false) => (north_id, south_id),
            (false, true) => (south_id, north_id),
            answers => {
                panic!("{key}: expected one claim, got {answers:?} ({at_north:?}, {at_south:?})")
            }
        };
        assert_eq!(
            [&at_north, &at_south]
                .into_iter()
                .filter(|o| **o == storage::ClaimOutcome::InFlight)
                .count(),
            1
        );
        let entry = IdempotencyEntry {
            merchant_id: "M0001".to_owned(),
            key: key.clone(),
            request_hash: [1; 32],
            response_json: "{}".to_owned(),
            status: 201,
        };
        let record = |id| JournalRecord {
            id,
            idempotency: Some(entry.clone()),
            ..approved(NOW_MS, token(1), "000001")
        };
        let (by_holder, by_other) = tokio::join!(
            t.journal.append(record(holder)),
            south.append(record(other))
        );
        assert_eq!(by_holder, Ok(AppendOutcome::Recorded));
        assert_eq!(
            by_other,
            Ok(AppendOutcome::IdempotencyKeyTaken { by: holder })
        );
        assert!(south_store.transaction(other).await.unwrap().is_none());
    }
    south.close().await;
    south_store.close().await;
    t.finish().await;
}
