//! The audit log: who did what, from where, and whether it was allowed,
//! in an append-only file (`data_dir/audit.log`, one JSON object a line)
//! whose entries are hash-chained, so an edit, a deletion or a reordering is
//! found by `switch audit verify`.
//!
//! ```text
//! {"seq":1,"time":"2026-11-22T21:30:00.000Z","actor":"switch","event":"switch.start",
//!  "outcome":"ok","origin":"local","resource":"iso=...,http=...",
//!  "prev_hash":"000…0","hash":"3f1c…"}
//! ```
//!
//! `hash` is the SHA-256, in hex, of the previous entry's `hash` (64 ASCII
//! hex digits; 64 zeros before the first entry) followed by the entry's
//! canonical bytes: the compact JSON of `seq, time, actor, event, outcome,
//! origin, resource` in that order. `seq` counts from 1 without gaps.
//!
//! Callers never wait for the disk: [`Audit::record`] puts the event on a
//! bounded queue and returns; a dedicated thread takes every event waiting,
//! writes them with one `write` and one `fsync`, and goes back for more. If
//! the queue is full the event is dropped and counted
//! (`switch_audit_dropped_total`), so a flood of requests can neither block
//! the hot path nor grow memory. Rare events that must not be lost (start,
//! stop, key and configuration changes) use [`Audit::record_or_wait`].
//!
//! Nothing secret is ever recorded: the actor is a key's name and role,
//! never the key; no card data reaches this module.
//!
//! What the chain cannot show by itself is the loss of the newest entries
//! (a truncated tail): the switch logs the chain's head (seq and hash) when
//! it stops, so a log kept elsewhere anchors it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use actors::Clock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The event names the switch records. The lead's TLS and vault work adds
/// its own (`tls.handshake`, `vault.rotate`, ...) as plain strings.
pub mod events {
    pub const SWITCH_START: &str = "switch.start";
    pub const SWITCH_STOP: &str = "switch.stop";
    pub const CONFIG_LOAD: &str = "config.load";
    /// A key was accepted (a merchant's once per origin per interval).
    pub const AUTH_SUCCESS: &str = "auth.success";
    /// A key was sent that matches no principal.
    pub const AUTH_FAILURE: &str = "auth.failure";
    /// An origin has just been locked out after repeated failures.
    pub const AUTH_LOCKOUT: &str = "auth.lockout";
    /// An operator or admin route was allowed to a principal.
    pub const ACCESS_ALLOWED: &str = "access.allowed";
    /// A principal's role may not use the route.
    pub const ACCESS_DENIED: &str = "access.denied";
    /// The vault keyring was re-read (SIGHUP or the admin route).
    pub const VAULT_RELOAD: &str = "vault.reload";
    /// The job re-encrypting vault rows under the active key started.
    pub const VAULT_REWRAP_START: &str = "vault.rewrap.start";
    /// ... and finished (`done`, `stopped` or `failed`).
    pub const VAULT_REWRAP_FINISH: &str = "vault.rewrap.finish";
    /// A TLS handshake on an acquirer or HTTPS listener (`ok` or why not).
    pub const TLS_HANDSHAKE: &str = "tls.handshake";
}

/// The actor, origin and resource of events that are the switch's own.
pub const SYSTEM_ACTOR: &str = "switch";
pub const LOCAL_ORIGIN: &str = "local";

/// Longest value kept for any field; longer values are cut (a path from a
/// client could be long).
const FIELD_CHARS_MAX: usize = 256;

/// Hash before the first entry.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One thing that happened, before it gets its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who: `merchant:ID`, `operator:NAME`, `admin:NAME`, `unknown`, `switch`.
    pub actor: String,
    /// What: one of [`events`], or another dotted name.
    pub event: String,
    /// How it ended: `ok`, `allowed`, `denied`, `bad_key`, `locked_out`, ...
    pub outcome: String,
    /// Where from: the peer address, or `local`.
    pub origin: String,
    /// On what: a route (`GET /metrics`), a file, a key id.
    pub resource: String,
}

