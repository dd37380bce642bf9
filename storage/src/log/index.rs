//! The segment log's [`History`]: the records stay in the segment files,
//! and memory holds only an index to them. Each record costs an entry by
//! id (the segment and offset of its frame), an acquirer-key entry if it
//! has a STAN, and, for an approval the replay counts, what the replay
//! needs of it; a read that needs the record reads its frame back
//! (`segment::read_frame`) and takes it out of the batch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::domain::TransactionId;

use super::codec::{self, Entry};
use super::frames::{Frame, SegmentIndex};
use super::segment;
use super::sidecar::{self, ApprovalRows, Closed};
use crate::error::StorageError;
use crate::record::{JournalRecord, ReplayCursor};
use crate::tables::{Approval, History, Indexed, Reversal, without_riders};

/// The index of the records: the open segment's in memory, each closed
/// segment's in its index file with a summary in memory.
#[derive(Debug)]
pub(super) struct LogHistory {
    dir: PathBuf,
    /// The frame being applied: where the records entered now are.
    frame: Frame,
    /// The segment `open` indexes.
    open_number: u64,
    open: SegmentIndex,
    /// Closed segments whose index file a thread of its own is writing
    /// ([`LogHistory::close_open_in_background`]): read from memory, as the
    /// open one is, until their file is there.
    closing: Vec<Closing>,
    /// Closed segments, ascending.
    closed: Vec<Closed>,
}

/// A closed segment whose index file is being written.
#[derive(Debug)]
struct Closing {
    number: u64,
    index: Arc<SegmentIndex>,
    /// The thread writing the file, which ends with its summary; `None`
    /// once the write has failed (the segment then stays indexed in
    /// memory).
    writing: Option<std::thread::JoinHandle<Result<Closed, StorageError>>>,
}

impl LogHistory {
    /// The history of `closed` segments, the next one open and empty.
    pub(super) fn new(dir: &Path, closed: Vec<Closed>) -> LogHistory {
        let open_number = closed.last().map_or(1, |last| last.number + 1);
        LogHistory {
            dir: dir.to_path_buf(),
            frame: Frame {
                segment: open_number,
                offset: 0,
            },
            open_number,
            open: SegmentIndex::default(),
            closing: Vec::new(),
            closed,
        }
    }

    /// Where the records of the frame about to be applied are.
    pub(super) fn at(&mut self, frame: Frame) {
        self.frame = frame;
    }

    /// The segment the in-memory index is for.
    pub(super) fn open_number(&self) -> u64 {
        self.open_number
    }

    /// Records of the open segment, indexed in memory.
    pub(super) fn open_records(&self) -> u64 {
        crate::convert::count_u64(self.open.ids.len())
    }

    /// The closed segments' summaries.
    pub(super) fn closed(&self) -> &[Closed] {
        &self.closed
    }

    /// Closes the open segment, `segment_len` bytes long and followed by
    /// the frame numbered `next_sequence`: writes its index file, keeps
    /// only its summary, and opens an empty index for the next.
    pub(super) fn close_open(
        &mut self,
        segment_len: u64,
        next_sequence: u64,
    ) -> Result<(), StorageError> {
        let closed = sidecar::write(
            &self.dir,
            self.open_number,
            segment_len,
            next_sequence,
            &self.open,
        )?;
        tracing::debug!(
            segment = self.open_number,
            records = closed.records(),
            "journal: wrote a closed segment's index"
        );
        self.closed.push(closed);
        self.open = SegmentIndex::default();
        self.open_number += 1;
        Ok(())
    }

    /// [`LogHistory::close_open`], with the index file written by a thread
    /// of its own: sorting and writing a 64 MiB segment's index took
    /// 150-180 ms, which every commit waited for on the writer's thread.
    /// Until the file is written its index is read from memory; a write
    /// that fails leaves it there for good (the segment is synced, and the
    /// next start rebuilds the file).
    pub(super) fn close_open_in_background(
        &mut self,
        segment_len: u64,
        next_sequence: u64,
    ) -> Result<(), StorageError> {
        self.settle(false);
        let index = Arc::new(std::mem::take(&mut self.open));
        let number = self.open_number;
        let (dir, for_thread) = (self.dir.clone(), Arc::clone(&index));
        let started = std::thread::Builder::new()
            .name("journal-index".to_owned())
            .spawn(move || sidecar::write(&dir, number, segment_len, next_sequence, &for_thread));
        let writing = match started {
            Ok(writing) => writing,
            Err(source) => {
                // No thread: written here, as before.
                tracing::warn!(%source, "journal: no thread for a segment's index; written inline");
                let closed = sidecar::write(&self.dir, number, segment_len, next_sequence, &index)?;
                self.closed.push(closed);
                self.open_number += 1;
                return Ok(());
            }
        };
        self.closing.push(Closing {
            number,
            index,
            writing: Some(writing),
        });
        self.open_number += 1;
        Ok(())
    }

