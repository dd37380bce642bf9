//! An in-memory backend for deterministic tests, behind the `memory`
//! feature.
//!
//! [`MemoryBackend`] keeps the five tables (`transactions`, `reversals`,
//! `vault`, `idempotency`, `idempotency_claims`) in memory, in the same
//! indexed tables the segment log reads from (`crate::tables`), and answers
//! exactly as the SQLite backend does: a taken transaction id fails the
//! whole batch, the first reversal of an original wins (later ones get
//! [`AppendOutcome::AlreadyReversed`]), a record whose idempotency key
//! another request holds (its claim, its stored answer, or an earlier
//! record of the batch) is not written
//! ([`AppendOutcome::IdempotencyKeyTaken`]), claims are made, taken over
//! and released by the same rule, the first sealed PAN of a token stays,
//! and every read filters and orders as its SQL does. Claims pass the
//! gate, and fail with [`MemoryBackend::fail_next_batches`], as a batch
//! does; a commit-then-fail applies to record batches only. The conformance tests
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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::domain::{Token, TransactionId};
use tokio::sync::watch;

use crate::error::StorageError;
use crate::journal::JournalBackend;
use crate::record::{
    AppendOutcome, ClaimOutcome, IdempotencyEntry, JournalRecord, KeyClaim, OriginalKeys,
    RecordKind, ReplayCursor, ReplayRow, SealedPan, StoredTransaction,
};
use crate::rewrap::{Rewrapped, VaultMaintenance};
use crate::store::{StoreFuture, StoreReader};
use crate::tables::Tables;

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
        self.state().tables.history.committed()
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
    fn read<T>(
        &self,
        read: impl FnOnce(&Tables) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let state = self.state();
        if state.crashed {
            return Err(failure(
                "read the memory backend",
                "the backend has crashed",
            ));
        }
        read(&state.tables)
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

impl State {
    /// Makes or gives up claims, under the lock, as one transaction: a
    /// crashed backend or a failure the test asked for fails them all.
    fn write_claims(&mut self, claims: &[KeyClaim]) -> Result<Vec<ClaimOutcome>, StorageError> {
        let operation = "commit idempotency claims";
        if self.crashed {
            return Err(failure(operation, "the backend has crashed"));
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(failure(operation, "a failure the test asked for"));
        }
        Ok(self.tables.claim_turn(claims))
    }
}

impl JournalBackend for MemoryBackend {
    async fn write_batch(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        self.pass_gate().await;
        self.state().write_batch(batch)
    }

    async fn write_claims(
        &mut self,
        claims: &[KeyClaim],
    ) -> Result<Vec<ClaimOutcome>, StorageError> {
        self.pass_gate().await;
        self.state().write_claims(claims)
    }
}

impl StoreReader for MemoryBackend {
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>> {
        Box::pin(async move { self.read(|tables| tables.transaction(id)) })
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
        Box::pin(
            async move { self.read(|tables| Ok(tables.idempotent_response(merchant_id, key))) },
        )
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
        Box::pin(async move { self.read(|tables| Ok(tables.recorded_since(since_ms))) })
    }

    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>> {
        Box::pin(async move { self.read(|tables| Ok(tables.sealed_pan(token))) })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.read(|_| Ok(())) })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl VaultMaintenance for MemoryBackend {
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move { self.read(|tables| Ok(tables.vault_rows_per_key())) })
    }

    fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<SealedPan>> {
        Box::pin(
            async move { self.read(|tables| Ok(tables.sealed_page(after, skip_key_id, rows_max))) },
        )
    }

    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut state = self.state();
            if state.crashed {
                return Err(failure("rewrap vault rows", "the backend has crashed"));
            }
            Ok(state.tables.replace_sealed(rows))
        })
    }
}
