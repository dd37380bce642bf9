//! A run in phases against a deadline, over a server that stalls: every
//! phase is counted apart at its own rate, answers the stall held past the
//! deadline are late and not goodput, and the phases add up to the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, assert_counts_add_up, assert_echo_phase, f, load_report, n};

#[test]
fn each_phase_counts_its_goodput_and_its_late_answers() {
    // 300 ms of every second stalled: with a 100 ms deadline about a fifth
    // of each second's answers are late, in every phase.
    let server = Server::start(&["echo", "--stall-every", "1s", "--stall-for", "300ms"]);
    let dir = tempfile::tempdir().unwrap();
    let report = load_report(
        dir.path(),
        "phases",
        &[
            "iso",
            "--target",
            &server.address,
            "--rate",
            "200",
            "--duration",
            "2s",
            "--then",
            "600:2s",
            "--deadline",
            "100ms",
            "--warmup",
            "0s",
            "--connections",
            "4",
            "--in-flight",
            "256",
        ],
    );
    assert_counts_add_up(&report["all"]);
    assert_eq!(f(&report, "duration_s"), 4.0, "{report}");
    let phases = report["phases"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{report}");
    assert_eq!(f(&report, "phases.deadline_ms"), 100.0);
    let mut answered = 0;
    for (phase, (rate, from, to)) in phases.iter().zip([(200.0, 0.0, 2.0), (600.0, 2.0, 4.0)]) {
        assert_echo_phase(phase, rate, from, to);
        assert!(
            n(phase, "late") > 0,
            "the stalls made no answer late: {phase}"
        );
        assert!(f(phase, "goodput") < rate, "{phase}");
        answered += n(phase, "answered");
    }
    // The second phase asked three times the first's rate.
    assert!(
        n(&phases[1], "answered") > 2 * n(&phases[0], "answered"),
        "{report}"
    );
    assert_eq!(answered, n(&report, "all.received"), "{report}");
}
