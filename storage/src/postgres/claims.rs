//! Idempotency claims on a writer connection: made or given up in a
//! transaction of their own ([`write_claims`]), checked by a batch before
//! its records are written ([`claimed_by_others`]), and completed by it
//! ([`complete_claims`]).
//!
//! Writers of several nodes run at once, so a claim locks the key's claim
//! row (`FOR UPDATE`) before it decides, and a first claim is an insert that
//! gives way to one made at the same moment. Whatever a race leaves, a
//! record whose key's answer is already stored is refused by the batch
//! (`idempotency`'s primary key decides): at most one record per key is
//! written.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection, Row};

use protocol::domain::TransactionId;

use crate::columns::{Columns, idempotency_entry_from};
use crate::convert::to_i64;
use crate::error::StorageError;
use crate::record::{ClaimOutcome, ClaimStep, IdempotencyClaim, JournalRecord, KeyClaim};

/// The stored answer under a key; the read pool's lookup too.
pub(crate) const IDEMPOTENT_RESPONSE: &str = "\
    SELECT merchant_id, idempotency_key, request_hash, response_json, status \
    FROM idempotency WHERE merchant_id = $1 AND idempotency_key = $2";

const CLAIM_HELD: &str = "SELECT claimed_by, claimed_at_ms FROM idempotency_claims \
     WHERE merchant_id = $1 AND idempotency_key = $2 FOR UPDATE";

const CLAIM_INSERT: &str = "INSERT INTO idempotency_claims \
     (merchant_id, idempotency_key, request_hash, claimed_by, claimed_at_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id, idempotency_key) DO NOTHING";

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

/// Makes or gives up `claims`, in order, in one transaction.
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
    // In key order, as batches send their rows: two writers claiming the
    // same keys then lock them in the same order and wait for each other
    // instead of deadlocking. Stable, so one key's claims keep their order.
    let mut in_key_order: Vec<(usize, &KeyClaim)> = claims.iter().enumerate().collect();
    in_key_order.sort_by_key(|(_, claim)| claim.key());
    let mut outcomes = vec![None; claims.len()];
    for (at, claim) in in_key_order {
        let outcome = match claim {
            KeyClaim::Claim(claim) => make_claim(&mut tx, claim).await?,
            KeyClaim::Release {
                merchant_id,
                key,
                claimed_by,
            } => {
                sqlx::query(CLAIM_RELEASE)
                    .bind(merchant_id.as_str())
                    .bind(key.as_str())
                    .bind(claimed_by.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(StorageError::database("release an idempotency claim"))?;
                ClaimOutcome::Released
            }
        };
        if let Some(slot) = outcomes.get_mut(at) {
            *slot = Some(outcome);
        }
    }
    tx.commit()
        .await
        .map_err(StorageError::database("commit idempotency claims"))?;
    // Every slot is filled; a missing one would show as a short answer,
    // which the journal refuses.
    Ok(outcomes.into_iter().flatten().collect())
}

async fn make_claim(
    conn: &mut PgConnection,
    claim: &IdempotencyClaim,
) -> Result<ClaimOutcome, StorageError> {
    let answered = sqlx::query(IDEMPOTENT_RESPONSE)
        .bind(claim.merchant_id.as_str())
        .bind(claim.key.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StorageError::database("read an idempotency entry"))?;
    if let Some(row) = &answered {
        return Ok(ClaimOutcome::Answered(idempotency_entry_from(row)?));
    }
    let held = sqlx::query(CLAIM_HELD)
        .bind(claim.merchant_id.as_str())
        .bind(claim.key.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StorageError::database("read an idempotency claim"))?
        .map(|row| {
            let columns = Columns::new(&row, "idempotency_claims");
            Ok::<_, StorageError>((columns.id("claimed_by")?, columns.number("claimed_at_ms")?))
        })
        .transpose()?;
    let step = claim.against(held);
    let (sql, old) = match step {
        ClaimStep::Insert => (CLAIM_INSERT, None),
        ClaimStep::TakeOver(old) => (CLAIM_TAKE_OVER, Some(old)),
        ClaimStep::Keep | ClaimStep::InFlight => return Ok(step.outcome()),
    };
    let mut query = sqlx::query(sql)
        .bind(claim.merchant_id.as_str())
        .bind(claim.key.as_str())
        .bind(claim.request_hash.as_slice())
        .bind(claim.claimed_by.as_bytes().as_slice())
        .bind(to_i64(claim.claimed_at_ms));
    if let Some(old) = &old {
        query = query.bind(old.as_bytes().as_slice());
    }
    let written = query
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database("write an idempotency claim"))?
        .rows_affected();
    // No row: another writer's claim, made at the same moment, came first.
    Ok(if written == 1 {
        step.outcome()
    } else {
        ClaimOutcome::InFlight
    })
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
