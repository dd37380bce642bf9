//! The segment log against real files: what it reads back after a
//! restart, a torn tail cut off at the last whole commit, damage elsewhere
//! refused, and segments that roll. What every backend answers (reversals,
//! keys, the replay, the vault) is in `conformance.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{NOW_MS, approved, reversal_of, token};
use storage::{
    AppendOutcome, ClaimOutcome, IdempotencyClaim, IdempotencyEntry, Journal, JournalConfig,
    JournalRecord, LogConfig, LogStore, ReplayPages, SealedPan, StorageError, StoreReader,
};

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        journal: JournalConfig::default(),
        segment_bytes,
    }
}

async fn open(dir: &Path) -> (Journal, LogStore) {
    LogStore::open(dir, config(storage::log::SEGMENT_BYTES_DEFAULT))
        .await
        .unwrap()
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join("journal-00000001.seg")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    let at = usize::try_from(offset).unwrap();
    data[at] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

/// How many files under `dir` end so.
fn files_ending(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

async fn present(store: &LogStore, record: &JournalRecord) -> bool {
    store.transaction(record.id).await.unwrap().is_some()
}

/// Three records committed one batch each; the segment's length after each.
async fn three_commits(dir: &Path) -> ([JournalRecord; 3], [u64; 3]) {
    let (journal, _store) = open(dir).await;
    let records = [
        approved(NOW_MS, token(1), "000001"),
        approved(NOW_MS + 1, token(2), "000002"),
        approved(NOW_MS + 2, token(3), "000003"),
    ];
    let mut lens = [0; 3];
    for (record, len) in records.iter().zip(lens.iter_mut()) {
        assert_eq!(
            journal.append(record.clone()).await,
            Ok(AppendOutcome::Recorded)
        );
        // An append returns after its frame is written and synced.
        *len = file_len(&first_segment(dir));
    }
    journal.close().await;
    (records, lens)
}

#[tokio::test]
async fn everything_committed_reads_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, store) = open(dir.path()).await;
    let mut original = approved(NOW_MS, token(1), "000001");
    original.sealed_pan = Some(SealedPan {
        token: token(1),
        key_id: 1,
        nonce: [7; 12],
        ciphertext: vec![9; 32],
    });
    let reversal = reversal_of(&original, NOW_MS + 5);
    let mut keyed = approved(NOW_MS + 6, token(2), "000002");
    keyed.idempotency = Some(IdempotencyEntry {
        merchant_id: "M0001".to_owned(),
        key: "k-answered".to_owned(),
        request_hash: [3; 32],
        response_json: r#"{"status":"approved"}"#.to_owned(),
        status: 201,
    });
    let claim = IdempotencyClaim {
        merchant_id: "M0001".to_owned(),
        key: "k-pending".to_owned(),
        request_hash: [4; 32],
        claimed_by: common::id_at(NOW_MS + 7),
        claimed_at_ms: NOW_MS + 7,
        stale_before_ms: NOW_MS,
    };
    for record in [&original, &reversal, &keyed] {
        assert_eq!(
            journal.append(record.clone()).await,
            Ok(AppendOutcome::Recorded)
        );
    }
    assert_eq!(
        journal.claim(claim.clone()).await,
        Ok(ClaimOutcome::Claimed { took_over: None })
    );
    journal.close().await;
    let before = (
        store.transaction(original.id).await.unwrap(),
        store.approved_since(0, None, 100).await.unwrap(),
    );

    let (journal, store) = open(dir.path()).await;
    assert_eq!(store.recovery().torn_bytes, 0);
    assert_eq!(store.recovery().frames, 4);
    let after = (
        store.transaction(original.id).await.unwrap(),
        store.approved_since(0, None, 100).await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(after.0.unwrap().reversed_by, Some(reversal.id));
    assert_eq!(
        store.sealed_pan(token(1)).await.unwrap(),
        original.sealed_pan
    );
    assert_eq!(
        store
            .idempotent_response("M0001", "k-answered")
            .await
            .unwrap(),
        keyed.idempotency
    );
    // The claim survived: another request for the key is in flight.
    let other = IdempotencyClaim {
        claimed_by: common::id_at(NOW_MS + 8),
        ..claim
    };
    assert_eq!(journal.claim(other).await, Ok(ClaimOutcome::InFlight));
    // The record id is taken: the same record again fails its batch.
    assert!(journal.append(original.clone()).await.is_err());
    journal.close().await;
}

#[tokio::test]
async fn a_frame_cut_short_is_cut_off_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (records, lens) = three_commits(dir.path()).await;
    let segment = first_segment(dir.path());
    // The last frame half written, as a crash in the middle of its write.
    let torn_at = lens[1] + (lens[2] - lens[1]) / 2;
    std::fs::File::options()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(torn_at)
        .unwrap();

    let (journal, store) = open(dir.path()).await;
    assert_eq!(store.recovery().torn_bytes, torn_at - lens[1]);
    assert_eq!(
        file_len(&segment),
        lens[1],
        "cut back to the last whole frame"
    );
    assert!(present(&store, &records[0]).await);
    assert!(present(&store, &records[1]).await);
    assert!(!present(&store, &records[2]).await);
    let next = approved(NOW_MS + 3, token(4), "000004");
    assert_eq!(
        journal.append(next.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    journal.close().await;

    let (journal, store) = open(dir.path()).await;
    assert_eq!(store.recovery().torn_bytes, 0);
    assert_eq!(store.records(), 3);
    assert!(present(&store, &next).await);
    journal.close().await;
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_frame_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (records, lens) = three_commits(dir.path()).await;
    let segment = first_segment(dir.path());
    flip_byte(&segment, lens[2] - 10);

    let (journal, store) = open(dir.path()).await;
    assert_eq!(store.recovery().torn_bytes, lens[2] - lens[1]);
    assert!(present(&store, &records[1]).await);
    assert!(!present(&store, &records[2]).await);
    // The record that was cut off may be written again.
    assert_eq!(
        journal.append(records[2].clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    journal.close().await;
}

#[tokio::test]
async fn a_bad_frame_followed_by_whole_ones_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lens) = three_commits(dir.path()).await;
    let segment = first_segment(dir.path());
    let before = std::fs::read(&segment).unwrap();
    // The second of three frames: damage, not a torn tail.
    flip_byte(&segment, lens[1] - 10);

    let error = LogStore::open(dir.path(), config(storage::log::SEGMENT_BYTES_DEFAULT))
        .await
        .unwrap_err();
    match &error {
        StorageError::LogCorrupt { path, offset, .. } => {
            assert_eq!(path, &segment);
            assert_eq!(*offset, lens[0], "the offset of the bad frame");
        }
        other => panic!("expected LogCorrupt, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("journal-00000001.seg"), "{message}");
    // Refusing leaves the file as it was, for whoever looks at it.
    let mut expected = before;
    let at = usize::try_from(lens[1] - 10).unwrap();
    expected[at] ^= 0x40;
    assert_eq!(std::fs::read(&segment).unwrap(), expected);
}

#[tokio::test]
async fn segments_roll_and_damage_in_an_earlier_one_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // A few records per segment.
    let (journal, _store) = LogStore::open(dir.path(), config(1024)).await.unwrap();
    let records: Vec<JournalRecord> = (0..40)
        .map(|n| {
            let stan = format!("{:06}", n + 1);
            approved(NOW_MS + n, token(u8::try_from(n).unwrap()), &stan)
        })
        .collect();
    for record in &records {
        assert_eq!(
            journal.append(record.clone()).await,
            Ok(AppendOutcome::Recorded)
        );
    }
    journal.close().await;
    let segments = files_ending(dir.path(), ".seg");
    assert!(segments > 3, "{segments} segments");

    let (journal, store) = LogStore::open(dir.path(), config(1024)).await.unwrap();
    // Start-up read the open segment alone; the closed ones are in the
    // snapshot and their index files.
    let segments = u64::try_from(segments).unwrap();
    assert_eq!(store.recovery().snapshot, segments - 1);
    assert_eq!(store.recovery().segments, 1);
    assert_eq!(store.records(), records.len());
    let mut pages = ReplayPages::new(&store, 0, 7);
    let mut replayed = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        replayed += page.len();
    }
    assert_eq!(replayed, records.len());
    journal.close().await;

    // Damage at the end of the first segment, in its last frame: a read
    // of a record there finds it, naming the file and the offset.
    let first = first_segment(dir.path());
    flip_byte(&first, file_len(&first) - 1);
    let (journal, store) = LogStore::open(dir.path(), config(1024)).await.unwrap();
    let mut damaged = None;
    for record in &records {
        if let Err(error) = store.transaction(record.id).await {
            damaged = Some(error);
        }
    }
    assert!(
        matches!(&damaged, Some(StorageError::LogCorrupt { path, offset, .. }) if path == &first && *offset > 0),
        "{damaged:?}"
    );
    journal.close().await;

    // A start that must read the first segment again (no snapshot or
    // index file to begin from) refuses: it is not a torn tail, later
    // segments follow it.
    remove_files_ending(dir.path(), ".snap");
    remove_files_ending(dir.path(), ".idx");
    let error = LogStore::open(dir.path(), config(1024)).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::LogCorrupt { path, .. } if path == &first),
        "{error:?}"
    );
}

