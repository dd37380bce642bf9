//! The engine driven in-process: a manual clock, a seeded random source, the
//! real actors and group commit over the in-memory journal backend, and no
//! socket. Each test says what a request was answered, what the journal
//! holds, and what velocity was counted or given back.

// A panic in a test is a failed assertion, also in its helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actors::{
    BinRange, CardLimits, Clock, Limits, ManualClock, MerchantLimits, RuleConfig, ShardConfig,
    Shards, WindowLimit,
};
use protocol::domain::{
    AcquirerKeys, Authorization, Channel, Decision, DeclineReason, OriginalRef, Reversal,
    ReversalKind, ReversedAmount, Token, TransactionId, TransactionKind, pad,
};
use protocol::ids::{MerchantId, Text};
use protocol::{Amount, Currency, Expiry, Pan, ResponseCode};
use storage::memory::MemoryBackend;
use storage::{AnyStore, Journal, JournalConfig, RecordKind, StoreReader, Vault, VaultKeys};
use switch::admission::{AdmissionRates, LoadLimit, LoadSettings};
use switch::clock::Deadline;
use switch::config::DuplicateSettings;
use switch::engine::acquirer::Acquirer;
use switch::engine::{
    CLAIM_STALE_AFTER_MS, CardOutcome, Engine, EngineParts, IdempotencyRequest, Idempotent, Policy,
    Received, ReversalOutcome, ReversalRefusal, SeededRandom,
};
use switch::fleet::{
    Approval, Claim, FleetError, FleetFuture, FleetStore, OnRedisDown, Settled, Velocity,
};
use switch::ops::metrics::{Metrics, Readings};

/// 2026-09-21, so an expiry of 2025 has passed and 2030 has not.
const NOW_MS: u64 = 1_790_000_000_000;
const VISA: &str = "4111111111111111";
const MASTERCARD: &str = "5500005555555559";
/// In the blocked range 400000-400099.
const BLOCKED: &str = "4000056655665556";
const ACME: &str = "ACME0000001";
/// Held to 500 a transaction, 1 000 a day and MCC 5411.
const LIMITED: &str = "LIMITED0001";
const TERMINAL: &str = "TERM0001";

/// One engine over in-memory stores, and its handles for the test.
struct Rig {
    engine: Engine,
    memory: MemoryBackend,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    stan: u32,
}

fn merchant(id: &str) -> MerchantId {
    pad(id).unwrap()
}

fn amount(minor: u64) -> Amount {
    Amount::from_minor(minor).unwrap()
}

impl Rig {
    /// A new engine with an empty journal.
    fn new() -> Rig {
        Rig::over(MemoryBackend::new(), None)
    }

    /// An engine over `memory` (as after a restart: empty actors and
    /// indexes, the journal as committed), with `fleet` if given, taking
    /// requests without a replay.
    fn over(memory: MemoryBackend, fleet: Option<Arc<dyn FleetStore>>) -> Rig {
        let rig = Rig::starting(memory, fleet);
        rig.engine.set_ready();
        rig
    }

    /// An engine over `memory` as a restarted switch builds it: velocity
    /// not yet replayed.
    fn starting(memory: MemoryBackend, fleet: Option<Arc<dyn FleetStore>>) -> Rig {
        Rig::starting_seeded(memory, fleet, 42)
    }

    /// Another node over the same journal (as two switches on one
    /// PostgreSQL): its own actors, clock and indexes, and its own random
    /// seed, so the two never make the same transaction id.
    fn node(memory: MemoryBackend, fleet: Option<Arc<dyn FleetStore>>, seed: u64) -> Rig {
        let rig = Rig::starting_seeded(memory, fleet, seed);
        rig.engine.set_ready();
        rig
    }

    fn starting_seeded(
        memory: MemoryBackend,
        fleet: Option<Arc<dyn FleetStore>>,
        seed: u64,
    ) -> Rig {
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let wall: Arc<dyn Clock> = clock.clone();
        let metrics = Arc::new(Metrics::default());
        let limited = MerchantLimits {
            amount_max_per_transaction: Some(amount(500)),
            daily_volume_max: Some(amount(1_000)),
            allowed_mccs: Some(vec![Text::parse(b"5411").unwrap()]),
            tps_max: None,
        };
        let open = MerchantLimits {
            amount_max_per_transaction: None,
            daily_volume_max: None,
            allowed_mccs: None,
            tps_max: None,
        };
        let shards = Shards::start(
            ShardConfig {
                shard_count: 2,
                mailbox_capacity: 64,
                card_limits: CardLimits {
                    per_minute: WindowLimit {
                        count_max: Some(3),
                        amount_max: Some(amount(10_000)),
                    },
                    per_hour: WindowLimit::NONE,
                    per_day: WindowLimit::NONE,
                },
                merchants: HashMap::from([(merchant(ACME), open), (merchant(LIMITED), limited)]),
            },
            Arc::clone(&wall),
        );
        let vault = Vault::new(
            VaultKeys {
                tokenization_key: [7; 32],
                encryption_keys: vec![(1, [9; 32])],
                active_key_id: 1,
            },
            1024,
        )
        .unwrap();
        let engine = Engine::new(EngineParts {
            metrics: Arc::clone(&metrics),
            clock: wall,
            random: Arc::new(SeededRandom::new(seed)),
            rules: RuleConfig {
                amount_max: amount(1_000_000),
                blocked_bins: vec![BinRange::new("400000", "400099").unwrap()],
            },
            vault: Arc::new(vault),
            shards,
            journal: Journal::start(memory.clone(), &JournalConfig::default()),
            store: AnyStore::new(memory.clone()),
            duplicates: DuplicateSettings {
                window_ms: 60_000,
                entries_max: 1_000,
            },
            fleet,
            admission_rates: Arc::new(AdmissionRates::new(&[])),
            load_limit: LoadLimit::new(LoadSettings::default()),
        });
        Rig {
            engine,
            memory,
            clock,
            metrics,
            stan: 0,
        }
    }

    /// An ISO 8583 authorization of `minor` on `pan` at ACME, with fresh keys.
    fn iso(&mut self, pan: &str, minor: u64) -> Authorization {
        self.stan += 1;
        Authorization {
            channel: Channel::Iso,
            kind: TransactionKind::Authorization,
            pan: Pan::parse(pan.as_bytes()).unwrap(),
            expiry: Some(Expiry::parse(b"3012").unwrap()),
            amount: amount(minor),
            currency: Currency::parse("EUR").unwrap(),
            merchant_id: merchant(ACME),
            terminal_id: pad(TERMINAL).unwrap(),
            mcc: None,
            keys: Some(AcquirerKeys {
                stan: Text::parse(format!("{:06}", self.stan).as_bytes()).unwrap(),
                rrn: None,
                transmitted_at: Some(Text::parse(b"0921120000").unwrap()),
                repeat: false,
            }),
        }
    }

    /// A JSON authorization: no acquirer keys.
    fn json(&mut self, pan: &str, minor: u64) -> Authorization {
        Authorization {
            channel: Channel::Http,
            keys: None,
            ..self.iso(pan, minor)
        }
    }

    async fn authorize(&self, authorization: &Authorization) -> CardOutcome {
        self.authorize_as(authorization, None).await
    }

    async fn authorize_as(
        &self,
        authorization: &Authorization,
        acquirer: Option<&Acquirer>,
    ) -> CardOutcome {
        let received = Received {
            acquirer,
            processing_code: Some(Text::parse(b"000000").unwrap()),
            decode_us: 17,
            deadline: None,
            policy: None,
        };
        self.engine.authorize(authorization.clone(), received).await
    }

    /// The ISO 8583 reversal of `original` (found by its keys, as by DE90)
    /// for `minor`.
    fn iso_reversal(&mut self, original: &Authorization, minor: u64) -> Reversal {
        let keys = original.keys.unwrap();
        self.stan += 1;
        Reversal {
            channel: Channel::Iso,
            kind: ReversalKind::Reversal,
            original: OriginalRef::Keys {
                terminal_id: original.terminal_id,
                stan: keys.stan,
                transmitted_at: keys.transmitted_at,
            },
            amount: ReversedAmount::Part(amount(minor)),
            currency: Some(original.currency),
            merchant_id: original.merchant_id,
            terminal_id: Some(original.terminal_id),
            keys: Some(AcquirerKeys {
                stan: Text::parse(format!("{:06}", self.stan).as_bytes()).unwrap(),
                ..keys
            }),
        }
    }

    async fn stored(&self, id: TransactionId) -> storage::StoredTransaction {
        self.engine.store().transaction(id).await.unwrap().unwrap()
    }

    fn duplicates(&self) -> u64 {
        self.metrics.duplicates.load(Ordering::Relaxed)
    }
}

