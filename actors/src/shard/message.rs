//! The messages a shard's mailbox carries, from the handle to the shard.

use std::sync::Arc;

use protocol::Amount;
use protocol::domain::{DeclineReason, Token};
use protocol::ids::{MerchantId, Text};
use tokio::sync::oneshot;

use super::config::Limits;
use super::request::CardCheck;
use crate::card::CardLimits;
use crate::velocity::Totals;

/// Where a shard sends its answer to a step of a decision.
pub(super) type Reply = oneshot::Sender<Result<(), DeclineReason>>;

/// One step for a shard. Decision steps carry a reply and are shed when the
/// mailbox is full; give-backs and restores carry none and wait for room.
pub(super) enum Message {
    /// Card and merchant on this shard: both steps at once.
    /// Each decision step carries the limits its decision was started
    /// under, so all its steps judge by the same set.
    Decide {
        check: CardCheck,
        at_ms: u64,
        limits: Arc<Limits>,
        reply: Reply,
    },
    ReserveCard {
        token: Token,
        amount: Amount,
        at_ms: u64,
        card_limits: CardLimits,
        reply: Reply,
    },
    CheckMerchant {
        merchant_id: MerchantId,
        mcc: Option<Text<4>>,
        amount: Amount,
        at_ms: u64,
        limits: Arc<Limits>,
        reply: Reply,
    },
    GiveBackCard {
        token: Token,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
        whole: bool,
    },
    GiveBackMerchant {
        merchant_id: MerchantId,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
    },
    RestoreCard {
        token: Token,
        amount: Amount,
        at_ms: u64,
        now_ms: u64,
    },
    RestoreMerchant {
        merchant_id: MerchantId,
        amount: Amount,
        at_ms: u64,
        now_ms: u64,
    },
    /// What a card holds now in its day window (the longest, so every
    /// approval still counted), zero for a card the shard does not hold:
    /// read by tests and the simulation to check velocity against the
    /// journal. Waits for room, as a read must not be shed.
    CardDay {
        token: Token,
        now_ms: u64,
        reply: oneshot::Sender<Totals>,
    },
    /// A merchant's volume today; `None` for one not configured.
    MerchantDay {
        merchant_id: MerchantId,
        now_ms: u64,
        reply: oneshot::Sender<Option<Amount>>,
    },
}
