//! A fleet: two switch processes sharing a real PostgreSQL 15 (the journal)
//! and a real Redis (card velocity), both started by `scripts/test-env`
//! (DATABASE_URL, REDIS_URL). Without them these tests fail under CI or
//! SWITCH_REQUIRE_DATABASES, and otherwise print one line and return.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use protocol::{Message, Mti};
use switch::clock::Stopwatch;

/// The test CONFIG (5 approvals per card per minute) on PostgreSQL, in a fleet.
fn fleet_config(on_redis_down: &str) -> String {
    CONFIG.replace(
        "[iso]",
        &format!(
            "[storage]\nbackend = \"postgres\"\nwriter_connections = 2\n\n\
             [fleet]\non_redis_down = \"{on_redis_down}\"\ntimeout_ms = 200\n\n[iso]"
        ),
    )
}

/// A switch node started with its own Redis URL (the environment's
/// REDIS_URL would otherwise win over the file for every node).
fn node(config: &str, redis_url: &str) -> TestSwitch {
    TestSwitch::start_with_env(config, &[("REDIS_URL", redis_url)])
}

/// A card and a terminal no other run has used: Redis and PostgreSQL keep
/// their state across the tests of one `scripts/test-env` run.
fn unique_card_and_terminal(test: u64) -> (String, String) {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let micros = u64::try_from(micros).unwrap();
    let seed = (micros + u64::from(std::process::id()) * 1_000 + test) % 100_000_000_000;
    let pan = with_check_digit(&format!("4100{seed:011}"));
    let terminal = format!("F{:07}", seed % 10_000_000);
    (pan, terminal)
}

fn authorization_at(pan: &str, terminal: &str) -> Message {
    let mut message = authorization(pan, 100);
    message.set(41, terminal);
    message
}

#[test]
fn two_nodes_approve_exactly_the_card_limit_between_them() {
    let Some((_database, redis)) = database_and_redis_urls() else {
        return;
    };
    let config = fleet_config("decline");
    let nodes = [node(&config, &redis), node(&config, &redis)];
    let (pan, terminal) = unique_card_and_terminal(1);

    // 40 requests for one card: 4 connections per node, 5 pipelined on each.
    let mut threads = Vec::new();
    for connection in 0..8 {
        let address = nodes[connection % 2].iso;
        let requests: Vec<Message> = (0..5).map(|_| authorization_at(&pan, &terminal)).collect();
        threads.push(std::thread::spawn(move || {
            let mut client = IsoClient::connect(address);
            for request in &requests {
                client.send(request);
            }
            (0..requests.len())
                .map(|_| code(&client.receive().expect("an answer")).to_owned())
                .collect::<Vec<String>>()
        }));
    }
    let codes: Vec<String> = threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    assert_eq!(codes.len(), 40);
    let approved = codes.iter().filter(|c| *c == "00").count();
    let count_limited = codes.iter().filter(|c| *c == "65").count();
    assert_eq!(
        approved, 5,
        "exactly the limit across both nodes: {codes:?}"
    );
    assert_eq!(count_limited, 35, "the rest answer 65: {codes:?}");
}

#[test]
fn a_reversal_on_one_node_gives_the_approval_back_to_the_other() {
    let Some((_database, redis)) = database_and_redis_urls() else {
        return;
    };
    let config = fleet_config("decline");
    let a = node(&config, &redis);
    let b = node(&config, &redis);
    let (pan, terminal) = unique_card_and_terminal(2);
    let mut on_a = a.iso();
    let mut on_b = b.iso();

    let first = authorization_at(&pan, &terminal);
    assert_eq!(code(&on_a.exchange(&first)), "00");
    for _ in 0..4 {
        assert_eq!(
            code(&on_a.exchange(&authorization_at(&pan, &terminal))),
            "00"
        );
    }
    assert_eq!(
        code(&on_b.exchange(&authorization_at(&pan, &terminal))),
        "65",
        "node B sees node A's approvals"
    );
    let reversal = reversal_of(&first, Mti::REVERSAL_REQUEST);
    assert_eq!(code(&on_a.exchange(&reversal)), "00");
    assert_eq!(
        code(&on_b.exchange(&authorization_at(&pan, &terminal))),
        "00",
        "the reversal on A gave one back to the fleet"
    );
    assert_eq!(
        code(&on_b.exchange(&authorization_at(&pan, &terminal))),
        "65"
    );
}

