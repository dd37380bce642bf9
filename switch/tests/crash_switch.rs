//! A crash, seen from outside: approvals answered over both ingresses, the
//! switch killed with SIGKILL right after the last answer arrives (no
//! shutdown, nothing written that was not durable already), then restarted
//! on the same data directory. Every approval acknowledged before the kill
//! is still there exactly once: answered identically to a retransmission or
//! an idempotent replay, counted once in its card's velocity, and journaled
//! once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use common::journal::{approvals, journaled};
use common::*;
use protocol::{Message, Mti, Spec};
use switch::clock::Stopwatch;

/// The test configuration's limit of approvals a card gets in a minute.
const PER_MINUTE: usize = 5;

/// A Luhn-valid card of its own for each `seed`.
fn card(seed: u64) -> String {
    with_check_digit(&format!("53{:013}", 3_000_000_000_000 + seed * 7919))
}

fn http_body(pan: &str) -> String {
    format!(
        r#"{{"pan":"{pan}","expiry":"3012","amount":100,"currency":"EUR","merchant_id":"ACME0000001","terminal_id":"WEB00001"}}"#
    )
}

/// An ISO 8583 answer as its wire bytes: "identical" means byte for byte.
fn wire(message: &Message) -> Vec<u8> {
    let mut frame = Vec::new();
    message
        .encode_frame(&Spec::iso87().unwrap(), &mut frame)
        .unwrap();
    frame
}

/// An HTTP approval made before the kill.
struct HttpApproval {
    idempotency_key: String,
    body: String,
    reply: HttpReply,
}

