//! Who may do what, seen from outside: every role against every route,
//! lockout of a client address after wrong keys, per-merchant rate limits on
//! both ingresses, and the audit log with its tamper check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use switch::clock::Stopwatch;

const OPERATOR_KEY: &str = "dev-operator-key";
const ROOT_KEY: &str = "dev-admin-key-2";
const WRONG_KEY: &str = "not-a-key-of-this-switch";

/// The test configuration with an operator, a second admin, and `extra`
/// (a `[security]` section, say) appended.
fn config(extra: &str) -> String {
    format!(
        r#"{CONFIG}
[operators.ops]
api_key_sha256 = "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca"

[admins.root]
api_key_sha256 = "4ed7421be654b688dd576282bdee76f5e1e60a7083116d7deafc82d4014ea7d2"

{extra}
"#
    )
}

fn body(pan: &str, merchant: &str) -> String {
    let mcc = if merchant.starts_with("BISTRO") {
        r#","mcc":"5812""#
    } else {
        ""
    };
    format!(
        r#"{{"pan":"{pan}","expiry":"3012","amount":100,"currency":"EUR","merchant_id":"{merchant}","terminal_id":"WEB00001"{mcc}}}"#
    )
}

/// A distinct valid card for each `n`, so per-card velocity never declines.
fn card(n: u64) -> String {
    with_check_digit(&format!("411111{n:09}"))
}

