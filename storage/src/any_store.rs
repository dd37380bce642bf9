//! [`AnyStore`]: whichever backend the switch was configured with, behind
//! one cloneable handle.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use protocol::domain::{Token, TransactionId};

use crate::record::{
    IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan,
    StoredTransaction,
};
use crate::rewrap::{Rewrapped, VaultMaintenance};
use crate::store::{StoreFuture, StoreReader};

/// The store the switch holds: a backend's reads and vault maintenance as
/// trait objects, so the switch is not generic over its backend and a new
/// backend needs no change here. Cheap to clone; every clone is the same
/// backend.
///
/// Built with [`AnyStore::new`] from a `SqliteStore`, a `PostgresStore` or,
/// in tests, a `memory::MemoryBackend`. It implements [`StoreReader`] and
/// [`VaultMaintenance`] by handing each call to the backend.
#[derive(Clone)]
pub struct AnyStore {
    reader: Arc<dyn StoreReader>,
    maintenance: Arc<dyn VaultMaintenance>,
}

impl AnyStore {
    /// The handle over `store`.
    pub fn new<S: StoreReader + VaultMaintenance>(store: S) -> AnyStore {
        let store = Arc::new(store);
        let reader: Arc<dyn StoreReader> = store.clone();
        AnyStore {
            reader,
            maintenance: store,
        }
    }
}

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AnyStore").field(&self.reader).finish()
    }
}

impl StoreReader for AnyStore {
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>> {
        self.reader.transaction(id)
    }

    fn find_original<'a>(
        &'a self,
        keys: &'a OriginalKeys,
        kinds: &'a [RecordKind],
        created_since_ms: u64,
    ) -> StoreFuture<'a, Option<JournalRecord>> {
        self.reader.find_original(keys, kinds, created_since_ms)
    }

    fn idempotent_response<'a>(
        &'a self,
        merchant_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<IdempotencyEntry>> {
        self.reader.idempotent_response(merchant_id, key)
    }

    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<ReplayRow>> {
        self.reader.approved_since(since_ms, after, rows_max)
    }

    fn recorded_since(&self, since_ms: u64) -> StoreFuture<'_, bool> {
        self.reader.recorded_since(since_ms)
    }

    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>> {
        self.reader.sealed_pan(token)
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        self.reader.check()
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.reader.close()
    }
}

impl VaultMaintenance for AnyStore {
    fn vault_rows_per_key(&self) -> StoreFuture<'_, Vec<(u32, u64)>> {
        self.maintenance.vault_rows_per_key()
    }

    fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<SealedPan>> {
        self.maintenance.sealed_page(after, skip_key_id, rows_max)
    }

    fn replace_sealed<'a>(&'a self, rows: &'a [Rewrapped]) -> StoreFuture<'a, u64> {
        self.maintenance.replace_sealed(rows)
    }
}
