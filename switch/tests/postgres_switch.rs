//! The switch on its production backend: the journal and vault in a real
//! PostgreSQL 15 that `scripts/test-env` starts (DATABASE_URL). Without it
//! these tests fail under CI or SWITCH_REQUIRE_DATABASES, and otherwise
//! print one line and return, so `cargo test` works on a laptop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::*;

fn database_url() -> Option<String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Some(url);
    }
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("CI") || set("SWITCH_REQUIRE_DATABASES") {
        panic!("DATABASE_URL is not set: run under scripts/test-env");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped: DATABASE_URL not set (run under scripts/test-env)"
    );
    None
}

fn postgres_config() -> String {
    // The URL comes from DATABASE_URL, which the switch reads like --database-url.
    CONFIG.replace(
        "[iso]",
        "[storage]\nbackend = \"postgres\"\nwriter_connections = 2\n\n[iso]",
    )
}

#[test]
fn authorizations_are_journaled_in_postgres_and_survive_a_restart() {
    let Some(_url) = database_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config();
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("unused"), &config);
    assert!(
        switch.logs.lock().unwrap().contains("Postgres"),
        "started on PostgreSQL"
    );

    // A card of its own, so runs against one database do not share velocity.
    let pan = format!(
        "4100{:011}",
        std::process::id() as u64 * 7 % 100_000_000_000
    );
    let pan = with_check_digit(&pan);
    let mut acquirer = switch.iso();
    let first = authorization(&pan, 100);
    let first_reply = acquirer.exchange(&first);
    assert_eq!(code(&first_reply), "00");
    for _ in 0..4 {
        assert_eq!(code(&acquirer.exchange(&authorization(&pan, 100))), "00");
    }
    assert_eq!(code(&acquirer.exchange(&authorization(&pan, 100))), "65");

    let body = r#"{"pan":"5555555555554444","expiry":"3012","amount":700,"currency":"USD","merchant_id":"ACME0000001","terminal_id":"WEB00001"}"#;
    let created = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &[("Idempotency-Key", &format!("pg-{}", std::process::id()))],
        body,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let read = switch.http(
        "GET",
        &format!("/v1/transactions/{id}"),
        Some(ACME_KEY),
        &[],
        "",
    );
    assert_eq!(read.json()["status"], "approved");
    assert_eq!(
        switch.http("GET", "/health/ready", None, &[], "").status,
        200
    );
    drop(acquirer);
    assert!(switch.stop().success());

    let restarted = TestSwitch::start_in(dir.path(), &dir.path().join("unused"), &config);
    let mut acquirer = restarted.iso();
    let again = acquirer.exchange(&first);
    assert_eq!(
        again.get(38),
        first_reply.get(38),
        "a retransmission after the restart, from PostgreSQL"
    );
    assert_eq!(
        code(&acquirer.exchange(&authorization(&pan, 100))),
        "65",
        "velocity replayed from PostgreSQL"
    );
    let read = restarted.http(
        "GET",
        &format!("/v1/transactions/{id}"),
        Some(ACME_KEY),
        &[],
        "",
    );
    assert_eq!(read.status, 200);
}

#[test]
fn a_postgres_backend_without_a_url_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switch.toml");
    std::fs::write(&file, postgres_config()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage.database_url"), "{stderr}");
}
