//! The same cases against every backend, so they cannot drift apart: the
//! embedded SQLite backend, the embedded segment log, the in-memory test
//! backend (with the `memory` feature), and PostgreSQL when `DATABASE_URL` is set (under
//! `scripts/test-env`; see `common::postgres` for when it is required).
//!
//! Each case gets a fresh journal and store and goes through [`Journal`] and
//! [`AnyStore`] only, as the switch does, so it states what every backend
//! must answer: which record holds a reversal or an idempotency key, which
//! sealed PAN stays, what a lookup and the replay return, and that a batch
//! with a taken id stores nothing. A case runs once per backend, as
//! `sqlite::<case>`, `log::<case>`, `memory::<case>` and `postgres::<case>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::leak::test_pans;
use common::postgres::{TestDatabase, config};
use common::{NOW_MS, approved, declined, id_at, keys, reversal_of, token};
use protocol::Amount;
use protocol::domain::{DeclineReason, Token, TransactionId};
use protocol::ids::Text;
use storage::{
    AnyStore, AppendOutcome, ClaimOutcome, IdempotencyClaim, IdempotencyEntry, Journal,
    JournalConfig, JournalError, JournalRecord, LogConfig, LogStore, OriginalKeys, PostgresStore,
    RecordKind, ReplayCursor, Rewrapped, SealedPan, SqliteStore, StoreReader, Vault,
    VaultMaintenance, rewrap_batch, verify_all,
};
use tempfile::TempDir;

/// A fresh journal and store on one backend.
struct Backend {
    journal: Journal,
    store: AnyStore,
    /// What the backend's data lives in, removed after the case.
    place: Place,
}

enum Place {
    Directory(TempDir),
    Database(TestDatabase),
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    Memory,
}

impl Backend {
    async fn sqlite() -> Option<Backend> {
        let dir = tempfile::tempdir().unwrap();
        let (journal, store) = SqliteStore::open(&common::db_path(dir.path()), journal_config())
            .await
            .unwrap();
        Some(Backend {
            journal,
            store: AnyStore::new(store),
            place: Place::Directory(dir),
        })
    }

    async fn log() -> Option<Backend> {
        Backend::log_with(storage::log::SEGMENT_BYTES_DEFAULT).await
    }

    /// The log with segments so small that nearly every frame closes one:
    /// every read then answers from closed segments' index files.
    async fn log_segments() -> Option<Backend> {
        Backend::log_with(256).await
    }

    async fn log_with(segment_bytes: u64) -> Option<Backend> {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            journal: journal_config(),
            segment_bytes,
        };
        let (journal, store) = LogStore::open(dir.path(), config).await.unwrap();
        Some(Backend {
            journal,
            store: AnyStore::new(store),
            place: Place::Directory(dir),
        })
    }

    #[cfg(feature = "memory")]
    async fn memory() -> Option<Backend> {
        let memory = storage::memory::MemoryBackend::new();
        Some(Backend {
            journal: Journal::start(memory.clone(), &journal_config()),
            store: AnyStore::new(memory),
            place: Place::Memory,
        })
    }

    /// `None` when PostgreSQL is not there and the tests are skipped.
    async fn postgres() -> Option<Backend> {
        let db = TestDatabase::create().await?;
        // One writer connection: two records appended together then share
        // one batch, as on the other backends.
        let (journal, store) = PostgresStore::open(&db.url, config(1)).await.unwrap();
        Some(Backend {
            journal,
            store: AnyStore::new(store),
            place: Place::Database(db),
        })
    }

    async fn finish(self) {
        self.journal.close().await;
        self.store.close().await;
        match self.place {
            Place::Database(db) => db.drop().await,
            Place::Directory(dir) => dir.close().unwrap(),
            Place::Memory => {}
        }
    }
}

fn journal_config() -> JournalConfig {
    JournalConfig {
        queue_capacity: 4096,
        batch_rows_max: 1024,
        busy_timeout_ms: 5000,
    }
}

/// Opens a backend, runs one case on it, and cleans up.
async fn run(open: impl AsyncFnOnce() -> Option<Backend>, case: impl AsyncFnOnce(&Backend)) {
    let Some(backend) = open().await else {
        return;
    };
    case(&backend).await;
    backend.finish().await;
}

