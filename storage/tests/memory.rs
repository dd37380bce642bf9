//! The in-memory backend's controls, with the real group commit running over
//! it: failed batches, a stalled disk, a commit whose answer is lost, and a
//! crash and restart. What it stores and answers is checked against the SQL
//! backends in `conformance.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NOW_MS, approved, reversal_of, token};
use storage::memory::MemoryBackend;
use storage::{
    AnyStore, AppendOutcome, Journal, JournalConfig, JournalError, StoreReader, VaultMaintenance,
};

fn start(memory: &MemoryBackend, config: JournalConfig) -> (Journal, AnyStore) {
    (
        Journal::start(memory.clone(), &config),
        AnyStore::new(memory.clone()),
    )
}

/// Lets the other tasks of the one-thread test runtime run until `done`.
async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the journal did not get there");
}

#[tokio::test]
async fn failed_batches_store_nothing_and_the_writer_goes_on() {
    let memory = MemoryBackend::new();
    let (journal, store) = start(&memory, JournalConfig::default());
    memory.fail_next_batches(2);
    let lost = [
        approved(NOW_MS, token(1), "000001"),
        approved(NOW_MS + 1, token(2), "000002"),
    ];
    for record in &lost {
        assert_eq!(
            journal.append(record.clone()).await,
            Err(JournalError::Unavailable)
        );
        assert_eq!(store.transaction(record.id).await.unwrap(), None);
    }
    let kept = approved(NOW_MS + 2, token(3), "000003");
    assert_eq!(
        journal.append(kept.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert!(store.transaction(kept.id).await.unwrap().is_some());
    let stats = journal.stats();
    assert_eq!((stats.failed_batches, stats.failed_records), (2, 2));
    assert_eq!((stats.batches, stats.records), (1, 1));
    // The failed records can be written again: nothing of them was kept.
    assert_eq!(
        journal.append(lost[0].clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    journal.close().await;
}

#[tokio::test]
async fn held_batches_wait_and_the_queue_sheds_until_released() {
    let memory = MemoryBackend::new();
    let (journal, store) = start(
        &memory,
        JournalConfig {
            queue_capacity: 2,
            batch_rows_max: 1,
            ..JournalConfig::default()
        },
    );
    memory.hold_batches();
    let first = approved(NOW_MS, token(1), "000001");
    let waiting = tokio::spawn({
        let journal = journal.clone();
        let first = first.clone();
        async move { journal.append(first).await }
    });
    settle(|| memory.batches_held() == 1).await;
    // Held: not stored, and the caller is still waiting.
    assert_eq!(store.transaction(first.id).await.unwrap(), None);
    assert!(!waiting.is_finished());

    // The queue fills behind the held batch, then sheds at once.
    let queued: Vec<_> = (1..=2)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move {
                journal
                    .append(approved(NOW_MS + n, token(1), "000001"))
                    .await
            })
        })
        .collect();
    settle(|| journal.stats().queue_depth == 2).await;
    assert_eq!(
        journal
            .append(approved(NOW_MS + 3, token(1), "000001"))
            .await,
        Err(JournalError::QueueFull)
    );

    memory.release_batches();
    assert_eq!(waiting.await.unwrap(), Ok(AppendOutcome::Recorded));
    for task in queued {
        assert_eq!(task.await.unwrap(), Ok(AppendOutcome::Recorded));
    }
    assert_eq!(memory.batches_held(), 0);
    assert!(store.transaction(first.id).await.unwrap().is_some());
    assert_eq!(journal.stats().records, 3);
    journal.close().await;
}

#[tokio::test]
async fn a_lost_answer_after_the_commit_leaves_the_record_stored() {
    let memory = MemoryBackend::new();
    let (journal, store) = start(&memory, JournalConfig::default());
    let original = approved(NOW_MS, token(1), "000001");
    journal.append(original.clone()).await.unwrap();
    memory.commit_then_fail_next_batches(1);
    let reversal = reversal_of(&original, NOW_MS + 1);
    assert_eq!(
        journal.append(reversal.clone()).await,
        Err(JournalError::Unavailable)
    );
    // Stored all the same: the original is reversed, so a retried reversal
    // gives nothing back twice.
    let stored = store.transaction(original.id).await.unwrap().unwrap();
    assert_eq!(stored.reversed_by, Some(reversal.id));
    assert_eq!(
        journal.append(reversal_of(&original, NOW_MS + 2)).await,
        Ok(AppendOutcome::AlreadyReversed { by: reversal.id })
    );
    // A failure planned too fails first, without applying, and does not use
    // up the lost answer.
    memory.fail_next_batches(1);
    memory.commit_then_fail_next_batches(1);
    let record = approved(NOW_MS + 3, token(2), "000002");
    assert_eq!(
        journal.append(record.clone()).await,
        Err(JournalError::Unavailable)
    );
    assert_eq!(store.transaction(record.id).await.unwrap(), None);
    assert_eq!(
        journal.append(record.clone()).await,
        Err(JournalError::Unavailable)
    );
    assert!(store.transaction(record.id).await.unwrap().is_some());
    journal.close().await;
}

#[tokio::test]
async fn a_crash_keeps_exactly_what_was_committed() {
    let memory = MemoryBackend::new();
    let (journal, store) = start(&memory, JournalConfig::default());
    let mut committed = approved(NOW_MS, token(1), "000001");
    committed.sealed_pan = Some(storage::SealedPan {
        token: token(1),
        key_id: 1,
        nonce: [1; 12],
        ciphertext: vec![1; 32],
    });
    journal.append(committed.clone()).await.unwrap();

    // A batch on its way to the disk when the process dies.
    memory.hold_batches();
    let in_flight = approved(NOW_MS + 1, token(2), "000002");
    let waiting = tokio::spawn({
        let journal = journal.clone();
        let in_flight = in_flight.clone();
        async move { journal.append(in_flight).await }
    });
    settle(|| memory.batches_held() == 1).await;
    let snapshot = memory.crash();
    assert_eq!(waiting.await.unwrap(), Err(JournalError::Unavailable));
    // The crashed backend answers nothing any more.
    assert!(store.check().await.is_err());
    assert!(store.transaction(committed.id).await.is_err());
    assert!(store.vault_rows_per_key().await.is_err());
    assert_eq!(
        journal
            .append(approved(NOW_MS + 2, token(3), "000003"))
            .await,
        Err(JournalError::Unavailable)
    );
    journal.close().await;

    // Restarted from the snapshot: what was committed, and nothing else.
    let restarted = MemoryBackend::restart(&snapshot);
    let (journal, store) = start(&restarted, JournalConfig::default());
    store.check().await.unwrap();
    let stored = store.transaction(committed.id).await.unwrap().unwrap();
    assert_eq!(stored.record.id, committed.id);
    assert_eq!(
        store.sealed_pan(token(1)).await.unwrap(),
        committed.sealed_pan
    );
    assert_eq!(store.transaction(in_flight.id).await.unwrap(), None);
    assert_eq!(
        journal.append(in_flight.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    // The snapshot is a copy: a second restart does not see the first's
    // later writes.
    let again = AnyStore::new(MemoryBackend::restart(&snapshot));
    assert_eq!(again.transaction(in_flight.id).await.unwrap(), None);
    journal.close().await;
}

/// Close waits for every append already queued, and refuses later ones.
/// The disk is stalled while close is called, so records are provably still
/// waiting behind the writer then (the SQLite test of the same name can pass
/// with the queue already drained).
#[tokio::test]
async fn close_waits_for_records_still_queued_behind_a_stalled_batch() {
    let memory = MemoryBackend::new();
    let (journal, store) = start(&memory, JournalConfig::default());
    memory.hold_batches();
    let first = {
        let journal = journal.clone();
        tokio::spawn(async move { journal.append(approved(NOW_MS, token(1), "000001")).await })
    };
    settle(|| memory.batches_held() == 1).await;
    let queued: Vec<_> = (1..20)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move {
                journal
                    .append(approved(NOW_MS + n, token(1), "000001"))
                    .await
            })
        })
        .collect();
    settle(|| journal.queue_depth() == 19).await;

    let closing = {
        let journal = journal.clone();
        tokio::spawn(async move { journal.close().await })
    };
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!closing.is_finished(), "close returned with records queued");
    memory.release_batches();
    closing.await.unwrap();
    assert_eq!(first.await.unwrap(), Ok(AppendOutcome::Recorded));
    for task in queued {
        assert_eq!(task.await.unwrap(), Ok(AppendOutcome::Recorded));
    }
    assert_eq!(
        store.approved_since(0, None, 100).await.unwrap().len(),
        20,
        "every queued record is stored"
    );
    assert_eq!(
        journal.append(approved(NOW_MS, token(2), "000002")).await,
        Err(JournalError::Closed)
    );
}
