//! The engine's deterministic simulation: thousands of random interleavings
//! of acquirers' and web clients' requests, with a journal that fails,
//! stalls, commits ambiguously and crashes, checked after every step
//! against the promises the switch makes (docs/ARCHITECTURE.md, "The life
//! of a transaction").
//!
//! Everything the engine touches is in this process and driven by one seed:
//! the requests and faults (a [`SeededRandom`] of the test's own), the
//! engine's ids and auth codes (another), wall time (a [`ManualClock`]),
//! the journal (the in-memory backend under the real group commit) and the
//! tokio runtime (one thread, its timers paused, so a sleep returns only
//! once every task is waiting). The same seed replays the same run.
//!
//! A step sends a handful of requests at once, each from its own task, as
//! connections do: new ISO 8583 authorizations and purchases from three
//! acquirers (one plain-TCP, two held to their own merchants),
//! retransmissions, 0101 repeats, the same keys with another amount, JSON
//! authorizations, full and partial reversals by keys and by id, repeated
//! reversals, reversals of unknown originals and of originals still in
//! flight, and clients that leave before their answer. The step may first
//! make the journal fail its next batches, commit one and report it
//! failed, stall (more requests arrive meanwhile, then it is released), or
//! crash, after which the engine is rebuilt from what was committed and
//! replayed. Then, with nothing in flight, [`Sim::check`] asserts:
//!
//! - every approval a client received is in the journal exactly once, as
//!   answered, and no two approvals share a request's keys;
//! - every answer given for the same request keys that is not a request to
//!   retry (91, 96) is the same answer;
//! - every card's and merchant's velocity in the actors is what the journal
//!   implies (approved minus what the first reversal of each gave back),
//!   live and right after a restart's replay, and no give-back fell short;
//! - every reversal acknowledged is in the journal, and the first of its
//!   original holds it;
//! - no answer names another acquirer's or merchant's transaction.
//!
//! A failure names its seed and step; `SIM_SEED=<seed>` replays that run.
//! CI runs [`CI_SEEDS`] seeds of [`CI_STEPS`] steps. A soak with random
//! seeds:
//!
//! ```text
//! SIM_SOAK_SECONDS=600 cargo nextest run --profile soak -p switch --release --test simulation --no-capture
//! ```

// A panic in a test is a failed assertion, also in its helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actors::{
    CardLimits, Clock, ManualClock, MerchantLimits, RuleConfig, ShardConfig, Shards, WindowLimit,
};
use protocol::domain::{
    AcquirerKeys, Authorization, Channel, Decision, DeclineReason, OriginalRef, Reversal,
    ReversalKind, ReversedAmount, Token, TransactionId, TransactionKind, pad,
};
use protocol::ids::{MerchantId, Stan, TerminalId, Text, TransmissionTime};
use protocol::{Amount, Currency, Expiry, Pan};
use storage::memory::MemoryBackend;
use storage::{
    AnyStore, Journal, JournalConfig, RecordKind, StoreReader, StoredTransaction, Vault, VaultKeys,
};
use switch::admission::{AdmissionRates, LoadLimit, LoadSettings};
use switch::clock::Deadline;
use switch::config::DuplicateSettings;
use switch::engine::acquirer::Acquirer;
use switch::engine::{
    CardOutcome, Engine, EngineParts, IdempotencyRequest, Idempotent, Random, Received,
    ReversalOutcome, SeededRandom,
};
use switch::fleet::{
    Approval, Claim, FleetError, FleetFuture, FleetStore, OnRedisDown, Settled, Velocity,
};
use switch::ops::metrics::Metrics;
use tokio::task::JoinHandle;

/// Seeds CI runs, each for [`CI_STEPS`] steps.
const CI_SEEDS: u64 = 24;
const CI_STEPS: u64 = 250;

/// 2026-09-21 14:13 UTC: a run of a few hours stays within one day, so
/// every approval still counts in the day window the check reads.
const START_MS: u64 = 1_790_000_000_000;
/// The duplicate window: a retransmission later than this is a new request.
const DUPLICATE_WINDOW_MS: u64 = 60_000;

const CARDS: [&str; 6] = [
    "4111111111111111",
    "5500005555555559",
    "4012888888881881",
    "5105105105105100",
    "4222222222222",
    "378282246310005",
];
const ACME: &str = "ACME0000001";
const SHOP: &str = "SHOP0000001";
const TERMINAL: &str = "TERM0001";

/// Each card's limits, on every node and in the fleet store.
fn card_limits() -> CardLimits {
    CardLimits {
        per_minute: WindowLimit {
            count_max: Some(3),
            amount_max: Some(amount(600)),
        },
        per_hour: WindowLimit {
            count_max: Some(20),
            amount_max: None,
        },
        per_day: WindowLimit::NONE,
    }
}

/// Who sends: a plain-TCP client, and two mutual-TLS acquirers each held
/// to one merchant.
const SENDERS: usize = 3;
const PLAIN: usize = 0;

#[test]
fn the_engine_keeps_its_promises_under_random_interleavings_and_faults() {
    simulate(Shape::OneNode);
}

/// Two nodes over one journal sharing an in-memory fleet store, which can
/// also be flushed (it loses every key, as Redis does on a flush or a
/// failover to an empty replica), stop answering, or lose the answers nodes
/// leave in it after their replies (a node dying between its commit and
/// that write). Each node claims a request's keys and confirms its velocity
/// in one call after its own decision (`SimFleet::settle`, as the Redis
/// script does).
#[test]
fn a_fleet_keeps_its_promises_under_random_interleavings_and_faults() {
    simulate(Shape::Fleet);
}

/// One switch, or two nodes sharing a fleet store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    OneNode,
    Fleet,
}

fn simulate(shape: Shape) {
    let plan = Plan::from_env();
    let mut steps = 0;
    let mut runs = 0;
    let mut shed = Shed::default();
    for seed in plan.seeds() {
        let (ran, seed_shed) = run(shape, seed, plan.steps);
        steps += ran;
        shed.requests += seed_shed.requests;
        shed.records += seed_shed.records;
        runs += 1;
    }
    eprintln!(
        "simulation ({shape:?}): {runs} seeds, {steps} steps, every invariant held after each; \
         {} requests shed out of time, {} of them with their record dropped by the journal",
        shed.requests, shed.records
    );
    // The deadline paths are walked, not only compiled: requests shed
    // before their decision and records the writer came to too late.
    if steps >= 1_000 {
        assert!(
            shed.requests > 0 && shed.records > 0,
            "no request missed its deadline in {steps} steps: {shed:?}"
        );
    }
}

/// Requests shed for their deadline by a run's last nodes.
#[derive(Debug, Default)]
struct Shed {
    /// Answered 91 for their deadline, at any step.
    requests: u64,
    /// Of those, records the journal's writer did not write.
    records: u64,
}

/// Which seeds to run, from the environment: `SIM_SEED` replays one,
/// `SIM_SOAK_SECONDS` runs random seeds for that long, else CI's fixed set.
struct Plan {
    seeds: Seeds,
    steps: u64,
}

enum Seeds {
    Fixed(Vec<u64>),
    Soak { until: std::time::SystemTime },
}