/// One test per case and backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::Backend::sqlite, super::$case).await;
                }
            )*
        }

        mod log {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::Backend::log, super::$case).await;
                }
            )*
        }

        mod log_segments {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::Backend::log_segments, super::$case).await;
                }
            )*
        }

        #[cfg(feature = "memory")]
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::Backend::memory, super::$case).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::Backend::postgres, super::$case).await;
                }
            )*
        }
    };
}

conformance!(
    records_read_back_as_written,
    a_taken_id_fails_its_whole_batch,
    the_first_reversal_of_an_original_wins,
    idempotency_entries_commit_with_their_record_and_keys_are_unique,
    a_key_is_claimed_once_and_answered_after,
    a_stale_claim_is_taken_over_and_its_late_record_writes_nothing,
    a_released_claim_frees_the_key_only_for_its_holder,
    the_first_sealed_pan_of_a_token_stays,
    originals_are_found_by_acquirer_keys,
    originals_are_matched_within_their_merchant_and_acquirer,
    replay_pages_through_approved_unreversed_records_in_the_window,
    replay_keeps_the_part_of_an_original_that_stands,
    vault_rows_move_to_the_active_key,
    the_store_answers_its_check,
    a_record_since_a_time_is_seen_whatever_its_answer,
);

/// Appends two records so that they commit in one batch, whichever thread
/// the writer runs on.
async fn append_together(
    journal: &Journal,
    first: JournalRecord,
    second: JournalRecord,
) -> [Result<AppendOutcome, JournalError>; 2] {
    let mut outcomes = journal.append_all(vec![first, second]).await.into_iter();
    let mut next = || outcomes.next().unwrap_or(Err(JournalError::Closed));
    [next(), next()]
}

