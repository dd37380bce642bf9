//! The leak scan: sentinel card data pushed through both ingresses of a
//! switch, in approved, declined, failing and malformed requests; then the
//! switch is restarted on the same state, replays velocity from its journal
//! and answers retransmissions and idempotent replays from it. Afterwards
//! the sentinels are looked for everywhere they could have landed: the logs
//! (stderr) of both runs, every file of the switch's directory (the audit
//! log, and on the embedded journal its SQLite files), every answer (HTTP
//! bodies and headers, the ops and admin endpoints and the admin page
//! included; ISO 8583 answers as their wire bytes) and, in fleet mode, a
//! `pg_dump` of the database and every key and value in Redis. Only tokens,
//! BINs and last fours may be found.
//!
//! Two switches are scanned the same way: a single node on the default
//! embedded journal (SQLite), and a fleet node (journal and vault in a real
//! PostgreSQL, velocity and duplicate keys in a real Redis). The fleet one
//! needs `scripts/test-env` (DATABASE_URL, REDIS_URL); without it that test
//! prints one line and returns, unless CI or SWITCH_REQUIRE_DATABASES is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../storage/tests/common/leak.rs"]
#[allow(dead_code, unreachable_pub)]
mod leak;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::scan::{holds_bare_number, shows_cvv};
use common::*;
use leak::{Needle, contains, hex, needles};
use protocol::{Message, Mti, Pan, Spec};

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

/// Where the switch under scan keeps its state.
enum Backend {
    /// The default: one node, its journal and vault in SQLite in its data
    /// directory.
    Embedded,
    /// A fleet node: journal and vault in PostgreSQL, velocity and
    /// duplicate keys in Redis.
    Fleet { database: String, redis: String },
}

impl Backend {
    /// The switch in `dir` (its configuration) with its data directory
    /// `dir/data`; started again the same way, it finds the same state.
    fn start(&self, dir: &Path) -> TestSwitch {
        let data_dir = dir.join("data");
        match self {
            Backend::Embedded => TestSwitch::start_in(dir, &data_dir, CONFIG),
            Backend::Fleet { redis, .. } => {
                let config = CONFIG.replace(
                    "[iso]",
                    "[storage]\nbackend = \"postgres\"\nwriter_connections = 2\n\n\
                     [fleet]\non_redis_down = \"decline\"\ntimeout_ms = 500\n\n[iso]",
                );
                TestSwitch::start_in_with_env(dir, &data_dir, &config, &[("REDIS_URL", redis)])
            }
        }
    }

    /// What the backend holds outside the switch's directory: a `pg_dump`
    /// of the database and every key and value in Redis, for a fleet node.
    /// `bin` is the BIN of an approval, to show the dump is of the
    /// switch's database.
    fn stores(&self, bin: &str) -> Vec<Place> {
        let Backend::Fleet { database, redis } = self else {
            return Vec::new();
        };
        // The database as an operator would dump it.
        let pg_dump = std::env::var("SWITCH_PG_BIN")
            .map(|bin| format!("{bin}/pg_dump"))
            .unwrap_or_else(|_| "pg_dump".to_owned());
        let dump = std::process::Command::new(&pg_dump)
            .arg("--dbname")
            .arg(database)
            .output()
            .unwrap_or_else(|e| {
                panic!("{pg_dump} cannot run ({e}); scripts/test-env sets SWITCH_PG_BIN")
            });
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(
            contains(&dump.stdout, bin.as_bytes()),
            "the dump holds the HTTP approval's BIN, so it is the switch's database"
        );

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
            let value: Option<Vec<u8>> =
                redis::cmd("DUMP").arg(key).query(&mut connection).unwrap();
            redis_bytes.extend(value.unwrap_or_default());
            redis_bytes.push(b'\n');
        }
        vec![
            Place {
                what: "pg_dump".to_owned(),
                bytes: dump.stdout,
                text: true,
            },
            Place {
                what: "Redis".to_owned(),
                bytes: redis_bytes,
                text: false,
            },
        ]
    }
}

/// Somewhere sentinels must not be found. Text (logs, answers, dumps) is
/// also searched for the CVV as a bare number, which random bytes would
/// hold by chance.
struct Place {
    what: String,
    bytes: Vec<u8>,
    text: bool,
}

/// One answer the switch gave, and to what.
struct Pushed {
    what: &'static str,
    answer: Vec<u8>,
}