#[test]
fn every_role_against_every_route() {
    let switch = TestSwitch::start_with_env(&config("[security]\nlockout_failures = 1000"), &[]);
    let created = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body(&card(1), "ACME0000001"),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // Columns: ACME (owns the transaction), BISTRO (another merchant),
    // operator, admin ([admin]), admin ([admins.root]), no key, wrong key.
    let keys: [Option<&str>; 7] = [
        Some(ACME_KEY),
        Some(BISTRO_KEY),
        Some(OPERATOR_KEY),
        Some(ADMIN_KEY),
        Some(ROOT_KEY),
        None,
        Some(WRONG_KEY),
    ];
    let transaction = format!("/v1/transactions/{id}");
    let reversal = format!("/v1/authorizations/{id}/reversal");
    let rows: [(&str, &str, &str, [u16; 7]); 17] = [
        (
            "POST",
            "/v1/authorizations",
            "/v1/authorizations",
            [201, 201, 403, 403, 403, 401, 401],
        ),
        (
            "GET",
            "/v1/transactions/{id}",
            &transaction,
            // Another merchant's transaction is not found, not forbidden.
            [200, 404, 200, 200, 200, 401, 401],
        ),
        (
            "POST",
            "/v1/authorizations/{id}/reversal",
            &reversal,
            [200, 404, 403, 403, 403, 401, 401],
        ),
        (
            "GET",
            "/metrics",
            "/metrics",
            [403, 403, 200, 200, 200, 401, 401],
        ),
        (
            "GET",
            "/admin/latency",
            "/admin/latency",
            [403, 403, 200, 200, 200, 401, 401],
        ),
        (
            "GET",
            "/admin/timeline",
            "/admin/timeline?resolution=1m",
            [403, 403, 200, 200, 200, 401, 401],
        ),
        (
            "GET",
            "/admin/timeline.hlog",
            "/admin/timeline.hlog?stage=decide&channel=http",
            [403, 403, 200, 200, 200, 401, 401],
        ),
        (
            "GET",
            "/admin/audit",
            "/admin/audit",
            [403, 403, 403, 200, 200, 401, 401],
        ),
        (
            // The file is the one running: applied, nothing changed.
            "POST",
            "/admin/reload",
            "/admin/reload",
            [403, 403, 200, 200, 200, 401, 401],
        ),
        (
            "GET",
            "/admin/vault",
            "/admin/vault",
            [403, 403, 403, 200, 200, 401, 401],
        ),
        (
            "POST",
            "/admin/vault/reload",
            "/admin/vault/reload",
            [403, 403, 403, 200, 200, 401, 401],
        ),
        (
            // The body is refused (400) only once the key is accepted.
            "POST",
            "/admin/vault/rewrap",
            "/admin/vault/rewrap",
            [403, 403, 403, 400, 400, 401, 401],
        ),
        (
            "POST",
            "/admin/vault/verify",
            "/admin/vault/verify",
            [403, 403, 403, 200, 200, 401, 401],
        ),
        ("GET", "/admin", "/admin", [200; 7]),
        ("GET", "/health/live", "/health/live", [200; 7]),
        ("GET", "/health/ready", "/health/ready", [200; 7]),
        ("GET", "/openapi.json", "/openapi.json", [200; 7]),
    ];
    // Every route of the switch's one access table has a row here.
    for route in switch::ingress::http::ROUTES {
        assert!(
            rows.iter()
                .any(|(method, path, _, _)| *method == route.method && *path == route.path),
            "{} {} has no row in this test",
            route.method,
            route.path
        );
    }
    assert_eq!(rows.len(), switch::ingress::http::ROUTES.len());

    let mut card_number = 100;
    for (method, template, path, expected) in &rows {
        for (column, (key, status)) in keys.iter().zip(expected).enumerate() {
            card_number += 1;
            let request_body = if *template == "/v1/authorizations" {
                let merchant = if column == 1 {
                    "BISTRO00001"
                } else {
                    "ACME0000001"
                };
                body(&card(card_number), merchant)
            } else if *template == "/admin/vault/rewrap" {
                r#"{"batch_rows": 0}"#.to_owned()
            } else {
                String::new()
            };
            let reply = switch.http(method, path, *key, &[], &request_body);
            assert_eq!(
                reply.status, *status,
                "{method} {template} with key column {column}: {}",
                reply.body
            );
            if *status >= 400 {
                assert_eq!(
                    reply.header("content-type"),
                    Some("application/problem+json"),
                    "{method} {template} column {column}"
                );
            }
            if *status == 401 {
                assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            }
            // No route shows card data, whoever asks.
            assert!(!reply.body.contains(&card(1)), "{}", reply.body);
        }
    }
    // An operator sees the transaction's token, BIN and last four only.
    let seen = switch.http("GET", &transaction, Some(OPERATOR_KEY), &[], "");
    assert_eq!(seen.json()["bin"], "411111");
    assert_eq!(seen.json()["status"], "reversed");

    // Every refusal is counted by reason, as many as the table expects.
    let expected = |column: usize, status: u16| {
        let count = rows
            .iter()
            .filter(|(_, _, _, statuses)| statuses[column] == status)
            .count();
        u64::try_from(count).unwrap()
    };
    let forbidden: u64 = (0..5).map(|column| expected(column, 403)).sum();
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_http_refusals_total{reason=\"no_key\"}"
        ),
        expected(5, 401)
    );
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_http_refusals_total{reason=\"bad_key\"}"
        ),
        expected(6, 401)
    );
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_http_refusals_total{reason=\"forbidden_role\"}"
        ),
        forbidden
    );
}

