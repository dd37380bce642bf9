//! An in-memory backend for deterministic tests, behind the `memory`
//! feature.
//!
//! [`MemoryBackend`] keeps the four tables (`transactions`, `reversals`,
//! `vault`, `idempotency`) in memory and answers exactly as the SQLite
//! backend does: a taken transaction id fails the whole batch, the first
//! reversal of an original and the first record with an idempotency key
//! win (later ones get [`AppendOutcome::AlreadyReversed`] and
//! [`AppendOutcome::IdempotencyKeyTaken`], inside one batch as across
//! batches), the first sealed PAN of a token stays, and every read filters
//! and orders as its SQL does. The conformance tests
//! (`storage/tests/conformance.rs`) run the same cases against this, SQLite
//! and PostgreSQL, so they cannot drift apart.
//!
//! It is one cloneable handle: the journal's writer
//! ([`JournalBackend`], so [`Journal::start`](crate::Journal::start) runs the
//! real group commit over it), the reads ([`StoreReader`],
//! [`VaultMaintenance`]) and the test's controls all share the same tables.
//! A test can make the next batches fail without being applied
//! ([`MemoryBackend::fail_next_batches`]), hold every batch until it says so,
//! as a stalled disk would ([`MemoryBackend::hold_batches`]), commit a batch
//! and still report a failure, as a connection lost around COMMIT does
//! ([`MemoryBackend::commit_then_fail_next_batches`]), and crash it: keep
//! exactly what was committed ([`MemoryBackend::crash`]) and start a new
//! backend from that ([`MemoryBackend::restart`]), as after a restart.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use storage::memory::MemoryBackend;
//! use storage::{AnyStore, Journal, JournalConfig, StoreReader};
//!
//! let memory = MemoryBackend::new();
//! let journal = Journal::start(memory.clone(), &JournalConfig::default());
//! let store = AnyStore::new(memory.clone());
//! // The next batch fails and stores nothing; the one after commits.
//! memory.fail_next_batches(1);
//! // Batches wait, as on a stalled disk, until released.
//! memory.hold_batches();
//! memory.release_batches();
//! // Exactly what is committed now, from which a new backend starts.
//! let committed = memory.crash();
//! assert!(store.check().await.is_err());
//! let restarted = MemoryBackend::restart(&committed);
//! let journal = Journal::start(restarted.clone(), &JournalConfig::default());
//! let store = AnyStore::new(restarted);
//! assert!(store.check().await.is_ok());
//! # journal.close().await;
//! # });
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::Amount;
use protocol::domain::{Token, TransactionId};
use tokio::sync::watch;

use crate::convert::count_u64;
use crate::error::StorageError;
use crate::journal::JournalBackend;
use crate::record::{
    AppendOutcome, IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor,
    ReplayRow, SealedPan, StoredTransaction,
};
use crate::rewrap::{Rewrapped, VaultMaintenance};
use crate::store::{StoreFuture, StoreReader};

/// The in-memory backend: writer, reader and test controls in one cloneable
/// handle. Every clone works on the same tables.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

/// What was committed when a backend crashed; start a new backend from it
/// with [`MemoryBackend::restart`], as often as wanted.
#[derive(Debug, Clone)]
pub struct MemorySnapshot {
    tables: Tables,
}

#[derive(Debug)]
struct Shared {
    /// The tables and the controls under one lock, so a batch is decided and
    /// applied in one step: a crash sees it whole or not at all.
    state: Mutex<State>,
    /// `true` while batches are held; a batch waits for `false`.
    gate: watch::Sender<bool>,
    /// Batches waiting at the gate now.
    held: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    tables: Tables,
    /// Batches still to fail without being applied.
    fail_next: u32,
    /// Batches still to apply and then report as failed.
    commit_then_fail_next: u32,
    /// Set by [`MemoryBackend::crash`]: nothing more is applied or read.
    crashed: bool,
}

impl Tables {
    fn committed(&self) -> Vec<StoredTransaction> {
        let mut committed: Vec<StoredTransaction> = self
            .transactions
            .values()
            .map(|record| StoredTransaction {
                record: record.clone(),
                reversed_by: self.reversals.get(&record.id).copied(),
            })
            .collect();
        committed.sort_by_key(|stored| stored.record.id);
        committed
    }
}

