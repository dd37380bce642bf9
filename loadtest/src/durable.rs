//! The durable echo's journal (`loadtest echo --durable FILE`) and the raw
//! limit of the disk under it, `K_append`.
//!
//! A switch that answers only after its record is durable cannot beat a
//! server that does nothing but make a record durable: the durable echo
//! (`D`) answers the same frames as `loadtest echo`, each only after a
//! record of its request is appended to a file and that write is
//! `fdatasync`ed. One journal thread drains every request waiting on the
//! bounded queue in one go, writes their records with one `write`, syncs
//! once and then releases that round's answers. There is no timer: a
//! round's size is whatever arrived while the previous one was syncing, as
//! in the switch's group commit, so batches grow with load.
//!
//! `K_append` is the same record bytes appended in batches of fixed sizes
//! with one `fdatasync` each and no network: what the disk allows a
//! journal of these records, per batch size.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Instant;
use crate::units::to_f64;

/// Requests (one connection's whole frames of one read each) that may wait
/// for the journal thread; a connection waits for its answer before it
/// reads again, so this bounds nothing below the connection count and
/// holds back connections beyond it.
const QUEUE: usize = 4096;

/// Appends the journal record of `frame` to `out`: its length, four bytes
/// big-endian, then its bytes, about the size of a switch's journal record.
pub fn append_record(frame: &[u8], out: &mut Vec<u8>) {
    // A frame is at most the framing's limit (64 KiB for two-byte headers,
    // a few MiB at most), so its length fits.
    let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(frame);
}

/// One connection's records, and where to say they are durable.
struct Job {
    records: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The sockets' side of the journal thread.
#[derive(Clone)]
pub struct Journal {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

impl Journal {
    /// Opens `path` for appending (creating it) and starts the journal
    /// thread. A path that cannot be opened is an error here, before the
    /// server listens.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("durable-journal".to_owned())
            .spawn(move || journal_thread(file, receiver))?;
        Ok(Journal { queue })
    }

    /// Returns once `records` are written and synced with the round that
    /// took them; an error if the disk refused them (the answers are then
    /// never sent).
    pub async fn commit(&self, records: Vec<u8>) -> io::Result<()> {
        let (done, synced) = oneshot::channel();
        self.queue
            .send(Job { records, done })
            .await
            .map_err(|_| io::Error::other("the journal thread stopped"))?;
        match synced.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(io::Error::other(reason)),
            Err(_) => Err(io::Error::other("the journal thread stopped")),
        }
    }
}

/// Rounds until every sender is gone or the disk fails: take everything
/// waiting, one write, one `fdatasync`, release.
fn journal_thread(mut file: File, mut receiver: mpsc::Receiver<Job>) {
    let mut round: Vec<Job> = Vec::with_capacity(QUEUE);
    let mut bytes: Vec<u8> = Vec::with_capacity(1 << 20);
    while let Some(first) = receiver.blocking_recv() {
        round.push(first);
        while let Ok(job) = receiver.try_recv() {
            round.push(job);
        }
        bytes.clear();
        for job in &round {
            bytes.extend_from_slice(&job.records);
        }
        let result = file
            .write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("journal: {e}"));
        let failed = result.is_err();
        for job in round.drain(..) {
            let _ = job.done.send(result.clone());
        }
        if failed {
            // What is on disk after a failed sync is unknown: answer no
            // more (the connections close).
            return;
        }
    }
}

/// Records per second appending batches of `batch` records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppendRate {
    pub batch: usize,
    pub records_per_s: f64,
    /// Median time of one write and its `fdatasync`, µs.
    pub sync_us_p50: f64,
}

/// The batch sizes `K_append` is measured at.
pub const APPEND_BATCHES: [usize; 4] = [1, 16, 64, 256];

/// `K_append`: `record` (one journal record, as [`append_record`] makes
/// it) appended to a fresh file in `dir`, `batch` at a time with one write
/// and one `fdatasync` each, for `each` per batch size. The file is
/// removed afterwards.
pub fn k_append(
    dir: &Path,
    record: &[u8],
    batches: &[usize],
    each: Duration,
) -> io::Result<Vec<AppendRate>> {
    let path = dir.join("k_append.journal");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let mut rates = Vec::with_capacity(batches.len());
    let mut bytes = Vec::new();
    let mut syncs_us = Vec::new();
    for &batch in batches {
        bytes.clear();
        for _ in 0..batch {
            bytes.extend_from_slice(record);
        }
        syncs_us.clear();
        let started = Instant::now();
        let mut records = 0usize;
        while started.elapsed() < each {
            let sync_started = Instant::now();
            file.write_all(&bytes)?;
            file.sync_data()?;
            syncs_us.push(sync_started.elapsed().as_secs_f64() * 1e6);
            records += batch;
        }
        let elapsed = started.elapsed().as_secs_f64();
        syncs_us.sort_by(f64::total_cmp);
        rates.push(AppendRate {
            batch,
            records_per_s: if elapsed > 0.0 {
                to_f64(u64::try_from(records).unwrap_or(u64::MAX)) / elapsed
            } else {
                0.0
            },
            sync_us_p50: syncs_us.get(syncs_us.len() / 2).copied().unwrap_or(0.0),
        });
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_its_length_then_its_bytes() {
        let mut out = Vec::new();
        append_record(b"abc", &mut out);
        append_record(b"", &mut out);
        assert_eq!(out, b"\0\0\0\x03abc\0\0\0\0");
    }

    #[tokio::test]
    async fn a_commit_returns_after_its_records_are_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.journal");
        let journal = Journal::open(&path).unwrap();
        let (a, b) = tokio::join!(
            journal.commit(b"first".to_vec()),
            journal.commit(b"second".to_vec())
        );
        a.unwrap();
        b.unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.len(), b"firstsecond".len());
        assert!(text.windows(5).any(|w| w == b"first"));
        assert!(text.windows(6).any(|w| w == b"second"));
    }

    #[test]
    fn k_append_measures_every_batch_size_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = Vec::new();
        append_record(&[7u8; 200], &mut record);
        let rates = k_append(dir.path(), &record, &[1, 8], Duration::from_millis(50)).unwrap();
        assert_eq!(
            rates.iter().map(|r| r.batch).collect::<Vec<_>>(),
            vec![1, 8]
        );
        assert!(rates.iter().all(|r| r.records_per_s > 0.0), "{rates:?}");
        assert!(!dir.path().join("k_append.journal").exists());
    }
}
