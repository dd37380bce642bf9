//! How busy the shards are: what they count as they work and what the handle
//! reads without sending them a message.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// How busy the shards are, for metrics and the admin page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// One entry per shard, by index.
    pub shards: Vec<ShardLoad>,
    /// Decisions declined with 91 because a mailbox was full, since start.
    pub shed_total: u64,
    /// Give-backs that found less than they were to take back, since start:
    /// an approval given back twice, or never counted. Zero in a healthy
    /// switch (debug builds stop the shard at the first one).
    pub give_back_shortfall_total: u64,
    /// Give-backs and restores a stopped shard could not take, since start.
    /// Zero unless a shard panicked.
    pub undelivered_total: u64,
}

/// One shard's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLoad {
    /// Messages waiting in the mailbox.
    pub mailbox_depth: usize,
    pub mailbox_capacity: usize,
    /// Cards held, as of the shard's last batch.
    pub cards: usize,
    /// Merchants held (counters kept), as of the shard's last batch.
    pub merchants: usize,
}

/// What the shards report and the handle reads, without a message.
pub(super) struct Shared {
    pub(super) shed_total: AtomicU64,
    pub(super) give_back_shortfall_total: AtomicU64,
    pub(super) undelivered_total: AtomicU64,
    pub(super) cards: Vec<AtomicUsize>,
    pub(super) merchants: Vec<AtomicUsize>,
}

impl Shared {
    /// All counts at zero, for `shard_count` shards holding `merchants` each.
    pub(super) fn new(shard_count: usize, merchants: Vec<usize>) -> Shared {
        Shared {
            shed_total: AtomicU64::new(0),
            give_back_shortfall_total: AtomicU64::new(0),
            undelivered_total: AtomicU64::new(0),
            cards: (0..shard_count).map(|_| AtomicUsize::new(0)).collect(),
            merchants: merchants.into_iter().map(AtomicUsize::new).collect(),
        }
    }
}
