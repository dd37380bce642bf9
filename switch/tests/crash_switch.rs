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

use common::journal::{approvals, journaled};
use common::*;
use protocol::{Message, Spec};

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