impl Pushed {
    /// An ISO 8583 answer as the acquirer received it (its wire bytes) and
    /// as a test failure prints it.
    fn iso(what: &'static str, reply: &Message) -> Pushed {
        let mut answer = Vec::new();
        reply
            .encode_frame(&Spec::iso87().unwrap(), &mut answer)
            .unwrap();
        answer.extend_from_slice(format!("\n{reply:?}").as_bytes());
        Pushed { what, answer }
    }

    fn http(what: &'static str, answer: String) -> Pushed {
        assert!(answer.starts_with("HTTP/1.1 "), "{what}: {answer}");
        Pushed {
            what,
            answer: answer.into_bytes(),
        }
    }
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
    post_with(path, key, "", body)
}

/// A POST with `headers` (whole lines, each ending in CRLF) added.
fn post_with(path: &str, key: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `GET /v1/transactions/{id}` with `key`.
fn get_transaction(id: &str, key: &str) -> String {
    format!(
        "GET /v1/transactions/{id} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\n\r\n"
    )
}

fn json_body(pan: &str, expiry: &str) -> String {
    format!(
        r#"{{"pan":"{pan}","expiry":"{expiry}","amount":1500,"currency":"USD","merchant_id":"ACME0000001","terminal_id":"WEB00001","cvv":"{CVV}"}}"#
    )
}

/// The body of a raw HTTP answer.
fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// What the first run sent that the restarted switch is asked again.
struct FirstRun {
    /// The ISO approval (track 2 and a PIN block aboard) and its answer.
    approved: Message,
    approved_reply: Message,
    /// The reversal of that approval.
    reversal: Message,
    /// The HTTP approval with its idempotency key, and its answer's body.
    http_approval: String,
    http_approval_body: String,
    wrong_check_digit: String,
}

/// Pushes every sentinel through `switch`, keeping each answer.
fn push_sentinels(switch: &TestSwitch, pans: &[String], pushed: &mut Vec<Pushed>) -> FirstRun {
    let mut acquirer = switch.iso();

    // ISO 8583: an approval carrying track 2 and a PIN block, then its
    // reversal; an expired card; a bad amount (30); a failed Luhn check
    // (14); a PAN in a free-text field; a blocked BIN.
    let mut approved = authorization(&pans[0], 1200);
    approved
        .set(35, format!("{}=3012101{TRACK2_DISCRETIONARY}", pans[0]))
        .set(52, PIN_BLOCK.as_slice());
    let approved_reply = acquirer.exchange(&approved);
    assert_eq!(code(&approved_reply), "00", "{approved_reply:?}");
    pushed.push(Pushed::iso("ISO approval", &approved_reply));
    let reversal = reversal_of(&approved, Mti::REVERSAL_REQUEST);
    let reply = acquirer.exchange(&reversal);
    assert_eq!(code(&reply), "00");
    pushed.push(Pushed::iso("ISO reversal", &reply));

    let mut expired = authorization(&pans[1], 900);
    expired.set(14, "1901");
    let reply = acquirer.exchange(&expired);
    assert_eq!(code(&reply), "54");
    pushed.push(Pushed::iso("ISO expired card", &reply));

    let mut bad_currency = authorization(&pans[2], 100);
    bad_currency.set(49, "8X0");
    let reply = acquirer.exchange(&bad_currency);
    assert_eq!(code(&reply), "30");
    pushed.push(Pushed::iso("ISO format error", &reply));
    // A field the codec itself refuses (DE3 with a letter) after a PAN.
    let mut frame = vec![0x00, 36];
    frame.extend_from_slice(b"0100");
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(format!("16{}00A000", pans[2]).as_bytes());
    acquirer.send_raw(&frame);
    let reply = acquirer.receive().unwrap();
    assert_eq!(code(&reply), "30");
    pushed.push(Pushed::iso("ISO undecodable field", &reply));

    let wrong_check_digit = {
        let mut digits = pans[3].clone().into_bytes();
        let last = digits.last_mut().unwrap();
        *last = if *last == b'9' { b'0' } else { *last + 1 };
        String::from_utf8(digits).unwrap()
    };
    let reply = acquirer.exchange(&authorization(&wrong_check_digit, 100));
    assert_eq!(code(&reply), "14");
    pushed.push(Pushed::iso("ISO wrong check digit", &reply));

    let mut in_free_text = authorization(&pans[5], 100);
    in_free_text.set(48, format!("NOTE {}", pans[4]));
    let reply = acquirer.exchange(&in_free_text);
    pushed.push(Pushed::iso("ISO PAN in free text", &reply));

    let mut blocked = authorization(&with_check_digit("40005012345678"), 100);
    blocked.set(35, format!("4000501234567=3012101{TRACK2_DISCRETIONARY}"));
    let reply = acquirer.exchange(&blocked);
    pushed.push(Pushed::iso("ISO blocked BIN", &reply));

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

    // JSON/HTTP: an approval with a CVV (and an idempotency key that holds
    // a PAN, replayed after the restart); an expired card; a PAN in a field
    // the API does not have; a body that is not JSON; a PAN as the API key;
    // a PAN in the path, with a merchant's key, a wrong key and an admin's.
    let idempotency_key = format!(
        "Idempotency-Key: {}-{}\r\n",
        pans[4],
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let http_approval = post_with(
        "/v1/authorizations",
        ACME_KEY,
        &idempotency_key,
        &json_body(&pans[7], "3012"),
    );
    let answer = raw_http(switch, &http_approval);
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    let http_approval_body = body_of(&answer).to_owned();
    pushed.push(Pushed::http("HTTP approval", answer));
    for (what, request) in [
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
        ("HTTP PAN in the path", get_transaction(&pans[9], ACME_KEY)),
        (
            "HTTP PAN in the path, wrong key",
            get_transaction(&pans[9], "not-a-key-of-this-switch"),
        ),
        (
            "HTTP PAN in the path, admin key",
            get_transaction(&pans[10], ADMIN_KEY),
        ),
    ] {
        pushed.push(Pushed::http(what, raw_http(switch, &request)));
    }
    read_ops_pages(switch, pushed);
    FirstRun {
        approved,
        approved_reply,
        reversal,
        http_approval,
        http_approval_body,
        wrong_check_digit,
    }
}

/// Asks the restarted `switch` what the first run decided: the ISO
/// approval and its reversal retransmitted, a new authorization of the
/// approval's card (its velocity replayed from the journal), the HTTP
/// approval replayed by its idempotency key and read back.
fn push_again(switch: &TestSwitch, first: &FirstRun, pans: &[String], pushed: &mut Vec<Pushed>) {
    let mut acquirer = switch.iso();
    let again = acquirer.exchange(&first.approved);
    assert_eq!(code(&again), "00", "{again:?}");
    assert_eq!(
        again.get(38),
        first.approved_reply.get(38),
        "the same auth code after the restart"
    );
    pushed.push(Pushed::iso("ISO approval retransmitted", &again));
    let mut repeat = first.reversal.clone();
    repeat.set_mti(Mti::REVERSAL_REQUEST_REPEAT);
    let reply = acquirer.exchange(&repeat);
    assert_eq!(code(&reply), "00");
    pushed.push(Pushed::iso("ISO reversal repeated", &reply));
    let reply = acquirer.exchange(&authorization(&pans[0], 100));
    assert_eq!(code(&reply), "00", "{reply:?}");
    pushed.push(Pushed::iso("ISO approval after the restart", &reply));

    let answer = raw_http(switch, &first.http_approval);
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{answer}"
    );
    assert_eq!(
        body_of(&answer),
        first.http_approval_body,
        "the stored answer"
    );
    pushed.push(Pushed::http("HTTP approval replayed", answer));
    let approval: serde_json::Value = serde_json::from_str(&first.http_approval_body).unwrap();
    let id = approval["id"].as_str().unwrap();
    let answer = raw_http(
        switch,
        &format!(
            "GET /v1/transactions/{id} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n\
             Authorization: Bearer {ACME_KEY}\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    pushed.push(Pushed::http("HTTP approval read back", answer));
    read_ops_pages(switch, pushed);
}

/// What ops read.
fn read_ops_pages(switch: &TestSwitch, pushed: &mut Vec<Pushed>) {
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
        let answer = raw_http(switch, &request);
        assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer}");
        pushed.push(Pushed::http(what, answer));
    }
}

/// Stops `switch` (SIGTERM, a clean exit) and returns its logs.
fn stop(switch: TestSwitch) -> String {
    let logs = switch.logs.clone();
    assert!(switch.stop().success());
    let logs = logs.lock().unwrap().clone();
    assert!(logs.contains("listening"), "the logs were captured");
    logs
}

/// The approvals the switch replayed into velocity at its start, from its
/// "listening" log line.
fn replayed(logs: &str) -> u64 {
    let line = logs
        .lines()
        .find(|line| line.contains("\"listening\""))
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    json["fields"]["replayed"].as_u64().unwrap()
}

/// The whole scan against one switch on `backend`.
fn scan(backend: &Backend) {
    // The directory outlives both runs: its files are scanned after the
    // second clean stop.
    let dir = tempfile::tempdir().unwrap();
    let pans = sentinel_pans();
    let mut pushed: Vec<Pushed> = Vec::new();
    let switch = backend.start(dir.path());
    let first = push_sentinels(&switch, &pans, &mut pushed);
    let first_logs = stop(switch);

    let restarted = backend.start(dir.path());
    push_again(&restarted, &first, &pans, &mut pushed);
    let restart_logs = stop(restarted);
    assert!(
        replayed(&restart_logs) > 0,
        "the restart replayed the first run's approvals"
    );

    // What must not be found: every PAN (ASCII, BCD, its hidden digits),
    // the wrong-check-digit PAN, track 2's discretionary data, the PIN
    // block (raw and as hex), and the CVV: as a CVV is shown (a string of
    // its own, or a number after a cvv key) anywhere, and in text also as
    // a number on its own (four digits occur inside longer numbers, hashes
    // and random bytes by chance).
    let mut all: Vec<Needle> = pans
        .iter()
        .flat_map(|digits| needles(&Pan::parse(digits.as_bytes()).unwrap()))
        .collect();
    all.push(Needle {
        what: "the PAN with a wrong check digit".to_owned(),
        bytes: first.wrong_check_digit.clone().into_bytes(),
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

    // The needles are right: they are in what the acquirer and the web
    // client sent.
    let mut sent = Vec::new();
    first
        .approved
        .encode_frame(&Spec::iso87().unwrap(), &mut sent)
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
    let http_sent = first.http_approval.as_bytes();
    assert!(shows_cvv(http_sent, CVV) && holds_bare_number(http_sent, CVV.as_bytes()));

    let mut places = vec![
        Place {
            what: "the logs".to_owned(),
            bytes: first_logs.into_bytes(),
            text: true,
        },
        Place {
            what: "the logs after the restart".to_owned(),
            bytes: restart_logs.into_bytes(),
            text: true,
        },
    ];
    for p in pushed {
        places.push(Place {
            what: format!("the answer to {}", p.what),
            bytes: p.answer,
            text: true,
        });
    }
    // The switch's directory: its configuration, the audit log, and on the
    // embedded journal the segment log's files (segments, index files,
    // snapshots). The audit log is text: it is
    // scanned as text too.
    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|(path, bytes)| path.ends_with("data/audit.log") && !bytes.is_empty()),
        "the audit log was written and is scanned"
    );
    let bin = &pans[7][..6];
    if matches!(backend, Backend::Embedded) {
        assert!(
            files.iter().any(|(path, bytes)| path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(".seg"))
                && contains(bytes, bin.as_bytes())),
            "the segment log holds the HTTP approval's BIN, so it is scanned"
        );
    }
    for (path, bytes) in files {
        let text = path.extension().is_some_and(|e| e == "log" || e == "toml");
        places.push(Place {
            what: path.display().to_string(),
            bytes,
            text,
        });
    }
    places.extend(backend.stores(bin));

    for place in &places {
        for needle in &all {
            assert!(
                !contains(&place.bytes, &needle.bytes),
                "{} found in {}",
                needle.what,
                place.what
            );
            // Text shows bytes as hex (pg_dump's bytea, a log's debug
            // print), and so might a journal column: whole values are
            // looked for that way everywhere.
            if needle.whole {
                assert!(
                    !contains(&place.bytes, &hex(&needle.bytes)),
                    "{} found in hex in {}",
                    needle.what,
                    place.what
                );
            }
        }
        assert!(
            !shows_cvv(&place.bytes, CVV),
            "the CVV found in {}",
            place.what
        );
        if place.text {
            assert!(
                !holds_bare_number(&place.bytes, CVV.as_bytes()),
                "the CVV found in {}",
                place.what
            );
        }
    }
}

#[test]
fn no_card_data_reaches_logs_files_answers_the_database_or_redis() {
    let Some((database, redis)) = database_and_redis_urls() else {
        return;
    };
    scan(&Backend::Fleet { database, redis });
}

#[test]
fn no_card_data_leaks_from_a_single_node_on_the_embedded_journal_or_its_restart() {
    scan(&Backend::Embedded);
}