fn remove_files_ending(dir: &Path, suffix: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(suffix) {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(first_segment(dir.path()), b"SQLite format 3\0 and more").unwrap();
    let error = LogStore::open(dir.path(), config(1024)).await.unwrap_err();
    assert!(
        matches!(error, StorageError::LogCorrupt { offset: 0, .. }),
        "{error:?}"
    );
}

/// `count` approvals with STANs 1.., each a new card's with its sealed
/// PAN and an idempotency entry, one batch each.
async fn history(journal: &Journal, count: u64) -> Vec<JournalRecord> {
    let mut records = Vec::new();
    for n in 0..count {
        let stan = format!("{:06}", n + 1);
        let card = token(u8::try_from(n % 251).unwrap());
        let mut record = approved(NOW_MS + n, card, &stan);
        record.sealed_pan = Some(SealedPan {
            token: card,
            key_id: 1,
            nonce: [7; 12],
            ciphertext: vec![9; 32],
        });
        record.idempotency = Some(IdempotencyEntry {
            merchant_id: "M0001".to_owned(),
            key: format!("key-{n}"),
            request_hash: [1; 32],
            response_json: "{}".to_owned(),
            status: 201,
        });
        assert_eq!(
            journal.append(record.clone()).await,
            Ok(AppendOutcome::Recorded)
        );
        records.push(record);
    }
    records
}

/// Every read of `records` (and of the reversal of the first) answers as
/// written, from whichever segment holds it.
async fn every_read_answers(store: &LogStore, records: &[JournalRecord], reversal: &JournalRecord) {
    for record in [
        &records[0],
        &records[records.len() / 2],
        &records[records.len() - 1],
    ] {
        let stored = store.transaction(record.id).await.unwrap().unwrap();
        assert_eq!(stored.record.id, record.id);
        assert_eq!(stored.record.stan, record.stan);
        let keys = storage::OriginalKeys {
            terminal_id: record.terminal_id,
            stan: record.stan.unwrap(),
            transmitted_at: record.transmitted_at,
            merchant_id: record.merchant_id,
            acquirer: None,
        };
        let kinds = [storage::RecordKind::Authorization];
        let found = store.find_original(&keys, &kinds, 0).await.unwrap();
        assert_eq!(found.map(|r| r.id), Some(record.id));
        let key = &record.idempotency.as_ref().unwrap().key;
        assert!(
            store
                .idempotent_response("M0001", key)
                .await
                .unwrap()
                .is_some()
        );
        let card = record.token.unwrap();
        assert_eq!(store.sealed_pan(card).await.unwrap().unwrap().token, card);
    }
    let first = store.transaction(records[0].id).await.unwrap().unwrap();
    assert_eq!(first.reversed_by, Some(reversal.id));
    // The replay, in order across every segment, without the reversed
    // first record.
    let mut pages = ReplayPages::new(store, 0, 7);
    let mut replayed = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        replayed.extend(page.iter().map(|row| row.id));
    }
    let expected: Vec<_> = records[1..].iter().map(|r| r.id).collect();
    assert_eq!(replayed, expected);
}

