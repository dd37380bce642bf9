//! [`Shards`], the handle the ingress holds: it starts one task per shard,
//! sends each step of a request to the shard that owns its key, sheds at once
//! when a mailbox is full, and guards a card's reservation until its answer
//! is heard, so a dropped future leaves nothing counted.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use protocol::Amount;
use protocol::domain::{DeclineReason, Token};
use protocol::ids::MerchantId;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::actor::{Merchants, Shard};
use super::config::{Limits, ShardConfig};
use super::hash::shard_of;
use super::message::Message;
use super::request::{CardCheck, GiveBack, Restore};
use super::stats::{ShardLoad, ShardStats, Shared};
use crate::clock::Clock;
use crate::merchant::MerchantState;
use crate::velocity::Totals;

/// The handle to the running shards. Cloning it is one reference count.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<Inner>,
}

struct Inner {
    mailboxes: Vec<mpsc::Sender<Message>>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    /// The limits the shards started with, for [`Shards::decide`]; the
    /// engine passes its own, which a reload replaces.
    limits_at_start: Arc<Limits>,
}

impl fmt::Debug for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("shard_count", &self.shard_count())
            .finish_non_exhaustive()
    }
}

impl Shards {
    /// Spawns the shard tasks on the current tokio runtime (so it must be
    /// called from inside one). A `mailbox_capacity` of 0 is taken as 1; call
    /// [`ShardConfig::validate`] first to refuse it instead.
    ///
    /// The tasks end once every handle is dropped and their mailboxes are
    /// drained, so in-flight work finishes on shutdown.
    pub fn start(config: ShardConfig, clock: Arc<dyn Clock>) -> Shards {
        let shard_count = match config.shard_count {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let now_ms = clock.now_ms();
        let limits_at_start = Arc::new(config.limits());
        // The configured merchants' counters exist from the start, so
        // journal replay restores their volume.
        let mut merchants: Vec<Merchants> = (0..shard_count).map(|_| HashMap::default()).collect();
        for merchant_id in config.merchants.into_keys() {
            let shard = shard_of(merchant_id.as_bytes(), shard_count);
            if let Some(shard_merchants) = merchants.get_mut(shard) {
                shard_merchants.insert(merchant_id, MerchantState::new(now_ms));
            }
        }
        let shared = Arc::new(Shared::new(
            shard_count,
            merchants.iter().map(HashMap::len).collect(),
        ));
        let mut mailboxes = Vec::with_capacity(shard_count);
        for (index, merchants) in merchants.into_iter().enumerate() {
            let (sender, receiver) = mpsc::channel(config.mailbox_capacity.max(1));
            mailboxes.push(sender);
            let shard = Shard::new(index, merchants, now_ms, Arc::clone(&shared));
            tokio::spawn(shard.run(receiver));
        }
        Shards {
            inner: Arc::new(Inner {
                mailboxes,
                shared,
                clock,
                limits_at_start,
            }),
        }
    }

    /// How many shards run.
    pub fn shard_count(&self) -> usize {
        self.inner.mailboxes.len()
    }

    /// The shard that owns a card. Tokens are keyed hashes, already uniform,
    /// so mixing their words is enough to spread them.
    pub fn card_shard(&self, token: &Token) -> usize {
        shard_of(token.as_bytes(), self.shard_count())
    }

    /// The shard that owns a merchant.
    pub fn merchant_shard(&self, merchant_id: &MerchantId) -> usize {
        shard_of(merchant_id.as_bytes(), self.shard_count())
    }

    /// Decides a request now, by the shards' clock: the card's windows first
    /// (61, 65), then the merchant (03 when unknown) and its limits (13, 58,
    /// 61). `Ok` means both approved and the approval is counted; the caller
    /// must journal it, or [`give_back`](Shards::give_back) it if the journal
    /// fails.
    ///
    /// A full mailbox answers at once with [`DeclineReason::Overloaded`]
    /// (91) and is counted in [`ShardStats::shed_total`]; a stopped shard
    /// answers the same.
    ///
    /// It judges by the limits the shards started with; the engine, whose
    /// limits a configuration reload replaces, uses
    /// [`decide_at`](Shards::decide_at) with its own.
    pub async fn decide(&self, check: CardCheck) -> Result<(), DeclineReason> {
        let limits = Arc::clone(&self.inner.limits_at_start);
        self.decide_at(check, self.inner.clock.now_ms(), &limits)
            .await
    }

    /// The limits the shards started with ([`ShardConfig`]'s).
    pub fn limits_at_start(&self) -> Arc<Limits> {
        Arc::clone(&self.inner.limits_at_start)
    }

    /// [`decide`](Shards::decide) as of `at_ms`: the time the caller will
    /// record in the journal, so a later give-back with `original_at_ms =
    /// at_ms` leaves exactly the buckets this approval entered, even when the
    /// two readings of a clock would have straddled a bucket boundary.
    ///
    /// Every step is judged by `limits`, whichever limits other decisions
    /// running at the same time carry.
    ///
    /// Dropping the future before it finishes gives back whatever it had
    /// reserved, so a timeout around it leaves no trace.
    pub async fn decide_at(
        &self,
        check: CardCheck,
        at_ms: u64,
        limits: &Arc<Limits>,
    ) -> Result<(), DeclineReason> {
        let card_shard = self.card_shard(&check.token);
        let merchant_shard = self.merchant_shard(&check.merchant_id);
        let card = Some((card_shard, check.token));
        let merchant = Some((merchant_shard, check.merchant_id));
        if card_shard == merchant_shard {
            let (reply, answer) = oneshot::channel();
            let decide = Message::Decide {
                check,
                at_ms,
                limits: Arc::clone(limits),
                reply,
            };
            self.offer(card_shard, decide)?;
            return self
                .pending(answer, card, merchant, &check, at_ms)
                .wait()
                .await;
        }

        let (reply, answer) = oneshot::channel();
        let reserve = Message::ReserveCard {
            token: check.token,
            amount: check.amount,
            at_ms,
            card_limits: limits.card_limits,
            reply,
        };
        self.offer(card_shard, reserve)?;
        self.pending(answer, card, None, &check, at_ms)
            .wait()
            .await?;
        // From here until the merchant answers, the reservation is this
        // future's to give back.
        let hold = CardHold {
            shards: self,
            shard: card_shard,
            token: check.token,
            amount: check.amount,
            at_ms,
            armed: true,
        };

        let (reply, answer) = oneshot::channel();
        let check_merchant = Message::CheckMerchant {
            merchant_id: check.merchant_id,
            mcc: check.mcc,
            amount: check.amount,
            at_ms,
            limits: Arc::clone(limits),
            reply,
        };
        let merchant = match self.offer(merchant_shard, check_merchant) {
            Ok(()) => {
                let pending = self.pending(answer, None, merchant, &check, at_ms);
                pending.wait().await
            }
            Err(reason) => Err(reason),
        };
        match merchant {
            Ok(()) => {
                hold.keep();
                Ok(())
            }
            Err(reason) => {
                hold.release().await;
                Err(reason)
            }
        }
    }

    fn pending(
        &self,
        answer: oneshot::Receiver<Result<(), DeclineReason>>,
        card: Option<(usize, Token)>,
        merchant: Option<(usize, MerchantId)>,
        check: &CardCheck,
        at_ms: u64,
    ) -> Pending<'_> {
        Pending {
            shards: self,
            answer: Some(answer),
            card,
            merchant,
            amount: check.amount,
            at_ms,
        }
    }

