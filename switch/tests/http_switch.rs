//! A web client's view: real HTTP/1.1 to a switch started for the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::scan::shows_cvv;
use common::*;
use switch::clock::Stopwatch;

fn body(pan: &str, amount: u64, merchant: &str) -> String {
    format!(
        r#"{{"pan":"{pan}","expiry":"3012","amount":{amount},"currency":"EUR","merchant_id":"{merchant}","terminal_id":"WEB00001","cvv":"123"}}"#
    )
}

#[test]
fn an_authorization_is_approved_and_can_be_read_back() {
    let switch = TestSwitch::start();
    let reply = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body("4111111111111111", 1250, "ACME0000001"),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["status"], "approved");
    assert_eq!(json["response_code"], "00");
    assert_eq!(json["auth_code"].as_str().unwrap().len(), 6);
    assert_eq!(json["last4"], "1111");
    assert_eq!(json["amount"], 1250);
    assert_eq!(json["currency"], "EUR");
    assert!(json["token"].as_str().unwrap().starts_with("tok_"));
    // The development key's token of this PAN, computed outside the switch
    // (storage/tests/token_pinned.rs): the configured key reaches the vault
    // byte for byte.
    assert_eq!(json["token"], "tok_0622241201382a45912fb22828b3f7db");
    assert!(!reply.body.contains("4111111111111111"));
    let id = json["id"].as_str().unwrap();

    let read = switch.http(
        "GET",
        &format!("/v1/transactions/{id}"),
        Some(ACME_KEY),
        &[],
        "",
    );
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["status"], "approved");
    assert_eq!(read.json()["bin"], "411111");
    // Another merchant cannot tell the transaction exists.
    assert_eq!(
        switch
            .http(
                "GET",
                &format!("/v1/transactions/{id}"),
                Some(BISTRO_KEY),
                &[],
                ""
            )
            .status,
        404
    );
    assert_eq!(
        switch
            .http(
                "GET",
                &format!("/v1/transactions/{id}"),
                Some(ADMIN_KEY),
                &[],
                ""
            )
            .status,
        200
    );
    assert_eq!(
        switch
            .http(
                "GET",
                "/v1/transactions/tx_nonsense",
                Some(ACME_KEY),
                &[],
                ""
            )
            .status,
        404
    );

    // Reversal: reversed once, the same answer again.
    let reversed = switch.http(
        "POST",
        &format!("/v1/authorizations/{id}/reversal"),
        Some(ACME_KEY),
        &[],
        "",
    );
    assert_eq!(reversed.status, 200, "{}", reversed.body);
    assert_eq!(reversed.json()["status"], "reversed");
    let again = switch.http(
        "POST",
        &format!("/v1/authorizations/{id}/reversal"),
        Some(ACME_KEY),
        &[],
        "{}",
    );
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "reversed");
}

#[test]
fn declines_are_answers_not_errors() {
    let switch = TestSwitch::start();
    let reply = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body("4111111111111112", 100, "ACME0000001"),
    );
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["status"], "declined");
    assert_eq!(reply.json()["response_code"], "14");
    assert!(reply.json().get("auth_code").is_none());
}

#[test]
fn keys_act_only_for_their_merchant() {
    let switch = TestSwitch::start();
    let payload = body("4111111111111111", 100, "ACME0000001");
    assert_eq!(
        switch
            .http("POST", "/v1/authorizations", None, &[], &payload)
            .status,
        401
    );
    assert_eq!(
        switch
            .http(
                "POST",
                "/v1/authorizations",
                Some("wrong-key"),
                &[],
                &payload
            )
            .status,
        401
    );
    let reply = switch.http(
        "POST",
        "/v1/authorizations",
        Some(BISTRO_KEY),
        &[],
        &payload,
    );
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.json()["field"], "merchant_id");
    assert_eq!(
        switch
            .http("GET", "/admin/latency", Some(ACME_KEY), &[], "")
            .status,
        403
    );
    let admin = switch.http("GET", "/admin/latency", Some(ADMIN_KEY), &[], "");
    assert_eq!(admin.status, 200);
    assert!(admin.json()["stages"].as_array().unwrap().len() >= 8);
}

