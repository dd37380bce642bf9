//! The segment log's [`History`]: the records stay in the segment files,
//! and memory holds only an index to them. Each record costs an entry by
//! id (the segment and offset of its frame), an acquirer-key entry if it
//! has a STAN, and, for an approval the replay counts, what the replay
//! needs of it; a read that needs the record reads its frame back
//! (`segment::read_frame`) and takes it out of the batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use protocol::domain::TransactionId;

use super::codec::{self, Entry};
use super::segment;
use crate::error::StorageError;
use crate::record::{JournalRecord, ReplayCursor};
use crate::tables::{Approval, History, Indexed, Reversal, without_riders};

/// Where a frame is: its segment's number and its offset in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) segment: u64,
    pub(super) offset: u64,
}

/// Bits of a packed [`Frame`] that hold the offset: a segment is far below
/// 2^40 bytes (one TiB), and the number takes the 24 above (16 million
/// segments).
const OFFSET_BITS: u32 = 40;

impl Frame {
    fn pack(self) -> u64 {
        (self.segment << OFFSET_BITS) | (self.offset & ((1 << OFFSET_BITS) - 1))
    }

    fn unpack(packed: u64) -> Frame {
        Frame {
            segment: packed >> OFFSET_BITS,
            offset: packed & ((1 << OFFSET_BITS) - 1),
        }
    }
}

/// The index of the records in memory, and where their frames are.
#[derive(Debug)]
pub(super) struct LogHistory {
    dir: PathBuf,
    /// The frame being applied: where the records entered now are.
    frame: Frame,
    index: SegmentIndex,
}

/// The indexes of the records of some segments.
#[derive(Debug, Default)]
pub(super) struct SegmentIndex {
    /// Id -> its frame, packed.
    pub(super) ids: HashMap<TransactionId, u64>,
    /// Reversed original -> its first reversal.
    pub(super) reversals: HashMap<TransactionId, Reversal>,
    /// (acquirer-key hash, id).
    pub(super) originals: BTreeSet<(u64, TransactionId)>,
    /// The replay's rows, in its order.
    pub(super) approvals: BTreeMap<ReplayCursor, Approval>,
}

impl LogHistory {
    pub(super) fn new(dir: &Path) -> LogHistory {
        LogHistory {
            dir: dir.to_path_buf(),
            frame: Frame {
                segment: 0,
                offset: 0,
            },
            index: SegmentIndex::default(),
        }
    }

    /// Where the records of the frame about to be applied are.
    pub(super) fn at(&mut self, frame: Frame) {
        self.frame = frame;
    }

    /// Whether the record `id` was written from `frame` (a record refused
    /// for its idempotency key is in its frame but was not).
    pub(super) fn holds_at(&self, id: TransactionId, frame: Frame) -> Result<bool, StorageError> {
        Ok(self.index.ids.get(&id) == Some(&frame.pack()))
    }

    /// The record `id` in the frame at `packed`.
    fn read(&self, packed: u64, id: TransactionId) -> Result<JournalRecord, StorageError> {
        let frame = Frame::unpack(packed);
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
        Ok(self.index.ids.contains_key(&id))
    }

    fn insert(&mut self, record: &JournalRecord, indexed: Indexed) {
        if let Some(hash) = indexed.original_hash {
            self.index.originals.insert((hash, record.id));
        }
        if let Some(approval) = indexed.approval {
            self.index.approvals.insert(approval.cursor, approval);
        }
        self.index.ids.insert(record.id, self.frame.pack());
    }

    fn record(&self, id: TransactionId) -> Result<Option<JournalRecord>, StorageError> {
        self.index
            .ids
            .get(&id)
            .map(|packed| self.read(*packed, id))
            .transpose()
    }

    fn reversal(&self, original: TransactionId) -> Result<Option<Reversal>, StorageError> {
        Ok(self.index.reversals.get(&original).copied())
    }

    fn set_reversal(&mut self, original: TransactionId, reversal: Reversal) {
        self.index.reversals.insert(original, reversal);
    }

    fn originals(&self, hash: u64) -> Result<Vec<JournalRecord>, StorageError> {
        let ids = (hash, TransactionId::from_bytes([0; 16]))
            ..=(hash, TransactionId::from_bytes([0xFF; 16]));
        self.index
            .originals
            .range(ids)
            .filter_map(|(_, id)| Some((*self.index.ids.get(id)?, *id)))
            .map(|(packed, id)| self.read(packed, id))
            .collect()
    }

    fn approvals(
        &self,
        from: Bound<ReplayCursor>,
        each: &mut dyn FnMut(Approval) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        for approval in self.index.approvals.range((from, Bound::Unbounded)) {
            if !each(*approval.1)? {
                break;
            }
        }
        Ok(())
    }

    fn records(&self) -> u64 {
        crate::convert::count_u64(self.index.ids.len())
    }
}