#[test]
fn approvals_acknowledged_before_a_sigkill_survive_it_exactly_once() {
    assert!(
        CONFIG.contains("per_minute = { count_max = 5,"),
        "PER_MINUTE is the configuration's"
    );
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);

    // The limited card: two ISO approvals and, below, one over HTTP.
    let limited = card(1);
    let mut acquirer = switch.iso();
    let mut iso_approved: Vec<(Message, Message)> = Vec::new();
    for _ in 0..2 {
        let request = authorization(&limited, 100);
        let reply = acquirer.exchange(&request);
        assert_eq!(code(&reply), "00", "{reply:?}");
        iso_approved.push((request, reply));
    }
    // Ten other cards, all in flight at once on one connection.
    let others: Vec<Message> = (0..10)
        .map(|n| authorization(&card(100 + n), 100))
        .collect();
    for request in &others {
        acquirer.send(request);
    }
    let mut replies: HashMap<String, Message> = HashMap::new();
    for _ in &others {
        let reply = acquirer.receive().unwrap();
        assert_eq!(code(&reply), "00", "{reply:?}");
        replies.insert(reply.get_str(11).unwrap().to_owned(), reply);
    }
    for request in others {
        let reply = replies.remove(request.get_str(11).unwrap()).unwrap();
        iso_approved.push((request, reply));
    }

    // Over HTTP with idempotency keys: the limited card, and two others.
    let mut http_approved = Vec::new();
    for (n, pan) in [limited.clone(), card(200), card(201)].iter().enumerate() {
        let idempotency_key = format!("crash-{n}");
        let body = http_body(pan);
        let reply = switch.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[("Idempotency-Key", &idempotency_key)],
            &body,
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.json()["status"], "approved", "{}", reply.body);
        http_approved.push(HttpApproval {
            idempotency_key,
            body,
            reply,
        });
    }
    // Killed the moment the last answer is in.
    switch.kill();

    let restarted = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let mut acquirer = restarted.iso();
    for (request, reply) in &iso_approved {
        let again = acquirer.exchange(request);
        assert_eq!(
            wire(&again),
            wire(reply),
            "the same answer to a retransmission after the kill: {again:?} for {reply:?}"
        );
    }
    for approval in &http_approved {
        let again = restarted.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[("Idempotency-Key", &approval.idempotency_key)],
            &approval.body,
        );
        assert_eq!(again.status, approval.reply.status, "{}", again.body);
        assert_eq!(again.body, approval.reply.body, "the stored answer");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        let id = approval.reply.json()["id"].as_str().unwrap().to_owned();
        let read = restarted.http(
            "GET",
            &format!("/v1/transactions/{id}"),
            Some(ACME_KEY),
            &[],
            "",
        );
        assert_eq!(read.status, 200, "{id} after the kill: {}", read.body);
        assert_eq!(read.json()["status"], "approved", "{}", read.body);
        assert_eq!(
            read.json()["auth_code"],
            approval.reply.json()["auth_code"],
            "{}",
            read.body
        );
    }

    // Velocity: the limited card's three approvals before the kill still
    // count, and the retransmission and replay above do not: exactly
    // PER_MINUTE approvals in all, then 65.
    let before_kill = 3;
    let mut after_restart = Vec::new();
    let codes: Vec<String> = (0..=PER_MINUTE - before_kill)
        .map(|_| {
            let request = authorization(&limited, 100);
            let reply = acquirer.exchange(&request);
            let code = code(&reply).to_owned();
            if code == "00" {
                after_restart.push(request);
            }
            code
        })
        .collect();
    let mut expected = vec!["00"; PER_MINUTE - before_kill];
    expected.push("65");
    assert_eq!(codes, expected, "{PER_MINUTE} approvals a minute in all");
    drop(acquirer);
    assert!(restarted.stop().success());

    // The journal: every approval once, none twice, none lost.
    let rows = approvals(&data_dir);
    let ids: HashSet<String> = rows.iter().map(|row| row.id.to_string()).collect();
    assert_eq!(ids.len(), rows.len(), "no approval journaled twice");
    assert_eq!(
        rows.len(),
        iso_approved.len() + http_approved.len() + after_restart.len(),
        "every approval journaled, nothing else"
    );
    let limited_token = http_approved[0].reply.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        rows.iter()
            .filter(|row| row.token.to_string() == limited_token)
            .count(),
        PER_MINUTE,
        "the limited card's approvals"
    );
    for approval in &http_approved {
        let id = approval.reply.json()["id"].as_str().unwrap().to_owned();
        assert!(ids.contains(&id), "{id} journaled");
    }
    for (request, reply) in &iso_approved {
        let record = journaled(&data_dir, request);
        assert!(ids.contains(&record.id.to_string()), "{request:?}");
        assert_eq!(
            record.auth_code.map(|code| code.as_bytes().to_vec()),
            reply.get(38).map(<[u8]>::to_vec),
            "{request:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Killed again and again under mixed load.
//
// Acquirers (one ISO 8583 connection each, pipelining 0100s, 0200s,
// retransmissions and 0101/0201 repeats, full and partial 0400s) and web
// clients (POST /v1/authorizations with Idempotency-Keys, and retries of
// them) keep sending while the switch is killed with SIGKILL at points a
// printed seed chooses, and restarted on the same journal each time. Every
// answer lands in an ack log. When the load stops, every request still
// without a final answer is sent again until it has one (as an acquirer
// and a web client would), the switch is killed once more, and the journal
// is read as it is on disk: it must hold every acknowledged approval and
// reversal exactly as answered, and nothing the ack log cannot account for.
// The switch is then restarted one last time, and each card is probed at
// the edge of its limits: approved or declined 65/61 exactly as the
// journal's approved-minus-reversed totals say.

/// Kills while the load runs; one more follows once it has stopped.
const KILLS: usize = 5;
/// Cards the load shares, so their limits are reached.
const CARDS: usize = 24;
/// The per-day limits of the crash configuration (the only card limits).
const COUNT_MAX: u64 = 10;
const AMOUNT_MAX: u64 = 4000;
const ISO_WORKERS: usize = 4;
const HTTP_WORKERS: usize = 2;

/// `base` (the test CONFIG, on either journal) with tight per-day limits
/// only: the whole run falls in one window, so the journal alone says what
/// each card has left, however long the run takes.
fn crash_config(base: &str) -> String {
    let limits = "[card_limits]\n\
                  per_minute = { count_max = 5, amount_max = 200000 }\n\
                  per_day = { count_max = 100, amount_max = 1000000 }\n";
    assert!(base.contains(limits), "the test CONFIG's card limits");
    base.replace(
        limits,
        &format!(
            "[card_limits]\nper_day = {{ count_max = {COUNT_MAX}, amount_max = {AMOUNT_MAX} }}\n"
        ),
    )
}

/// The run's random choices, repeatable from its seed.
struct Dice(switch::engine::SeededRandom);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(switch::engine::SeededRandom::new(seed))
    }

    /// A number from 0 to `n - 1`.
    fn below(&self, n: u64) -> u64 {
        use switch::engine::Random;
        let mut bits = [0u8; 8];
        self.0.fill(&mut bits);
        u64::from_le_bytes(bits) % n.max(1)
    }

    fn chance(&self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index into a list of `len` items (`len` > 0).
    fn index(&self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap())).unwrap()
    }

    /// An amount from `low` to `high`.
    fn amount(&self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

/// The seed: SWITCH_CRASH_SEED to run a failure again, else the clock.
fn crash_seed() -> u64 {
    let seed = std::env::var("SWITCH_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            u64::try_from(nanos % u128::from(u64::MAX)).unwrap()
        });
    let _ = writeln!(
        std::io::stderr(),
        "crash test seed {seed} (SWITCH_CRASH_SEED={seed} runs these choices again)"
    );
    seed
}

/// Names this run's cards and terminals apart from every other run's, as
/// PostgreSQL keeps rows across the tests of one `scripts/test-env` run.
struct Run {
    id: u64,
    pans: Vec<String>,
}

impl Run {
    fn new() -> Run {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let id =
            (u64::try_from(micros % 1_000_000).unwrap() + u64::from(std::process::id())) % 100_000;
        let pans = (0..CARDS)
            .map(|n| with_check_digit(&format!("52{id:06}{n:07}")))
            .collect();
        Run { id, pans }
    }

    /// The terminal of ISO acquirer `n`; `W` for web clients, `V` for the
    /// probes.
    fn terminal(&self, prefix: char, n: usize) -> String {
        format!("{prefix}{:05}{n:02}", self.id)
    }

    fn tokens(&self) -> HashMap<Vec<u8>, usize> {
        let counting = |first: u8| std::array::from_fn(|i| first + u8::try_from(i).unwrap());
        let vault = storage::Vault::new(
            storage::VaultKeys {
                tokenization_key: counting(0x00),
                encryption_keys: vec![(1, counting(0x20))],
                active_key_id: 1,
            },
            16,
        )
        .unwrap();
        self.pans
            .iter()
            .enumerate()
            .map(|(n, pan)| {
                let pan = protocol::Pan::parse(pan.as_bytes()).unwrap();
                (vault.tokenize(&pan).as_bytes().to_vec(), n)
            })
            .collect()
    }
}

