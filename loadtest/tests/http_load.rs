//! `loadtest http` against a small keep-alive HTTP/1.1 server that checks
//! every body with the switch's own JSON types and answers approvals,
//! declines and 503s: requests are valid, pipelined responses are matched
//! in order, and every response is counted under its code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{assert_counts_add_up, load_report, n};

/// Answers requests on one connection in order until it closes.
fn serve_connection(stream: TcpStream, served: Arc<AtomicU64>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut content_length = 0usize;
        let mut authorized = false;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(
            line.starts_with("POST /v1/authorizations HTTP/1.1"),
            "{line}"
        );
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap();
            }
            if name.eq_ignore_ascii_case("authorization") {
                authorized = value.trim() == "Bearer dev-merchant-key-acme";
            }
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body).unwrap();
        let valid = serde_json::from_slice::<protocol::json::AuthorizationRequest>(&body)
            .ok()
            .and_then(|request| request.check().ok())
            .is_some_and(|checked| checked.merchant_id == "ACME0000001");
        let count = served.fetch_add(1, Ordering::Relaxed);
        let (status, reply) = if !authorized || !valid {
            ("400 Bad Request", r#"{"title":"bad request"}"#.to_owned())
        } else if count % 10 == 9 {
            (
                "503 Service Unavailable",
                r#"{"title":"overloaded"}"#.to_owned(),
            )
        } else if count % 4 == 3 {
            (
                "201 Created",
                format!(r#"{{"id":"tx{count}","status":"declined","response_code":"05"}}"#),
            )
        } else {
            (
                "201 Created",
                format!(
                    r#"{{"id":"tx{count}","status":"approved","response_code":"00","auth_code":"A{:05}"}}"#,
                    count % 100_000
                ),
            )
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn http_load_is_valid_pipelined_and_counted_by_code() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || serve_connection(stream, counter));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.txt");
    let url = format!("http://{address}");
    let report = load_report(
        dir.path(),
        "http",
        &[
            "http",
            "--target",
            &url,
            "--rate",
            "800",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--connections",
            "2",
            "--in-flight",
            "8",
            "--ack-log",
            acks.to_str().unwrap(),
        ],
    );
    let all = &report["all"];
    assert_counts_add_up(all);
    assert_eq!(n(all, "sent"), 1600);
    assert_eq!(n(all, "received"), 1600, "{all}");
    assert!(report["responses"]["HTTP 400"].is_null(), "{report}");
    let approved = n(&report["responses"]["00"], "count");
    let declined = n(&report["responses"]["05"], "count");
    let unavailable = n(&report["responses"]["HTTP 503"], "count");
    assert_eq!(approved + declined + unavailable, 1600);
    assert_eq!(unavailable, 160);
    assert_eq!(served.load(Ordering::Relaxed), 1600);
    let lines = std::fs::read_to_string(&acks).unwrap();
    assert_eq!(u64::try_from(lines.lines().count()).unwrap(), approved);
    assert!(lines.lines().all(|l| l.starts_with("- L")), "{lines}");
}
