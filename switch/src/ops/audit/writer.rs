//! The audit log's file: [`Audit`], the handle callers hold, and the one
//! writer thread behind it. Callers only queue; the thread places each
//! event in the chain, writes every waiting entry with one `write` and one
//! `fsync`, and counts what it wrote, dropped or failed to write. Opening a
//! log reads its tail to continue the chain from the last entry.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use actors::Clock;

use crate::ops::audit::chain::{AuditEntry, ChainHead};
use crate::ops::audit::event::AuditEvent;

/// The audit log cannot be opened or continued.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "audit log {path}: its last entry cannot be read ({reason}); run `switch audit verify --file {path}`"
    )]
    BadTail { path: PathBuf, reason: String },
}

/// Queue and batch sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    pub queue_capacity: usize,
    pub batch_entries_max: usize,
}

enum Command {
    Record(AuditEvent, u64),
    Close(SyncSender<ChainHead>),
}

struct Inner {
    path: PathBuf,
    sender: SyncSender<Command>,
    clock: Arc<dyn Clock>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    write_failures: Arc<AtomicU64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// When the last handle goes (an early return during start-up, say),
/// whatever is queued is still written before the writer stops.
impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut writer) = self.writer.lock()
            && let Some(handle) = writer.take()
        {
            let (ack, done) = std::sync::mpsc::sync_channel(1);
            if self.sender.send(Command::Close(ack)).is_ok() {
                let _ = done.recv();
            }
            let _ = handle.join();
        }
    }
}