#[test]
fn wrong_keys_lock_out_an_address_for_the_configured_period() {
    let switch = TestSwitch::start_with_env(
        &config("[security]\nlockout_failures = 3\nlockout_ms = 2000"),
        &[],
    );
    for _ in 0..2 {
        assert_eq!(
            switch
                .http("GET", "/metrics", Some(WRONG_KEY), &[], "")
                .status,
            401
        );
    }
    assert_eq!(
        switch
            .http("GET", "/metrics", Some(OPERATOR_KEY), &[], "")
            .status,
        200,
        "two failures: still let in"
    );
    let locked_at = Stopwatch::start();
    assert_eq!(
        switch
            .http("GET", "/metrics", Some(WRONG_KEY), &[], "")
            .status,
        401,
        "the third failure is answered as the others, then locks"
    );

    // Locked out: the right key gets the same answer as a wrong one.
    let right = switch.http("GET", "/admin/latency", Some(ADMIN_KEY), &[], "");
    let wrong = switch.http("GET", "/admin/latency", Some(WRONG_KEY), &[], "");
    let merchant = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body(&card(7), "ACME0000001"),
    );
    for reply in [&right, &wrong, &merchant] {
        assert_eq!(reply.status, 429, "{}", reply.body);
        assert_eq!(reply.json()["type"], "/problems/locked-out");
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
    }
    assert_eq!(right.body, wrong.body);
    // Open routes stay open.
    assert_eq!(
        switch.http("GET", "/health/ready", None, &[], "").status,
        200
    );

    // After the period the address is let in again.
    let wait = Duration::from_millis(2_100).saturating_sub(locked_at.elapsed());
    std::thread::sleep(wait);
    assert_eq!(
        switch
            .http("GET", "/admin/latency", Some(ADMIN_KEY), &[], "")
            .status,
        200
    );
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_http_refusals_total{reason=\"bad_key\"}"
        ),
        3
    );
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_http_refusals_total{reason=\"locked_out\"}"
        ),
        3
    );
    assert_eq!(metric(&switch.metrics(), "switch_http_lockouts_total"), 1);
}

#[test]
fn a_flooded_merchant_is_refused_and_the_other_is_not_slowed() {
    // BISTRO00001: 5 a second, 5 at once; ACME0000001: no rate limit.
    let limited = config("").replace(
        "allowed_mccs = [\"5812\", \"5814\"]\n",
        "allowed_mccs = [\"5812\", \"5814\"]\nrate_per_second = 5\nrate_burst = 5\n",
    );
    assert!(limited.contains("rate_burst = 5"));
    let switch = TestSwitch::start_with_env(&limited, &[]);
    let http = switch.http;
    let iso = switch.iso;
    let started = Stopwatch::start();

    // The flood: BISTRO over HTTP from 4 threads and over ISO 8583 on one
    // connection with every request in flight at once.
    let http_flood: Vec<_> = (0..4u64)
        .map(|thread| {
            std::thread::spawn(move || {
                let mut replies = Vec::new();
                for n in 0..15u64 {
                    let reply = http_request(
                        http,
                        "POST",
                        "/v1/authorizations",
                        Some(BISTRO_KEY),
                        &[],
                        &body(&card(10_000 + thread * 100 + n), "BISTRO00001"),
                    );
                    replies.push(reply);
                }
                replies
            })
        })
        .collect();
    let iso_flood = std::thread::spawn(move || {
        let mut client = IsoClient::connect(iso);
        let count = 30;
        for n in 0..count {
            let mut message = authorization(&card(20_000 + n), 100);
            message.set(42, "BISTRO00001    ").set(18, "5812");
            client.send(&message);
        }
        (0..count)
            .map(|_| code(&client.receive().unwrap()).to_owned())
            .collect::<Vec<_>>()
    });

    // Meanwhile ACME is answered, every request approved and promptly.
    let mut slowest = Duration::ZERO;
    for n in 0..20u64 {
        let asked = Stopwatch::start();
        let reply = switch.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[],
            &body(&card(30_000 + n), "ACME0000001"),
        );
        slowest = slowest.max(asked.elapsed());
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.json()["status"], "approved");
    }
    assert!(
        slowest < Duration::from_secs(2),
        "ACME's slowest answer took {slowest:?}"
    );

    let http_replies: Vec<HttpReply> = http_flood
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    let iso_codes = iso_flood.join().unwrap();
    let elapsed = started.elapsed();
    let elapsed_s = elapsed.as_secs_f64();

    let mut http_refused = 0u64;
    for reply in &http_replies {
        match reply.status {
            429 => {
                http_refused += 1;
                assert_eq!(reply.json()["type"], "/problems/rate-limited");
                assert_eq!(reply.header("retry-after"), Some("1"));
            }
            201 => {}
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    let iso_refused = iso_codes.iter().filter(|code| *code == "91").count();
    let iso_refused = u64::try_from(iso_refused).unwrap();
    let answered = u64::try_from(http_replies.len() + iso_codes.len()).unwrap();
    let admitted = answered - http_refused - iso_refused;
    assert!(http_refused > 0, "HTTP: none refused");
    assert!(iso_refused > 0, "ISO: none refused");
    // One bucket for both ingresses: the burst plus the rate, no more.
    // 5 + ceil(5 a second * elapsed) + 1, counted in whole nanoseconds.
    let refilled = (5 * elapsed.as_nanos()).div_ceil(1_000_000_000);
    let allowed = 5 + u64::try_from(refilled).unwrap() + 1;
    assert!(
        admitted <= allowed,
        "{admitted} admitted in {elapsed_s:.2} s, at most {allowed}"
    );
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_http_refusals_total{reason=\"rate_limited\"}"
        ),
        http_refused
    );
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_rate_limited_total{channel=\"iso\"}"
        ),
        iso_refused
    );
}