#[test]
fn bad_bodies_get_problems_naming_the_field_without_echoing_it() {
    let switch = TestSwitch::start();
    let cases = [
        (
            body("4111111111111111", 100, "ACME0000001").replace("\"3012\"", "\"3013\""),
            "expiry",
        ),
        (
            body("4111111111111111", 100, "ACME0000001").replace("\"EUR\"", "\"EUX\""),
            "currency",
        ),
        (
            body("4111111111111111", 100, "ACME0000001")
                .replace("\"pan\":\"4111111111111111\",", ""),
            "pan",
        ),
        (
            body("4111111111111111", 100, "ACME0000001")
                .replace("\"4111111111111111\"", "4111111111111111"),
            "pan",
        ),
        (
            body("4111111111111111", 100, "ACME0000001").replace("\"cvv\"", "\"track2\""),
            "track2",
        ),
        (
            body("4111111111111111", 100, "ACME0000001").replace("100", "\"4111111111111111\""),
            "amount",
        ),
        ("{not json".to_owned(), ""),
    ];
    for (payload, field) in cases {
        let reply = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &[], &payload);
        assert_eq!(reply.status, 400, "{payload}: {}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        if !field.is_empty() {
            assert_eq!(reply.json()["field"], field, "{payload}");
        }
        assert!(!reply.body.contains("4111111111111111"), "{}", reply.body);
    }
    let oversized = body(&"4".repeat(5000), 100, "ACME0000001");
    assert_eq!(
        switch
            .http(
                "POST",
                "/v1/authorizations",
                Some(ACME_KEY),
                &[],
                &oversized
            )
            .status,
        413
    );
}

#[test]
fn idempotency_keys_replay_and_refuse_reuse() {
    let switch = TestSwitch::start();
    let payload = body("5500005555555559", 700, "ACME0000001");
    let key = [("Idempotency-Key", "order-7781")];
    let first = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &key, &payload);
    assert_eq!(first.status, 201);
    let second = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &key, &payload);
    assert_eq!(second.status, 201);
    assert_eq!(
        second.body, first.body,
        "the stored response, not a new transaction"
    );
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    let other = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &key,
        &body("5500005555555559", 701, "ACME0000001"),
    );
    assert_eq!(other.status, 422);
    assert_eq!(other.json()["field"], "Idempotency-Key");
}

/// Whether any file under `dir` holds `needle`, and which.
fn file_holding(dir: &std::path::Path, needle: &[u8]) -> Option<String> {
    files_under(dir)
        .into_iter()
        .find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path.display().to_string())
}

/// A client may type anything into an `Idempotency-Key`, a card number
/// included, and the body under it holds the PAN, expiry and CVV. The
/// journal keeps neither: not the key as sent, and not an unkeyed SHA-256
/// of the body (whoever reads the table could try every card number
/// against it). Replays work as before.
#[test]
fn an_idempotency_key_and_its_request_are_kept_only_as_keyed_digests() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let key_pan = "4000056655665556";
    let key = [("Idempotency-Key", key_pan)];
    let payload = body("5500005555555559", 700, "ACME0000001");
    let first = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &key, &payload);
    assert_eq!(first.status, 201, "{}", first.body);
    let again = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &key, &payload);
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.body, first.body, "the stored answer");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &key,
        &body("5500005555555559", 701, "ACME0000001"),
    );
    assert_eq!(other.status, 422, "{}", other.body);
    assert!(switch.stop().success());

    // The scan reads the journal: the stored answer is found in it.
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert!(file_holding(&data_dir, id.as_bytes()).is_some(), "{id}");
    assert_eq!(
        file_holding(&data_dir, key_pan.as_bytes()),
        None,
        "the PAN typed as an Idempotency-Key is stored"
    );
    use sha2::Digest as _;
    let unkeyed: [u8; 32] = sha2::Sha256::digest(payload.as_bytes()).into();
    let unkeyed_hex: String = unkeyed.iter().map(|b| format!("{b:02x}")).collect();
    for needle in [
        unkeyed.to_vec(),
        unkeyed_hex.clone().into_bytes(),
        unkeyed_hex.to_ascii_uppercase().into_bytes(),
    ] {
        assert_eq!(
            file_holding(&data_dir, &needle),
            None,
            "an unkeyed SHA-256 of the body (card data) is stored"
        );
    }
}

