//! What the ingress asks the shards: a decision, a give-back, a restore.

use protocol::Amount;
use protocol::domain::Token;
use protocol::ids::{MerchantId, Text};

/// One request to decide, after the rules passed and the PAN became a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardCheck {
    pub token: Token,
    pub merchant_id: MerchantId,
    pub mcc: Option<Text<4>>,
    pub amount: Amount,
}

/// An approval to take back: a reversal, or an approval whose journal record
/// could not be written. `original_at_ms` is the time the approval was
/// decided at (what [`Shards::decide_at`](crate::Shards::decide_at) was
/// given), so the amount leaves the very bucket it entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiveBack {
    pub token: Token,
    pub merchant_id: MerchantId,
    pub amount: Amount,
    pub original_at_ms: u64,
    /// All of the approval: it stops counting as a transaction. `false`: a
    /// partial reversal, which takes `amount` off and leaves the approval
    /// counted once on its card (part of it stands).
    pub whole: bool,
}

/// A past approval to count again, from the journal, at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore {
    pub token: Token,
    pub merchant_id: MerchantId,
    pub amount: Amount,
    pub at_ms: u64,
}