impl Plan {
    fn from_env() -> Plan {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|value| value.parse::<u64>().expect("a number"))
        };
        let steps = number("SIM_STEPS").unwrap_or(CI_STEPS);
        let seeds = match (number("SIM_SEED"), number("SIM_SOAK_SECONDS")) {
            (Some(seed), _) => Seeds::Fixed(vec![seed]),
            (None, Some(seconds)) => Seeds::Soak {
                until: std::time::SystemTime::now() + Duration::from_secs(seconds),
            },
            (None, None) => Seeds::Fixed((1..=CI_SEEDS).collect()),
        };
        Plan { seeds, steps }
    }

    fn seeds(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        match &self.seeds {
            Seeds::Fixed(seeds) => Box::new(seeds.iter().copied()),
            Seeds::Soak { until } => {
                let start = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs());
                let random = SeededRandom::new(start);
                Box::new(
                    std::iter::from_fn(move || Some(next_u64(&random)))
                        .take_while(|_| std::time::SystemTime::now() < *until),
                )
            }
        }
    }
}

/// Runs one seed for `steps` steps on a runtime of its own; returns the
/// steps run and what its last nodes shed for their deadline. A failed
/// invariant panics with the seed and step.
fn run(shape: Shape, seed: u64, steps: u64) -> (u64, Shed) {
    let _seed = SeedOnFailure(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut sim = Sim::new(shape, seed).await;
        for _ in 0..steps {
            sim.step().await;
        }
        let mut shed = Shed::default();
        for node in &sim.nodes {
            let metrics = node.engine.metrics();
            shed.requests += metrics.shed_total(Channel::Iso) + metrics.shed_total(Channel::Http);
            shed.records += node.engine.journal().stats().expired;
            node.close().await;
        }
        (steps, shed)
    })
}

/// Prints how to replay a failed seed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation failed with seed {seed}; replay it with \
                 SIM_SEED={seed} cargo nextest run -p switch --test simulation --no-capture",
                seed = self.0
            );
        }
    }
}

fn next_u64(random: &SeededRandom) -> u64 {
    let mut bytes = [0; 8];
    random.fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

fn amount(minor: u64) -> Amount {
    Amount::from_minor(minor).unwrap()
}

fn merchant(id: &str) -> MerchantId {
    pad(id).unwrap()
}

/// One switch process: an engine over the journal backend, as `serve`
/// builds it, with this test's limits.
struct Node {
    engine: Arc<Engine>,
}

impl Node {
    /// A node over `memory`, not yet replayed; `generation` varies the
    /// engine's random ids across restarts of one seed.
    fn start(
        memory: &MemoryBackend,
        clock: &Arc<ManualClock>,
        fleet: Option<&Arc<SimFleet>>,
        seed: u64,
        generation: u64,
    ) -> Node {
        let wall: Arc<dyn Clock> = clock.clone();
        let open = MerchantLimits::default();
        let shards = Shards::start(
            ShardConfig {
                shard_count: 2,
                mailbox_capacity: 256,
                card_limits: card_limits(),
                merchants: HashMap::from([(merchant(ACME), open.clone()), (merchant(SHOP), open)]),
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
            metrics: Arc::new(Metrics::default()),
            clock: wall,
            random: Arc::new(SeededRandom::new(
                seed.wrapping_mul(0x9E37_79B9).wrapping_add(generation),
            )),
            rules: RuleConfig {
                amount_max: amount(1_000_000),
                blocked_bins: Vec::new(),
            },
            vault: Arc::new(vault),
            shards,
            journal: Journal::start(memory.clone(), &JournalConfig::default()),
            store: AnyStore::new(memory.clone()),
            duplicates: DuplicateSettings {
                window_ms: DUPLICATE_WINDOW_MS,
                entries_max: 100_000,
            },
            fleet: fleet.map(|fleet| {
                let fleet: Arc<dyn FleetStore> = fleet.clone();
                fleet
            }),
            admission_rates: Arc::new(AdmissionRates::new(&[])),
            load_limit: LoadLimit::new(LoadSettings::default()),
        });
        Node {
            engine: Arc::new(engine),
        }
    }

    async fn close(&self) {
        self.engine.journal().close().await;
    }
}

/// A card request as sent, and by whom.
#[derive(Debug, Clone)]
struct SentCard {
    sender: usize,
    request: Authorization,
    /// Wall time it was first sent: retransmissions stay within the window.
    sent_ms: u64,
}

/// What a client got back (or would have: `delivered` is false for a
/// client that left before its answer).
#[derive(Debug, Clone)]
enum Answered {
    Card {
        sender: usize,
        request: Authorization,
        outcome: CardOutcome,
    },
    Reversal {
        sender: usize,
        reversal: Reversal,
        outcome: ReversalOutcome,
    },
    /// A JSON authorization with an `Idempotency-Key`.
    Keyed {
        key: String,
        request: Authorization,
        answer: Idempotent,
    },
}

/// A request on its way, from a task of its own.
type Task = JoinHandle<Finished>;

/// A request's end: its answer, whether its client was still there to get
/// it, and when it was sent among all requests of the run.
#[derive(Debug)]
struct Finished {
    seq: u64,
    delivered: bool,
    answered: Answered,
}

/// What the journal faults of one step are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The next batches fail without being applied.
    Fail,
    /// The next batch commits and reports a failure.
    Ambiguous,
    /// Batches wait until more requests have arrived.
    Stall,
    /// The process dies with batches waiting; it restarts and replays.
    Crash,
    /// The fleet store loses every key (a flush, a failover to an empty
    /// replica) before the step's requests.
    Flush,
    /// The fleet store does not answer during the step.
    Away,
    /// The answers nodes leave in the fleet store after their replies are
    /// lost during the step, as when a node dies between its commit and
    /// that write: their claims stay pending, then lapse.
    AnswersLost,
}

struct Sim {
    seed: u64,
    step: u64,
    /// The test's own choices; the engine has another source.
    random: SeededRandom,
    clock: Arc<ManualClock>,
    memory: MemoryBackend,
    shape: Shape,
    nodes: Vec<Node>,
    /// The fleet's shared store, in [`Shape::Fleet`].
    fleet: Option<Arc<SimFleet>>,
    restarts: u64,
    senders: [Option<Arc<Acquirer>>; SENDERS],
    stan: u32,
    sent: Vec<SentCard>,
    reversals: Vec<(usize, Reversal)>,
    /// Every answer a client received, with its request's `seq`.
    answers: Vec<(u64, Answered)>,
    /// Requests sent so far in the run.
    seq: u64,
    /// Each transaction answered, by the earliest request answered with it.
    sent_first: HashMap<TransactionId, u64>,
    /// Wall time each request (by `seq`) was sent at.
    sent_at: HashMap<u64, u64>,
    /// Idempotency keys used, with the request first sent under each.
    keyed: Vec<(String, Authorization)>,
    /// Every transaction decided under each key, answered or not.
    keyed_ids: HashMap<String, std::collections::HashSet<TransactionId>>,
    in_flight: Vec<Task>,
    tokens: BTreeMap<Token, &'static str>,
    /// `SIM_TRACE` set: every step's fault and answers are printed.
    trace: bool,
}

