//! One journal batch as one statement: [`INSERT_BATCH`] and
//! [`INSERT_BATCH_WHOLE`], whose four data-modifying CTEs each insert one
//! table's rows from `UNNEST` arrays, and [`BatchRows`], the batch laid out
//! as those arrays.
//!
//! The statement and its binds change together (its 39 parameters are
//! numbered and bound here, in one order), and neither depends on how the
//! writer then decides each record's outcome, so they live apart from it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use sqlx::Postgres;
use sqlx::postgres::PgArguments;

use protocol::domain::TransactionId;

use crate::convert::to_i64;
use crate::record::JournalRecord;

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// The batch statement, with `$taken` after the inserts into
/// `transactions`, `reversals` and `idempotency`: what a row whose key is
/// already taken does. The four data-modifying CTEs all run to completion
/// whether or not the final SELECT reads them; it reads the counts of rows
/// each insert wrote. The foreign keys from `reversals` and `idempotency` to
/// `transactions` are checked at the end of the statement, when the rows of
/// the first CTE are in place. A vault row already there is always left
/// alone: a card sealed again (after a restart, or by another node) holds
/// the same PAN.
macro_rules! batch_statement {
    ($taken:literal) => {
        concat!(
            "WITH written_transactions AS (\
                INSERT INTO transactions (",
            transaction_columns!(),
            ") SELECT * FROM UNNEST(\
                    $1::bytea[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
                    $7::int8[], $8::int8[], $9::text[], $10::text[], $11::text[], $12::text[], \
                    $13::text[], $14::bytea[], $15::text[], $16::text[], $17::text[], $18::text[], \
                    $19::text[], $20::bytea[], $21::int8[], $22::int8[], $23::int8[], $39::text[]) ",
            $taken,
            " RETURNING 1\
            ), written_reversals AS (\
                INSERT INTO reversals (original_id, reversal_id, created_at_ms) \
                SELECT * FROM UNNEST($24::bytea[], $25::bytea[], $26::int8[]) ",
            $taken,
            " RETURNING 1\
            ), written_vault AS (\
                INSERT INTO vault (token, key_id, nonce, ciphertext, created_at_ms) \
                SELECT * FROM UNNEST($27::bytea[], $28::int8[], $29::bytea[], $30::bytea[], $31::int8[]) \
                ON CONFLICT (token) DO NOTHING RETURNING 1\
            ), written_idempotency AS (\
                INSERT INTO idempotency (merchant_id, idempotency_key, request_hash, response_json, \
                    status, transaction_id, created_at_ms) \
                SELECT * FROM UNNEST($32::text[], $33::text[], $34::bytea[], $35::text[], $36::int8[], \
                    $37::bytea[], $38::int8[]) ",
            $taken,
            " RETURNING 1\
            ) SELECT \
                (SELECT count(*) FROM written_transactions), \
                (SELECT count(*) FROM written_reversals), \
                (SELECT count(*) FROM written_vault), \
                (SELECT count(*) FROM written_idempotency)"
        )
    };
}

/// The whole batch in one statement, inside the writer's transaction. A
/// row whose id, original or key is taken is not written, and the writer
/// then asks the tables who holds it before it commits.
pub(super) const INSERT_BATCH: &str = batch_statement!("ON CONFLICT DO NOTHING");

/// The whole batch in one statement that is its own transaction (no BEGIN,
/// no COMMIT: one round trip), for a batch without idempotency keys: every
/// record and every first reversal of an original is written, the usual
/// case, when each record's outcome follows from the batch alone. An id or
/// an original already taken (a retried batch, a clash, a reversal that
/// lost to an earlier batch) fails the statement with [`TAKEN`], nothing
/// written, and the writer writes the batch again with [`INSERT_BATCH`].
/// Without `ON CONFLICT` the server also skips a probe of each unique index
/// before each row (about 5% of its CPU on a batch of new cards, `perf` on
/// the backend).
pub(super) const INSERT_BATCH_WHOLE: &str = batch_statement!("");

