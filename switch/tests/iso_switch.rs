//! An acquirer's view: raw ISO 8583 frames over TCP to a switch started for
//! the test, on its embedded journal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use protocol::Mti;

const VISA: &str = "4111111111111111";

/// How long the switch may take to close a connection it refuses. Its
/// own timers here are under a second; the rest is slack for a busy machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// Luhn-valid test PANs, one per test, so velocity never crosses tests.
fn card(seed: u64) -> String {
    with_check_digit(&format!("5{:014}", 10_000_000_000_000 + seed * 7919))
}

#[test]
fn network_management_is_answered() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    for code in ["001", "301", "002"] {
        let request = network(code);
        let reply = acquirer.exchange(&request);
        assert_eq!(reply.mti(), Mti::NETWORK_MANAGEMENT_RESPONSE);
        assert_eq!(common::code(&reply), "00", "DE70 {code}");
        assert_eq!(reply.get(11), request.get(11));
        assert_eq!(reply.get(70), request.get(70));
    }
    let reply = acquirer.exchange(&network("999"));
    assert_eq!(common::code(&reply), "12");
}

#[test]
fn authorizations_and_purchases_are_approved_with_echoed_keys() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let request = authorization(VISA, 1250);
    let reply = acquirer.exchange(&request);
    assert_eq!(reply.mti(), Mti::AUTHORIZATION_RESPONSE);
    assert_eq!(common::code(&reply), "00");
    assert_eq!(reply.get(38).unwrap().len(), 6);
    for field in [3, 4, 7, 11, 12, 13, 37, 41, 42, 49] {
        assert_eq!(reply.get(field), request.get(field), "field {field} echoed");
    }
    assert!(!reply.has(2), "the PAN is never echoed");

    let mut purchase = authorization(&card(1), 990);
    purchase.set_mti(Mti::FINANCIAL_REQUEST);
    let reply = acquirer.exchange(&purchase);
    assert_eq!(reply.mti(), Mti::FINANCIAL_RESPONSE);
    assert_eq!(common::code(&reply), "00");
}

#[test]
fn every_rule_and_limit_declines_with_its_code() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let cases: Vec<(&str, protocol::Message)> = vec![
        ("14", authorization("4111111111111112", 100)),
        ("54", {
            let mut m = authorization(&card(2), 100);
            m.set(14, "2001");
            m
        }),
        ("13", authorization(&card(3), 0)),
        ("13", authorization(&card(4), 1_000_001)),
        ("57", authorization("4000001234567899", 100)),
        ("13", {
            // Over BISTRO00001's 20000 a transaction, within the card's limits.
            let mut m = authorization(&card(5), 30_000);
            m.set(42, "BISTRO00001    ").set(18, "5812");
            m
        }),
        ("58", {
            let mut m = authorization(&card(6), 100);
            m.set(42, "BISTRO00001    ");
            m
        }),
        ("03", {
            let mut m = authorization(&card(7), 100);
            m.set(42, "NOSUCHMERCHANT ");
            m
        }),
    ];
    for (expected, request) in cases {
        let reply = acquirer.exchange(&request);
        assert_eq!(common::code(&reply), expected, "{request:?}");
        assert!(!reply.has(38), "a decline carries no auth code");
    }
}

#[test]
fn velocity_is_exhausted_and_given_back_once_by_a_reversal() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let pan = card(10);
    let mut approved = Vec::new();
    for _ in 0..5 {
        let request = authorization(&pan, 100);
        let reply = acquirer.exchange(&request);
        assert_eq!(common::code(&reply), "00");
        approved.push(request);
    }
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100))),
        "65",
        "the sixth in a minute"
    );

    // Reverse one: one approval's worth comes back, once.
    let reversal = reversal_of(&approved[0], Mti::REVERSAL_REQUEST);
    let reply = acquirer.exchange(&reversal);
    assert_eq!(reply.mti(), Mti::REVERSAL_RESPONSE);
    assert_eq!(common::code(&reply), "00");
    let mut repeat = reversal.clone();
    repeat.set_mti(Mti::REVERSAL_REQUEST_REPEAT);
    assert_eq!(
        common::code(&acquirer.exchange(&repeat)),
        "00",
        "a repeated reversal has the same answer"
    );
    let mut advice = reversal_of(&approved[0], Mti::REVERSAL_ADVICE);
    advice.set(39, "68");
    assert_eq!(
        acquirer.exchange(&advice).mti(),
        Mti::REVERSAL_ADVICE_RESPONSE
    );

    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100))),
        "00",
        "room for one more"
    );
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100))),
        "65",
        "but not two"
    );

    // The amount window: 200000 a minute.
    let other = card(11);
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&other, 150_000))),
        "00"
    );
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&other, 60_000))),
        "61"
    );
}