/// A retry is the same request whatever its spelling: other whitespace,
/// another key order, the currency by number. It gets the stored answer
/// (the same transaction), not a 422.
#[test]
fn a_retry_spelled_differently_gets_the_stored_answer() {
    let switch = TestSwitch::start();
    let key = [("Idempotency-Key", "order-spelling-1")];
    let payload = body("5500005555555559", 800, "ACME0000001");
    let first = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &key, &payload);
    assert_eq!(first.status, 201, "{}", first.body);
    let respelled = r#"{
        "terminal_id": "WEB00001",   "cvv": "123",
        "merchant_id": "ACME0000001", "currency": "978", "amount": 800,
        "expiry": "3012", "pan": "5500005555555559"
    }"#;
    let again = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &key,
        respelled,
    );
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.body, first.body, "the stored answer");
}

#[test]
fn ops_endpoints() {
    let switch = TestSwitch::start();
    assert_eq!(
        switch.http("GET", "/health/live", None, &[], "").status,
        200
    );
    assert_eq!(
        switch.http("GET", "/health/ready", None, &[], "").status,
        200
    );
    switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body("4111111111111111", 100, "ACME0000001"),
    );
    // Metrics are for operators and admins (Prometheus sends a bearer token).
    assert_eq!(switch.http("GET", "/metrics", None, &[], "").status, 401);
    let metrics = switch.http("GET", "/metrics", Some(ADMIN_KEY), &[], "");
    assert_eq!(metrics.status, 200);
    for expected in [
        "switch_stage_seconds_bucket{channel=\"http\",stage=\"total\"",
        "switch_stage_seconds_count{channel=\"http\",stage=\"journal_wait\"} 1",
        "switch_responses_total{channel=\"http\",code=\"00\"} 1",
        "switch_shard_mailbox_depth",
        "switch_shed_total{channel=\"http\",reason=\"admission_limit\"} 0",
        "switch_deadline_missed_total{channel=\"http\"} 0",
        "switch_admission_limit 4096",
        "switch_admission_in_flight 0",
    ] {
        assert!(
            metrics.body.contains(expected),
            "{expected} in\n{}",
            metrics.body
        );
    }
    let page = switch.http("GET", "/admin", None, &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/admin/timeline"));

    // The authorization shows in a closed interval of the timeline within
    // a second or two (intervals close once a second).
    let mut interval = None;
    for _ in 0..50 {
        let timeline = switch.http("GET", "/admin/timeline", Some(ADMIN_KEY), &[], "");
        assert_eq!(timeline.status, 200, "{}", timeline.body);
        let json = timeline.json();
        assert_eq!(json["resolution"], "1s");
        interval = json["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|interval| interval["responses"]["http"]["00"] == 1)
            .cloned();
        if interval.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let interval = interval.expect("an interval with the approval");
    let total = interval["latency_us"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["channel"] == "http" && p["stage"] == "total")
        .unwrap();
    assert_eq!(total["count"], 1);
    assert!(total["p99_us"].as_u64().unwrap() > 0);
    assert_eq!(interval["journal"]["records"], 1, "{interval}");

    let hlog = switch.http(
        "GET",
        "/admin/timeline.hlog?stage=total&channel=http",
        Some(ADMIN_KEY),
        &[],
        "",
    );
    assert_eq!(hlog.status, 200);
    assert!(hlog.body.contains("#[StartTime: "), "{}", hlog.body);
    assert!(hlog.body.contains(
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    ));
    assert!(
        hlog.body.lines().any(|line| line.contains(",HISTF")),
        "{}",
        hlog.body
    );
    let bad = switch.http(
        "GET",
        "/admin/timeline.hlog?stage=queue",
        Some(ADMIN_KEY),
        &[],
        "",
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "stage");
    let bad = switch.http(
        "GET",
        "/admin/timeline?resolution=1h",
        Some(ADMIN_KEY),
        &[],
        "",
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "resolution");
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (broken, expected) in [
        (
            CONFIG.replace("[iso]\n", "[iso]\nlisten_port = 1\n"),
            "unknown field `listen_port`",
        ),
        (
            CONFIG.replace("mode = \"dev\"", "mode = \"production\""),
            "vault.encryption_keys.1: a `dev:` key is refused",
        ),
        (
            CONFIG.replace("amount_max = 1000000", "amount_max = 10000000000000"),
            "rules.amount_max",
        ),
    ] {
        let file = dir.path().join("switch.toml");
        std::fs::write(&file, broken).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains(expected), "{expected} in {stderr}");
    }
}

#[test]
fn a_client_that_sends_no_headers_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "body_bytes_max = 4096",
        "body_bytes_max = 4096\nheader_read_timeout_ms = 300",
    );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);
    let mut stream = std::net::TcpStream::connect(switch.http).unwrap();
    let started = Stopwatch::start();
    read_until_closed(
        &mut stream,
        std::time::Duration::from_secs(5),
        "a client that sent no headers",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "closed by the header read timeout"
    );
    assert_eq!(
        switch.http("GET", "/health/live", None, &[], "").status,
        200,
        "others unaffected"
    );
}

