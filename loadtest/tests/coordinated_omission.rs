//! A server that stalls for 200 ms every second must show in an open-loop
//! run's p99: every request that should have gone out during the stall is
//! charged from its intended send time. A closed-loop run over the same
//! server sends nothing while it waits, so only a handful of requests see
//! the stall and its percentiles hide it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, assert_counts_add_up, f, load_report};

#[test]
fn open_loop_percentiles_see_a_stalling_server() {
    let server = Server::start(&["echo", "--stall-every", "1s", "--stall-for", "200ms"]);
    let dir = tempfile::tempdir().unwrap();

    let open = load_report(
        dir.path(),
        "open",
        &[
            "iso",
            "--target",
            &server.address,
            "--rate",
            "500",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--connections",
            "4",
            "--in-flight",
            "64",
        ],
    );
    assert_counts_add_up(&open["all"]);
    let open_p99_us = f(&open, "all.latency_us.p99");
    // About 20% of the requests are due while the server is stalled, and
    // wait up to 200 ms, so p99 sits near 200 ms.
    assert!(
        open_p99_us >= 100_000.0,
        "open-loop p99 {open_p99_us} µs hides the 200 ms stalls"
    );
    assert!(f(&open, "all.latency_us.max") >= 150_000.0, "{open}");

    let closed = load_report(
        dir.path(),
        "closed",
        &[
            "iso",
            "--target",
            &server.address,
            "--rate",
            "max",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--connections",
            "1",
            "--in-flight",
            "1",
        ],
    );
    assert_counts_add_up(&closed["all"]);
    let closed_p90_us = f(&closed, "all.latency_us.p90");
    println!("open-loop p99 {open_p99_us} µs; closed-loop p90 {closed_p90_us} µs");
    // The closed loop sat out each stall with one request: it saw the stall
    // (its max) but its percentiles do not.
    assert!(f(&closed, "all.latency_us.max") >= 100_000.0, "{closed}");
    assert!(closed_p90_us < 50_000.0, "{closed}");
}

/// With one request in flight, nothing can be sent while the server stalls:
/// the requests due meanwhile leave late, all at once, when it answers. They
/// must be charged from when they were due, or the run would report the
/// stall as one slow request (the coordinated omission of closed-loop
/// tools, hidden inside an open-loop schedule).
#[test]
fn requests_held_back_by_a_full_connection_are_charged_from_their_intended_time() {
    let server = Server::start(&["echo", "--stall-every", "1s", "--stall-for", "200ms"]);
    let dir = tempfile::tempdir().unwrap();
    let report = load_report(
        dir.path(),
        "held",
        &[
            "iso",
            "--target",
            &server.address,
            "--rate",
            "200",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--connections",
            "1",
            "--in-flight",
            "1",
        ],
    );
    assert_counts_add_up(&report["all"]);
    let p99_us = f(&report, "all.latency_us.p99");
    assert!(p99_us >= 100_000.0, "p99 {p99_us} µs hides the stalls");
    // The tester itself was held back, and says so.
    assert!(f(&report, "send_lag_us.p99") >= 100_000.0, "{report}");
}
