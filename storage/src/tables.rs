//! The journal's tables in memory, and every rule they are written and read
//! by: the same as the SQL backends', case for case. Two backends hold their
//! state here: the test backend (`memory`), and the segment log (`log`),
//! which rebuilds them from its segments at start and answers every read
//! from them. The conformance tests (`storage/tests/conformance.rs`) hold
//! both, SQLite and PostgreSQL to the same answers.
//!
//! Every read is an index lookup or an ordered range, never a scan of all
//! records: transactions and reversals by id, originals by their acquirer
//! keys, approvals for the replay by `(created_at_ms, id)`, claims and
//! stored answers by (merchant, key), the vault by token with a count per
//! key id.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use protocol::Amount;
use protocol::domain::{Token, TransactionId};

use crate::claim_plan::{ClaimRow, ClaimWrite, KeyHeld, plan_claims};
use crate::convert::count_u64;
use crate::error::StorageError;
use crate::record::{
    AppendOutcome, ClaimOutcome, IdempotencyEntry, JournalRecord, KeyClaim, OriginalKeys,
    RecordKind, ReplayCursor, ReplayRow, SealedPan, StoredTransaction, key_taken_by, records_kept,
    with_refused,
};
use crate::rewrap::Rewrapped;

/// A merchant and an idempotency key digest: the primary key of the
/// idempotency and claims tables.
type KeyOf = (String, String);

/// The tables of the schema, keyed as their primary keys are, and the
/// secondary indexes the reads use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tables {
    /// Records without their riders, as the SQL backends read them back.
    /// Boxed: the map's slots (and its spare capacity) are then 24 bytes,
    /// not 424, and growing it moves that much, not every record, while
    /// the writer holds the tables.
    transactions: HashMap<TransactionId, Box<JournalRecord>>,
    /// Reversed original -> the reversal that holds it.
    reversals: HashMap<TransactionId, TransactionId>,
    /// In token order, the order of the vault's primary key.
    vault: BTreeMap<Token, SealedPan>,
    /// Vault rows per key id, kept as rows come and move.
    vault_keys: BTreeMap<u32, u64>,
    /// (merchant, key) -> the entry and the record that holds it.
    idempotency: HashMap<KeyOf, (IdempotencyEntry, TransactionId)>,
    /// (merchant, key) -> the pending claim: request digest, holder, when.
    claims: HashMap<KeyOf, ClaimRow>,
    /// The acquirer-key index: (a hash of (terminal, STAN, merchant,
    /// acquirer), id) for every record with a STAN. A hash rather than
    /// the keys themselves keeps the index at 24 bytes per record; a
    /// collision only adds a record that the lookup's filter drops.
    originals: BTreeSet<(u64, TransactionId)>,
    hasher: RandomState,
    /// The replay index: approved authorizations and purchases with a
    /// token, in the replay's `(created_at_ms, id)` order.
    approvals: BTreeSet<ReplayCursor>,
    /// The latest `created_at_ms` of any record.
    latest_ms: Option<u64>,
}

impl Tables {
    /// One turn of claims, planned as every backend plans it
    /// ([`plan_claims`]) and applied.
    pub(crate) fn claim_turn(&mut self, claims: &[KeyClaim]) -> Vec<ClaimOutcome> {
        let held = claims
            .iter()
            .map(|claim| {
                let (merchant_id, key) = claim.key();
                let at = (merchant_id.to_owned(), key.to_owned());
                KeyHeld {
                    answer: self.idempotency.get(&at).map(|(entry, _)| entry.clone()),
                    claim: self.claims.get(&at).copied(),
                }
            })
            .collect();
        let plan = plan_claims(claims, held);
        for write in plan.writes {
            match write {
                ClaimWrite::Insert(merchant_id, key, row)
                | ClaimWrite::Replace(merchant_id, key, row, _) => {
                    self.claims
                        .insert((merchant_id.to_owned(), key.to_owned()), row);
                }
                ClaimWrite::Delete(merchant_id, key, _) => {
                    self.claims
                        .remove(&(merchant_id.to_owned(), key.to_owned()));
                }
            }
        }
        plan.outcomes
    }

