//! The read side of a backend: lookups by index, and the replay at start.

use std::future::Future;

use protocol::domain::{Token, TransactionId};

use crate::error::StorageError;
use crate::record::{
    IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan,
    StoredTransaction,
};

/// Lookups a backend answers from its read connections. Every one is a
/// single index lookup or an index range scan, so none slows the writer.
///
/// The embedded backend implements it on `SqliteStore`; the PostgreSQL
/// backend will implement the same trait, so the switch is written against
/// this, not against a backend.
pub trait StoreReader: Send + Sync + 'static {
    /// The record with this id and whether it has been reversed.
    fn transaction(
        &self,
        id: TransactionId,
    ) -> impl Future<Output = Result<Option<StoredTransaction>, StorageError>> + Send;

    /// The most recent record of one of `kinds` with these acquirer keys,
    /// created at or after `created_since_ms`. For DE90 matching and for
    /// spotting a repeat or a retransmission. The window bounds how far back
    /// a wrapped STAN can match when DE7 is missing.
    fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> impl Future<Output = Result<Option<JournalRecord>, StorageError>> + Send;

    /// The stored answer for a merchant's idempotency key.
    fn idempotent_response(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyEntry>, StorageError>> + Send;

    /// One page of approved, unreversed authorizations and purchases created
    /// at or after `since_ms`, in `(at_ms, id)` order, starting after `after`
    /// when given; at most `rows_max` rows. An empty page is the end. Paged,
    /// so replaying 24 hours never holds 24 hours of rows at once.
    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> impl Future<Output = Result<Vec<ReplayRow>, StorageError>> + Send;

    /// The vault entry for a token.
    fn sealed_pan(
        &self,
        token: Token,
    ) -> impl Future<Output = Result<Option<SealedPan>, StorageError>> + Send;
}

/// Walks every approved, unreversed authorization and purchase since
/// `since_ms`, oldest first, a page of `page_rows` at a time, handing each
/// row to `each`; returns how many rows there were. Memory stays at one
/// page however long the window.
pub async fn replay_approved<S: StoreReader>(
    store: &S,
    since_ms: u64,
    page_rows: u32,
    mut each: impl FnMut(ReplayRow),
) -> Result<u64, StorageError> {
    let mut after = None;
    let mut rows = 0u64;
    loop {
        let page = store
            .approved_since(since_ms, after, page_rows.max(1))
            .await?;
        let Some(last) = page.last() else {
            return Ok(rows);
        };
        after = Some(last.cursor());
        rows += page.len() as u64;
        page.into_iter().for_each(&mut each);
    }
}

/// Whichever backend the switch was configured with, behind one type: the
/// reader trait returns `impl Future`, so it cannot be a trait object, and a
/// switch generic over its backend would carry the parameter everywhere.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// The embedded default.
    Sqlite(crate::SqliteStore),
    /// PostgreSQL (Aurora in production).
    Postgres(crate::PostgresStore),
}

impl AnyStore {
    /// Whether the database answers now: PostgreSQL runs a bounded
    /// `SELECT 1`; the embedded file is always there once open.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            AnyStore::Sqlite(_) => Ok(()),
            AnyStore::Postgres(store) => store.check().await,
        }
    }

    /// Closes the read connections (after the journal is closed).
    pub async fn close(&self) {
        match self {
            AnyStore::Sqlite(store) => store.close().await,
            AnyStore::Postgres(store) => store.close().await,
        }
    }
}

impl StoreReader for AnyStore {
    async fn transaction(
        &self,
        id: TransactionId,
    ) -> Result<Option<StoredTransaction>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.transaction(id).await,
            AnyStore::Postgres(store) => store.transaction(id).await,
        }
    }

    async fn find_original(
        &self,
        keys: &OriginalKeys,
        kinds: &[RecordKind],
        created_since_ms: u64,
    ) -> Result<Option<JournalRecord>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.find_original(keys, kinds, created_since_ms).await,
            AnyStore::Postgres(store) => store.find_original(keys, kinds, created_since_ms).await,
        }
    }

    async fn idempotent_response(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyEntry>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.idempotent_response(merchant_id, key).await,
            AnyStore::Postgres(store) => store.idempotent_response(merchant_id, key).await,
        }
    }

    async fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> Result<Vec<ReplayRow>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.approved_since(since_ms, after, rows_max).await,
            AnyStore::Postgres(store) => store.approved_since(since_ms, after, rows_max).await,
        }
    }

    async fn sealed_pan(&self, token: Token) -> Result<Option<SealedPan>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.sealed_pan(token).await,
            AnyStore::Postgres(store) => store.sealed_pan(token).await,
        }
    }
}

impl crate::rewrap::VaultMaintenance for AnyStore {
    async fn vault_rows_per_key(&self) -> Result<Vec<(u32, u64)>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.vault_rows_per_key().await,
            AnyStore::Postgres(store) => store.vault_rows_per_key().await,
        }
    }

    async fn sealed_page(
        &self,
        after: Option<Token>,
        skip_key_id: Option<u32>,
        rows_max: u32,
    ) -> Result<Vec<SealedPan>, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.sealed_page(after, skip_key_id, rows_max).await,
            AnyStore::Postgres(store) => store.sealed_page(after, skip_key_id, rows_max).await,
        }
    }

    async fn replace_sealed(&self, rows: &[crate::rewrap::Rewrapped]) -> Result<u64, StorageError> {
        match self {
            AnyStore::Sqlite(store) => store.replace_sealed(rows).await,
            AnyStore::Postgres(store) => store.replace_sealed(rows).await,
        }
    }
}
