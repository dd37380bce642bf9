//! Start-up, and closing a segment: what makes the next start short.
//!
//! A segment is closed when the next frame would take it past its size:
//! its index goes to a file beside it (`sidecar`) and what memory keeps
//! whole to a snapshot (`snapshot`). Start-up takes the latest snapshot
//! whose closed segments all have a sound index file (the header checks
//! and describes the segment as it is on disk), holds those segments as
//! summaries only, and reads back the segments after it (normally the open
//! one alone), checking every frame as it always did. With no usable
//! snapshot it reads every segment from the first and writes each closed
//! one's index and snapshot afresh: a missing or damaged file is rebuilt
//! from the segments, never trusted.

use std::path::Path;

use super::codec::{self, Entry};
use super::frames::Frame;
use super::index::LogHistory;
use super::segment::{self, ReadFrom, Recovery, Segments};
use super::sidecar::{self, Closed};
use super::snapshot;
use crate::error::StorageError;
use crate::tables::{Keyed, Tables};

/// Closes the open segment of `tables`, `len` bytes long and followed by
/// the frame numbered `next_sequence`: its index file, then the snapshot
/// of what stands after it.
pub(super) fn close_segment(
    tables: &mut Tables<LogHistory>,
    dir: &Path,
    len: u64,
    next_sequence: u64,
) -> Result<(), StorageError> {
    let number = tables.history.open_number();
    // The index file is written by a thread of its own; the snapshot here,
    // on the writer's thread, which holds the tables meanwhile: every
    // commit waits for it (how long is logged, and is in
    // docs/BENCHMARKS.md).
    let started = tokio::time::Instant::now();
    tables
        .history
        .close_open_in_background(len, next_sequence)?;
    snapshot::write(dir, number, &tables.keyed)?;
    tracing::info!(
        segment = number,
        held_ms = started.elapsed().as_millis(),
        "journal: closed a segment: its snapshot written, its index file being written"
    );
    Ok(())
}

/// Recovers the log in `dir`: the tables from the latest usable snapshot
/// and the frames after it, and the segments opened for appending.
pub(super) fn recover(
    dir: &Path,
    segment_bytes: u64,
) -> Result<(Segments, Recovery, Tables<LogHistory>), StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::Log {
        operation: "create the journal's directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let numbers = segment::numbers(dir)?;
    let (from, snapshot_number, keyed, closed) = usable_snapshot(dir, &numbers)?;
    let mut tables = Tables::new(keyed, LogHistory::new(dir, closed));
    let (mut segments, mut recovery) =
        segment::recover(dir, segment_bytes, from, |payload, at| {
            if at.number != tables.history.open_number() {
                // The segment before is closed: whole, and followed by this
                // frame.
                close_read(&mut tables, dir, at.sequence)?;
            }
            tables.history.at(Frame {
                segment: at.number,
                offset: at.offset,
            });
            replay(&mut tables, payload, at.path, at.offset)
        })?;
    // A segment begun but still empty follows a closed one.
    let (number, next_sequence) = segments.position();
    if number != tables.history.open_number() {
        close_read(&mut tables, dir, next_sequence)?;
    }
    segments.take_closed();
    recovery.snapshot = snapshot_number;
    Ok((segments, recovery, tables))
}

/// The latest snapshot that start-up can begin from: taken at a segment
/// before the last, with a sound index file for every segment up to it.
/// Returns where to read from, the snapshot's segment (0: none), its state
/// and the summaries of the segments it covers.
fn usable_snapshot(
    dir: &Path,
    numbers: &[u64],
) -> Result<(ReadFrom, u64, Keyed, Vec<Closed>), StorageError> {
    let last = numbers.last().copied().unwrap_or(0);
    // Every segment's index header, read once, up to the first unsound one.
    let mut closed: Vec<Closed> = Vec::new();
    for &number in numbers.iter().filter(|&&number| number < last) {
        if number != count_from_one(closed.len()) {
            break;
        }
        let path = segment::segment_path(dir, number);
        let Ok(meta) = std::fs::metadata(&path) else {
            break;
        };
        match sidecar::read(dir, number, meta.len()) {
            Some(summary) => closed.push(summary),
            None => {
                tracing::warn!(
                    segment = %path.display(),
                    "journal: a closed segment's index is missing or damaged; rebuilt from the segments"
                );
                break;
            }
        }
    }
    let sound = count_from_one(closed.len()).saturating_sub(1);
    let Some((number, keyed)) = snapshot::latest(dir, |number| number <= sound && number < last)
    else {
        return Ok((ReadFrom::START, 0, Keyed::default(), Vec::new()));
    };
    closed.truncate(usize::try_from(number).unwrap_or(usize::MAX));
    let sequence = closed.last().map_or(1, |summary| summary.next_sequence);
    let from = ReadFrom {
        segment: number + 1,
        sequence,
    };
    Ok((from, number, keyed, closed))
}

/// The segment number of the `n`th closed summary plus one: segments are
/// numbered from 1.
fn count_from_one(n: usize) -> u64 {
    crate::convert::count_u64(n) + 1
}

/// Closes the open segment of `tables` at start: it is whole (recovery
/// refuses damage in any segment but the last) and followed by the frame
/// numbered `next_sequence`.
fn close_read(
    tables: &mut Tables<LogHistory>,
    dir: &Path,
    next_sequence: u64,
) -> Result<(), StorageError> {
    let path = segment::segment_path(dir, tables.history.open_number());
    let len = std::fs::metadata(&path)
        .map_err(|source| StorageError::Log {
            operation: "read a journal segment's length",
            path,
            source,
        })?
        .len();
    // Here, not on a thread of its own: a start that rebuilds many
    // segments' files would otherwise hold all their indexes at once.
    let number = tables.history.open_number();
    tables.history.close_open(len, next_sequence)?;
    snapshot::write(dir, number, &tables.keyed)
}

/// Applies one frame read back at start, as the writer applied it.
fn replay(
    tables: &mut Tables<LogHistory>,
    payload: &[u8],
    path: &Path,
    offset: u64,
) -> Result<(), StorageError> {
    let corrupt = |why| StorageError::LogCorrupt {
        path: path.to_path_buf(),
        offset,
        why,
    };
    match codec::decode(payload).map_err(corrupt)? {
        Entry::Batch(batch) => {
            // The writer checked the batch applies before writing it.
            tables
                .apply(&batch)
                .map_err(|_| corrupt("a commit that does not apply after the ones before it"))?;
        }
        Entry::Claims(claims) => {
            tables.claim_turn(&claims);
        }
        Entry::Rewrap(rows) => {
            tables.replace_sealed(&rows);
        }
    }
    Ok(())
}