    /// Takes an approval back from its card's windows and its merchant's
    /// daily volume, once. Call it exactly once per approval that will not
    /// stand: a reversal, or an approval whose journal record failed.
    ///
    /// It waits for mailbox room instead of shedding (`send().await`, not
    /// `try_send`): a lost give-back would leave a card short of headroom for
    /// up to a day, while waiting is safe, because a shard never waits on
    /// another shard, so every mailbox drains. Give-backs are rare beside
    /// decisions, and sharing the decisions' mailbox keeps them in order with
    /// them and bounded by the same capacity, which a separate unbounded lane
    /// would not. Await it to the end: a give-back dropped half-way may have
    /// reached the card's shard and not the merchant's.
    ///
    /// Only a stopped shard (a bug made it panic) can refuse it; that is
    /// counted in [`ShardStats::undelivered_total`], since the caller could
    /// do nothing better with it than log it.
    pub async fn give_back(&self, give_back: GiveBack) {
        let now_ms = self.inner.clock.now_ms();
        self.deliver(
            self.card_shard(&give_back.token),
            Message::GiveBackCard {
                token: give_back.token,
                amount: give_back.amount,
                original_at_ms: give_back.original_at_ms,
                now_ms,
                whole: give_back.whole,
            },
        )
        .await;
        self.deliver(
            self.merchant_shard(&give_back.merchant_id),
            Message::GiveBackMerchant {
                merchant_id: give_back.merchant_id,
                amount: give_back.amount,
                original_at_ms: give_back.original_at_ms,
                now_ms,
            },
        )
        .await;
    }

