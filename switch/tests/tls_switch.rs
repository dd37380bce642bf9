//! Acquirers over mutual TLS and web clients over HTTPS, against a switch
//! started for the test. Every certificate and key is generated here, at
//! test time, in a temporary directory (rcgen): none is committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::journal::{journaled, journaled_under};
use common::*;
use protocol::{Message, Mti, Spec};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use switch::clock::Stopwatch;

/// A certificate authority that can issue.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

fn authority(name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    Authority {
        pem: certificate.pem(),
        der: certificate.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate and its key, as PEM and as rustls takes them.
struct Issued {
    certificate_pem: String,
    key_pem: String,
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn issue(by: &Authority, common_name: &str, names: &[&str], server: bool, expired: bool) -> Issued {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &by.issuer).unwrap();
    Issued {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        certificate: certificate.der().clone(),
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

/// The test's PKI: an acquirer CA, the switch's server certificate, and
/// client certificates good and bad, written under a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Authority,
    north: Issued,
    south: Issued,
    expired: Issued,
    other_ca: Issued,
    unmapped: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority("Test Acquirer CA");
        let server = issue(&ca, "switch.test", &["localhost", "127.0.0.1"], true, false);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.certificate_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        let stranger = authority("Some Other CA");
        Pki {
            north: issue(&ca, "acq-north", &[], false, false),
            south: issue(&ca, "someone", &["south.acquirers.test"], false, false),
            expired: issue(&ca, "acq-north", &[], false, true),
            // The right name, the wrong issuer.
            other_ca: issue(&stranger, "acq-north", &[], false, false),
            unmapped: issue(&ca, "acq-west", &[], false, false),
            ca,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The common test configuration with TLS on both ISO (mutual) and,
    /// if `https`, HTTP.
    fn config(&self, https: bool) -> String {
        let quoted = |name: &str| format!("{:?}", self.path(name).display().to_string());
        let mut config = CONFIG.replace(
            "idle_timeout_ms = 30000\n",
            &format!(
                "idle_timeout_ms = 30000\n\n[iso.tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = {}\nclient_ca = {}\nhandshake_timeout_ms = 1000\n",
                quoted("server.pem"),
                quoted("server.key"),
                quoted("ca.pem"),
            ),
        );
        if https {
            config = config.replace(
                "body_bytes_max = 4096\n",
                &format!(
                    "body_bytes_max = 4096\n\n[http.tls]\ncertificate = {}\nprivate_key = {}\n",
                    quoted("server.pem"),
                    quoted("server.key"),
                ),
            );
        }
        config.push_str(
            "\n[acquirers.north]\ncertificate_subject = \"acq-north\"\nmerchants = [\"ACME0000001\"]\n\
             \n[acquirers.south]\ncertificate_subject = \"south.acquirers.test\"\n",
        );
        config
    }

    fn client_config(
        &self,
        version: &'static rustls::SupportedProtocolVersion,
        identity: Option<&Issued>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der.clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots);
        Arc::new(match identity {
            Some(issued) => builder
                .with_client_auth_cert(vec![issued.certificate.clone()], issued.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects and finishes the client's side of the handshake.
fn connect(address: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(address)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let connection =
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

fn send(stream: &mut impl Write, message: &Message) -> std::io::Result<()> {
    let mut frame = Vec::new();
    message
        .encode_frame(&Spec::iso87().unwrap(), &mut frame)
        .unwrap();
    stream.write_all(&frame)?;
    stream.flush()
}

fn receive(stream: &mut impl Read) -> std::io::Result<Message> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header)?;
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
    stream.read_exact(&mut payload)?;
    Ok(Message::decode(&Spec::iso87().unwrap(), &payload).unwrap())
}

/// One ISO 8583 exchange over a fresh mutual-TLS connection.
fn exchange_over_tls(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    message: &Message,
) -> std::io::Result<Message> {
    let mut stream = connect(address, config)?;
    send(&mut stream, message)?;
    receive(&mut stream)
}

/// A Luhn-valid card of its own per test, so velocity never crosses tests.
fn card(seed: u64) -> String {
    with_check_digit(&format!("52{:013}", 7_000_000_000_000 + seed * 104_729))
}

#[test]
fn acquirers_with_good_certificates_are_answered_over_tls_1_2_and_1_3_and_recorded() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, &pki.config(false));
    let address = switch.iso_tls.expect("the TLS listener is on");

    let mut requests = Vec::new();
    for (seed, version) in [(1, &rustls::version::TLS12), (2, &rustls::version::TLS13)] {
        let request = authorization(&card(seed), 1250);
        let reply = exchange_over_tls(
            address,
            pki.client_config(version, Some(&pki.north)),
            &request,
        )
        .unwrap();
        assert_eq!(reply.mti(), Mti::AUTHORIZATION_RESPONSE);
        assert_eq!(code(&reply), "00", "{version:?}");
        assert_eq!(reply.get(11), request.get(11));
        requests.push(request);
    }
    // The acquirer named by a DNS name, with no merchant list.
    let mut south_request = authorization(&card(3), 700);
    south_request
        .set(42, "BISTRO00001    ")
        .set(18, "5812")
        .set(41, "TERM0009");
    let reply = exchange_over_tls(
        address,
        pki.client_config(&rustls::version::TLS13, Some(&pki.south)),
        &south_request,
    )
    .unwrap();
    assert_eq!(code(&reply), "00");

    // "north" may send only for ACME0000001: another merchant is 58, and
    // never reaches the merchant's actor (BISTRO's own limits would pass it).
    let mut foreign = authorization(&card(4), 700);
    foreign.set(42, "BISTRO00001    ").set(18, "5812");
    let mut stream = connect(
        address,
        pki.client_config(&rustls::version::TLS13, Some(&pki.north)),
    )
    .unwrap();
    send(&mut stream, &foreign).unwrap();
    let reply = receive(&mut stream).unwrap();
    assert_eq!(code(&reply), "58");
    // The connection stays up for the acquirer's own merchants.
    let own = authorization(&card(5), 700);
    send(&mut stream, &own).unwrap();
    assert_eq!(code(&receive(&mut stream).unwrap()), "00");
    drop(stream);

    // Plain TCP still works beside TLS, and records no acquirer.
    let plain = authorization(&card(6), 500);
    assert_eq!(code(&switch.iso().exchange(&plain)), "00");

    let metrics = switch.metrics();
    assert_eq!(
        metric(&metrics, "switch_tls_handshakes_total{listener=\"iso\"}"),
        4
    );
    assert_eq!(
        metric(
            &metrics,
            "switch_responses_total{channel=\"iso\",code=\"58\"}"
        ),
        1
    );
    let logs = switch.logs.lock().unwrap().clone();
    assert!(logs.contains("\"acquirer\":\"north\""), "{logs}");
    assert!(switch.stop().success());

    for request in &requests {
        let record = journaled_under(&data_dir, request, Some("north"));
        assert_eq!(record.acquirer.as_deref(), Some("north"));
        assert!(record.response_code.is_approved());
    }
    assert_eq!(
        journaled_under(&data_dir, &south_request, Some("south"))
            .acquirer
            .as_deref(),
        Some("south")
    );
    let declined = journaled_under(&data_dir, &foreign, Some("north"));
    assert_eq!(declined.acquirer.as_deref(), Some("north"));
    assert_eq!(
        declined.reason,
        Some(protocol::domain::DeclineReason::AcquirerNotPermitted)
    );
    assert_eq!(journaled(&data_dir, &plain).acquirer, None);

    // The acquirer shows in the transaction's JSON (it is not card data).
    let id = journaled_under(&data_dir, &requests[0], Some("north")).id;
    let restarted = TestSwitch::start_in(dir.path(), &data_dir, &pki.config(false));
    let reply = restarted.http(
        "GET",
        &format!("/v1/transactions/{id}"),
        Some(ADMIN_KEY),
        &[],
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["acquirer"], "north", "{}", reply.body);
    drop(restarted);
    for (path, bytes) in files_under(&data_dir) {
        for pan in [card(1), card(4)] {
            assert!(
                !bytes.windows(pan.len()).any(|w| w == pan.as_bytes()),
                "{} holds a PAN",
                path.display()
            );
        }
    }
}

#[test]
fn missing_untrusted_expired_and_unmapped_certificates_are_refused_at_the_handshake() {
    let pki = Pki::new();
    let switch = TestSwitch::start_with_env(&pki.config(false), &[]);
    let address = switch.iso_tls.unwrap();

    let cases: [(&str, Option<&Issued>); 4] = [
        ("no_certificate", None),
        ("untrusted", Some(&pki.other_ca)),
        ("expired", Some(&pki.expired)),
        ("unmapped", Some(&pki.unmapped)),
    ];
    for (reason, identity) in cases {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            // TLS 1.2 fails the client's handshake; under TLS 1.3 the client
            // finishes first and meets the alert on its first read. Either
            // way no reply comes.
            let request = authorization(&card(10), 100);
            let outcome =
                exchange_over_tls(address, pki.client_config(version, identity), &request);
            assert!(
                outcome.is_err(),
                "{reason} over {version:?} was answered: {outcome:?}"
            );
        }
    }

    // A client that connects and never says hello is cut off after the
    // handshake timeout (1 s here), holding no connection slot for longer.
    let mut silent = TcpStream::connect(address).unwrap();
    let started = Stopwatch::start();
    let answer = read_until_closed(&mut silent, Duration::from_secs(10), "a silent client");
    assert!(answer.is_empty(), "the silent client got {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(8));

    // Bad handshakes leave other connections alone.
    let good = authorization(&card(11), 100);
    let reply = exchange_over_tls(
        address,
        pki.client_config(&rustls::version::TLS13, Some(&pki.north)),
        &good,
    )
    .unwrap();
    assert_eq!(code(&reply), "00");

    let metrics = switch.metrics();
    for reason in ["no_certificate", "untrusted", "expired", "unmapped"] {
        assert_eq!(
            metric(
                &metrics,
                &format!(
                    "switch_tls_handshakes_refused_total{{listener=\"iso\",reason=\"{reason}\"}}"
                )
            ),
            2,
            "{reason}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            "switch_tls_handshakes_refused_total{listener=\"iso\",reason=\"timeout\"}"
        ),
        1
    );
    assert_eq!(
        metric(&metrics, "switch_tls_handshakes_total{listener=\"iso\"}"),
        1
    );
    // Not one refused client's byte was taken as ISO 8583: the only message
    // decoded is the good client's.
    assert_eq!(
        metric(
            &metrics,
            "switch_stage_seconds_count{channel=\"iso\",stage=\"decode\"}"
        ),
        1
    );
    assert_eq!(metric(&metrics, "switch_messages_malformed_total"), 0);
    assert_eq!(metric(&metrics, "switch_frames_unframeable_total"), 0);
    let logs = switch.logs.lock().unwrap().clone();
    assert!(
        logs.contains("ISO 8583 TLS handshake refused"),
        "refusals are logged"
    );
    assert!(!logs.contains(&card(10)), "no card data in the logs");

    // The audit log holds every handshake: each refusal with its reason,
    // the acquirer accepted by name (read as an admin would, then the file
    // itself through the verify command).
    let mut handshakes: Vec<serde_json::Value> = Vec::new();
    for _ in 0..50 {
        let reply = switch.http("GET", "/admin/audit?limit=1000", Some(ADMIN_KEY), &[], "");
        assert_eq!(reply.status, 200, "{}", reply.body);
        handshakes = reply.json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["event"] == "tls.handshake")
            .cloned()
            .collect();
        if handshakes.len() >= 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for reason in [
        "no_certificate",
        "untrusted",
        "expired",
        "unmapped",
        "timeout",
    ] {
        assert!(
            handshakes
                .iter()
                .any(|e| e["outcome"] == reason && e["actor"] == "unknown"),
            "{reason} in {handshakes:?}"
        );
    }
    assert!(
        handshakes
            .iter()
            .any(|e| e["outcome"] == "ok" && e["actor"] == "acquirer:north"),
        "{handshakes:?}"
    );
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["audit", "verify", "--file"])
        .arg(switch.data_dir.join("audit.log"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn switch_iso_send_speaks_mutual_tls_to_the_acquirer_listener() {
    let pki = Pki::new();
    let switch = TestSwitch::start_with_env(&pki.config(false), &[]);
    let address = switch.iso_tls.unwrap();
    let dir = pki.dir.path();
    std::fs::write(dir.join("north.pem"), &pki.north.certificate_pem).unwrap();
    std::fs::write(dir.join("north.key"), &pki.north.key_pem).unwrap();
    std::fs::write(dir.join("expired.pem"), &pki.expired.certificate_pem).unwrap();
    std::fs::write(dir.join("expired.key"), &pki.expired.key_pem).unwrap();
    let send = |certificate: &str, key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["iso", "send", "--target"])
            .arg(format!("localhost:{}", address.port()))
            .arg("--tls-ca")
            .arg(dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(dir.join(certificate))
            .arg("--tls-key")
            .arg(dir.join(key))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../config/samples/authorization-0100.json"
            ))
            .output()
            .unwrap()
    };
    let answered = send("north.pem", "north.key");
    let stdout = String::from_utf8_lossy(&answered.stdout);
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["mti"], "0110");
    assert_eq!(answer["fields"]["39"], "00", "{stdout}");
    assert!(!stdout.contains("4111111111111111"), "the PAN is masked");

    // An expired certificate: refused, one line, exit 1.
    let refused = send("expired.pem", "expired.key");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("localhost:"), "{stderr}");
}

/// A ClientHello as a TLS 1.0 or 1.1 client sends it: `version` in the
/// record and the hello, no supported_versions extension, CBC suites only.
/// `signature_algorithms`: also the extension TLS 1.2 introduced, as a
/// client that could speak 1.2 but was capped at 1.1 would send it.
fn legacy_client_hello(version: [u8; 2], signature_algorithms: bool) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version);
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    let suites: [u16; 4] = [0xc013, 0xc009, 0x002f, 0x0035];
    hello.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null only
    if signature_algorithms {
        // extensions (10 bytes): signature_algorithms (13), 2 schemes:
        // rsa_pkcs1_sha256, ecdsa_secp256r1_sha256.
        hello.extend_from_slice(&[0, 10, 0, 13, 0, 6, 0, 4, 4, 1, 4, 3]);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![22]; // handshake
    record.extend_from_slice(&version);
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_1_0_and_1_1_are_refused_with_a_protocol_version_alert() {
    let pki = Pki::new();
    let switch = TestSwitch::start_with_env(&pki.config(false), &[]);
    let address = switch.iso_tls.unwrap();
    for version in [[3, 1], [3, 2]] {
        for signature_algorithms in [true, false] {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .write_all(&legacy_client_hello(version, signature_algorithms))
                .unwrap();
            let case = format!("{version:?}, signature_algorithms {signature_algorithms}");
            let answer = read_until_closed(&mut stream, Duration::from_secs(10), &case);
            assert!(answer.len() >= 7, "{case}: {answer:?}");
            assert_eq!(answer[0], 21, "{case}: an alert record, not a ServerHello");
            assert_eq!(answer.len(), 7, "{case}: the alert alone, then close");
            assert_eq!(answer[5], 2, "{case}: fatal");
            // A hello good enough to reach the version check is told
            // protocol_version; a bare TLS 1.0/1.1 hello lacks the
            // signature_algorithms extension TLS 1.2 requires and is
            // refused one step earlier, with handshake_failure.
            let alert = if signature_algorithms { 70 } else { 40 };
            assert_eq!(answer[6], alert, "{case}");
        }
    }
    let metrics = switch.metrics();
    assert_eq!(
        metric(
            &metrics,
            "switch_tls_handshakes_refused_total{listener=\"iso\",reason=\"protocol_version\"}"
        ),
        4
    );
    assert_eq!(
        metric(
            &metrics,
            "switch_stage_seconds_count{channel=\"iso\",stage=\"decode\"}"
        ),
        0
    );
}

/// One HTTP/1.1 exchange over TLS: the status and the body.
fn https_request(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = connect(address, config).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

#[test]
fn the_json_api_is_served_over_https() {
    let pki = Pki::new();
    let switch = TestSwitch::start_with_env(&pki.config(true), &[]);
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let body = format!(
            r#"{{"pan":"{}","expiry":"3012","amount":1250,"currency":"EUR","merchant_id":"ACME0000001","terminal_id":"WEB00001"}}"#,
            card(20 + u64::from(version.version == rustls::ProtocolVersion::TLSv1_3))
        );
        let (status, reply) = https_request(
            switch.http,
            pki.client_config(version, None),
            "POST",
            "/v1/authorizations",
            Some(ACME_KEY),
            &body,
        );
        assert!(status == 201 || status == 200, "{status}: {reply}");
        let json: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(json["status"], "approved", "{reply}");
        // A JSON request has no acquirer certificate behind it.
        let id = json["id"].as_str().unwrap();
        let (status, stored) = https_request(
            switch.http,
            pki.client_config(version, None),
            "GET",
            &format!("/v1/transactions/{id}"),
            Some(ACME_KEY),
            "",
        );
        assert_eq!(status, 200, "{stored}");
        assert!(!stored.contains("acquirer"), "{stored}");
    }
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let reply = http_request(switch.http, "GET", "/health/live", None, &[], "");
    assert_eq!(reply.status, 0, "{}", reply.body);
    let (status, metrics) = https_request(
        switch.http,
        pki.client_config(&rustls::version::TLS13, None),
        "GET",
        "/metrics",
        Some(ADMIN_KEY),
        "",
    );
    assert_eq!(status, 200);
    assert!(
        metric(&metrics, "switch_tls_handshakes_total{listener=\"http\"}") >= 5,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "switch_tls_handshakes_refused_total{listener=\"http\",reason=\"other\"}"
        ),
        1
    );
}

#[test]
fn tls_files_that_cannot_be_used_are_a_one_line_error_naming_the_key() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            pki.config(false).replace("server.key", "missing.key"),
            "iso.tls.private_key",
        ),
        (
            pki.config(false).replace("ca.pem", "server.key"),
            "iso.tls.client_ca",
        ),
        (
            pki.config(false)
                .replace("[acquirers.north]", "[acquirers.north]\ncolour = \"red\""),
            "unknown field `colour`",
        ),
        (
            pki.config(false).replace(
                "merchants = [\"ACME0000001\"]",
                "merchants = [\"ACME0000001_TOO_LONG\"]",
            ),
            "acquirers.north.merchants",
        ),
    ];
    for (config, expected) in cases {
        let file = dir.path().join("switch.toml");
        std::fs::write(&file, config).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["serve", "--config"])
            .arg(&file)
            .args([
                "--iso-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error = stderr
            .lines()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(error.contains(expected), "{expected}: {error}");
        assert!(error.contains("switch.toml"), "{error}");
        assert!(!error.contains("PRIVATE KEY"), "{error}");
    }
}

