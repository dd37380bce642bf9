//! The read side of a backend: lookups by index, and the replay at start.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use protocol::domain::{Token, TransactionId};

use crate::error::StorageError;
use crate::record::{
    IdempotencyEntry, JournalRecord, OriginalKeys, RecordKind, ReplayCursor, ReplayRow, SealedPan,
    StoredTransaction,
};

/// What every lookup of a backend returns: boxed, so that [`StoreReader`]
/// (and [`VaultMaintenance`](crate::rewrap::VaultMaintenance)) can be trait
/// objects and the switch holds one [`AnyStore`](crate::AnyStore) whatever
/// the backend. One allocation per lookup is nothing beside its I/O.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Lookups a backend answers from its read connections. Every one is a
/// single index lookup or an index range scan, so none slows the writer.
///
/// Each backend implements it once (SQLite, PostgreSQL, and the in-memory
/// test backend); the switch is written against this, through
/// [`AnyStore`](crate::AnyStore), not against a backend.
pub trait StoreReader: fmt::Debug + Send + Sync + 'static {
    /// The record with this id and whether it has been reversed.
    fn transaction(&self, id: TransactionId) -> StoreFuture<'_, Option<StoredTransaction>>;

    /// The most recent record of one of `kinds` with these acquirer keys,
    /// for the same merchant and acquirer (none: records without one),
    /// created at or after `created_since_ms`. For DE90 matching and for
    /// spotting a repeat or a retransmission. The window bounds how far back
    /// a wrapped STAN can match when DE7 is missing.
    fn find_original<'a>(
        &'a self,
        keys: &'a OriginalKeys,
        kinds: &'a [RecordKind],
        created_since_ms: u64,
    ) -> StoreFuture<'a, Option<JournalRecord>>;

    /// The stored answer for a merchant's idempotency key.
    fn idempotent_response<'a>(
        &'a self,
        merchant_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<IdempotencyEntry>>;

    /// One page of approved, unreversed authorizations and purchases created
    /// at or after `since_ms`, in `(at_ms, id)` order, starting after `after`
    /// when given; at most `rows_max` rows. An empty page is the end. Paged,
    /// so replaying 24 hours never holds 24 hours of rows at once.
    fn approved_since(
        &self,
        since_ms: u64,
        after: Option<ReplayCursor>,
        rows_max: u32,
    ) -> StoreFuture<'_, Vec<ReplayRow>>;

    /// Whether any record was created at or after `since_ms`: at start,
    /// whether requests answered in the duplicate window before it may be
    /// retransmitted after it. Ids begin with their creation time, so this
    /// is one look at the primary key.
    fn recorded_since(&self, since_ms: u64) -> StoreFuture<'_, bool>;

    /// The vault entry for a token.
    fn sealed_pan(&self, token: Token) -> StoreFuture<'_, Option<SealedPan>>;

    /// Whether the database answers now, for `/health/ready`: PostgreSQL
    /// runs a bounded `SELECT 1`; an embedded file is always there once open.
    fn check(&self) -> StoreFuture<'_, ()>;

    /// Closes the read connections (after the journal is closed). Never
    /// fails and never hangs: a server that no longer answers is given up on.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Every approved, unreversed authorization and purchase since `since_ms`,
/// oldest first, a page of at most `page_rows` at a time: memory stays at
/// one page however long the window. The one way the journal is walked for
/// velocity, by the replay at start and by a fleet's rebuild of Redis.
#[derive(Debug)]
pub struct ReplayPages<'a, S: StoreReader + ?Sized> {
    store: &'a S,
    since_ms: u64,
    page_rows: u32,
    after: Option<ReplayCursor>,
    done: bool,
}

impl<'a, S: StoreReader + ?Sized> ReplayPages<'a, S> {
    pub fn new(store: &'a S, since_ms: u64, page_rows: u32) -> ReplayPages<'a, S> {
        ReplayPages {
            store,
            since_ms,
            page_rows: page_rows.max(1),
            after: None,
            done: false,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ReplayRow>>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .approved_since(self.since_ms, self.after, self.page_rows)
            .await?;
        let Some(last) = page.last() else {
            self.done = true;
            return Ok(None);
        };
        self.after = Some(last.cursor());
        Ok(Some(page))
    }
}

/// Walks every approved, unreversed authorization and purchase since
/// `since_ms` ([`ReplayPages`]), handing each row to `each` and awaiting it
/// before the next; returns how many rows there were. The next page is read
/// only once `each` has taken the last row, so memory stays at one page
/// however long the window, also when `each` waits (for an actor's mailbox,
/// say).
pub async fn replay_approved<S: StoreReader + ?Sized>(
    store: &S,
    since_ms: u64,
    page_rows: u32,
    mut each: impl AsyncFnMut(ReplayRow),
) -> Result<u64, StorageError> {
    let mut pages = ReplayPages::new(store, since_ms, page_rows);
    let mut rows = 0u64;
    while let Some(page) = pages.next_page().await? {
        rows = rows.saturating_add(u64::try_from(page.len()).unwrap_or(u64::MAX));
        for row in page {
            each(row).await;
        }
    }
    Ok(rows)
}
