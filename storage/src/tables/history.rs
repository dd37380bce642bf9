//! Where [`Tables`](super::Tables) keeps the records and the indexes that
//! grow with them (transactions and reversals by id, originals by acquirer
//! keys, approvals by time): the part of the journal that grows with
//! history, behind [`History`], so the rules that read and write it are
//! written once. The memory backend keeps every record in memory
//! ([`MemoryHistory`]); the segment log keeps them in its files and only
//! an index in memory (`crate::log`).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use protocol::domain::{Token, TransactionId};
use protocol::ids::MerchantId;
use protocol::{Amount, Currency};

use crate::error::StorageError;
use crate::record::{JournalRecord, ReplayCursor};

/// What the replay needs of an approval, besides the reversal against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Approval {
    pub(crate) cursor: ReplayCursor,
    pub(crate) token: Token,
    pub(crate) merchant_id: MerchantId,
    pub(crate) amount: Amount,
    pub(crate) currency: Currency,
}

/// How a record is entered in the indexes: its acquirer-key hash (a
/// record with a STAN) and, for an approval the replay counts, that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Indexed {
    pub(crate) original_hash: Option<u64>,
    pub(crate) approval: Option<Approval>,
}

/// The first reversal of an original: its id and the amount it gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reversal {
    pub(crate) id: TransactionId,
    pub(crate) amount_minor: u64,
}

/// The records and their indexes. A read may fail (the log reads its
/// files); writing happens only after the record is durable, so it cannot.
pub(crate) trait History {
    /// Whether a record with this id is held.
    fn holds(&self, id: TransactionId) -> Result<bool, StorageError>;
    /// Enters a record; its id is not held yet.
    fn insert(&mut self, record: &JournalRecord, indexed: Indexed);
    /// The record with this id, without its riders.
    fn record(&self, id: TransactionId) -> Result<Option<JournalRecord>, StorageError>;
    /// The reversal that holds `original`, if any.
    fn reversal(&self, original: TransactionId) -> Result<Option<Reversal>, StorageError>;
    /// Enters the reversal that holds `original`, which none held.
    fn set_reversal(&mut self, original: TransactionId, reversal: Reversal);
    /// The records entered under an acquirer-key hash (a collision brings
    /// records the caller filters out).
    fn originals(&self, hash: u64) -> Result<Vec<JournalRecord>, StorageError>;
    /// The approvals from `from` on in `(at_ms, id)` order, handed to
    /// `each` until it returns `false`.
    fn approvals(
        &self,
        from: Bound<ReplayCursor>,
        each: &mut dyn FnMut(Approval) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError>;
    /// How many records are held.
    fn records(&self) -> u64;
}

/// Every record in memory, boxed: the map's slots (and its spare
/// capacity) are then 24 bytes, not 424, and growing it moves that much,
/// not every record, while the writer holds the tables.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryHistory {
    transactions: HashMap<TransactionId, Box<JournalRecord>>,
    /// Reversed original -> the reversal that holds it.
    reversals: HashMap<TransactionId, TransactionId>,
    /// (acquirer-key hash, id) for every record with a STAN.
    originals: BTreeSet<(u64, TransactionId)>,
    /// The replay index, in the replay's `(created_at_ms, id)` order.
    approvals: BTreeSet<ReplayCursor>,
}

#[cfg(feature = "memory")]
impl MemoryHistory {
    /// Every committed transaction, with the reversal that holds it, in id
    /// order.
    pub(crate) fn committed(&self) -> Vec<crate::record::StoredTransaction> {
        let mut committed: Vec<crate::record::StoredTransaction> = self
            .transactions
            .values()
            .map(|record| crate::record::StoredTransaction {
                record: JournalRecord::clone(record),
                reversed_by: self.reversals.get(&record.id).copied(),
            })
            .collect();
        committed.sort_by_key(|stored| stored.record.id);
        committed
    }
}

impl History for MemoryHistory {
    fn holds(&self, id: TransactionId) -> Result<bool, StorageError> {
        Ok(self.transactions.contains_key(&id))
    }

    fn insert(&mut self, record: &JournalRecord, indexed: Indexed) {
        if let Some(hash) = indexed.original_hash {
            self.originals.insert((hash, record.id));
        }
        if let Some(approval) = indexed.approval {
            self.approvals.insert(approval.cursor);
        }
        self.transactions
            .insert(record.id, Box::new(without_riders(record)));
    }

    fn record(&self, id: TransactionId) -> Result<Option<JournalRecord>, StorageError> {
        Ok(self
            .transactions
            .get(&id)
            .map(|record| JournalRecord::clone(record)))
    }

    fn reversal(&self, original: TransactionId) -> Result<Option<Reversal>, StorageError> {
        Ok(self.reversals.get(&original).map(|id| Reversal {
            id: *id,
            amount_minor: self
                .transactions
                .get(id)
                .map_or(0, |reversal| reversal.amount.minor()),
        }))
    }

    fn set_reversal(&mut self, original: TransactionId, reversal: Reversal) {
        self.reversals.insert(original, reversal.id);
    }

    fn originals(&self, hash: u64) -> Result<Vec<JournalRecord>, StorageError> {
        let ids = (hash, TransactionId::from_bytes([0; 16]))
            ..=(hash, TransactionId::from_bytes([0xFF; 16]));
        Ok(self
            .originals
            .range(ids)
            .filter_map(|(_, id)| self.transactions.get(id))
            .map(|record| JournalRecord::clone(record))
            .collect())
    }

    fn approvals(
        &self,
        from: Bound<ReplayCursor>,
        each: &mut dyn FnMut(Approval) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        for cursor in self.approvals.range((from, Bound::Unbounded)) {
            let Some(record) = self.transactions.get(&cursor.id) else {
                continue;
            };
            let Some(approval) = Approval::of(record) else {
                continue;
            };
            if !each(approval)? {
                break;
            }
        }
        Ok(())
    }

    fn records(&self) -> u64 {
        crate::convert::count_u64(self.transactions.len())
    }
}

impl Approval {
    /// What the replay needs of a record with a token.
    pub(crate) fn of(record: &JournalRecord) -> Option<Approval> {
        Some(Approval {
            cursor: ReplayCursor {
                at_ms: record.created_at_ms,
                id: record.id,
            },
            token: record.token?,
            merchant_id: record.merchant_id,
            amount: record.amount,
            currency: record.currency,
        })
    }
}

/// A record as reads give it back: without its sealed PAN and idempotency
/// entry, which are stored apart (and not copied only to be dropped).
pub(crate) fn without_riders(record: &JournalRecord) -> JournalRecord {
    JournalRecord {
        id: record.id,
        created_at_ms: record.created_at_ms,
        channel: record.channel,
        kind: record.kind,
        mti: record.mti,
        processing_code: record.processing_code,
        amount: record.amount,
        currency: record.currency,
        merchant_id: record.merchant_id,
        terminal_id: record.terminal_id,
        stan: record.stan,
        rrn: record.rrn,
        transmitted_at: record.transmitted_at,
        token: record.token,
        bin: record.bin.clone(),
        last4: record.last4.clone(),
        response_code: record.response_code,
        auth_code: record.auth_code,
        reason: record.reason,
        original_id: record.original_id,
        acquirer: record.acquirer.clone(),
        timings: record.timings,
        sealed_pan: None,
        idempotency: None,
    }
}