#[test]
fn concurrent_requests_with_one_idempotency_key_make_one_transaction() {
    let switch = TestSwitch::start();
    let payload = body("6011111111111117", 900, "ACME0000001");
    let address = switch.http;
    let replies: Vec<HttpReply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let payload = payload.clone();
                scope.spawn(move || {
                    http_request(
                        address,
                        "POST",
                        "/v1/authorizations",
                        Some(ACME_KEY),
                        &[("Idempotency-Key", "race-1")],
                        &payload,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&HttpReply> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty(), "at least the first one is decided");
    for reply in &replies {
        assert!(
            reply.status == 201 || reply.status == 409,
            "{} {}",
            reply.status,
            reply.body
        );
    }
    let ids: std::collections::HashSet<String> = created
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one key, one transaction: {ids:?}");
}

#[test]
fn both_ingresses_share_one_card_s_limits() {
    let switch = TestSwitch::start();
    let pan = "4242424242424242";
    let mut acquirer = switch.iso();
    for _ in 0..3 {
        assert_eq!(code(&acquirer.exchange(&authorization(pan, 100))), "00");
    }
    for _ in 0..2 {
        let reply = switch.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[],
            &body(pan, 100, "ACME0000001"),
        );
        assert_eq!(reply.json()["response_code"], "00");
    }
    let sixth = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[],
        &body(pan, 100, "ACME0000001"),
    );
    assert_eq!(
        sixth.json()["response_code"],
        "65",
        "five a minute, whichever way they came"
    );
    assert_eq!(code(&acquirer.exchange(&authorization(pan, 100))), "65");
}

/// The CVV the leak test sends. Three digits occur by chance in any log, so
/// it is looked for the ways a CVV would be shown (`scan::shows_cvv`).
const LEAK_CVV: &str = "739";

