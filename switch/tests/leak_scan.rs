//! The leak scan: sentinel card data pushed through both ingresses of a
//! switch in fleet mode (journal and vault in a real PostgreSQL, velocity
//! and duplicate keys in a real Redis), in approved, declined, failing and
//! malformed requests, then looked for everywhere it could have landed:
//! the switch's logs (stderr), every file of its data directory (the audit
//! log included), every HTTP answer (bodies and headers, the ops and admin
//! endpoints and the admin page included), a `pg_dump` of the database, and every key and value in
//! Redis. Only tokens, BINs and last fours may be found.
//!
//! Needs `scripts/test-env` (DATABASE_URL, REDIS_URL); without it the test
//! prints one line and returns, unless CI or SWITCH_REQUIRE_DATABASES is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../storage/tests/common/leak.rs"]
#[allow(dead_code, unreachable_pub)]
mod leak;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::scan::holds_number;
use common::*;
use leak::{Needle, contains, hex, needles};
use protocol::{Mti, Pan};

/// Sentinel PANs made for this run: distinctive hidden digits, a BIN per
/// network, and a run-dependent part so two runs against one Redis never
/// share a card.
fn sentinel_pans() -> Vec<String> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000;
    [
        "45398617", "45398627", "51057731", "51057741", "22230394", "45398637", "45398647",
        "51057751", "51057761", "45398667", "37146205", "45398677",
    ]
    .iter()
    .enumerate()
    .map(|(n, bin)| {
        let length = if bin.starts_with('3') { 15 } else { 16 };
        let middle = format!("{:03}{}", run, n % 10);
        let body: String = format!("{bin}{middle}9876543210")
            .chars()
            .take(length - 1)
            .collect();
        with_check_digit(&body)
    })
    .collect()
}

const TRACK2_DISCRETIONARY: &str = "48215907";
const PIN_BLOCK: [u8; 8] = [0x9C, 0x3A, 0x7E, 0x51, 0xD2, 0x08, 0x6B, 0xF4];
const CVV: &str = "7391";

/// One approved, declined or refused request and what it carried.
struct Pushed {
    what: &'static str,
    answer: String,
}

fn fleet_node(dir: &std::path::Path, redis: &str) -> TestSwitch {
    let config = CONFIG.replace(
        "[iso]",
        "[storage]\nbackend = \"postgres\"\nwriter_connections = 2\n\n\
         [fleet]\non_redis_down = \"decline\"\ntimeout_ms = 500\n\n[iso]",
    );
    TestSwitch::start_in_with_env(dir, &dir.join("data"), &config, &[("REDIS_URL", redis)])
}