/// The four tables of the schema, keyed as their primary keys are.
#[derive(Debug, Clone, Default)]
struct Tables {
    /// Records without their riders, as the SQL backends read them back.
    transactions: HashMap<TransactionId, JournalRecord>,
    /// Reversed original -> the reversal that holds it.
    reversals: HashMap<TransactionId, TransactionId>,
    /// In token order, the order of the vault's primary key.
    vault: BTreeMap<Token, SealedPan>,
    /// (merchant, key) -> the entry and the record that holds it.
    idempotency: HashMap<(String, String), (IdempotencyEntry, TransactionId)>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::with_tables(Tables::default())
    }

    /// A backend holding exactly what `snapshot` committed, with no
    /// failures planned and no batches held, as after a restart.
    pub fn restart(snapshot: &MemorySnapshot) -> MemoryBackend {
        MemoryBackend::with_tables(snapshot.tables.clone())
    }

    fn with_tables(tables: Tables) -> MemoryBackend {
        MemoryBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    tables,
                    ..State::default()
                }),
                gate: watch::Sender::new(false),
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// The next `batches` batches fail without being applied, as a failed
    /// commit does: the journal answers their records
    /// [`JournalError::Unavailable`](crate::JournalError::Unavailable).
    /// Replaces any count set before.
    pub fn fail_next_batches(&self, batches: u32) {
        self.state().fail_next = batches;
    }

    /// The next `batches` batches that commit are applied and then reported
    /// as failed: a commit whose answer was lost, after which the caller
    /// cannot know its records are stored. Counted after
    /// [`fail_next_batches`](Self::fail_next_batches): a batch failed that
    /// way is not applied, so it does not count here. Replaces any count set
    /// before.
    pub fn commit_then_fail_next_batches(&self, batches: u32) {
        self.state().commit_then_fail_next = batches;
    }

    /// Holds every batch from now on before it is applied, as a stalled disk
    /// would, until [`release_batches`](Self::release_batches). Reads go on
    /// answering from what is committed.
    pub fn hold_batches(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Lets held batches, and every later one, through.
    pub fn release_batches(&self) {
        self.shared.gate.send_replace(false);
    }

    /// How many batches are waiting at the gate now, for a test to know its
    /// records reached the writer.
    pub fn batches_held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Crashes the backend: returns exactly what was committed, and from now
    /// on this backend (every clone of it) applies nothing more and answers
    /// nothing: held and later batches fail without being applied, and reads
    /// fail, as the disk of a process that died. Start a new backend from the
    /// snapshot with [`MemoryBackend::restart`].
    pub fn crash(&self) -> MemorySnapshot {
        let snapshot = {
            let mut state = self.state();
            state.crashed = true;
            MemorySnapshot {
                tables: state.tables.clone(),
            }
        };
        // Held batches go on to find the backend crashed.
        self.release_batches();
        snapshot
    }

    /// Every committed transaction, with the reversal that holds it, in id
    /// order: what a simulation checks its clients' answers and the actors'
    /// velocity against. Answers even after a crash (it is the disk, read
    /// by the test, not by the process that died).
    pub fn committed(&self) -> Vec<StoredTransaction> {
        self.state().tables.committed()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed;
        // the tables are whole whatever it did, as no step panics half-way.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `read` on the committed tables, or fails once crashed.
    fn read<T>(&self, read: impl FnOnce(&Tables) -> T) -> Result<T, StorageError> {
        let state = self.state();
        if state.crashed {
            return Err(failure(
                "read the memory backend",
                "the backend has crashed",
            ));
        }
        Ok(read(&state.tables))
    }

    /// Waits while batches are held.
    async fn pass_gate(&self) {
        let mut gate = self.shared.gate.subscribe();
        if !*gate.borrow_and_update() {
            return;
        }
        let _waiting = HeldBatch::count(&self.shared.held);
        // The sender lives as long as `shared`, so this only ends when the
        // gate opens.
        let _ = gate.wait_for(|held| !*held).await;
    }
}

/// One batch counted in [`MemoryBackend::batches_held`] while it lives, so
/// a batch whose future is dropped at the gate is not counted for ever.
struct HeldBatch<'a>(&'a AtomicUsize);

