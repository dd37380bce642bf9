//! The PostgreSQL side of the vault rewrap.
//!
//! Pages are read on the read pool; a batch is written back by one
//! `UPDATE ... FROM UNNEST(...)` in a short `READ WRITE` transaction on a
//! pooled connection (the pool's sessions default to read-only, which a
//! transaction may override). PostgreSQL has no single-writer lock, so the
//! journal's writers are not held up beyond the row locks of the batch, and
//! the compare-and-set on key id and nonce makes a concurrent change (a
//! second rewrap on another node) win rather than be overwritten.

use sqlx::{Connection, Row};

use protocol::domain::Token;

use super::store::PostgresStore;
use crate::columns::{key_and_count, sealed_pan_from};
use crate::record::SealedPan;
use crate::rewrap::{Rewrapped, VaultMaintenance};
use crate::store::StoreFuture;

const ROWS_PER_KEY: &str = "SELECT key_id, count(*) FROM vault GROUP BY key_id ORDER BY key_id";

/// Walks the primary key from the cursor; an empty bytea sorts before every
/// token, and `-1` as the key to skip matches no row.
const SEALED_PAGE: &str = "\
    SELECT token, key_id, nonce, ciphertext FROM vault \
    WHERE token > $1 AND key_id <> $2 ORDER BY token LIMIT $3";

const REPLACE_SEALED: &str = "\
    UPDATE vault AS v \
    SET key_id = u.new_key_id, nonce = u.new_nonce, ciphertext = u.new_ciphertext \
    FROM UNNEST($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bytea[], $6::bytea[]) \
        AS u(token, old_key_id, old_nonce, new_key_id, new_nonce, new_ciphertext) \
    WHERE v.token = u.token AND v.key_id = u.old_key_id AND v.nonce = u.old_nonce";

impl VaultMaintenance for PostgresStore {
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move {
            let rows = self
                .bounded(
                    "count vault rows per key",
                    sqlx::query(ROWS_PER_KEY).fetch_all(&self.pool),
                )
                .await?;
            rows.iter()
                .map(|row| {
                    key_and_count(row.try_get(0).unwrap_or(-1), row.try_get(1).unwrap_or(-1))
                })
                .collect()
        })
    }

    fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<SealedPan>> {
        Box::pin(async move {
            let after: &[u8] = match &after {
                Some(token) => token.as_bytes().as_slice(),
                None => &[],
            };
            let query = sqlx::query(SEALED_PAGE)
                .bind(after)
                .bind(skip_key_id.map_or(-1, i64::from))
                .bind(i64::from(rows_max));
            let rows = self
                .bounded("read a page of the vault", query.fetch_all(&self.pool))
                .await?;
            rows.iter().map(sealed_pan_from).collect()
        })
    }

    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let tokens: Vec<&[u8]> = rows
                .iter()
                .map(|r| r.sealed.token.as_bytes().as_slice())
                .collect();
            let old_key_ids: Vec<i64> = rows.iter().map(|r| i64::from(r.old_key_id)).collect();
            let old_nonces: Vec<&[u8]> = rows.iter().map(|r| r.old_nonce.as_slice()).collect();
            let new_key_ids: Vec<i64> = rows.iter().map(|r| i64::from(r.sealed.key_id)).collect();
            let new_nonces: Vec<&[u8]> = rows.iter().map(|r| r.sealed.nonce.as_slice()).collect();
            let new_ciphertexts: Vec<&[u8]> = rows
                .iter()
                .map(|r| r.sealed.ciphertext.as_slice())
                .collect();
            let writing = async {
                let mut conn = self.pool.acquire().await?;
                let mut tx = conn.begin_with("START TRANSACTION READ WRITE").await?;
                let moved = sqlx::query(REPLACE_SEALED)
                    .bind(&tokens)
                    .bind(&old_key_ids)
                    .bind(&old_nonces)
                    .bind(&new_key_ids)
                    .bind(&new_nonces)
                    .bind(&new_ciphertexts)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(moved)
            };
            self.bounded("rewrap a batch of vault rows", writing).await
        })
    }
}