/// Where the switch is now: each restart listens on new ports.
struct Target {
    epoch: u64,
    iso: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

/// What the load and the killer share.
struct Live {
    target: Mutex<Target>,
    moved: Condvar,
    /// Final answers received since the last restart: the killer's clock.
    answers: Mutex<u64>,
    answered: Condvar,
    loading: AtomicBool,
}

impl Live {
    fn new(switch: &TestSwitch) -> Live {
        Live {
            target: Mutex::new(Target {
                epoch: 0,
                iso: switch.iso,
                http: switch.http,
            }),
            moved: Condvar::new(),
            answers: Mutex::new(0),
            answered: Condvar::new(),
            loading: AtomicBool::new(true),
        }
    }

    fn publish(&self, switch: &TestSwitch) {
        let mut target = self.target.lock().unwrap();
        target.epoch += 1;
        target.iso = switch.iso;
        target.http = switch.http;
        *self.answers.lock().unwrap() = 0;
        self.moved.notify_all();
    }

    fn now(&self) -> (u64, std::net::SocketAddr, std::net::SocketAddr) {
        let target = self.target.lock().unwrap();
        (target.epoch, target.iso, target.http)
    }

    /// After a failed exchange: waits for a restart (or a moment, when the
    /// failure was not a kill) before the caller tries again.
    fn wait_after_failure(&self, epoch: u64) {
        let target = self.target.lock().unwrap();
        let _ = self
            .moved
            .wait_timeout_while(target, Duration::from_millis(200), |target| {
                target.epoch == epoch
            })
            .unwrap();
    }

    fn count_answer(&self) {
        *self.answers.lock().unwrap() += 1;
        self.answered.notify_all();
    }

    /// Waits until `n` answers have come back since the last restart.
    fn wait_for_answers(&self, n: u64) {
        let answers = self.answers.lock().unwrap();
        let (answers, timeout) = self
            .answered
            .wait_timeout_while(answers, Duration::from_secs(30), |answers| *answers < n)
            .unwrap();
        assert!(!timeout.timed_out(), "only {answers} answers in 30 s");
    }

    fn loading(&self) -> bool {
        self.loading.load(Ordering::SeqCst)
    }
}

/// An ISO 8583 request's keys: terminal and STAN (DE7 is the same on all).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct IsoKey {
    terminal: String,
    stan: String,
}

impl IsoKey {
    fn of(message: &Message) -> IsoKey {
        IsoKey {
            terminal: message.get_str(41).unwrap().to_owned(),
            stan: message.get_str(11).unwrap().to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
enum IsoWhat {
    /// A 0100 or 0200 for `amount`.
    Card { amount: u64 },
    /// A 0400 of `original`, always sent after it on the same connection.
    Reversal { original: IsoKey },
}

/// DE39 and DE38 of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IsoAnswer {
    code: String,
    auth_code: Option<String>,
}

/// 91 and 96 ask the acquirer to try again; every other code is final.
fn asks_for_retry(code: &str) -> bool {
    matches!(code, "91" | "96")
}

#[derive(Debug)]
struct IsoEntry {
    /// As first sent (0100, 0200 or 0400).
    request: Message,
    what: IsoWhat,
    answers: Vec<IsoAnswer>,
    /// Reversed before a final answer came (as an acquirer does on a
    /// timeout, or a POS cancelling at once), so never sent again.
    abandoned: bool,
    /// Times it went unanswered: the connection cut by a kill.
    cut: u32,
}

impl IsoEntry {
    fn finals(&self) -> impl Iterator<Item = &IsoAnswer> {
        self.answers.iter().filter(|a| !asks_for_retry(&a.code))
    }
}

/// One acquirer: its own terminal and connection, reconnecting after a kill.
struct Acquirer<'a> {
    live: &'a Live,
    dice: Dice,
    run: &'a Run,
    terminal: String,
    log: HashMap<IsoKey, IsoEntry>,
    /// Sent, and no final answer yet.
    pending: Vec<IsoKey>,
    /// With a final answer: candidates for retransmission.
    answered: Vec<IsoKey>,
    /// Acknowledged approvals this acquirer has not reversed yet.
    reversible: Vec<IsoKey>,
    connection: Option<(u64, IsoClient)>,
}

impl Acquirer<'_> {
    fn run(mut self) -> HashMap<IsoKey, IsoEntry> {
        while self.live.loading() {
            let batch = self.next_batch();
            self.exchange(&batch);
        }
        // The load has stopped: everything unanswered is sent again until
        // it has a final answer.
        let draining = Stopwatch::start();
        while !self.pending.is_empty() {
            assert!(
                draining.elapsed() < Duration::from_secs(30),
                "{:?} still unanswered",
                self.pending
            );
            let batch: Vec<Message> = self
                .pending
                .iter()
                .take(8)
                .map(|key| self.log[key].request.clone())
                .collect();
            self.exchange(&batch);
        }
        self.log
    }

    fn card_request(&mut self, financial: bool) -> Message {
        let card = self.dice.index(CARDS);
        let amount = self.dice.amount(50, 800);
        let mut request = authorization(&self.run.pans[card], amount);
        request.set(41, self.terminal.as_str());
        if financial {
            request.set_mti(Mti::FINANCIAL_REQUEST);
        }
        self.log.insert(
            IsoKey::of(&request),
            IsoEntry {
                request: request.clone(),
                what: IsoWhat::Card { amount },
                answers: Vec::new(),
                abandoned: false,
                cut: 0,
            },
        );
        request
    }