impl<'a> HeldBatch<'a> {
    fn count(held: &'a AtomicUsize) -> HeldBatch<'a> {
        held.fetch_add(1, Ordering::SeqCst);
        HeldBatch(held)
    }
}

impl Drop for HeldBatch<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The error a failed operation reports: a database error, as a lost
/// connection gives, so callers handle it as they handle a real one.
fn failure(operation: &'static str, why: &'static str) -> StorageError {
    StorageError::Database {
        operation,
        source: sqlx::Error::Io(std::io::Error::other(why)),
    }
}

impl State {
    /// Decides and applies one batch, under the lock.
    fn write_batch(&mut self, batch: &[JournalRecord]) -> Result<Vec<AppendOutcome>, StorageError> {
        let operation = "commit a journal batch";
        if self.crashed {
            return Err(failure(operation, "the backend has crashed"));
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(failure(operation, "a failure the test asked for"));
        }
        let outcomes = self.tables.apply(batch)?;
        if self.commit_then_fail_next > 0 {
            self.commit_then_fail_next -= 1;
            return Err(failure(
                operation,
                "a lost answer the test asked for, after the commit",
            ));
        }
        Ok(outcomes)
    }
}

impl Tables {
    /// Writes a batch as the SQLite writer does: every record, then the
    /// reversals, the vault entries and the idempotency entries, each
    /// "insert unless the key is there", in batch order.
    fn apply(&mut self, batch: &[JournalRecord]) -> Result<Vec<AppendOutcome>, StorageError> {
        // A taken id fails the whole batch, as the primary key does, before
        // anything is written.
        let mut ids = HashSet::with_capacity(batch.len());
        let fresh = batch
            .iter()
            .filter(|record| !self.transactions.contains_key(&record.id) && ids.insert(record.id))
            .count();
        if fresh != batch.len() {
            return Err(StorageError::RowCount {
                table: "transactions",
                expected: batch.len(),
                written: count_u64(fresh),
            });
        }
        for record in batch {
            self.transactions.insert(
                record.id,
                JournalRecord {
                    sealed_pan: None,
                    idempotency: None,
                    ..record.clone()
                },
            );
        }

        let mut outcomes = vec![AppendOutcome::Recorded; batch.len()];
        for record in batch {
            if let Some(original) = reversed_original(record) {
                self.reversals.entry(original).or_insert(record.id);
            }
        }
        for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            if let Some(by) = reversed_original(record).and_then(|o| self.reversals.get(&o))
                && *by != record.id
            {
                *outcome = AppendOutcome::AlreadyReversed { by: *by };
            }
        }

        for sealed in batch.iter().filter_map(|record| record.sealed_pan.as_ref()) {
            self.vault
                .entry(sealed.token)
                .or_insert_with(|| sealed.clone());
        }

        for record in batch {
            if let Some(entry) = &record.idempotency {
                self.idempotency
                    .entry(idempotency_key(entry))
                    .or_insert_with(|| (entry.clone(), record.id));
            }
        }
        for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            if let Some(entry) = &record.idempotency
                && let Some((_, by)) = self.idempotency.get(&idempotency_key(entry))
                && *by != record.id
            {
                *outcome = AppendOutcome::IdempotencyKeyTaken { by: *by };
            }
        }
        Ok(outcomes)
    }

    /// `WHERE terminal_id = ? AND stan = ? AND merchant_id = ?
    /// [AND transmitted_at = ?] AND acquirer IS ? AND created_at_ms >= ? AND
    /// kind IN (...) ORDER BY created_at_ms DESC LIMIT 1`. SQL leaves the order of two records made in the same
    /// millisecond open; this takes the larger id, as SQLite's index does.
    fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> Option<JournalRecord> {
        self.transactions
            .values()
            .filter(|record| {
                record.terminal_id == keys.terminal_id
                    && record.stan == Some(keys.stan)
                    && record.merchant_id == keys.merchant_id
                    && record.acquirer == keys.acquirer
                    && keys
                        .transmitted_at
                        .is_none_or(|at| record.transmitted_at == Some(at))
                    && record.created_at_ms >= created_since_ms
                    && kinds.contains(&record.kind)
            })
            .max_by_key(|record| (record.created_at_ms, record.id))
            .cloned()
    }

    /// What stands of an approval: its amount less what its first reversal
    /// gave back (at most all of it); `None` when nothing stands. The SQL
    /// backends' replay query computes the same.
    fn standing(&self, original: &JournalRecord) -> Option<Amount> {
        let given_back = self
            .reversals
            .get(&original.id)
            .and_then(|reversal| self.transactions.get(reversal))
            .map_or(0, |reversal| reversal.amount.minor());
        original
            .amount
            .minor()
            .checked_sub(given_back)
            .filter(|&minor| minor > 0)
            .and_then(Amount::from_minor)
    }

    /// The replay query: approved authorizations and purchases with a token
    /// and what stands of each (one wholly reversed is left out), after the
    /// cursor in `(created_at_ms, id)` order.
    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Vec<ReplayRow> {
        // A cursor before the window starts the window afresh, as the SQL
        // backends do.
        let after = after.filter(|cursor| cursor.at_ms >= since_ms);
        let mut rows: Vec<ReplayRow> = self
            .transactions
            .values()
            .filter(|record| {
                record.response_code.is_approved()
                    && matches!(
                        record.kind,
                        RecordKind::Authorization | RecordKind::Purchase
                    )
                    && record.created_at_ms >= since_ms
            })
            .filter_map(|record| {
                Some(ReplayRow {
                    id: record.id,
                    token: record.token?,
                    merchant_id: record.merchant_id,
                    amount: self.standing(record)?,
                    currency: record.currency,
                    at_ms: record.created_at_ms,
                })
            })
            .filter(|row| after.is_none_or(|cursor| row.cursor() > cursor))
            .collect();
        rows.sort_unstable_by_key(ReplayRow::cursor);
        rows.truncate(usize::try_from(rows_max).unwrap_or(usize::MAX));
        rows
    }
}