/// A raw HTTP exchange, keeping everything the switch sent back.
fn raw_http(switch: &TestSwitch, request: &str) -> String {
    let mut stream = TcpStream::connect(switch.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn post(path: &str, key: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn json_body(pan: &str, expiry: &str) -> String {
    format!(
        r#"{{"pan":"{pan}","expiry":"{expiry}","amount":1500,"currency":"USD","merchant_id":"ACME0000001","terminal_id":"WEB00001","cvv":"{CVV}"}}"#
    )
}

#[test]
fn no_card_data_reaches_logs_files_answers_the_database_or_redis() {
    let Some((database, redis)) = database_and_redis_urls() else {
        return;
    };
    // The directory outlives the switch: its files are scanned after a
    // clean stop.
    let dir = tempfile::tempdir().unwrap();
    let switch = fleet_node(dir.path(), &redis);
    let pans = sentinel_pans();
    let mut pushed: Vec<Pushed> = Vec::new();
    let mut acquirer = switch.iso();

    // ISO 8583: an approval carrying track 2 and a PIN block, then its
    // reversal; an expired card; a bad amount (30); a failed Luhn check
    // (14); a PAN in a free-text field; a blocked BIN.
    let mut approved = authorization(&pans[0], 1200);
    approved
        .set(35, format!("{}=3012101{TRACK2_DISCRETIONARY}", pans[0]))
        .set(52, PIN_BLOCK.as_slice());
    let reply = acquirer.exchange(&approved);
    assert_eq!(code(&reply), "00", "{reply:?}");
    pushed.push(Pushed {
        what: "ISO approval",
        answer: format!("{reply:?}"),
    });
    let reply = acquirer.exchange(&reversal_of(&approved, Mti::REVERSAL_REQUEST));
    assert_eq!(code(&reply), "00");

    let mut expired = authorization(&pans[1], 900);
    expired.set(14, "1901");
    assert_eq!(code(&acquirer.exchange(&expired)), "54");

    let mut bad_currency = authorization(&pans[2], 100);
    bad_currency.set(49, "8X0");
    let reply = acquirer.exchange(&bad_currency);
    assert_eq!(code(&reply), "30");
    pushed.push(Pushed {
        what: "ISO format error",
        answer: format!("{reply:?}"),
    });
    // A field the codec itself refuses (DE3 with a letter) after a PAN.
    let mut frame = vec![0x00, 36];
    frame.extend_from_slice(b"0100");
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(format!("16{}00A000", pans[2]).as_bytes());
    acquirer.send_raw(&frame);
    let reply = acquirer.receive().unwrap();
    assert_eq!(code(&reply), "30");
    pushed.push(Pushed {
        what: "ISO undecodable field",
        answer: format!("{reply:?}"),
    });

    let wrong_check_digit = {
        let mut digits = pans[3].clone().into_bytes();
        let last = digits.last_mut().unwrap();
        *last = if *last == b'9' { b'0' } else { *last + 1 };
        String::from_utf8(digits).unwrap()
    };
    let reply = acquirer.exchange(&authorization(&wrong_check_digit, 100));
    assert_eq!(code(&reply), "14");

    let mut in_free_text = authorization(&pans[5], 100);
    in_free_text.set(48, format!("NOTE {}", pans[4]));
    let _ = acquirer.exchange(&in_free_text);

    let mut blocked = authorization(&with_check_digit("40005012345678"), 100);
    blocked.set(35, format!("4000501234567=3012101{TRACK2_DISCRETIONARY}"));
    let _ = acquirer.exchange(&blocked);

    // A frame that frames but whose MTI is not one, with a PAN in it; then
    // a stream that cannot be framed at all, again with a PAN in it. Each
    // costs only its own connection at most.
    let mut garbage = switch.iso();
    let payload = format!("ZZZZ{}", pans[6]);
    let mut frame = u16::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(payload.as_bytes());
    garbage.send_raw(&frame);
    let mut unframeable = switch.iso();
    unframeable.send_raw(format!("\u{ff}\u{ff}{}", pans[6]).as_bytes());
    std::thread::sleep(Duration::from_millis(200));

    // JSON/HTTP: an approval with a CVV; an expired card; a PAN in a field
    // the API does not have; a body that is not JSON; a PAN as the API key;
    // a PAN in the path.
    for (what, request) in [
        (
            "HTTP approval",
            post("/v1/authorizations", ACME_KEY, &json_body(&pans[7], "3012")),
        ),
        (
            "HTTP decline",
            post("/v1/authorizations", ACME_KEY, &json_body(&pans[8], "1901")),
        ),
        (
            "HTTP unknown field",
            post(
                "/v1/authorizations",
                ACME_KEY,
                &json_body(&pans[9], "3012").replace("\"pan\"", "\"card_number\""),
            ),
        ),
        (
            "HTTP broken JSON",
            post(
                "/v1/authorizations",
                ACME_KEY,
                &format!(r#"{{"pan":"{}","expiry":3012,"#, pans[10]),
            ),
        ),
        (
            "HTTP PAN as the key",
            post(
                "/v1/authorizations",
                &pans[11],
                &json_body(&pans[11], "3012"),
            ),
        ),
        (
            "HTTP PAN in the path",
            format!(
                "GET /v1/transactions/{} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n\
                 Authorization: Bearer {ACME_KEY}\r\n\r\n",
                pans[9]
            ),
        ),
    ] {
        let answer = raw_http(&switch, &request);
        assert!(answer.starts_with("HTTP/1.1 "), "{what}: {answer}");
        pushed.push(Pushed { what, answer });
    }
    assert!(
        pushed[3].answer.starts_with("HTTP/1.1 20"),
        "{}",
        pushed[3].answer
    );

    // What ops read.
    for (what, path, key) in [
        ("/metrics", "/metrics", Some(ADMIN_KEY)),
        ("/admin/latency", "/admin/latency", Some(ADMIN_KEY)),
        ("/admin/audit", "/admin/audit?limit=1000", Some(ADMIN_KEY)),
        ("/admin/vault", "/admin/vault", Some(ADMIN_KEY)),
        ("/admin", "/admin", None),
        ("/health/ready", "/health/ready", None),
    ] {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n");
        if let Some(key) = key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        request.push_str("\r\n");
        let answer = raw_http(&switch, &request);
        assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer}");
        pushed.push(Pushed { what, answer });
    }
    drop(acquirer);

    let logs = switch.logs.clone();
    assert!(switch.stop().success());
    let logs = logs.lock().unwrap().clone();
    assert!(logs.contains("listening"), "the logs were captured");

    // What must not be found: every PAN (ASCII, BCD, its hidden digits),
    // the wrong-check-digit PAN, track 2's discretionary data, the PIN
    // block (raw and as hex), and the CVV (in text only, as a number on its
    // own: four digits occur inside longer numbers by chance).
    let mut all: Vec<Needle> = pans
        .iter()
        .flat_map(|digits| needles(&Pan::parse(digits.as_bytes()).unwrap()))
        .collect();
    all.push(Needle {
        what: "the PAN with a wrong check digit".to_owned(),
        bytes: wrong_check_digit.clone().into_bytes(),
        whole: true,
    });
    all.push(Needle {
        what: "track 2 discretionary data".to_owned(),
        bytes: TRACK2_DISCRETIONARY.as_bytes().to_vec(),
        whole: true,
    });
    all.push(Needle {
        what: "the PIN block".to_owned(),
        bytes: PIN_BLOCK.to_vec(),
        whole: true,
    });
    let pin_hex_lower = hex(&PIN_BLOCK);
    let pin_hex_upper = pin_hex_lower.to_ascii_uppercase();
    for (what, bytes) in [
        ("the PIN block in hex", pin_hex_lower),
        ("the PIN block in HEX", pin_hex_upper),
    ] {
        all.push(Needle {
            what: what.to_owned(),
            bytes,
            whole: true,
        });
    }

    // The needles are right: they are in what the acquirer sent.
    let mut sent = Vec::new();
    approved
        .encode_frame(&protocol::Spec::iso87().unwrap(), &mut sent)
        .unwrap();
    // (iso87 carries the PAN as ASCII; the BCD needle is for binary files.)
    for needle in needles(&Pan::parse(pans[0].as_bytes()).unwrap())
        .iter()
        .filter(|n| !n.what.ends_with("as BCD"))
    {
        assert!(
            contains(&sent, &needle.bytes),
            "{} in the request",
            needle.what
        );
    }
    assert!(contains(&sent, TRACK2_DISCRETIONARY.as_bytes()));
    assert!(contains(&sent, &PIN_BLOCK));

    let mut places: Vec<(String, Vec<u8>, bool)> =
        vec![("the logs".to_owned(), logs.into_bytes(), true)];
    for p in &pushed {
        places.push((
            format!("the answer to {}", p.what),
            p.answer.clone().into_bytes(),
            true,
        ));
    }
    // The data directory (the audit log; with PostgreSQL nothing else) and
    // everything else the switch was given a place for. The audit log is
    // text: it is scanned as text too.
    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|(path, bytes)| path.ends_with("data/audit.log") && !bytes.is_empty()),
        "the audit log was written and is scanned"
    );
    for (path, bytes) in files {
        let text = path.extension().is_some_and(|e| e == "log" || e == "toml");
        places.push((path.display().to_string(), bytes, text));
    }

    // The database as an operator would dump it.
    let pg_dump = std::env::var("SWITCH_PG_BIN")
        .map(|bin| format!("{bin}/pg_dump"))
        .unwrap_or_else(|_| "pg_dump".to_owned());
    let dump = std::process::Command::new(&pg_dump)
        .arg("--dbname")
        .arg(&database)
        .output()
        .unwrap_or_else(|e| {
            panic!("{pg_dump} cannot run ({e}); scripts/test-env sets SWITCH_PG_BIN")
        });
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let bin = &pans[7][..6];
    assert!(
        contains(&dump.stdout, bin.as_bytes()),
        "the dump holds the HTTP approval's BIN, so it is the switch's database"
    );
    places.push(("pg_dump".to_owned(), dump.stdout, true));

    // Every key and value in Redis.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    assert!(
        !keys.is_empty(),
        "the fleet wrote velocity and request keys"
    );
    let mut redis_bytes = Vec::new();
    for key in &keys {
        redis_bytes.extend_from_slice(key);
        redis_bytes.push(b'\n');
        let value: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query(&mut connection).unwrap();
        redis_bytes.extend(value.unwrap_or_default());
        redis_bytes.push(b'\n');
    }
    places.push(("Redis".to_owned(), redis_bytes, false));

    for (place, bytes, text) in &places {
        for needle in &all {
            assert!(
                !contains(bytes, &needle.bytes),
                "{} found in {place}",
                needle.what
            );
            // Text shows bytes as hex (pg_dump's bytea, a log's debug
            // print): whole values are looked for that way too.
            if *text && needle.whole {
                assert!(
                    !contains(bytes, &hex(&needle.bytes)),
                    "{} found in hex in {place}",
                    needle.what
                );
            }
        }
        if *text {
            assert!(
                !holds_number(bytes, CVV.as_bytes()),
                "the CVV found in {place}"
            );
        }
    }
}