/// A JSON reversal of transaction `id` by `merchant_id`'s key.
fn json_reversal(id: TransactionId, merchant_id: &str, amount: ReversedAmount) -> Reversal {
    Reversal {
        channel: Channel::Http,
        kind: ReversalKind::Reversal,
        original: OriginalRef::Id(id),
        amount,
        currency: None,
        merchant_id: merchant(merchant_id),
        terminal_id: None,
        keys: None,
    }
}

fn code(outcome: &CardOutcome) -> String {
    outcome.response_code().as_str().to_owned()
}

fn reversed(outcome: ReversalOutcome) -> (Option<TransactionId>, bool) {
    match outcome {
        ReversalOutcome::Recorded {
            original, first, ..
        } => (original, first),
        ReversalOutcome::Refused(refusal) => panic!("refused: {refusal:?}"),
    }
}

#[tokio::test]
async fn an_approval_is_journaled_with_its_timings_and_no_pan() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 1_250);
    let outcome = rig.authorize(&request).await;
    assert_eq!(code(&outcome), "00");
    assert!(outcome.decision.auth_code().is_some());
    assert_eq!(outcome.created_at_ms, NOW_MS);
    assert_eq!(outcome.last4, "1111");

    let stored = rig.stored(outcome.id).await;
    let record = &stored.record;
    assert_eq!(record.kind, RecordKind::Authorization);
    assert_eq!(record.response_code, ResponseCode::Approved);
    assert_eq!(record.auth_code.as_ref(), outcome.decision.auth_code());
    assert_eq!(record.token, outcome.token);
    assert_eq!(record.bin.as_deref(), Some("411111"));
    assert_eq!(record.last4.as_deref(), Some("1111"));
    assert_eq!(record.stan, request.keys.map(|keys| keys.stan));
    assert_eq!(
        record
            .processing_code
            .map(|p| p.as_str().to_owned())
            .as_deref(),
        Some("000000")
    );
    assert_eq!(record.timings.decode_us, 17, "the ingress's decode time");
    assert!(format!("{record:?}").find(VISA).is_none());
    // The card's PAN is in the vault under its token, sealed once.
    let token = outcome.token.unwrap();
    assert!(
        rig.engine
            .store()
            .sealed_pan(token)
            .await
            .unwrap()
            .is_some()
    );

    // A JSON request for the same card gets the same token.
    let json = rig.json(VISA, 100);
    let second = rig.authorize(&json).await;
    assert_eq!((code(&second).as_str(), second.token), ("00", Some(token)));
    assert_eq!(rig.stored(second.id).await.record.channel, Channel::Http);
}

#[tokio::test]
async fn each_rule_and_limit_declines_with_its_code_and_is_journaled() {
    let mut rig = Rig::new();
    let mut cases: Vec<(&str, Authorization, DeclineReason)> = Vec::new();

    let mut luhn = rig.iso(VISA, 100);
    luhn.pan = Pan::parse(b"4111111111111112").unwrap();
    cases.push(("14", luhn, DeclineReason::InvalidCardNumber));
    let mut expired = rig.iso(VISA, 100);
    expired.expiry = Some(Expiry::parse(b"2512").unwrap());
    cases.push(("54", expired, DeclineReason::ExpiredCard));
    cases.push(("13", rig.iso(VISA, 0), DeclineReason::InvalidAmount));
    cases.push(("13", rig.iso(VISA, 1_000_001), DeclineReason::InvalidAmount));
    cases.push(("57", rig.iso(BLOCKED, 100), DeclineReason::BlockedBin));
    let mut too_much = rig.iso(MASTERCARD, 501);
    too_much.merchant_id = merchant(LIMITED);
    cases.push(("13", too_much, DeclineReason::MerchantAmountLimit));
    let mut wrong_mcc = rig.iso(MASTERCARD, 100);
    wrong_mcc.merchant_id = merchant(LIMITED);
    wrong_mcc.mcc = Some(Text::parse(b"7995").unwrap());
    cases.push(("58", wrong_mcc, DeclineReason::MccNotAllowed));
    let mut unknown = rig.iso(MASTERCARD, 100);
    unknown.merchant_id = merchant("NOBODY");
    cases.push(("03", unknown, DeclineReason::UnknownMerchant));

    for (expected, request, reason) in &cases {
        let outcome = rig.authorize(request).await;
        assert_eq!(code(&outcome), *expected, "{reason:?}");
        assert_eq!(outcome.decision, Decision::Declined { reason: *reason });
        let record = rig.stored(outcome.id).await.record;
        assert_eq!(record.reason, Some(*reason));
        assert_eq!(record.auth_code, None);
    }

    // The merchant's daily volume: two of 500 fit, a third is 61.
    for expected in ["00", "00", "61"] {
        let mut request = rig.iso("4242424242424242", 500);
        request.merchant_id = merchant(LIMITED);
        assert_eq!(code(&rig.authorize(&request).await), expected);
    }
}

/// A reloaded configuration, as `ops::reload` swaps it in: requests after
/// the swap are decided by its rules and limits against the velocity
/// counted before it; a request that took the old configuration at its
/// ingress is decided by the old one.
#[tokio::test]
async fn a_replaced_policy_decides_later_requests_against_the_velocity_kept() {
    let mut rig = Rig::new();
    for _ in 0..2 {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&request).await), "00");
    }
    let old = rig.engine.policy();
    assert_eq!(old.generation, 1);
    let mut card_limits = old.limits.card_limits;
    card_limits.per_minute.count_max = Some(2);
    rig.engine.replace_policy(Arc::new(Policy {
        generation: 2,
        rules: RuleConfig {
            amount_max: amount(50),
            blocked_bins: Vec::new(),
        },
        limits: Arc::new(Limits {
            card_limits,
            // ACME only: LIMITED is gone.
            merchants: HashMap::from([(merchant(ACME), MerchantLimits::default())]),
        }),
        admission_rates: Arc::clone(&old.admission_rates),
    }));
    assert_eq!(rig.engine.policy().generation, 2);
    let third = rig.iso(VISA, 10);
    assert_eq!(
        code(&rig.authorize(&third).await),
        "65",
        "two approvals before the swap fill the new limit of two"
    );
    let large = rig.iso(MASTERCARD, 51);
    assert_eq!(
        code(&rig.authorize(&large).await),
        "13",
        "the new amount ceiling"
    );
    let mut gone = rig.iso(MASTERCARD, 10);
    gone.merchant_id = merchant(LIMITED);
    assert_eq!(code(&rig.authorize(&gone).await), "03");
    // Admitted before the swap: decided by the old configuration whole.
    let admitted_before = rig.iso(VISA, 100);
    let received = Received {
        policy: Some(old),
        ..Received::default()
    };
    let outcome = rig.engine.authorize(admitted_before, received).await;
    assert_eq!(code(&outcome), "00", "the old limit of three per minute");
}

#[tokio::test]
async fn card_velocity_declines_65_by_count_and_61_by_amount() {
    let mut rig = Rig::new();
    for _ in 0..3 {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&request).await), "00");
    }
    let fourth = rig.iso(VISA, 100);
    let outcome = rig.authorize(&fourth).await;
    assert_eq!(
        outcome.decision,
        Decision::Declined {
            reason: DeclineReason::CardCountLimit
        }
    );
    assert_eq!(code(&outcome), "65");

    let large = rig.iso(MASTERCARD, 9_000);
    assert_eq!(code(&rig.authorize(&large).await), "00");
    let over = rig.iso(MASTERCARD, 1_001);
    assert_eq!(code(&rig.authorize(&over).await), "61");
    // The window moves on: a minute later the card has room again.
    rig.clock.advance(std::time::Duration::from_secs(70));
    let later = rig.iso(VISA, 100);
    assert_eq!(code(&rig.authorize(&later).await), "00");
}

#[tokio::test]
async fn an_acquirer_is_held_to_its_merchants_and_terminals() {
    let mut rig = Rig::new();
    let north = Acquirer::new("north".to_owned(), Some(vec![merchant(LIMITED)]), None);
    let request = rig.iso(VISA, 100);
    let outcome = rig.authorize_as(&request, Some(&north)).await;
    assert_eq!(
        outcome.decision,
        Decision::Declined {
            reason: DeclineReason::AcquirerNotPermitted
        }
    );
    assert_eq!(code(&outcome), "58");
    let record = rig.stored(outcome.id).await.record;
    assert_eq!(record.acquirer.as_deref(), Some("north"));

    // It took no velocity: three approvals still fit.
    let own = Acquirer::new("north".to_owned(), Some(vec![merchant(ACME)]), None);
    for _ in 0..3 {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize_as(&request, Some(&own)).await), "00");
    }

    // A reversal for another merchant is answered 58 and not journaled.
    let reversal = rig.iso_reversal(&request, 100);
    let refused = rig.engine.reverse(reversal, Some(&north)).await;
    assert_eq!(
        refused,
        ReversalOutcome::Refused(ReversalRefusal::AcquirerNotPermitted)
    );
    assert_eq!(refused.response_code().as_str(), "58");
}

