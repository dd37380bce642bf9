//! Shard actors: one tokio task per shard, each owning the cards and merchants
//! whose keys hash to it, fed by a bounded mailbox.
//!
//! A shard handles one message to completion before the next, so a card's
//! windows change in the order its requests reached the shard, and no state is
//! shared: the shard owns its maps, so no lock. [`Shards`] is the handle the
//! ingress holds; it picks the shard by the entity's key and carries the
//! answer back on a oneshot channel.
//!
//! A decision visits the card's shard, then the merchant's. When both keys
//! land on one shard the two steps are one message, decided atomically; when
//! they differ, the card's reservation is held by a guard that gives it back
//! if the merchant declines or its mailbox is full. If the asker stops
//! waiting (its future is dropped, say by a timeout), a step not yet answered
//! is undone by the shard, which finds nobody to answer, and an approval
//! answered but not yet read is given back by the future's guards. So no path
//! leaves a reservation counted that nobody will journal.
//!
//! Shards never wait on one another: only the handle sends, so every mailbox
//! drains, and a give-back may wait for room without any risk of deadlock.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use protocol::Amount;
use protocol::domain::{DeclineReason, Token};
use protocol::ids::{MerchantId, Text};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::card::{CardLimits, CardState};
use crate::clock::Clock;
use crate::merchant::{MerchantLimits, MerchantState};
use crate::velocity::Shortfall;

/// How the shards are laid out and what they enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Shards to run; 0 means one per available core.
    pub shard_count: usize,
    /// Messages a shard's mailbox holds before decisions are shed with 91.
    pub mailbox_capacity: usize,
    /// Limits every card is held to.
    pub card_limits: CardLimits,
    /// The merchants the switch knows; any other is declined (58).
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
    /// Checks what [`Shards::start`] would otherwise quietly correct, so a
    /// configuration loader can name the bad key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.mailbox_capacity == 0 {
            return Err(Error::MailboxCapacityZero);
        }
        Ok(())
    }
}

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
/// decided at (what [`Shards::decide_at`] was given), so the amount leaves the
/// very bucket it entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiveBack {
    pub token: Token,
    pub merchant_id: MerchantId,
    pub amount: Amount,
    pub original_at_ms: u64,
}

/// A past approval to count again, from the journal, at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore {
    pub token: Token,
    pub merchant_id: MerchantId,
    pub amount: Amount,
    pub at_ms: u64,
}

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
    /// Merchants held.
    pub merchants: usize,
}

/// Bytes one card takes in a shard's table of cards, beside the index entry
/// (a token and a `u32`) that finds it.
pub const CARD_SLOT_BYTES: usize = std::mem::size_of::<CardSlot>();

/// Messages a shard takes from its mailbox at once: one wake-up serves them
/// all, and the batch bounds how long a sweep step waits.
const BATCH_MAX: usize = 64;

/// How long the eviction sweep takes to pass over all of a shard's cards, by
/// the shards' clock. Only cards idle for a whole day are evicted, so an hour
/// per pass is plenty, and it costs a shard with a million cards about 280
/// looks a second: far below a decision each, where a fixed number of looks
/// per message measurably slowed decisions under load (each look at a card
/// is a cache miss).
const SWEEP_PASS_MS: u64 = 3_600_000;

/// The most cards one batch looks at, so a clock that jumped (or a shard
/// that sat idle) spreads its catching up over several batches.
const SWEEP_STEPS_MAX: u64 = 4_096;

type Reply = oneshot::Sender<Result<(), DeclineReason>>;

enum Message {
    /// Card and merchant on this shard: both steps at once.
    Decide {
        check: CardCheck,
        at_ms: u64,
        reply: Reply,
    },
    ReserveCard {
        token: Token,
        amount: Amount,
        at_ms: u64,
        reply: Reply,
    },
    CheckMerchant {
        merchant_id: MerchantId,
        mcc: Option<Text<4>>,
        amount: Amount,
        at_ms: u64,
        reply: Reply,
    },
    GiveBackCard {
        token: Token,
        amount: Amount,
        original_at_ms: u64,
        now_ms: u64,
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
}

/// The handle to the running shards. Cloning it is one reference count.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<Inner>,
}

struct Inner {
    mailboxes: Vec<mpsc::Sender<Message>>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
}