#[tokio::test]
async fn closed_segments_are_read_from_their_index_files_and_cost_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    let records = history(&journal, 200).await;
    // A reversal of the oldest record, long after it.
    let reversal = reversal_of(&records[0], NOW_MS + 1_000);
    assert_eq!(
        journal.append(reversal.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    let held = store.in_memory();
    assert!(held.closed_segments >= 20, "{held:?}");
    // A segment of 2 KiB holds a handful of records: those of the open
    // one are all that is indexed in memory, however many came before.
    assert!(held.open_records <= 10, "{held:?}");
    assert_eq!(store.records(), records.len() + 1);
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;

    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    assert!(store.in_memory().open_records <= 10);
    assert_eq!(store.in_memory().closed_segments, held.closed_segments);
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;
}

/// A log of 200 records and a late reversal in 2 KiB segments, closed.
async fn closed_history(dir: &Path) -> (Vec<JournalRecord>, JournalRecord) {
    let (journal, _store) = LogStore::open(dir, config(2048)).await.unwrap();
    let records = history(&journal, 200).await;
    let reversal = reversal_of(&records[0], NOW_MS + 1_000);
    journal.append(reversal.clone()).await.unwrap();
    journal.close().await;
    (records, reversal)
}

#[tokio::test]
async fn a_restart_reads_the_snapshot_and_the_open_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let (records, reversal) = closed_history(dir.path()).await;
    let segments = u64::try_from(files_ending(dir.path(), ".seg")).unwrap();
    assert!(segments >= 20);

    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    let recovery = store.recovery().clone();
    assert_eq!(recovery.snapshot, segments - 1, "{recovery:?}");
    assert_eq!(recovery.segments, 1, "{recovery:?}");
    // The frames of one 2 KiB segment, not the 201 written.
    assert!(recovery.frames <= 10, "{recovery:?}");
    assert_eq!(store.records(), records.len() + 1);
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;
}