#[tokio::test]
async fn a_retransmission_gets_the_first_answer_and_is_counted_once() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let first = rig.authorize(&request).await;
    let again = rig.authorize(&request).await;
    assert_eq!((again.id, again.decision), (first.id, first.decision));
    assert_eq!(rig.duplicates(), 1);
    // Counted once: two more approvals fit in the count limit of three.
    for expected in ["00", "00", "65"] {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&request).await), expected);
    }

    // Copies arriving together are decided once.
    let request = rig.iso(MASTERCARD, 100);
    let (a, b, c) = tokio::join!(
        rig.authorize(&request),
        rig.authorize(&request),
        rig.authorize(&request)
    );
    assert_eq!((a.id, b.id), (c.id, c.id));
    assert_eq!(rig.duplicates(), 3);

    // JSON requests carry no keys: each is a new request.
    let json = rig.json("4242424242424242", 100);
    let (x, y) = (rig.authorize(&json).await, rig.authorize(&json).await);
    assert_ne!(x.id, y.id);
}

#[tokio::test]
async fn the_same_keys_with_another_card_or_amount_get_94() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let first = rig.authorize(&request).await;
    let other_amount = Authorization {
        amount: amount(200),
        ..request.clone()
    };
    let outcome = rig.authorize(&other_amount).await;
    assert_eq!(code(&outcome), "94");
    assert_eq!(
        outcome.id, first.id,
        "it names the request that holds the keys"
    );
    let other_card = Authorization {
        pan: Pan::parse(MASTERCARD.as_bytes()).unwrap(),
        ..request
    };
    assert_eq!(code(&rig.authorize(&other_card).await), "94");
    assert_eq!(rig.duplicates(), 0);
}

#[tokio::test]
async fn a_repeat_after_a_restart_is_answered_from_the_journal() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let first = rig.authorize(&request).await;
    assert_eq!(code(&first), "00");

    // A new engine over the same journal: its recent index is empty.
    let restarted = Rig::over(rig.memory.clone(), None);
    let repeat = Authorization {
        keys: request.keys.map(|keys| AcquirerKeys {
            repeat: true,
            ..keys
        }),
        ..request.clone()
    };
    let answer = restarted.authorize(&repeat).await;
    assert_eq!((answer.id, answer.decision), (first.id, first.decision));
    assert_eq!(restarted.duplicates(), 1);

    // A plain retransmission is found in the journal too, once the engine
    // knows the journal holds requests from the window before its start.
    let restarted = Rig::over(rig.memory.clone(), None);
    restarted
        .engine
        .check_journal_for_duplicates_after_restart()
        .await
        .unwrap();
    let answer = restarted.authorize(&request).await;
    assert_eq!(answer.id, first.id);
}

#[tokio::test]
async fn nothing_is_decided_before_replay_and_replay_restores_velocity() {
    let mut rig = Rig::new();
    let mut first = None;
    for _ in 0..3 {
        let request = rig.json(VISA, 100);
        let outcome = rig.authorize(&request).await;
        assert_eq!(code(&outcome), "00");
        first.get_or_insert(outcome.id);
    }

    // Restarted, before replay: the card is at its limit in the journal
    // but not yet in the actors. Nothing is decided, journaled or counted.
    let mut restarted = Rig::starting(rig.memory.clone(), None);
    // Its seeded ids start over; a later millisecond keeps them new.
    restarted.clock.advance(std::time::Duration::from_secs(1));
    let early = restarted.json(VISA, 100);
    let refused = restarted.authorize(&early).await;
    assert_eq!(code(&refused), "91");
    assert_eq!(
        refused.decision,
        Decision::Declined {
            reason: DeclineReason::Starting
        }
    );
    assert!(
        restarted
            .engine
            .store()
            .transaction(refused.id)
            .await
            .unwrap()
            .is_none(),
        "a refusal before replay is not journaled"
    );
    let reversal = json_reversal(first.unwrap(), ACME, ReversedAmount::Whole);
    let refused = restarted.engine.reverse(reversal, None).await;
    assert_eq!(refused, ReversalOutcome::Refused(ReversalRefusal::Starting));
    assert_eq!(refused.response_code().as_str(), "91");
    assert!(!restarted.engine.is_ready());

    // Replay puts the three approvals back; only then are requests decided.
    assert_eq!(restarted.engine.replay().await.unwrap(), 3);
    assert!(restarted.engine.is_ready());
    let late = restarted.json(VISA, 100);
    assert_eq!(code(&restarted.authorize(&late).await), "65");
}

#[tokio::test]
async fn a_reversal_gives_velocity_back_once() {
    let mut rig = Rig::new();
    let mut approved = Vec::new();
    for _ in 0..3 {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&request).await), "00");
        approved.push(request);
    }
    let full = rig.iso(VISA, 100);
    assert_eq!(code(&rig.authorize(&full).await), "65");

    let reversal = rig.iso_reversal(&approved[0], 100);
    let (original, first) = reversed(rig.engine.reverse(reversal.clone(), None).await);
    assert!(original.is_some() && first);
    let room = rig.iso(VISA, 100);
    assert_eq!(code(&rig.authorize(&room).await), "00", "given back");

    // A second reversal of the same original is journaled, gives nothing.
    let again = rig.iso_reversal(&approved[0], 100);
    let (_, first) = reversed(rig.engine.reverse(again, None).await);
    assert!(!first);
    let none = rig.iso(VISA, 100);
    assert_eq!(
        code(&rig.authorize(&none).await),
        "65",
        "not given back twice"
    );

    // An unknown original is acknowledged and journaled without one.
    let ghost = rig.iso(MASTERCARD, 100);
    let reversal = rig.iso_reversal(&ghost, 100);
    let outcome = rig.engine.reverse(reversal, None).await;
    assert_eq!(outcome.response_code(), ResponseCode::Approved);
    let ReversalOutcome::Recorded { id, original, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(original, None);
    let record = rig.stored(id).await.record;
    assert_eq!(
        (record.kind, record.original_id),
        (RecordKind::Reversal, None)
    );
}

#[tokio::test]
async fn a_partial_reversal_by_id_gives_back_what_it_reverses() {
    let mut rig = Rig::new();
    let request = rig.json(VISA, 8_000);
    let original = rig.authorize(&request).await;
    assert_eq!(code(&original), "00");

    // What the JSON ingress answers 404, 422 and 400, before anything is
    // journaled.
    let refusals = [
        (
            json_reversal(original.id, LIMITED, ReversedAmount::Whole),
            ReversalRefusal::UnknownOriginal,
        ),
        (
            json_reversal(
                TransactionId::new(NOW_MS, [1; 10]),
                ACME,
                ReversedAmount::Whole,
            ),
            ReversalRefusal::UnknownOriginal,
        ),
        (
            json_reversal(original.id, ACME, ReversedAmount::Part(amount(0))),
            ReversalRefusal::AmountOutOfRange,
        ),
        (
            json_reversal(original.id, ACME, ReversedAmount::Part(amount(8_001))),
            ReversalRefusal::AmountOutOfRange,
        ),
        (
            json_reversal(original.id, ACME, ReversedAmount::OverMaximum),
            ReversalRefusal::AmountOutOfRange,
        ),
    ];
    for (reversal, refusal) in refusals {
        assert_eq!(
            rig.engine.reverse(reversal, None).await,
            ReversalOutcome::Refused(refusal)
        );
    }

    let partial = json_reversal(original.id, ACME, ReversedAmount::Part(amount(3_000)));
    let outcome = rig.engine.reverse(partial, None).await;
    let ReversalOutcome::Recorded {
        id,
        original: found,
        first,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!((found, first), (Some(original.id), true));
    let record = rig.stored(id).await.record;
    assert_eq!(record.amount, amount(3_000));
    assert_eq!(record.currency, request.currency);
    assert_eq!(record.terminal_id, request.terminal_id);
    assert_eq!(record.token, original.token);
    assert_eq!(rig.stored(original.id).await.reversed_by, Some(id));

    // 3 000 of 8 000 given back: 5 000 more fits the 10 000 a minute, 1 more does not.
    let fits = rig.json(VISA, 5_000);
    assert_eq!(code(&rig.authorize(&fits).await), "00");
    let over = rig.json(VISA, 1);
    assert_eq!(code(&rig.authorize(&over).await), "61");

    // A reversal is not itself reversible.
    let of_reversal = json_reversal(id, ACME, ReversedAmount::Whole);
    assert_eq!(
        rig.engine.reverse(of_reversal, None).await,
        ReversalOutcome::Refused(ReversalRefusal::NotReversible)
    );
}

#[tokio::test]
async fn a_partial_reversal_stands_after_a_restart() {
    // 10 000 a minute on the card; 3 000 of 8 000 reversed leaves 5 000.
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 8_000);
    assert_eq!(code(&rig.authorize(&request).await), "00");
    let reversal = rig.iso_reversal(&request, 3_000);
    let (original, first) = reversed(rig.engine.reverse(reversal, None).await);
    assert!(original.is_some() && first);
    let over = rig.iso(VISA, 5_001);
    assert_eq!(code(&rig.authorize(&over).await), "61");

    let snapshot = rig.memory.crash();
    let mut restarted = Rig::over(MemoryBackend::restart(&snapshot), None);
    restarted.engine.replay().await.unwrap();
    // A second on, in the same minute: the restarted engine's seeded ids and
    // STANs do not repeat the first one's.
    restarted.clock.advance(std::time::Duration::from_secs(1));
    restarted.stan = rig.stan;
    let over = restarted.iso(VISA, 5_001);
    assert_eq!(
        code(&restarted.authorize(&over).await),
        "61",
        "what stands of the original is counted again"
    );
    let fits = restarted.iso(VISA, 5_000);
    assert_eq!(code(&restarted.authorize(&fits).await), "00");
}