#[test]
fn a_reversal_with_de95_gives_back_only_what_it_takes_off() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let pan = card(12);
    // 200000 a minute: 150000 leaves 50000.
    let original = authorization(&pan, 150_000);
    assert_eq!(common::code(&acquirer.exchange(&original)), "00");

    // DE95 above DE4 cannot be: a format error, nothing given back.
    let mut over = reversal_of(&original, Mti::REVERSAL_REQUEST);
    over.set(95, replacement_amounts(150_001));
    assert_eq!(common::code(&acquirer.exchange(&over)), "30");

    // DE4 is the original's 150000 and DE95 says 100000 of it stands: 50000
    // comes back, not 150000.
    let mut partial = reversal_of(&original, Mti::REVERSAL_REQUEST);
    partial.set(95, replacement_amounts(100_000));
    let reply = acquirer.exchange(&partial);
    assert_eq!(reply.mti(), Mti::REVERSAL_RESPONSE);
    assert_eq!(common::code(&reply), "00");
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100_001))),
        "61",
        "100000 still stands"
    );
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100_000))),
        "00"
    );
}

/// An acquirer that pipelines an 0400 right behind its 0100 on one
/// connection (a POS cancelling at once) gets each original reversed: the
/// reversal is ordered after what came before it on its connection. Before,
/// the reversal's task often ran first, found no original, was acknowledged
/// 00 and journaled with none, and the original was then approved and kept
/// its velocity (about three pairs in four on a two-core machine).
#[test]
fn a_reversal_pipelined_right_behind_its_original_reverses_it() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let pan = card(13);
    for _ in 0..10 {
        let original = authorization(&pan, 100);
        acquirer.send(&original);
        acquirer.send(&reversal_of(&original, Mti::REVERSAL_REQUEST));
        let answers = [acquirer.receive().unwrap(), acquirer.receive().unwrap()];
        assert!(
            answers.iter().all(|a| common::code(a) == "00"),
            "{answers:?}"
        );
    }
    // Every one given back: the card still has its five a minute.
    let codes: Vec<String> = (0..6)
        .map(|_| common::code(&acquirer.exchange(&authorization(&pan, 100))).to_owned())
        .collect();
    assert_eq!(codes, ["00", "00", "00", "00", "00", "65"]);
}

#[test]
fn a_reversal_of_an_unknown_original_is_acknowledged() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let never_sent = authorization(&card(20), 100);
    let reply = acquirer.exchange(&reversal_of(&never_sent, Mti::REVERSAL_ADVICE));
    assert_eq!(reply.mti(), Mti::REVERSAL_ADVICE_RESPONSE);
    assert_eq!(common::code(&reply), "00");
}

#[test]
fn duplicates_get_the_original_answer_and_count_once() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let pan = card(30);
    let request = authorization(&pan, 100);
    let first = acquirer.exchange(&request);
    assert_eq!(common::code(&first), "00");
    let again = acquirer.exchange(&request);
    assert_eq!(
        again.get(38),
        first.get(38),
        "a retransmission gets the same auth code"
    );
    let mut repeat = request.clone();
    repeat.set_mti(Mti::AUTHORIZATION_REQUEST_REPEAT);
    let repeated = acquirer.exchange(&repeat);
    assert_eq!(repeated.mti(), Mti::AUTHORIZATION_RESPONSE);
    assert_eq!(repeated.get(38), first.get(38));
    let mut changed = request.clone();
    changed.set(4, "000000000200");
    assert_eq!(common::code(&acquirer.exchange(&changed)), "94");
    // Counted once: four more fit in the minute's five.
    for _ in 0..4 {
        assert_eq!(
            common::code(&acquirer.exchange(&authorization(&pan, 100))),
            "00"
        );
    }
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100))),
        "65"
    );
}

