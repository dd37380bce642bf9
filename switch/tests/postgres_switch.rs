//! The switch on its production backend: the journal and vault in a real
//! PostgreSQL 15 that `scripts/test-env` starts (DATABASE_URL). Without it
//! these tests fail under CI or SWITCH_REQUIRE_DATABASES, and otherwise
//! print one line and return, so `cargo test` works on a laptop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::*;
use switch::clock::Stopwatch;

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
        u64::from(std::process::id()) * 7 % 100_000_000_000
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

/// A TCP relay between the switch and PostgreSQL that the test can cut: the
/// database "goes away" for the switch (every connection dropped, new ones
/// refused) and comes back, while other tests keep using the real server.
struct Relay {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, bytes are held instead of passed on: a database that has
    /// stalled (a disk, a failover) without dropping its connections.
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(upstream: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streams = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accept_down, accept_held, accept_streams) =
            (down.clone(), held.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accept_down.load(Ordering::SeqCst) {
                    continue; // dropped at once: refused
                }
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let mut kept = accept_streams.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let held = accept_held.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(read @ 1..) = from.read(&mut buffer) {
                            while held.load(Ordering::SeqCst) {
                                std::thread::sleep(std::time::Duration::from_millis(5));
                            }
                            if to.write_all(&buffer[..read]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay {
            port,
            down,
            held,
            streams,
        }
    }

    /// Holds every byte in both directions until [`Relay::release`].
    fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_database_going_away_mid_load_loses_nothing_acknowledged() {
    let Some(url) = database_url() else { return };
    let Some(psql) =
        std::env::var_os("SWITCH_PG_BIN").map(|bin| std::path::PathBuf::from(bin).join("psql"))
    else {
        panic!("SWITCH_PG_BIN is not set: run under scripts/test-env");
    };
    // postgres://USER@127.0.0.1:PORT/DB -> the same through the relay.
    let (head, database) = url.rsplit_once('/').unwrap();
    let (prefix, port) = head.rsplit_once(':').unwrap();
    let relay = Relay::start(format!("127.0.0.1:{port}").parse().unwrap());
    let relayed_url = format!("{prefix}:{}/{database}", relay.port);
    let config = postgres_config().replace(
        "writer_connections = 2",
        "writer_connections = 2\nconnect_timeout_ms = 500\nstatement_timeout_ms = 1000",
    );
    let switch = TestSwitch::start_with_env(&config, &[("DATABASE_URL", relayed_url.as_str())]);
    let terminal = format!("P{:07}", std::process::id() % 10_000_000);
    let mut acquirer = switch.iso();

    let started = Stopwatch::start();
    let mut answers: Vec<(String, String, Option<String>)> = Vec::new();
    let mut slowest = std::time::Duration::ZERO;
    let mut cut = false;
    let mut restored = false;
    let mut i = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(9) {
        if !cut && started.elapsed() > std::time::Duration::from_secs(2) {
            relay.cut();
            cut = true;
        }
        if !restored && started.elapsed() > std::time::Duration::from_secs(4) {
            relay.restore();
            restored = true;
        }
        i += 1;
        let pan = with_check_digit(&format!(
            "42{:013}",
            u64::from(std::process::id()) * 100_000 + i
        ));
        let mut request = authorization(&pan, 100);
        request.set(41, terminal.as_str());
        let asked = Stopwatch::start();
        let reply = acquirer.exchange(&request);
        slowest = slowest.max(asked.elapsed());
        answers.push((
            request.get_str(11).unwrap().to_owned(),
            code(&reply).to_owned(),
            reply.get_str(38).map(str::to_owned),
        ));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        slowest < std::time::Duration::from_secs(5),
        "an answer took {slowest:?}: the switch hung"
    );
    let failed = answers.iter().filter(|(_, code, _)| code == "96").count();
    assert!(failed > 0, "the outage showed as 96");
    let last = answers.last().unwrap();
    assert_eq!(
        last.1, "00",
        "approving again after the database came back, without a restart"
    );
    drop(acquirer);
    assert!(switch.stop().success());

    // Every acknowledged approval is in PostgreSQL exactly once. (A request
    // answered 96 may still have been committed, if the commit landed but its
    // reply was lost with the connection: unacknowledged-but-stored is
    // allowed, acknowledged-but-missing is not.)
    let output = std::process::Command::new(psql)
        .args(["-At", "-F", " ", &url, "-c"])
        .arg(format!(
            "SELECT stan, response_code, coalesce(auth_code, '-') FROM transactions WHERE terminal_id = '{terminal}'"
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = String::from_utf8(output.stdout).unwrap();
    let mut stored: std::collections::HashMap<String, Vec<(String, String)>> =
        std::collections::HashMap::new();
    for line in rows.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        stored
            .entry(fields[0].to_owned())
            .or_default()
            .push((fields[1].to_owned(), fields[2].to_owned()));
    }
    for (stan, code, auth_code) in &answers {
        let rows = stored.get(stan).map(Vec::as_slice).unwrap_or_default();
        if code == "00" {
            assert_eq!(
                rows.len(),
                1,
                "STAN {stan} acknowledged once, stored {rows:?}"
            );
            assert_eq!(Some(&rows[0].1), auth_code.as_ref(), "STAN {stan}");
        }
    }
    assert_eq!(
        stored.values().map(Vec::len).sum::<usize>(),
        stored.len(),
        "no STAN stored twice"
    );
}

/// The relayed URL of the test database, through `relay`.
fn relayed(url: &str, relay: &Relay) -> String {
    // postgres://USER@127.0.0.1:PORT/DB -> the same through the relay.
    let (head, database) = url.rsplit_once('/').unwrap();
    let (prefix, _) = head.rsplit_once(':').unwrap();
    format!("{prefix}:{}/{database}", relay.port)
}

fn upstream(url: &str) -> std::net::SocketAddr {
    let (head, _) = url.rsplit_once('/').unwrap();
    let (_, port) = head.rsplit_once(':').unwrap();
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// A web client that gives up on a request while the journal is slow and
/// retries with the same Idempotency-Key gets 409 while the first is still
/// being decided, then the first's stored answer: one transaction, counted
/// once. (Before, the in-flight guard went with the dropped request and the
/// retry was decided again: two approvals for one key.)
#[test]
fn a_retry_after_the_client_gave_up_is_never_a_second_approval() {
    let Some(url) = database_url() else { return };
    let relay = Relay::start(upstream(&url));
    let relayed_url = relayed(&url, &relay);
    let switch = TestSwitch::start_with_env(
        &postgres_config(),
        &[("DATABASE_URL", relayed_url.as_str())],
    );
    let seed = u64::from(std::process::id()) * 7 + 3;
    let pan = with_check_digit(&format!("4100{:011}", seed % 100_000_000_000));
    let payload = format!(
        r#"{{"pan":"{pan}","expiry":"3012","amount":100,"currency":"EUR","merchant_id":"ACME0000001","terminal_id":"WEB00001"}}"#
    );
    let key = format!("give-up-{seed}");
    let headers = [("Idempotency-Key", key.as_str())];

    // The database stalls; the client sends, waits a little, and gives up.
    relay.hold();
    let mut gave_up = std::net::TcpStream::connect(switch.http).unwrap();
    gave_up
        .write_all(
            format!(
                "POST /v1/authorizations HTTP/1.1\r\nHost: switch\r\nAuthorization: Bearer {ACME_KEY}\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
                payload.len()
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(gave_up);
    std::thread::sleep(std::time::Duration::from_millis(100));

    let retry = switch.http(
        "POST",
        "/v1/authorizations",
        Some(ACME_KEY),
        &headers,
        &payload,
    );
    assert_eq!(retry.status, 409, "still being decided: {}", retry.body);
    relay.release();

    // Once the first is answered, a retry gets its stored answer.
    let waited = Stopwatch::start();
    let stored = loop {
        let reply = switch.http(
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &headers,
            &payload,
        );
        if reply.status != 409 {
            break reply;
        }
        assert!(waited.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(stored.status, 201, "{}", stored.body);
    assert_eq!(stored.header("idempotent-replayed"), Some("true"));
    assert_eq!(stored.json()["status"], "approved", "{}", stored.body);

    // Counted once: the card's 5 a minute leave exactly 4 more.
    let codes: Vec<u16> = (0..5)
        .map(|_| {
            switch
                .http("POST", "/v1/authorizations", Some(ACME_KEY), &[], &payload)
                .json()["response_code"]
                .as_str()
                .map_or(0, |code| code.parse().unwrap())
        })
        .collect();
    assert_eq!(codes, [0, 0, 0, 0, 65], "one approval for the key");
}