    /// For each record of `batch`, who keeps it from being written, as the
    /// SQLite writer decides it: the key's claim, else its stored answer,
    /// else an earlier record of the batch with the key.
    fn keys_taken(&self, batch: &[JournalRecord]) -> Vec<Option<TransactionId>> {
        let mut written: HashMap<KeyOf, TransactionId> = HashMap::new();
        batch
            .iter()
            .map(|record| {
                let key = idempotency_key(record.idempotency.as_ref()?);
                if let Some(first) = written.get(&key) {
                    return Some(*first);
                }
                let taken = key_taken_by(
                    record.id,
                    self.claims.get(&key).map(|(_, by, _)| *by),
                    self.idempotency.get(&key).map(|(_, by)| *by),
                );
                if taken.is_none() {
                    written.insert(key, record.id);
                }
                taken
            })
            .collect()
    }

    /// Refuses a batch that [`Tables::apply`] would fail, without changing
    /// anything: a record whose id is taken, or two records with one id,
    /// among those it would write. Lets a backend check a batch before it
    /// puts it on disk, and then apply it knowing it will not fail.
    pub(crate) fn check(&self, batch: &[JournalRecord]) -> Result<(), StorageError> {
        let taken = self.keys_taken(batch);
        let kept = records_kept(batch, &taken);
        self.check_ids(kept.as_deref().unwrap_or(batch))
    }

    fn check_ids(&self, batch: &[JournalRecord]) -> Result<(), StorageError> {
        let mut ids = HashSet::with_capacity(batch.len());
        let fresh = batch
            .iter()
            .filter(|record| !self.transactions.contains_key(&record.id) && ids.insert(record.id))
            .count();
        if fresh != batch.len() {
            return Err(StorageError::RowCount {
                table: "transactions",
                expected: batch.len(),
                written: count_u64(fresh),
            });
        }
        Ok(())
    }

    /// Writes a batch as the SQLite writer does: a record whose idempotency
    /// key another request holds is left out whole; the rest as
    /// [`Tables::apply_written`] says.
    pub(crate) fn apply(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        let taken = self.keys_taken(batch);
        let kept = records_kept(batch, &taken);
        let written = self.apply_written(kept.as_deref().unwrap_or(batch))?;
        Ok(with_refused(taken, written))
    }

    /// Writes a batch as the SQLite writer does: every record, then the
    /// reversals, the vault entries and the idempotency entries, each
    /// "insert unless the key is there", in batch order.
    fn apply_written(
        &mut self,
        batch: &[JournalRecord],
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        // A taken id fails the whole batch, as the primary key does, before
        // anything is written.
        self.check_ids(batch)?;
        for record in batch {
            self.insert_record(record);
        }

        let mut outcomes = vec![AppendOutcome::Recorded; batch.len()];
        for record in batch {
            if let Some(original) = reversed_original(record) {
                self.reversals.entry(original).or_insert(record.id);
            }
        }
        for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            if let Some(by) = reversed_original(record).and_then(|o| self.reversals.get(&o))
                && *by != record.id
            {
                *outcome = AppendOutcome::AlreadyReversed { by: *by };
            }
        }

        for sealed in batch.iter().filter_map(|record| record.sealed_pan.as_ref()) {
            if let std::collections::btree_map::Entry::Vacant(row) = self.vault.entry(sealed.token)
            {
                row.insert(sealed.clone());
                *self.vault_keys.entry(sealed.key_id).or_insert(0) += 1;
            }
        }

