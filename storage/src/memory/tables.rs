//! The memory backend's tables, and every rule it writes and reads them
//! by: the same as the SQLite backend's SQL, case for case.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// The four tables of the schema, keyed as their primary keys are.
#[derive(Debug, Clone, Default)]
pub(super) struct Tables {
    /// Records without their riders, as the SQL backends read them back.
    pub(super) transactions: HashMap<TransactionId, JournalRecord>,
    /// Reversed original -> the reversal that holds it.
    pub(super) reversals: HashMap<TransactionId, TransactionId>,
    /// In token order, the order of the vault's primary key.
    pub(super) vault: BTreeMap<Token, SealedPan>,
    /// (merchant, key) -> the entry and the record that holds it.
    pub(super) idempotency: HashMap<(String, String), (IdempotencyEntry, TransactionId)>,
    /// (merchant, key) -> the pending claim: request digest, holder, when.
    pub(super) claims: HashMap<(String, String), ClaimRow>,
}

impl Tables {
    /// One turn of claims, planned as every backend plans it
    /// ([`plan_claims`]) and applied.
    pub(super) fn claim_turn(&mut self, claims: &[KeyClaim]) -> Vec<ClaimOutcome> {
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
        let mut written: HashMap<(String, String), TransactionId> = HashMap::new();
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

    /// Writes a batch as the SQLite writer does: a record whose idempotency
    /// key another request holds is left out whole; the rest as
    /// [`Tables::apply_written`] says.
    pub(super) fn apply(
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
        for record in batch {
            self.transactions.insert(
                record.id,
                JournalRecord {
                    sealed_pan: None,
                    idempotency: None,
                    ..record.clone()
                },
            );
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
            self.vault
                .entry(sealed.token)
                .or_insert_with(|| sealed.clone());
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

    /// Every committed transaction, with the reversal that holds it, in id
    /// order.
    pub(super) fn committed(&self) -> Vec<StoredTransaction> {
        let mut committed: Vec<StoredTransaction> = self
            .transactions
            .values()
            .map(|record| StoredTransaction {
                record: record.clone(),
                reversed_by: self.reversals.get(&record.id).copied(),
            })
            .collect();
        committed.sort_by_key(|stored| stored.record.id);
        committed
    }

    /// `WHERE terminal_id = ? AND stan = ? AND merchant_id = ?
    /// [AND transmitted_at = ?] AND acquirer IS ? AND created_at_ms >= ? AND
    /// kind IN (...) ORDER BY created_at_ms DESC LIMIT 1`. SQL leaves the
    /// order of two records made in the same millisecond open; this takes
    /// the larger id, as SQLite's index does.
    pub(super) fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> Option<JournalRecord> {
        self.transactions
            .values()
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
    pub(super) fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Vec<ReplayRow> {
        // A cursor before the window starts the window afresh, as the SQL
        // backends do.
        let after = after.filter(|cursor| cursor.at_ms >= since_ms);
        let mut rows: Vec<ReplayRow> = self
            .transactions
            .values()
            .filter(|record| {
                record.response_code.is_approved()
                    && matches!(
                        record.kind,
                        RecordKind::Authorization | RecordKind::Purchase
                    )
                    && record.created_at_ms >= since_ms
            })
            .filter_map(|record| {
                Some(ReplayRow {
                    id: record.id,
                    token: record.token?,
                    merchant_id: record.merchant_id,
                    amount: self.standing(record)?,
                    currency: record.currency,
                    at_ms: record.created_at_ms,
                })
            })
            .filter(|row| after.is_none_or(|cursor| row.cursor() > cursor))
            .collect();
        rows.sort_unstable_by_key(ReplayRow::cursor);
        rows.truncate(usize::try_from(rows_max).unwrap_or(usize::MAX));
        rows
    }
}

fn reversed_original(record: &JournalRecord) -> Option<TransactionId> {
    record.original_id.filter(|_| record.kind.is_reversal())
}

fn idempotency_key(entry: &IdempotencyEntry) -> (String, String) {
    (entry.merchant_id.clone(), entry.key.clone())
}
