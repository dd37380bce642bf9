//! Writes records, sealed PANs and idempotency entries for several cards,
//! then reads the raw bytes of the database and its WAL and shared-memory
//! files (or the segment log's segments), open and after close, and looks
//! for the card numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::leak::{Needle, contains, needles, test_pans};
use common::{NOW_MS, TestStore, approved, keys, reversal_of};
use protocol::Pan;
use storage::{
    IdempotencyEntry, Journal, JournalConfig, JournalRecord, LogConfig, LogStore, StoreReader,
    Vault, bin_and_last4,
};

fn scan(dir: &Path, needles: &[Needle], forbidden_keys: &[[u8; 32]]) -> usize {
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        for needle in needles {
            assert!(
                !contains(&bytes, &needle.bytes),
                "{} found in {}",
                needle.what,
                path.display()
            );
        }
        for key in forbidden_keys {
            assert!(
                !contains(&bytes, key),
                "a vault key found in {}",
                path.display()
            );
        }
    }
    scanned
}

/// Every test card's record (with its sealed PAN and an idempotency entry),
/// a second sighting and a reversal of each; checks each card opens from
/// the vault. Returns the needles to look for and the key material.
async fn write_cards(journal: &Journal, store: &impl StoreReader) -> (Vec<Needle>, Vec<[u8; 32]>) {
    let vault = Vault::new(keys(1), 1024).unwrap();
    let pans: Vec<Pan> = test_pans();
    for pan in &pans {
        assert!(pan.luhn_valid(), "{pan}");
    }
    let mut written = Vec::new();
    for (n, pan) in pans.iter().enumerate() {
        let (token, sealed) = vault.seal_if_new(pan);
        let (bin, last4) = bin_and_last4(pan);
        let record = JournalRecord {
            bin: Some(bin),
            last4: Some(last4.clone()),
            sealed_pan: sealed,
            idempotency: Some(IdempotencyEntry {
                merchant_id: "M0001".to_owned(),
                key: format!("order-{n}"),
                request_hash: [u8::try_from(n).unwrap(); 32],
                response_json: format!(
                    r#"{{"status":"approved","token":"{token}","last4":"{last4}"}}"#
                ),
                status: 201,
            }),
            ..approved(NOW_MS + u64::try_from(n).unwrap(), token, "000001")
        };
        journal.append(record.clone()).await.unwrap();
        vault.remember_sealed(&token);
        written.push(record);
    }
    // A second sighting of each card and a reversal, as traffic would have.
    for record in &written {
        let again = JournalRecord {
            idempotency: None,
            sealed_pan: None,
            ..approved(NOW_MS + 100, record.token.unwrap(), "000002")
        };
        journal.append(again).await.unwrap();
        journal
            .append(reversal_of(record, NOW_MS + 200))
            .await
            .unwrap();
    }
    // Every card is in the vault and opens to its PAN.
    for pan in &pans {
        let revealed = vault
            .reveal(store, vault.tokenize(pan))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revealed.expose(), pan.expose());
    }

    let needles: Vec<_> = pans.iter().flat_map(needles).collect();
    let key_material = keys(1);
    let mut forbidden = vec![key_material.tokenization_key];
    forbidden.extend(key_material.encryption_keys.iter().map(|(_, key)| *key));
    (needles, forbidden)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pan_reaches_the_database_files() {
    let t = TestStore::open(JournalConfig::default()).await;
    let (needles, forbidden) = write_cards(&t.journal, &t.store).await;

    // While open: the WAL holds the recent commits.
    let dir = t.dir.path().to_path_buf();
    assert!(dir.join("journal.db-wal").exists());
    assert_eq!(scan(&dir, &needles, &forbidden), 3);

    // After close: checkpointed into the main file.
    let dir = t.close().await;
    assert!(scan(dir.path(), &needles, &forbidden) >= 1);
    let main = std::fs::read(dir.path().join("journal.db")).unwrap();
    // The scan is looking at real data: the allowed parts are there.
    assert!(main.windows(8).any(|w| w == b"45320151"));
    assert!(main.windows(4).any(|w| w == b"0005"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pan_reaches_the_segment_log() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, store) = LogStore::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let (needles, forbidden) = write_cards(&journal, &store).await;
    journal.close().await;
    assert_eq!(scan(dir.path(), &needles, &forbidden), 1);
    let segment = std::fs::read(dir.path().join("journal-00000001.seg")).unwrap();
    // The scan is looking at real data: the allowed parts are there.
    assert!(segment.windows(8).any(|w| w == b"45320151"));
    assert!(segment.windows(4).any(|w| w == b"0005"));
}