        // Every key was found free by `keys_taken`: each entry is stored,
        // and completes its record's claim.
        for record in batch {
            if let Some(entry) = &record.idempotency {
                let key = idempotency_key(entry);
                if self
                    .claims
                    .get(&key)
                    .is_some_and(|(_, by, _)| *by == record.id)
                {
                    self.claims.remove(&key);
                }
                self.idempotency.insert(key, (entry.clone(), record.id));
            }
        }
        Ok(outcomes)
    }

    /// Stores one record, without its riders, and enters it in the indexes.
    fn insert_record(&mut self, record: &JournalRecord) {
        if let Some(stan) = record.stan {
            let hash = self.original_hash(
                &record.terminal_id,
                &stan,
                &record.merchant_id,
                record.acquirer.as_deref(),
            );
            self.originals.insert((hash, record.id));
        }
        if record.token.is_some()
            && record.response_code.is_approved()
            && matches!(
                record.kind,
                RecordKind::Authorization | RecordKind::Purchase
            )
        {
            self.approvals.insert(ReplayCursor {
                at_ms: record.created_at_ms,
                id: record.id,
            });
        }
        self.latest_ms = self.latest_ms.max(Some(record.created_at_ms));
        self.transactions
            .insert(record.id, Box::new(without_riders(record)));
    }

    fn original_hash(
        &self,
        terminal_id: &protocol::ids::TerminalId,
        stan: &protocol::ids::Stan,
        merchant_id: &protocol::ids::MerchantId,
        acquirer: Option<&str>,
    ) -> u64 {
        self.hasher
            .hash_one((terminal_id, stan, merchant_id, acquirer))
    }

    /// The record with this id and the reversal that holds it.
    pub(crate) fn transaction(&self, id: TransactionId) -> Option<StoredTransaction> {
        self.transactions.get(&id).map(|record| StoredTransaction {
            record: JournalRecord::clone(record),
            reversed_by: self.reversals.get(&id).copied(),
        })
    }

    /// Every committed transaction, with the reversal that holds it, in id
    /// order.
    pub(crate) fn committed(&self) -> Vec<StoredTransaction> {
        let mut committed: Vec<StoredTransaction> = self
            .transactions
            .keys()
            .filter_map(|id| self.transaction(*id))
            .collect();
        committed.sort_by_key(|stored| stored.record.id);
        committed
    }

    /// How many records are held.
    pub(crate) fn records(&self) -> usize {
        self.transactions.len()
    }

    /// `WHERE terminal_id = ? AND stan = ? AND merchant_id = ?
    /// [AND transmitted_at = ?] AND acquirer IS ? AND created_at_ms >= ? AND
    /// kind IN (...) ORDER BY created_at_ms DESC LIMIT 1`. SQL leaves the
    /// order of two records made in the same millisecond open; this takes
    /// the larger id, as SQLite's index does.
    pub(crate) fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> Option<JournalRecord> {
        let hash = self.original_hash(
            &keys.terminal_id,
            &keys.stan,
            &keys.merchant_id,
            keys.acquirer.as_deref(),
        );
        let ids = (hash, TransactionId::from_bytes([0; 16]))
            ..=(hash, TransactionId::from_bytes([0xFF; 16]));
        self.originals
            .range(ids)
            .filter_map(|(_, id)| self.transactions.get(id).map(Box::as_ref))
            .filter(|record| {
                record.terminal_id == keys.terminal_id
                    && record.stan == Some(keys.stan)
                    && record.merchant_id == keys.merchant_id
                    && record.acquirer == keys.acquirer
                    && keys
                        .transmitted_at
                        .is_none_or(|at| record.transmitted_at == Some(at))
                    && record.created_at_ms >= created_since_ms
                    && kinds.contains(&record.kind)
            })
            .max_by_key(|record| (record.created_at_ms, record.id))
            .cloned()
    }

    /// The stored answer for a merchant's key.
    pub(crate) fn idempotent_response(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Option<IdempotencyEntry> {
        self.idempotency
            .get(&(merchant_id.to_owned(), key.to_owned()))
            .map(|(entry, _)| entry.clone())
    }

    /// Whether any record was created at or after `since_ms`.
    pub(crate) fn recorded_since(&self, since_ms: u64) -> bool {
        self.latest_ms.is_some_and(|latest| latest >= since_ms)
    }

    /// What stands of an approval: its amount less what its first reversal
    /// gave back (at most all of it); `None` when nothing stands. The SQL
    /// backends' replay query computes the same.
    fn standing(&self, original: &JournalRecord) -> Option<Amount> {
        let given_back = self
            .reversals
            .get(&original.id)
            .and_then(|reversal| self.transactions.get(reversal))
            .map_or(0, |reversal| reversal.amount.minor());
        original
            .amount
            .minor()
            .checked_sub(given_back)
            .filter(|&minor| minor > 0)
            .and_then(Amount::from_minor)
    }

    /// The replay query: approved authorizations and purchases with a token
    /// and what stands of each (one wholly reversed is left out), after the
    /// cursor in `(created_at_ms, id)` order.
    pub(crate) fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Vec<ReplayRow> {
        use std::ops::Bound;
        // A cursor before the window starts the window afresh, as the SQL
        // backends do.
        let from = match after.filter(|cursor| cursor.at_ms >= since_ms) {
            Some(cursor) => Bound::Excluded(cursor),
            None => Bound::Included(ReplayCursor {
                at_ms: since_ms,
                id: TransactionId::from_bytes([0; 16]),
            }),
        };
        self.approvals
            .range((from, Bound::Unbounded))
            .filter_map(|cursor| {
                let record = self.transactions.get(&cursor.id)?;
                Some(ReplayRow {
                    id: record.id,
                    token: record.token?,
                    merchant_id: record.merchant_id,
                    amount: self.standing(record)?,
                    currency: record.currency,
                    at_ms: record.created_at_ms,
                })
            })
            .take(usize::try_from(rows_max).unwrap_or(usize::MAX))
            .collect()
    }

    /// The vault entry for a token.
    pub(crate) fn sealed_pan(&self, token: Token) -> Option<SealedPan> {
        self.vault.get(&token).cloned()
    }

    /// How many vault rows each key id seals, ascending by key id.
    pub(crate) fn vault_rows_per_key(&self) -> Vec<(u32, u64)> {
        self.vault_keys
            .iter()
            .filter(|(_, rows)| **rows > 0)
            .map(|(key_id, rows)| (*key_id, *rows))
            .collect()
    }

    /// Vault rows after `after` in token order, skipping `skip_key_id`.
    pub(crate) fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> Vec<SealedPan> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.vault
            .range((from, Bound::Unbounded))
            .map(|(_, sealed)| sealed)
            .filter(|sealed| skip_key_id != Some(sealed.key_id))
            .take(usize::try_from(rows_max).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// The compare-and-set of the SQL backends' rewrap: only a row still
    /// as it was read is replaced. Returns how many were.
    pub(crate) fn replace_sealed(&mut self, rows: &[Rewrapped]) -> u64 {
        let mut moved = 0;
        for row in rows {
            if let Some(stored) = self.vault.get_mut(&row.sealed.token)
                && stored.key_id == row.old_key_id
                && stored.nonce == row.old_nonce
            {
                if let Some(count) = self.vault_keys.get_mut(&stored.key_id) {
                    *count = count.saturating_sub(1);
                }
                *self.vault_keys.entry(row.sealed.key_id).or_insert(0) += 1;
                *stored = row.sealed.clone();
                moved += 1;
            }
        }
        moved
    }
}

/// A record as reads give it back: without its sealed PAN and idempotency
/// entry, which are stored apart (and not copied only to be dropped).
fn without_riders(record: &JournalRecord) -> JournalRecord {
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

fn reversed_original(record: &JournalRecord) -> Option<TransactionId> {
    record.original_id.filter(|_| record.kind.is_reversal())
}

fn idempotency_key(entry: &IdempotencyEntry) -> KeyOf {
    (entry.merchant_id.clone(), entry.key.clone())
}