#[tokio::test]
async fn a_partial_reversal_keeps_its_approval_counted_once() {
    // 3 a minute: the partly reversed approval and two more, not a fourth,
    // while the switch runs and after a restart.
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    assert_eq!(code(&rig.authorize(&request).await), "00");
    let reversal = rig.iso_reversal(&request, 30);
    let (_, first) = reversed(rig.engine.reverse(reversal, None).await);
    assert!(first);
    for _ in 0..2 {
        let more = rig.iso(VISA, 1);
        assert_eq!(code(&rig.authorize(&more).await), "00");
    }
    let fourth = rig.iso(VISA, 1);
    assert_eq!(code(&rig.authorize(&fourth).await), "65", "live");

    let snapshot = rig.memory.crash();
    let mut restarted = Rig::over(MemoryBackend::restart(&snapshot), None);
    restarted.engine.replay().await.unwrap();
    restarted.clock.advance(std::time::Duration::from_secs(1));
    restarted.stan = rig.stan;
    let fourth = restarted.iso(VISA, 1);
    assert_eq!(
        code(&restarted.authorize(&fourth).await),
        "65",
        "after a restart"
    );
}

#[tokio::test]
async fn a_failed_commit_answers_96_and_gives_velocity_back() {
    let mut rig = Rig::new();
    rig.memory.fail_next_batches(1);
    let request = rig.iso(VISA, 100);
    let failed = rig.authorize(&request).await;
    assert_eq!(
        failed.decision,
        Decision::Declined {
            reason: DeclineReason::JournalUnavailable
        }
    );
    assert_eq!(code(&failed), "96");
    assert!(
        rig.engine
            .store()
            .transaction(failed.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(rig.metrics.journal_failures.load(Ordering::Relaxed), 1);

    // Not recorded: the retransmission is decided afresh, and the failed
    // approval's velocity was given back, so three approvals fit.
    let retransmitted = rig.authorize(&request).await;
    assert_eq!(code(&retransmitted), "00");
    assert_ne!(retransmitted.id, failed.id);
    for expected in ["00", "00", "65"] {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&request).await), expected);
    }

    // A reversal that cannot be journaled is 96 and gives nothing back.
    rig.memory.fail_next_batches(1);
    let reversal = rig.iso_reversal(&request, 100);
    let outcome = rig.engine.reverse(reversal, None).await;
    assert_eq!(
        outcome,
        ReversalOutcome::Refused(ReversalRefusal::JournalFailed)
    );
    assert_eq!(outcome.response_code(), ResponseCode::SystemMalfunction);
    let still_full = rig.iso(VISA, 100);
    assert_eq!(code(&rig.authorize(&still_full).await), "65");
}

/// Requests shed for their deadline on `channel`, as `/metrics` says.
fn shed_for_deadline(metrics: &Metrics) -> u64 {
    let text = metrics.render(&Readings::default());
    let line = text
        .lines()
        .find(|line| line.starts_with(r#"switch_shed_total{channel="iso",reason="deadline"}"#))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn within(after: Duration) -> Received<'static> {
    Received {
        deadline: Some(Deadline::after(after)),
        ..Received::default()
    }
}

/// A request whose deadline passed before the engine got to it is shed:
/// 91, neither decided, journaled nor counted against the card, and its
/// retransmission is decided afresh. A reversal out of time is shed too.
#[tokio::test(start_paused = true)]
async fn a_request_out_of_time_is_shed_with_91_and_nothing_is_kept() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let shed = rig
        .engine
        .authorize(request.clone(), within(Duration::ZERO))
        .await;
    assert_eq!(
        shed.decision,
        Decision::Declined {
            reason: DeclineReason::Overloaded
        }
    );
    assert_eq!(code(&shed), "91");
    assert!(
        rig.engine
            .store()
            .transaction(shed.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(shed_for_deadline(&rig.metrics), 1);
    // The card's three a minute are all free: the retransmission first.
    let retransmitted = rig.authorize(&request).await;
    assert_eq!(code(&retransmitted), "00");
    for expected in ["00", "00", "65"] {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), expected);
    }
    let reversal = rig.iso_reversal(&request, 100);
    let outcome = rig
        .engine
        .reverse_within(reversal, None, Some(Deadline::after(Duration::ZERO)))
        .await;
    assert_eq!(
        outcome,
        ReversalOutcome::Refused(ReversalRefusal::Overloaded)
    );
    assert_eq!(outcome.response_code().as_str(), "91");
    let still_full = rig.iso(VISA, 100);
    assert_eq!(
        code(&rig.authorize(&still_full).await),
        "65",
        "nothing given back"
    );
}

/// A record still queued for a stalled journal when its deadline comes is
/// not written: 91, and the velocity its approval took is given back. The
/// record the writer had already taken is written and answered as
/// committed.
#[tokio::test(start_paused = true)]
async fn a_record_the_journal_cannot_commit_in_time_is_not_written_and_gives_velocity_back() {
    let mut rig = Rig::new();
    let first = rig.iso(VISA, 100);
    let late = rig.iso(VISA, 100);
    let (first_out, late_out) = behind_a_disk_stalled_for(
        &rig.memory,
        Duration::from_millis(100),
        rig.authorize(&first),
        rig.engine
            .authorize(late.clone(), within(Duration::from_millis(50))),
    )
    .await;
    assert_eq!(code(&first_out), "00");
    assert_eq!(code(&late_out), "91");
    assert!(
        rig.engine
            .store()
            .transaction(late_out.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(rig.engine.journal().stats().expired, 1);
    assert_eq!(shed_for_deadline(&rig.metrics), 1);
    // One approval stands of three a minute.
    for expected in ["00", "00", "65"] {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), expected);
    }
}

/// A reversal waiting for its original, in flight behind a stalled journal,
/// stops waiting at its deadline: 91, nothing journaled or given back. The
/// acquirer's retry, after the original committed, reverses it.
#[tokio::test(start_paused = true)]
async fn a_reversal_out_of_time_while_its_original_is_in_flight_is_shed_and_its_retry_reverses() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let reversal = rig.iso_reversal(&request, 100);
    let (original, shed) = behind_a_disk_stalled_for(
        &rig.memory,
        Duration::from_millis(100),
        rig.authorize(&request),
        rig.engine.reverse_within(
            reversal.clone(),
            None,
            Some(Deadline::after(Duration::from_millis(10))),
        ),
    )
    .await;
    assert_eq!(code(&original), "00");
    assert_eq!(shed, ReversalOutcome::Refused(ReversalRefusal::Overloaded));
    let retried = rig.engine.reverse(reversal, None).await;
    assert!(
        matches!(retried, ReversalOutcome::Recorded { original: Some(id), first: true, .. } if id == original.id),
        "{retried:?}"
    );
    for _ in 0..3 {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), "00");
    }
}

/// A fleet whose store never answers, as Redis while it is away.
struct AwayFleet(OnRedisDown);

fn away<'a, T: Send + 'a>() -> FleetFuture<'a, T> {
    Box::pin(async { Err(FleetError::Timeout { timeout_ms: 1 }) })
}

impl FleetStore for AwayFleet {
    fn on_redis_down(&self) -> OnRedisDown {
        self.0
    }
    fn settle<'a>(
        &'a self,
        _: Option<&'a str>,
        _: u64,
        _: Option<Approval>,
    ) -> FleetFuture<'a, Settled> {
        away()
    }
    fn answer<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> FleetFuture<'a, ()> {
        away()
    }
    fn release<'a>(&'a self, _: &'a str) -> FleetFuture<'a, ()> {
        away()
    }
    fn reversing<'a>(&'a self, _: &'a str) -> FleetFuture<'a, bool> {
        away()
    }
    fn give_back(&self, _: Token, _: Amount, _: bool, _: u64) -> FleetFuture<'_, ()> {
        away()
    }
    fn ping(&self) -> FleetFuture<'_, ()> {
        away()
    }
    fn keep_built<'a>(&'a self, _: &'a AnyStore, _: u64) -> FleetFuture<'a, u64> {
        away()
    }
}