#[tokio::test]
async fn a_missing_or_damaged_index_or_snapshot_is_rebuilt_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (records, reversal) = closed_history(dir.path()).await;
    let segments = u64::try_from(files_ending(dir.path(), ".seg")).unwrap();
    let index = |n: u64| dir.path().join(format!("journal-{n:08}.idx"));
    let snapshot = |n: u64| dir.path().join(format!("journal-{n:08}.snap"));

    // The latest snapshot damaged: the one before it is used, and the
    // segment after it read back.
    flip_byte(&snapshot(segments - 1), 20);
    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    assert_eq!(store.recovery().snapshot, segments - 2);
    assert_eq!(store.recovery().segments, 2);
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;

    // An index file missing: every segment is read back, and every index
    // and snapshot written afresh.
    std::fs::remove_file(index(3)).unwrap();
    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    assert_eq!(store.recovery().snapshot, 0);
    assert_eq!(store.recovery().segments, segments);
    assert!(index(3).exists());
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;

    // An index file's header damaged: the same.
    flip_byte(&index(5), 30);
    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    assert_eq!(store.recovery().snapshot, 0);
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;

    // An index file's body damaged (its header sound): found on the first
    // read of that segment, which fails naming it and sets it aside; the
    // next start rebuilds it and every answer is as before.
    let damaged = index(1);
    let len = file_len(&damaged);
    flip_byte(&damaged, len - 1);
    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    assert_eq!(store.recovery().snapshot, segments - 1);
    let error = store.transaction(records[0].id).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::LogCorrupt { path, .. } if path == &damaged),
        "{error:?}"
    );
    journal.close().await;
    let (journal, store) = LogStore::open(dir.path(), config(2048)).await.unwrap();
    assert_eq!(store.recovery().snapshot, 0);
    every_read_answers(&store, &records, &reversal).await;
    journal.close().await;
}