/// A card number typed into a URL path, by a client with a wrong key or by
/// staff, reaches the audit log (its file and `GET /admin/audit`) only
/// masked as a PAN is shown, Luhn-valid or not.
#[test]
fn a_pan_in_a_path_reaches_the_audit_log_only_masked() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, &config(""));
    // Luhn-valid, then not.
    let (guessed, typed) = ("4111111111111111", "5105105105105101");
    let wrong = switch.http(
        "GET",
        &format!("/v1/transactions/{guessed}"),
        Some(WRONG_KEY),
        &[],
        "",
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let staff = switch.http(
        "GET",
        &format!("/v1/transactions/{typed}"),
        Some(OPERATOR_KEY),
        &[],
        "",
    );
    assert_eq!(staff.status, 404, "{}", staff.body);
    let expected = [
        ("auth.failure", "GET /v1/transactions/411111******1111"),
        ("access.allowed", "GET /v1/transactions/510510******5101"),
    ];
    let waiting = Stopwatch::start();
    let served = loop {
        let audit = switch.http("GET", "/admin/audit?limit=50", Some(ROOT_KEY), &[], "");
        assert_eq!(audit.status, 200, "{}", audit.body);
        let entries = audit.json()["entries"].as_array().unwrap().clone();
        let recorded = |(event, _): &(&str, &str)| {
            entries.iter().any(|e| {
                e["event"] == *event
                    && e["resource"]
                        .as_str()
                        .unwrap()
                        .starts_with("GET /v1/transactions/")
            })
        };
        if expected.iter().all(recorded) {
            break audit.body;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "{}",
            audit.body
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(switch.stop().success());
    let log = std::fs::read_to_string(data_dir.join("audit.log")).unwrap();
    for (place, text) in [("GET /admin/audit", &served), ("audit.log", &log)] {
        for pan in [guessed, typed] {
            assert!(!text.contains(pan), "{place} holds {pan}:\n{text}");
        }
        for (event, resource) in expected {
            assert!(
                text.contains(resource),
                "{place} has no {event} on {resource}:\n{text}"
            );
        }
    }
    // Masking happens before the entry is hashed: the chain still verifies.
    let (status, stdout, _) = audit_verify(&data_dir.join("audit.log"));
    assert_eq!(status, 0, "{stdout}");
}

fn audit_verify(file: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["audit", "verify", "--file"])
        .arg(file)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_audit_log_records_who_did_what_and_verify_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = config("[security]\nlockout_failures = 2\nlockout_ms = 600000");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, &config);
    let created = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body(&card(1), "ACME0000001"),
    );
    assert_eq!(created.status, 201);
    assert_eq!(
        switch
            .http("GET", "/admin/latency", Some(ADMIN_KEY), &[], "")
            .status,
        200
    );
    assert_eq!(
        switch
            .http("GET", "/admin/audit", Some(OPERATOR_KEY), &[], "")
            .status,
        403
    );
    // The admin reads the newest entries (what the writer has synced).
    let waiting = Stopwatch::start();
    loop {
        let audit = switch.http("GET", "/admin/audit?limit=50", Some(ROOT_KEY), &[], "");
        assert_eq!(audit.status, 200, "{}", audit.body);
        let entries = audit.json()["entries"].as_array().unwrap().clone();
        if entries
            .iter()
            .any(|entry| entry["event"] == "access.denied")
        {
            assert_eq!(entries[0]["seq"], 1);
            assert_eq!(entries[0]["event"], "config.load");
            assert!(entries.iter().any(|e| e["event"] == "switch.start"));
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "{}",
            audit.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..2 {
        assert_eq!(
            switch
                .http("GET", "/metrics", Some(WRONG_KEY), &[], "")
                .status,
            401
        );
    }
    assert_eq!(
        switch
            .http("GET", "/metrics", Some(ADMIN_KEY), &[], "")
            .status,
        429
    );
    assert!(switch.stop().success());

    let log_path = data_dir.join("audit.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |event: &str, actor: &str| {
        entries
            .iter()
            .find(|e| e["event"] == event && e["actor"] == actor)
            .unwrap_or_else(|| panic!("no {event} by {actor} in\n{log}"))
            .clone()
    };
    find("config.load", "switch");
    find("switch.start", "switch");
    let success = find("auth.success", "merchant:ACME0000001");
    assert_eq!(success["resource"], "POST /v1/authorizations");
    assert!(
        success["origin"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(
        find("access.allowed", "admin:admin")["resource"],
        "GET /admin/latency"
    );
    assert_eq!(find("access.allowed", "admin:root")["outcome"], "allowed");
    assert_eq!(find("access.denied", "operator:ops")["outcome"], "denied");
    assert_eq!(find("auth.failure", "unknown")["outcome"], "bad_key");
    assert_eq!(find("auth.lockout", "unknown")["outcome"], "locked_out");
    let stop = find("switch.stop", "switch");
    assert_eq!(stop["seq"], entries.len(), "stop is the last entry");
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"], i + 1);
        let time = entry["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }
    for secret in [
        ACME_KEY,
        ADMIN_KEY,
        ROOT_KEY,
        OPERATOR_KEY,
        WRONG_KEY,
        &card(1),
    ] {
        assert!(!log.contains(secret), "{secret} in the audit log");
    }

    let (status, stdout, _) = audit_verify(&log_path);
    assert_eq!(status, 0, "{stdout}");
    assert!(
        stdout.starts_with(&format!("OK: {} entries", entries.len())),
        "{stdout}"
    );

    // Tampering, each on its own copy, is named with its line.
    let lines: Vec<&str> = log.lines().collect();
    let tampered = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        audit_verify(&path)
    };
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let success_line = entries
        .iter()
        .position(|e| e["event"] == "auth.success")
        .unwrap();

    let mut edited = owned.clone();
    edited[success_line] = edited[success_line].replace("ACME0000001", "ACME0000002");
    let (status, _, stderr) = tampered("edited.log", &edited);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("line {}:", success_line + 1)) && stderr.contains("edited"),
        "{stderr}"
    );

    let mut one_byte = owned.clone();
    let mut bytes = one_byte[2].clone().into_bytes();
    let at = bytes.iter().position(|&b| b == b'T').unwrap();
    bytes[at] = b'X';
    one_byte[2] = String::from_utf8(bytes).unwrap();
    let (status, _, stderr) = tampered("byte.log", &one_byte);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("line 3:"), "{stderr}");

    let mut deleted = owned.clone();
    deleted.remove(1);
    let (status, _, stderr) = tampered("deleted.log", &deleted);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("line 2:") && stderr.contains("deleted"),
        "{stderr}"
    );

    let mut swapped = owned.clone();
    swapped.swap(2, 3);
    let (status, _, stderr) = tampered("swapped.log", &swapped);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("line 3:") && stderr.contains("reordered"),
        "{stderr}"
    );

    // A restart continues the chain from the last entry.
    let switch = TestSwitch::start_in(dir.path(), &data_dir, &config);
    assert!(switch.stop().success());
    let (status, stdout, stderr) = audit_verify(&log_path);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("OK: {} entries", entries.len() + 3)),
        "config.load, switch.start, switch.stop again: {stdout}"
    );
}