/// What the shards report and the handle reads, without a message.
struct Shared {
    shed_total: AtomicU64,
    give_back_shortfall_total: AtomicU64,
    undelivered_total: AtomicU64,
    cards: Vec<AtomicUsize>,
    merchants: Vec<usize>,
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
        let mut merchants: Vec<HashMap<MerchantId, MerchantEntry, EntityHash>> =
            (0..shard_count).map(|_| HashMap::default()).collect();
        for (merchant_id, limits) in config.merchants {
            let shard = pick(shard_hash(merchant_id.as_bytes()), shard_count);
            if let Some(shard_merchants) = merchants.get_mut(shard) {
                let state = MerchantState::new(now_ms);
                shard_merchants.insert(merchant_id, MerchantEntry { limits, state });
            }
        }
        let shared = Arc::new(Shared {
            shed_total: AtomicU64::new(0),
            give_back_shortfall_total: AtomicU64::new(0),
            undelivered_total: AtomicU64::new(0),
            cards: (0..shard_count).map(|_| AtomicUsize::new(0)).collect(),
            merchants: merchants.iter().map(HashMap::len).collect(),
        });
        let mut mailboxes = Vec::with_capacity(shard_count);
        for (index, merchants) in merchants.into_iter().enumerate() {
            let (sender, receiver) = mpsc::channel(config.mailbox_capacity.max(1));
            mailboxes.push(sender);
            let shard = Shard {
                index,
                card_limits: config.card_limits,
                card_index: HashMap::default(),
                cards: Vec::new(),
                merchants,
                sweep_cursor: 0,
                swept_at_ms: now_ms,
                now_ms,
                shared: Arc::clone(&shared),
            };
            tokio::spawn(shard.run(receiver));
        }
        Shards {
            inner: Arc::new(Inner {
                mailboxes,
                shared,
                clock,
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
        pick(shard_hash(token.as_bytes()), self.shard_count())
    }

    /// The shard that owns a merchant.
    pub fn merchant_shard(&self, merchant_id: &MerchantId) -> usize {
        pick(shard_hash(merchant_id.as_bytes()), self.shard_count())
    }

    /// Decides a request now, by the shards' clock: the card's windows first
    /// (61, 65), then the merchant's limits (13, 58, 61). `Ok` means both
    /// approved and the approval is counted; the caller must journal it, or
    /// [`give_back`](Shards::give_back) it if the journal fails.
    ///
    /// A full mailbox answers at once with [`DeclineReason::Overloaded`]
    /// (91) and is counted in [`ShardStats::shed_total`]; a stopped shard
    /// answers the same.
    pub async fn decide(&self, check: CardCheck) -> Result<(), DeclineReason> {
        self.decide_at(check, self.inner.clock.now_ms()).await
    }

    /// [`decide`](Shards::decide) as of `at_ms`: the time the caller will
    /// record in the journal, so a later give-back with `original_at_ms =
    /// at_ms` leaves exactly the buckets this approval entered, even when the
    /// two readings of a clock would have straddled a bucket boundary.
    ///
    /// Dropping the future before it finishes gives back whatever it had
    /// reserved, so a timeout around it leaves no trace.
    pub async fn decide_at(&self, check: CardCheck, at_ms: u64) -> Result<(), DeclineReason> {
        let card_shard = self.card_shard(&check.token);
        let merchant_shard = self.merchant_shard(&check.merchant_id);
        let card = Some((card_shard, check.token));
        let merchant = Some((merchant_shard, check.merchant_id));
        if card_shard == merchant_shard {
            let (reply, answer) = oneshot::channel();
            let decide = Message::Decide {
                check,
                at_ms,
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
                merchants: shared.merchants.get(index).copied().unwrap_or(0),
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

/// One card in a shard's table. The token is kept beside the state so the
/// sweep can remove the card's index entry when it evicts it.
struct CardSlot {
    token: Token,
    state: CardState,
}

struct MerchantEntry {
    limits: MerchantLimits,
    state: MerchantState,
}

/// One shard's state, owned by its task: the shard owns these maps, so no lock.
struct Shard {
    index: usize,
    card_limits: CardLimits,
    /// Token to position in `cards`. Cards live in a dense vector rather than
    /// in the map itself so the map's spare capacity (up to half its slots
    /// after it grows) costs 24 bytes a slot instead of 200, and so the sweep
    /// can walk them with a plain cursor.
    card_index: HashMap<Token, u32, EntityHash>,
    cards: Vec<CardSlot>,
    merchants: HashMap<MerchantId, MerchantEntry, EntityHash>,
    sweep_cursor: usize,
    /// The shard time the sweep has caught up to.
    swept_at_ms: u64,
    /// The latest time any message carried; the sweep judges idleness by it.
    now_ms: u64,
    shared: Arc<Shared>,
}

impl Shard {
    async fn run(mut self, mut mailbox: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        while mailbox.recv_many(&mut batch, BATCH_MAX).await > 0 {
            for message in batch.drain(..) {
                self.handle(message);
            }
            self.sweep_due();
            if let Some(cards) = self.shared.cards.get(self.index) {
                cards.store(self.cards.len(), Ordering::Relaxed);
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Decide {
                check,
                at_ms,
                reply,
            } => {
                self.see(at_ms);
                let result = self.decide(&check, at_ms);
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
                reply,
            } => {
                self.see(at_ms);
                let result = self.reserve_card(token, amount, at_ms);
                if reply.send(result).is_err() && result.is_ok() {
                    self.release_card(&token, amount, at_ms);
                }
            }
            Message::CheckMerchant {
                merchant_id,
                mcc,
                amount,
                at_ms,
                reply,
            } => {
                self.see(at_ms);
                let result = self.check_merchant(&merchant_id, mcc, amount, at_ms);
                if reply.send(result).is_err() && result.is_ok() {
                    self.release_merchant(&merchant_id, amount);
                }
            }
            Message::GiveBackCard {
                token,
                amount,
                original_at_ms,
                now_ms,
            } => {
                self.see(now_ms);
                let result = match self.card_index.get(&token) {
                    Some(&slot) => self.card(slot).give_back(amount, original_at_ms, now_ms),
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
                    let result = merchant.state.give_back(amount, original_at_ms, now_ms);
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
                    let slot = self.card_slot(token, now_ms);
                    self.card(slot).restore(amount, at_ms, now_ms);
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
                    merchant.state.restore(amount, at_ms, now_ms);
                }
            }
        }
    }

    fn see(&mut self, at_ms: u64) {
        self.now_ms = self.now_ms.max(at_ms);
    }

    /// Both steps on one shard: the card's reservation stands only if the
    /// merchant approves too.
    fn decide(&mut self, check: &CardCheck, at_ms: u64) -> Result<(), DeclineReason> {
        self.reserve_card(check.token, check.amount, at_ms)?;
        let merchant = self.check_merchant(&check.merchant_id, check.mcc, check.amount, at_ms);
        if merchant.is_err() {
            self.release_card(&check.token, check.amount, at_ms);
        }
        merchant
    }

    fn card_slot(&mut self, token: Token, now_ms: u64) -> u32 {
        if let Some(&slot) = self.card_index.get(&token) {
            return slot;
        }
        // A shard would need 4 billion cards (800 GB) to pass `u32`.
        let slot = u32::try_from(self.cards.len()).unwrap_or(u32::MAX);
        self.cards.push(CardSlot {
            token,
            state: CardState::new(now_ms),
        });
        self.card_index.insert(token, slot);
        slot
    }

    fn card(&mut self, slot: u32) -> &mut CardState {
        // `card_index` and `cards` change together in this file only.
        &mut self.cards[slot as usize].state
    }

    fn reserve_card(
        &mut self,
        token: Token,
        amount: Amount,
        at_ms: u64,
    ) -> Result<(), DeclineReason> {
        let limits = self.card_limits;
        let slot = self.card_slot(token, at_ms);
        self.card(slot).check_and_reserve(&limits, amount, at_ms)
    }

    /// Undoes a reservation made in this turn or held by a `CardHold`: the
    /// card cannot have been evicted meanwhile, since it holds the amount.
    fn release_card(&mut self, token: &Token, amount: Amount, at_ms: u64) {
        let result = match self.card_index.get(token) {
            Some(&slot) => self.card(slot).give_back(amount, at_ms, at_ms),
            None => Err(Shortfall),
        };
        self.note_give_back(result);
    }

    fn check_merchant(
        &mut self,
        merchant_id: &MerchantId,
        mcc: Option<Text<4>>,
        amount: Amount,
        at_ms: u64,
    ) -> Result<(), DeclineReason> {
        let merchant = self
            .merchants
            .get_mut(merchant_id)
            .ok_or(DeclineReason::UnknownMerchant)?;
        merchant.state.check(&merchant.limits, mcc, amount, at_ms)
    }

    fn release_merchant(&mut self, merchant_id: &MerchantId, amount: Amount) {
        if let Some(merchant) = self.merchants.get_mut(merchant_id) {
            merchant.state.release(amount);
        }
    }

    fn note_give_back(&self, result: Result<(), Shortfall>) {
        if result.is_err() {
            self.shared
                .give_back_shortfall_total
                .fetch_add(1, Ordering::Relaxed);
        }
        // A shortfall is a give-back of an approval that was never counted or
        // was given back already: a bug in the caller. Release builds count
        // it and keep the windows at zero; debug builds stop here.
        debug_assert!(
            result.is_ok(),
            "shard {}: give-back of more than was counted",
            self.index
        );
    }

    /// Sweeps as many cards as the time since the last sweep is worth, so a
    /// pass over every card takes `SWEEP_PASS_MS` of the shards' clock.
    fn sweep_due(&mut self) {
        let elapsed_ms = self.now_ms.saturating_sub(self.swept_at_ms);
        let cards = self.cards.len() as u64;
        let due = (u128::from(elapsed_ms) * u128::from(cards) / u128::from(SWEEP_PASS_MS)) as u64;
        if due == 0 {
            // Less than one card's worth of time: let it add up. An empty
            // shard has nothing to owe.
            if cards == 0 {
                self.swept_at_ms = self.now_ms;
            }
            return;
        }
        let steps = due.min(cards).min(SWEEP_STEPS_MAX);
        self.swept_at_ms = if steps == cards {
            // A whole pass is done: nothing more can be owed.
            self.now_ms
        } else {
            // Time is spent in proportion to the steps taken; what the cap
            // held back stays owed to the next batches.
            let spent_ms = steps * SWEEP_PASS_MS / cards;
            self.swept_at_ms.saturating_add(spent_ms).min(self.now_ms)
        };
        self.sweep(steps as usize);
    }

    /// Looks at the next `steps` cards and drops the idle ones: a card with
    /// nothing in any window decides exactly as a new one would, so evicting
    /// it loses nothing.
    fn sweep(&mut self, steps: usize) {
        for _ in 0..steps {
            if self.sweep_cursor >= self.cards.len() {
                self.sweep_cursor = 0;
                self.shrink();
                if self.cards.is_empty() {
                    return;
                }
            }
            let cursor = self.sweep_cursor;
            let now_ms = self.now_ms;
            let idle = self
                .cards
                .get_mut(cursor)
                .is_some_and(|slot| slot.state.is_idle(now_ms));
            if !idle {
                self.sweep_cursor += 1;
                continue;
            }
            let evicted = self.cards.swap_remove(cursor);
            self.card_index.remove(&evicted.token);
            // The last card moved into the hole; the cursor looks at it next.
            if let Some(moved) = self.cards.get(cursor) {
                let slot = u32::try_from(cursor).unwrap_or(u32::MAX);
                self.card_index.insert(moved.token, slot);
            }
        }
    }

    /// After a full pass, gives memory back if most cards have gone. Both
    /// the vector and the map keep twice what they hold, so the next burst
    /// does not reallocate at once.
    fn shrink(&mut self) {
        const SHRINK_FLOOR: usize = 1024;
        let held = self.cards.len();
        if self.cards.capacity() > SHRINK_FLOOR.max(4 * held) {
            self.cards.shrink_to(2 * held);
            self.card_index.shrink_to(2 * held);
        }
    }
}

/// The shard's map hasher. Tokens are keyed hashes and merchants are
/// configured, so nobody can choose keys that collide, and SipHash's
/// protection against that is not worth its cost on every request. Words are
/// folded FxHash-style and finished with SplitMix64's mixer so the low bits
/// the table indexes by depend on every byte.
#[derive(Default)]
struct EntityHasher {
    hash: u64,
}

type EntityHash = BuildHasherDefault<EntityHasher>;

impl Hasher for EntityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.hash =
                (self.hash.rotate_left(5) ^ word(chunk)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        mix(self.hash)
    }
}

/// Up to eight bytes as a little-endian word.
fn word(chunk: &[u8]) -> u64 {
    chunk
        .iter()
        .rev()
        .fold(0u64, |word, &byte| (word << 8) | u64::from(byte))
}

/// SplitMix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash that picks a shard. It differs from the map's (another fold,
/// another seed), so the keys one shard holds are not all alike in the bits
/// its map indexes by.
fn shard_hash(bytes: &[u8]) -> u64 {
    let folded = bytes.chunks(8).fold(0x2545_f491_4f6c_dd1d, |hash, chunk| {
        (hash ^ word(chunk)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    mix(folded)
}

/// A hash to a shard index by its high bits (Lemire's multiply-shift), which
/// avoids a division and a bias towards low indices.
fn pick(hash: u64, shard_count: usize) -> usize {
    ((u128::from(hash) * shard_count as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use protocol::domain::pad;

    fn token(n: u64) -> Token {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&mix(n).to_le_bytes());
        bytes[8..].copy_from_slice(&mix(!n).to_le_bytes());
        Token::from_bytes(bytes)
    }

    #[test]
    fn cards_spread_evenly_over_shards() {
        let mut per_shard = [0u32; 3];
        for n in 0..30_000 {
            per_shard[pick(shard_hash(token(n).as_bytes()), 3)] += 1;
        }
        for count in per_shard {
            assert!((9_500..10_500).contains(&count), "{per_shard:?}");
        }
    }

    #[test]
    fn a_card_slot_is_near_200_bytes() {
        assert_eq!(CARD_SLOT_BYTES, 200);
    }

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
