//! The embedded journal of a stopped switch, read back as the switch wrote
//! it: for tests that check what was journaled, not only what was answered.

use std::path::Path;

use protocol::domain::{Channel, Token, TransactionId, pad};
use protocol::ids::Text;
use protocol::{Amount, Currency, Message, ResponseCode};
use storage::{
    Journal, JournalRecord, LogConfig, LogStore, OriginalKeys, RecordKind, ReplayRow, StageTimings,
    StoreReader,
};

/// Runs `read` on the embedded journal (the segment log, the default) in
/// `data_dir`. The switch must have stopped: the log is opened with a
/// journal writer of its own, which recovers it as a restarted switch
/// would.
fn read_journal<T>(data_dir: &Path, read: impl AsyncFnOnce(&LogStore) -> T) -> T {
    with_journal(data_dir, async |_, store| read(store).await)
}

/// Runs `act` on the embedded journal in `data_dir` and its writer; the
/// switch must have stopped.
fn with_journal<T>(data_dir: &Path, act: impl AsyncFnOnce(&Journal, &LogStore) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        std::fs::create_dir_all(data_dir).unwrap();
        let (journal, store) = LogStore::open(data_dir, LogConfig::default())
            .await
            .unwrap();
        let done = act(&journal, &store).await;
        journal.close().await;
        store.close().await;
        done
    })
}

/// Appends `records` to the journal in `data_dir` while no switch runs on
/// it, as a switch's past traffic, thousands at a time so that group commit
/// writes them in few transactions.
pub fn append(data_dir: &Path, records: Vec<JournalRecord>) {
    with_journal(data_dir, async |journal, _| {
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let mut appends = tokio::task::JoinSet::new();
            for record in records.by_ref().take(4096) {
                let journal = journal.clone();
                appends.spawn(async move { journal.append(record).await });
            }
            while let Some(appended) = appends.join_next().await {
                appended.unwrap().unwrap();
            }
        }
    });
}

/// The record of `request`, an authorization or a purchase from a plain
/// connection, found by its acquirer keys (DE41, DE11) and merchant (DE42)
/// as a retransmission is.
pub fn journaled(data_dir: &Path, request: &Message) -> JournalRecord {
    journaled_under(data_dir, request, None)
}

/// The record of `request` as [`journaled`] finds it, sent by the acquirer
/// named `acquirer` (mutual TLS; `None`: a plain connection).
pub fn journaled_under(
    data_dir: &Path,
    request: &Message,
    acquirer: Option<&str>,
) -> JournalRecord {
    let keys = OriginalKeys {
        terminal_id: Text::parse(request.get(41).unwrap()).unwrap(),
        stan: Text::parse(request.get(11).unwrap()).unwrap(),
        transmitted_at: None,
        merchant_id: Text::parse(request.get(42).unwrap()).unwrap(),
        acquirer: acquirer.map(str::to_owned),
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
        storage::replay_approved(store, 0, 100, async |row| rows.push(row))
            .await
            .unwrap();
        rows
    })
}

/// The approval of card number `n` of other cards, at `at_ms`: past
/// traffic at ACME0000001 that a restarted switch replays. A JSON request's
/// record, so it holds no acquirer keys to collide with.
pub fn approval_of_another_card(at_ms: u64, n: u64) -> JournalRecord {
    let mut token = [0xA5; 16];
    token[8..].copy_from_slice(&n.to_be_bytes());
    let mut random = [0; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    JournalRecord {
        id: TransactionId::new(at_ms, random),
        created_at_ms: at_ms,
        channel: Channel::Http,
        kind: RecordKind::Authorization,
        mti: protocol::Mti::AUTHORIZATION_REQUEST,
        processing_code: None,
        amount: Amount::from_minor(100).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        merchant_id: pad("ACME0000001").unwrap(),
        terminal_id: pad("WEB00001").unwrap(),
        stan: None,
        rrn: None,
        transmitted_at: None,
        token: Some(Token::from_bytes(token)),
        bin: Some("555555".to_owned()),
        last4: Some("4444".to_owned()),
        response_code: ResponseCode::Approved,
        auth_code: Text::parse(b"A1B2C3"),
        reason: None,
        original_id: None,
        acquirer: None,
        timings: StageTimings::default(),
        sealed_pan: None,
        idempotency: None,
    }
}