impl AuditEvent {
    /// An event of the switch itself (start, stop, configuration).
    pub fn system(event: &str, outcome: &str, resource: impl Into<String>) -> AuditEvent {
        AuditEvent {
            actor: SYSTEM_ACTOR.to_owned(),
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            origin: LOCAL_ORIGIN.to_owned(),
            resource: resource.into(),
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub event: String,
    pub outcome: String,
    pub origin: String,
    pub resource: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part of an entry, in its canonical order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    actor: &'a str,
    event: &'a str,
    outcome: &'a str,
    origin: &'a str,
    resource: &'a str,
}

impl AuditEntry {
    /// The hash this entry must carry after `prev_hash`.
    fn expected_hash(&self, prev_hash: &str) -> String {
        let canonical = Canonical {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            event: &self.event,
            outcome: &self.outcome,
            origin: &self.origin,
            resource: &self.resource,
        };
        let mut hasher = Sha256::new();
        hasher.update(prev_hash.as_bytes());
        hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
        protocol::encoding::to_hex(&hasher.finalize())
    }
}

/// The end of the chain: the last entry's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Places `event` after this head and moves the head to it.
    fn append(&mut self, event: AuditEvent, time: String) -> AuditEntry {
        let cut = |mut value: String| {
            if value.chars().count() > FIELD_CHARS_MAX {
                value = value.chars().take(FIELD_CHARS_MAX).collect();
            }
            value
        };
        let mut entry = AuditEntry {
            seq: self.seq + 1,
            time,
            actor: cut(event.actor),
            event: cut(event.event),
            outcome: cut(event.outcome),
            origin: cut(event.origin),
            resource: cut(event.resource),
            prev_hash: self.hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.expected_hash(&self.hash);
        self.seq = entry.seq;
        self.hash = entry.hash.clone();
        entry
    }
}

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
#[derive(Debug, Clone, Copy)]
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
        let keep = match tail.iter().rposition(|&b| b == b'\n') {
            Some(at) => start + at as u64 + 1,
            None if start == 0 => 0,
            None => {
                return Err(AuditError::BadTail {
                    path: path.to_owned(),
                    reason: "the last line is longer than any entry".to_owned(),
                });
            }
        };
        tracing::warn!(
            path = %path.display(),
            bytes = length - keep,
            "audit log ended in a torn write; the unfinished line is cut off"
        );
        file.set_len(keep).map_err(io)?;
        tail.truncate((keep - start) as usize);
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

/// What `switch audit verify` found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("line {line}: not an audit entry ({reason}): the line was edited")]
    Unreadable { line: u64, reason: String },
    #[error("line {line}: entry {seq} does not match its hash: the entry was edited")]
    Edited { line: u64, seq: u64 },
    #[error(
        "line {line}: expected entry {expected}, found {found}: entries {expected} to {} were deleted",
        .found - 1
    )]
    Deleted {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error("line {line}: expected entry {expected}, found {found}: entries were reordered")]
    Reordered {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "line {line}: entry {seq} does not follow the previous entry's hash: an entry was replaced"
    )]
    Unchained { line: u64, seq: u64 },
    #[error("cannot be read: {reason}")]
    Io { reason: String },
}

impl ChainError {
    /// The line at fault, counting from 1.
    pub fn line(&self) -> Option<u64> {
        match self {
            ChainError::Unreadable { line, .. }
            | ChainError::Edited { line, .. }
            | ChainError::Deleted { line, .. }
            | ChainError::Reordered { line, .. }
            | ChainError::Unchained { line, .. } => Some(*line),
            ChainError::Io { .. } => None,
        }
    }
}

/// Checks a whole log, line by line, in constant memory. Returns the head.
pub fn verify(path: &Path) -> Result<ChainHead, ChainError> {
    let file = File::open(path).map_err(|error| ChainError::Io {
        reason: error.to_string(),
    })?;
    verify_lines(BufReader::new(file).lines())
}