#[test]
fn card_data_sent_over_http_stays_out_of_the_journal_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let pan = "5105105105105100";
    let good = body(pan, 100, "ACME0000001").replace("\"123\"", &format!("\"{LEAK_CVV}\""));
    // The CVV as a number, not a string: refused, the value never echoed.
    let cvv_as_number = good.replace(&format!("\"{LEAK_CVV}\""), LEAK_CVV);
    // The PAN in the wrong field, and a malformed body: refused, never echoed or logged.
    let misplaced = good.replace("\"WEB00001\"", &format!("\"{pan}\""));
    let broken = format!("{{\"pan\":\"{pan}\",\"expiry\":");
    // The needles are right: they are in what was sent.
    for sent in [&good, &cvv_as_number, &misplaced] {
        assert!(shows_cvv(sent.as_bytes(), LEAK_CVV), "the CVV in {sent}");
        assert!(sent.contains(pan), "the PAN in {sent}");
    }
    assert!(broken.contains(pan));

    let mut answers = Vec::new();
    for (what, payload, status) in [
        ("the approval", &good, 201),
        ("the CVV as a number", &cvv_as_number, 400),
        ("the PAN in the wrong field", &misplaced, 400),
        ("the malformed body", &broken, 400),
    ] {
        let reply = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &[], payload);
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        answers.push((what, reply));
    }
    assert_eq!(answers[1].1.json()["field"], "cvv", "{}", answers[1].1.body);
    let id = answers[0].1.json()["id"].as_str().unwrap().to_owned();
    let read = switch.http(
        "GET",
        &format!("/v1/transactions/{id}"),
        Some(ACME_KEY),
        &[],
        "",
    );
    assert_eq!(read.status, 200, "{}", read.body);
    answers.push(("the transaction read back", read));

    let logs = switch.logs.clone();
    assert!(switch.stop().success());
    let logs = logs.lock().unwrap().clone();
    assert!(logs.contains("listening"), "the logs were captured");

    let mut places: Vec<(String, Vec<u8>)> = vec![("the logs".to_owned(), logs.into_bytes())];
    for (what, reply) in &answers {
        let mut text = format!("{}\r\n", reply.status);
        for (name, value) in &reply.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&reply.body);
        places.push((format!("the answer to {what}"), text.into_bytes()));
    }
    for (path, bytes) in files_under(&data_dir) {
        places.push((path.display().to_string(), bytes));
    }
    for (place, bytes) in &places {
        assert!(
            !bytes.windows(pan.len()).any(|w| w == pan.as_bytes()),
            "{place} holds the PAN"
        );
        assert!(!shows_cvv(bytes, LEAK_CVV), "{place} holds the CVV");
    }
}

/// Sends one request on a kept-alive connection, reads its whole response
/// (head and `Content-Length` body) and returns its status line.
fn status_line_on(stream: &mut std::net::TcpStream, request: &str) -> String {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "answered: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head.lines().next().unwrap().to_owned()
}

#[test]
fn connections_over_http_connections_max_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "body_bytes_max = 4096",
        "body_bytes_max = 4096\nconnections_max = 2",
    );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);
    let live = "GET /health/live HTTP/1.1\r\nHost: switch\r\n\r\n";
    let mut held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(switch.http).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            assert!(status_line_on(&mut stream, live).starts_with("HTTP/1.1 200"));
            stream
        })
        .collect();

    let mut over = std::net::TcpStream::connect(switch.http).unwrap();
    let started = Stopwatch::start();
    let answer = read_until_closed(
        &mut over,
        std::time::Duration::from_secs(5),
        "a connection over http.connections_max (2)",
    );
    assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "closed at once, not by the header read timeout (5 s)"
    );

    // The connections already open still work; the refusal is counted.
    let mut last = held.pop().unwrap();
    let mut first = held.pop().unwrap();
    assert!(status_line_on(&mut first, live).starts_with("HTTP/1.1 200"));
    std::io::Write::write_all(
        &mut last,
        format!("GET /metrics HTTP/1.1\r\nHost: switch\r\nConnection: close\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let page = read_until_closed(&mut last, std::time::Duration::from_secs(5), "/metrics");
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert_eq!(
        metric(&page, "switch_connections_refused_total{listener=\"http\"}"),
        1
    );
}

/// A client that sends requests and never reads the replies is closed once
/// a reply write has made no progress for `http.write_timeout_ms`, counted,
/// and its slot freed; other clients are answered throughout.
#[test]
fn an_http_client_that_sends_and_never_reads_is_closed_at_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "body_bytes_max = 4096",
        "body_bytes_max = 4096\nconnections_max = 2\nwrite_timeout_ms = 300",
    );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);

    // Requests pipelined as fast as the switch reads them, no reply read:
    // its writes to this client stall.
    let mut stuck = connect_with_small_window(switch.http);
    let mut sender = stuck.try_clone().unwrap();
    sender
        .set_write_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let started = Stopwatch::start();
    let sending = std::thread::spawn(move || {
        // Until the switch closes it, or 30 s: a count could run out first
        // on a busy machine, where the switch drains requests as fast as
        // they come while its send buffer is still growing.
        let request = b"GET /health/live HTTP/1.1\r\nHost: switch\r\n\r\n";
        let sending = Stopwatch::start();
        let mut sent = 0u64;
        while sending.elapsed() < std::time::Duration::from_secs(30) {
            if let Err(error) = std::io::Write::write_all(&mut sender, request) {
                return (sent, Some(error.kind()));
            }
            sent += 1;
        }
        (sent, None)
    });

    // Another client is answered meanwhile.
    assert_eq!(
        switch.http("GET", "/health/live", None, &[], "").status,
        200
    );

    let (sent, error) = sending.join().unwrap();
    assert!(
        matches!(
            error,
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        ),
        "the switch closed the client that never reads, after {sent} requests: {error:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "closed within the write timeout once its replies stalled ({:?})",
        started.elapsed()
    );
    read_until_closed(
        &mut stuck,
        std::time::Duration::from_secs(5),
        "the client that never reads",
    );
    // Its slot is free again (connections_max is 2: this and /metrics).
    let mut fresh = std::net::TcpStream::connect(switch.http).unwrap();
    fresh
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let live = "GET /health/live HTTP/1.1\r\nHost: switch\r\n\r\n";
    assert!(status_line_on(&mut fresh, live).starts_with("HTTP/1.1 200"));
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_connections_closed_total{listener=\"http\",reason=\"write_timeout\"}"
        ),
        1
    );
}