fn reversed_original(record: &JournalRecord) -> Option<TransactionId> {
    record.original_id.filter(|_| record.kind.is_reversal())
}

fn idempotency_key(entry: &IdempotencyEntry) -> (String, String) {
    (entry.merchant_id.clone(), entry.key.clone())
}

impl JournalBackend for MemoryBackend {
    async fn write_batch(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        self.pass_gate().await;
        self.state().write_batch(batch)
    }
}

impl StoreReader for MemoryBackend {
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>> {
        Box::pin(async move {
            self.read(|tables| {
                tables
                    .transactions
                    .get(&id)
                    .map(|record| StoredTransaction {
                        record: record.clone(),
                        reversed_by: tables.reversals.get(&id).copied(),
                    })
            })
        })
    }

    fn find_original<'a>(
        &'a self,
        keys: &'a OriginalKeys,
        kinds: &'a [RecordKind],
        created_since_ms: u64,
    ) -> StoreFuture<'a, Option<JournalRecord>> {
        Box::pin(
            async move { self.read(|tables| tables.find_original(keys, kinds, created_since_ms)) },
        )
    }

    fn idempotent_response<'a>(
        &'a self,
        merchant_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<IdempotencyEntry>> {
        Box::pin(async move {
            self.read(|tables| {
                tables
                    .idempotency
                    .get(&(merchant_id.to_owned(), key.to_owned()))
                    .map(|(entry, _)| entry.clone())
            })
        })
    }

    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<ReplayRow>> {
        Box::pin(
            async move { self.read(|tables| tables.approved_since(since_ms, after, rows_max)) },
        )
    }

    fn recorded_since(&self, since_ms: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            self.read(|tables| {
                tables
                    .transactions
                    .values()
                    .any(|record| record.created_at_ms >= since_ms)
            })
        })
    }

    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>> {
        Box::pin(async move { self.read(|tables| tables.vault.get(&token).cloned()) })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.read(|_| ()) })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl VaultMaintenance for MemoryBackend {
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move {
            self.read(|tables| {
                let mut counts = BTreeMap::new();
                for sealed in tables.vault.values() {
                    *counts.entry(sealed.key_id).or_insert(0u64) += 1;
                }
                counts.into_iter().collect()
            })
        })
    }

    fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<SealedPan>> {
        Box::pin(async move {
            self.read(|tables| {
                tables
                    .vault
                    .values()
                    .filter(|sealed| after.is_none_or(|after| sealed.token > after))
                    .filter(|sealed| skip_key_id != Some(sealed.key_id))
                    .take(usize::try_from(rows_max).unwrap_or(usize::MAX))
                    .cloned()
                    .collect()
            })
        })
    }

    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut state = self.state();
            if state.crashed {
                return Err(failure("rewrap vault rows", "the backend has crashed"));
            }
            let mut moved = 0;
            for row in rows {
                // The compare-and-set of the SQL backends: only a row still
                // as it was read is replaced.
                if let Some(stored) = state.tables.vault.get_mut(&row.sealed.token)
                    && stored.key_id == row.old_key_id
                    && stored.nonce == row.old_nonce
                {
                    *stored = row.sealed.clone();
                    moved += 1;
                }
            }
            Ok(moved)
        })
    }
}
