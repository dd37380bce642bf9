//! Idempotency claims on the writer connection: made or given up in a
//! transaction of their own ([`write_claims`]), checked by a batch before
//! its records are written ([`keys_taken`]) and completed by it
//! ([`complete_claims`]). SQLite has one writer, so each check is exact:
//! nothing can change between it and the commit.
//!
//! What a turn of claims answers and writes is decided by
//! [`plan_claims`](crate::claim_plan::plan_claims), the same for every
//! backend. Every key of a turn is looked up by one statement, and new
//! claims and completions are written by one statement each, whatever their
//! number:
//! the keys go in as one JSON array that `json_each` walks, each probing the
//! primary key. One statement per key would cost a hop to sqlx's worker
//! thread per key and make the writer the bottleneck (measured: a closed
//! loop of idempotent requests ran at half the rate with a statement per
//! key).

use std::collections::HashMap;

use sqlx::{Connection, SqliteConnection};

use protocol::domain::TransactionId;
use protocol::encoding::to_hex;

use crate::claim_plan::{ClaimRow, ClaimWrite, KeyHeld, plan_claims};
use crate::columns::Columns;
use crate::convert::to_i64;
use crate::error::StorageError;
use crate::record::{ClaimOutcome, IdempotencyEntry, JournalRecord, KeyClaim, key_taken_by};

/// The stored answer under a key; the read pool's lookup too.
pub(crate) const IDEMPOTENT_RESPONSE: &str = "\
    SELECT merchant_id, idempotency_key, request_hash, response_json, status \
    FROM idempotency WHERE merchant_id = ? AND idempotency_key = ?";

/// What each key of a JSON array `[[merchant, key], ...]` holds: its
/// stored answer and its claim, by the key's place in the array.
const KEYS_HELD: &str = "\
    SELECT k.key AS at, i.request_hash, i.response_json, i.status, i.transaction_id, \
           c.request_hash AS claim_hash, c.claimed_by, c.claimed_at_ms \
    FROM json_each(?1) AS k \
    LEFT JOIN idempotency AS i \
      ON i.merchant_id = k.value ->> 0 AND i.idempotency_key = k.value ->> 1 \
    LEFT JOIN idempotency_claims AS c \
      ON c.merchant_id = k.value ->> 0 AND c.idempotency_key = k.value ->> 1";

/// New claims, from `[[merchant, key, request hex, claimed_by hex, at], ...]`.
const CLAIMS_INSERT: &str = "\
    INSERT INTO idempotency_claims \
        (merchant_id, idempotency_key, request_hash, claimed_by, claimed_at_ms) \
    SELECT value ->> 0, value ->> 1, unhex(value ->> 2), unhex(value ->> 3), value ->> 4 \
    FROM json_each(?1)";

const CLAIM_REPLACE: &str = "UPDATE idempotency_claims \
     SET request_hash = ?, claimed_by = ?, claimed_at_ms = ? \
     WHERE merchant_id = ? AND idempotency_key = ?";

const CLAIM_DELETE: &str =
    "DELETE FROM idempotency_claims WHERE merchant_id = ? AND idempotency_key = ?";

/// The claims of `[[merchant, key, claimed_by hex], ...]`, if still theirs.
const CLAIMS_COMPLETE: &str = "\
    DELETE FROM idempotency_claims \
    WHERE (merchant_id, idempotency_key, claimed_by) IN \
        (SELECT value ->> 0, value ->> 1, unhex(value ->> 2) FROM json_each(?1))";

/// What one key holds.
#[derive(Debug, Clone, Default)]
struct Held {
    /// The stored answer and the record it belongs to.
    answer: Option<(IdempotencyEntry, TransactionId)>,
    claim: Option<ClaimRow>,
}

/// What each of `keys` holds, in their order.
async fn keys_held(
    conn: &mut SqliteConnection,
    keys: &[(&str, &str)],
) -> Result<Vec<Held>, StorageError> {
    let mut held = vec![Held::default(); keys.len()];
    if keys.is_empty() {
        return Ok(held);
    }
    let rows = sqlx::query(KEYS_HELD)
        .bind(serde_json::to_string(keys).map_err(unwritable)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(StorageError::database("look up idempotency keys"))?;
    for row in &rows {
        let columns = Columns::new(row, "idempotency");
        let at: usize = columns.number("at")?;
        let (Some(slot), Some(&(merchant_id, key))) = (held.get_mut(at), keys.get(at)) else {
            return Err(columns.corrupt("at"));
        };
        if let Some(by) = columns.optional_id("transaction_id")? {
            let entry = IdempotencyEntry {
                merchant_id: merchant_id.to_owned(),
                key: key.to_owned(),
                request_hash: columns.bytes("request_hash")?,
                response_json: columns.get("response_json")?,
                status: columns.number("status")?,
            };
            slot.answer = Some((entry, by));
        }
        let claims = Columns::new(row, "idempotency_claims");
        if let Some(by) = claims.optional_id("claimed_by")? {
            slot.claim = Some((
                claims.bytes("claim_hash")?,
                by,
                claims.number("claimed_at_ms")?,
            ));
        }
    }
    Ok(held)
}

/// [`write_claims`] without waiting for the disk: the claims' commit does
/// not fsync (`synchronous = NORMAL` in WAL mode), and the writer's next
/// commit, which does, makes them durable with it. A claim that a power cut
/// takes is one whose request had written nothing yet (its record comes
/// after it in the WAL), so nothing answered rests on it; an fsync of its
/// own would double the writer's fsyncs for every idempotent request. The
/// connection is back at `synchronous = FULL` before anything else runs on
/// it; if that cannot be done, the error drops the connection, and the
/// writer opens a new one with its own options (FULL).
pub(super) async fn write_claims_unsynced(
    conn: &mut SqliteConnection,
    claims: &[KeyClaim],
) -> Result<Vec<ClaimOutcome>, StorageError> {
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database("commit idempotency claims unsynced"))?;
    let written = write_claims(conn, claims).await;
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database("fsync the journal's commits again"))?;
    written
}