    /// A reversal of `original`: all of it, a DE4 below it, or DE95 saying
    /// what stands.
    fn reversal(&mut self, original: &IsoKey, whole: bool) -> Message {
        let entry = &self.log[original];
        let IsoWhat::Card { amount, .. } = entry.what else {
            unreachable!("only card requests are reversed")
        };
        let mut reversal = reversal_of(&entry.request, Mti::REVERSAL_REQUEST);
        match if whole { 0 } else { self.dice.below(3) } {
            0 => {}
            1 => {
                reversal.set(4, format!("{:012}", self.dice.amount(1, amount - 1)));
            }
            _ => {
                reversal.set(95, replacement_amounts(self.dice.amount(1, amount - 1)));
            }
        }
        self.log.insert(
            IsoKey::of(&reversal),
            IsoEntry {
                request: reversal.clone(),
                what: IsoWhat::Reversal {
                    original: original.clone(),
                },
                answers: Vec::new(),
                abandoned: false,
                cut: 0,
            },
        );
        reversal
    }

    /// An earlier request sent again, as it was or as a repeat (0101, 0201,
    /// 0401).
    fn again(&self, key: &IsoKey) -> Message {
        let mut request = self.log[key].request.clone();
        if self.dice.chance(50) {
            let repeat = match request.mti() {
                Mti::AUTHORIZATION_REQUEST => Mti::AUTHORIZATION_REQUEST_REPEAT,
                Mti::FINANCIAL_REQUEST => Mti::FINANCIAL_REQUEST_REPEAT,
                _ => Mti::REVERSAL_REQUEST_REPEAT,
            };
            request.set_mti(repeat);
        }
        request
    }

    /// One to three requests to pipeline, with distinct STANs.
    fn next_batch(&mut self) -> Vec<Message> {
        let mut batch: Vec<Message> = Vec::new();
        for _ in 0..=self.dice.below(3) {
            let roll = self.dice.below(100);
            let request = if roll < 15 && !self.pending.is_empty() {
                let at = self.dice.index(self.pending.len());
                let key = self.pending[at].clone();
                let card = matches!(self.log[&key].what, IsoWhat::Card { .. });
                // Sent in an earlier batch, unanswered: cut by a kill, or
                // answered 91/96.
                let earlier = !batch.iter().any(|sent| IsoKey::of(sent) == key);
                if card && earlier && self.dice.chance(30) {
                    // A timeout reversal: the acquirer gives up on it.
                    self.pending.swap_remove(at);
                    self.log.get_mut(&key).unwrap().abandoned = true;
                    let reversal = self.reversal(&key, true);
                    self.pending.push(IsoKey::of(&reversal));
                    reversal
                } else {
                    self.again(&key)
                }
            } else if roll < 50 {
                let request = self.card_request(false);
                self.pending.push(IsoKey::of(&request));
                request
            } else if roll < 65 {
                let request = self.card_request(true);
                self.pending.push(IsoKey::of(&request));
                request
            } else if roll < 75 && !self.answered.is_empty() {
                let key = self.answered[self.dice.index(self.answered.len())].clone();
                self.again(&key)
            } else if roll < 92 && !self.reversible.is_empty() {
                let key = self
                    .reversible
                    .swap_remove(self.dice.index(self.reversible.len()));
                let reversal = self.reversal(&key, false);
                self.pending.push(IsoKey::of(&reversal));
                reversal
            } else {
                // An original and its reversal pipelined together (a POS
                // cancelling at once): the reversal may reach the engine
                // while the original is in flight. The original is never
                // sent again once its reversal is out.
                let original = self.card_request(false);
                let key = IsoKey::of(&original);
                self.log.get_mut(&key).unwrap().abandoned = true;
                batch.push(original);
                let reversal = self.reversal(&key, false);
                self.pending.push(IsoKey::of(&reversal));
                reversal
            };
            if !batch.iter().any(|sent| sent.get(11) == request.get(11)) {
                batch.push(request);
            }
        }
        batch
    }

    /// Sends `batch` on the connection and takes its answers; on a broken
    /// connection, reconnects for the next batch (what went unanswered
    /// stays pending).
    fn exchange(&mut self, batch: &[Message]) {
        let (epoch, client) = match self.connection.take() {
            Some(connection) => connection,
            None => {
                let (epoch, iso, _) = self.live.now();
                match IsoClient::try_connect(iso) {
                    Ok(client) => (epoch, client),
                    Err(_) => {
                        self.live.wait_after_failure(epoch);
                        return;
                    }
                }
            }
        };
        let mut client = client;
        let sent = batch.iter().all(|request| client.try_send(request).is_ok());
        let mut unanswered: HashSet<IsoKey> = batch.iter().map(IsoKey::of).collect();
        if sent {
            for _ in batch {
                let Some(answer) = client.receive() else {
                    break;
                };
                unanswered.remove(&IsoKey::of(&answer));
                self.take(answer);
            }
        }
        if unanswered.is_empty() {
            self.connection = Some((epoch, client));
        } else {
            for key in unanswered {
                self.log.get_mut(&key).unwrap().cut += 1;
            }
            self.live.wait_after_failure(epoch);
        }
    }

