//! Vault key rotation with stored rows, on both backends: rows sealed under
//! key 1, rotation to key 2 while the vault is in use, new seals under key
//! 2, old rows still opening, the rewrap moving every row in bounded
//! batches while the journal keeps appending, the compare-and-set leaving a
//! row changed meanwhile alone, and a key still in use refused removal.
//!
//! The PostgreSQL variant runs under `scripts/test-env` (it needs
//! `DATABASE_URL`) and returns at once without it, unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::postgres::{TestDatabase, config};
use common::{NOW_MS, TestStore, approved, id_at};
use protocol::Pan;
use storage::{
    AppendOutcome, Journal, JournalConfig, JournalRecord, PostgresStore, Rewrapped, StorageError,
    StoreReader, Vault, VaultKeys, VaultMaintenance, rewrap_batch, verify_all,
};
use tokio::time::Instant;

/// Key 1 alone, or keys 1 and 2 with 2 active; `only_two` drops key 1.
fn keys(step: u8) -> VaultKeys {
    let mut encryption_keys = vec![(1, [0x11; 32]), (2, [0x22; 32])];
    let active_key_id = match step {
        1 => {
            encryption_keys.truncate(1);
            1
        }
        2 => 2,
        _ => {
            encryption_keys.remove(0);
            2
        }
    };
    VaultKeys {
        tokenization_key: [0x5A; 32],
        encryption_keys,
        active_key_id,
    }
}

/// A distinct, Luhn-valid test PAN for each `n`.
fn pan(n: u64) -> Pan {
    let body = format!("4{:014}", 100_000_000 + n);
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    Pan::parse(format!("{body}{}", (10 - sum % 10) % 10).as_bytes()).unwrap()
}

/// An approved record carrying the PAN's sealed entry.
fn sealed_record(vault: &Vault, n: u64) -> JournalRecord {
    let sealed = vault.seal(&pan(n)).unwrap();
    let mut record = approved(NOW_MS + n, sealed.token, "000001");
    record.id = id_at(NOW_MS + n);
    record.sealed_pan = Some(sealed);
    record
}

async fn append_sealed(journal: &Journal, vault: &Vault, range: std::ops::Range<u64>) {
    for n in range {
        assert_eq!(
            journal.append(sealed_record(vault, n)).await,
            Ok(AppendOutcome::Recorded)
        );
    }
}

const OLD_ROWS: u64 = 600;
const NEW_ROWS: u64 = 40;
const BATCH_ROWS: u32 = 64;