impl Sim {
    async fn new(shape: Shape, seed: u64) -> Sim {
        let clock = Arc::new(ManualClock::new(START_MS));
        let memory = MemoryBackend::new();
        let fleet = (shape == Shape::Fleet).then(|| Arc::new(SimFleet::new(Arc::clone(&clock))));
        let nodes = Sim::start_nodes(shape, &memory, &clock, fleet.as_ref(), seed, 0).await;
        let node = &nodes[0];
        let north = Acquirer::new("north".to_owned(), Some(vec![merchant(ACME)]), None);
        let south = Acquirer::new("south".to_owned(), Some(vec![merchant(SHOP)]), None);
        let tokens = CARDS
            .iter()
            .map(|card| {
                let pan = Pan::parse(card.as_bytes()).unwrap();
                (node.engine.vault().tokenize(&pan), *card)
            })
            .collect();
        Sim {
            seed,
            step: 0,
            random: SeededRandom::new(seed),
            clock,
            memory,
            shape,
            nodes,
            fleet,
            restarts: 0,
            senders: [None, Some(Arc::new(north)), Some(Arc::new(south))],
            stan: 0,
            sent: Vec::new(),
            reversals: Vec::new(),
            answers: Vec::new(),
            seq: 0,
            sent_first: HashMap::new(),
            sent_at: HashMap::new(),
            keyed: Vec::new(),
            keyed_ids: HashMap::new(),
            in_flight: Vec::new(),
            tokens,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    /// The nodes of `shape` over `memory`, each replayed.
    async fn start_nodes(
        shape: Shape,
        memory: &MemoryBackend,
        clock: &Arc<ManualClock>,
        fleet: Option<&Arc<SimFleet>>,
        seed: u64,
        restarts: u64,
    ) -> Vec<Node> {
        let count = match shape {
            Shape::OneNode => 1,
            Shape::Fleet => 2,
        };
        let mut nodes = Vec::new();
        for index in 0..count {
            let node = Node::start(memory, clock, fleet, seed, restarts * 2 + index);
            let replayed = node.engine.replay().await;
            assert!(replayed.is_ok(), "seed {seed}: replay failed: {replayed:?}");
            nodes.push(node);
        }
        nodes
    }

    /// The engine of a node picked at random.
    fn any_node(&self) -> Arc<Engine> {
        let index = usize::try_from(self.below(u64::try_from(self.nodes.len()).unwrap())).unwrap();
        Arc::clone(&self.nodes[index].engine)
    }

    /// A number below `n`.
    fn below(&self, n: u64) -> u64 {
        next_u64(&self.random) % n.max(1)
    }

    /// A request's deadline, on tokio's paused clock: some pass while the
    /// journal stalls or a copy waits (shed, 91, before their record is
    /// written, or answered as committed once it is), some never do.
    fn deadline(&self) -> Option<Deadline> {
        let after_ms = match self.below(10) {
            0 => 1,
            1 => 3,
            2..5 => 2_000,
            _ => return None,
        };
        Some(Deadline::after(Duration::from_millis(after_ms)))
    }

    fn chance(&self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&self, items: &'a [T]) -> Option<&'a T> {
        let index = usize::try_from(self.below(u64::try_from(items.len()).ok()?)).ok()?;
        items.get(index)
    }

    /// One step: faults armed, requests sent at once, the journal let
    /// through, stalled and released, or crashed, then every invariant.
    async fn step(&mut self) {
        self.step += 1;
        self.clock
            .advance(Duration::from_millis(self.below(15_000)));
        // Each node looks at the fleet store once a second; a step is longer.
        for node in &self.nodes {
            node.engine.keep_fleet_built().await;
        }
        let fault = match (self.below(100), &self.fleet) {
            (53..55, Some(_)) => Fault::AnswersLost,
            (0..55, _) => Fault::None,
            (55..67, _) => Fault::Fail,
            (67..77, _) => Fault::Ambiguous,
            (77..91, _) => Fault::Stall,
            (91..94, Some(_)) => Fault::Flush,
            (94..96, Some(_)) => Fault::Away,
            _ => Fault::Crash,
        };
        match fault {
            Fault::None => {}
            Fault::Flush => {
                if let Some(fleet) = &self.fleet {
                    fleet.flush();
                }
            }
            Fault::AnswersLost => {
                if let Some(fleet) = &self.fleet {
                    fleet.set_answers_lost(true);
                }
            }
            Fault::Away => {
                if let Some(fleet) = &self.fleet {
                    fleet.set_away(true);
                    // A reversal's give-back cannot reach it meanwhile.
                    fleet.inexact();
                }
            }
            Fault::Fail => self
                .memory
                .fail_next_batches(u32::try_from(1 + self.below(2)).unwrap()),
            Fault::Ambiguous => self.memory.commit_then_fail_next_batches(1),
            Fault::Stall | Fault::Crash => self.memory.hold_batches(),
        }
        for _ in 0..1 + self.below(6) {
            self.send();
        }
        settle().await;
        match fault {
            Fault::Stall => {
                // More arrive while the journal is stalled: often copies
                // and reversals of what is waiting.
                for _ in 0..self.below(5) {
                    self.send();
                }
                settle().await;
                self.memory.release_batches();
            }
            Fault::Crash => self.crash_and_restart().await,
            Fault::None
            | Fault::Fail
            | Fault::Ambiguous
            | Fault::Flush
            | Fault::Away
            | Fault::AnswersLost => {}
        }
        self.collect().await;
        if let Some(fleet) = &self.fleet {
            fleet.set_away(false);
            fleet.set_answers_lost(false);
        }
        if self.trace {
            eprintln!("{}: {fault:?}", self.at());
        }
        // Faults armed but not used by this step's batches end with it.
        self.memory.fail_next_batches(0);
        self.memory.commit_then_fail_next_batches(0);
        self.check().await;
    }

    /// Sends one request, chosen at random, from its own task.
    fn send(&mut self) {
        let choice = self.below(100);
        let task = match choice {
            0..30 => self.new_iso(),
            30..34 => self.new_json(),
            34..37 => self.new_keyed(),
            37..40 => self.retry_keyed(),
            40..52 => self.retransmit(false),
            52..57 => self.retransmit(true),
            57..60 => self.reuse_keys(),
            60..76 => self.reverse_by_keys(),
            76..84 => self.reverse_by_id(),
            84..90 => self.repeat_reversal(),
            90..92 => self.reverse_unknown(),
            92..95 => self.unknown_merchant(),
            95..98 => self.collide(),
            _ => self.new_iso(),
        };
        if let Some(task) = task {
            self.in_flight.push(task);
        }
    }

    fn next_keys(&mut self) -> AcquirerKeys {
        self.stan += 1;
        let now_s = self.clock.now_ms() / 1000;
        AcquirerKeys {
            stan: Text::parse(format!("{:06}", self.stan % 1_000_000).as_bytes()).unwrap(),
            rrn: None,
            transmitted_at: Some(
                Text::parse(format!("{:010}", now_s % 10_000_000_000).as_bytes()).unwrap(),
            ),
            repeat: false,
        }
    }

    /// A merchant `sender` may send for (a plain-TCP client may send for
    /// any), or now and then one it may not.
    fn merchant_of(&self, sender: usize) -> MerchantId {
        let own = match sender {
            1 => ACME,
            2 => SHOP,
            _ if self.chance(50) => ACME,
            _ => SHOP,
        };
        if sender != PLAIN && self.chance(4) {
            return merchant(if own == ACME { SHOP } else { ACME });
        }
        merchant(own)
    }

    fn new_request(&mut self, sender: usize, channel: Channel) -> Authorization {
        let pan = *self.pick(&CARDS).unwrap();
        Authorization {
            channel,
            kind: if self.chance(70) {
                TransactionKind::Authorization
            } else {
                TransactionKind::Purchase
            },
            pan: Pan::parse(pan.as_bytes()).unwrap(),
            expiry: Some(Expiry::parse(b"3012").unwrap()),
            amount: amount(1 + self.below(300)),
            currency: Currency::parse("EUR").unwrap(),
            merchant_id: self.merchant_of(sender),
            terminal_id: pad(TERMINAL).unwrap(),
            mcc: None,
            keys: match channel {
                Channel::Iso => Some(self.next_keys()),
                Channel::Http => None,
            },
        }
    }

    fn new_iso(&mut self) -> Option<Task> {
        let sender = usize::try_from(self.below(3)).unwrap();
        let request = self.new_request(sender, Channel::Iso);
        Some(self.send_card(sender, request))
    }

    fn new_json(&mut self) -> Option<Task> {
        let request = self.new_request(PLAIN, Channel::Http);
        Some(self.send_card(PLAIN, request))
    }

    /// A JSON authorization under an `Idempotency-Key` of its own.
    fn new_keyed(&mut self) -> Option<Task> {
        let request = self.new_request(PLAIN, Channel::Http);
        let key = format!("key-{}", self.keyed.len());
        self.keyed.push((key.clone(), request.clone()));
        Some(self.spawn_keyed(key, request))
    }

    /// A web client's retry under a key it used: the same request, or now
    /// and then another request under the same key (422).
    fn retry_keyed(&mut self) -> Option<Task> {
        let (key, mut request) = self.pick(&self.keyed)?.clone();
        if self.chance(15) {
            request.amount = amount(request.amount.minor() + 1 + self.below(50));
        }
        Some(self.spawn_keyed(key, request))
    }

    fn unknown_merchant(&mut self) -> Option<Task> {
        let mut request = self.new_request(PLAIN, Channel::Iso);
        request.merchant_id = merchant("NOBODY00001");
        Some(self.send_card(PLAIN, request))
    }

    /// An ISO request sent before, within the duplicate window.
    fn recent_iso(&self) -> Option<SentCard> {
        let now_ms = self.clock.now_ms();
        let recent: Vec<&SentCard> = self
            .sent
            .iter()
            .filter(|sent| {
                sent.request.keys.is_some()
                    && now_ms.saturating_sub(sent.sent_ms) < DUPLICATE_WINDOW_MS - 5_000
            })
            .collect();
        self.pick(&recent).map(|sent| (*sent).clone())
    }

    /// The same request again: a retransmission, or a repeat (0101, 0201)
    /// of any request sent, which the journal is asked for.
    fn retransmit(&mut self, repeat: bool) -> Option<Task> {
        let sent = if repeat {
            let iso: Vec<&SentCard> = self
                .sent
                .iter()
                .filter(|sent| sent.request.keys.is_some())
                .collect();
            self.pick(&iso).map(|sent| (*sent).clone())?
        } else {
            self.recent_iso()?
        };
        let mut request = sent.request;
        if let Some(keys) = request.keys.as_mut() {
            keys.repeat = repeat;
        }
        Some(self.spawn_card(sent.sender, request))
    }

    /// Another acquirer's (or client's) request with the terminal id, STAN
    /// and DE7 of an earlier one: terminal ids collide across acquirers, and
    /// such a request is its own, never answered with the other's.
    fn collide(&mut self) -> Option<Task> {
        let sent = self.recent_iso()?;
        let sender = (sent.sender + 1 + usize::try_from(self.below(2)).unwrap()) % SENDERS;
        let mut request = self.new_request(sender, Channel::Iso);
        request.keys = sent.request.keys;
        request.terminal_id = sent.request.terminal_id;
        Some(self.send_card(sender, request))
    }

    /// A recent request's keys on another amount: a different request
    /// reusing keys.
    fn reuse_keys(&mut self) -> Option<Task> {
        let sent = self.recent_iso()?;
        let mut request = sent.request;
        request.amount = amount(request.amount.minor() + 1 + self.below(50));
        Some(self.spawn_card(sent.sender, request))
    }

    /// A reversal of a request sent (possibly still in flight, possibly
    /// never recorded) by its keys, as DE90 names it: all of it, or part;
    /// now and then from another acquirer, for one of its own merchants,
    /// which must reverse nothing of the first's.
    fn reverse_by_keys(&mut self) -> Option<Task> {
        let iso: Vec<&SentCard> = self
            .sent
            .iter()
            .filter(|sent| sent.request.keys.is_some())
            .collect();
        let sent = (*self.pick(&iso)?).clone();
        let original = &sent.request;
        let keys = original.keys?;
        let reversed = if self.chance(50) {
            original.amount
        } else {
            amount(1 + self.below(original.amount.minor()))
        };
        let reversal = Reversal {
            channel: Channel::Iso,
            kind: if self.chance(80) {
                ReversalKind::Reversal
            } else {
                ReversalKind::Advice
            },
            original: OriginalRef::Keys {
                terminal_id: original.terminal_id,
                stan: keys.stan,
                transmitted_at: keys.transmitted_at,
            },
            amount: ReversedAmount::Part(reversed),
            currency: Some(original.currency),
            merchant_id: original.merchant_id,
            terminal_id: Some(original.terminal_id),
            keys: Some(self.next_keys()),
        };
        if self.chance(10) {
            let other = (sent.sender + 1 + usize::try_from(self.below(2)).unwrap()) % SENDERS;
            let merchant_id = self.merchant_of(other);
            return Some(self.send_reversal(
                other,
                Reversal {
                    merchant_id,
                    ..reversal
                },
            ));
        }
        Some(self.send_reversal(sent.sender, reversal))
    }

    /// A JSON reversal of an approval a client was given, by its merchant.
    fn reverse_by_id(&mut self) -> Option<Task> {
        let approvals: Vec<(TransactionId, MerchantId, Amount)> = self
            .answers
            .iter()
            .filter_map(|(_, answered)| match answered {
                Answered::Card {
                    request, outcome, ..
                } if outcome.decision.auth_code().is_some() => {
                    Some((outcome.id, request.merchant_id, outcome.amount))
                }
                _ => None,
            })
            .collect();
        let &(id, merchant_id, original) = self.pick(&approvals)?;
        let reversed = if self.chance(50) {
            ReversedAmount::Whole
        } else {
            ReversedAmount::Part(amount(1 + self.below(original.minor())))
        };
        let reversal = Reversal {
            channel: Channel::Http,
            kind: ReversalKind::Reversal,
            original: OriginalRef::Id(id),
            amount: reversed,
            currency: None,
            merchant_id,
            terminal_id: None,
            keys: None,
        };
        Some(self.send_reversal(PLAIN, reversal))
    }

    fn repeat_reversal(&mut self) -> Option<Task> {
        let (sender, reversal) = self.pick(&self.reversals)?.clone();
        Some(self.spawn_reversal(sender, reversal))
    }

    /// A reversal naming keys no request was sent with.
    fn reverse_unknown(&mut self) -> Option<Task> {
        let keys = self.next_keys();
        let reversal = Reversal {
            channel: Channel::Iso,
            kind: ReversalKind::Reversal,
            original: OriginalRef::Keys {
                terminal_id: pad(TERMINAL).unwrap(),
                stan: keys.stan,
                transmitted_at: keys.transmitted_at,
            },
            amount: ReversedAmount::Part(amount(100)),
            currency: Some(Currency::parse("EUR").unwrap()),
            merchant_id: merchant(ACME),
            terminal_id: Some(pad(TERMINAL).unwrap()),
            keys: Some(self.next_keys()),
        };
        Some(self.send_reversal(PLAIN, reversal))
    }

    fn send_card(&mut self, sender: usize, request: Authorization) -> Task {
        self.sent.push(SentCard {
            sender,
            request: request.clone(),
            sent_ms: self.clock.now_ms(),
        });
        self.spawn_card(sender, request)
    }

    fn send_reversal(&mut self, sender: usize, reversal: Reversal) -> Task {
        self.reversals.push((sender, reversal.clone()));
        self.spawn_reversal(sender, reversal)
    }

    /// Sends `request` from a task of its own, as a connection does; a
    /// client that leaves gets nothing, though the switch goes on.
    fn spawn_card(&mut self, sender: usize, request: Authorization) -> Task {
        let engine = self.any_node();
        let acquirer = self.senders.get(sender).cloned().flatten();
        let delivered = self.chance(92);
        let seq = self.next_seq();
        let deadline = self.deadline();
        tokio::spawn(async move {
            let received = Received {
                acquirer: acquirer.as_deref(),
                processing_code: None,
                decode_us: 0,
                deadline,
                policy: None,
            };
            let outcome = engine.authorize(request.clone(), received).await;
            Finished {
                seq,
                delivered,
                answered: Answered::Card {
                    sender,
                    request,
                    outcome,
                },
            }
        })
    }

    fn spawn_keyed(&mut self, key: String, request: Authorization) -> Task {
        let engine = self.any_node();
        let delivered = self.chance(92);
        let seq = self.next_seq();
        let idempotency = IdempotencyRequest {
            merchant_id: request.merchant_id.as_str().trim_end().to_owned(),
            key: key.clone(),
            request_hash: request_digest(&engine, &request),
            render,
        };
        let received = Received {
            deadline: self.deadline(),
            ..Received::default()
        };
        tokio::spawn(async move {
            let answer = engine
                .authorize_idempotent(request.clone(), received, idempotency)
                .await;
            Finished {
                seq,
                delivered,
                answered: Answered::Keyed {
                    key,
                    request,
                    answer,
                },
            }
        })
    }

    fn spawn_reversal(&mut self, sender: usize, reversal: Reversal) -> Task {
        let engine = self.any_node();
        let acquirer = self.senders.get(sender).cloned().flatten();
        let delivered = self.chance(92);
        let seq = self.next_seq();
        let deadline = self.deadline();
        tokio::spawn(async move {
            let outcome = engine
                .reverse_within(reversal.clone(), acquirer.as_deref(), deadline)
                .await;
            Finished {
                seq,
                delivered,
                answered: Answered::Reversal {
                    sender,
                    reversal,
                    outcome,
                },
            }
        })
    }

    /// Waits for every request in flight and keeps the answers clients got,
    /// and which request each card answer's transaction came from first.
    async fn collect(&mut self) {
        for task in std::mem::take(&mut self.in_flight) {
            let finished = task.await.unwrap();
            if let Answered::Card { outcome, .. } = &finished.answered {
                let first = self.sent_first.entry(outcome.id).or_insert(finished.seq);
                *first = (*first).min(finished.seq);
            }
            if let Answered::Keyed {
                key,
                request,
                answer: Idempotent::Decided(outcome),
            } = &finished.answered
            {
                self.keyed_ids
                    .entry(key.clone())
                    .or_default()
                    .insert(outcome.id);
                // A decision like any other card request's, for the checks
                // of approvals, ownership and velocity.
                if finished.delivered {
                    self.answers.push((
                        finished.seq,
                        Answered::Card {
                            sender: PLAIN,
                            request: request.clone(),
                            outcome: outcome.clone(),
                        },
                    ));
                }
            }
            if self.trace {
                eprintln!(
                    "  #{} {}{}",
                    finished.seq,
                    describe(&finished.answered),
                    if finished.delivered {
                        ""
                    } else {
                        " (client gone)"
                    }
                );
            }
            if finished.delivered {
                self.answers.push((finished.seq, finished.answered));
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.sent_at.insert(self.seq, self.clock.now_ms());
        self.seq
    }

    /// The process dies with batches waiting at the stalled disk: what was
    /// committed stays, the rest is lost. Requests waiting on the dead
    /// journal end (their clients get 96 or nothing); a new node starts
    /// over what was committed and replays it.
    async fn crash_and_restart(&mut self) {
        let committed = self.memory.crash();
        if let Some(fleet) = &self.fleet {
            // Approvals in flight stay counted in the fleet; their records
            // may never have committed.
            fleet.inexact();
        }
        self.collect().await;
        for node in &self.nodes {
            node.close().await;
        }
        self.restarts += 1;
        self.memory = MemoryBackend::restart(&committed);
        self.nodes = Sim::start_nodes(
            self.shape,
            &self.memory,
            &self.clock,
            self.fleet.as_ref(),
            self.seed,
            self.restarts,
        )
        .await;
        // Velocity right after replay is what the journal implies.
        self.check_velocity().await;
    }

    fn at(&self) -> String {
        format!(
            "seed {} step {} (restart {})",
            self.seed, self.step, self.restarts
        )
    }

    /// Every invariant, with nothing in flight.
    async fn check(&self) {
        let journal: HashMap<TransactionId, StoredTransaction> = self
            .memory
            .committed()
            .into_iter()
            .map(|stored| (stored.record.id, stored))
            .collect();
        self.check_approvals(&journal);
        self.check_answers_agree();
        self.check_reversals(&journal);
        self.check_keyed(&journal);
        self.check_ownership(&journal);
        self.check_velocity().await;
    }

    /// Every approval a client received is in the journal as answered, and
    /// no two approved records share a request's keys.
    fn check_approvals(&self, journal: &HashMap<TransactionId, StoredTransaction>) {
        for (_, answered) in &self.answers {
            let Answered::Card { outcome, .. } = answered else {
                continue;
            };
            let Decision::Approved { auth_code } = outcome.decision else {
                continue;
            };
            let stored = journal.get(&outcome.id);
            assert!(
                stored.is_some_and(|stored| stored.record.auth_code == Some(auth_code)
                    && stored.record.response_code.is_approved()
                    && stored.record.token == outcome.token
                    && stored.record.amount == outcome.amount),
                "{}: approval {} answered but not journaled as answered: {stored:?}",
                self.at(),
                outcome.id
            );
        }
        // Keys used again after the duplicate window are a new request.
        let mut by_keys: HashMap<RequestKeys, Vec<&storage::JournalRecord>> = HashMap::new();
        for stored in journal.values() {
            let record = &stored.record;
            if !record.response_code.is_approved() || !is_card_request(record.kind) {
                continue;
            }
            if let Some(keys) = RequestKeys::of_record(record) {
                by_keys.entry(keys).or_default().push(record);
            }
        }
        for (keys, mut approvals) in by_keys {
            approvals.sort_by_key(|record| record.created_at_ms);
            for pair in approvals.windows(2) {
                let (first, second) = (pair[0], pair[1]);
                assert!(
                    second.created_at_ms - first.created_at_ms >= DUPLICATE_WINDOW_MS,
                    "{}: two approvals journaled for one request {keys:?}: {} and {}",
                    self.at(),
                    first.id,
                    second.id
                );
            }
        }
    }

    /// Every final answer (not a request to retry) to the same request keys
    /// is the same answer.
    fn check_answers_agree(&self) {
        let mut first: HashMap<RequestKeys, (u64, &Authorization, &CardOutcome)> = HashMap::new();
        for (seq, answered) in &self.answers {
            let Answered::Card {
                sender,
                request,
                outcome,
            } = answered
            else {
                continue;
            };
            // A request to retry is no answer; a 94 answers for the request
            // that holds the keys, checked from that request's side; and a
            // request from an acquirer not permitted for its merchant is
            // never matched to an earlier answer (it would read another
            // acquirer's), so each copy is declined 58 afresh.
            let unmatched = matches!(
                outcome.decision,
                Decision::Declined {
                    reason: DeclineReason::DuplicateMismatch | DeclineReason::AcquirerNotPermitted
                }
            );
            if asks_for_retry(outcome) || unmatched {
                continue;
            }
            let Some(keys) = RequestKeys::of_request(self.acquirer_name(*sender), request) else {
                continue;
            };
            let sent_ms = self.sent_at.get(seq).copied().unwrap_or_default();
            let Some(&(_, first_request, first_outcome)) = first.get(&keys) else {
                first.insert(keys, (sent_ms, request, outcome));
                continue;
            };
            let same_request =
                first_request.pan == request.pan && first_request.amount == request.amount;
            // Another request with these keys after the duplicate window is
            // a new one: the window is how long keys are remembered.
            if !same_request && sent_ms >= first_outcome.created_at_ms + DUPLICATE_WINDOW_MS {
                first.insert(keys, (sent_ms, request, outcome));
                continue;
            }
            assert!(
                same_request
                    && first_outcome.id == outcome.id
                    && first_outcome.decision == outcome.decision,
                "{}: one request's keys {keys:?} answered twice differently: {first_outcome:?} then {outcome:?}",
                self.at()
            );
        }
    }

    /// An idempotency key gets one decision: at most one transaction
    /// decided under it stands in the journal as an answer, every final reply under it is
    /// the same bytes (a retry-asking 503, a 409 in progress and a
    /// 503 unavailable are no reply), and 422 only for another request.
    fn check_keyed(&self, journal: &HashMap<TransactionId, StoredTransaction>) {
        for (key, ids) in &self.keyed_ids {
            // A decline asking for a retry (91, 96) is journaled too, but
            // answers nothing: the retry is decided afresh.
            let recorded: Vec<&TransactionId> = ids
                .iter()
                .filter(|id| {
                    journal.get(id).is_some_and(|stored| {
                        !stored
                            .record
                            .reason
                            .is_some_and(DeclineReason::asks_for_retry)
                    })
                })
                .collect();
            assert!(
                recorded.len() <= 1,
                "{}: key {key} has {} transactions in the journal: {recorded:?}",
                self.at(),
                recorded.len()
            );
        }
        let mut replies: HashMap<&str, ((u16, String), &Authorization)> = HashMap::new();
        for (_, answered) in &self.answers {
            let Answered::Keyed {
                key,
                request,
                answer,
            } = answered
            else {
                continue;
            };
            let reply = match answer {
                Idempotent::Decided(outcome) if !asks_for_retry(outcome) => render(outcome),
                Idempotent::Replayed { status, body } => (*status, body.clone()),
                _ => continue,
            };
            match replies.get(key.as_str()) {
                None => {
                    replies.insert(key, (reply, request));
                }
                Some((first, _)) => assert_eq!(
                    first,
                    &reply,
                    "{}: key {key} replied twice differently",
                    self.at()
                ),
            }
        }
        for (_, answered) in &self.answers {
            if let Answered::Keyed {
                key,
                request,
                answer: Idempotent::KeyReused,
            } = answered
                && let Some((_, first)) = replies.get(key.as_str())
            {
                assert!(
                    first.amount != request.amount || first.pan != request.pan,
                    "{}: key {key} refused 422 for the request whose reply it holds",
                    self.at()
                );
            }
        }
    }

    /// Every reversal acknowledged is journaled, naming the original it was
    /// answered with; the first reversal of an original holds it.
    fn check_reversals(&self, journal: &HashMap<TransactionId, StoredTransaction>) {
        for (seq, answered) in &self.answers {
            let Answered::Reversal {
                sender,
                reversal,
                outcome,
            } = answered
            else {
                continue;
            };
            let ReversalOutcome::Recorded {
                id,
                original,
                first,
            } = *outcome
            else {
                continue;
            };
            let stored = journal.get(&id);
            assert!(
                stored.is_some_and(|stored| !is_card_request(stored.record.kind)
                    && stored.record.original_id == original),
                "{}: reversal {id} acknowledged but not journaled as answered: {stored:?}",
                self.at()
            );
            if original.is_none() {
                self.check_nothing_to_reverse(journal, *seq, *sender, reversal, stored);
            }
            if let (Some(original), true) = (original, first) {
                let holder = journal.get(&original).and_then(|stored| stored.reversed_by);
                assert_eq!(
                    holder,
                    Some(id),
                    "{}: reversal {id} answered as the first of {original}",
                    self.at()
                );
            }
        }
    }

    /// A reversal acknowledged as of an unknown original: no request of its
    /// acquirer and merchant with the keys it names, sent before it (`seq`),
    /// was committed (one still in flight when the reversal arrived must
    /// have been waited for).
    fn check_nothing_to_reverse(
        &self,
        journal: &HashMap<TransactionId, StoredTransaction>,
        seq: u64,
        sender: usize,
        reversal: &Reversal,
        stored: Option<&StoredTransaction>,
    ) {
        let (
            OriginalRef::Keys {
                terminal_id,
                stan,
                transmitted_at,
            },
            Some(stored),
        ) = (reversal.original, stored)
        else {
            return;
        };
        let missed = journal.values().find(|original| {
            let record = &original.record;
            is_card_request(record.kind)
                && record.terminal_id == terminal_id
                && record.stan == Some(stan)
                && (transmitted_at.is_none() || record.transmitted_at == transmitted_at)
                && record.merchant_id == reversal.merchant_id
                && record.acquirer.as_deref() == self.acquirer_name(sender)
                && self
                    .sent_first
                    .get(&record.id)
                    .is_some_and(|first| *first < seq)
                // The request reversals name: not another request that
                // reused its keys (a misbehaving acquirer's), which a
                // reversal of the first is not about.
                && self.sent.iter().any(|sent| {
                    sent.request.keys.map(|keys| keys.stan) == Some(stan)
                        && sent.request.merchant_id == record.merchant_id
                        && sent.request.amount == record.amount
                        && record.token == Some(self.nodes[0].engine.vault().tokenize(&sent.request.pan))
                })
        });
        assert!(
            missed.is_none(),
            "{}: reversal {} acknowledged as of no original, but {:?} was committed before it",
            self.at(),
            stored.record.id,
            missed.map(|original| original.record.id)
        );
    }

    /// No answer names another acquirer's or another merchant's
    /// transaction.
    fn check_ownership(&self, journal: &HashMap<TransactionId, StoredTransaction>) {
        for (_, answered) in &self.answers {
            let (sender, merchant_id, named, by_keys) = match answered {
                Answered::Card {
                    sender,
                    request,
                    outcome,
                } => (*sender, request.merchant_id, Some(outcome.id), true),
                Answered::Reversal {
                    sender,
                    reversal,
                    outcome: ReversalOutcome::Recorded { original, .. },
                } => (
                    *sender,
                    reversal.merchant_id,
                    *original,
                    matches!(reversal.original, OriginalRef::Keys { .. }),
                ),
                Answered::Reversal { .. } | Answered::Keyed { .. } => continue,
            };
            let Some(record) = named.and_then(|id| journal.get(&id)).map(|s| &s.record) else {
                continue;
            };
            assert_eq!(
                record.merchant_id,
                merchant_id,
                "{}: an answer to {merchant_id:?} names another merchant's {}",
                self.at(),
                record.id
            );
            if by_keys {
                assert_eq!(
                    record.acquirer.as_deref(),
                    self.acquirer_name(sender),
                    "{}: an answer to acquirer {:?} names another acquirer's {}",
                    self.at(),
                    self.acquirer_name(sender),
                    record.id
                );
            }
        }
    }

    /// Each card's and merchant's velocity in the actors is what the
    /// journal implies: every approval of the run (it lasts less than a
    /// day), less what the first reversal of each gave back; and no
    /// give-back fell short.
    async fn check_velocity(&self) {
        let journal = self.memory.committed();
        let reversed: HashMap<TransactionId, Amount> = journal
            .iter()
            .filter(|stored| !is_card_request(stored.record.kind))
            .map(|stored| (stored.record.id, stored.record.amount))
            .collect();
        let mut cards = CardTotals::new();
        let mut merchants: HashMap<MerchantId, u64> = HashMap::new();
        for stored in &journal {
            let record = &stored.record;
            if !record.response_code.is_approved() || !is_card_request(record.kind) {
                continue;
            }
            let given_back = stored
                .reversed_by
                .and_then(|reversal| reversed.get(&reversal))
                .map_or(0, |reversal| reversal.minor().min(record.amount.minor()));
            let standing = record.amount.minor() - given_back;
            let token = record.token.unwrap();
            let card = cards.entry(token).or_default();
            card.0 += u64::from(standing > 0);
            card.1 += standing;
            *merchants.entry(record.merchant_id).or_default() += standing;
        }
        if let Some(fleet) = &self.fleet {
            self.check_fleet_velocity(fleet, &cards);
            return;
        }
        let shards = self.nodes[0].engine.shards();
        for (token, card) in &self.tokens {
            let expected = cards.get(token).copied().unwrap_or_default();
            let held = shards.card_day(*token).await;
            assert_eq!(
                (held.count, held.amount_minor),
                expected,
                "{}: card {}'s velocity (count, amount) is not what the journal implies",
                self.at(),
                &card[card.len() - 4..]
            );
        }
        for id in [ACME, SHOP] {
            let merchant_id = merchant(id);
            let expected = merchants.get(&merchant_id).copied().unwrap_or_default();
            let held = shards.merchant_day(merchant_id).await.unwrap();
            assert_eq!(
                held.minor(),
                expected,
                "{}: merchant {id}'s volume today is not what the journal implies",
                self.at()
            );
        }
        let shortfall = shards.stats().await.give_back_shortfall_total;
        assert_eq!(shortfall, 0, "{}: a give-back fell short", self.at());
    }

    /// In a fleet, the shared store's velocity is what the journal implies
    /// (each node's actors count only its own approvals between restarts).
    /// It may hold more, never less, while a give-back could not reach it
    /// (the store was away) or a crash left approvals counted whose records
    /// never committed, until it is next rebuilt.
    fn check_fleet_velocity(&self, fleet: &SimFleet, cards: &CardTotals) {
        let Some((exact, held)) = fleet.cards_day() else {
            // Lost and not rebuilt yet: no node uses it.
            return;
        };
        for (token, card) in &self.tokens {
            let expected = cards.get(token).copied().unwrap_or_default();
            let held = held.get(token).copied().unwrap_or_default();
            let last4 = &card[card.len() - 4..];
            if exact {
                assert_eq!(
                    held,
                    expected,
                    "{}: card {last4}'s velocity in the fleet (count, amount) is not what the journal implies",
                    self.at()
                );
            } else {
                assert!(
                    held.0 >= expected.0 && held.1 >= expected.1,
                    "{}: card {last4}'s velocity in the fleet {held:?} is below what the journal implies {expected:?}",
                    self.at()
                );
            }
        }
    }

    fn acquirer_name(&self, sender: usize) -> Option<&str> {
        self.senders
            .get(sender)
            .and_then(Option::as_deref)
            .map(|acquirer| &*acquirer.name)
    }
}

/// The reply a web client gets for a decision, as the JSON API renders it:
/// what an idempotent replay must return byte for byte.
fn render(outcome: &CardOutcome) -> (u16, String) {
    (
        201,
        format!(
            r#"{{"id":"{}","code":"{}","auth_code":"{}"}}"#,
            outcome.id,
            outcome.response_code().as_str(),
            outcome
                .decision
                .auth_code()
                .map_or("", |code| code.as_str())
        ),
    )
}

/// A request's digest, as the JSON API keys it: here its card's token and
/// its amount.
fn request_digest(engine: &Engine, request: &Authorization) -> [u8; 32] {
    let mut digest = [0; 32];
    digest[..16].copy_from_slice(engine.vault().tokenize(&request.pan).as_bytes());
    digest[16..24].copy_from_slice(&request.amount.minor().to_le_bytes());
    digest
}

/// One line for a trace.
fn describe(answered: &Answered) -> String {
    match answered {
        Answered::Keyed {
            key,
            request,
            answer,
        } => format!(
            "keyed {key} {} {:?} -> {answer:?}",
            request.amount.minor(),
            request.merchant_id
        ),
        Answered::Card {
            sender,
            request,
            outcome,
        } => format!(
            "card from {sender}: {:?} {:?} {} {:?} -> {} {:?}",
            request.channel,
            request.keys.map(|keys| (keys.stan, keys.repeat)),
            request.amount.minor(),
            outcome.token,
            outcome.id,
            outcome.decision
        ),
        Answered::Reversal {
            sender,
            reversal,
            outcome,
        } => format!(
            "reversal from {sender}: {:?} {:?} -> {outcome:?}",
            reversal.original, reversal.amount
        ),
    }
}

/// Runs every task that can run: with the runtime's timers paused, a sleep
/// returns only once every other task is waiting (on the stalled journal,
/// or done).
async fn settle() {
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn is_card_request(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::Authorization | RecordKind::Purchase)
}

fn asks_for_retry(outcome: &CardOutcome) -> bool {
    matches!(outcome.decision, Decision::Declined { reason } if reason.asks_for_retry())
}

/// What identifies one ISO 8583 request: its acquirer, merchant and keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestKeys {
    acquirer: Option<String>,
    merchant_id: MerchantId,
    terminal_id: TerminalId,
    stan: Stan,
    transmitted_at: Option<TransmissionTime>,
}

impl RequestKeys {
    fn of_request(acquirer: Option<&str>, request: &Authorization) -> Option<RequestKeys> {
        let keys = request.keys?;
        Some(RequestKeys {
            acquirer: acquirer.map(str::to_owned),
            merchant_id: request.merchant_id,
            terminal_id: request.terminal_id,
            stan: keys.stan,
            transmitted_at: keys.transmitted_at,
        })
    }

    fn of_record(record: &storage::JournalRecord) -> Option<RequestKeys> {
        Some(RequestKeys {
            acquirer: record.acquirer.clone(),
            merchant_id: record.merchant_id,
            terminal_id: record.terminal_id,
            stan: record.stan?,
            transmitted_at: record.transmitted_at,
        })
    }
}

/// What the store holds for a request's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    /// A node decides it; the claim lapses at `until_ms`.
    Pending {
        until_ms: u64,
    },
    /// Given up, or pending past its deadline: the next claim must ask the
    /// journal.
    Lapsed,
    /// A reversal found no original before any node claimed it.
    Reversed,
    Answered(String),
}

impl FleetState {
    /// Claims `key` for the caller, or says who holds it.
    fn claim(&mut self, key: &str, pending_ms: u64, now_ms: u64) -> Claim {
        let claim = match self.claims.get(key) {
            Some(Held::Answered(answer)) => return Claim::Answered(answer.clone()),
            Some(Held::Reversed) => return Claim::Reversed,
            Some(Held::Pending { until_ms }) if *until_ms > now_ms => return Claim::Pending,
            Some(Held::Pending { .. } | Held::Lapsed) => Claim::TakenOver,
            None if self
                .claims_since_ms
                .is_some_and(|since| since + DUPLICATE_WINDOW_MS <= now_ms) =>
            {
                Claim::Mine
            }
            None => Claim::TakenOver,
        };
        self.claims.insert(
            key.to_owned(),
            Held::Pending {
                until_ms: now_ms + pending_ms,
            },
        );
        claim
    }
}

/// Each card's (count, amount) in its day window.
type CardTotals = HashMap<Token, (u64, u64)>;

/// A fleet's shared store in memory, as the Redis one behaves: claims on
/// acquirer keys, pending until answered or released (or until they
/// expire), each card's velocity in the same windows as the actors
/// (`actors::CardState`, so both count alike), and generations: after a
/// flush nothing is used until a node rebuilds it from the journal.
struct SimFleet {
    clock: Arc<ManualClock>,
    state: std::sync::Mutex<FleetState>,
}

#[derive(Default)]
struct FleetState {
    claims: HashMap<String, Held>,
    /// Since when the store has held the fleet's claims; `None` once lost,
    /// until a node sets it again.
    claims_since_ms: Option<u64>,
    cards: HashMap<Token, actors::CardState>,
    /// 0 while lost and not rebuilt.
    generation: u64,
    generations: u64,
    away: bool,
    /// Answers written after replies are lost, as from a node that died
    /// between its commit and that write.
    answers_lost: bool,
    /// False from a crash or an outage until the next rebuild: the store
    /// may then hold more than the journal implies.
    exact: bool,
}

impl SimFleet {
    fn new(clock: Arc<ManualClock>) -> SimFleet {
        SimFleet {
            clock,
            state: std::sync::Mutex::new(FleetState {
                claims_since_ms: Some(0),
                generation: 1,
                generations: 1,
                exact: true,
                ..FleetState::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().unwrap()
    }

    /// Loses every key.
    fn flush(&self) {
        let mut state = self.state();
        state.claims.clear();
        state.claims_since_ms = None;
        state.cards.clear();
        state.generation = 0;
    }

    fn set_away(&self, away: bool) {
        self.state().away = away;
    }

    fn set_answers_lost(&self, lost: bool) {
        self.state().answers_lost = lost;
    }

    fn inexact(&self) {
        self.state().exact = false;
    }

    /// Whether the store is exact, and each card's day window; `None` while
    /// it is lost.
    fn cards_day(&self) -> Option<(bool, CardTotals)> {
        let now_ms = self.clock.now_ms();
        let mut state = self.state();
        if state.generation == 0 {
            return None;
        }
        let cards = state
            .cards
            .iter_mut()
            .map(|(token, card)| {
                let totals = card.totals_at(actors::Window::Day, now_ms);
                (*token, (totals.count, totals.amount_minor))
            })
            .collect();
        Some((state.exact, cards))
    }

    /// Runs `call` on the state, or fails as an unreachable Redis does.
    fn answer<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut FleetState, u64) -> Result<T, FleetError>,
    ) -> FleetFuture<'_, T> {
        let now_ms = self.clock.now_ms();
        let result = {
            let mut state = self.state();
            if state.away {
                Err(FleetError::Timeout { timeout_ms: 50 })
            } else {
                call(&mut state, now_ms)
            }
        };
        Box::pin(async move { result })
    }
}

impl FleetStore for SimFleet {
    fn on_redis_down(&self) -> OnRedisDown {
        OnRedisDown::Decline
    }

    /// As the settle script does, atomically: the claim (an answer is
    /// shared, a live claim is pending, and a claim on keys nobody holds
    /// vouches that no node answered them only if the store has held the
    /// claims for a window), then, only when the claim is this node's, the
    /// approval checked and counted.
    fn settle<'a>(
        &'a self,
        key: Option<&'a str>,
        pending_ms: u64,
        approval: Option<Approval>,
    ) -> FleetFuture<'a, Settled> {
        self.answer(move |state, now_ms| {
            let claim = match key {
                Some(key) => state.claim(key, pending_ms, now_ms),
                None => Claim::Mine,
            };
            let velocity = match approval {
                Some(_) if !claim.is_this_nodes() => Velocity::NotAsked,
                None => Velocity::NotAsked,
                Some(_) if state.generation == 0 => Velocity::NotBuilt,
                Some(approval) => {
                    let card = state
                        .cards
                        .entry(approval.token)
                        .or_insert_with(|| actors::CardState::new(approval.at_ms));
                    match card.check_and_reserve(&card_limits(), approval.amount, approval.at_ms) {
                        Ok(()) => Velocity::Counted,
                        Err(reason) => Velocity::Declined(reason),
                    }
                }
            };
            Ok(Settled { claim, velocity })
        })
    }

    /// Written after the reply; lost while `answers_lost` (the node died
    /// between its commit and this write), leaving the claim pending.
    fn answer<'a>(&'a self, key: &'a str, answer: &'a str, _: u64) -> FleetFuture<'a, ()> {
        self.answer(move |state, _| {
            if !state.answers_lost {
                state
                    .claims
                    .insert(key.to_owned(), Held::Answered(answer.to_owned()));
            }
            Ok(())
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> FleetFuture<'a, ()> {
        self.answer(move |state, _| {
            if let Some(held @ Held::Pending { .. }) = state.claims.get_mut(key) {
                *held = Held::Lapsed;
            }
            Ok(())
        })
    }

    /// As the reversing script does: keys no node holds or answered are
    /// marked reversed.
    fn reversing<'a>(&'a self, key: &'a str) -> FleetFuture<'a, bool> {
        self.answer(move |state, now_ms| {
            match state.claims.get(key) {
                Some(Held::Pending { until_ms }) if *until_ms > now_ms => return Ok(true),
                Some(Held::Answered(_) | Held::Reversed) => return Ok(false),
                Some(Held::Pending { .. } | Held::Lapsed) | None => {}
            }
            state.claims.insert(key.to_owned(), Held::Reversed);
            Ok(false)
        })
    }

    fn give_back(
        &self,
        token: Token,
        amount: Amount,
        whole: bool,
        original_at_ms: u64,
    ) -> FleetFuture<'_, ()> {
        self.answer(move |state, now_ms| {
            if state.generation == 0 {
                return Err(FleetError::NotBuilt);
            }
            if let Some(card) = state.cards.get_mut(&token) {
                // A shortfall is what Redis's script clamps at zero too.
                let _ = if whole {
                    card.give_back(amount, original_at_ms, now_ms)
                } else {
                    card.give_back_part(amount, original_at_ms, now_ms)
                };
            }
            Ok(())
        })
    }