#[test]
fn a_retransmission_to_another_node_gets_the_first_answer_once() {
    let Some((_database, redis)) = database_and_redis_urls() else {
        return;
    };
    let config = fleet_config("decline");
    let a = node(&config, &redis);
    let b = node(&config, &redis);
    let (pan, terminal) = unique_card_and_terminal(4);
    let request = authorization_at(&pan, &terminal);
    let first = a.iso().exchange(&request);
    assert_eq!(code(&first), "00");
    // The acquirer timed out on node A and sends the same request to node B.
    let again = b.iso().exchange(&request);
    assert_eq!(
        again.get(38),
        first.get(38),
        "the same auth code from the other node"
    );
    let mut on_b = b.iso();
    for _ in 0..4 {
        assert_eq!(
            code(&on_b.exchange(&authorization_at(&pan, &terminal))),
            "00"
        );
    }
    assert_eq!(
        code(&on_b.exchange(&authorization_at(&pan, &terminal))),
        "65",
        "the retransmission was not counted again"
    );
}

#[test]
fn a_restarted_node_answers_a_retransmission_from_redis_once() {
    let Some((_database, redis)) = database_and_redis_urls() else {
        return;
    };
    let config = fleet_config("decline");
    let (pan, terminal) = unique_card_and_terminal(7);
    let request = authorization_at(&pan, &terminal);
    let first_node = node(&config, &redis);
    let first = first_node.iso().exchange(&request);
    assert_eq!(code(&first), "00");
    // The node stops (SIGTERM), writing the answers it leaves in Redis
    // after its replies before it exits, and a fresh one takes its place:
    // its in-memory index is empty, and it does not read the journal per
    // request; Redis holds the fleet's answer. (A node killed before that
    // write leaves its claim to lapse: the simulation's `AnswersLost`.)
    assert!(first_node.stop().success());
    let restarted = node(&config, &redis);
    let mut acquirer = restarted.iso();
    let again = acquirer.exchange(&request);
    assert_eq!(code(&again), "00");
    assert_eq!(again.get(38), first.get(38), "the first auth code");
    for _ in 0..4 {
        assert_eq!(
            code(&acquirer.exchange(&authorization_at(&pan, &terminal))),
            "00"
        );
    }
    assert_eq!(
        code(&acquirer.exchange(&authorization_at(&pan, &terminal))),
        "65",
        "the retransmission was not counted again"
    );
}

#[test]
fn copies_of_a_request_sent_to_two_nodes_at_once_are_decided_once() {
    let Some((_database, redis)) = database_and_redis_urls() else {
        return;
    };
    let config = fleet_config("decline");
    let a = node(&config, &redis);
    let b = node(&config, &redis);
    let (pan, terminal) = unique_card_and_terminal(5);
    let mut on_a = a.iso();
    let mut on_b = b.iso();
    // Five distinct requests, each sent to both nodes at the same moment.
    for _ in 0..5 {
        let request = authorization_at(&pan, &terminal);
        on_a.send(&request);
        on_b.send(&request);
        let (first, second) = (on_a.receive().unwrap(), on_b.receive().unwrap());
        assert_eq!(code(&first), "00");
        assert_eq!(first.get(38), second.get(38), "one decision, one auth code");
    }
    assert_eq!(
        code(&on_a.exchange(&authorization_at(&pan, &terminal))),
        "65",
        "five requests, five approvals counted, though each reached two nodes"
    );
}

