//! Re-encryption of the vault under the active key, a bounded batch at a
//! time, while the switch serves.
//!
//! After a rotation, rows sealed under an older key still open (their key id
//! is stored with them), but the old key can only be retired once no row
//! uses it. [`rewrap_batch`] walks the vault in token order from a cursor,
//! takes up to `rows_max` rows sealed under any key but the active one,
//! opens each with its own key and seals it again under the active key
//! (same token as associated data, fresh nonce), and writes them back with
//! a compare-and-set on the old key id and nonce: a row that changed since
//! it was read is left alone, never overwritten, and counted as skipped.
//!
//! Both backends implement [`VaultMaintenance`]; the walk, the crypto and
//! the counting live here once.

use protocol::domain::Token;

use crate::convert::count_u64;
use crate::error::StorageError;
use crate::record::SealedPan;
use crate::store::StoreFuture;
use crate::vault::Vault;

/// The most rows one batch may take, whatever the caller asks: one batch is
/// one short write transaction, and it must stay short next to the journal.
pub const REWRAP_BATCH_ROWS_MAX: u32 = 10_000;

/// A row sealed again, to be written back only if it is still as read.
#[derive(Debug, Clone)]
pub struct Rewrapped {
    /// The key id the row was read with.
    pub old_key_id: u32,
    /// The nonce the row was read with; with the key id it identifies the
    /// exact ciphertext read.
    pub old_nonce: [u8; 12],
    /// The row sealed under the active key.
    pub sealed: SealedPan,
}

/// Vault rows by key, for rotation. Implemented once by each backend;
/// boxed futures, as in [`StoreReader`](crate::StoreReader), so that
/// [`AnyStore`](crate::AnyStore) can hold it as a trait object.
pub trait VaultMaintenance: Send + Sync + 'static {
    /// How many vault rows each key id seals, ascending by key id.
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>>;

    /// Up to `rows_max` vault rows with a token after `after` (from the
    /// start when `None`), in token order, skipping rows sealed under
    /// `skip_key_id` when given.
    fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<SealedPan>>;

    /// Writes `rows` back in one short transaction, each only where the row
    /// still has its old key id and nonce. Returns how many rows changed.
    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64>;
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapBatch {
    /// Rows read that were under another key than the active one.
    pub selected: u64,
    /// Rows now under the active key.
    pub moved: u64,
    /// Rows that changed between the read and the write, left as they are.
    pub skipped: u64,
    /// Where the next batch starts; `None` once the walk reached the end.
    pub next: Option<Token>,
    /// The key id the batch sealed under.
    pub active_key_id: u32,
}

/// Moves one batch of up to `rows_max` rows (at most
/// [`REWRAP_BATCH_ROWS_MAX`]) after `after` to the active key.
///
/// A row that fails to open (a key that is not configured, a tampered
/// ciphertext) fails the batch with that error rather than being skipped
/// silently: an operator must see it before retiring a key.
pub async fn rewrap_batch<S: VaultMaintenance + ?Sized>(
    store: &S,
    vault: &Vault,
    after: Option<Token>,
    rows_max: u32,
) -> Result<RewrapBatch, StorageError> {
    let rows_max = rows_max.clamp(1, REWRAP_BATCH_ROWS_MAX);
    let active_key_id = vault.active_key_id();
    let page = store
        .sealed_page(after, Some(active_key_id), rows_max)
        .await?;
    let selected = count_u64(page.len());
    let next = if selected < u64::from(rows_max) {
        None
    } else {
        page.last().map(|row| row.token)
    };
    let mut rewrapped = Vec::with_capacity(page.len());
    for row in &page {
        let pan = vault.open(row)?;
        let sealed = vault.seal(&pan)?;
        rewrapped.push(Rewrapped {
            old_key_id: row.key_id,
            old_nonce: row.nonce,
            sealed,
        });
    }
    // A rotation between the page and the seals could leave a row sealed
    // under a key that is no longer active; it is then simply picked up by
    // the next walk.
    let moved = if rewrapped.is_empty() {
        0
    } else {
        store.replace_sealed(&rewrapped).await?
    };
    Ok(RewrapBatch {
        selected,
        moved,
        skipped: selected.saturating_sub(moved),
        next,
        active_key_id,
    })
}

/// What a walk over every vault row found when opening each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows that opened and matched their token, per key id.
    pub opened_per_key: Vec<(u32, u64)>,
    /// Rows that did not open, per key id.
    pub failed_per_key: Vec<(u32, u64)>,
}

/// Opens every vault row, `page_rows` at a time, and counts what opened per
/// key id. The PANs are dropped (and wiped) at once; nothing is returned
/// but counts.
pub async fn verify_all<S: VaultMaintenance + ?Sized>(
    store: &S,
    vault: &Vault,
    page_rows: u32,
) -> Result<VerifyReport, StorageError> {
    let page_rows = page_rows.clamp(1, REWRAP_BATCH_ROWS_MAX);
    let mut report = VerifyReport::default();
    let mut after = None;
    loop {
        let page = store.sealed_page(after, None, page_rows).await?;
        for row in &page {
            let counts = match vault.open(row) {
                Ok(_) => &mut report.opened_per_key,
                Err(_) => &mut report.failed_per_key,
            };
            match counts.iter_mut().find(|(id, _)| *id == row.key_id) {
                Some((_, count)) => *count += 1,
                None => counts.push((row.key_id, 1)),
            }
        }
        match page.last() {
            Some(last) if count_u64(page.len()) == u64::from(page_rows) => {
                after = Some(last.token);
            }
            _ => break,
        }
    }
    report.opened_per_key.sort_unstable();
    report.failed_per_key.sort_unstable();
    Ok(report)
}
