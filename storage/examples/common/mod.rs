//! What the writer examples share: the records they write and the CPU time
//! they read from /proc.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use protocol::domain::{Channel, Token, TransactionId, pad};
use protocol::ids::Text;
use protocol::{Amount, Currency, Mti, ResponseCode};
use storage::{JournalRecord, RecordKind, SealedPan, StageTimings};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh approval; with its card's sealed PAN if `new_card`.
pub(crate) fn record(new_card: bool) -> JournalRecord {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    let now = 1_790_000_000_000 + n / 16;
    let mut token = [0u8; 16];
    token[..8].copy_from_slice(&n.to_be_bytes());
    token[8] = 0xA5;
    let token = Token::from_bytes(token);
    let stan = format!("{:06}", n % 1_000_000);
    JournalRecord {
        id: TransactionId::new(now, random),
        created_at_ms: now,
        channel: Channel::Iso,
        kind: RecordKind::Authorization,
        mti: Mti::AUTHORIZATION_REQUEST,
        processing_code: Text::parse(b"000000"),
        amount: Amount::from_minor(1250).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        merchant_id: pad("M0001").unwrap(),
        terminal_id: pad(&format!("T{:07}", n % 64)).unwrap(),
        stan: Text::parse(stan.as_bytes()),
        rrn: Text::parse(b"000000000042"),
        transmitted_at: Text::parse(b"1122183000"),
        token: Some(token),
        bin: Some("41111111".to_owned()),
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
        sealed_pan: new_card.then(|| SealedPan {
            token,
            key_id: 1,
            nonce: [7; 12],
            ciphertext: vec![9; 32],
        }),
        idempotency: None,
    }
}

/// utime + stime of one process, in clock ticks.
pub(crate) fn ticks_of(stat: &str) -> Option<(u32, u64)> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, ppid 4, utime 14 and stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

pub(crate) fn cpu_seconds_of_self() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    ticks_of(&stat).unwrap().1 as f64 / 100.0
}