/// The SQLSTATE [`INSERT_BATCH_WHOLE`] fails with when an id or an original
/// is taken (`unique_violation`; the vault's inserts never raise it).
pub(super) const TAKEN: &str = "23505";

/// The original a record reverses, if it claims one.
pub(super) fn reversed_original(record: &JournalRecord) -> Option<TransactionId> {
    record.original_id.filter(|_| record.kind.is_reversal())
}

/// A batch as the column arrays [`INSERT_BATCH`] binds, borrowing from the
/// records.
///
/// Reversals and idempotency entries are reduced to the first of each
/// original or key in batch order, which is who wins inside a batch, as in
/// the embedded backend. Their rows, and the vault's, are sent sorted by
/// key: two writer connections inserting overlapping keys then take their
/// row locks in the same order and wait for each other instead of
/// deadlocking.
pub(super) struct BatchRows<'b> {
    batch: &'b [JournalRecord],
    /// Each reversed original and the first reversal of it in the batch.
    pub(super) reversals: HashMap<TransactionId, TransactionId>,
    /// Each idempotency key and the first record in the batch carrying it.
    pub(super) keys: HashMap<(&'b str, &'b str), TransactionId>,
    reversal_rows: Vec<&'b JournalRecord>,
    vault_rows: Vec<&'b JournalRecord>,
    key_rows: Vec<&'b JournalRecord>,
}

