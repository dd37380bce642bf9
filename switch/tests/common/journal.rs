//! The embedded journal of a stopped switch, read back as the switch wrote
//! it: for tests that check what was journaled, not only what was answered.

use std::path::Path;

use protocol::Message;
use protocol::ids::Text;
use storage::{
    JournalConfig, JournalRecord, OriginalKeys, RecordKind, ReplayRow, SqliteStore, StoreReader,
};

/// Runs `read` on the SQLite journal in `data_dir`. The switch must have
/// stopped: the file is opened with a journal writer of its own, which
/// recovers it as a restarted switch would.
fn read_journal<T>(data_dir: &Path, read: impl AsyncFnOnce(&SqliteStore) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (journal, store) =
            SqliteStore::open(&data_dir.join("journal.sqlite"), JournalConfig::default())
                .await
                .unwrap();
        let read = read(&store).await;
        journal.close().await;
        store.close().await;
        read
    })
}

/// The record of `request`, an authorization or a purchase, found by its
/// acquirer keys (DE41, DE11) as a retransmission is.
pub fn journaled(data_dir: &Path, request: &Message) -> JournalRecord {
    let keys = OriginalKeys {
        terminal_id: Text::parse(request.get(41).unwrap()).unwrap(),
        stan: Text::parse(request.get(11).unwrap()).unwrap(),
        transmitted_at: None,
    };
    read_journal(data_dir, async |store| {
        store
            .find_original(&keys, &[RecordKind::Authorization, RecordKind::Purchase], 0)
            .await
            .unwrap()
            .expect("the request is journaled")
    })
}

/// Every approved, unreversed authorization and purchase in the journal,
/// oldest first: what a restarted switch replays into velocity.
pub fn approvals(data_dir: &Path) -> Vec<ReplayRow> {
    read_journal(data_dir, async |store| {
        let mut rows = Vec::new();
        storage::replay_approved(store, 0, 100, |row| rows.push(row))
            .await
            .unwrap();
        rows
    })
}
