//! What the segment log indexes a record by: where its frame is
//! ([`Frame`]), and the in-memory indexes of the open segment's records
//! ([`SegmentIndex`]), which become a closed segment's index file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use protocol::domain::TransactionId;

use crate::record::ReplayCursor;
use crate::tables::{Approval, Reversal};

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
    pub(super) fn pack(self) -> u64 {
        (self.segment << OFFSET_BITS) | (self.offset & ((1 << OFFSET_BITS) - 1))
    }

    pub(super) fn unpack(packed: u64) -> Frame {
        Frame {
            segment: packed >> OFFSET_BITS,
            offset: packed & ((1 << OFFSET_BITS) - 1),
        }
    }
}

/// The offset part of a packed [`Frame`].
pub(super) fn offset_of(packed: u64) -> u64 {
    Frame::unpack(packed).offset
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
