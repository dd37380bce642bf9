//! [`Policy`]: the business configuration a card request is decided by
//! (the rules, every card's and each merchant's limits, the merchants'
//! admission rates), held by the engine as one snapshot that a
//! configuration reload replaces whole.
//!
//! A request takes the snapshot once, where it is admitted (the ISO 8583
//! reader, or the HTTP door with its keys), and carries that `Arc` to the
//! rules and to every shard it visits, so it is judged by one configuration,
//! old or new, never a mix. Taking it is one atomic load (`arc-swap`): no
//! lock on the hot path. The counters (card and merchant velocity, the
//! admission buckets' state) are not in it; they live in the shards and the
//! buckets and are kept across a swap.

use std::sync::Arc;

use actors::{Limits, RuleConfig};

use crate::admission::AdmissionRates;

/// What a card request is decided by, as of one load of the configuration.
#[derive(Debug)]
pub struct Policy {
    /// 1 at start, one more for each reload applied: what the admin route
    /// and the audit log name a configuration by.
    pub generation: u64,
    /// Amount ceiling and blocked BIN ranges (13, 57).
    pub rules: RuleConfig,
    /// Card limits and the known merchants' limits, as the shards take them.
    pub limits: Arc<Limits>,
    /// Per-merchant admission rates, checked by both ingresses.
    pub admission_rates: Arc<AdmissionRates>,
}
