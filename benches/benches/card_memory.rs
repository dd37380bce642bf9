//! Bytes per card: the growth of the process's resident set while 1,000,000
//! new cards each get one approval through `actors::Shards`, divided by a
//! million. That is what a card really costs: its state, the shard's table
//! slot, the index entry that finds it, and the spare capacity both keep
//! after growing, not just `size_of` of the state.
//!
//! Run: `cargo bench -p benches --bench card_memory` (Linux: it reads
//! `/proc/self/statm`).

// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The approvals-per-second figure is the wall time of the whole fill, taken
// outside criterion, which only a monotonic clock of this process can measure.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actors::shard::CARD_SLOT_BYTES;
use actors::{CardCheck, CardLimits, CardState, MerchantLimits, ShardConfig, Shards, SystemClock};
use benches::token;
use protocol::Amount;
use protocol::domain::{Token, pad};
use protocol::ids::MerchantId;

const CARDS: u64 = 1_000_000;
const CLIENTS: u64 = 64;
const PAGE_BYTES: u64 = 4096;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let resident_pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    resident_pages * PAGE_BYTES
}

/// A count as a float, for the printed figures, where rounding past 2^53 is
/// harmless; `f64` has no `From<u64>`.
#[allow(clippy::as_conversions)]
fn float(n: u64) -> f64 {
    n as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let merchant_id: MerchantId = pad("BENCH").unwrap();
        let shards = Shards::start(
            ShardConfig {
                shard_count: 0,
                mailbox_capacity: 1024,
                card_limits: CardLimits::default(),
                merchants: HashMap::from([(merchant_id, MerchantLimits::default())]),
            },
            Arc::new(SystemClock),
        );
        let check = move |n| CardCheck {
            token: token(n),
            merchant_id,
            mcc: None,
            amount: Amount::from_minor(1_000).unwrap(),
        };
        // Warm up: the runtime's workers and the shards' first allocations
        // are not cards.
        shards.decide(check(u64::MAX)).await.unwrap();
        let before = resident_bytes();

        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let shards = shards.clone();
                tokio::spawn(async move {
                    for n in (client..CARDS).step_by(usize::try_from(CLIENTS).unwrap()) {
                        shards.decide(check(n)).await.unwrap();
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        let elapsed = started.elapsed();
        // Every card must be held, or the figure below is for fewer cards.
        // A shard publishes its count after each batch, a moment after its
        // answers leave, so wait for the last batch to be counted.
        let mut stats = shards.stats().await;
        for _ in 0..1_000 {
            if stats
                .shards
                .iter()
                .map(|s| u64::try_from(s.cards).unwrap())
                .sum::<u64>()
                == CARDS + 1
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            stats = shards.stats().await;
        }
        let cards: u64 = stats
            .shards
            .iter()
            .map(|s| u64::try_from(s.cards).unwrap())
            .sum();
        assert_eq!(cards, CARDS + 1, "{stats:?}");

        let after = resident_bytes();
        let per_card = float(after.saturating_sub(before)) / float(CARDS);
        println!("shards: {}", stats.shards.len());
        println!(
            "cards created: {CARDS} in {:.2} s ({:.0} approvals/s)",
            elapsed.as_secs_f64(),
            float(CARDS) / elapsed.as_secs_f64()
        );
        println!("size_of::<CardState>(): {} bytes", size_of::<CardState>());
        println!("card slot (token + state): {CARD_SLOT_BYTES} bytes");
        println!(
            "index entry (token + u32, one control byte): {} bytes",
            size_of::<(Token, u32)>() + 1
        );
        println!(
            "resident set: {:.1} MiB before, {:.1} MiB after",
            float(before) / float(1 << 20),
            float(after) / float(1 << 20)
        );
        println!("bytes per card (RSS delta / cards): {per_card:.0}");
        println!(
            "10 million cards at this rate: {:.2} GiB",
            per_card * 1e7 / float(1 << 30)
        );
    });
}
