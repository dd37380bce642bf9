//! A web client's view: real HTTP/1.1 to a switch started for the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

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
    let metrics = switch.http("GET", "/metrics", None, &[], "");
    assert_eq!(metrics.status, 200);
    for expected in [
        "switch_stage_seconds_bucket{channel=\"http\",stage=\"total\"",
        "switch_stage_seconds_count{channel=\"http\",stage=\"journal_wait\"} 1",
        "switch_responses_total{channel=\"http\",code=\"00\"} 1",
        "switch_shard_mailbox_depth",
        "switch_shed_total 0",
    ] {
        assert!(
            metrics.body.contains(expected),
            "{expected} in\n{}",
            metrics.body
        );
    }
    let page = switch.http("GET", "/admin", None, &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/admin/latency"));
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
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "body_bytes_max = 4096",
        "body_bytes_max = 4096\nheader_read_timeout_ms = 300",
    );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);
    let mut stream = std::net::TcpStream::connect(switch.http).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = Vec::new();
    let _ = stream.read_to_end(&mut buffer);
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