#[test]
fn many_requests_in_flight_on_one_connection() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let mut sent = HashMap::new();
    for i in 0..20 {
        let request = authorization(&card(100 + i), 100 + i);
        sent.insert(
            request.get_str(11).unwrap().to_owned(),
            request.get_str(4).unwrap().to_owned(),
        );
        acquirer.send(&request);
    }
    for _ in 0..20 {
        let reply = acquirer.receive().unwrap();
        let stan = reply.get_str(11).unwrap();
        assert_eq!(
            sent.remove(stan).as_deref(),
            reply.get_str(4),
            "matched by DE11"
        );
        assert_eq!(common::code(&reply), "00");
    }
    assert!(sent.is_empty());
}

#[test]
fn a_bad_field_gets_30_and_the_connection_stays() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let mut request = authorization(&card(40), 100);
    request.set(49, "8X0");
    let reply = acquirer.exchange(&request);
    assert_eq!(common::code(&reply), "30");
    assert_eq!(reply.get(11), request.get(11));

    // A field that breaks the codec itself: DE3 with a letter.
    let mut frame = vec![0x00, 0x12];
    frame.extend_from_slice(b"0100");
    frame.extend_from_slice(&[0x20, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(b"00A000");
    acquirer.send_raw(&frame);
    assert_eq!(common::code(&acquirer.receive().unwrap()), "30");

    assert_eq!(
        common::code(&acquirer.exchange(&network("301"))),
        "00",
        "still connected"
    );
}

#[test]
fn an_unframeable_stream_closes_only_its_connection() {
    let switch = TestSwitch::start();
    let mut bystander = switch.iso();
    let mut broken = switch.iso();
    broken.send_raw(&[0xFF, 0xFF, 0x00]); // 65535 bytes: over the 8192 maximum
    let rest = read_until_closed(&mut broken.stream, CLOSED_WITHIN, "the unframeable stream");
    assert!(rest.is_empty(), "closed without an answer: {rest:?}");
    assert_eq!(
        common::code(&bystander.exchange(&authorization(&card(50), 100))),
        "00"
    );
}

/// DE42 not in the configuration is 03 (invalid merchant), not 58 (which
/// says the merchant is known but may not do this): counted under 03,
/// journaled with its reason, and 03 again when the JSON API reads it back.
#[test]
fn an_unknown_merchant_is_declined_03_on_the_wire_and_in_the_json_api() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let mut request = authorization(&card(30), 100);
    request.set(42, "NOSUCHMERCHANT ");
    let reply = switch.iso().exchange(&request);
    assert_eq!(common::code(&reply), "03");
    assert!(!reply.has(38), "a decline carries no auth code");
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_responses_total{channel=\"iso\",code=\"03\"}"
        ),
        1
    );
    assert!(switch.stop().success());

    let record = journal::journaled(&data_dir, &request);
    assert_eq!(record.response_code.as_str(), "03");
    assert_eq!(
        record.reason,
        Some(protocol::domain::DeclineReason::UnknownMerchant)
    );
    let restarted = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let read = restarted.http(
        "GET",
        &format!("/v1/transactions/{}", record.id),
        Some(ADMIN_KEY),
        &[],
        "",
    );
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["response_code"], "03");
    assert_eq!(read.json()["status"], "declined");
}

