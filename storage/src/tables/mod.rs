//! The journal's tables, and every rule they are written and read by: the
//! same as the SQL backends', case for case. Two backends hold their state
//! here: the test backend (`memory`), with every record in memory, and the
//! segment log (`log`), whose records stay in its segments behind an index
//! ([`History`] is the part that grows with the records; [`Keyed`] what is
//! bounded by cards and keys, held whole by both). The conformance tests (`storage/tests/conformance.rs`) hold
//! both, SQLite and PostgreSQL to the same answers.
//!
//! Every read is an index lookup or an ordered range, never a scan of all
//! records: transactions and reversals by id, originals by their acquirer
//! keys, approvals for the replay by `(created_at_ms, id)`, claims and
//! stored answers by (merchant, key), the vault by token with a count per
//! key id.

mod history;

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
use crate::rewrap::Rewrapped;

pub(crate) use history::{Approval, History, Indexed, MemoryHistory, Reversal, without_riders};

/// A merchant and an idempotency key digest: the primary key of the
/// idempotency and claims tables.
pub(crate) type KeyOf = (String, String);

/// The tables of the schema, keyed as their primary keys are, and the
/// secondary indexes the reads use: the records and what grows with them
/// in `history`, and beside it what is bounded by cards and keys, not by
/// records (`keyed`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tables<H = MemoryHistory> {
    pub(crate) keyed: Keyed,
    pub(crate) history: H,
}

/// What every backend keeps whole in memory: the vault (bounded by the
/// cards seen), the idempotency entries and claims (bounded by the keys
/// merchants send: entries are kept as long as the journal, as the SQL
/// backends keep their rows), and the latest record's time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Keyed {
    /// In token order, the order of the vault's primary key.
    pub(crate) vault: BTreeMap<Token, SealedPan>,
    /// Vault rows per key id, kept as rows come and move.
    pub(crate) vault_keys: BTreeMap<u32, u64>,
    /// (merchant, key) -> the entry and the record that holds it.
    pub(crate) idempotency: HashMap<KeyOf, (IdempotencyEntry, TransactionId)>,
    /// (merchant, key) -> the pending claim: request digest, holder, when.
    pub(crate) claims: HashMap<KeyOf, ClaimRow>,
    /// The latest `created_at_ms` of any record.
    pub(crate) latest_ms: Option<u64>,
}

/// The acquirer-key index's hash of (terminal, STAN, merchant, acquirer):
/// FNV-1a, fixed so that the segment log can keep it in files. The index
/// is ordered, not a hash table, so a chosen collision only adds records
/// that the lookup's filter drops.
pub(crate) fn original_hash(
    terminal_id: &protocol::ids::TerminalId,
    stan: &protocol::ids::Stan,
    merchant_id: &protocol::ids::MerchantId,
    acquirer: Option<&str>,
) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    eat(terminal_id.as_bytes());
    eat(stan.as_bytes());
    eat(merchant_id.as_bytes());
    match acquirer {
        // The length first, so no acquirer name runs into another field.
        Some(name) => {
            eat(&[1]);
            eat(&count_u64(name.len()).to_le_bytes());
            eat(name.as_bytes());
        }
        None => eat(&[0]),
    }
    hash
}

impl<H: History> Tables<H> {
    /// Tables holding what `keyed` holds, over `history`.
    pub(crate) fn new(keyed: Keyed, history: H) -> Tables<H> {
        Tables { keyed, history }
    }