#[test]
fn redis_unreachable_declines_promptly_and_never_approves() {
    let Some(_) = database_and_redis_urls() else {
        return;
    };
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let node = node(
        &fleet_config("decline"),
        &format!("redis://127.0.0.1:{port}/"),
    );
    let (pan, terminal) = unique_card_and_terminal(3);
    let mut client = node.iso();
    for _ in 0..3 {
        let started = Stopwatch::start();
        let reply = client.exchange(&authorization_at(&pan, &terminal));
        assert_eq!(code(&reply), "91", "{}", node.logs.lock().unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered in {:?}",
            started.elapsed()
        );
    }
    // The readiness check pings Redis once a second.
    let waiting = Stopwatch::start();
    loop {
        let ready = http_request(node.http, "GET", "/health/ready", None, &[], "");
        if ready.status == 503 {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "still ready: {}",
            ready.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two nodes on a Redis database of their own (`redis_db`: a flush there
/// touches no other test's keys), a card and terminal of `test`'s own, and
/// a client per node, after three approvals of the card (of its five a
/// minute) alternating between the nodes. `None` without the databases.
fn two_nodes_three_approvals_in(redis_db: u32, test: u64) -> Option<Fleet> {
    let (_database, redis) = database_and_redis_urls()?;
    let redis = format!("{}/{redis_db}", redis.trim_end_matches('/'));
    let config = fleet_config("decline");
    let nodes = [node(&config, &redis), node(&config, &redis)];
    let (pan, terminal) = unique_card_and_terminal(test);
    let mut clients = [nodes[0].iso(), nodes[1].iso()];
    for n in 0..3 {
        assert_eq!(
            code(&clients[n % 2].exchange(&authorization_at(&pan, &terminal))),
            "00",
            "approval {n} before the loss"
        );
    }
    Some(Fleet {
        redis,
        nodes,
        pan,
        terminal,
        clients,
    })
}

/// What [`two_nodes_three_approvals_in`] sets up.
struct Fleet {
    redis: String,
    nodes: [TestSwitch; 2],
    pan: String,
    terminal: String,
    clients: [IsoClient; 2],
}

/// Redis loses every key (a flush, a failover to an empty replica): the
/// fleet's card velocity is rebuilt from the shared journal before any node
/// uses Redis again, so a card's limits still hold across the loss.
#[test]
fn limits_hold_when_redis_loses_its_keys() {
    let Some(Fleet {
        redis,
        nodes,
        pan,
        terminal,
        mut clients,
    }) = two_nodes_three_approvals_in(7, 6)
    else {
        return;
    };

    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    redis::cmd("FLUSHDB").exec(&mut connection).unwrap();

    // Both nodes move to the generation rebuilt from the journal (each
    // notices the loss within a second) and are ready again.
    let generation =
        |node: &TestSwitch| metric(&node.metrics(), "switch_fleet_velocity_generation ");
    let before = generation(&nodes[0]);
    assert!(before > 0, "a generation is in use from the start");
    let waited = Stopwatch::start();
    for node in &nodes {
        while generation(node) <= before
            || node.http("GET", "/health/ready", None, &[], "").status != 200
        {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "a node never used a rebuilt generation after the loss"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let codes: Vec<String> = (0..6)
        .map(|n| code(&clients[n % 2].exchange(&authorization_at(&pan, &terminal))).to_owned())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| *c == "00").count(),
        2,
        "5 a minute in all, 3 of them before the loss: {codes:?}"
    );
}

/// Redis loses every key while requests for a card are in flight on both
/// nodes: the card's limit still holds across the loss, counting what was
/// approved before it, during it, and after.
///
/// Before the reserve script checked `v:built` itself, each node went on
/// reserving in the lost (empty) generation until its next check of it (up
/// to a second), handing the card's whole limit out again: 10 approvals
/// where 5 a minute are allowed.
/// Clears a load's flag when dropped, on a panic too.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn limits_hold_when_redis_loses_its_keys_under_load() {
    let Some(Fleet {
        redis,
        nodes,
        pan,
        terminal,
        mut clients,
    }) = two_nodes_three_approvals_in(8, 8)
    else {
        return;
    };
    let generation =
        |node: &TestSwitch| metric(&node.metrics(), "switch_fleet_velocity_generation ");
    let before = generation(&nodes[0]);
    assert!(before > 0, "a generation is in use from the start");

    // Two acquirers per node keep asking for the card through the loss.
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let loading = std::sync::atomic::AtomicBool::new(true);
    let during: Vec<String> = std::thread::scope(|scope| {
        let load: Vec<_> = (0..4)
            .map(|n| {
                let address = nodes[n % 2].iso;
                let (pan, terminal, answered, loading) = (&pan, &terminal, &answered, &loading);
                scope.spawn(move || {
                    let mut client = IsoClient::connect(address);
                    let mut codes = Vec::new();
                    while loading.load(std::sync::atomic::Ordering::SeqCst) {
                        let reply = client.exchange(&authorization_at(pan, terminal));
                        codes.push(code(&reply).to_owned());
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Paced: enough to keep requests in flight without
                        // filling the journal with declines.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    codes
                })
            })
            .collect();
        let answers_at_least = |n: usize| {
            let waited = Stopwatch::start();
            while answered.load(std::sync::atomic::Ordering::SeqCst) < n {
                assert!(
                    waited.elapsed() < Duration::from_secs(20),
                    "the load stalled"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // A failed assertion below stops the load too, so the test fails
        // rather than waiting for ever on threads that keep loading.
        let _stop = StopOnDrop(&loading);
        answers_at_least(20);
        let client = redis::Client::open(redis.as_str()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("FLUSHDB").exec(&mut connection).unwrap();
        // Both nodes move to the generation rebuilt from the journal (each
        // notices the loss within a second) and are ready again.
        let waited = Stopwatch::start();
        for node in &nodes {
            while generation(node) <= before
                || node.http("GET", "/health/ready", None, &[], "").status != 200
            {
                assert!(
                    waited.elapsed() < Duration::from_secs(20),
                    "a node never used a rebuilt generation after the loss"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        answers_at_least(answered.load(std::sync::atomic::Ordering::SeqCst) + 40);
        loading.store(false, std::sync::atomic::Ordering::SeqCst);
        load.into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect()
    });
    let after: Vec<String> = (0..6)
        .map(|n| code(&clients[n % 2].exchange(&authorization_at(&pan, &terminal))).to_owned())
        .collect();
    let approved_during = during.iter().filter(|c| *c == "00").count();
    let approved_after = after.iter().filter(|c| *c == "00").count();
    assert_eq!(
        3 + approved_during + approved_after,
        5,
        "5 a minute in all, 3 of them before the loss: {during:?} then {after:?}"
    );
    assert_eq!(after.last().map(String::as_str), Some("65"), "{after:?}");
}

/// A Redis server of one test's own, on a free port of the loopback
/// address, so `INFO commandstats` counts that test's calls alone (the
/// environment's Redis serves every test at once). Stopped when dropped.
struct OwnRedis {
    server: std::process::Child,
    url: String,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port().to_string();
        drop(free);
        let server = std::process::Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server, as scripts/test-env installs it");
        let redis = OwnRedis {
            server,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let waiting = Stopwatch::start();
        while redis.try_calls().is_err() {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// Waits until no request's claim is pending: each node writes its
    /// answer after the reply.
    fn wait_until_claims_answered(&self) {
        let mut connection = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let waiting = Stopwatch::start();
        loop {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("d:{*")
                .query(&mut connection)
                .unwrap();
            let held: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                redis::cmd("MGET")
                    .arg(&keys)
                    .query(&mut connection)
                    .unwrap()
            };
            let pending = held
                .iter()
                .flatten()
                .filter(|value| value.starts_with("pending:"))
                .count();
            if pending == 0 {
                return;
            }
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "{pending} claims still pending"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Calls served so far, by command (`evalsha`, `set`, `get`, ...),
    /// those of scripts included.
    fn calls(&self) -> std::collections::HashMap<String, u64> {
        self.try_calls().unwrap()
    }

    fn try_calls(&self) -> redis::RedisResult<std::collections::HashMap<String, u64>> {
        let mut connection = redis::Client::open(self.url.as_str())?.get_connection()?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)?;
        // cmdstat_evalsha:calls=12,usec=...
        Ok(info
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                let calls = stats.split(',').next()?.parse().ok()?;
                Some((name.to_owned(), calls))
            })
            .collect())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// How many more times `command` was called in `after` than in `before`.
fn more(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
    command: &str,
) -> u64 {
    let count =
        |calls: &std::collections::HashMap<String, u64>| calls.get(command).copied().unwrap_or(0);
    count(after) - count(before)
}

/// A fleet node calls Redis once before each reply: one script claims the
/// request's keys and, for an approval, checks and counts its card's
/// velocity; the answer other nodes read is written after the reply (one
/// SET). Declines touch no velocity and make the same one call. Before
/// the two were folded, an approval made three calls in sequence.
#[test]
fn a_fleet_node_calls_redis_once_before_each_reply() {
    let Some(_) = database_and_redis_urls() else {
        return;
    };
    let redis = OwnRedis::start();
    let node = node(&fleet_config("decline"), &redis.url);
    let mut client = node.iso();
    // A new Redis: the node rebuilds its velocity from the shared journal
    // first (91 until then), and loads its scripts on the first calls.
    let waiting = Stopwatch::start();
    let (pan, terminal) = unique_card_and_terminal(30);
    while code(&client.exchange(&authorization_at(&pan, &terminal))) != "00" {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "{}",
            node.logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    redis.wait_until_claims_answered();
    let before = redis.calls();

    const REQUESTS: u64 = 20;
    for n in 0..REQUESTS {
        let (pan, terminal) = unique_card_and_terminal(31 + n);
        let approval = authorization_at(&pan, &terminal);
        assert_eq!(code(&client.exchange(&approval)), "00");
        let mut decline = authorization(&pan, 0);
        decline.set(41, &terminal);
        assert_eq!(code(&client.exchange(&decline)), "13");
    }
    redis.wait_until_claims_answered();
    let after = redis.calls();
    let scripts = more(&before, &after, "evalsha") + more(&before, &after, "eval");
    assert_eq!(
        scripts,
        2 * REQUESTS,
        "one script per request, approval or decline: {after:?}"
    );
    // Each claim sets its key in the script; each answer is one SET of
    // its own, after the reply.
    assert_eq!(more(&before, &after, "set"), 2 * 2 * REQUESTS);
}