#[test]
fn velocity_survives_a_restart_and_the_journal_holds_no_pan() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let pan = card(60);
    let switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let mut acquirer = switch.iso();
    let first = authorization(&pan, 100);
    let first_reply = acquirer.exchange(&first);
    assert_eq!(common::code(&first_reply), "00");
    for _ in 0..4 {
        assert_eq!(
            common::code(&acquirer.exchange(&authorization(&pan, 100))),
            "00"
        );
    }
    let mut with_track = authorization(&card(61), 100);
    with_track.set(35, format!("{}=30121010000000000", card(61)));
    with_track.set(52, [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    assert_eq!(common::code(&acquirer.exchange(&with_track)), "00");
    drop(acquirer);
    let logs = switch.logs.clone();
    assert!(switch.stop().success(), "a clean exit on SIGTERM");

    let restarted = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
    let mut acquirer = restarted.iso();
    // A retransmission of a request answered before the restart gets the
    // same answer, from the journal, and is not counted again.
    let again = acquirer.exchange(&first);
    assert_eq!(
        again.get(38),
        first_reply.get(38),
        "the same auth code after a restart"
    );
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100))),
        "65",
        "the five approvals before the restart still count"
    );
    drop(acquirer);
    drop(restarted);

    let pin_block = vec![0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    let secrets: Vec<Vec<u8>> = vec![
        pan.clone().into_bytes(),
        card(61).into_bytes(),
        b"30121010000000000".to_vec(),
        pin_block.clone(),
        b"1122334455667788".to_vec(),
    ];
    let logs = logs.lock().unwrap().clone();
    for secret in &secrets {
        let shown = String::from_utf8_lossy(secret).into_owned();
        for (path, bytes) in files_under(&data_dir) {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_slice());
            assert!(!found, "{} holds {shown}", path.display());
        }
        assert!(
            !logs
                .as_bytes()
                .windows(secret.len())
                .any(|w| w == secret.as_slice()),
            "the logs hold {shown}"
        );
    }
}

#[test]
fn connection_limit_idle_timeout_and_frame_maximum_come_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG
        .replace("connections_max = 16", "connections_max = 2")
        .replace(
            "idle_timeout_ms = 30000",
            "idle_timeout_ms = 700\nframe_length_max = 200",
        );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);

    let mut first = switch.iso();
    let mut second = switch.iso();
    assert_eq!(common::code(&first.exchange(&network("301"))), "00");
    assert_eq!(common::code(&second.exchange(&network("301"))), "00");
    let mut third = switch.iso();
    let answer = read_until_closed(
        &mut third.stream,
        CLOSED_WITHIN,
        "the third connection, over iso.connections_max (2)",
    );
    assert!(answer.is_empty(), "refused without an answer: {answer:?}");
    // Refused at the limit, not cut later by the idle timeout.
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_connections_refused_total{listener=\"iso\"}"
        ),
        1
    );

    // A frame over iso.frame_length_max (200) closes that connection. An
    // exchange first restarts its idle timer, so only the frame can close it.
    assert_eq!(common::code(&first.exchange(&network("301"))), "00");
    first.send_raw(&[0x00, 0xC9]);
    let answer = read_until_closed(
        &mut first.stream,
        CLOSED_WITHIN,
        "a connection that sent a 201-byte frame header",
    );
    assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    // Closed for the frame's length, not by the idle timeout.
    assert_eq!(
        metric(&switch.metrics(), "switch_frames_unframeable_total"),
        1,
        "the frame over iso.frame_length_max closed the connection"
    );

    // An idle connection is closed after idle_timeout_ms.
    std::thread::sleep(Duration::from_millis(1200));
    let answer = read_until_closed(&mut second.stream, CLOSED_WITHIN, "an idle connection");
    assert!(answer.is_empty(), "closed without an answer: {answer:?}");

    // Their slots are free again.
    let mut fresh = switch.iso();
    assert_eq!(common::code(&fresh.exchange(&network("301"))), "00");
}

#[test]
fn simultaneous_retransmissions_are_decided_once() {
    let switch = TestSwitch::start();
    let pan = card(70);
    let request = authorization(&pan, 100);
    let mut acquirers: Vec<IsoClient> = (0..4).map(|_| switch.iso()).collect();
    for acquirer in &mut acquirers {
        acquirer.send(&request);
    }
    let auth_codes: std::collections::HashSet<Vec<u8>> = acquirers
        .iter_mut()
        .map(|acquirer| {
            let reply = acquirer.receive().unwrap();
            assert_eq!(common::code(&reply), "00");
            reply.get(38).unwrap().to_vec()
        })
        .collect();
    assert_eq!(auth_codes.len(), 1, "one decision, one auth code");
    let acquirer = &mut acquirers[0];
    for _ in 0..4 {
        assert_eq!(
            common::code(&acquirer.exchange(&authorization(&pan, 100))),
            "00"
        );
    }
    assert_eq!(
        common::code(&acquirer.exchange(&authorization(&pan, 100))),
        "65",
        "counted once"
    );
}