    /// Takes the summaries of the index files written since; with `wait`,
    /// waits for those still being written.
    pub(super) fn settle(&mut self, wait: bool) {
        let mut still = Vec::new();
        for mut closing in std::mem::take(&mut self.closing) {
            let finished = closing
                .writing
                .as_ref()
                .is_some_and(|writing| wait || writing.is_finished());
            let Some(writing) = closing.writing.take_if(|_| finished) else {
                still.push(closing);
                continue;
            };
            match writing.join() {
                Ok(Ok(closed)) => {
                    tracing::debug!(
                        segment = closing.number,
                        records = closed.records(),
                        "journal: wrote a closed segment's index"
                    );
                    self.closed.push(closed);
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, segment = closing.number, "journal: a closed segment's index file could not be written; its index stays in memory until a restart rebuilds the file");
                    still.push(closing);
                }
                Err(_) => {
                    tracing::error!(
                        segment = closing.number,
                        "journal: the thread writing a closed segment's index panicked; its index stays in memory until a restart rebuilds the file"
                    );
                    still.push(closing);
                }
            }
        }
        self.closed.sort_by_key(|closed| closed.number);
        self.closing = still;
    }

    /// The indexes held in memory: the open segment's, then those of the
    /// segments being closed, latest first.
    fn in_memory(&self) -> impl Iterator<Item = &SegmentIndex> {
        std::iter::once(&self.open).chain(self.closing.iter().rev().map(|c| c.index.as_ref()))
    }

    /// Where record `id`'s frame is, if it is held.
    fn frame_of(&self, id: TransactionId) -> Result<Option<Frame>, StorageError> {
        for index in self.in_memory() {
            if let Some(packed) = index.ids.get(&id) {
                return Ok(Some(Frame::unpack(*packed)));
            }
        }
        // Ids begin with their creation time, so a segment's id range
        // leaves out all but the segments written about then.
        for closed in self.closed.iter().rev() {
            if let Some(offset) = closed.frame_of(id)? {
                return Ok(Some(Frame {
                    segment: closed.number,
                    offset,
                }));
            }
        }
        Ok(None)
    }

    /// Whether the record `id` was written from `frame` (a record refused
    /// for its idempotency key is in its frame but was not).
    pub(super) fn holds_at(&self, id: TransactionId, frame: Frame) -> Result<bool, StorageError> {
        Ok(self.frame_of(id)? == Some(frame))
    }

    /// The record `id` in `frame`.
    fn read(&self, frame: Frame, id: TransactionId) -> Result<JournalRecord, StorageError> {
        let payload = segment::read_frame(&self.dir, frame.segment, frame.offset)?;
        let corrupt = |why| StorageError::LogCorrupt {
            path: segment::segment_path(&self.dir, frame.segment),
            offset: frame.offset,
            why,
        };
        match codec::decode(&payload).map_err(corrupt)? {
            Entry::Batch(batch) => batch
                .iter()
                .find(|record| record.id == id)
                .map(without_riders)
                .ok_or_else(|| corrupt("a record the index names is not in its frame")),
            _ => Err(corrupt("a record the index names is not in its frame")),
        }
    }
}

impl History for LogHistory {
    fn holds(&self, id: TransactionId) -> Result<bool, StorageError> {
        Ok(self.frame_of(id)?.is_some())
    }

    fn insert(&mut self, record: &JournalRecord, indexed: Indexed) {
        if let Some(hash) = indexed.original_hash {
            self.open.originals.insert((hash, record.id));
        }
        if let Some(approval) = indexed.approval {
            self.open.approvals.insert(approval.cursor, approval);
        }
        self.open.ids.insert(record.id, self.frame.pack());
    }

    fn record(&self, id: TransactionId) -> Result<Option<JournalRecord>, StorageError> {
        self.frame_of(id)?
            .map(|frame| self.read(frame, id))
            .transpose()
    }

