//! `loadtest overload` end to end, short: the peak measured against an echo
//! server that stalls 300 ms of every second, then the three phases at
//! 50%, 3x and 50% of it against a 100 ms deadline, with a stand-in for
//! the switch's `/metrics` whose counters move a known amount per scrape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Server, assert_echo_phase, f, load_report, n};

/// Serves Prometheus text on 127.0.0.1 to the bearer `key`: scrape `k`
/// (from 1) says `switch_shed_total{channel="iso",reason="admission_limit"}`
/// 10k and `{channel="http",...}` 1000k (another channel, not counted),
/// and the admission limit 100; `switch_deadline_missed_total` is not
/// exposed.
fn metrics_server(key: &'static str) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let scrapes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&scrapes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let authorized = request.contains(&format!("Authorization: Bearer {key}\r\n"));
            let response = if request.starts_with("GET /metrics ") && authorized {
                let k = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!(
                    "# TYPE switch_shed_total counter\n\
                     switch_shed_total{{channel=\"iso\",reason=\"admission_limit\"}} {}\n\
                     switch_shed_total{{channel=\"http\",reason=\"admission_limit\"}} {}\n\
                     # TYPE switch_admission_limit gauge\n\
                     switch_admission_limit 100\n",
                    10 * k,
                    1000 * k
                );
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (format!("http://{address}"), scrapes)
}

#[test]
fn the_scenario_runs_from_the_measured_peak_and_reads_the_switch_at_each_boundary() {
    let server = Server::start(&["echo", "--stall-every", "1s", "--stall-for", "300ms"]);
    let (metrics_url, scrapes) = metrics_server("test-key");
    let dir = tempfile::tempdir().unwrap();
    let report = load_report(
        dir.path(),
        "overload",
        &[
            "overload",
            "--target",
            &server.address,
            "--peak-duration",
            "1s",
            "--peak-in-flight",
            "1",
            "--connections",
            "2",
            "--in-flight",
            "64",
            "--calm",
            "1s",
            "--overload",
            "1s",
            "--recover",
            "2s",
            "--deadline",
            "100ms",
            "--timeout",
            "1s",
            "--warmup",
            "0s",
            "--metrics-url",
            &metrics_url,
            "--metrics-key",
            "test-key",
        ],
    );
    assert_eq!(report["protocol"], "iso", "{report}");
    assert_eq!(f(&report, "deadline_ms"), 100.0);
    assert_eq!(report["peak"]["measured"], true);
    let peak = f(&report, "peak.rate");
    assert!(peak >= 1.0, "{report}");

    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["calm", "overload", "recover"]);
    let half = (peak * 0.5).round().max(1.0);
    let triple = (peak * 3.0).round();
    for (phase, (rate, from, to)) in
        phases
            .iter()
            .zip([(half, 0.0, 1.0), (triple, 1.0, 2.0), (half, 2.0, 4.0)])
    {
        assert_echo_phase(phase, rate, from, to);
        assert!(f(phase, "rate_sent") > 0.0, "{phase}");
        // Four scrapes (each phase's start, and the end), 10 apart for
        // the iso channel; the http channel's are not counted.
        let switch = &phase["switch"];
        assert_eq!(f(switch, "shed_by_reason.admission_limit"), 10.0, "{phase}");
        assert_eq!(f(switch, "shed"), 10.0, "{phase}");
        assert_eq!(f(switch, "admission_limit"), 100.0, "{phase}");
        assert!(switch["deadline_missed"].is_null(), "not exposed: {phase}");
    }
    assert_eq!(scrapes.load(Ordering::SeqCst), 4);
    assert!(report["metrics_error"].is_null(), "{report}");

    // Stalls of 300 ms against a 100 ms deadline: late answers, so that
    // goal is missed, and the four goals are there.
    let late: u64 = phases.iter().map(|p| n(p, "late")).sum();
    assert!(late > 0, "{report}");
    let goals = report["goals"].as_array().unwrap();
    let measures: Vec<&str> = goals
        .iter()
        .map(|g| g["measure"].as_str().unwrap())
        .collect();
    assert_eq!(
        measures,
        [
            "goodput in overload / peak",
            "late answers + timeouts",
            "admitted p99 overload / calm",
            "recovery s"
        ]
    );
    assert_eq!(goals[1]["met"], false, "{report}");
    assert!(f(&goals[1], "value") >= 1.0);
}

#[test]
fn a_given_peak_skips_the_peak_run_and_a_metrics_failure_is_reported_not_fatal() {
    let server = Server::start(&["echo"]);
    let (metrics_url, scrapes) = metrics_server("the-right-key");
    let dir = tempfile::tempdir().unwrap();
    let report = load_report(
        dir.path(),
        "given",
        &[
            "overload",
            "--target",
            &server.address,
            "--peak",
            "400",
            "--connections",
            "2",
            "--calm",
            "1s",
            "--overload",
            "1s",
            "--recover",
            "1s",
            "--warmup",
            "0s",
            "--metrics-url",
            &metrics_url,
            "--metrics-key",
            "a-wrong-key",
        ],
    );
    assert_eq!(report["peak"]["measured"], false);
    assert_eq!(f(&report, "peak.rate"), 400.0);
    let rates: Vec<f64> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| f(p, "rate_offered"))
        .collect();
    assert_eq!(rates, [200.0, 1200.0, 200.0]);
    assert!(report["phases"][1]["switch"].is_null(), "{report}");
    let error = report["metrics_error"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
    assert_eq!(scrapes.load(Ordering::SeqCst), 0);
    // The echo at 1 200/s answers everything in time, far above the
    // 400/s it was said to peak at.
    let goals = report["goals"].as_array().unwrap();
    assert_eq!(goals[0]["measure"], "goodput in overload / peak");
    assert_eq!(goals[0]["met"], true, "{report}");
    assert_eq!(goals[1]["measure"], "late answers + timeouts");
    assert_eq!(f(&goals[1], "value"), 0.0, "{report}");
}
