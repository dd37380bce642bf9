//! Vault key rotation on a running switch, as ops would do it: while
//! acquirers keep sending authorizations for many distinct cards, the
//! configuration gets a second key made active, the switch is sent SIGHUP,
//! bad reloads are refused without harm, and the rewrap moves every stored
//! PAN to the new key. No request may fail meanwhile, and no PAN or key may
//! show in the admin answers or the logs. Also: a production start with the
//! published development keys is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN_KEY, CONFIG, TestSwitch, authorization, code, with_check_digit};
use switch::clock::Stopwatch;

const DEV_KEY_1: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const DEV_TOKENIZATION_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Key 2, given from a file as production would.
const KEY_2: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// A distinct, Luhn-valid PAN outside the blocked BIN range.
fn pan(n: u64) -> String {
    with_check_digit(&format!("541333{n:09}"))
}

fn status(switch: &TestSwitch) -> serde_json::Value {
    let reply = switch.http("GET", "/admin/vault", Some(ADMIN_KEY), &[], "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn rows_under(status: &serde_json::Value, key_id: &str) -> u64 {
    status["rows_per_key_id"][key_id].as_u64().unwrap_or(0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waiting = Stopwatch::start();
    while !done() {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Authorizations from `threads` acquirer connections, each for a new card,
/// until stopped; every answer's DE39 is kept.
struct Load {
    stop: Arc<AtomicBool>,
    next_card: Arc<AtomicU64>,
    answers: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(switch: &TestSwitch, threads: usize, first_card: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next_card = Arc::new(AtomicU64::new(first_card));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let mut iso = switch.iso();
                let (stop, next_card, answers) = (
                    Arc::clone(&stop),
                    Arc::clone(&next_card),
                    Arc::clone(&answers),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next_card.fetch_add(1, Ordering::Relaxed);
                        let reply = iso.exchange(&authorization(&pan(n), 1000 + n % 500));
                        answers.lock().unwrap().push(code(&reply).to_owned());
                    }
                })
            })
            .collect();
        Load {
            stop,
            next_card,
            answers,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Stops and returns every answer and the number of cards used.
    fn finish(self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        (answers, self.next_card.load(Ordering::Relaxed))
    }
}

#[test]
fn keys_rotate_and_rows_rewrap_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), CONFIG);
    let key_file = dir.path().join("vault-key-2");
    std::fs::write(&key_file, format!("{KEY_2}\n")).unwrap();
    let admin_key_file = dir.path().join("admin-key");
    std::fs::write(&admin_key_file, ADMIN_KEY).unwrap();
    let mut admin_bodies = String::new();

    // Cards seen before the rotation are sealed under key 1.
    let before = Load::start(&switch, 2, 0);
    wait_until("cards before the rotation", || before.answered() >= 150);
    let (mut answers, first_after) = before.finish();
    let initial = status(&switch);
    assert_eq!(initial["active_key_id"], 1);
    assert!(rows_under(&initial, "1") >= 150, "{initial}");

    let load = Load::start(&switch, 3, first_after);
    wait_until("load running", || load.answered() >= 50);

    // Refused reloads leave the keys as they are and the switch serving.
    let rotated = CONFIG
        .replace("active_key_id = 1", "active_key_id = 2")
        .replace(
            &format!("1 = \"dev:{DEV_KEY_1}\""),
            &format!(
                "1 = \"dev:{DEV_KEY_1}\"\n2 = \"file:{}\"",
                key_file.display()
            ),
        );
    assert_ne!(rotated, CONFIG);
    for (bad, says) in [
        (
            rotated.replace(&format!("1 = \"dev:{DEV_KEY_1}\"\n"), ""),
            "vault key 1 is the active key and cannot be removed",
        ),
        (
            rotated.replace(DEV_TOKENIZATION_KEY, &"ab".repeat(32)),
            "tokenization key cannot change",
        ),
        (rotated.replace("[shards]", "[shard]"), "unknown field"),
        (
            rotated.replace("vault-key-2", "no-such-key-file"),
            "vault.encryption_keys.2",
        ),
    ] {
        std::fs::write(&switch.config_file, &bad).unwrap();
        let reply = switch.http("POST", "/admin/vault/reload", Some(ADMIN_KEY), &[], "");
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert!(reply.body.contains(says), "{says}: {}", reply.body);
        admin_bodies.push_str(&reply.body);
        assert_eq!(status(&switch)["key_ids"], serde_json::json!([1]));
    }
    // Merchants are not admins.
    let reply = switch.http(
        "POST",
        "/admin/vault/reload",
        Some(common::ACME_KEY),
        &[],
        "",
    );
    assert_eq!(reply.status, 403);

    // The rotation: key 2 added from a file and made active, then SIGHUP.
    std::fs::write(&switch.config_file, &rotated).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &switch.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until("the reload", || status(&switch)["active_key_id"] == 2);
    let reloaded = status(&switch);
    assert_eq!(reloaded["key_ids"], serde_json::json!([1, 2]));
    // Seals already on their way under key 1 land; after that key 1 stays put.
    std::thread::sleep(Duration::from_millis(300));
    let settled = status(&switch);
    let answered = load.answered();
    wait_until("new cards after the reload", || {
        load.answered() >= answered + 100
    });
    let after_reload = status(&switch);
    assert_eq!(
        rows_under(&after_reload, "1"),
        rows_under(&settled, "1"),
        "new cards are sealed under key 2: {after_reload}"
    );
    assert!(
        rows_under(&after_reload, "2") >= 100,
        "new cards are sealed under key 2: {after_reload}"
    );

    // Key 1 still seals the older rows: it cannot go yet.
    let without_one = rotated.replace(&format!("1 = \"dev:{DEV_KEY_1}\"\n"), "");
    std::fs::write(&switch.config_file, &without_one).unwrap();
    let reply = switch.http("POST", "/admin/vault/reload", Some(ADMIN_KEY), &[], "");
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("vault key 1 cannot be removed: stored PANs are still sealed under it"),
        "{}",
        reply.body
    );
    admin_bodies.push_str(&reply.body);
    assert_eq!(status(&switch)["key_ids"], serde_json::json!([1, 2]));
    std::fs::write(&switch.config_file, &rotated).unwrap();

    // The rewrap, in small batches, while the load goes on; one at a time.
    let reply = switch.http(
        "POST",
        "/admin/vault/rewrap",
        Some(ADMIN_KEY),
        &[],
        r#"{"batch_rows": 40, "pause_ms": 30}"#,
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    admin_bodies.push_str(&reply.body);
    let again = switch.http("POST", "/admin/vault/rewrap", Some(ADMIN_KEY), &[], "");
    assert_eq!(again.status, 409, "{}", again.body);
    let bad = switch.http(
        "POST",
        "/admin/vault/rewrap",
        Some(ADMIN_KEY),
        &[],
        r#"{"batch_rows": 0}"#,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    wait_until("the rewrap", || {
        let now = status(&switch);
        admin_bodies.push_str(&now.to_string());
        now["rewrap"]["state"] != "running"
    });
    let (more, cards) = load.finish();
    answers.extend(more);
    let done = status(&switch);
    assert_eq!(done["rewrap"]["state"], "done", "{done}");
    assert!(done["rewrap"]["batches"].as_u64().unwrap() > 1, "{done}");
    assert!(done["rewrap"]["moved"].as_u64().unwrap() >= 150, "{done}");

    // Every request got a normal answer: approved, no 91/96.
    assert!(answers.len() >= 400, "{} answers", answers.len());
    let unusual: Vec<&String> = answers.iter().filter(|code| *code != "00").collect();
    assert!(unusual.is_empty(), "unusual answers: {unusual:?}");

    // Every row is under key 2 and opens (the CLI's verify says so too).
    let rows = done["rows_per_key_id"].as_object().unwrap();
    assert_eq!(rows.keys().collect::<Vec<_>>(), vec!["2"], "{done}");
    assert_eq!(rows["2"].as_u64().unwrap(), cards, "one row per card");
    let verify = switch.http("POST", "/admin/vault/verify", Some(ADMIN_KEY), &[], "");
    assert_eq!(verify.status, 200);
    let report = verify.json();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["opened_per_key_id"]["2"], cards, "{report}");
    admin_bodies.push_str(&verify.body);

    // The operator's commands: a second rewrap finds nothing to move.
    let url = format!("http://{}", switch.http);
    for args in [
        vec!["vault", "rewrap", "--poll-ms", "100"],
        vec!["vault", "verify"],
        vec!["vault", "status"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(&args)
            .args(["--url", &url, "--admin-key-file"])
            .arg(&admin_key_file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        admin_bodies.push_str(&stdout);
    }

    // Key 1 is now unused and not active: removing it is accepted.
    std::fs::write(&switch.config_file, &without_one).unwrap();
    let reply = switch.http("POST", "/admin/vault/reload", Some(ADMIN_KEY), &[], "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["key_ids"], serde_json::json!([2]));
    admin_bodies.push_str(&reply.body);
    let verify = switch.http("POST", "/admin/vault/verify", Some(ADMIN_KEY), &[], "");
    assert_eq!(verify.json()["failed"], 0, "{}", verify.body);

    // No PAN and no key in what ops saw or in the logs.
    let logs = switch.logs.lock().unwrap().clone();
    assert!(logs.contains("vault keyring reloaded"), "{logs}");
    assert!(logs.contains("vault reload refused"), "{logs}");
    assert!(logs.contains("vault rewrap finished"), "{logs}");
    for n in 0..cards {
        let digits = pan(n);
        assert!(!admin_bodies.contains(&digits), "PAN in an admin answer");
        assert!(!logs.contains(&digits), "PAN in the logs");
    }
    for key in [KEY_2, DEV_KEY_1, DEV_TOKENIZATION_KEY] {
        assert!(!admin_bodies.contains(key), "key in an admin answer");
        assert!(!logs.contains(key), "key in the logs");
    }
    assert!(switch.stop().success());
}

#[test]
fn production_refuses_the_published_dev_keys_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG
        .replace("mode = \"dev\"", "mode = \"production\"")
        .replace(
            &format!("\"dev:{DEV_TOKENIZATION_KEY}\""),
            "\"env:SWITCH_TOKENIZATION_KEY\"",
        )
        .replace(
            &format!("\"dev:{DEV_KEY_1}\""),
            "\"env:SWITCH_VAULT_KEY_1\"",
        );
    let config_file = dir.path().join("switch.toml");
    std::fs::write(&config_file, &config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["serve", "--config"])
        .arg(&config_file)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .env("SWITCH_TOKENIZATION_KEY", DEV_TOKENIZATION_KEY)
        .env("SWITCH_VAULT_KEY_1", KEY_2)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "vault.tokenization_key: is the development tokenization key, published in config/switch.toml"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(DEV_TOKENIZATION_KEY), "{stderr}");
    assert!(!dir.path().join("data").exists(), "refused before any file");
}
