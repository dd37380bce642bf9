//! Helpers shared by the integration tests: records with every field set,
//! test keys, and a store in a fresh temporary directory.

#![allow(dead_code, unreachable_pub)]

pub mod leak;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::domain::{Channel, DeclineReason, Token, TransactionId, pad};
use protocol::iso::Text;
use protocol::{Amount, Currency, Mti, ResponseCode};
use storage::{
    Journal, JournalConfig, JournalRecord, RecordKind, SqliteStore, StageTimings, StoreReader,
    VaultKeys,
};
use tempfile::TempDir;

/// A store in its own temporary directory, removed on drop.
pub struct TestStore {
    pub journal: Journal,
    pub store: SqliteStore,
    pub dir: TempDir,
}

impl TestStore {
    pub async fn open(config: JournalConfig) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let (journal, store) = SqliteStore::open(&db_path(dir.path()), config)
            .await
            .unwrap();
        TestStore {
            journal,
            store,
            dir,
        }
    }

    pub fn path(&self) -> PathBuf {
        db_path(self.dir.path())
    }

    /// Closes the journal (flushing it) and the read pool.
    pub async fn close(self) -> TempDir {
        self.journal.close().await;
        self.store.close().await;
        self.dir
    }
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("journal.db")
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh, unique id made at `at_ms`.
pub fn id_at(at_ms: u64) -> TransactionId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    TransactionId::new(at_ms, random)
}

pub const NOW_MS: u64 = 1_790_000_000_000;

/// An approved ISO authorization with every field set.
pub fn approved(at_ms: u64, token: Token, stan: &str) -> JournalRecord {
    JournalRecord {
        id: id_at(at_ms),
        created_at_ms: at_ms,
        channel: Channel::Iso,
        kind: RecordKind::Authorization,
        mti: Mti::AUTHORIZATION_REQUEST,
        processing_code: Text::parse(b"000000"),
        amount: Amount::from_minor(1250).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        merchant_id: pad("M0001").unwrap(),
        terminal_id: pad("TERM0001").unwrap(),
        stan: Text::parse(stan.as_bytes()),
        rrn: Text::parse(b"000000000042"),
        transmitted_at: Text::parse(b"1122183000"),
        token: Some(token),
        bin: Some("411111".to_owned()),
        last4: Some("1111".to_owned()),
        response_code: ResponseCode::Approved,
        auth_code: Text::parse(b"A1B2C3"),
        reason: None,
        original_id: None,
        acquirer: None,
        timings: StageTimings {
            decode_us: 3,
            decide_us: 5,
            vault_us: 2,
        },
        sealed_pan: None,
        idempotency: None,
    }
}

/// A declined authorization.
pub fn declined(at_ms: u64, token: Token, reason: DeclineReason) -> JournalRecord {
    JournalRecord {
        response_code: reason.response_code(),
        auth_code: None,
        reason: Some(reason),
        ..approved(at_ms, token, "000001")
    }
}

/// A reversal of `original`.
pub fn reversal_of(original: &JournalRecord, at_ms: u64) -> JournalRecord {
    JournalRecord {
        id: id_at(at_ms),
        created_at_ms: at_ms,
        kind: RecordKind::Reversal,
        mti: Mti::REVERSAL_REQUEST,
        auth_code: None,
        original_id: Some(original.id),
        stan: Text::parse(b"999999"),
        sealed_pan: None,
        idempotency: None,
        ..original.clone()
    }
}

pub fn token(n: u8) -> Token {
    Token::from_bytes([n; 16])
}

/// Test keys, made here and nowhere else.
pub fn keys(active_key_id: u32) -> VaultKeys {
    VaultKeys {
        tokenization_key: [0x5A; 32],
        encryption_keys: vec![(1, [0x11; 32]), (2, [0x22; 32])],
        active_key_id,
    }
}