#[test]
fn plain_clients_holding_every_plain_slot_leave_the_tls_listener_its_own() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = pki
        .config(false)
        .replace("connections_max = 16", "connections_max = 2")
        .replace(
            "handshake_timeout_ms = 1000\n",
            "handshake_timeout_ms = 1000\nconnections_max = 1\n",
        );
    let switch = TestSwitch::start_in(dir.path(), &dir.path().join("data"), &config);
    let address = switch.iso_tls.expect("the TLS listener is on");

    // Unauthenticated clients take every plain slot and sit idle.
    let mut idle: Vec<IsoClient> = (0..2).map(|_| switch.iso()).collect();
    for client in &mut idle {
        assert_eq!(code(&client.exchange(&network("301"))), "00");
    }
    let mut refused = switch.iso();
    let answer = read_until_closed(
        &mut refused.stream,
        Duration::from_secs(5),
        "a plain connection over iso.connections_max (2)",
    );
    assert!(answer.is_empty(), "{answer:?}");

    // An acquirer still connects over mutual TLS and is answered.
    let mut acquirer = connect(
        address,
        pki.client_config(&rustls::version::TLS13, Some(&pki.north)),
    )
    .expect("the TLS listener has slots of its own");
    send(&mut acquirer, &authorization(&card(20), 500)).unwrap();
    assert_eq!(code(&receive(&mut acquirer).unwrap()), "00");

    // iso.tls.connections_max (1) is the TLS listener's own limit.
    let over = connect(
        address,
        pki.client_config(&rustls::version::TLS13, Some(&pki.north)),
    );
    assert!(
        over.is_err(),
        "a second TLS connection over iso.tls.connections_max is closed"
    );
    let metrics = switch.metrics();
    assert_eq!(
        metric(
            &metrics,
            "switch_connections_refused_total{listener=\"iso\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "switch_connections_refused_total{listener=\"iso_tls\"}"
        ),
        1
    );
    send(&mut acquirer, &network("301")).unwrap();
    assert_eq!(code(&receive(&mut acquirer).unwrap()), "00");
}