fn sealed(token: Token, n: u8) -> SealedPan {
    SealedPan {
        token,
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

async fn records_read_back_as_written(t: &Backend) {
    let mut record = approved(NOW_MS, token(1), "000001");
    record.acquirer = Some("acq-north".to_owned());
    record.reason = Some(DeclineReason::CardCountLimit);
    assert_eq!(
        t.journal.append(record.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    let stored = t.store.transaction(record.id).await.unwrap().unwrap();
    assert_eq!(stored.record, record);
    assert_eq!(stored.reversed_by, None);
    assert_eq!(t.store.transaction(id_at(NOW_MS)).await.unwrap(), None);

    // Riders are written beside the record and read through their own
    // lookups; the record comes back without them.
    let mut with_riders = approved(NOW_MS + 1, token(2), "000002");
    with_riders.sealed_pan = Some(sealed(token(2), 2));
    with_riders.idempotency = Some(keyed(2));
    t.journal.append(with_riders.clone()).await.unwrap();
    let stored = t.store.transaction(with_riders.id).await.unwrap().unwrap();
    assert_eq!(
        stored.record,
        JournalRecord {
            sealed_pan: None,
            idempotency: None,
            ..with_riders
        }
    );
}

async fn a_taken_id_fails_its_whole_batch(t: &Backend) {
    let first = approved(NOW_MS, token(1), "000001");
    t.journal.append(first.clone()).await.unwrap();
    let failed_before = t.journal.stats().failed_records;

    // Another record under a stored id: its whole batch is refused.
    let innocent = approved(NOW_MS + 1, token(2), "000002");
    let clash = JournalRecord {
        id: first.id,
        ..approved(NOW_MS + 2, token(3), "000003")
    };
    assert_eq!(
        append_together(&t.journal, innocent.clone(), clash).await,
        [
            Err(JournalError::Unavailable),
            Err(JournalError::Unavailable)
        ]
    );
    // Two different records under one new id in one batch: the same.
    let fresh = approved(NOW_MS + 3, token(4), "000004");
    let twin = JournalRecord {
        id: fresh.id,
        ..approved(NOW_MS + 4, token(5), "000005")
    };
    assert_eq!(
        append_together(&t.journal, fresh.clone(), twin).await,
        [
            Err(JournalError::Unavailable),
            Err(JournalError::Unavailable)
        ]
    );
    assert_eq!(t.journal.stats().failed_records, failed_before + 4);
    assert_eq!(t.store.transaction(innocent.id).await.unwrap(), None);
    assert_eq!(t.store.transaction(fresh.id).await.unwrap(), None);
    let stored = t.store.transaction(first.id).await.unwrap().unwrap();
    assert_eq!(stored.record, first);

    // The writer goes on: the innocent record commits alone.
    assert_eq!(
        t.journal.append(innocent.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
}

async fn the_first_reversal_of_an_original_wins(t: &Backend) {
    let original = approved(NOW_MS, token(3), "000003");
    t.journal.append(original.clone()).await.unwrap();
    let first = reversal_of(&original, NOW_MS + 1);
    let second = reversal_of(&original, NOW_MS + 2);
    assert_eq!(
        t.journal.append(first.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(
        t.journal.append(second.clone()).await,
        Ok(AppendOutcome::AlreadyReversed { by: first.id })
    );
    let stored = t.store.transaction(original.id).await.unwrap().unwrap();
    assert_eq!(stored.reversed_by, Some(first.id));
    // Both reversals are journaled; neither is itself reversed.
    for reversal in [&first, &second] {
        let stored = t.store.transaction(reversal.id).await.unwrap().unwrap();
        assert_eq!(stored.record.original_id, Some(original.id));
        assert_eq!(stored.reversed_by, None);
    }

    // Two reversals of one original inside one batch: the first wins.
    let other = approved(NOW_MS, token(4), "000004");
    t.journal.append(other.clone()).await.unwrap();
    let (a, b) = (reversal_of(&other, NOW_MS), reversal_of(&other, NOW_MS));
    assert_eq!(
        append_together(&t.journal, a.clone(), b).await,
        [
            Ok(AppendOutcome::Recorded),
            Ok(AppendOutcome::AlreadyReversed { by: a.id })
        ]
    );
    assert_eq!(t.journal.stats().batch_rows_last, 2);

    // An original this journal never saw is claimed all the same.
    let unseen = approved(NOW_MS, token(5), "000005");
    let claim = reversal_of(&unseen, NOW_MS + 1);
    assert_eq!(
        t.journal.append(claim.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(
        t.journal.append(reversal_of(&unseen, NOW_MS + 2)).await,
        Ok(AppendOutcome::AlreadyReversed { by: claim.id })
    );
}

async fn idempotency_entries_commit_with_their_record_and_keys_are_unique(t: &Backend) {
    let mut first = approved(NOW_MS, token(1), "000001");
    first.idempotency = Some(keyed(7));
    assert_eq!(
        t.journal.append(first.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(
        t.store.idempotent_response("M0001", "key-7").await.unwrap(),
        Some(keyed(7))
    );
    assert_eq!(
        t.store.idempotent_response("M0002", "key-7").await.unwrap(),
        None
    );
    // The same key again: the record is not written, the first entry stays.
    let mut second = approved(NOW_MS, token(1), "000002");
    second.idempotency = Some(IdempotencyEntry {
        response_json: "{}".to_owned(),
        ..keyed(7)
    });
    assert_eq!(
        t.journal.append(second.clone()).await,
        Ok(AppendOutcome::IdempotencyKeyTaken { by: first.id })
    );
    assert!(t.store.transaction(second.id).await.unwrap().is_none());
    assert_eq!(
        t.store.idempotent_response("M0001", "key-7").await.unwrap(),
        Some(keyed(7))
    );

    // One key twice inside one batch: the first record holds it.
    let mut a = approved(NOW_MS + 1, token(2), "000003");
    a.idempotency = Some(keyed(8));
    let mut b = approved(NOW_MS + 2, token(3), "000004");
    b.idempotency = Some(IdempotencyEntry {
        status: 200,
        ..keyed(8)
    });
    assert_eq!(
        append_together(&t.journal, a.clone(), b.clone()).await,
        [
            Ok(AppendOutcome::Recorded),
            Ok(AppendOutcome::IdempotencyKeyTaken { by: a.id })
        ]
    );
    assert_eq!(t.journal.stats().batch_rows_last, 2);
    assert!(t.store.transaction(b.id).await.unwrap().is_none());
    assert!(t.store.transaction(a.id).await.unwrap().is_some());
    assert_eq!(
        t.store.idempotent_response("M0001", "key-8").await.unwrap(),
        Some(keyed(8))
    );
}

/// A claim on `keyed(n)`'s key by `claimed_by`, made at `at_ms`, taking
/// over claims made before `stale_before_ms`.
fn claim(n: u8, claimed_by: TransactionId, at_ms: u64, stale_before_ms: u64) -> IdempotencyClaim {
    IdempotencyClaim {
        merchant_id: "M0001".to_owned(),
        key: format!("key-{n}"),
        request_hash: [n; 32],
        claimed_by,
        claimed_at_ms: at_ms,
        stale_before_ms,
    }
}

/// `record` carrying the answer to `keyed(n)`.
fn answering(mut record: JournalRecord, n: u8) -> JournalRecord {
    record.idempotency = Some(keyed(n));
    record
}

async fn a_key_is_claimed_once_and_answered_after(t: &Backend) {
    let first = answering(approved(NOW_MS, token(1), "000001"), 7);
    assert_eq!(
        t.journal.claim(claim(7, first.id, NOW_MS, 0)).await,
        Ok(ClaimOutcome::Claimed { took_over: None })
    );
    // The same claim again (a writer's retry) is still its own.
    assert_eq!(
        t.journal.claim(claim(7, first.id, NOW_MS, 0)).await,
        Ok(ClaimOutcome::Claimed { took_over: None })
    );
    // Another request, on any node, while the first is within its time.
    let second = id_at(NOW_MS + 1);
    assert_eq!(
        t.journal.claim(claim(7, second, NOW_MS + 1, NOW_MS)).await,
        Ok(ClaimOutcome::InFlight)
    );
    // Another merchant's key of the same name is its own.
    let other = IdempotencyClaim {
        merchant_id: "M0002".to_owned(),
        ..claim(7, second, NOW_MS + 1, NOW_MS)
    };
    assert_eq!(
        t.journal.claim(other).await,
        Ok(ClaimOutcome::Claimed { took_over: None })
    );
    // The holder's record completes the claim: the answer is stored.
    assert_eq!(
        t.journal.append(first.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(
        t.journal
            .claim(claim(7, second, NOW_MS + 2, NOW_MS + 1))
            .await,
        Ok(ClaimOutcome::Answered(keyed(7)))
    );
    // A record of the request refused its claim is not written.
    let late = answering(approved(NOW_MS + 2, token(1), "000002"), 7);
    assert_eq!(
        t.journal.append(late.clone()).await,
        Ok(AppendOutcome::IdempotencyKeyTaken { by: first.id })
    );
    assert!(t.store.transaction(late.id).await.unwrap().is_none());
    assert!(t.store.transaction(first.id).await.unwrap().is_some());
}

async fn a_stale_claim_is_taken_over_and_its_late_record_writes_nothing(t: &Backend) {
    let stale = answering(approved(NOW_MS, token(1), "000001"), 9);
    assert_eq!(
        t.journal.claim(claim(9, stale.id, NOW_MS, 0)).await,
        Ok(ClaimOutcome::Claimed { took_over: None })
    );
    // A retry once the claim is older than the bound takes it over.
    let retry = answering(approved(NOW_MS + 60_001, token(1), "000002"), 9);
    assert_eq!(
        t.journal
            .claim(claim(9, retry.id, NOW_MS + 60_001, NOW_MS + 1))
            .await,
        Ok(ClaimOutcome::Claimed {
            took_over: Some(stale.id)
        })
    );
    // The old request's late record: nothing of it is written, not even
    // its answer.
    assert_eq!(
        t.journal.append(stale.clone()).await,
        Ok(AppendOutcome::IdempotencyKeyTaken { by: retry.id })
    );
    assert!(t.store.transaction(stale.id).await.unwrap().is_none());
    assert_eq!(
        t.store.idempotent_response("M0001", "key-9").await.unwrap(),
        None
    );
    let page = t.store.approved_since(0, None, 10).await.unwrap();
    assert!(page.is_empty(), "no approval of the stale request stands");
    // The one that took it over commits and answers.
    assert_eq!(
        t.journal.append(retry.clone()).await,
        Ok(AppendOutcome::Recorded)
    );
    assert_eq!(
        t.store.idempotent_response("M0001", "key-9").await.unwrap(),
        Some(keyed(9))
    );
    // Both in one batch, the late one first: the holder's is written.
    let stale = answering(approved(NOW_MS, token(2), "000003"), 10);
    let retry = answering(approved(NOW_MS + 60_001, token(2), "000004"), 10);
    t.journal
        .claim(claim(10, stale.id, NOW_MS, 0))
        .await
        .unwrap();
    t.journal
        .claim(claim(10, retry.id, NOW_MS + 60_001, NOW_MS + 1))
        .await
        .unwrap();
    assert_eq!(
        append_together(&t.journal, stale.clone(), retry.clone()).await,
        [
            Ok(AppendOutcome::IdempotencyKeyTaken { by: retry.id }),
            Ok(AppendOutcome::Recorded)
        ]
    );
    assert!(t.store.transaction(stale.id).await.unwrap().is_none());
    assert!(t.store.transaction(retry.id).await.unwrap().is_some());
}

async fn a_released_claim_frees_the_key_only_for_its_holder(t: &Backend) {
    let holder = id_at(NOW_MS);
    t.journal.claim(claim(11, holder, NOW_MS, 0)).await.unwrap();
    // Released by another request: nothing happens.
    t.journal
        .release("M0001".to_owned(), "key-11".to_owned(), id_at(NOW_MS))
        .await
        .unwrap();
    let retry = id_at(NOW_MS + 1);
    assert_eq!(
        t.journal.claim(claim(11, retry, NOW_MS + 1, 0)).await,
        Ok(ClaimOutcome::InFlight)
    );
    // Released by its holder: the retry is decided afresh.
    t.journal
        .release("M0001".to_owned(), "key-11".to_owned(), holder)
        .await
        .unwrap();
    assert_eq!(
        t.journal.claim(claim(11, retry, NOW_MS + 1, 0)).await,
        Ok(ClaimOutcome::Claimed { took_over: None })
    );
}

async fn the_first_sealed_pan_of_a_token_stays(t: &Backend) {
    let mut first = approved(NOW_MS, token(1), "000001");
    first.sealed_pan = Some(sealed(token(1), 1));
    t.journal.append(first).await.unwrap();
    assert_eq!(
        t.store.sealed_pan(token(1)).await.unwrap(),
        Some(sealed(token(1), 1))
    );
    // The same card sealed again (another nonce): the stored entry stays.
    let mut again = approved(NOW_MS + 1, token(1), "000002");
    again.sealed_pan = Some(sealed(token(1), 9));
    assert_eq!(t.journal.append(again).await, Ok(AppendOutcome::Recorded));
    assert_eq!(
        t.store.sealed_pan(token(1)).await.unwrap(),
        Some(sealed(token(1), 1))
    );
    // Twice inside one batch: the first in the batch.
    let mut a = approved(NOW_MS + 2, token(2), "000003");
    a.sealed_pan = Some(sealed(token(2), 2));
    let mut b = approved(NOW_MS + 3, token(2), "000004");
    b.sealed_pan = Some(sealed(token(2), 3));
    assert_eq!(
        append_together(&t.journal, a, b).await,
        [Ok(AppendOutcome::Recorded), Ok(AppendOutcome::Recorded)]
    );
    assert_eq!(
        t.store.sealed_pan(token(2)).await.unwrap(),
        Some(sealed(token(2), 2))
    );
    assert_eq!(t.store.sealed_pan(token(9)).await.unwrap(), None);
}

async fn originals_are_found_by_acquirer_keys(t: &Backend) {
    let older = approved(NOW_MS, token(1), "000042");
    let mut newer = approved(NOW_MS + 5, token(1), "000042");
    newer.transmitted_at = Text::parse(b"1122183100");
    let mut purchase = approved(NOW_MS + 9, token(1), "000042");
    purchase.kind = RecordKind::Purchase;
    purchase.transmitted_at = Text::parse(b"1122183200");
    for record in [&older, &newer, &purchase] {
        t.journal.append(record.clone()).await.unwrap();
    }
    let auth = [RecordKind::Authorization];
    let keys = OriginalKeys {
        terminal_id: older.terminal_id,
        stan: older.stan.unwrap(),
        transmitted_at: older.transmitted_at,
        merchant_id: older.merchant_id,
        acquirer: None,
    };
    let found = t.store.find_original(&keys, &auth, 0).await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(older.id));
    // Without DE7: the most recent of the kinds asked for.
    let any_time = OriginalKeys {
        transmitted_at: None,
        ..keys.clone()
    };
    let found = t.store.find_original(&any_time, &auth, 0).await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(newer.id));
    let both = [RecordKind::Authorization, RecordKind::Purchase];
    let found = t.store.find_original(&any_time, &both, 0).await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(purchase.id));
    // The window keeps a wrapped STAN from matching something old.
    let found = t
        .store
        .find_original(&any_time, &auth, NOW_MS + 6)
        .await
        .unwrap();
    assert_eq!(found, None);
    // The window is inclusive.
    let found = t
        .store
        .find_original(&any_time, &auth, NOW_MS + 5)
        .await
        .unwrap();
    assert_eq!(found.map(|r| r.id), Some(newer.id));
    let other_terminal = OriginalKeys {
        terminal_id: protocol::domain::pad("TERM0002").unwrap(),
        ..keys.clone()
    };
    assert_eq!(
        t.store
            .find_original(&other_terminal, &auth, 0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(t.store.find_original(&keys, &[], 0).await.unwrap(), None);

    // A reversal under the same keys is found only when its kind is asked.
    let mut reversal = reversal_of(&purchase, NOW_MS + 20);
    reversal.stan = purchase.stan;
    t.journal.append(reversal.clone()).await.unwrap();
    let found = t.store.find_original(&any_time, &both, 0).await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(purchase.id));
    let every = [
        RecordKind::Authorization,
        RecordKind::Purchase,
        RecordKind::Reversal,
        RecordKind::ReversalAdvice,
    ];
    let found = t.store.find_original(&any_time, &every, 0).await.unwrap();
    assert_eq!(found, Some(reversal));
    // A record without a STAN (a JSON request) never matches.
    let mut unkeyed = approved(NOW_MS + 30, token(1), "000042");
    unkeyed.stan = None;
    t.journal.append(unkeyed).await.unwrap();
    let found = t.store.find_original(&any_time, &auth, 0).await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(newer.id));
}

/// Terminal ids repeat across acquirers and merchants: the same terminal,
/// STAN and DE7 under another merchant, or another acquirer (or none), are
/// another request's keys, never a match.
async fn originals_are_matched_within_their_merchant_and_acquirer(t: &Backend) {
    let plain = approved(NOW_MS, token(1), "000042");
    let mut north = approved(NOW_MS + 1, token(2), "000042");
    north.acquirer = Some("north".to_owned());
    let mut other_merchant = approved(NOW_MS + 2, token(3), "000042");
    other_merchant.merchant_id = protocol::domain::pad("M0002").unwrap();
    for record in [&plain, &north, &other_merchant] {
        t.journal.append(record.clone()).await.unwrap();
    }
    let auth = [RecordKind::Authorization];
    let keys = |merchant: &str, acquirer: Option<&str>, transmitted_at| OriginalKeys {
        terminal_id: plain.terminal_id,
        stan: plain.stan.unwrap(),
        transmitted_at,
        merchant_id: protocol::domain::pad(merchant).unwrap(),
        acquirer: acquirer.map(str::to_owned),
    };
    for transmitted_at in [plain.transmitted_at, None] {
        let found = |keys| async move {
            t.store
                .find_original(&keys, &auth, 0)
                .await
                .unwrap()
                .map(|record| record.id)
        };
        // A plain-TCP request matches only records without an acquirer.
        assert_eq!(
            found(keys("M0001", None, transmitted_at)).await,
            Some(plain.id)
        );
        assert_eq!(
            found(keys("M0001", Some("north"), transmitted_at)).await,
            Some(north.id)
        );
        assert_eq!(
            found(keys("M0001", Some("south"), transmitted_at)).await,
            None
        );
        assert_eq!(
            found(keys("M0002", None, transmitted_at)).await,
            Some(other_merchant.id)
        );
        assert_eq!(
            found(keys("M0002", Some("north"), transmitted_at)).await,
            None
        );
        assert_eq!(found(keys("M0003", None, transmitted_at)).await, None);
    }
}

async fn replay_pages_through_approved_unreversed_records_in_the_window(t: &Backend) {
    let since = NOW_MS - 86_400_000;
    let too_old = approved(since - 1, token(1), "000001");
    let kept_1 = approved(since, token(2), "000002");
    let kept_2 = approved(since + 10, token(3), "000003");
    let reversed = approved(since + 20, token(4), "000004");
    let declined = declined(since + 30, token(5), DeclineReason::CardAmountLimit);
    let reversal = reversal_of(&reversed, since + 40);
    let mut kept_3 = approved(since + 50, token(6), "000006");
    kept_3.kind = RecordKind::Purchase;
    let mut no_token = approved(since + 60, token(7), "000007");
    no_token.token = None;
    // Several at the same millisecond: the page boundary falls among them.
    let same_ms: Vec<_> = (0..5)
        .map(|n| approved(since + 70, token(10 + n), "000008"))
        .collect();
    for record in [
        &too_old, &kept_1, &kept_2, &reversed, &declined, &reversal, &kept_3, &no_token,
    ]
    .into_iter()
    .chain(&same_ms)
    {
        t.journal.append(record.clone()).await.unwrap();
    }

    let mut replayed = Vec::new();
    let mut after = None;
    loop {
        let page = t.store.approved_since(since, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        replayed.extend(page);
    }
    let ids: Vec<_> = replayed.iter().map(|row| row.id).collect();
    let mut expected = vec![kept_1.id, kept_2.id, kept_3.id];
    let mut same: Vec<_> = same_ms.iter().map(|r| r.id).collect();
    same.sort();
    expected.extend(same);
    assert_eq!(ids, expected);
    // The same walk through the helper the switch calls at start.
    let mut walked = Vec::new();
    let count = storage::replay_approved(&t.store, since, 3, async |row| walked.push(row))
        .await
        .unwrap();
    assert_eq!(count, u64::try_from(walked.len()).unwrap());
    assert_eq!(walked, replayed);
    let first = &replayed[0];
    assert_eq!(first.token, token(2));
    assert_eq!(first.merchant_id, kept_1.merchant_id);
    assert_eq!(first.amount, kept_1.amount);
    assert_eq!(first.currency, kept_1.currency);
    assert_eq!(first.at_ms, since);

    // A cursor from before the window starts the window afresh; no rows at
    // all is an empty page.
    let stale = ReplayCursor {
        at_ms: since - 1,
        id: too_old.id,
    };
    let page = t.store.approved_since(since, Some(stale), 2).await.unwrap();
    assert_eq!(page, replayed[..2]);
    let none = t.store.approved_since(since, None, 0).await.unwrap();
    assert!(none.is_empty());
}

async fn a_record_since_a_time_is_seen_whatever_its_answer(t: &Backend) {
    assert!(
        !t.store.recorded_since(0).await.unwrap(),
        "an empty journal"
    );
    let declined = declined(NOW_MS, token(1), DeclineReason::CardCountLimit);
    t.journal.append(declined).await.unwrap();
    assert!(t.store.recorded_since(NOW_MS - 60_000).await.unwrap());
    assert!(
        t.store.recorded_since(NOW_MS).await.unwrap(),
        "at the same ms"
    );
    assert!(!t.store.recorded_since(NOW_MS + 1).await.unwrap());
}

async fn replay_keeps_the_part_of_an_original_that_stands(t: &Backend) {
    let since = NOW_MS - 86_400_000;
    let amount = |minor| Amount::from_minor(minor).unwrap();
    let reversed_by = |original: &JournalRecord, at_ms, minor| JournalRecord {
        amount: amount(minor),
        ..reversal_of(original, at_ms)
    };
    // Every original is 1250; each reversal gives back its own amount, at
    // most the original's.
    let partly = approved(since + 10, token(1), "000001");
    let wholly = approved(since + 20, token(2), "000002");
    let over = approved(since + 30, token(3), "000003");
    let twice = approved(since + 40, token(4), "000004");
    let by_nothing = approved(since + 50, token(5), "000005");
    let unreversed = approved(since + 55, token(6), "000006");
    let records = [
        unreversed.clone(),
        partly.clone(),
        wholly.clone(),
        over.clone(),
        twice.clone(),
        by_nothing.clone(),
        reversed_by(&partly, since + 60, 300),
        reversed_by(&wholly, since + 61, 1250),
        reversed_by(&over, since + 62, 5000),
        // Only the first reversal of an original gives back.
        reversed_by(&twice, since + 63, 1000),
        reversed_by(&twice, since + 64, 100),
        reversed_by(&by_nothing, since + 65, 0),
    ];
    for record in records {
        t.journal.append(record).await.unwrap();
    }

    let mut replayed = Vec::new();
    storage::replay_approved(&t.store, since, 2, async |row| replayed.push(row))
        .await
        .unwrap();
    let standing: Vec<_> = replayed
        .iter()
        .map(|row| (row.id, row.amount.minor()))
        .collect();
    assert_eq!(
        standing,
        [
            (partly.id, 950),
            (twice.id, 250),
            (by_nothing.id, 1250),
            (unreversed.id, 1250)
        ]
    );
}

async fn vault_rows_move_to_the_active_key(t: &Backend) {
    let pans = test_pans();
    let mut vault = Vault::new(keys(1), 0).unwrap();
    let mut tokens = Vec::new();
    for (n, pan) in (0u64..).zip(&pans[..5]) {
        if n == 3 {
            // Two of the five sealed after a rotation to key 2.
            vault = Vault::new(keys(2), 0).unwrap();
        }
        let sealed = vault.seal(pan).unwrap();
        tokens.push(sealed.token);
        let record = JournalRecord {
            sealed_pan: Some(sealed),
            ..approved(NOW_MS + n, vault.tokenize(pan), "000001")
        };
        t.journal.append(record).await.unwrap();
    }
    tokens.sort();
    assert_eq!(
        t.store.vault_rows_per_key().await.unwrap(),
        [(1, 3), (2, 2)]
    );

    // Pages in token order, from a cursor, skipping a key when asked.
    let all = t.store.sealed_page(None, None, 10).await.unwrap();
    let walked: Vec<Token> = all.iter().map(|row| row.token).collect();
    assert_eq!(walked, tokens);
    let page = t.store.sealed_page(Some(tokens[0]), None, 2).await.unwrap();
    assert_eq!(page, all[1..3]);
    let under_one = t.store.sealed_page(None, Some(2), 10).await.unwrap();
    assert_eq!(under_one.len(), 3);
    assert!(under_one.iter().all(|row| row.key_id == 1));

    // A row changed since it was read is left alone.
    let row = &under_one[0];
    let stale = Rewrapped {
        old_key_id: row.key_id,
        old_nonce: [0xEE; 12],
        sealed: vault.seal(&vault.open(row).unwrap()).unwrap(),
    };
    assert_eq!(t.store.replace_sealed(&[stale]).await.unwrap(), 0);
    assert_eq!(
        t.store.sealed_pan(row.token).await.unwrap().as_ref(),
        Some(row)
    );

    // The rewrap walks key 1's rows to key 2 two at a time.
    let batch = rewrap_batch(&t.store, &vault, None, 2).await.unwrap();
    assert_eq!((batch.selected, batch.moved, batch.skipped), (2, 2, 0));
    assert!(batch.next.is_some());
    let batch = rewrap_batch(&t.store, &vault, batch.next, 2).await.unwrap();
    assert_eq!((batch.selected, batch.moved, batch.next), (1, 1, None));
    assert_eq!(t.store.vault_rows_per_key().await.unwrap(), [(2, 5)]);
    let report = verify_all(&t.store, &vault, 2).await.unwrap();
    assert_eq!(report.opened_per_key, [(2, 5)]);
    assert!(report.failed_per_key.is_empty());
}

async fn the_store_answers_its_check(t: &Backend) {
    t.store.check().await.unwrap();
    // A clone is the same store.
    let clone = t.store.clone();
    let record = approved(NOW_MS, token(1), "000001");
    t.journal.append(record.clone()).await.unwrap();
    assert!(clone.transaction(record.id).await.unwrap().is_some());
}