#[test]
fn every_repeat_mti_gets_its_response_type() {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    let mut purchase = authorization(&card(80), 300);
    purchase.set_mti(Mti::FINANCIAL_REQUEST_REPEAT);
    let reply = acquirer.exchange(&purchase);
    assert_eq!(reply.mti(), Mti::FINANCIAL_RESPONSE, "0201 -> 0210");
    assert_eq!(common::code(&reply), "00");
    let mut original = purchase.clone();
    original.set_mti(Mti::FINANCIAL_REQUEST);
    let mut advice = reversal_of(&original, Mti::REVERSAL_ADVICE_REPEAT);
    advice.set(39, "68");
    let reply = acquirer.exchange(&advice);
    assert_eq!(reply.mti(), Mti::REVERSAL_ADVICE_RESPONSE, "0421 -> 0430");
    assert_eq!(common::code(&reply), "00");
    // An MTI outside the contract that still has a response type: 12.
    let mut unknown = authorization(&card(81), 100);
    unknown.set_mti(protocol::Mti::parse(b"0300").unwrap());
    let reply = acquirer.exchange(&unknown);
    assert_eq!(reply.mti().as_str(), "0310");
    assert_eq!(common::code(&reply), "12");
}

#[test]
fn a_client_that_sends_and_never_reads_is_closed_at_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG
        .replace("connections_max = 16", "connections_max = 2")
        .replace(
            "idle_timeout_ms = 30000",
            "idle_timeout_ms = 30000\nwrite_timeout_ms = 300",
        );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);
    let mut other = switch.iso();
    assert_eq!(common::code(&other.exchange(&network("301"))), "00");

    // Authorizations sent as fast as the switch reads them, never an answer
    // read: the switch's writes to this client stall.
    let mut stuck = connect_with_small_window(switch.iso);
    let mut sender = stuck.try_clone().unwrap();
    sender
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = switch::clock::Stopwatch::start();
    let sending = std::thread::spawn(move || {
        let spec = protocol::Spec::iso87().unwrap();
        let pan = card(90);
        let mut frame = Vec::new();
        for sent in 0..200_000u32 {
            frame.clear();
            authorization(&pan, 100)
                .encode_frame(&spec, &mut frame)
                .unwrap();
            if let Err(error) = std::io::Write::write_all(&mut sender, &frame) {
                return (sent, Some(error.kind()));
            }
        }
        (200_000, None)
    });

    // Another acquirer is answered meanwhile.
    assert_eq!(common::code(&other.exchange(&network("301"))), "00");

    let (sent, error) = sending.join().unwrap();
    assert!(
        matches!(
            error,
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        ),
        "the switch closed the connection that never reads, after {sent} requests: {error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed within the write timeout once its answers stalled ({:?})",
        started.elapsed()
    );
    read_until_closed(&mut stuck, CLOSED_WITHIN, "the connection that never reads");
    assert_eq!(
        metric(
            &switch.metrics(),
            "switch_connections_closed_total{listener=\"iso\",reason=\"write_timeout\"}"
        ),
        1
    );

    // The other connection still gets answers, and the stuck one's slot is
    // free again (iso.connections_max is 2).
    assert_eq!(common::code(&other.exchange(&network("301"))), "00");
    let mut fresh = switch.iso();
    assert_eq!(common::code(&fresh.exchange(&network("301"))), "00");

    // Only the socket went: every authorization the switch decided for the
    // closed connection is journaled, whether its answer was written or
    // dropped at the close.
    let metrics = switch.metrics();
    let answered: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("switch_responses_total{channel=\"iso\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let network_exchanges = 4;
    assert_eq!(
        metric(&metrics, "switch_journal_records_total"),
        answered - network_exchanges,
        "{metrics}"
    );
}