    /// One turn of claims, planned as every backend plans it
    /// ([`plan_claims`]) and applied.
    pub(crate) fn claim_turn(&mut self, claims: &[KeyClaim]) -> Vec<ClaimOutcome> {
        let keyed = &mut self.keyed;
        let held = claims
            .iter()
            .map(|claim| {
                let (merchant_id, key) = claim.key();
                let at = (merchant_id.to_owned(), key.to_owned());
                KeyHeld {
                    answer: keyed.idempotency.get(&at).map(|(entry, _)| entry.clone()),
                    claim: keyed.claims.get(&at).copied(),
                }
            })
            .collect();
        let plan = plan_claims(claims, held);
        for write in plan.writes {
            match write {
                ClaimWrite::Insert(merchant_id, key, row)
                | ClaimWrite::Replace(merchant_id, key, row, _) => {
                    keyed
                        .claims
                        .insert((merchant_id.to_owned(), key.to_owned()), row);
                }
                ClaimWrite::Delete(merchant_id, key, _) => {
                    keyed
                        .claims
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
                    self.keyed.claims.get(&key).map(|(_, by, _)| *by),
                    self.keyed.idempotency.get(&key).map(|(_, by)| *by),
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
        let mut fresh = 0;
        for record in batch {
            if !self.history.holds(record.id)? && ids.insert(record.id) {
                fresh += 1;
            }
        }
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
        // anything is written; so does a reversal's original that cannot
        // be read, before anything is.
        self.check_ids(batch)?;
        let mut held = Vec::new();
        for record in batch {
            if let Some(original) = reversed_original(record) {
                held.push(self.history.reversal(original)?.map(|r| r.id));
            }
        }
        for record in batch {
            self.insert_record(record);
        }

        let mut outcomes = vec![AppendOutcome::Recorded; batch.len()];
        let mut held = held.into_iter();
        let mut first: HashMap<TransactionId, TransactionId> = HashMap::new();
        for (record, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            let Some(original) = reversed_original(record) else {
                continue;
            };
            let by = match held.next().flatten() {
                Some(by) => by,
                None => *first.entry(original).or_insert_with(|| {
                    self.history.set_reversal(
                        original,
                        Reversal {
                            id: record.id,
                            amount_minor: record.amount.minor(),
                        },
                    );
                    record.id
                }),
            };
            if by != record.id {
                *outcome = AppendOutcome::AlreadyReversed { by };
            }
        }

        let keyed = &mut self.keyed;
        for sealed in batch.iter().filter_map(|record| record.sealed_pan.as_ref()) {
            if let std::collections::btree_map::Entry::Vacant(row) = keyed.vault.entry(sealed.token)
            {
                row.insert(sealed.clone());
                *keyed.vault_keys.entry(sealed.key_id).or_insert(0) += 1;
            }
        }

        // Every key was found free by `keys_taken`: each entry is stored,
        // and completes its record's claim.
        for record in batch {
            if let Some(entry) = &record.idempotency {
                let key = idempotency_key(entry);
                if keyed
                    .claims
                    .get(&key)
                    .is_some_and(|(_, by, _)| *by == record.id)
                {
                    keyed.claims.remove(&key);
                }
                keyed.idempotency.insert(key, (entry.clone(), record.id));
            }
        }
        Ok(outcomes)
    }

    /// Stores one record, without its riders, and enters it in the indexes.
    fn insert_record(&mut self, record: &JournalRecord) {
        let hash = record.stan.map(|stan| {
            original_hash(
                &record.terminal_id,
                &stan,
                &record.merchant_id,
                record.acquirer.as_deref(),
            )
        });
        let approval = (record.response_code.is_approved()
            && matches!(
                record.kind,
                RecordKind::Authorization | RecordKind::Purchase
            ))
        .then(|| Approval::of(record))
        .flatten();
        self.keyed.latest_ms = self.keyed.latest_ms.max(Some(record.created_at_ms));
        self.history.insert(
            record,
            Indexed {
                original_hash: hash,
                approval,
            },
        );
    }

    /// The record with this id and the reversal that holds it.
    pub(crate) fn transaction(
        &self,
        id: TransactionId,
    ) -> Result<Option<StoredTransaction>, StorageError> {
        let Some(record) = self.history.record(id)? else {
            return Ok(None);
        };
        Ok(Some(StoredTransaction {
            record,
            reversed_by: self.history.reversal(id)?.map(|reversal| reversal.id),
        }))
    }

    /// How many records are held.
    pub(crate) fn records(&self) -> u64 {
        self.history.records()
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
    ) -> Result<Option<JournalRecord>, StorageError> {
        let hash = original_hash(
            &keys.terminal_id,
            &keys.stan,
            &keys.merchant_id,
            keys.acquirer.as_deref(),
        );
        Ok(self
            .history
            .originals(hash)?
            .into_iter()
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
            .max_by_key(|record| (record.created_at_ms, record.id)))
    }

    /// The stored answer for a merchant's key.
    pub(crate) fn idempotent_response(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Option<IdempotencyEntry> {
        self.keyed
            .idempotency
            .get(&(merchant_id.to_owned(), key.to_owned()))
            .map(|(entry, _)| entry.clone())
    }

    /// Whether any record was created at or after `since_ms`.
    pub(crate) fn recorded_since(&self, since_ms: u64) -> bool {
        self.keyed
            .latest_ms
            .is_some_and(|latest| latest >= since_ms)
    }

    /// The replay query: approved authorizations and purchases with a token
    /// and what stands of each (amount less what its first reversal gave
    /// back, at most all of it; one wholly reversed is left out), after the
    /// cursor in `(created_at_ms, id)` order. The SQL backends' replay query
    /// computes the same.
    pub(crate) fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Result<Vec<ReplayRow>, StorageError> {
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
        let rows_max = usize::try_from(rows_max).unwrap_or(usize::MAX);
        let mut rows = Vec::new();
        if rows_max == 0 {
            return Ok(rows);
        }
        self.history.approvals(from, &mut |approval| {
            let given_back = self
                .history
                .reversal(approval.cursor.id)?
                .map_or(0, |reversal| reversal.amount_minor);
            let standing = approval
                .amount
                .minor()
                .checked_sub(given_back)
                .filter(|&minor| minor > 0)
                .and_then(Amount::from_minor);
            if let Some(amount) = standing {
                rows.push(ReplayRow {
                    id: approval.cursor.id,
                    token: approval.token,
                    merchant_id: approval.merchant_id,
                    amount,
                    currency: approval.currency,
                    at_ms: approval.cursor.at_ms,
                });
            }
            Ok(rows.len() < rows_max)
        })?;
        Ok(rows)
    }

    /// The vault entry for a token.
    pub(crate) fn sealed_pan(&self, token: Token) -> Option<SealedPan> {
        self.keyed.vault.get(&token).cloned()
    }

    /// How many vault rows each key id seals, ascending by key id.
    pub(crate) fn vault_rows_per_key(&self) -> Vec<(u32, u64)> {
        self.keyed
            .vault_keys
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
        self.keyed
            .vault
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
        let keyed = &mut self.keyed;
        let mut moved = 0;
        for row in rows {
            if let Some(stored) = keyed.vault.get_mut(&row.sealed.token)
                && stored.key_id == row.old_key_id
                && stored.nonce == row.old_nonce
            {
                if let Some(count) = keyed.vault_keys.get_mut(&stored.key_id) {
                    *count = count.saturating_sub(1);
                }
                *keyed.vault_keys.entry(row.sealed.key_id).or_insert(0) += 1;
                *stored = row.sealed.clone();
                moved += 1;
            }
        }
        moved
    }
}

fn reversed_original(record: &JournalRecord) -> Option<TransactionId> {
    record.original_id.filter(|_| record.kind.is_reversal())
}

fn idempotency_key(entry: &IdempotencyEntry) -> KeyOf {
    (entry.merchant_id.clone(), entry.key.clone())
}
