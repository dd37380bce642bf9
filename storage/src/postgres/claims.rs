//! Idempotency claims on a writer connection: made or given up in a
//! transaction of their own ([`write_claims`]), checked by a batch before
//! its records are written ([`claimed_by_others`]), and completed by it
//! ([`complete_claims`]).
//!
//! A turn of claims is planned as on every backend
//! ([`plan_claims`](crate::claim_plan::plan_claims)), each step one
//! statement for the whole turn. Writers of several nodes run at once, so
//! a turn locks its keys' claim rows (`FOR UPDATE`) before it plans, and a
//! first claim is an insert that gives way to one made at the same moment
//! by another writer (that claim is then in flight). Whatever a race leaves, a
//! record whose key's answer is already stored is refused by the batch
//! (`idempotency`'s primary key decides): at most one record per key is
//! written.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection, Row};

use protocol::domain::TransactionId;

use crate::claim_plan::{ClaimRow, ClaimWrite, KeyHeld, plan_claims};
use crate::columns::{Columns, idempotency_entry_from};
use crate::convert::to_i64;
use crate::error::StorageError;
use crate::record::{ClaimOutcome, JournalRecord, KeyClaim};

/// The stored answer under a key; the read pool's lookup too.
pub(crate) const IDEMPOTENT_RESPONSE: &str = "\
    SELECT merchant_id, idempotency_key, request_hash, response_json, status \
    FROM idempotency WHERE merchant_id = $1 AND idempotency_key = $2";

/// The stored answers under a turn's keys.
const ANSWERS_OF: &str = "\
    SELECT i.merchant_id, i.idempotency_key, i.request_hash, i.response_json, i.status \
    FROM idempotency AS i \
    JOIN UNNEST($1::text[], $2::text[]) AS k (merchant_id, idempotency_key) \
      ON i.merchant_id = k.merchant_id AND i.idempotency_key = k.idempotency_key";

/// The claims on a turn's keys, locked until the turn commits, in key order
/// so two writers lock them in the same order.
const CLAIMS_OF_LOCKED: &str = "\
    SELECT c.merchant_id, c.idempotency_key, c.request_hash, c.claimed_by, c.claimed_at_ms \
    FROM idempotency_claims AS c \
    JOIN UNNEST($1::text[], $2::text[]) AS k (merchant_id, idempotency_key) \
      ON c.merchant_id = k.merchant_id AND c.idempotency_key = k.idempotency_key \
    ORDER BY c.merchant_id, c.idempotency_key \
    FOR UPDATE OF c";

/// New claims; a key claimed meanwhile by another writer is left to it,
/// and missing from what this returns.
const CLAIMS_INSERT: &str = "\
    INSERT INTO idempotency_claims \
        (merchant_id, idempotency_key, request_hash, claimed_by, claimed_at_ms) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::int8[]) \
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING \
    RETURNING merchant_id, idempotency_key";

const CLAIM_TAKE_OVER: &str = "UPDATE idempotency_claims \
     SET request_hash = $3, claimed_by = $4, claimed_at_ms = $5 \
     WHERE merchant_id = $1 AND idempotency_key = $2 AND claimed_by = $6";

const CLAIM_RELEASE: &str = "DELETE FROM idempotency_claims \
     WHERE merchant_id = $1 AND idempotency_key = $2 AND claimed_by = $3";

/// Who holds the claim on each key a batch carries.
const CLAIM_HOLDERS: &str = "\
    SELECT c.merchant_id, c.idempotency_key, c.claimed_by \
    FROM idempotency_claims AS c \
    JOIN UNNEST($1::text[], $2::text[]) AS k (merchant_id, idempotency_key) \
      ON c.merchant_id = k.merchant_id AND c.idempotency_key = k.idempotency_key";

/// The claims of a batch's written records, completed.
const CLAIMS_COMPLETE: &str = "\
    DELETE FROM idempotency_claims AS c \
    USING UNNEST($1::text[], $2::text[], $3::bytea[]) AS k (merchant_id, idempotency_key, claimed_by) \
    WHERE c.merchant_id = k.merchant_id AND c.idempotency_key = k.idempotency_key \
      AND c.claimed_by = k.claimed_by";