/// The whole rotation on one backend.
async fn rotate_and_rewrap<S: VaultMaintenance + StoreReader + Clone>(
    backend: &str,
    journal: &Journal,
    store: &S,
) {
    let vault = Arc::new(Vault::new(keys(1), 0).unwrap());
    append_sealed(journal, &vault, 0..OLD_ROWS).await;
    assert_eq!(
        store.vault_rows_per_key().await.unwrap(),
        vec![(1, OLD_ROWS)]
    );

    // Rotate while in use: key 2 added and active; key 1 kept for old rows.
    let change = vault.rotate(&keys(2), &[1]).unwrap();
    assert_eq!(change.before.key_ids, vec![1]);
    assert_eq!(change.after.key_ids, vec![1, 2]);
    assert_eq!(change.after.active_key_id, 2);
    append_sealed(journal, &vault, OLD_ROWS..OLD_ROWS + NEW_ROWS).await;
    assert_eq!(
        store.vault_rows_per_key().await.unwrap(),
        vec![(1, OLD_ROWS), (2, NEW_ROWS)]
    );
    // Old rows open with key 1, new ones are under key 2.
    for n in [0, OLD_ROWS - 1, OLD_ROWS] {
        let token = vault.tokenize(&pan(n));
        let sealed = store.sealed_pan(token).await.unwrap().unwrap();
        assert_eq!(sealed.key_id, if n < OLD_ROWS { 1 } else { 2 });
        assert_eq!(vault.open(&sealed).unwrap().expose(), pan(n).expose());
    }

    // Key 1 cannot go while rows use it; the running keyring stays.
    let in_use: Vec<u32> = store
        .vault_rows_per_key()
        .await
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert!(matches!(
        vault.rotate(&keys(3), &in_use),
        Err(StorageError::KeyInUse { key_id: 1 })
    ));
    assert_eq!(vault.keyring().key_ids, vec![1, 2]);

    // Compare-and-set: a row moved by someone else between our read and
    // our write is not overwritten.
    let page = store.sealed_page(None, Some(2), 8).await.unwrap();
    assert_eq!(page.len(), 8);
    assert!(page.iter().all(|row| row.key_id == 1));
    let rewrap = |row: &storage::SealedPan| Rewrapped {
        old_key_id: row.key_id,
        old_nonce: row.nonce,
        sealed: vault.seal(&vault.open(row).unwrap()).unwrap(),
    };
    let ours: Vec<Rewrapped> = page.iter().map(rewrap).collect();
    let theirs = rewrap(&page[0]);
    assert_eq!(
        store
            .replace_sealed(std::slice::from_ref(&theirs))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.replace_sealed(&ours).await.unwrap(), 7);
    let kept = store.sealed_pan(page[0].token).await.unwrap().unwrap();
    assert_eq!(kept, theirs.sealed, "the concurrent change won");
    // Written twice: the second time nothing matches any more.
    assert_eq!(store.replace_sealed(&ours).await.unwrap(), 0);

    // The rewrap, in batches, while the journal keeps taking records. The
    // same load runs alone first, for a baseline of append latency.
    let start_load = |first: u64| {
        let stop = Arc::new(AtomicBool::new(false));
        let journal = journal.clone();
        let vault = Arc::clone(&vault);
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut n = first;
            let mut slowest = Duration::ZERO;
            while !stopping.load(Ordering::Relaxed) {
                let started = Instant::now();
                assert_eq!(
                    journal.append(sealed_record(&vault, n)).await,
                    Ok(AppendOutcome::Recorded)
                );
                slowest = slowest.max(started.elapsed());
                n += 1;
            }
            (n - first, slowest)
        });
        (stop, task)
    };
    let (stop, baseline) = start_load(1_000_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (baseline_appended, baseline_slowest) = baseline.await.unwrap();
    let (stop, load) = start_load(2_000_000);
    let mut after = None;
    let mut batches = 0;
    let mut moved = 0;
    loop {
        let batch = rewrap_batch(store, &vault, after, BATCH_ROWS)
            .await
            .unwrap();
        assert!(batch.selected <= u64::from(BATCH_ROWS));
        assert_eq!(batch.active_key_id, 2);
        batches += 1;
        moved += batch.moved;
        after = batch.next;
        if after.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (appended, slowest) = load.await.unwrap();
    let appended = appended + baseline_appended;
    eprintln!(
        "{backend} rewrap: {moved} rows in {batches} batches of <= {BATCH_ROWS}; appends meanwhile \
         slowest {slowest:?}; alone before, slowest {baseline_slowest:?}"
    );
    assert_eq!(moved, OLD_ROWS - 8);
    assert!(batches > 1, "bounded batches");
    let rows = store.vault_rows_per_key().await.unwrap();
    assert_eq!(rows, vec![(2, OLD_ROWS + NEW_ROWS + appended)]);

    // Every row opens, and only under key 2.
    let report = verify_all(store, &vault, 100).await.unwrap();
    assert_eq!(report.failed_per_key, vec![]);
    assert_eq!(
        report.opened_per_key,
        vec![(2, OLD_ROWS + NEW_ROWS + appended)]
    );
    for n in (0..OLD_ROWS).step_by(37) {
        let revealed = vault
            .reveal(store, vault.tokenize(&pan(n)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revealed.expose(), pan(n).expose());
    }

    // Now key 1 is unused and not active: it may go.
    vault.rotate(&keys(3), &[2]).unwrap();
    assert_eq!(vault.keyring().key_ids, vec![2]);
    assert_eq!(
        verify_all(store, &vault, 100).await.unwrap().failed_per_key,
        vec![]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_move_to_the_new_key_in_batches() {
    let t = TestStore::open(JournalConfig::default()).await;
    rotate_and_rewrap("sqlite", &t.journal, &t.store).await;
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_move_to_the_new_key_in_batches() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (journal, store) = PostgresStore::open(&db.url, config(2)).await.unwrap();
    rotate_and_rewrap("postgres", &journal, &store).await;
    journal.close().await;
    store.close().await;
    db.drop().await;
}
