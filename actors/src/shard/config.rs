//! How the shards are laid out and what they enforce.

use std::collections::HashMap;

use protocol::ids::MerchantId;

use crate::Error;
use crate::card::CardLimits;
use crate::merchant::MerchantLimits;

/// How the shards are laid out and what they enforce at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Shards to run; 0 means one per available core.
    pub shard_count: usize,
    /// Messages a shard's mailbox holds before decisions are shed with 91.
    pub mailbox_capacity: usize,
    /// Limits every card is held to.
    pub card_limits: CardLimits,
    /// The merchants the switch knows; any other is declined (03, invalid
    /// merchant).
    pub merchants: HashMap<MerchantId, MerchantLimits>,
}

impl Default for ShardConfig {
    fn default() -> ShardConfig {
        ShardConfig {
            shard_count: 0,
            mailbox_capacity: 1024,
            card_limits: CardLimits::default(),
            merchants: HashMap::new(),
        }
    }
}

/// What a decision is held to: every card's limits and each known
/// merchant's. A decision carries the `Arc` it was started under to every
/// shard it visits, so a configuration reload that swaps in a new one while
/// decisions run leaves each of them under one set of limits, old or new,
/// never a mix. The shards keep only the counters (velocity), which a new
/// set of limits is applied to from its first decision on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub card_limits: CardLimits,
    /// The merchants the switch knows; any other is declined (03). A
    /// merchant left out of a new set is declined from then on, its
    /// counters kept in case it comes back.
    pub merchants: HashMap<MerchantId, MerchantLimits>,
}

impl ShardConfig {
    /// The limits the shards start with.
    pub fn limits(&self) -> Limits {
        Limits {
            card_limits: self.card_limits,
            merchants: self.merchants.clone(),
        }
    }

    /// Checks what [`Shards::start`](crate::Shards::start) would otherwise
    /// quietly correct, so a configuration loader can name the bad key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.mailbox_capacity == 0 {
            return Err(Error::MailboxCapacityZero);
        }
        Ok(())
    }
}