#[tokio::test]
async fn a_fleet_whose_store_is_away_declines_91_or_decides_locally() {
    let mut declining = Rig::over(
        MemoryBackend::new(),
        Some(Arc::new(AwayFleet(OnRedisDown::Decline))),
    );
    let request = declining.iso(VISA, 100);
    let outcome = declining.authorize(&request).await;
    assert_eq!(
        outcome.decision,
        Decision::Declined {
            reason: DeclineReason::Overloaded
        }
    );
    assert!(
        declining
            .engine
            .store()
            .transaction(outcome.id)
            .await
            .unwrap()
            .is_none()
    );
    // Without keys there is nothing to claim; the velocity check still
    // needs the store: 91, and the node's count is given back.
    let json = declining.json(VISA, 100);
    assert_eq!(code(&declining.authorize(&json).await), "91");

    let mut local = Rig::over(
        MemoryBackend::new(),
        Some(Arc::new(AwayFleet(OnRedisDown::Local))),
    );
    let request = local.iso(VISA, 100);
    let outcome = local.authorize(&request).await;
    assert_eq!(code(&outcome), "00");
    assert_eq!(local.metrics.fleet_fallbacks.load(Ordering::Relaxed), 1);
    // The claim-and-confirm call on the reply path; the answer's write
    // after the reply fails too, once it runs.
    assert!(local.metrics.fleet_errors.load(Ordering::Relaxed) >= 1);
}

/// A fleet store in memory, as one Redis shared by nodes: claims and
/// answers by key; velocity is always granted (the actors decide here).
#[derive(Default)]
struct SharedFleet {
    claims: std::sync::Mutex<HashMap<String, Held>>,
    /// While set, an answer cannot be shared (a Redis error).
    answers_fail: std::sync::atomic::AtomicBool,
    /// Claims and confirmations asked for: one per request that reached
    /// the store.
    calls: std::sync::atomic::AtomicU64,
    /// While set, writing an answer never completes (a Redis that stopped
    /// answering after the claim).
    answers_hang: std::sync::atomic::AtomicBool,
    /// Answers written so far.
    answers: tokio::sync::watch::Sender<u64>,
    /// Set by a flush: the store cannot vouch that absent keys were never
    /// answered (Redis's `d:since` is gone; no time passes here for a
    /// window to bring it back).
    lost: std::sync::atomic::AtomicBool,
}

/// What the store holds for a request's keys.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    Pending,
    /// A claim that passed its pending time, or was given up, unanswered.
    Lapsed,
    /// A reversal found no original before any node claimed it.
    Reversed,
    Answered(String),
}

impl SharedFleet {
    /// Every claim still pending lapses, as in Redis once its pending time
    /// has passed (its node died, or could not share its answer).
    fn lapse_pending(&self) {
        for held in self.claims.lock().unwrap().values_mut() {
            if *held == Held::Pending {
                *held = Held::Lapsed;
            }
        }
    }

    /// What the store holds for each key claimed and not given up: `None`
    /// while pending.
    fn claims(&self) -> Vec<Option<String>> {
        let claims = self.claims.lock().unwrap();
        claims
            .values()
            .filter_map(|held| match held {
                Held::Pending => Some(None),
                Held::Lapsed | Held::Reversed => None,
                Held::Answered(answer) => Some(Some(answer.clone())),
            })
            .collect()
    }

    /// Waits until `count` answers were written: nodes write theirs after
    /// the reply.
    async fn answered(&self, count: u64) {
        let mut answers = self.answers.subscribe();
        answers.wait_for(|answers| *answers >= count).await.unwrap();
    }

    /// As after a flush or a failover to an empty replica.
    fn flush(&self) {
        self.claims.lock().unwrap().clear();
        self.lost.store(true, Ordering::SeqCst);
    }
}

impl FleetStore for SharedFleet {
    fn on_redis_down(&self) -> OnRedisDown {
        OnRedisDown::Decline
    }
    /// Velocity is always granted to the claim's holder.
    fn settle<'a>(
        &'a self,
        key: Option<&'a str>,
        _: u64,
        approval: Option<Approval>,
    ) -> FleetFuture<'a, Settled> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut claims = self.claims.lock().unwrap();
        let claim = match key.map(|key| (key, claims.get(key))) {
            None => Claim::Mine,
            Some((_, None)) if self.lost.load(Ordering::SeqCst) => Claim::TakenOver,
            Some((_, None)) => Claim::Mine,
            Some((_, Some(Held::Lapsed))) => Claim::TakenOver,
            Some((_, Some(Held::Pending))) => Claim::Pending,
            Some((_, Some(Held::Reversed))) => Claim::Reversed,
            Some((_, Some(Held::Answered(answer)))) => Claim::Answered(answer.clone()),
        };
        if let Some(key) = key
            && claim.is_this_nodes()
        {
            claims.insert(key.to_owned(), Held::Pending);
        }
        let velocity = match approval {
            Some(_) if claim.is_this_nodes() => Velocity::Counted,
            _ => Velocity::NotAsked,
        };
        Box::pin(async move { Ok(Settled { claim, velocity }) })
    }
    fn answer<'a>(&'a self, key: &'a str, answer: &'a str, _: u64) -> FleetFuture<'a, ()> {
        if self.answers_hang.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        if self.answers_fail.load(Ordering::SeqCst) {
            return away();
        }
        self.claims
            .lock()
            .unwrap()
            .insert(key.to_owned(), Held::Answered(answer.to_owned()));
        self.answers.send_modify(|answers| *answers += 1);
        Box::pin(async { Ok(()) })
    }
    fn release<'a>(&'a self, key: &'a str) -> FleetFuture<'a, ()> {
        if let Some(held) = self.claims.lock().unwrap().get_mut(key)
            && *held == Held::Pending
        {
            *held = Held::Lapsed;
        }
        Box::pin(async { Ok(()) })
    }
    fn reversing<'a>(&'a self, key: &'a str) -> FleetFuture<'a, bool> {
        let mut claims = self.claims.lock().unwrap();
        let pending = match claims.get(key) {
            Some(Held::Pending) => true,
            Some(Held::Answered(_) | Held::Reversed) => false,
            Some(Held::Lapsed) | None => {
                claims.insert(key.to_owned(), Held::Reversed);
                false
            }
        };
        Box::pin(async move { Ok(pending) })
    }
    fn give_back(&self, _: Token, _: Amount, _: bool, _: u64) -> FleetFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn ping(&self) -> FleetFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn keep_built<'a>(&'a self, _: &'a AnyStore, _: u64) -> FleetFuture<'a, u64> {
        Box::pin(async { Ok(1) })
    }
}

/// A node that claims a request's keys and then finds its answer in the
/// journal (a repeat) shares that answer with the fleet; one whose journal
/// cannot be read gives the claim up. Either way no claim is left pending,
/// where another node's copy would wait for it and then answer 91.
#[tokio::test]
async fn a_claim_answered_from_the_journal_or_refused_is_never_left_pending() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let request = node.iso(VISA, 100);
    let first = node.authorize(&request).await;
    assert_eq!(code(&first), "00");
    fleet.answered(1).await;
    assert!(fleet.claims().iter().all(Option::is_some));

    // Redis loses its keys; the acquirer repeats (0101) at another node.
    fleet.flush();
    let other = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let repeat = Authorization {
        keys: request.keys.map(|keys| AcquirerKeys {
            repeat: true,
            ..keys
        }),
        ..request.clone()
    };
    let answer = other.authorize(&repeat).await;
    assert_eq!((answer.id, answer.decision), (first.id, first.decision));
    fleet.answered(2).await;
    let claims = fleet.claims();
    assert_eq!(claims.len(), 1, "the repeat claimed its keys");
    assert!(
        claims[0]
            .as_deref()
            .is_some_and(|shared| shared.starts_with(&first.id.to_string())),
        "the journal's answer is shared, not left pending: {claims:?}"
    );

    // The journal cannot be read: 96, and the claim is given up.
    fleet.flush();
    let snapshot = node.memory.crash();
    let broken = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let answer = broken.authorize(&repeat).await;
    assert_eq!(code(&answer), "96");
    assert!(fleet.claims().is_empty(), "{:?}", fleet.claims());
    drop(snapshot);
}

/// On a fleet node a request's reply waits for one call to the fleet's
/// store, the claim of its keys with its velocity, approval or decline;
/// the answer other nodes read is written after the reply, so a store that
/// stops answering then does not hold the reply back.
#[tokio::test]
async fn a_fleet_node_replies_after_one_store_call_and_shares_its_answer_after() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let approved = node.iso(VISA, 100);
    assert_eq!(code(&node.authorize(&approved).await), "00");
    assert_eq!(
        fleet.calls.load(Ordering::SeqCst),
        1,
        "one call per approval"
    );
    fleet.answered(1).await;

    fleet.answers_hang.store(true, Ordering::SeqCst);
    let approved = node.iso(MASTERCARD, 200);
    let declined = node.iso(VISA, 0);
    for (request, expected) in [(approved, "00"), (declined, "13")] {
        let reply =
            tokio::time::timeout(std::time::Duration::from_secs(10), node.authorize(&request))
                .await
                .expect("the reply does not wait for the answer's write");
        assert_eq!(code(&reply), expected);
    }
    assert_eq!(
        fleet.calls.load(Ordering::SeqCst),
        3,
        "one call per request"
    );
}

