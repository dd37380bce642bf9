//! `--tls` against `loadtest echo --tls-cert`: a run over TLS with a client
//! certificate counts every response; a run without the client certificate
//! the server asks for, or against a CA that did not sign the server, stops
//! with one line and a non-zero exit. The certificates are made here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{Server, assert_counts_add_up, load_report, loadtest, n};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA, a server certificate for `localhost` and a client certificate, as
/// PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(dir: &Path) -> Pki {
    let ca_issuer = ca("loadtest test CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca_issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "acquirer-test");
    let client = client_params.signed_by(&client_key, &ca_issuer).unwrap();
    let other = ca("another CA");
    Pki {
        ca: write(dir, "ca.pem", &ca_issuer.pem()),
        server_cert: write(dir, "server.pem", &server.pem()),
        server_key: write(dir, "server.key", &server_key.serialize_pem()),
        client_cert: write(dir, "client.pem", &client.pem()),
        client_key: write(dir, "client.key", &client_key.serialize_pem()),
        other_ca: write(dir, "other-ca.pem", &other.pem()),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_mutual_tls_run_counts_every_response_and_bad_certificates_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = Server::start(&[
        "echo",
        "--tls-cert",
        path(&pki.server_cert),
        "--tls-key",
        path(&pki.server_key),
        "--tls-client-ca",
        path(&pki.ca),
    ]);
    let port = server.address.rsplit_once(':').unwrap().1;
    let target = format!("localhost:{port}");

    let report = load_report(
        dir.path(),
        "tls",
        &[
            "iso",
            "--target",
            &target,
            "--tls",
            "--tls-ca",
            path(&pki.ca),
            "--tls-cert",
            path(&pki.client_cert),
            "--tls-key",
            path(&pki.client_key),
            "--rate",
            "1000",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            "--connections",
            "4",
            "--in-flight",
            "8",
        ],
    );
    let all = &report["all"];
    assert_counts_add_up(all);
    assert_eq!(n(all, "scheduled"), 2000, "{all}");
    assert_eq!(n(all, "received"), 2000, "{all}");
    assert_eq!(n(all, "timeouts") + n(all, "errors") + n(all, "dropped"), 0);

    // Closed loop over TLS too: the sans-I/O session keeps up with a burst.
    let report = load_report(
        dir.path(),
        "tls-max",
        &[
            "iso",
            "--target",
            &target,
            "--tls",
            "--tls-ca",
            path(&pki.ca),
            "--tls-cert",
            path(&pki.client_cert),
            "--tls-key",
            path(&pki.client_key),
            "--rate",
            "max",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--connections",
            "2",
            "--in-flight",
            "64",
        ],
    );
    assert!(n(&report["all"], "received") > 1000, "{}", report["all"]);
    assert_eq!(n(&report["all"], "errors"), 0);

    // The server asks for a client certificate and none is given.
    let no_client_cert = loadtest(&[
        "iso",
        "--target",
        &target,
        "--tls",
        "--tls-ca",
        path(&pki.ca),
        "--rate",
        "10",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--connections",
        "1",
        "--no-progress",
    ]);
    // With TLS 1.3 the client's side of the handshake completes before the
    // server's refusal arrives: the run then loses every connection rather
    // than failing to connect. Either way: one line, a non-zero exit, and
    // no request answered.
    assert!(!no_client_cert.status.success());
    let stderr = String::from_utf8_lossy(&no_client_cert.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect") || stderr.contains("no response to"),
        "{stderr}"
    );

    // The server's certificate is not from the CA the run trusts.
    let untrusted = loadtest(&[
        "iso",
        "--target",
        &target,
        "--tls",
        "--tls-ca",
        path(&pki.other_ca),
        "--rate",
        "10",
        "--duration",
        "1s",
        "--no-progress",
    ]);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // TLS options without --tls are a mistake, said in one line.
    let no_tls = loadtest(&[
        "iso",
        "--target",
        &target,
        "--tls-ca",
        path(&pki.ca),
        "--duration",
        "1s",
    ]);
    assert!(!no_tls.status.success());
    let stderr = String::from_utf8_lossy(&no_tls.stderr);
    assert!(stderr.starts_with("error: --tls:"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