    fn take(&mut self, answer: Message) {
        let key = IsoKey::of(&answer);
        let code = answer.get_str(39).unwrap().to_owned();
        let entry = self
            .log
            .get_mut(&key)
            .unwrap_or_else(|| panic!("an answer to nothing sent: {answer:?}"));
        let first_final = !asks_for_retry(&code) && entry.finals().next().is_none();
        entry.answers.push(IsoAnswer {
            code: code.clone(),
            auth_code: answer.get_str(38).map(str::to_owned),
        });
        if first_final {
            self.live.count_answer();
            self.pending.retain(|pending| *pending != key);
            self.answered.push(key.clone());
            let entry = &self.log[&key];
            if code == "00" && matches!(entry.what, IsoWhat::Card { .. }) && !entry.abandoned {
                self.reversible.push(key);
            }
        }
    }
}

/// One web client's request under an Idempotency-Key.
#[derive(Debug)]
struct HttpEntry {
    body: String,
    /// Status and body of every reply.
    answers: Vec<(u16, String)>,
    /// Times it went unanswered: the connection cut by a kill, or refused
    /// while the switch restarted.
    cut: u32,
}

/// 503 (try again) and 409 (still being decided) are not final.
fn final_status(status: u16) -> bool {
    !matches!(status, 503 | 409)
}

struct WebClient<'a> {
    live: &'a Live,
    dice: Dice,
    run: &'a Run,
    terminal: String,
    prefix: String,
    log: HashMap<String, HttpEntry>,
    pending: Vec<String>,
    answered: Vec<String>,
}

impl WebClient<'_> {
    fn run(mut self) -> HashMap<String, HttpEntry> {
        while self.live.loading() {
            let roll = self.dice.below(100);
            let key = if roll < 20 && !self.pending.is_empty() {
                self.pending[self.dice.index(self.pending.len())].clone()
            } else if roll < 35 && !self.answered.is_empty() {
                self.answered[self.dice.index(self.answered.len())].clone()
            } else {
                let key = format!("{}-{}", self.prefix, self.log.len());
                let pan = &self.run.pans[self.dice.index(CARDS)];
                let body = format!(
                    r#"{{"pan":"{pan}","expiry":"3012","amount":{},"currency":"USD","merchant_id":"ACME0000001","terminal_id":"{}"}}"#,
                    self.dice.amount(50, 800),
                    self.terminal
                );
                self.log.insert(
                    key.clone(),
                    HttpEntry {
                        body,
                        answers: Vec::new(),
                        cut: 0,
                    },
                );
                self.pending.push(key.clone());
                key
            };
            self.send(&key);
        }
        let draining = Stopwatch::start();
        while let Some(key) = self.pending.first().cloned() {
            assert!(
                draining.elapsed() < Duration::from_secs(30),
                "{key} still unanswered"
            );
            self.send(&key);
        }
        self.log
    }

    fn send(&mut self, key: &str) {
        let (epoch, _, http) = self.live.now();
        let body = self.log[key].body.clone();
        let reply = try_http_request(
            http,
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[("Idempotency-Key", key)],
            &body,
        );
        let Ok(reply) = reply else {
            self.log.get_mut(key).unwrap().cut += 1;
            self.live.wait_after_failure(epoch);
            return;
        };
        let entry = self.log.get_mut(key).unwrap();
        let first_final =
            final_status(reply.status) && !entry.answers.iter().any(|(s, _)| final_status(*s));
        entry.answers.push((reply.status, reply.body));
        if first_final {
            self.live.count_answer();
            self.pending.retain(|pending| pending != key);
            self.answered.push(key.to_owned());
        }
    }
}

/// One row of `transactions`, as stored.
#[derive(Debug, Clone)]
struct Row {
    id: Vec<u8>,
    kind: String,
    terminal_id: String,
    stan: Option<String>,
    token: Option<Vec<u8>>,
    amount: u64,
    response_code: String,
    auth_code: Option<String>,
    original_id: Option<Vec<u8>>,
}

type RawRow = (
    Vec<u8>,
    String,
    String,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    String,
    Option<String>,
    Option<Vec<u8>>,
);

/// A row of `reversals`: the original's id and the reversal's.
type RawReversal = (Vec<u8>, Vec<u8>);

const ROWS: &str = "SELECT id, kind, terminal_id, stan, token, amount_minor, response_code, \
                    auth_code, original_id FROM transactions";
const REVERSALS: &str = "SELECT original_id, reversal_id FROM reversals";

/// The journal as it is on disk (or in the database).
struct Journaled {
    rows: Vec<Row>,
    /// Original id -> the id of the reversal that gave it back.
    reversed: HashMap<Vec<u8>, Vec<u8>>,
}

/// Where the journal is.
#[derive(Clone)]
enum JournalAt {
    Sqlite(std::path::PathBuf),
    /// The segment log's directory.
    Log(std::path::PathBuf),
    Postgres(String),
}

impl JournalAt {
    fn read(&self) -> Journaled {
        use sqlx::Connection;
        if let JournalAt::Log(dir) = self {
            return read_log(dir);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (raw, reversed): (Vec<RawRow>, Vec<RawReversal>) = runtime.block_on(async {
            match self {
                JournalAt::Sqlite(file) => {
                    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file);
                    let mut conn = sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .unwrap();
                    let rows = sqlx::query_as(ROWS).fetch_all(&mut conn).await.unwrap();
                    let reversed = sqlx::query_as(REVERSALS)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                    (rows, reversed)
                }
                JournalAt::Log(_) => unreachable!("read above"),
                JournalAt::Postgres(url) => {
                    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                    let rows = sqlx::query_as(ROWS).fetch_all(&mut conn).await.unwrap();
                    let reversed = sqlx::query_as(REVERSALS)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                    (rows, reversed)
                }
            }
        });
        Journaled {
            rows: raw
                .into_iter()
                .map(|r| Row {
                    id: r.0,
                    kind: r.1,
                    terminal_id: r.2,
                    stan: r.3,
                    token: r.4,
                    amount: u64::try_from(r.5).unwrap(),
                    response_code: r.6,
                    auth_code: r.7,
                    original_id: r.8,
                })
                .collect(),
            reversed: reversed.into_iter().collect(),
        }
    }
}