fn verify_lines(
    lines: impl Iterator<Item = std::io::Result<String>>,
) -> Result<ChainHead, ChainError> {
    let mut head = ChainHead::genesis();
    let mut lines = lines.enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let line_number = index as u64 + 1;
        let text = line.map_err(|error| ChainError::Io {
            reason: error.to_string(),
        })?;
        let entry: AuditEntry =
            serde_json::from_str(&text).map_err(|error| ChainError::Unreadable {
                line: line_number,
                reason: error.to_string(),
            })?;
        if entry.expected_hash(&entry.prev_hash) != entry.hash {
            return Err(ChainError::Edited {
                line: line_number,
                seq: entry.seq,
            });
        }
        let expected = head.seq + 1;
        if entry.seq != expected {
            // The entry that should be here on the next line: two swapped.
            let next_is_expected = lines.peek().is_some_and(|(_, next)| {
                next.as_ref().is_ok_and(|text| {
                    serde_json::from_str::<AuditEntry>(text).is_ok_and(|next| next.seq == expected)
                })
            });
            return Err(if entry.seq > expected && !next_is_expected {
                ChainError::Deleted {
                    line: line_number,
                    expected,
                    found: entry.seq,
                }
            } else {
                ChainError::Reordered {
                    line: line_number,
                    expected,
                    found: entry.seq,
                }
            });
        }
        if entry.prev_hash != head.hash {
            return Err(ChainError::Unchained {
                line: line_number,
                seq: entry.seq,
            });
        }
        head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::ManualClock;

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            actor: format!("admin:root{n}"),
            event: events::ACCESS_ALLOWED.to_owned(),
            outcome: "allowed".to_owned(),
            origin: "127.0.0.1".to_owned(),
            resource: "GET /metrics".to_owned(),
        }
    }

    fn chain(count: u32) -> Vec<String> {
        let mut head = ChainHead::genesis();
        (1..=count)
            .map(|n| {
                let entry = head.append(event(n), "2026-11-22T21:30:00.000Z".to_owned());
                serde_json::to_string(&entry).unwrap()
            })
            .collect()
    }

    fn check(lines: &[String]) -> Result<ChainHead, ChainError> {
        verify_lines(lines.iter().map(|line| Ok(line.clone())))
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let lines = chain(5);
        let head = check(&lines).unwrap();
        assert_eq!(head.seq, 5);
        assert!(lines[0].contains(&format!("\"prev_hash\":\"{GENESIS_HASH}\"")));
        assert_eq!(check(&[]).unwrap(), ChainHead::genesis());
    }

    #[test]
    fn every_kind_of_tampering_is_named_with_its_line() {
        let lines = chain(5);

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("admin:root3", "admin:root9");
        assert_eq!(check(&edited), Err(ChainError::Edited { line: 3, seq: 3 }));

        let mut broken = lines.clone();
        broken[1] = broken[1].replacen('{', "[", 1);
        assert!(matches!(
            check(&broken),
            Err(ChainError::Unreadable { line: 2, .. })
        ));

        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(
            check(&deleted),
            Err(ChainError::Deleted {
                line: 2,
                expected: 2,
                found: 3
            })
        );
        assert!(
            check(&deleted)
                .unwrap_err()
                .to_string()
                .contains("entries 2 to 2 were deleted")
        );

        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(
            check(&swapped),
            Err(ChainError::Reordered {
                line: 3,
                expected: 3,
                found: 4
            })
        );

        // An entry rewritten whole, with a correct hash of its own: the
        // chain from the previous entry is what gives it away.
        let mut replaced = lines.clone();
        let mut forged: AuditEntry = serde_json::from_str(&replaced[3]).unwrap();
        forged.actor = "admin:someone-else".to_owned();
        forged.prev_hash = GENESIS_HASH.to_owned();
        forged.hash = forged.expected_hash(&forged.prev_hash);
        replaced[3] = serde_json::to_string(&forged).unwrap();
        assert_eq!(
            check(&replaced),
            Err(ChainError::Unchained { line: 4, seq: 4 })
        );
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