    /// Counts a past approval without checking limits: journal replay at
    /// start, for approvals within the longest window (older ones are
    /// skipped without creating state). Waits for mailbox room; a stopped
    /// shard is counted as for [`give_back`](Shards::give_back).
    pub async fn restore(&self, restore: Restore) {
        let now_ms = self.inner.clock.now_ms();
        self.deliver(
            self.card_shard(&restore.token),
            Message::RestoreCard {
                token: restore.token,
                amount: restore.amount,
                at_ms: restore.at_ms,
                now_ms,
            },
        )
        .await;
        self.deliver(
            self.merchant_shard(&restore.merchant_id),
            Message::RestoreMerchant {
                merchant_id: restore.merchant_id,
                amount: restore.amount,
                at_ms: restore.at_ms,
                now_ms,
            },
        )
        .await;
    }

    /// What `token`'s card holds now in its day window, the longest, so
    /// every approval still counted: zero for a card no shard holds. For
    /// tests and the simulation, which check it against the journal.
    pub async fn card_day(&self, token: Token) -> Totals {
        let (reply, answer) = oneshot::channel();
        let now_ms = self.inner.clock.now_ms();
        let message = Message::CardDay {
            token,
            now_ms,
            reply,
        };
        self.deliver(self.card_shard(&token), message).await;
        answer.await.unwrap_or_default()
    }

    /// `merchant_id`'s volume today; `None` for a merchant not configured.
    pub async fn merchant_day(&self, merchant_id: MerchantId) -> Option<Amount> {
        let (reply, answer) = oneshot::channel();
        let now_ms = self.inner.clock.now_ms();
        let message = Message::MerchantDay {
            merchant_id,
            now_ms,
            reply,
        };
        self.deliver(self.merchant_shard(&merchant_id), message)
            .await;
        answer.await.ok().flatten()
    }

    /// Mailbox depths, shed and shortfall counts, entities per shard.
    pub async fn stats(&self) -> ShardStats {
        let shared = &self.inner.shared;
        let shards = self
            .inner
            .mailboxes
            .iter()
            .enumerate()
            .map(|(index, mailbox)| ShardLoad {
                mailbox_depth: mailbox.max_capacity() - mailbox.capacity(),
                mailbox_capacity: mailbox.max_capacity(),
                cards: shared
                    .cards
                    .get(index)
                    .map_or(0, |cards| cards.load(Ordering::Relaxed)),
                merchants: shared
                    .merchants
                    .get(index)
                    .map_or(0, |merchants| merchants.load(Ordering::Relaxed)),
            })
            .collect();
        ShardStats {
            shards,
            shed_total: shared.shed_total.load(Ordering::Relaxed),
            give_back_shortfall_total: shared.give_back_shortfall_total.load(Ordering::Relaxed),
            undelivered_total: shared.undelivered_total.load(Ordering::Relaxed),
        }
    }

    /// Puts a decision's message in a mailbox, or sheds it at once.
    fn offer(&self, shard: usize, message: Message) -> Result<(), DeclineReason> {
        let Some(mailbox) = self.inner.mailboxes.get(shard) else {
            return Err(DeclineReason::Overloaded);
        };
        match mailbox.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.inner.shared.shed_total.fetch_add(1, Ordering::Relaxed);
                Err(DeclineReason::Overloaded)
            }
            Err(TrySendError::Closed(_)) => Err(DeclineReason::Overloaded),
        }
    }

    /// Puts a message that must not be lost in a mailbox, waiting for room.
    /// Only a stopped shard refuses it, and that is counted.
    async fn deliver(&self, shard: usize, message: Message) {
        let delivered = match self.inner.mailboxes.get(shard) {
            Some(mailbox) => mailbox.send(message).await.is_ok(),
            None => false,
        };
        if !delivered {
            self.inner
                .shared
                .undelivered_total
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`deliver`](Shards::deliver) from a `drop`, which cannot wait: into
    /// the mailbox if there is room, else by a task that waits for room.
    fn send_soon(&self, shard: usize, message: Message) {
        let Some(mailbox) = self.inner.mailboxes.get(shard) else {
            return;
        };
        if let Err(TrySendError::Full(message)) = mailbox.try_send(message)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let mailbox = mailbox.clone();
            runtime.spawn(async move { mailbox.send(message).await.ok() });
        }
    }
}