impl<'b> BatchRows<'b> {
    pub(super) fn new(batch: &'b [JournalRecord]) -> BatchRows<'b> {
        let mut reversals = HashMap::new();
        let mut reversal_rows = Vec::new();
        let mut keys = HashMap::new();
        let mut key_rows = Vec::new();
        let mut vault_rows: Vec<&JournalRecord> = Vec::new();
        for record in batch {
            if let Some(original) = reversed_original(record)
                && let Entry::Vacant(first) = reversals.entry(original)
            {
                first.insert(record.id);
                reversal_rows.push(record);
            }
            if let Some(entry) = &record.idempotency
                && let Entry::Vacant(first) =
                    keys.entry((entry.merchant_id.as_str(), entry.key.as_str()))
            {
                first.insert(record.id);
                key_rows.push(record);
            }
            if record.sealed_pan.is_some() {
                vault_rows.push(record);
            }
        }
        reversal_rows.sort_by_key(|r| r.original_id);
        key_rows.sort_by_key(|r| {
            r.idempotency
                .as_ref()
                .map(|e| (e.merchant_id.as_str(), e.key.as_str()))
        });
        // The same card sealed twice holds the same PAN: one row is enough.
        vault_rows.sort_by_key(|r| r.sealed_pan.as_ref().map(|s| s.token));
        vault_rows.dedup_by_key(|r| r.sealed_pan.as_ref().map(|s| s.token));
        BatchRows {
            batch,
            reversals,
            keys,
            reversal_rows,
            vault_rows,
            key_rows,
        }
    }

    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        let batch = self.batch;
        let text = |f: fn(&'q JournalRecord) -> &'q str| batch.iter().map(f).collect::<Vec<_>>();
        let optional_text =
            |f: fn(&'q JournalRecord) -> Option<&'q str>| batch.iter().map(f).collect::<Vec<_>>();
        let number = |f: fn(&JournalRecord) -> i64| batch.iter().map(f).collect::<Vec<_>>();
        let bytes =
            |f: fn(&'q JournalRecord) -> Option<&'q [u8]>| batch.iter().map(f).collect::<Vec<_>>();
        let query = query
            .bind(
                batch
                    .iter()
                    .map(|r| r.id.as_bytes().as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(number(|r| to_i64(r.created_at_ms)))
            .bind(text(|r| r.channel.as_str()))
            .bind(text(|r| r.kind.as_str()))
            .bind(text(|r| r.mti.as_str()))
            .bind(optional_text(|r| {
                r.processing_code.as_ref().map(|t| t.as_str())
            }))
            .bind(number(|r| to_i64(r.amount.minor())))
            .bind(number(|r| i64::from(r.currency.numeric())))
            .bind(text(|r| r.merchant_id.as_str()))
            .bind(text(|r| r.terminal_id.as_str()))
            .bind(optional_text(|r| r.stan.as_ref().map(|t| t.as_str())))
            .bind(optional_text(|r| r.rrn.as_ref().map(|t| t.as_str())))
            .bind(optional_text(|r| {
                r.transmitted_at.as_ref().map(|t| t.as_str())
            }))
            .bind(bytes(|r| r.token.as_ref().map(|t| t.as_bytes().as_slice())))
            .bind(optional_text(|r| r.bin.as_deref()))
            .bind(optional_text(|r| r.last4.as_deref()))
            .bind(text(|r| r.response_code.as_str()))
            .bind(optional_text(|r| r.auth_code.as_ref().map(|t| t.as_str())))
            .bind(optional_text(|r| r.reason.map(|reason| reason.as_str())))
            .bind(bytes(|r| {
                r.original_id.as_ref().map(|id| id.as_bytes().as_slice())
            }))
            .bind(number(|r| i64::from(r.timings.decode_us)))
            .bind(number(|r| i64::from(r.timings.decide_us)))
            .bind(number(|r| i64::from(r.timings.vault_us)));

        let reversals = &self.reversal_rows;
        let query = query
            .bind(
                reversals
                    .iter()
                    .map(|r| r.original_id.as_ref().map(|id| id.as_bytes().as_slice()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                reversals
                    .iter()
                    .map(|r| r.id.as_bytes().as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                reversals
                    .iter()
                    .map(|r| to_i64(r.created_at_ms))
                    .collect::<Vec<_>>(),
            );

        let sealed: Vec<_> = self
            .vault_rows
            .iter()
            .filter_map(|r| r.sealed_pan.as_ref().map(|s| (s, r.created_at_ms)))
            .collect();
        let query = query
            .bind(
                sealed
                    .iter()
                    .map(|(s, _)| s.token.as_bytes().as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                sealed
                    .iter()
                    .map(|(s, _)| i64::from(s.key_id))
                    .collect::<Vec<_>>(),
            )
            .bind(
                sealed
                    .iter()
                    .map(|(s, _)| s.nonce.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                sealed
                    .iter()
                    .map(|(s, _)| s.ciphertext.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(sealed.iter().map(|(_, at)| to_i64(*at)).collect::<Vec<_>>());

        let keyed: Vec<_> = self
            .key_rows
            .iter()
            .filter_map(|r| r.idempotency.as_ref().map(|e| (e, *r)))
            .collect();
        query
            .bind(
                keyed
                    .iter()
                    .map(|(e, _)| e.merchant_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                keyed
                    .iter()
                    .map(|(e, _)| e.key.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                keyed
                    .iter()
                    .map(|(e, _)| e.request_hash.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                keyed
                    .iter()
                    .map(|(e, _)| e.response_json.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                keyed
                    .iter()
                    .map(|(e, _)| i64::from(e.status))
                    .collect::<Vec<_>>(),
            )
            .bind(
                keyed
                    .iter()
                    .map(|(_, r)| r.id.as_bytes().as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                keyed
                    .iter()
                    .map(|(_, r)| to_i64(r.created_at_ms))
                    .collect::<Vec<_>>(),
            )
            // The acquirer column came with migration 2, so it is bound last
            // ($39) and the older parameters keep their numbers.
            .bind(optional_text(|r| r.acquirer.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_batch_statement_binds_every_column() {
        // 24 transaction columns (the 24th, acquirer, is $39), 3 reversal,
        // 5 vault, 7 idempotency.
        for statement in [INSERT_BATCH, INSERT_BATCH_WHOLE] {
            assert!(statement.contains("$38::int8[]"));
            assert!(statement.contains("$39::text[]"));
            assert!(!statement.contains("$40"));
        }
        assert_eq!(transaction_columns!().split(',').count(), 24);
    }
}
