//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use actors::{CardCheck, CardLimits, ManualClock, MerchantLimits, ShardConfig, Shards};
use protocol::Amount;
use protocol::domain::{Token, pad};
use protocol::ids::{MerchantId, Text};

/// 2025-06-15T12:00:00Z: on a ten-second, five-minute and two-hour boundary,
/// twelve hours before a UTC midnight.
pub const T0: u64 = 1_749_988_800_000;
pub const SECOND: u64 = 1_000;
pub const MINUTE: u64 = 60 * SECOND;
pub const HOUR: u64 = 60 * MINUTE;

pub fn minor(units: u64) -> Amount {
    Amount::from_minor(units).unwrap()
}

pub fn merchant(name: &str) -> MerchantId {
    pad(name).unwrap()
}

pub fn mcc(code: &str) -> Text<4> {
    Text::parse(code.as_bytes()).unwrap()
}

/// SplitMix64: a seeded generator good enough for tokens and test choices.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// A position in `0..len`: the number [`Rng::below`] gives, as an index.
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap())).unwrap()
    }
}

/// The `n`th of a fixed family of tokens.
pub fn token(n: u64) -> Token {
    let mut rng = Rng(n);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next().to_le_bytes());
    Token::from_bytes(bytes)
}

/// A token whose card lives on (`true`) or off (`false`) the merchant's shard.
pub fn token_where(shards: &Shards, merchant_id: &MerchantId, same_shard: bool) -> Token {
    let merchant_shard = shards.merchant_shard(merchant_id);
    (0..)
        .map(token)
        .find(|t| (shards.card_shard(t) == merchant_shard) == same_shard)
        .unwrap()
}

pub fn check(token: Token, merchant_id: MerchantId, amount: u64) -> CardCheck {
    CardCheck {
        token,
        merchant_id,
        mcc: None,
        amount: minor(amount),
    }
}

pub fn start(
    shard_count: usize,
    card_limits: CardLimits,
    merchants: Vec<(MerchantId, MerchantLimits)>,
) -> (Shards, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = ShardConfig {
        shard_count,
        mailbox_capacity: 64,
        card_limits,
        merchants: merchants.into_iter().collect::<HashMap<_, _>>(),
    };
    (Shards::start(config, clock.clone()), clock)
}