/// Approvals of other cards a restarted switch replays before the test
/// card's: enough that replay outlasts the first requests of a client that
/// sends as soon as HTTP answers.
const PAST_APPROVALS: u64 = 20_000;

/// After a restart HTTP answers at once, but no card request is decided
/// until velocity is replayed: a card at its limit in the journal gets 503
/// (problem+json, Retry-After) while `/health/ready` says not ready, then
/// 65, never an approval on empty limits.
#[test]
fn no_card_request_is_decided_before_velocity_replay_ends() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let pan = "4242424242424242";
    let switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    // Five approvals a minute is the card's limit.
    for expected in ["00", "00", "00", "00", "00", "65"] {
        let reply = switch.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[],
            &body(pan, 100, "ACME0000001"),
        );
        assert_eq!(reply.json()["response_code"], expected, "{}", reply.body);
    }
    assert!(switch.stop().success());
    let card = journal::approvals(&data_dir);
    assert_eq!(card.len(), 5);
    let token = card[0].token;
    // Other cards' traffic of the hour before, replayed before the card's.
    let past_from = card[0].at_ms - 3_600_000;
    journal::append(
        &data_dir,
        (0..PAST_APPROVALS)
            .map(|n| journal::approval_of_another_card(past_from + n / 16, n))
            .collect(),
    );

    let restarted = TestSwitch::start_replaying(dir.path(), &data_dir, CONFIG);
    let deadline = Stopwatch::start();
    let mut refused = 0;
    let decided = loop {
        assert!(deadline.elapsed_us() < 60_000_000, "replay never ended");
        // Readiness is read first: a refusal after it means it said not
        // ready, as replay only ever ends.
        let ready = restarted.http("GET", "/health/ready", None, &[], "").status;
        let reply = restarted.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &[],
            &body(pan, 100, "ACME0000001"),
        );
        if reply.status != 503 {
            break reply;
        }
        assert_eq!(ready, 503, "a refusal while /health/ready said ready");
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(reply.header("retry-after"), Some("1"));
        refused += 1;
    };
    // 65: the card's approvals, the last rows of the last page, are back.
    assert_eq!(decided.status, 201, "{}", decided.body);
    assert_eq!(decided.json()["response_code"], "65", "{}", decided.body);
    assert!(refused > 0, "the first request came after replay: no proof");
    assert!(restarted.stop().success());
    let approvals = journal::approvals(&data_dir);
    assert_eq!(
        approvals.iter().filter(|row| row.token == token).count(),
        5,
        "no approval beyond the card's limit was journaled"
    );
}