/// Makes or gives up `claims`, in order, in one transaction: every key is
/// read by one statement, the turn is planned ([`plan_claims`]), and new
/// claims are written by one statement.
async fn write_claims(
    conn: &mut SqliteConnection,
    claims: &[KeyClaim],
) -> Result<Vec<ClaimOutcome>, StorageError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StorageError::database("begin idempotency claims"))?;
    let keys: Vec<(&str, &str)> = claims.iter().map(KeyClaim::key).collect();
    let held = keys_held(&mut tx, &keys)
        .await?
        .into_iter()
        .map(|held| KeyHeld {
            answer: held.answer.map(|(entry, _)| entry),
            claim: held.claim,
        })
        .collect();
    let plan = plan_claims(claims, held);
    let mut inserts = Vec::new();
    for write in &plan.writes {
        match *write {
            ClaimWrite::Insert(merchant_id, key, (hash, by, at)) => {
                inserts.push((merchant_id, key, to_hex(&hash), to_hex(by.as_bytes()), at))
            }
            ClaimWrite::Replace(merchant_id, key, (hash, by, at), _) => {
                sqlx::query(CLAIM_REPLACE)
                    .bind(hash.as_slice())
                    .bind(by.as_bytes().as_slice())
                    .bind(to_i64(at))
                    .bind(merchant_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(StorageError::database("take over an idempotency claim"))?;
            }
            ClaimWrite::Delete(merchant_id, key, _) => {
                sqlx::query(CLAIM_DELETE)
                    .bind(merchant_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(StorageError::database("release an idempotency claim"))?;
            }
        }
    }
    if !inserts.is_empty() {
        sqlx::query(CLAIMS_INSERT)
            .bind(serde_json::to_string(&inserts).map_err(unwritable)?)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::database("write idempotency claims"))?;
    }
    tx.commit()
        .await
        .map_err(StorageError::database("commit idempotency claims"))?;
    Ok(plan.outcomes)
}

/// For each record of `batch`, who keeps it from being written
/// ([`key_taken_by`]), in batch order: a key written by an earlier record
/// of the batch is taken by that record.
pub(super) async fn keys_taken(
    conn: &mut SqliteConnection,
    batch: &[JournalRecord],
) -> Result<Vec<Option<TransactionId>>, StorageError> {
    let keyed: Vec<(&JournalRecord, (&str, &str))> = batch
        .iter()
        .filter_map(|record| {
            let entry = record.idempotency.as_ref()?;
            Some((record, (entry.merchant_id.as_str(), entry.key.as_str())))
        })
        .collect();
    let keys: Vec<(&str, &str)> = keyed.iter().map(|(_, key)| *key).collect();
    let mut found = keys_held(conn, &keys).await?.into_iter();
    let mut written: HashMap<(&str, &str), TransactionId> = HashMap::new();
    let mut taken = vec![None; batch.len()];
    for (record, taken) in batch.iter().zip(taken.iter_mut()) {
        let Some(entry) = &record.idempotency else {
            continue;
        };
        let held = found.next().unwrap_or_default();
        let key = (entry.merchant_id.as_str(), entry.key.as_str());
        if let Some(first) = written.get(&key) {
            *taken = Some(*first);
            continue;
        }
        *taken = key_taken_by(
            record.id,
            held.claim.map(|(_, by, _)| by),
            held.answer.map(|(_, by)| by),
        );
        if taken.is_none() {
            written.insert(key, record.id);
        }
    }
    Ok(taken)
}

/// The claims of the written records, completed: their answers are stored.
pub(super) async fn complete_claims(
    conn: &mut SqliteConnection,
    written: &[JournalRecord],
) -> Result<(), StorageError> {
    let completed: Vec<(&str, &str, String)> = written
        .iter()
        .filter_map(|record| {
            let entry = record.idempotency.as_ref()?;
            Some((
                entry.merchant_id.as_str(),
                entry.key.as_str(),
                to_hex(record.id.as_bytes()),
            ))
        })
        .collect();
    if completed.is_empty() {
        return Ok(());
    }
    sqlx::query(CLAIMS_COMPLETE)
        .bind(serde_json::to_string(&completed).map_err(unwritable)?)
        .execute(&mut *conn)
        .await
        .map_err(StorageError::database("complete idempotency claims"))?;
    Ok(())
}

/// Keys that cannot be written as JSON: never, for strings and numbers.
fn unwritable(_: serde_json::Error) -> StorageError {
    StorageError::Corrupt {
        table: "idempotency_claims",
        column: "idempotency_key",
    }
}