    fn ping(&self) -> FleetFuture<'_, ()> {
        self.answer(|_, _| Ok(()))
    }

    /// Rebuilds a lost store from the journal at once, as the one node
    /// holding the rebuild lock does.
    fn keep_built<'a>(&'a self, store: &'a AnyStore, now_ms: u64) -> FleetFuture<'a, u64> {
        Box::pin(async move {
            let (lost_claims, generation) = {
                let state = self.state();
                if state.away {
                    return Err(FleetError::Timeout { timeout_ms: 50 });
                }
                (state.claims_since_ms.is_none(), state.generation)
            };
            if lost_claims {
                // A journal with no request in the window: nothing to miss.
                let window_start = now_ms.saturating_sub(DUPLICATE_WINDOW_MS);
                let quiet = !store.recorded_since(window_start).await?;
                self.state().claims_since_ms = Some(if quiet { window_start } else { now_ms });
            }
            if generation != 0 {
                return Ok(generation);
            }
            let mut cards: HashMap<Token, actors::CardState> = HashMap::new();
            let mut pages =
                storage::ReplayPages::new(store, now_ms.saturating_sub(86_400_000), 1_000);
            while let Some(page) = pages.next_page().await? {
                for row in page {
                    cards
                        .entry(row.token)
                        .or_insert_with(|| actors::CardState::new(row.at_ms))
                        .restore(row.amount, row.at_ms, now_ms);
                }
            }
            let mut state = self.state();
            state.cards = cards;
            state.generations += 1;
            state.generation = state.generations;
            state.exact = true;
            Ok(state.generation)
        })
    }
}