/// A card reservation made on one shard while the merchant is asked on
/// another. Unless kept, it is given back: by `release` when the merchant
/// declines, or by `drop` when the future holding it is dropped.
struct CardHold<'a> {
    shards: &'a Shards,
    shard: usize,
    token: Token,
    amount: Amount,
    at_ms: u64,
    armed: bool,
}

impl CardHold<'_> {
    fn give_back_message(&self) -> Message {
        Message::GiveBackCard {
            token: self.token,
            amount: self.amount,
            original_at_ms: self.at_ms,
            now_ms: self.at_ms,
            whole: true,
        }
    }

    fn keep(mut self) {
        self.armed = false;
    }

    async fn release(mut self) {
        // Disarmed only once the message is in the mailbox: dropped while
        // waiting for room, `drop` still sends it.
        self.shards
            .deliver(self.shard, self.give_back_message())
            .await;
        self.armed = false;
    }
}

impl Drop for CardHold<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shards.send_soon(self.shard, self.give_back_message());
        }
    }
}

/// An answer a decision is waiting for. If the decision's future is dropped
/// first, the channel is closed: an answer not yet sent then fails to send and
/// the shard undoes its own step, and an approval already sent but not read is
/// given back from here. Either way nothing stays counted that the caller
/// never heard of.
struct Pending<'a> {
    shards: &'a Shards,
    answer: Option<oneshot::Receiver<Result<(), DeclineReason>>>,
    /// The steps the awaited message takes, to give back if unheard.
    card: Option<(usize, Token)>,
    merchant: Option<(usize, MerchantId)>,
    amount: Amount,
    at_ms: u64,
}

impl Pending<'_> {
    async fn wait(mut self) -> Result<(), DeclineReason> {
        let Some(answer) = self.answer.as_mut() else {
            return Err(DeclineReason::Overloaded);
        };
        // A reply dropped unsent means the shard stopped mid-message.
        let result = answer.await.unwrap_or(Err(DeclineReason::Overloaded));
        // Heard: from here the caller owns the outcome.
        self.answer = None;
        result
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let Some(mut answer) = self.answer.take() else {
            return;
        };
        answer.close();
        if answer.try_recv() != Ok(Ok(())) {
            return;
        }
        if let Some((shard, token)) = self.card {
            let give_back = Message::GiveBackCard {
                token,
                amount: self.amount,
                original_at_ms: self.at_ms,
                now_ms: self.at_ms,
                whole: true,
            };
            self.shards.send_soon(shard, give_back);
        }
        if let Some((shard, merchant_id)) = self.merchant {
            let give_back = Message::GiveBackMerchant {
                merchant_id,
                amount: self.amount,
                original_at_ms: self.at_ms,
                now_ms: self.at_ms,
            };
            self.shards.send_soon(shard, give_back);
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::domain::pad;

    use super::*;
    use crate::clock::ManualClock;
    use crate::merchant::MerchantLimits;
    use crate::shard::hash::tests::token;

    #[tokio::test]
    async fn a_full_mailbox_sheds_at_once_and_counts() {
        // On the current-thread runtime the shard cannot run until this task
        // yields, so the first decision fills the one-message mailbox and the
        // second finds it full: deterministic without sleeping.
        let merchant = pad::<15>("M1").unwrap();
        let config = ShardConfig {
            shard_count: 1,
            mailbox_capacity: 1,
            merchants: HashMap::from([(merchant, MerchantLimits::default())]),
            ..ShardConfig::default()
        };
        let shards = Shards::start(config, Arc::new(ManualClock::new(1_000)));
        let check = |n| CardCheck {
            token: token(n),
            merchant_id: merchant,
            mcc: None,
            amount: Amount::from_minor(100).unwrap(),
        };
        let (first, second) = tokio::join!(shards.decide(check(1)), async {
            let stats = shards.stats().await;
            assert_eq!(stats.shards[0].mailbox_depth, 1);
            shards.decide(check(2)).await
        });
        assert_eq!(first, Ok(()));
        assert_eq!(second, Err(DeclineReason::Overloaded));
        let stats = shards.stats().await;
        assert_eq!(stats.shed_total, 1);
        assert_eq!(stats.shards[0].mailbox_depth, 0);
        assert_eq!(stats.shards[0].mailbox_capacity, 1);
        assert_eq!(stats.shards[0].cards, 1);
        assert_eq!(stats.shards[0].merchants, 1);
        // The shed request left no trace: its card was never created.
        assert_eq!(shards.decide(check(2)).await, Ok(()));
    }
}
