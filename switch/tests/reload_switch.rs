//! Hot reload of the configuration, seen from outside: a switch under a
//! steady load of ISO 8583 and HTTP requests is reloaded several times, by
//! SIGHUP and by `POST /admin/reload`. No request fails, hangs or gets an
//! error because of it; requests after a reload see its limits, merchants
//! and keys; velocity counted before still counts; a broken file and a
//! change to a listener are refused with their keys named and change
//! nothing; every attempt is audited and counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use switch::clock::Stopwatch;

const OPERATOR_KEY: &str = "dev-operator-key";
const NEW_KEY: &str = "dev-merchant-key-new";
const NEW_KEY_ROTATED: &str = "dev-merchant-key-new-2";
const NEW_MERCHANT: &str = "NEW0000000001";

/// The test configuration with an operator.
fn base() -> String {
    format!(
        r#"{CONFIG}
[operators.ops]
api_key_sha256 = "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca"
"#
    )
}

fn sha256_hex(key: &str) -> String {
    protocol::encoding::to_hex(&Sha256::digest(key.as_bytes())).to_lowercase()
}

/// The base with a lower amount ceiling (50 000) and per-minute count (3),
/// BISTRO removed and a new merchant whose key is `new_key`.
fn lowered(new_key: &str) -> String {
    let before_bistro = CONFIG.split("[merchants.BISTRO00001]").next().unwrap();
    assert!(before_bistro.contains("[rules]\namount_max = 1000000\n"));
    assert!(before_bistro.contains("per_minute = { count_max = 5,"));
    let edited = before_bistro
        .replace(
            "[rules]\namount_max = 1000000\n",
            "[rules]\namount_max = 50000\n",
        )
        .replace(
            "per_minute = { count_max = 5,",
            "per_minute = { count_max = 3,",
        );
    format!(
        r#"{edited}
[operators.ops]
api_key_sha256 = "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca"

[merchants.{NEW_MERCHANT}]
api_key_sha256 = "{}"
"#,
        sha256_hex(new_key)
    )
}

/// A distinct valid card for each `n`.
fn card(n: u64) -> String {
    with_check_digit(&format!("411111{n:09}"))
}

fn body(pan: &str, amount: u64, merchant: &str) -> String {
    format!(
        r#"{{"pan":"{pan}","expiry":"3012","amount":{amount},"currency":"EUR","merchant_id":"{merchant}","terminal_id":"WEB00001"}}"#
    )
}

/// What the load saw: requests answered as expected, and every other answer.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    answered: AtomicU64,
    failures: Mutex<Vec<String>>,
    next_card: AtomicU64,
}