/// Records refused for their key after they were inserted.
const DELETE_REFUSED: &str = "DELETE FROM transactions WHERE id = ANY($1::bytea[])";

/// Makes or gives up `claims`, in order, in one transaction: the keys'
/// answers and claims are read by one statement each (the claims locked),
/// the turn is planned ([`plan_claims`]), and new claims are written by one
/// statement.
pub(super) async fn write_claims(
    conn: &mut PgConnection,
    claims: &[KeyClaim],
) -> Result<Vec<ClaimOutcome>, StorageError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(StorageError::database("begin idempotency claims"))?;
    // Claims do not wait for the WAL flush: a claim lost in a crash is one
    // whose request had written nothing (its record commits after it, and
    // that commit flushes the WAL up to it); the batch's checks, not the
    // claim, are what keep a second record of a key out. Visible to every
    // session at once all the same.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await
        .map_err(StorageError::database("commit idempotency claims unsynced"))?;
    let (merchants, keys): (Vec<&str>, Vec<&str>) = claims.iter().map(KeyClaim::key).unzip();
    let mut answers = HashMap::new();
    for row in sqlx::query(ANSWERS_OF)
        .bind(&merchants)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::database("read idempotency entries"))?
    {
        let entry = idempotency_entry_from(&row)?;
        answers.insert((entry.merchant_id.clone(), entry.key.clone()), entry);
    }
    let mut held_claims = HashMap::new();
    for row in sqlx::query(CLAIMS_OF_LOCKED)
        .bind(&merchants)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::database("read idempotency claims"))?
    {
        let columns = Columns::new(&row, "idempotency_claims");
        let key: (String, String) = (columns.get("merchant_id")?, columns.get("idempotency_key")?);
        let claim: ClaimRow = (
            columns.bytes("request_hash")?,
            columns.id("claimed_by")?,
            columns.number("claimed_at_ms")?,
        );
        held_claims.insert(key, claim);
    }
    let held = claims
        .iter()
        .map(|claim| {
            let (merchant_id, key) = claim.key();
            let at = (merchant_id.to_owned(), key.to_owned());
            KeyHeld {
                answer: answers.get(&at).cloned(),
                claim: held_claims.get(&at).copied(),
            }
        })
        .collect();
    let mut plan = plan_claims(claims, held);

    let mut inserts: Vec<(&str, &str, ClaimRow)> = Vec::new();
    // Claims that turn out to be another writer's after all: in flight.
    let mut lost: Vec<TransactionId> = Vec::new();
    for write in &plan.writes {
        match *write {
            ClaimWrite::Insert(merchant_id, key, row) => inserts.push((merchant_id, key, row)),
            ClaimWrite::Replace(merchant_id, key, (hash, by, at), was) => {
                let replaced = sqlx::query(CLAIM_TAKE_OVER)
                    .bind(merchant_id)
                    .bind(key)
                    .bind(hash.as_slice())
                    .bind(by.as_bytes().as_slice())
                    .bind(to_i64(at))
                    .bind(was.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(StorageError::database("take over an idempotency claim"))?
                    .rows_affected();
                if replaced == 0 {
                    lost.push(by);
                }
            }
            ClaimWrite::Delete(merchant_id, key, was) => {
                sqlx::query(CLAIM_RELEASE)
                    .bind(merchant_id)
                    .bind(key)
                    .bind(was.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(StorageError::database("release an idempotency claim"))?;
            }
        }
    }
    if !inserts.is_empty() {
        // In key order, as everywhere: no two writers deadlock.
        inserts.sort_by_key(|(merchant_id, key, _)| (*merchant_id, *key));
        let inserted = sqlx::query(CLAIMS_INSERT)
            .bind(inserts.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(inserts.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(inserts.iter().map(|r| r.2.0.as_slice()).collect::<Vec<_>>())
            .bind(
                inserts
                    .iter()
                    .map(|r| r.2.1.as_bytes().as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(inserts.iter().map(|r| to_i64(r.2.2)).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await
            .map_err(StorageError::database("write idempotency claims"))?;
        if inserted.len() != inserts.len() {
            let mut written = std::collections::HashSet::new();
            for row in &inserted {
                let columns = Columns::new(row, "idempotency_claims");
                written.insert((
                    columns.get::<String>("merchant_id")?,
                    columns.get::<String>("idempotency_key")?,
                ));
            }
            lost.extend(
                inserts
                    .iter()
                    .filter(|(m, k, _)| !written.contains(&((*m).to_owned(), (*k).to_owned())))
                    .map(|(_, _, (_, by, _))| *by),
            );
        }
    }
    tx.commit()
        .await
        .map_err(StorageError::database("commit idempotency claims"))?;
    if !lost.is_empty() {
        for (claim, outcome) in claims.iter().zip(plan.outcomes.iter_mut()) {
            if let KeyClaim::Claim(claim) = claim
                && lost.contains(&claim.claimed_by)
                && matches!(outcome, ClaimOutcome::Claimed { .. })
            {
                *outcome = ClaimOutcome::InFlight;
            }
        }
    }
    Ok(plan.outcomes)
}

/// For each record of `batch`, the other request whose claim is on its
/// key, if any: such a record is not written.
pub(super) async fn claimed_by_others(
    conn: &mut PgConnection,
    batch: &[JournalRecord],
) -> Result<Vec<Option<TransactionId>>, StorageError> {
    let (merchants, keys): (Vec<&str>, Vec<&str>) = batch
        .iter()
        .filter_map(|r| r.idempotency.as_ref())
        .map(|e| (e.merchant_id.as_str(), e.key.as_str()))
        .unzip();
    let rows = sqlx::query(CLAIM_HOLDERS)
        .bind(merchants)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::database("look up idempotency claims"))?;
    let mut holders = HashMap::with_capacity(rows.len());
    for row in &rows {
        let corrupt = |column| StorageError::Corrupt {
            table: "idempotency_claims",
            column,
        };
        let merchant: String = row.try_get(0).map_err(|_| corrupt("merchant_id"))?;
        let key: String = row.try_get(1).map_err(|_| corrupt("idempotency_key"))?;
        let by = Columns::new(row, "idempotency_claims").id("claimed_by")?;
        holders.insert((merchant, key), by);
    }
    Ok(batch
        .iter()
        .map(|record| {
            let entry = record.idempotency.as_ref()?;
            holders
                .get(&(entry.merchant_id.clone(), entry.key.clone()))
                .copied()
                .filter(|by| *by != record.id)
        })
        .collect())
}

/// Completes the claims of the `written` records that carry a key.
pub(super) async fn complete_claims(
    conn: &mut PgConnection,
    written: &[&JournalRecord],
) -> Result<(), StorageError> {
    let mut merchants = Vec::with_capacity(written.len());
    let mut keys = Vec::with_capacity(written.len());
    let mut ids = Vec::with_capacity(written.len());
    for record in written {
        if let Some(entry) = &record.idempotency {
            merchants.push(entry.merchant_id.as_str());
            keys.push(entry.key.as_str());
            ids.push(record.id.as_bytes().as_slice());
        }
    }
    sqlx::query(CLAIMS_COMPLETE)
        .bind(merchants)
        .bind(keys)
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database("complete idempotency claims"))?;
    Ok(())
}

/// Removes records inserted by this batch that lost their key to another
/// record's stored answer: nothing of them stands.
pub(super) async fn delete_refused(
    conn: &mut PgConnection,
    refused: &[TransactionId],
) -> Result<(), StorageError> {
    let ids: Vec<&[u8]> = refused.iter().map(|id| id.as_bytes().as_slice()).collect();
    sqlx::query(DELETE_REFUSED)
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database(
            "remove records refused for their key",
        ))?;
    Ok(())
}
