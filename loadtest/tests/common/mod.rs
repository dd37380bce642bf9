//! Helpers for tests that run the real `loadtest` binary: servers started
//! as child processes on 127.0.0.1 with a port the kernel picks, and load
//! runs whose `--report` JSON is read back.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const LOADTEST: &str = env!("CARGO_BIN_EXE_loadtest");

/// A `loadtest echo` or `loadtest issuer` child, killed on drop.
pub struct Server {
    child: Child,
    pub address: String,
}

impl Server {
    /// Starts `loadtest <args> --listen 127.0.0.1:0` and reads the port it
    /// prints.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(LOADTEST)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("the server printed no address");
        let address = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Server { child, address }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `loadtest` with `args` to completion.
pub fn loadtest(args: &[&str]) -> Output {
    Command::new(LOADTEST)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a load with `args` plus `--report` into `dir`, checks it
/// succeeded, and returns the report.
pub fn load_report(dir: &Path, name: &str, args: &[&str]) -> serde_json::Value {
    let report: PathBuf = dir.join(format!("{name}.json"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--report", report.to_str().unwrap()]);
    let output = loadtest(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadtest {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The table is printed for people; show it with the test's output.
    println!("{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

/// `value` as u64, with the key path in the panic message.
pub fn n(value: &serde_json::Value, path: &str) -> u64 {
    let mut v = value;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count: {v}"))
}

/// `value` as f64.
pub fn f(value: &serde_json::Value, path: &str) -> f64 {
    let mut v = value;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {v}"))
}

/// Checks that the counts of `summary` (the report's `all` or a type) add up.
pub fn assert_counts_add_up(summary: &serde_json::Value) {
    let sent = n(summary, "sent");
    let received = n(summary, "received");
    let timeouts = n(summary, "timeouts");
    let errors = n(summary, "errors");
    let dropped = n(summary, "dropped");
    assert_eq!(
        sent,
        received + timeouts + errors,
        "sent = received + timeouts + errors: {summary}"
    );
    assert_eq!(n(summary, "scheduled"), sent + dropped, "{summary}");
    let responses: u64 = summary["responses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(responses, received, "responses by code add up: {summary}");
    assert_eq!(n(summary, "latency_us.count"), received, "{summary}");
}

/// A phase of a run's JSON spans `from`..`to` seconds at `rate`, and the
/// echo shed none of it: every answer was good or late.
pub fn assert_echo_phase(phase: &serde_json::Value, rate: f64, from: f64, to: f64) {
    assert_eq!(f(phase, "rate_offered"), rate, "{phase}");
    assert_eq!(
        (f(phase, "from_s"), f(phase, "to_s")),
        (from, to),
        "{phase}"
    );
    assert_eq!(n(phase, "shed"), 0, "{phase}");
    assert_eq!(
        n(phase, "good") + n(phase, "late"),
        n(phase, "answered"),
        "{phase}"
    );
}