/// An answer that asks the client to try again (91 shed or store away, 96)
/// is not bound to its idempotency key: the HTTP client got a 503, and a
/// retry with the same key is decided afresh instead of replaying a stored
/// "201 declined" it was never sent.
#[tokio::test]
async fn an_answer_asking_for_a_retry_is_not_stored_under_the_idempotency_key() {
    let mut rig = Rig::over(
        MemoryBackend::new(),
        Some(Arc::new(AwayFleet(OnRedisDown::Decline))),
    );
    let request = rig.json(VISA, 100);
    let outcome = rig
        .engine
        .authorize_idempotent(request.clone(), Received::default(), keyed("retry-me", 3))
        .await;
    assert_eq!(decided_code(&outcome), "91");
    assert_eq!(
        rig.engine
            .store()
            .idempotent_response(ACME, "retry-me")
            .await
            .unwrap(),
        None
    );
    // Its claim was given back: the retry is decided afresh, not 409.
    let retry = rig
        .engine
        .authorize_idempotent(request, Received::default(), keyed("retry-me", 3))
        .await;
    assert_eq!(decided_code(&retry), "91");
}

/// An acquirer held to other merchants cannot read the answer (and auth
/// code) of an approval made for a merchant that is not its own by sending
/// the same keys: it is answered 58 before any duplicate lookup.
#[tokio::test]
async fn a_restricted_acquirer_never_gets_another_merchants_earlier_answer() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let first = rig.authorize(&request).await;
    assert_eq!(code(&first), "00");

    let north = Acquirer::new("north".to_owned(), Some(vec![merchant(LIMITED)]), None);
    let copy = rig.authorize_as(&request, Some(&north)).await;
    assert_eq!(code(&copy), "58");
    assert_ne!(copy.id, first.id);
    assert_eq!(copy.decision.auth_code(), None);
    assert_eq!(rig.duplicates(), 0);
}

/// Runs `first` until its record waits at a stalled disk, then `then`
/// beside it (a request arriving while the first waits for the journal),
/// and lets the disk go a while later.
async fn behind_a_stalled_disk<A, B>(
    memory: &MemoryBackend,
    first: impl std::future::Future<Output = A>,
    then: impl std::future::Future<Output = B>,
) -> (A, B) {
    memory.hold_batches();
    let (first, then, ()) = tokio::join!(
        first,
        async {
            while memory.batches_held() == 0 {
                tokio::task::yield_now().await;
            }
            then.await
        },
        async {
            for _ in 0..200 {
                tokio::task::yield_now().await;
            }
            memory.release_batches();
        },
    );
    (first, then)
}

/// Runs `first` until its record waits at a stalled disk, then `then`
/// beside it, and lets the disk go after `stall` on tokio's (paused)
/// clock: long enough for a deadline in `then` to pass.
async fn behind_a_disk_stalled_for<A, B>(
    memory: &MemoryBackend,
    stall: Duration,
    first: impl std::future::Future<Output = A>,
    then: impl std::future::Future<Output = B>,
) -> (A, B) {
    memory.hold_batches();
    let held = async {
        while memory.batches_held() == 0 {
            tokio::task::yield_now().await;
        }
    };
    let (first, then, ()) = tokio::join!(
        first,
        async {
            held.await;
            then.await
        },
        async {
            while memory.batches_held() == 0 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(stall).await;
            memory.release_batches();
        },
    );
    (first, then)
}

/// A reversal of an original still waiting for the journal waits for it,
/// then reverses it: it is neither lost (acknowledged with no original)
/// nor leaves the original's velocity counted.
#[tokio::test]
async fn a_reversal_of_an_original_still_in_flight_waits_and_reverses_it() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let reversal = rig.iso_reversal(&request, 100);
    let (first, reversed) = behind_a_stalled_disk(
        &rig.memory,
        rig.authorize(&request),
        rig.engine.reverse(reversal, None),
    )
    .await;
    assert_eq!(code(&first), "00");
    assert_eq!(
        reversed,
        ReversalOutcome::Recorded {
            id: match reversed {
                ReversalOutcome::Recorded { id, .. } => id,
                ReversalOutcome::Refused(refusal) => panic!("refused: {refusal:?}"),
            },
            original: Some(first.id),
            first: true,
        }
    );
    // Its velocity came back: the card's 3 a minute are all free.
    for _ in 0..3 {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), "00");
    }
}

/// A commit whose answer is lost (the batch is on disk, the writer reports a
/// failure) is read back before anything is answered or given back: the
/// request is answered as committed, its velocity stays counted, and a
/// retransmission gets the same answer.
#[tokio::test]
async fn an_ambiguous_commit_is_read_back_and_answered_as_committed() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    rig.memory.commit_then_fail_next_batches(1);
    let first = rig.authorize(&request).await;
    assert_eq!(code(&first), "00", "the record is on disk");
    assert!(
        rig.stored(first.id)
            .await
            .record
            .response_code
            .is_approved()
    );

    let again = rig.authorize(&request).await;
    assert_eq!((again.id, again.decision), (first.id, first.decision));
    // Counted once: two more fit the card's 3 a minute, then 65.
    for _ in 0..2 {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), "00");
    }
    let over = rig.iso(VISA, 100);
    assert_eq!(code(&rig.authorize(&over).await), "65");
}

#[tokio::test]
async fn a_decline_retransmitted_after_a_restart_gets_the_same_decline() {
    // Three approvals use up the card's minute; a fourth is declined 65
    // 59 s later, just before the switch restarts.
    let mut rig = Rig::new();
    for _ in 0..3 {
        let request = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&request).await), "00");
    }
    rig.clock.advance(std::time::Duration::from_secs(59));
    let fourth = rig.iso(VISA, 100);
    let declined = rig.authorize(&fourth).await;
    assert_eq!(code(&declined), "65");

    // Restarted two seconds later: the approvals are older than the
    // duplicate window, the decline is not. Its retransmission is the same
    // request, so it gets the same decline, though the card's minute has
    // passed and a new request would be approved.
    let restarted = Rig::starting(rig.memory.clone(), None);
    restarted.clock.set(NOW_MS + 61_000);
    restarted.engine.replay().await.unwrap();
    let answer = restarted.authorize(&fourth).await;
    assert_eq!(
        (answer.id, code(&answer)),
        (declined.id, "65".to_owned()),
        "the first answer, from the journal"
    );
    let mut rig = rig;
    let new = rig.iso(VISA, 100);
    assert_eq!(code(&restarted.authorize(&new).await), "00");
}

/// Terminal ids repeat across acquirers (`TERM0001` is everywhere): two
/// acquirers' requests with the same terminal, STAN and DE7 are two
/// requests, each decided; neither gets the other's answer or auth code,
/// on one node, from the journal after a restart, or across a fleet.
#[tokio::test]
async fn two_acquirers_with_the_same_terminal_and_stan_are_two_requests() {
    let fleet = Arc::new(SharedFleet::default());
    let mut rig = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let north = Acquirer::new("north".to_owned(), None, None);
    let south = Acquirer::new("south".to_owned(), None, None);
    let request = rig.iso(VISA, 100);
    let from_north = rig.authorize_as(&request, Some(&north)).await;
    assert_eq!(code(&from_north), "00");
    let other_card = Authorization {
        pan: Pan::parse(MASTERCARD.as_bytes()).unwrap(),
        ..request.clone()
    };
    let from_south = rig.authorize_as(&other_card, Some(&south)).await;
    assert_eq!(code(&from_south), "00", "not 94: not the same request");
    // A plain-TCP client with the very same card and keys: a third request.
    let plain = rig.authorize(&request).await;
    assert_eq!(code(&plain), "00");
    assert_ne!(plain.id, from_north.id);
    assert_ne!(plain.decision, from_north.decision, "its own auth code");
    assert_eq!(rig.duplicates(), 0);

    // Each one's retransmission still gets its own first answer.
    let again = rig.authorize_as(&request, Some(&north)).await;
    assert_eq!(again.id, from_north.id);
    let again = rig.authorize_as(&other_card, Some(&south)).await;
    assert_eq!(again.id, from_south.id);
    let again = rig.authorize(&request).await;
    assert_eq!(again.id, plain.id);

    // Another node of the fleet, and the journal after a restart, tell them
    // apart too.
    let other_node = Rig::over(rig.memory.clone(), Some(fleet.clone()));
    let again = other_node.authorize_as(&other_card, Some(&south)).await;
    assert_eq!(again.id, from_south.id);
    let restarted = Rig::over(rig.memory.clone(), None);
    let repeat = |authorization: &Authorization| Authorization {
        keys: authorization.keys.map(|keys| AcquirerKeys {
            repeat: true,
            ..keys
        }),
        ..authorization.clone()
    };
    let again = restarted.authorize(&repeat(&request)).await;
    assert_eq!(again.id, plain.id);
    let again = restarted
        .authorize_as(&repeat(&request), Some(&north))
        .await;
    assert_eq!(again.id, from_north.id);
    // Two merchants at one terminal id are two requests as well.
    let limited = Authorization {
        merchant_id: merchant(LIMITED),
        mcc: Some(Text::parse(b"5411").unwrap()),
        ..request.clone()
    };
    let other_merchant = rig.authorize(&limited).await;
    assert_eq!(code(&other_merchant), "00");
    assert_ne!(other_merchant.id, plain.id);
}

