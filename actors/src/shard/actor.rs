//! One shard's task: it takes its mailbox in batches, handles each message to
//! completion against the cards and merchants it owns, then lets the card
//! table sweep for idle cards and publishes how many it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use protocol::Amount;
use protocol::domain::{DeclineReason, Token};
use protocol::ids::{MerchantId, Text};
use tokio::sync::mpsc;

use super::cards::CardTable;
use super::config::Limits;
use super::hash::EntityHash;
use super::message::Message;
use super::request::CardCheck;
use super::stats::Shared;
use crate::card::{CardLimits, CardState, Window};
use crate::merchant::MerchantState;
use crate::velocity::Shortfall;

/// Messages a shard takes from its mailbox at once: one wake-up serves them
/// all, and the batch bounds how long a sweep step waits.
const BATCH_MAX: usize = 64;

/// One shard's merchants' counters, by id. Their limits come with each
/// decision (see [`Limits`]); a merchant's counters are made on its first
/// decision under limits that know it, and kept when a reload drops it.
pub(super) type Merchants = HashMap<MerchantId, MerchantState, EntityHash>;

/// One shard's state, owned by its task: the shard owns these maps, so no lock.
pub(super) struct Shard {
    index: usize,
    cards: CardTable,
    merchants: Merchants,
    /// The latest time any message carried; the sweep judges idleness by it.
    now_ms: u64,
    shared: Arc<Shared>,
}

impl Shard {
    /// Shard `index`, holding `merchants` and no cards yet, as of `now_ms`.
    pub(super) fn new(
        index: usize,
        merchants: Merchants,
        now_ms: u64,
        shared: Arc<Shared>,
    ) -> Shard {
        Shard {
            index,
            cards: CardTable::new(now_ms),
            merchants,
            now_ms,
            shared,
        }
    }

