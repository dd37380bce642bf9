//! How the shards are laid out and what they enforce.

use std::collections::HashMap;

use protocol::ids::MerchantId;

use crate::Error;
use crate::card::CardLimits;
use crate::merchant::MerchantLimits;

/// How the shards are laid out and what they enforce.
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

impl ShardConfig {
    /// Checks what [`Shards::start`](crate::Shards::start) would otherwise
    /// quietly correct, so a configuration loader can name the bad key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.mailbox_capacity == 0 {
            return Err(Error::MailboxCapacityZero);
        }
        Ok(())
    }
}