/// A handle on the audit log; clones share one writer.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// Opens (or creates) the log at `path`, continues its chain from the
    /// last entry, and starts the writer thread.
    pub fn open(
        path: &Path,
        options: AuditOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Audit, AuditError> {
        let io = |error: std::io::Error| AuditError::Io {
            path: path.to_owned(),
            reason: error.to_string(),
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let head = continue_chain(&mut file, path)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(options.queue_capacity.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let write_failures = Arc::new(AtomicU64::new(0));
        let writer = {
            let written = Arc::clone(&written);
            let write_failures = Arc::clone(&write_failures);
            let batch_entries_max = options.batch_entries_max.max(1);
            std::thread::Builder::new()
                .name("audit-writer".to_owned())
                .spawn(move || {
                    write_entries(
                        file,
                        head,
                        receiver,
                        batch_entries_max,
                        &written,
                        &write_failures,
                    );
                })
                .map_err(io)?
        };
        Ok(Audit {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                sender,
                clock,
                dropped: AtomicU64::new(0),
                written,
                write_failures,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Queues `event` without waiting; if the queue is full it is dropped
    /// and counted. Returns whether it was queued.
    pub fn record(&self, event: AuditEvent) -> bool {
        let now_ms = self.inner.clock.now_ms();
        match self.inner.sender.try_send(Command::Record(event, now_ms)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues `event`, waiting for room if the queue is full: for rare
    /// events that must not be lost (start, stop, key rotation,
    /// configuration changes). From async code, call it where a short block
    /// is acceptable, or through `spawn_blocking`.
    pub fn record_or_wait(&self, event: AuditEvent) -> bool {
        let now_ms = self.inner.clock.now_ms();
        if self
            .inner
            .sender
            .send(Command::Record(event, now_ms))
            .is_err()
        {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Writes everything queued before it, stops the writer and returns the
    /// chain's head. Later events are dropped (and counted).
    pub fn close(&self) -> Option<ChainHead> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let head = if self.inner.sender.send(Command::Close(ack)).is_ok() {
            done.recv().ok()
        } else {
            None
        };
        if let Ok(mut writer) = self.inner.writer.lock()
            && let Some(handle) = writer.take()
        {
            let _ = handle.join();
        }
        head
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Events dropped at a full queue (or after close).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Entries written and synced.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Batches that could not be written or synced.
    pub fn write_failures(&self) -> u64 {
        self.inner.write_failures.load(Ordering::Relaxed)
    }

    /// The last `count` entries on disk (what the writer has synced), oldest
    /// first, as their JSON lines.
    pub fn tail(&self, count: usize) -> Result<Vec<String>, AuditError> {
        read_tail(&self.inner.path, count)
    }
}

/// The writer thread: every waiting event, one write, one fsync, again.
fn write_entries(
    mut file: File,
    mut head: ChainHead,
    receiver: Receiver<Command>,
    batch_entries_max: usize,
    written: &AtomicU64,
    write_failures: &AtomicU64,
) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut batch = Vec::with_capacity(batch_entries_max);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < batch_entries_max {
            match receiver.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut close = None;
        let mut entries = 0u64;
        for command in batch.drain(..) {
            match command {
                Command::Record(event, at_ms) => {
                    let entry = head.append(event, crate::ops::time::rfc3339(at_ms));
                    if serde_json::to_writer(&mut buffer, &entry).is_ok() {
                        buffer.push(b'\n');
                        entries += 1;
                    }
                }
                Command::Close(ack) => close = Some(ack),
            }
        }
        if !buffer.is_empty() {
            match file.write_all(&buffer).and_then(|()| file.sync_data()) {
                Ok(()) => {
                    written.fetch_add(entries, Ordering::Relaxed);
                }
                // The head has moved past these entries all the same, so
                // the next batch leaves a gap in `seq` that `verify`
                // reports as deleted: a lost entry is never hidden.
                Err(error) => {
                    write_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, entries, "audit entries could not be written");
                }
            }
            buffer.clear();
        }
        if let Some(ack) = close {
            let _ = ack.send(head.clone());
            return;
        }
    }
}

/// Bytes read from the end of the file to find its last entry.
const TAIL_BYTES: u64 = 64 * 1024;

/// Finds the chain's head in an existing log. A torn last line (the switch
/// died in the middle of a write: no final newline) is cut off, since it
/// was never acknowledged; a whole last line that is not an entry is an
/// error, for a person to look at.
fn continue_chain(file: &mut File, path: &Path) -> Result<ChainHead, AuditError> {
    let io = |error: std::io::Error| AuditError::Io {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    let length = file.metadata().map_err(io)?.len();
    if length == 0 {
        return Ok(ChainHead::genesis());
    }
    let start = length.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut tail).map_err(io)?;
    if tail.last() != Some(&b'\n') {
        let kept_in_tail = match tail.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None if start == 0 => 0,
            None => {
                return Err(AuditError::BadTail {
                    path: path.to_owned(),
                    reason: "the last line is longer than any entry".to_owned(),
                });
            }
        };
        tail.truncate(kept_in_tail);
        // The tail was read with `take(TAIL_BYTES)`: its length is a u64.
        let keep = start + u64::try_from(tail.len()).unwrap_or(TAIL_BYTES);
        tracing::warn!(
            path = %path.display(),
            bytes = length - keep,
            "audit log ended in a torn write; the unfinished line is cut off"
        );
        file.set_len(keep).map_err(io)?;
        if keep == 0 {
            return Ok(ChainHead::genesis());
        }
    }
    let text = String::from_utf8_lossy(&tail);
    let last = text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or_default();
    let entry: AuditEntry = serde_json::from_str(last).map_err(|error| AuditError::BadTail {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    if entry.expected_hash(&entry.prev_hash) != entry.hash {
        return Err(AuditError::BadTail {
            path: path.to_owned(),
            reason: format!("entry {} does not match its hash", entry.seq),
        });
    }
    Ok(ChainHead {
        seq: entry.seq,
        hash: entry.hash,
    })
}

/// Bytes read at most for [`Audit::tail`].
const TAIL_READ_BYTES_MAX: u64 = 4 * 1024 * 1024;

fn read_tail(path: &Path, count: usize) -> Result<Vec<String>, AuditError> {
    let io = |error: std::io::Error| AuditError::Io {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    let mut file = File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let start = length.saturating_sub(TAIL_READ_BYTES_MAX);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    if start > 0 && !lines.is_empty() {
        // The first line read may be the end of a longer one.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(count);
    Ok(lines.into_iter().skip(skip).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::audit::{events, verify};
    use actors::ManualClock;

    fn event(n: u32) -> AuditEvent {
        AuditEvent::numbered_for_tests(n)
    }

    #[test]
    fn the_writer_batches_and_a_reopened_log_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_763_846_400_000));
        let options = AuditOptions {
            queue_capacity: 1024,
            batch_entries_max: 64,
        };
        let audit = Audit::open(&path, options, Arc::clone(&clock)).unwrap();
        for n in 0..300 {
            assert!(audit.record(event(n)));
        }
        let head = audit.close().unwrap();
        assert_eq!(head.seq, 300);
        assert_eq!(audit.written(), 300);
        assert!(!audit.record(event(0)), "closed: dropped");
        assert_eq!(audit.dropped(), 1);

        // A torn write at the end (a crash mid-line) is cut off on open.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":301,\"ti").unwrap();
        drop(file);
        let audit = Audit::open(&path, options, clock).unwrap();
        assert!(audit.record_or_wait(AuditEvent::system(events::SWITCH_START, "ok", "test")));
        assert_eq!(audit.close().unwrap().seq, 301);
        let head = verify(&path).unwrap();
        assert_eq!(head.seq, 301);
        let tail = audit.tail(2).unwrap();
        assert_eq!(tail.len(), 2);
        assert!(tail[1].contains("\"switch.start\""), "{tail:?}");
        assert!(tail[1].contains("\"time\":\"2025-11-22T21:20:00.000Z\""));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(
            &path,
            AuditOptions {
                queue_capacity: 1,
                batch_entries_max: 1,
            },
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        let mut queued = 0u64;
        for n in 0..10_000 {
            if audit.record(event(n)) {
                queued += 1;
            }
        }
        assert_eq!(queued + audit.dropped(), 10_000);
        audit.close();
        assert_eq!(audit.written(), queued);
        assert_eq!(verify(&path).unwrap().seq, queued);
    }

    #[test]
    fn dropping_the_last_handle_writes_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(
            &path,
            AuditOptions {
                queue_capacity: 16,
                batch_entries_max: 16,
            },
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        let clone = audit.clone();
        assert!(audit.record(event(1)));
        drop(audit);
        assert!(clone.record(event(2)));
        drop(clone);
        assert_eq!(verify(&path).unwrap().seq, 2);
    }

    #[test]
    fn a_last_line_that_is_not_an_entry_refuses_to_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "not an entry\n").unwrap();
        let error = Audit::open(
            &path,
            AuditOptions {
                queue_capacity: 4,
                batch_entries_max: 4,
            },
            Arc::new(ManualClock::new(0)),
        )
        .unwrap_err();
        assert!(error.to_string().contains("switch audit verify"), "{error}");
    }
}