    /// Handles messages until every handle is dropped and the mailbox is
    /// drained.
    pub(super) async fn run(mut self, mut mailbox: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        while mailbox.recv_many(&mut batch, BATCH_MAX).await > 0 {
            for message in batch.drain(..) {
                self.handle(message);
            }
            self.cards.sweep_due(self.now_ms);
            if let Some(cards) = self.shared.cards.get(self.index) {
                cards.store(self.cards.len(), Ordering::Relaxed);
            }
            if let Some(merchants) = self.shared.merchants.get(self.index) {
                merchants.store(self.merchants.len(), Ordering::Relaxed);
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Decide {
                check,
                at_ms,
                limits,
                reply,
            } => {
                self.see(at_ms);
                let result = self.decide(&check, at_ms, &limits);
                if reply.send(result).is_err() && result.is_ok() {
                    // Nobody heard the approval, so nobody will journal it or
                    // give it back: it must not count.
                    self.release_merchant(&check.merchant_id, check.amount);
                    self.release_card(&check.token, check.amount, at_ms);
                }
            }
            Message::ReserveCard {
                token,
                amount,
                at_ms,
                card_limits,
                reply,
            } => {
                self.see(at_ms);
                let result = self.reserve_card(token, amount, at_ms, &card_limits);
                if reply.send(result).is_err() && result.is_ok() {
                    self.release_card(&token, amount, at_ms);
                }
            }
            Message::CheckMerchant {
                merchant_id,
                mcc,
                amount,
                at_ms,
                limits,
                reply,
            } => {
                self.see(at_ms);
                let result = self.check_merchant(&limits, &merchant_id, mcc, amount, at_ms);
                if reply.send(result).is_err() && result.is_ok() {
                    self.release_merchant(&merchant_id, amount);
                }
            }
            Message::GiveBackCard {
                token,
                amount,
                original_at_ms,
                now_ms,
                whole,
            } => {
                self.see(now_ms);
                let result = match self.cards.find(&token) {
                    Some(card) if whole => card.give_back(amount, original_at_ms, now_ms),
                    Some(card) => card.give_back_part(amount, original_at_ms, now_ms),
                    // Only idle cards are evicted, so a card that is not here
                    // holds nothing: if the approval should still count, it
                    // was never counted (or the journal was not replayed).
                    None if CardState::would_hold(original_at_ms, now_ms) => Err(Shortfall),
                    None => Ok(()),
                };
                self.note_give_back(result);
            }
            Message::GiveBackMerchant {
                merchant_id,
                amount,
                original_at_ms,
                now_ms,
            } => {
                self.see(now_ms);
                // A merchant that is not configured never approved anything.
                if let Some(merchant) = self.merchants.get_mut(&merchant_id) {
                    let result = merchant.give_back(amount, original_at_ms, now_ms);
                    self.note_give_back(result);
                }
            }
            Message::RestoreCard {
                token,
                amount,
                at_ms,
                now_ms,
            } => {
                self.see(now_ms);
                if CardState::would_hold(at_ms, now_ms) {
                    let card = self.cards.find_or_insert(token, now_ms);
                    card.restore(amount, at_ms, now_ms);
                }
            }
            Message::RestoreMerchant {
                merchant_id,
                amount,
                at_ms,
                now_ms,
            } => {
                self.see(now_ms);
                if let Some(merchant) = self.merchants.get_mut(&merchant_id) {
                    merchant.restore(amount, at_ms, now_ms);
                }
            }
            Message::CardDay {
                token,
                now_ms,
                reply,
            } => {
                self.see(now_ms);
                let totals = self
                    .cards
                    .find(&token)
                    .map(|card| card.totals_at(Window::Day, now_ms))
                    .unwrap_or_default();
                let _ = reply.send(totals);
            }
            Message::MerchantDay {
                merchant_id,
                now_ms,
                reply,
            } => {
                self.see(now_ms);
                let volume = self
                    .merchants
                    .get(&merchant_id)
                    .map(MerchantState::daily_volume);
                let _ = reply.send(volume);
            }
        }
    }

    fn see(&mut self, at_ms: u64) {
        self.now_ms = self.now_ms.max(at_ms);
    }

    /// Both steps on one shard: the card's reservation stands only if the
    /// merchant approves too.
    fn decide(
        &mut self,
        check: &CardCheck,
        at_ms: u64,
        limits: &Limits,
    ) -> Result<(), DeclineReason> {
        self.reserve_card(check.token, check.amount, at_ms, &limits.card_limits)?;
        let merchant =
            self.check_merchant(limits, &check.merchant_id, check.mcc, check.amount, at_ms);
        if merchant.is_err() {
            self.release_card(&check.token, check.amount, at_ms);
        }
        merchant
    }

    fn reserve_card(
        &mut self,
        token: Token,
        amount: Amount,
        at_ms: u64,
        card_limits: &CardLimits,
    ) -> Result<(), DeclineReason> {
        let card = self.cards.find_or_insert(token, at_ms);
        card.check_and_reserve(card_limits, amount, at_ms)
    }

    /// Undoes a reservation made in this turn or held by a `CardHold`: the
    /// card cannot have been evicted meanwhile, since it holds the amount.
    fn release_card(&mut self, token: &Token, amount: Amount, at_ms: u64) {
        let result = match self.cards.find(token) {
            Some(card) => card.give_back(amount, at_ms, at_ms),
            None => Err(Shortfall),
        };
        self.note_give_back(result);
    }

    /// A merchant `limits` does not know is declined (03) before any
    /// counter is touched; one it knows and this shard has no counters for
    /// yet (added by a reload) starts with nothing approved.
    fn check_merchant(
        &mut self,
        limits: &Limits,
        merchant_id: &MerchantId,
        mcc: Option<Text<4>>,
        amount: Amount,
        at_ms: u64,
    ) -> Result<(), DeclineReason> {
        let merchant_limits = limits
            .merchants
            .get(merchant_id)
            .ok_or(DeclineReason::UnknownMerchant)?;
        let merchant = self
            .merchants
            .entry(*merchant_id)
            .or_insert_with(|| MerchantState::new(at_ms));
        merchant.check(merchant_limits, mcc, amount, at_ms)
    }

    fn release_merchant(&mut self, merchant_id: &MerchantId, amount: Amount) {
        if let Some(merchant) = self.merchants.get_mut(merchant_id) {
            merchant.release(amount);
        }
    }

    /// Counts a give-back of more than the windows held; they are left at
    /// zero. On one node that is a give-back of an approval never counted
    /// or given back already, which the engine's simulation checks never
    /// happens. In a fleet it is expected: a reversal taken by another node
    /// than its original's gives back on actors that never counted it (the
    /// fleet's shared store holds the card's true count).
    fn note_give_back(&self, result: Result<(), Shortfall>) {
        if result.is_err() {
            self.shared
                .give_back_shortfall_total
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
