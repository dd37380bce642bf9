//! `loadtest echo --durable FILE`, the durable echo: every answer leaves
//! only after its request's record is in FILE, and a FILE that cannot be
//! opened stops it before it listens, with one line and exit code 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, loadtest};

/// The frames the records of `journal` hold, in order: each record is a
/// four-byte big-endian length and that many bytes.
fn records(journal: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = journal;
    while !rest.is_empty() {
        let length = usize::try_from(u32::from_be_bytes(rest[..4].try_into().unwrap())).unwrap();
        out.push(rest[4..4 + length].to_vec());
        rest = &rest[4 + length..];
    }
    out
}

/// A frame of the iso87 dialect's framing around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let framing = protocol::Spec::iso87().unwrap().framing();
    let mut out = Vec::new();
    framing.write_header(payload.len(), &mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

#[test]
fn every_answer_arrives_after_its_record_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("d.journal");
    let server = Server::start(&["echo", "--durable", journal.to_str().unwrap()]);
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sent = Vec::new();

    // One at a time: when an answer is read, its record is already there.
    for i in 0..20 {
        let request = frame(format!("0100 request {i:04}").as_bytes());
        stream.write_all(&request).unwrap();
        let mut answer = vec![0; request.len()];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer, request);
        sent.push(request);
        assert_eq!(
            records(&std::fs::read(&journal).unwrap()),
            sent,
            "answer {i}"
        );
    }

    // A burst in one write: all answered, all recorded, in order.
    let burst: Vec<Vec<u8>> = (0..50)
        .map(|i| frame(format!("0200 burst {i:04} {}", "x".repeat(i)).as_bytes()))
        .collect();
    stream.write_all(&burst.concat()).unwrap();
    let mut answers = vec![0; burst.iter().map(Vec::len).sum()];
    stream.read_exact(&mut answers).unwrap();
    assert_eq!(answers, burst.concat());
    sent.extend(burst);
    assert_eq!(records(&std::fs::read(&journal).unwrap()), sent);
}

#[test]
fn a_journal_that_cannot_be_opened_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no-such-dir").join("d.journal");
    let output = loadtest(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--durable",
        bad.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "it listened: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--durable"), "{stderr}");
    assert!(stderr.contains(bad.to_str().unwrap()), "{stderr}");
}