/// The segment log as the switch finds it at start: every segment read
/// back (a torn tail cut off), every committed record.
fn read_log(dir: &std::path::Path) -> Journaled {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let committed = runtime.block_on(async {
        let (journal, store) = storage::LogStore::open(dir, storage::LogConfig::default())
            .await
            .unwrap();
        journal.close().await;
        store.committed().unwrap()
    });
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    let mut reversed = HashMap::new();
    let rows = committed
        .into_iter()
        .map(|stored| {
            let r = stored.record;
            if let Some(by) = stored.reversed_by {
                reversed.insert(r.id.as_bytes().to_vec(), by.as_bytes().to_vec());
            }
            Row {
                id: r.id.as_bytes().to_vec(),
                kind: r.kind.as_str().to_owned(),
                terminal_id: text(r.terminal_id.as_bytes()),
                stan: r.stan.map(|stan| text(stan.as_bytes())),
                token: r.token.map(|token| token.as_bytes().to_vec()),
                amount: r.amount.minor(),
                response_code: r.response_code.as_str().to_owned(),
                auth_code: r.auth_code.map(|code| text(code.as_bytes())),
                original_id: r.original_id.map(|id| id.as_bytes().to_vec()),
            }
        })
        .collect();
    Journaled { rows, reversed }
}

fn is_card_request(row: &Row) -> bool {
    matches!(row.kind.as_str(), "authorization" | "purchase")
}

