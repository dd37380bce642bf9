//! [`LogStore`]: opening the segment log, its writer and its reads.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protocol::domain::{Token, TransactionId};

use super::codec::{self, Entry};
use super::frames::Frame;
use super::index::LogHistory;
use super::segment::{self, Recovery, Segments};
use super::start;
use crate::error::StorageError;
use crate::journal::{Journal, JournalBackend, JournalConfig};
use crate::record::{
    AppendOutcome, ClaimOutcome, IdempotencyEntry, JournalRecord, KeyClaim, OriginalKeys,
    RecordKind, ReplayCursor, ReplayRow, SealedPan, StoredTransaction,
};
use crate::rewrap::{Rewrapped, VaultMaintenance};
use crate::store::{StoreFuture, StoreReader};
use crate::tables::{History, Tables, without_riders};

/// Where a segment is closed and the next begun, unless configured.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// The journal's queue and batches, and the size of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub journal: JournalConfig,
    /// A segment is closed once the next frame would take it past this
    /// (a single larger frame still goes in a segment of its own).
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            journal: JournalConfig::default(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// The read side of the segment log, and what recovery found. Cheap to
/// clone; every clone reads the same tables.
#[derive(Debug, Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// What every read answers from: the frames on disk, applied in order
    /// (the records themselves stay on disk, indexed).
    tables: RwLock<Tables<LogHistory>>,
    /// The files, held by whoever appends (the journal's writer, or a
    /// vault rewrap) from encoding a frame until it is applied to `tables`,
    /// so frames apply in the order they are on disk, as recovery applies
    /// them.
    segments: Arc<tokio::sync::Mutex<Segments>>,
    /// Set once the log takes no more writes (a failed `fdatasync`), so
    /// `/health/ready` says so without waiting for the writer's lock.
    failed: AtomicBool,
    /// The segment being written when it failed, for the error.
    failed_at: std::sync::Mutex<Option<PathBuf>>,
    recovery: Recovery,
}

/// A panicked blocking task, as the I/O error it stands for.
fn lost(
    dir: &Path,
    operation: &'static str,
) -> impl FnOnce(tokio::task::JoinError) -> StorageError {
    let path = dir.to_path_buf();
    move |join| StorageError::Log {
        operation,
        path,
        source: std::io::Error::other(join.to_string()),
    }
}

impl LogStore {
    /// Opens (creating if missing) the log in `dir`: reads every segment
    /// back, verifying every frame and cutting a torn tail off the last
    /// one, rebuilds the tables, and starts the journal's writer on the
    /// current tokio runtime. Fails with [`StorageError::LogCorrupt`] on
    /// damage a crash cannot have made.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<(Journal, LogStore), StorageError> {
        let path = dir.to_path_buf();
        let (segments, recovery, tables) =
            tokio::task::spawn_blocking(move || start::recover(&path, config.segment_bytes))
                .await
                .map_err(lost(dir, "recover the journal"))??;
        tracing::info!(
            dir = %dir.display(),
            snapshot = recovery.snapshot,
            segments = recovery.segments,
            frames = recovery.frames,
            records = tables.records(),
            torn_bytes = recovery.torn_bytes,
            "journal: segment log recovered"
        );
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            tables: RwLock::new(tables),
            segments: Arc::new(tokio::sync::Mutex::new(segments)),
            failed: AtomicBool::new(false),
            failed_at: std::sync::Mutex::new(None),
            recovery,
        });
        // The writer's `write` and `fdatasync` block its thread: a thread
        // of its own, so a commit costs one wake-up of it and none of the
        // runtime's workers waits on the disk.
        let journal = Journal::start_on_thread(
            LogWriter {
                shared: Arc::clone(&shared),
            },
            &config.journal,
        )
        .map_err(StorageError::WriterThread)?;
        Ok((journal, LogStore { shared }))
    }

    /// What recovery found at start: segments and frames read, and the
    /// bytes of a torn tail cut off.
    pub fn recovery(&self) -> &Recovery {
        &self.shared.recovery
    }

    /// Every committed transaction, with the reversal that holds it, in id
    /// order: for tests that check what is on disk after a crash.
    /// Reads every segment back.
    pub fn committed(&self) -> Result<Vec<StoredTransaction>, StorageError> {
        let tables = self.shared.read();
        let mut committed = Vec::new();
        let numbers = segment::numbers(&self.shared.dir)?;
        for (i, number) in numbers.iter().enumerate() {
            // Only segment files: the index files beside them are not.
            segment::scan(
                &self.shared.dir,
                *number,
                i + 1 == numbers.len(),
                |offset, payload| {
                    let Ok(Entry::Batch(batch)) = codec::decode(payload) else {
                        return Ok(());
                    };
                    for record in &batch {
                        // A record refused for its idempotency key is in
                        // its frame but was not written.
                        if tables.history.holds_at(
                            record.id,
                            Frame {
                                segment: *number,
                                offset,
                            },
                        )? {
                            committed.push(StoredTransaction {
                                record: without_riders(record),
                                reversed_by: tables.history.reversal(record.id)?.map(|r| r.id),
                            });
                        }
                    }
                    Ok(())
                },
            )?;
        }
        committed.sort_by_key(|stored| stored.record.id);
        Ok(committed)
    }

    /// Records held.
    pub fn records(&self) -> usize {
        usize::try_from(self.shared.read().records()).unwrap_or(usize::MAX)
    }

    /// What the index holds in memory: records of the open segment, and
    /// closed segments, each of which costs a summary only. Waits for the
    /// index files being written.
    pub fn in_memory(&self) -> InMemory {
        let mut tables = self.shared.write();
        tables.history.settle(true);
        InMemory {
            open_records: tables.history.open_records(),
            closed_segments: crate::convert::count_u64(tables.history.closed().len()),
        }
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// What the log's index holds in memory ([`LogStore::in_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InMemory {
    /// Records of the open segment, indexed in memory.
    pub open_records: u64,
    /// Closed segments, each held as a summary of its index file.
    pub closed_segments: u64,
}

