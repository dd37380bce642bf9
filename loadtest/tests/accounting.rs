//! Rates and counts add up, the `.hlog` parses back to the same count, and
//! the ack log holds one line per approval: against `loadtest echo` and
//! `loadtest issuer` on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, assert_counts_add_up, f, load_report, n};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

#[test]
fn echo_run_reaches_the_offered_rate_and_its_hlog_parses_back() {
    let server = Server::start(&["echo"]);
    let dir = tempfile::tempdir().unwrap();
    let hlog = dir.path().join("run.hlog");
    let report = load_report(
        dir.path(),
        "echo",
        &[
            "iso",
            "--target",
            &server.address,
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--warmup",
            "500ms",
            "--connections",
            "4",
            "--mix",
            "0100=70,0200=20,0400=5,0800=5",
            "--hlog",
            hlog.to_str().unwrap(),
        ],
    );
    let all = &report["all"];
    assert_counts_add_up(all);
    // 3 s at 2000/s, warmup excluded.
    assert_eq!(n(all, "scheduled"), 6000, "{all}");
    assert_eq!(n(all, "timeouts") + n(all, "errors") + n(all, "dropped"), 0);
    let achieved = f(&report, "rate_achieved");
    assert!(
        (achieved - 2000.0).abs() <= 100.0,
        "achieved {achieved}/s against 2000/s offered"
    );
    let mut by_type_sent = 0;
    for mti in ["0100", "0200", "0400", "0800"] {
        let t = &report["by_type"][mti];
        assert_counts_add_up(t);
        by_type_sent += n(t, "sent");
    }
    assert_eq!(by_type_sent, n(all, "sent"));
    assert!(n(&report["by_type"]["0100"], "sent") > n(&report["by_type"]["0200"], "sent"));

    // The interval log: untagged histograms hold every measured response;
    // tagged ones (one per MTI, as the mix has several) add up to the same.
    let bytes = std::fs::read(&hlog).unwrap();
    let mut deserializer = Deserializer::new();
    let (mut untagged, mut tagged, mut intervals) = (0u64, 0u64, 0);
    for entry in IntervalLogIterator::new(&bytes) {
        let LogEntry::Interval(interval) = entry.unwrap() else {
            continue;
        };
        let encoded = base64_decode(interval.encoded_histogram());
        let histogram: hdrhistogram::Histogram<u64> =
            deserializer.deserialize(&mut encoded.as_slice()).unwrap();
        match interval.tag() {
            None => {
                untagged += histogram.len();
                intervals += 1;
            }
            Some(_) => tagged += histogram.len(),
        }
    }
    assert_eq!(untagged, n(all, "received"), "hlog count");
    assert_eq!(tagged, untagged);
    assert!(intervals >= 3, "one histogram per second: {intervals}");
    assert_eq!(
        report["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["count"].as_u64().unwrap())
            .sum::<u64>(),
        n(all, "received")
    );
}

#[test]
fn issuer_approvals_are_acked_and_silence_times_out() {
    let server = Server::start(&["issuer", "--decline-rate", "0.3", "--silence-rate", "0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.txt");
    let report = load_report(
        dir.path(),
        "issuer",
        &[
            "iso",
            "--target",
            &server.address,
            "--rate",
            "1000",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--connections",
            "2",
            "--timeout",
            "300ms",
            "--mix",
            "0100=80,0200=20",
            "--ack-log",
            acks.to_str().unwrap(),
        ],
    );
    let all = &report["all"];
    assert_counts_add_up(all);
    let sent = n(all, "sent");
    let timeouts = n(all, "timeouts");
    // One in ten is never answered.
    assert!(
        timeouts > sent / 20 && timeouts < sent / 5,
        "{timeouts} timeouts of {sent}"
    );
    let approved = n(&report["responses"]["00"], "count");
    let declined = n(&report["responses"]["05"], "count");
    assert!(
        declined > approved / 4,
        "{approved} approved, {declined} declined"
    );
    let lines = std::fs::read_to_string(&acks).unwrap();
    assert_eq!(u64::try_from(lines.lines().count()).unwrap(), approved);
    assert_eq!(n(&report, "acks_written"), approved);
    for line in lines.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "STAN terminal RRN auth code: {line}");
        assert_eq!(fields[0].len(), 6);
        assert_eq!(fields[1].len(), 8);
        assert_eq!(fields[2].len(), 12);
        assert_eq!(fields[3].len(), 6);
    }
}

/// Standard base64, as HdrHistogram logs use; the crate's own decoder is
/// private to it.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = u32::try_from(ALPHABET.iter().position(|a| *a == byte).unwrap()).unwrap();
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // The low byte; the bits above it were pushed already.
            out.push((buffer >> bits).to_le_bytes()[0]);
        }
    }
    out
}
