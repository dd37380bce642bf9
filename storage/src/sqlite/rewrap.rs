//! The embedded backend's side of the vault rewrap.
//!
//! SQLite has one writer at a time, and the journal's writer must not be
//! starved. A rewrap batch therefore reads its rows on a read connection
//! (WAL: no lock taken), does the crypto outside any transaction, and then
//! writes on its own connection in one `BEGIN IMMEDIATE` transaction of
//! bounded size: a few hundred primary-key updates and one commit, a few
//! milliseconds, during which a journal batch waits on SQLite's busy
//! handler (well inside its `busy_timeout`) and then commits as usual. The
//! caller pauses between batches so the journal gets the lock back at
//! once. Going through the journal's writer task instead would serialize
//! the rewrap behind every append and need a second kind of command on the
//! journal queue for no gain in safety: the compare-and-set below already
//! keeps a concurrent change safe.

use sqlx::{Connection, Row, SqliteConnection};

use protocol::domain::Token;

use super::store::SqliteStore;
use crate::columns::{key_and_count, sealed_pan_from};
use crate::error::StorageError;
use crate::record::SealedPan;
use crate::rewrap::{Rewrapped, VaultMaintenance};
use crate::store::StoreFuture;

const ROWS_PER_KEY: &str = "SELECT key_id, count(*) FROM vault GROUP BY key_id ORDER BY key_id";

/// Walks the primary key from the cursor: each page is an index range scan,
/// so a whole rewrap reads the table once. An empty BLOB sorts before every
/// token. `-1` as the key to skip matches no row.
const SEALED_PAGE: &str = "\
    SELECT token, key_id, nonce, ciphertext FROM vault \
    WHERE token > ? AND key_id <> ? ORDER BY token LIMIT ?";

const REPLACE_SEALED: &str = "\
    UPDATE vault SET key_id = ?, nonce = ?, ciphertext = ? \
    WHERE token = ? AND key_id = ? AND nonce = ?";

impl VaultMaintenance for SqliteStore {
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move {
            let rows = sqlx::query(ROWS_PER_KEY)
                .fetch_all(&self.pool)
                .await
                .map_err(StorageError::database("count vault rows per key"))?;
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
            let rows = sqlx::query(SEALED_PAGE)
                .bind(after)
                .bind(skip_key_id.map_or(-1, i64::from))
                .bind(i64::from(rows_max))
                .fetch_all(&self.pool)
                .await
                .map_err(StorageError::database("read a page of the vault"))?;
            rows.iter().map(sealed_pan_from).collect()
        })
    }

    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let failed = StorageError::database;
            let mut conn = SqliteConnection::connect_with(&self.write_options)
                .await
                .map_err(failed("open a connection for the vault rewrap"))?;
            let written = async {
                let mut tx = conn
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(failed("begin a vault rewrap batch"))?;
                let mut moved = 0;
                for row in rows {
                    moved += sqlx::query(REPLACE_SEALED)
                        .bind(i64::from(row.sealed.key_id))
                        .bind(row.sealed.nonce.as_slice())
                        .bind(row.sealed.ciphertext.as_slice())
                        .bind(row.sealed.token.as_bytes().as_slice())
                        .bind(i64::from(row.old_key_id))
                        .bind(row.old_nonce.as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(failed("rewrap a vault row"))?
                        .rows_affected();
                }
                tx.commit()
                    .await
                    .map_err(failed("commit a vault rewrap batch"))?;
                Ok(moved)
            }
            .await;
            let _ = conn.close().await;
            written
        })
    }
}