impl Drop for Shared {
    /// The last reader or writer gone: the index files still being
    /// written are finished first, so nothing writes in the directory once
    /// the log is dropped (a test reopening it, or removing it).
    fn drop(&mut self) {
        self.tables
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .history
            .settle(true);
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Tables<LogHistory>> {
        // Nothing panics half-way through changing the tables.
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables<LogHistory>> {
        self.tables.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one frame, with `sync` durably, and only then applies it to
    /// the tables. `encode` writes the payload, or refuses (and nothing is
    /// written); `apply` is what the frame does to the tables, the same as
    /// recovery does on reading it back.
    async fn commit<T>(
        &self,
        disk: Disk,
        sync: bool,
        encode: impl FnOnce(&Tables<LogHistory>, &mut Vec<u8>) -> Result<(), StorageError>,
        apply: impl FnOnce(&mut Tables<LogHistory>) -> T,
    ) -> Result<T, StorageError> {
        let mut segments = Arc::clone(&self.segments).lock_owned().await;
        encode(&self.read(), segments.payload())?;
        let (mut segments, written) = match disk {
            Disk::Here => {
                let written = segments.append(sync);
                (segments, written)
            }
            Disk::Pool => tokio::task::spawn_blocking(move || {
                let written = segments.append(sync);
                (segments, written)
            })
            .await
            .map_err(lost(&self.dir, "append to the journal"))?,
        };
        if segments.has_failed() && !self.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(
                segment = %segments.path().display(),
                "journal: the log failed to sync and takes no more writes until restarted"
            );
            *self
                .failed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(segments.path().to_path_buf());
        }
        written?;
        let (segment, offset) = segments.last_frame();
        let mut tables = self.write();
        // Index files written since the last commit: their summaries in.
        tables.history.settle(false);
        if let Some((_, len, next_sequence)) = segments.take_closed() {
            // The frame began the next segment: the one before is closed,
            // indexed in a file and snapshotted before the frame is applied.
            start::close_segment(&mut tables, &self.dir, len, next_sequence)?;
        }
        tables.history.at(Frame { segment, offset });
        let applied = apply(&mut tables);
        drop(tables);
        drop(segments);
        Ok(applied)
    }
}

/// Where a commit's `write` and `fdatasync` run: they block the thread.
#[derive(Debug, Clone, Copy)]
enum Disk {
    /// On the caller's thread: the journal's writer, which has one of its
    /// own ([`Journal::start_on_thread`]).
    Here,
    /// On tokio's blocking pool, one hop per frame: a caller on the
    /// runtime's workers (a vault rewrap).
    Pool,
}

/// The journal's writer on the log.
#[derive(Debug)]
struct LogWriter {
    shared: Arc<Shared>,
}

impl JournalBackend for LogWriter {
    async fn write_batch(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        self.shared
            .commit(
                Disk::Here,
                true,
                |tables, payload| {
                    // A batch that would not apply is refused before it is
                    // on disk: recovery must be able to apply every frame.
                    tables.check(batch)?;
                    codec::encode_batch(payload, batch);
                    Ok(())
                },
                |tables| tables.apply(batch),
            )
            .await?
    }

    /// Not synced: the next batch's `fdatasync` covers this frame too, as
    /// the SQL backends' claims ride the next commit (see
    /// [`Journal::claim`]); a claim lost with a crash before it only lets
    /// its key be claimed afresh, and no record of it was written.
    async fn write_claims(
        &mut self,
        claims: &[KeyClaim],
    ) -> Result<Vec<ClaimOutcome>, StorageError> {
        self.shared
            .commit(
                Disk::Here,
                false,
                |_, payload| {
                    codec::encode_claims(payload, claims);
                    Ok(())
                },
                |tables| tables.claim_turn(claims),
            )
            .await
    }

    async fn close(self) {
        let mut segments = self.shared.segments.lock().await;
        if let Err(error) = segments.sync() {
            tracing::warn!(%error, "journal: the last claims could not be synced at close");
        }
        // The index files still being written are finished, so a log
        // closed is whole on disk.
        self.shared.write().history.settle(true);
    }
}

impl StoreReader for LogStore {
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>> {
        Box::pin(async move { self.shared.read().transaction(id) })
    }

    fn find_original<'a>(
        &'a self,
        keys: &'a OriginalKeys,
        kinds: &'a [RecordKind],
        created_since_ms: u64,
    ) -> StoreFuture<'a, Option<JournalRecord>> {
        Box::pin(async move {
            self.shared
                .read()
                .find_original(keys, kinds, created_since_ms)
        })
    }