impl Load {
    fn card(&self) -> String {
        card(1_000_000 + self.next_card.fetch_add(1, Ordering::Relaxed))
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    /// Waits until a few more requests are answered than at the last
    /// call, so every reload happens while the load runs.
    fn keeps_running(&self, seen: &mut u64) {
        let waiting = Stopwatch::start();
        while self.answered.load(Ordering::Relaxed) < *seen + 4 {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "the load stalled at {seen} answers: {:?}",
                self.failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        *seen = self.answered.load(Ordering::Relaxed);
    }
}

/// One acquirer connection sending 0100s one after another until stopped:
/// each a new card for 1.00, which every configuration of this test
/// approves.
fn iso_load(switch_iso: std::net::SocketAddr, load: Arc<Load>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = IsoClient::connect(switch_iso);
        while !load.stop.load(Ordering::Relaxed) {
            client.send(&authorization(&load.card(), 100));
            match client.receive() {
                Some(answer) if code(&answer) == "00" => {
                    load.answered.fetch_add(1, Ordering::Relaxed);
                }
                Some(answer) => load.fail(format!("ISO answered {}", code(&answer))),
                None => {
                    load.fail("ISO connection closed or timed out".to_owned());
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// A web client authorizing for ACME one request after another.
fn http_load(http: std::net::SocketAddr, load: Arc<Load>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !load.stop.load(Ordering::Relaxed) {
            let request = body(&load.card(), 100, "ACME0000001");
            match try_http_request(
                http,
                "POST",
                "/v1/authorizations",
                Some(ACME_KEY),
                &[],
                &request,
            ) {
                Ok(reply) if reply.status == 201 && reply.json()["response_code"] == "00" => {
                    load.answered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(reply) => load.fail(format!("HTTP {} {}", reply.status, reply.body)),
                Err(error) => load.fail(format!("HTTP failed: {error}")),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// Waits until `/metrics` counts `count` reloads with `result`.
fn wait_for_reloads(switch: &TestSwitch, result: &str, count: u64) {
    let line = format!("switch_config_reloads_total{{result=\"{result}\"}}");
    let waiting = Stopwatch::start();
    loop {
        let seen = metric(&switch.metrics(), &line);
        if seen == count {
            return;
        }
        assert!(seen < count, "{line} is {seen}, more than {count}");
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "{line} stayed {seen}, not {count}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sighup(switch: &TestSwitch) {
    let status = Command::new("kill")
        .args(["-HUP", &switch.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An ISO 8583 0100 for `pan` and `amount`, at `merchant`.
fn iso_code(switch: &TestSwitch, pan: &str, amount: u64, merchant: &str) -> String {
    let mut request = authorization(pan, amount);
    request.set(42, format!("{merchant:<15}"));
    code(&switch.iso().exchange(&request)).to_owned()
}

fn authorize_http(switch: &TestSwitch, key: &str, pan: &str, merchant: &str) -> HttpReply {
    switch.http(
        "POST",
        "/v1/authorizations",
        Some(key),
        &[],
        &body(pan, 100, merchant),
    )
}

#[test]
fn reloads_under_load_apply_whole_configurations_and_refuse_bad_ones() {
    let switch = TestSwitch::start_with_env(&base(), &[]);
    let load = Arc::new(Load::default());
    let workers = vec![
        iso_load(switch.iso, Arc::clone(&load)),
        iso_load(switch.iso, Arc::clone(&load)),
        http_load(switch.http, Arc::clone(&load)),
        http_load(switch.http, Arc::clone(&load)),
    ];
    let mut seen = 0;
    load.keeps_running(&mut seen);

    // Velocity before any reload: two approvals for card 1.
    let counted = card(1);
    for _ in 0..2 {
        assert_eq!(iso_code(&switch, &counted, 100, "ACME0000001"), "00");
    }
    assert_eq!(iso_code(&switch, &card(2), 60_000, "ACME0000001"), "00");
    assert_eq!(
        authorize_http(&switch, NEW_KEY, &card(3), NEW_MERCHANT).status,
        401
    );

    // 1. SIGHUP with lower limits, BISTRO gone and a new merchant.
    std::fs::write(&switch.config_file, lowered(NEW_KEY)).unwrap();
    sighup(&switch);
    wait_for_reloads(&switch, "applied", 1);
    load.keeps_running(&mut seen);
    assert_eq!(
        iso_code(&switch, &card(4), 60_000, "ACME0000001"),
        "13",
        "rules.amount_max is 50 000 now"
    );
    assert_eq!(
        iso_code(&switch, &counted, 100, "ACME0000001"),
        "00",
        "the card's third approval of the minute"
    );
    assert_eq!(
        iso_code(&switch, &counted, 100, "ACME0000001"),
        "65",
        "the two approvals before the reload count against its limit of three"
    );
    let new = authorize_http(&switch, NEW_KEY, &card(5), NEW_MERCHANT);
    assert_eq!(new.status, 201, "{}", new.body);
    assert_eq!(new.json()["response_code"], "00", "{}", new.body);
    assert_eq!(
        authorize_http(&switch, BISTRO_KEY, &card(6), "BISTRO00001").status,
        401,
        "a removed merchant's key is refused"
    );
    assert_eq!(
        iso_code(&switch, &card(7), 100, "BISTRO00001"),
        "03",
        "a removed merchant is declined like an unknown one"
    );

    // 2. The admin route, as an operator: the new merchant's key rotated.
    std::fs::write(&switch.config_file, lowered(NEW_KEY_ROTATED)).unwrap();
    let reloaded = switch.http("POST", "/admin/reload", Some(OPERATOR_KEY), &[], "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    load.keeps_running(&mut seen);
    let answer = reloaded.json();
    assert_eq!(answer["generation"], 3, "{answer}");
    assert_eq!(
        answer["changed"]["merchants_changed"][0], NEW_MERCHANT,
        "{answer}"
    );
    assert!(
        !reloaded.body.contains(&sha256_hex(NEW_KEY_ROTATED)),
        "no digest in the answer"
    );
    assert_eq!(
        authorize_http(&switch, NEW_KEY, &card(8), NEW_MERCHANT).status,
        401,
        "the old key is refused at once"
    );
    assert_eq!(
        authorize_http(&switch, NEW_KEY_ROTATED, &card(9), NEW_MERCHANT).status,
        201
    );

    // 3. A broken file, by the route and by SIGHUP: refused with its key,
    // the running limits kept.
    let broken = lowered(NEW_KEY_ROTATED).replace(
        "[rules]\namount_max = 50000\n",
        "[rules]\namount_max = 10000000000000\n",
    );
    std::fs::write(&switch.config_file, &broken).unwrap();
    let refused = switch.http("POST", "/admin/reload", Some(OPERATOR_KEY), &[], "");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        refused.json()["field"],
        "rules.amount_max",
        "{}",
        refused.body
    );
    sighup(&switch);
    wait_for_reloads(&switch, "refused", 2);
    load.keeps_running(&mut seen);
    assert_eq!(iso_code(&switch, &card(10), 60_000, "ACME0000001"), "13");
    assert_eq!(iso_code(&switch, &card(11), 100, "ACME0000001"), "00");
    assert_eq!(
        authorize_http(&switch, NEW_KEY_ROTATED, &card(12), NEW_MERCHANT).status,
        201
    );

    // 4. A listener setting changed beside a live one: refused, naming it,
    // and the live change is not applied either.
    let listener = lowered(NEW_KEY_ROTATED)
        .replace("connections_max = 16", "connections_max = 17")
        .replace(
            "[rules]\namount_max = 50000\n",
            "[rules]\namount_max = 70000\n",
        );
    std::fs::write(&switch.config_file, &listener).unwrap();
    let refused = switch.http("POST", "/admin/reload", Some(OPERATOR_KEY), &[], "");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.json()["field"],
        "iso.connections_max",
        "{}",
        refused.body
    );
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("restart"),
        "{}",
        refused.body
    );
    assert_eq!(iso_code(&switch, &card(13), 60_000, "ACME0000001"), "13");
    // A new listener (mutual TLS, with the acquirer it needs) by SIGHUP:
    // refused, naming both.
    let tls = lowered(NEW_KEY_ROTATED)
        + r#"
[iso.tls]
listen = "127.0.0.1:0"
certificate = "server.pem"
private_key = "server.key"
client_ca = "ca.pem"

[acquirers.north]
certificate_subject = "north.example"
"#;
    std::fs::write(&switch.config_file, &tls).unwrap();
    sighup(&switch);
    wait_for_reloads(&switch, "refused", 4);
    load.keeps_running(&mut seen);

    // The load ran through all of it without one failure.
    load.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");

    // Counted and audited, with who asked.
    let metrics = switch.metrics();
    assert_eq!(
        metric(&metrics, "switch_config_reloads_total{result=\"applied\"}"),
        2
    );
    assert_eq!(
        metric(&metrics, "switch_config_reloads_total{result=\"refused\"}"),
        4
    );
    let audit = switch.http("GET", "/admin/audit?limit=500", Some(ADMIN_KEY), &[], "");
    assert_eq!(audit.status, 200, "{}", audit.body);
    let reloads: Vec<(String, String, String)> = audit.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["event"] == "config.reload")
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap().to_owned();
            (field("actor"), field("outcome"), field("resource"))
        })
        .collect();
    let outcomes: Vec<(&str, &str)> = reloads
        .iter()
        .map(|(actor, outcome, _)| (actor.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("sighup", "applied"),
            ("operator:ops", "applied"),
            ("operator:ops", "refused"),
            ("sighup", "refused"),
            ("operator:ops", "refused"),
            ("sighup", "refused"),
        ]
    );
    assert!(
        reloads[0]
            .2
            .contains(&format!("merchants added {NEW_MERCHANT}")),
        "{reloads:?}"
    );
    assert!(reloads[2].2.contains("rules.amount_max"), "{reloads:?}");
    assert!(reloads[4].2.contains("iso.connections_max"), "{reloads:?}");
    assert!(reloads[5].2.contains("iso.tls, acquirers"), "{reloads:?}");
    // SIGHUP logs what the route answers: the key and the reason.
    let logs = switch.logs.lock().unwrap().clone();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("configuration reload refused"))
        .collect();
    assert_eq!(refusals.len(), 4, "{logs}");
    assert!(
        refusals[1].contains("\"key\":\"rules.amount_max\""),
        "{}",
        refusals[1]
    );
    assert!(
        refusals[3].contains("\"key\":\"iso.tls, acquirers\""),
        "{}",
        refusals[3]
    );
    switch.stop();
}