/// Everything the two logs and the journal must agree on. Returns each
/// card's velocity as the journal implies it: approvals counted, minus
/// those reversed whole, and the amount that stands of them.
fn check_against_journal(
    run: &Run,
    iso: &HashMap<IsoKey, IsoEntry>,
    http: &HashMap<String, HttpEntry>,
    journal: &Journaled,
) -> Vec<(u64, u64)> {
    let by_id: HashMap<&[u8], &Row> = journal.rows.iter().map(|r| (r.id.as_slice(), r)).collect();
    let mut by_keys: HashMap<IsoKey, Vec<&Row>> = HashMap::new();
    for row in &journal.rows {
        if let Some(stan) = &row.stan {
            by_keys
                .entry(IsoKey {
                    terminal: row.terminal_id.clone(),
                    stan: stan.clone(),
                })
                .or_default()
                .push(row);
        }
    }
    let rows_of = |key: &IsoKey, card: bool| -> Vec<&Row> {
        by_keys
            .get(key)
            .map(|rows| {
                rows.iter()
                    .copied()
                    .filter(|row| is_card_request(row) == card)
                    .collect()
            })
            .unwrap_or_default()
    };

    let (mut approvals, mut reversals) = (0, 0);
    for (key, entry) in iso {
        let finals: Vec<&IsoAnswer> = entry.finals().collect();
        assert!(
            finals.windows(2).all(|pair| pair[0] == pair[1]),
            "{key:?}: differing answers {:?}",
            entry.answers
        );
        let Some(answer) = finals.first() else {
            assert!(entry.abandoned, "{key:?} never got a final answer");
            continue;
        };
        match &entry.what {
            IsoWhat::Card { .. } => {
                let rows = rows_of(key, true);
                assert!(rows.len() <= 1, "{key:?} journaled {} times", rows.len());
                if answer.code == "00" {
                    approvals += 1;
                    let row = rows.first().unwrap_or_else(|| {
                        panic!("{key:?}: acknowledged approval not in the journal")
                    });
                    assert_eq!(row.response_code, "00", "{key:?}");
                    assert_eq!(row.auth_code, answer.auth_code, "{key:?}: the auth code");
                } else if let Some(row) = rows.first() {
                    assert_eq!(row.response_code, answer.code, "{key:?}");
                }
            }
            IsoWhat::Reversal { original } => {
                assert_eq!(answer.code, "00", "{key:?}: a reversal refused");
                reversals += 1;
                let rows = rows_of(key, false);
                assert!(
                    !rows.is_empty(),
                    "{key:?}: acknowledged reversal not in the journal"
                );
                // Every original was sent before its reversal, on the same
                // connection: acknowledged, cut by a kill, or pipelined
                // just ahead of it. Journaled, it is what the reversal
                // reversed; approved, it gave its velocity back.
                if let Some(reversed) = rows_of(original, true).first() {
                    for row in &rows {
                        assert_eq!(
                            row.original_id.as_ref(),
                            Some(&reversed.id),
                            "{key:?} reversed its original {original:?}"
                        );
                    }
                    if reversed.response_code == "00" {
                        assert!(
                            journal.reversed.contains_key(&reversed.id),
                            "{original:?} reversed by {key:?}"
                        );
                    }
                } else {
                    assert!(
                        iso[original].finals().all(|a| a.code != "00"),
                        "{original:?} acknowledged approved, not journaled"
                    );
                }
            }
        }
    }
    // Nothing approved on these terminals that the acquirers were not told,
    // but for requests they gave up on and reversed.
    for row in &journal.rows {
        let Some(stan) = &row.stan else { continue };
        let key = IsoKey {
            terminal: row.terminal_id.clone(),
            stan: stan.clone(),
        };
        if row.response_code != "00" || !is_card_request(row) {
            continue;
        }
        if let Some(entry) = iso.get(&key) {
            assert!(
                entry.abandoned || entry.finals().any(|a| a.code == "00"),
                "{key:?} approved in the journal, answered {:?}",
                entry.answers
            );
        }
    }

    // Web clients: one final answer per key, journaled once.
    let mut answered_ids = HashSet::new();
    for (key, entry) in http {
        let finals: Vec<&(u16, String)> = entry
            .answers
            .iter()
            .filter(|(status, _)| final_status(*status))
            .collect();
        assert!(
            finals.windows(2).all(|pair| pair[0] == pair[1]),
            "{key}: differing answers {:?}",
            entry.answers
        );
        let (status, body) = finals
            .first()
            .unwrap_or_else(|| panic!("{key} never got a final answer"));
        assert_eq!(*status, 201, "{key}: {body}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let id = protocol::domain::TransactionId::parse(json["id"].as_str().unwrap()).unwrap();
        let row = by_id
            .get(id.as_bytes().as_slice())
            .unwrap_or_else(|| panic!("{key}: {body} not in the journal"));
        assert_eq!(row.response_code, json["response_code"], "{key}");
        assert_eq!(
            row.auth_code.as_deref(),
            json["auth_code"].as_str(),
            "{key}"
        );
        if row.response_code == "00" {
            approvals += 1;
        }
        answered_ids.insert(id.as_bytes().to_vec());
    }
    let web: Vec<String> = (0..HTTP_WORKERS).map(|n| run.terminal('W', n)).collect();
    for row in journal.rows.iter().filter(|r| web.contains(&r.terminal_id)) {
        assert!(
            answered_ids.contains(&row.id),
            "a web request journaled that no key's answer names: {row:?}"
        );
    }
    let iso_cut = iso.values().filter(|entry| entry.cut > 0).count();
    let abandoned = iso.values().filter(|entry| entry.abandoned).count();
    let http_cut = http.values().filter(|entry| entry.cut > 0).count();
    let retried = http
        .values()
        .filter(|entry| entry.answers.len() > 1)
        .count();
    let _ = writeln!(
        std::io::stderr(),
        "{} ISO requests, {iso_cut} of them cut by a kill and {abandoned} reversed before \
         a final answer; {} idempotency keys, {http_cut} cut by a kill and {retried} answered more \
         than once; {approvals} approvals and {reversals} reversals acknowledged; {} journal rows",
        iso.len(),
        http.len(),
        journal.rows.len()
    );
    assert!(iso_cut > 0, "no ISO request was in flight at a kill");
    assert!(approvals > 50, "the load approved only {approvals}");
    assert!(reversals > 10, "the load reversed only {reversals}");

    // Velocity: each approval of these cards counts once, less what its
    // first reversal took off; reversed whole, it counts nothing.
    let tokens = run.tokens();
    let mut velocity = vec![(0u64, 0u64); CARDS];
    for row in journal.rows.iter().filter(|r| is_card_request(r)) {
        let Some(card) = row.token.as_ref().and_then(|t| tokens.get(t)) else {
            continue;
        };
        if row.response_code != "00" {
            continue;
        }
        let reversed = journal.reversed.get(&row.id).map_or(0, |reversal| {
            by_id[reversal.as_slice()].amount.min(row.amount)
        });
        if row.amount > reversed {
            velocity[*card].0 += 1;
            velocity[*card].1 += row.amount - reversed;
        }
    }
    velocity
}

/// Probes each card at the edge of what the journal says it has left:
/// one over the amount left is 61 (or 65 when its count is full), exactly
/// what is left is approved, and then one more is declined.
fn probe_velocity(switch: &TestSwitch, run: &Run, velocity: &[(u64, u64)]) {
    let mut acquirer = switch.iso();
    let terminal = run.terminal('V', 0);
    let mut ask = |card: usize, amount: u64| -> String {
        let mut request = authorization(&run.pans[card], amount);
        request.set(41, terminal.as_str());
        code(&acquirer.exchange(&request)).to_owned()
    };
    for (card, &(count, amount)) in velocity.iter().enumerate() {
        assert!(
            count <= COUNT_MAX && amount <= AMOUNT_MAX,
            "card {card}: the journal holds more than its limits ({count}, {amount})"
        );
        let what = format!("card {card}: {count} approvals, {amount} standing in the journal");
        if count == COUNT_MAX {
            assert_eq!(ask(card, 1), "65", "{what}");
            continue;
        }
        assert_eq!(ask(card, AMOUNT_MAX - amount + 1), "61", "{what}");
        if amount < AMOUNT_MAX {
            assert_eq!(ask(card, AMOUNT_MAX - amount), "00", "{what}");
            let full = if count + 1 == COUNT_MAX { "65" } else { "61" };
            assert_eq!(ask(card, 1), full, "{what}, and one more approved");
        }
    }
}

/// The whole run with `config`: on the embedded journal (the segment log,
/// or SQLite when `config` chooses it), or on PostgreSQL at
/// `database_url`.
fn killed_under_mixed_load(config: &str, database_url: Option<&str>) {
    let seed = crash_seed();
    let dice = Dice::new(seed);
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let journal = match database_url {
        Some(url) => JournalAt::Postgres(url.to_owned()),
        None if config.contains("backend = \"sqlite\"") => {
            JournalAt::Sqlite(data_dir.join("journal.sqlite"))
        }
        None => JournalAt::Log(data_dir.clone()),
    };
    let env: Vec<(&str, &str)> = database_url
        .map(|url| vec![("DATABASE_URL", url)])
        .unwrap_or_default();
    let start = || TestSwitch::start_in_with_env(dir.path(), &data_dir, config, &env);

    let mut switch = start();
    let live = Live::new(&switch);
    let (iso, http, switch) = std::thread::scope(|scope| {
        let acquirers: Vec<_> = (0..ISO_WORKERS)
            .map(|n| {
                let acquirer = Acquirer {
                    live: &live,
                    dice: Dice::new(seed ^ (0x100 + u64::try_from(n).unwrap())),
                    run: &run,
                    terminal: run.terminal('Q', n),
                    log: HashMap::new(),
                    pending: Vec::new(),
                    answered: Vec::new(),
                    reversible: Vec::new(),
                    connection: None,
                };
                scope.spawn(move || acquirer.run())
            })
            .collect();
        let web_clients: Vec<_> = (0..HTTP_WORKERS)
            .map(|n| {
                let client = WebClient {
                    live: &live,
                    dice: Dice::new(seed ^ (0x200 + u64::try_from(n).unwrap())),
                    run: &run,
                    terminal: run.terminal('W', n),
                    prefix: format!("crash-{}-{seed}-{n}", run.id),
                    log: HashMap::new(),
                    pending: Vec::new(),
                    answered: Vec::new(),
                };
                scope.spawn(move || client.run())
            })
            .collect();
        for _ in 0..KILLS {
            // Killed after a number of answers the seed chooses: the
            // requests in flight then are the ones the kill cuts.
            live.wait_for_answers(dice.amount(200, 800));
            switch.kill();
            switch = start();
            live.publish(&switch);
        }
        live.wait_for_answers(dice.amount(100, 400));
        live.loading.store(false, Ordering::SeqCst);
        let mut iso = HashMap::new();
        for acquirer in acquirers {
            iso.extend(acquirer.join().unwrap());
        }
        let mut http = HashMap::new();
        for client in web_clients {
            http.extend(client.join().unwrap());
        }
        (iso, http, switch)
    });
    // Once more, with nothing in flight, to read the journal as it is.
    switch.kill();
    let velocity = check_against_journal(&run, &iso, &http, &journal.read());
    let restarted = start();
    probe_velocity(&restarted, &run, &velocity);
    assert!(restarted.stop().success());
}

#[test]
fn nothing_acknowledged_is_lost_or_counted_twice_across_sigkills_under_load() {
    let sqlite = CONFIG.replace("[iso]", "[storage]\nbackend = \"sqlite\"\n\n[iso]");
    killed_under_mixed_load(&crash_config(&sqlite), None);
}

#[test]
fn nothing_acknowledged_is_lost_or_counted_twice_across_sigkills_under_load_on_the_segment_log() {
    let log = CONFIG.replace("[iso]", "[storage]\nbackend = \"log\"\n\n[iso]");
    killed_under_mixed_load(&crash_config(&log), None);
}

/// Segments of 16 KiB: the kills land among segment closes (an index file
/// and a snapshot written, a new segment begun), and every restart starts
/// from a snapshot and reads old records back from closed segments.
#[test]
fn nothing_acknowledged_is_lost_or_counted_twice_across_sigkills_under_load_on_small_log_segments()
{
    let log = CONFIG.replace(
        "[iso]",
        "[storage]\nbackend = \"log\"\nsegment_bytes = 16384\n\n[iso]",
    );
    killed_under_mixed_load(&crash_config(&log), None);
}

#[test]
fn nothing_acknowledged_is_lost_or_counted_twice_across_sigkills_under_load_on_postgres() {
    let Some(admin_url) = database_url() else {
        return;
    };
    // A database of its own: thousands of rows of STANs, amounts and times
    // in the shared one would hand the leak scan's 6-digit needles chance
    // matches.
    let name = format!("switch_crash_{}", std::process::id());
    let (server, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{server}/{name}");
    let admin = |statement: String| {
        use sqlx::{Connection, Executor};
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                conn.execute(sqlx::raw_sql(&statement)).await.unwrap();
            });
    };
    admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    admin(format!("CREATE DATABASE {name}"));
    killed_under_mixed_load(&crash_config(&postgres_config()), Some(&url));
    admin(format!("DROP DATABASE {name} WITH (FORCE)"));
}

/// The segment log is the default journal now: a data directory written by
/// the SQLite journal (no `[storage]` section, before) is refused with what
/// to set, not started afresh as an empty log beside every record it holds.
#[test]
fn a_sqlite_journal_left_by_the_old_default_is_not_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let sqlite = CONFIG.replace("[iso]", "[storage]\nbackend = \"sqlite\"\n\n[iso]");
    let switch = TestSwitch::start_in_with_env(dir.path(), &data_dir, &sqlite, &[]);
    assert!(switch.stop().success());
    assert!(data_dir.join("journal.sqlite").exists());

    let config_file = dir.path().join("default.toml");
    std::fs::write(&config_file, CONFIG).unwrap();
    let output = common::serve_command(&config_file, &data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("backend = \"sqlite\"") && stderr.contains("journal.sqlite"),
        "{stderr}"
    );
    assert!(!data_dir.join("journal-00000001.seg").exists());
}