    fn idempotent_response<'a>(
        &'a self,
        merchant_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<IdempotencyEntry>> {
        Box::pin(async move { Ok(self.shared.read().idempotent_response(merchant_id, key)) })
    }

    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<ReplayRow>> {
        Box::pin(async move { self.shared.read().approved_since(since_ms, after, rows_max) })
    }

    fn recorded_since(&self, since_ms: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move { Ok(self.shared.read().recorded_since(since_ms)) })
    }

    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>> {
        Box::pin(async move { Ok(self.shared.read().sealed_pan(token)) })
    }

    /// The files are open for as long as the process runs; the log is
    /// unready once it takes no more writes.
    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if !self.shared.failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let path = self
                .shared
                .failed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| self.shared.dir.clone());
            Err(StorageError::LogFailed { path })
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl VaultMaintenance for LogStore {
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move { Ok(self.shared.read().vault_rows_per_key()) })
    }

    fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<SealedPan>> {
        Box::pin(async move { Ok(self.shared.read().sealed_page(after, skip_key_id, rows_max)) })
    }

    /// One synced frame: a row moved to the active key must stay moved, or
    /// retiring the old key would leave it unreadable.
    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            self.shared
                .commit(
                    Disk::Pool,
                    true,
                    |_, payload| {
                        codec::encode_rewrap(payload, rows);
                        Ok(())
                    },
                    |tables| tables.replace_sealed(rows),
                )
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::error::JournalError;
    use crate::record::sample::record;

    /// After a failed fdatasync nothing more is written or acknowledged,
    /// and the store answers its readiness check with the failure.
    #[tokio::test]
    async fn a_log_that_failed_to_sync_takes_no_writes_and_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, store) = LogStore::open(dir.path(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!(journal.append(record(1)).await, Ok(AppendOutcome::Recorded));
        assert!(store.check().await.is_ok());

        store.shared.segments.lock().await.fail();
        assert_eq!(
            journal.append(record(2)).await,
            Err(JournalError::Unavailable)
        );
        assert!(matches!(
            store.check().await,
            Err(StorageError::LogFailed { .. })
        ));
        assert!(store.transaction(record(2).id).await.unwrap().is_none());
        assert!(store.transaction(record(1).id).await.unwrap().is_some());
        journal.close().await;
    }
}