/// A reversal by acquirer keys (DE90) reverses only its own merchant's and
/// acquirer's original: another merchant's 0400, or another acquirer's,
/// with the same terminal and STAN finds no original and gives nothing
/// back.
#[tokio::test]
async fn another_merchants_reversal_by_keys_reverses_nothing() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let first = rig.authorize(&request).await;
    assert_eq!(code(&first), "00");

    let foreign = Reversal {
        merchant_id: merchant(LIMITED),
        ..rig.iso_reversal(&request, 100)
    };
    assert_eq!(
        reversed(rig.engine.reverse(foreign, None).await),
        (None, true)
    );
    let north = Acquirer::new("north".to_owned(), None, None);
    let other_acquirer = rig.iso_reversal(&request, 100);
    assert_eq!(
        reversed(rig.engine.reverse(other_acquirer, Some(&north)).await),
        (None, true)
    );
    assert_eq!(rig.stored(first.id).await.reversed_by, None);
    // The original still counts: two more fit the card's 3 a minute.
    for expected in ["00", "00", "65"] {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), expected);
    }
    // Its own merchant's reversal reverses it.
    let own = rig.iso_reversal(&request, 100);
    assert_eq!(
        reversed(rig.engine.reverse(own, None).await),
        (Some(first.id), true)
    );
}

/// A node that approved a request but could not share its answer in the
/// fleet (a Redis error) leaves its claim pending until the claim's pending
/// time passes. A retransmission at another node after that is checked in
/// the journal, where the approval is: the same answer, not a second
/// approval.
#[tokio::test]
async fn a_claim_that_lapsed_without_an_answer_is_checked_in_the_journal() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let other = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let request = node.iso(VISA, 100);
    fleet.answers_fail.store(true, Ordering::SeqCst);
    let first = node.authorize(&request).await;
    assert_eq!(code(&first), "00");
    fleet.answers_fail.store(false, Ordering::SeqCst);

    fleet.lapse_pending();
    // A moment later, so a second decision would have an id of its own.
    other.clock.advance(std::time::Duration::from_millis(1));
    let again = other.authorize(&request).await;
    assert_eq!((again.id, again.decision), (first.id, first.decision));
    assert_eq!(other.duplicates(), 1);
    let approvals = other
        .engine
        .store()
        .approved_since(0, None, 10)
        .await
        .unwrap();
    assert_eq!(approvals.len(), 1, "approved once");
}

/// A reversal on node B of an original still in flight on node A (its keys
/// claimed, pending, in the fleet) waits for A's answer, then finds the
/// original in the journal and reverses it.
#[tokio::test]
async fn a_reversal_on_another_node_waits_for_the_original_in_flight_there() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let other = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let request = node.iso(VISA, 100);
    let reversal = node.iso_reversal(&request, 100);
    let (first, reversed_there) = behind_a_stalled_disk(
        &node.memory,
        node.authorize(&request),
        other.engine.reverse(reversal, None),
    )
    .await;
    assert_eq!(code(&first), "00");
    assert_eq!(reversed(reversed_there), (Some(first.id), true));
    assert!(node.stored(first.id).await.reversed_by.is_some());
}

/// A reversal whose commit answer is lost (the batch is on disk, the writer
/// reports a failure) is read back: it is answered as recorded and, as the
/// first reversal of its original, gives the velocity back; its repeat is
/// recorded as a later one.
#[tokio::test]
async fn an_ambiguous_reversal_commit_is_read_back_and_answered_as_recorded() {
    let mut rig = Rig::new();
    let request = rig.iso(VISA, 100);
    let first = rig.authorize(&request).await;
    assert_eq!(code(&first), "00");
    for _ in 0..2 {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), "00");
    }
    rig.memory.commit_then_fail_next_batches(1);
    let reversal = rig.iso_reversal(&request, 100);
    assert_eq!(
        reversed(rig.engine.reverse(reversal.clone(), None).await),
        (Some(first.id), true)
    );
    // Given back: one more approval fits the card's 3 a minute, then 65.
    for expected in ["00", "65"] {
        let next = rig.iso(VISA, 100);
        assert_eq!(code(&rig.authorize(&next).await), expected);
    }
    assert_eq!(
        reversed(rig.engine.reverse(reversal, None).await),
        (Some(first.id), false)
    );
}

/// The wait for another node's original is bounded by its claim: once the
/// claim lapses (its node presumed dead, or stalled past its pending time),
/// the reversal is matched against the journal as it stands; here the
/// original is not there yet, so the reversal is acknowledged without one.
#[tokio::test]
async fn a_reversal_stops_waiting_when_the_originals_claim_lapses() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let other = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let request = node.iso(VISA, 100);
    let reversal = node.iso_reversal(&request, 100);
    node.memory.hold_batches();
    let (first, reversed_there, ()) = tokio::join!(
        node.authorize(&request),
        async {
            while node.memory.batches_held() == 0 {
                tokio::task::yield_now().await;
            }
            other.engine.reverse(reversal, None).await
        },
        async {
            while node.memory.batches_held() == 0 {
                tokio::task::yield_now().await;
            }
            fleet.lapse_pending();
            // The reversal reaches the stalled disk too, without waiting
            // for the original any more.
            while node.memory.batches_held() < 2 {
                tokio::task::yield_now().await;
            }
            node.memory.release_batches();
        },
    );
    assert_eq!(code(&first), "00");
    assert_eq!(reversed(reversed_there), (None, true));
}

/// Redis lost its keys (a flush, a failover to an empty replica): a claim
/// on keys it no longer holds cannot vouch that no node answered them, so a
/// plain retransmission at another node is checked in the journal, where
/// the first approval is, instead of being approved a second time.
#[tokio::test]
async fn after_the_fleet_store_lost_its_keys_a_claim_asks_the_journal() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let other = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let request = node.iso(VISA, 100);
    let first = node.authorize(&request).await;
    assert_eq!(code(&first), "00");

    fleet.flush();
    // A moment later, so a second decision would have an id of its own.
    other.clock.advance(std::time::Duration::from_millis(1));
    let again = other.authorize(&request).await;
    assert_eq!((again.id, again.decision), (first.id, first.decision));
    assert_eq!(other.duplicates(), 1);
}

/// An HTTP request's idempotency key `key` (as its digest would be kept),
/// for a request whose digest is `[request; 32]`.
fn keyed(key: &str, request: u8) -> IdempotencyRequest {
    IdempotencyRequest {
        merchant_id: ACME.to_owned(),
        key: key.to_owned(),
        request_hash: [request; 32],
        render: |outcome| {
            (
                201,
                format!(
                    r#"{{"id":"{}","code":"{}"}}"#,
                    outcome.id,
                    outcome.response_code().as_str()
                ),
            )
        },
    }
}

/// The code of a request decided now; a panic for any other answer.
fn decided_code(answer: &Idempotent) -> String {
    match answer {
        Idempotent::Decided(outcome) => code(outcome),
        other => panic!("not decided now: {other:?}"),
    }
}

/// Approves `pan` on `rig` until the card's 3 a minute decline it; returns
/// how many were approved, so a test can tell what velocity counted.
async fn approvals_left(rig: &mut Rig, pan: &str) -> usize {
    let mut approved = 0;
    loop {
        let next = rig.json(pan, 100);
        match code(&rig.authorize(&next).await).as_str() {
            "00" => approved += 1,
            "65" => return approved,
            other => panic!("unexpected {other}"),
        }
    }
}

