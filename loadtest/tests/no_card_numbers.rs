//! A perf engineer's reports are shared widely, so they carry no card
//! number: after a run against `loadtest issuer` with every output asked
//! for (`--report`, `--hlog`, `--ack-log`, `--plot`, the table on stdout,
//! the progress on stderr), none of the PANs the run sent (valid ones and
//! the deliberately invalid ones) is in any of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, loadtest, n};
use loadtest::workload::{AmountDistribution, Mix, Workload};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_pan_reaches_any_output_of_a_run() {
    let issuer = Server::start(&["issuer"]);
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (report, hlog, acks, plot) = (
        out("run.json"),
        out("run.hlog"),
        out("acks.txt"),
        out("run.svg"),
    );
    let cards = 40;
    let seed = 77;
    let output = loadtest(&[
        "iso",
        "--target",
        &issuer.address,
        "--rate",
        "400",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--connections",
        "2",
        "--cards",
        &cards.to_string(),
        "--seed",
        &seed.to_string(),
        "--invalid-cards",
        "0.2",
        "--mix",
        "0100=80,0200=20",
        "--report",
        &report,
        "--hlog",
        &hlog,
        "--ack-log",
        &acks,
        "--plot",
        &plot,
        "--progress",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(n(&report_json["all"], "received") > 300, "{report_json}");
    let ack_lines = std::fs::read_to_string(&acks).unwrap();
    assert!(ack_lines.lines().count() > 100, "approvals were logged");

    // The PANs the run sent: the same seed gives the same cards.
    let workload = Workload::new(
        seed,
        cards,
        0.0,
        AmountDistribution::Fixed(100),
        Mix::default(),
        &["ACME0000001".to_owned()],
        0.2,
        840,
        "5411",
    )
    .unwrap();
    let mut pans = Vec::new();
    for card in 0..cards {
        for invalid in [false, true] {
            pans.push(workload.pan(card, invalid));
        }
    }

    let mut outputs: Vec<(String, Vec<u8>)> = vec![
        ("stdout".to_owned(), output.stdout.clone()),
        ("stderr".to_owned(), output.stderr.clone()),
    ];
    for path in [&report, &hlog, &acks, &plot] {
        outputs.push((path.clone(), std::fs::read(path).unwrap()));
    }
    for (place, bytes) in &outputs {
        for pan in &pans {
            assert!(
                !contains(bytes, pan),
                "a PAN of the run ({}...) is in {place}",
                String::from_utf8_lossy(&pan[..6])
            );
        }
    }
}