    fn reversal(&self, original: TransactionId) -> Result<Option<Reversal>, StorageError> {
        for index in self.in_memory() {
            if let Some(reversal) = index.reversals.get(&original) {
                return Ok(Some(*reversal));
            }
        }
        for closed in self.closed.iter().rev() {
            if let Some(reversal) = closed.reversal(original)? {
                return Ok(Some(reversal));
            }
        }
        Ok(None)
    }

    fn set_reversal(&mut self, original: TransactionId, reversal: Reversal) {
        self.open.reversals.insert(original, reversal);
    }

    fn originals(&self, hash: u64) -> Result<Vec<JournalRecord>, StorageError> {
        let ids = (hash, TransactionId::from_bytes([0; 16]))
            ..=(hash, TransactionId::from_bytes([0xFF; 16]));
        let mut records = Vec::new();
        for index in self.in_memory() {
            for (_, id) in index.originals.range(ids.clone()) {
                if let Some(packed) = index.ids.get(id) {
                    records.push(self.read(Frame::unpack(*packed), *id)?);
                }
            }
        }
        for closed in &self.closed {
            for id in closed.originals(hash)? {
                if let Some(offset) = closed.frame_of(id)? {
                    let frame = Frame {
                        segment: closed.number,
                        offset,
                    };
                    records.push(self.read(frame, id)?);
                }
            }
        }
        Ok(records)
    }

    /// A merge of the segments' approvals in `(at_ms, id)` order. A
    /// closed segment joins the merge only once the merge reaches its
    /// earliest approval, so a page costs the segments it spans, not
    /// every segment since `from`.
    fn approvals(
        &self,
        from: Bound<ReplayCursor>,
        each: &mut dyn FnMut(Approval) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let from_ms = match from {
            Bound::Included(cursor) | Bound::Excluded(cursor) => cursor.at_ms,
            Bound::Unbounded => 0,
        };
        let mut waiting: Vec<&Closed> = self
            .closed
            .iter()
            .filter(|closed| closed.approvals_reach(from_ms))
            .collect();
        // Latest first, so the next to join is popped off the end.
        waiting.sort_by_key(|closed| Reverse(closed.approvals_from_ms()));
        let mut sources: Vec<Source<'_>> = self
            .in_memory()
            .map(|index| Source::Open(index.approvals.range((from, Bound::Unbounded))))
            .collect();
        let mut heads: BinaryHeap<Reverse<(ReplayCursor, usize)>> = BinaryHeap::new();
        let mut rows: Vec<Option<Approval>> = Vec::new();
        let pull = |sources: &mut Vec<Source<'_>>,
                    rows: &mut Vec<Option<Approval>>,
                    heads: &mut BinaryHeap<Reverse<(ReplayCursor, usize)>>,
                    source: usize|
         -> Result<(), StorageError> {
            let row = sources[source].next_row()?;
            if let Some(row) = row {
                heads.push(Reverse((row.cursor, source)));
            }
            if source == rows.len() {
                rows.push(row);
            } else {
                rows[source] = row;
            }
            Ok(())
        };
        for source in 0..sources.len() {
            pull(&mut sources, &mut rows, &mut heads, source)?;
        }
        loop {
            while let Some(next) = waiting.last()
                && heads
                    .peek()
                    .is_none_or(|Reverse((head, _))| next.approvals_from_ms() <= head.at_ms)
            {
                sources.push(Source::Closed(Box::new(next.approvals_after(from)?)));
                waiting.pop();
                let source = sources.len() - 1;
                pull(&mut sources, &mut rows, &mut heads, source)?;
            }
            let Some(Reverse((_, source))) = heads.pop() else {
                return Ok(());
            };
            let Some(row) = rows[source].take() else {
                return Ok(());
            };
            if !each(row)? {
                return Ok(());
            }
            pull(&mut sources, &mut rows, &mut heads, source)?;
        }
    }

    fn records(&self) -> u64 {
        let closed: u64 = self.closed.iter().map(Closed::records).sum();
        let in_memory: usize = self.in_memory().map(|index| index.ids.len()).sum();
        closed + crate::convert::count_u64(in_memory)
    }
}

/// Where the merge of approvals reads from.
enum Source<'a> {
    Open(std::collections::btree_map::Range<'a, ReplayCursor, Approval>),
    Closed(Box<ApprovalRows>),
}

impl Source<'_> {
    fn next_row(&mut self) -> Result<Option<Approval>, StorageError> {
        match self {
            Source::Open(range) => Ok(range.next().map(|(_, approval)| *approval)),
            Source::Closed(rows) => rows.next_row(),
        }
    }
}