/// Two nodes over one journal given the same key at the same instant: both
/// claims are at the (stalled) disk before either is decided. Exactly one
/// is decided and approved, the other is answered 409 without deciding, and
/// its retry gets the stored reply: one approval in the journal, counted in
/// velocity once.
#[tokio::test]
async fn two_nodes_given_one_key_at_once_approve_it_once() {
    let memory = MemoryBackend::new();
    let mut north = Rig::node(memory.clone(), None, 1);
    let mut south = Rig::node(memory.clone(), None, 2);
    let request = north.json(VISA, 100);
    memory.hold_batches();
    let (at_north, at_south) = tokio::join!(
        north.engine.authorize_idempotent(
            request.clone(),
            Received::default(),
            keyed("order-1", 1)
        ),
        async {
            // The north's claim is at the disk; the south's joins it.
            while memory.batches_held() == 0 {
                tokio::task::yield_now().await;
            }
            let south_answer = south.engine.authorize_idempotent(
                request.clone(),
                Received::default(),
                keyed("order-1", 1),
            );
            let release = async {
                while memory.batches_held() < 2 {
                    tokio::task::yield_now().await;
                }
                memory.release_batches();
            };
            tokio::join!(south_answer, release).0
        }
    );
    let (decided, winner_is_north) = match (&at_north, &at_south) {
        (Idempotent::Decided(outcome), Idempotent::InProgress) => (outcome.clone(), true),
        (Idempotent::InProgress, Idempotent::Decided(outcome)) => (outcome.clone(), false),
        other => panic!("expected one decision and one 409, got {other:?}"),
    };
    assert_eq!(code(&decided), "00");

    // The retry, on either node, gets the stored reply byte for byte.
    for rig in [&north, &south] {
        match rig
            .engine
            .authorize_idempotent(request.clone(), Received::default(), keyed("order-1", 1))
            .await
        {
            Idempotent::Replayed { status, body } => {
                assert_eq!(status, 201);
                assert_eq!(body, format!(r#"{{"id":"{}","code":"00"}}"#, decided.id));
            }
            other => panic!("expected the stored reply, got {other:?}"),
        }
    }
    // Another request under the key: 422.
    assert!(matches!(
        south
            .engine
            .authorize_idempotent(request.clone(), Received::default(), keyed("order-1", 2))
            .await,
        Idempotent::KeyReused
    ));

    let approved = south
        .engine
        .store()
        .approved_since(0, None, 10)
        .await
        .unwrap();
    assert_eq!(approved.len(), 1, "one approval in the journal");
    assert_eq!(approved[0].id, decided.id);
    // Velocity: the node that decided counted it once (2 of the card's 3 a
    // minute are left), the other never decided (3 are left).
    let (winner, other) = if winner_is_north {
        (&mut north, &mut south)
    } else {
        (&mut south, &mut north)
    };
    assert_eq!(approvals_left(winner, VISA).await, 2);
    assert_eq!(approvals_left(other, VISA).await, 3);
}

/// A fleet store that holds the first velocity confirmation until the test
/// lets it go: a request stuck between its claim and its record, as on a
/// node that stopped answering. Later ones are confirmed at once.
#[derive(Default)]
struct StuckFleet {
    entered: std::sync::atomic::AtomicBool,
    open: tokio::sync::Notify,
}

impl FleetStore for StuckFleet {
    fn on_redis_down(&self) -> OnRedisDown {
        OnRedisDown::Decline
    }
    /// Keys cannot be claimed; a request without them is confirmed.
    fn settle<'a>(
        &'a self,
        key: Option<&'a str>,
        _: u64,
        approval: Option<Approval>,
    ) -> FleetFuture<'a, Settled> {
        if key.is_some() {
            return away();
        }
        Box::pin(async move {
            // Only the first request is stuck.
            if !self.entered.swap(true, Ordering::SeqCst) {
                self.open.notified().await;
            }
            let velocity = match approval {
                Some(_) => Velocity::Counted,
                None => Velocity::NotAsked,
            };
            Ok(Settled {
                claim: Claim::Mine,
                velocity,
            })
        })
    }
    fn answer<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> FleetFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn release<'a>(&'a self, _: &'a str) -> FleetFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn reversing<'a>(&'a self, _: &'a str) -> FleetFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn give_back(&self, _: Token, _: Amount, _: bool, _: u64) -> FleetFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn ping(&self) -> FleetFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn keep_built<'a>(&'a self, _: &'a AnyStore, _: u64) -> FleetFuture<'a, u64> {
        Box::pin(async { Ok(1) })
    }
}

/// A claim whose request never answers does not lock its key for ever:
/// within the bound a retry gets 409; after it, the retry takes the claim
/// over and is decided afresh. The stuck request's late record then fails
/// its claim check: nothing of it is written, its velocity is given back,
/// and it gets the reply of the request that took its key over.
#[tokio::test]
async fn a_stale_claim_is_taken_over_and_the_late_request_writes_nothing() {
    let memory = MemoryBackend::new();
    let stuck = Arc::new(StuckFleet::default());
    let fleet: Arc<dyn FleetStore> = stuck.clone();
    let mut north = Rig::node(memory.clone(), Some(fleet), 1);
    let mut south = Rig::node(memory.clone(), None, 2);
    let request = north.json(VISA, 100);
    let (late, taken_over) = tokio::join!(
        north.engine.authorize_idempotent(
            request.clone(),
            Received::default(),
            keyed("order-2", 1)
        ),
        async {
            // The north claimed the key and is stuck deciding.
            while !stuck.entered.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            let within = south
                .engine
                .authorize_idempotent(request.clone(), Received::default(), keyed("order-2", 1))
                .await;
            assert!(matches!(within, Idempotent::InProgress), "{within:?}");
            south.clock.set(NOW_MS + CLAIM_STALE_AFTER_MS + 1);
            let taken_over = south
                .engine
                .authorize_idempotent(request.clone(), Received::default(), keyed("order-2", 1))
                .await;
            stuck.open.notify_one();
            taken_over
        }
    );
    let Idempotent::Decided(decided) = taken_over else {
        panic!("the retry after the bound is decided afresh: {taken_over:?}");
    };
    assert_eq!(code(&decided), "00");
    match late {
        Idempotent::Replayed { status, body } => {
            assert_eq!(status, 201);
            assert_eq!(body, format!(r#"{{"id":"{}","code":"00"}}"#, decided.id));
        }
        other => panic!("the late request gets the reply that stands: {other:?}"),
    }
    let approved = south
        .engine
        .store()
        .approved_since(0, None, 10)
        .await
        .unwrap();
    assert_eq!(
        approved.len(),
        1,
        "only the request that took over is written"
    );
    assert_eq!(approved[0].id, decided.id);
    // The late request's velocity was given back on its node: all 3 of the
    // card's minute are left there; the south counted its own approval.
    assert_eq!(approvals_left(&mut north, VISA).await, 3);
    assert_eq!(approvals_left(&mut south, VISA).await, 2);
}

/// A keyed request whose commit is ambiguous (it committed, the answer was
/// lost) is read back and answered as committed; the commit completed its
/// claim, so the retry gets the stored reply, not 409 and not a second
/// decision.
#[tokio::test]
async fn an_ambiguous_commit_leaves_its_claim_completed() {
    let mut rig = Rig::new();
    let request = rig.json(VISA, 100);
    rig.memory.commit_then_fail_next_batches(1);
    let first = rig
        .engine
        .authorize_idempotent(request.clone(), Received::default(), keyed("order-3", 1))
        .await;
    let Idempotent::Decided(decided) = first else {
        panic!("decided: {first:?}");
    };
    assert_eq!(code(&decided), "00", "read back: on disk");
    match rig
        .engine
        .authorize_idempotent(request, Received::default(), keyed("order-3", 1))
        .await
    {
        Idempotent::Replayed { body, .. } => {
            assert_eq!(body, format!(r#"{{"id":"{}","code":"00"}}"#, decided.id));
        }
        other => panic!("expected the stored reply, got {other:?}"),
    }
    assert_eq!(approvals_left(&mut rig, VISA).await, 2, "counted once");
}

/// A copy of a request waiting on another node's claim gets what a copy
/// waiting on the same node gets when that request's commit fails: its 96,
/// nothing decided. Deciding it instead, once the claim lapsed, let a
/// reversal arriving in between be acknowledged with no original while the
/// copy was then approved and stood (found by the fleet simulation's soak,
/// seed 656074370073533711). A later retransmission is decided afresh.
#[tokio::test]
async fn a_copy_waiting_on_another_nodes_failed_request_gets_its_96() {
    let fleet = Arc::new(SharedFleet::default());
    let mut node = Rig::over(MemoryBackend::new(), Some(fleet.clone()));
    let other = Rig::over(node.memory.clone(), Some(fleet.clone()));
    let request = node.iso(VISA, 100);
    node.memory.fail_next_batches(1);
    let (first, copy) = behind_a_stalled_disk(
        &node.memory,
        node.authorize(&request),
        other.authorize(&request),
    )
    .await;
    assert_eq!(code(&first), "96");
    assert_eq!(code(&copy), "96", "the copy was decided: {copy:?}");
    let approved = node
        .engine
        .store()
        .approved_since(0, None, 10)
        .await
        .unwrap();
    assert!(approved.is_empty(), "nothing approved: {approved:?}");
    let again = other.authorize(&request).await;
    assert_eq!(code(&again), "00");
}
