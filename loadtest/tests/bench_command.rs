//! `loadtest bench`, the one command behind every end-to-end claim, run
//! end to end with short measurements: it starts its echo server and the
//! real switch (the `switch` binary the workspace builds beside this one),
//! measures every figure (the echo's, the durable echo's, the switch's) and
//! the database's and the disk's own baselines, and writes
//! its section into a Markdown document in place.
//!
//! The switch binary exists when the workspace's tests are built together
//! (`cargo nextest run --workspace`, what CI runs); under CI its absence is
//! a failure, elsewhere the test says so in one line and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::{LOADTEST, loadtest};

fn switch_beside_loadtest() -> Option<std::path::PathBuf> {
    let switch = std::path::Path::new(LOADTEST).with_file_name("switch");
    if switch.exists() {
        return Some(switch);
    }
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("CI") {
        panic!("{} is not built: build the workspace", switch.display());
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped: no switch binary beside loadtest (cargo build -p switch)"
    );
    None
}

#[test]
fn bench_measures_everything_in_one_run_and_writes_its_section_in_place() {
    let Some(switch) = switch_beside_loadtest() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.json");
    let document = dir.path().join("BENCHMARKS.md");
    std::fs::write(&document, "# Benchmarks\n\nkept\n").unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/bench.toml");
    let args = [
        "bench",
        "--switch",
        switch.to_str().unwrap(),
        "--backend",
        "sqlite",
        "--config",
        config,
        "--duration",
        "400ms",
        "--warmup",
        "100ms",
        "--connections",
        "4",
        "--in-flight",
        "4",
        "--cards",
        "1000",
        "--overload-calm",
        "1s",
        "--overload-duration",
        "1s",
        "--overload-recover",
        "1s",
        "--report",
        report.to_str().unwrap(),
        "--docs",
        document.to_str().unwrap(),
    ];
    for run in 0..2 {
        let output = loadtest(&args);
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["backend"], "sqlite");
    let names: Vec<&str> = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "E_rr",
            "E_pipe",
            "D_rr",
            "D_pipe",
            "S_rr",
            "S_pipe",
            "E_open",
            "D_open",
            "S_open",
            "E_open_50",
            "D_open_50",
            "S_open_50",
            "S_open_80"
        ]
    );
    for m in report["measurements"].as_array().unwrap() {
        assert!(m["rate_achieved"].as_f64().unwrap() > 0.0, "{m}");
        assert_eq!(m["errors"], 0, "{m}");
        if m["target"] == "switch" {
            // bench.toml's limits are out of a load test's reach: every
            // answer is an approval, so every figure is a durable one.
            assert_eq!(m["declined"], 0, "{m}");
            assert!(m["approved"].as_u64().unwrap() > 0, "{m}");
        }
    }
    // CPU per request, the servers' and the load tester's own, from /proc.
    for m in report["measurements"].as_array().unwrap() {
        for cpu in ["server_cpu_us", "loadtest_cpu_us"] {
            assert!(m[cpu].as_f64().unwrap() > 0.0, "{cpu}: {m}");
        }
    }
    // The goals of issue 12, the switch against the durable echo, each
    // with its limit; and K_append at every batch size.
    let goals: Vec<&str> = report["goals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["measure"].as_str().unwrap())
        .collect();
    assert!(goals.contains(&"S_rr / D_rr"), "{goals:?}");
    assert!(goals.contains(&"S_pipe / D_pipe"), "{goals:?}");
    assert!(
        goals.iter().any(|g| g.starts_with("CPU/request S ÷ D at ")),
        "{goals:?}"
    );
    assert!(
        goals.iter().any(|g| g.starts_with("p99 µs at ")),
        "{goals:?}"
    );
    let batches: Vec<u64> = report["k_append"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["records_per_s"].as_f64().unwrap() > 0.0, "{r}");
            r["batch"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(batches, [1, 16, 64, 256]);
    assert!(report["k_append_record_bytes"].as_u64().unwrap() > 20);
    for ratio in ["ratio_rr", "ratio_pipe"] {
        let value = report[ratio].as_f64().unwrap();
        assert!(value > 0.0 && value < 1.0, "{ratio} = {value}");
    }
    // The switch's own journal figures, read from its /metrics: every
    // approval is a record, and commits carried several on average.
    let records = report["journal_records"].as_u64().unwrap();
    let batches = report["journal_batches"].as_u64().unwrap();
    let approved: u64 = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["approved"].as_u64().unwrap())
        .sum();
    assert!(
        records >= approved,
        "{records} records, {approved} approvals"
    );
    assert!(batches > 0 && batches < records, "{batches} commits");
    let baselines = &report["baselines"];
    assert_eq!(baselines["backend"], "sqlite");
    assert!(baselines["k_copy_rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(baselines["k_1_commits_per_s"].as_f64().unwrap() > 0.0);
    assert!(baselines["l_1_us_p50"].as_f64().unwrap() > 0.0);

    // The overload scenario from S_pipe, last: three phases, the switch's
    // metrics read at their boundaries, the four goals of issue 13.
    let overload = &report["overload"];
    let s_pipe = report["measurements"][5]["rate_achieved"].as_f64().unwrap();
    assert_eq!(overload["peak"]["rate"].as_f64().unwrap(), s_pipe);
    let phases = overload["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["calm", "overload", "recover"]);
    for phase in phases {
        assert!(phase["answered"].as_u64().unwrap() > 0, "{phase}");
        assert!(phase["switch"].is_object(), "metrics read: {overload}");
    }
    assert!(overload["metrics_error"].is_null(), "{overload}");
    assert_eq!(overload["goals"].as_array().unwrap().len(), 4, "{overload}");

    // Two runs, one section: the second replaced the first in place.
    let text = std::fs::read_to_string(&document).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nkept\n"), "{text}");
    assert_eq!(text.matches("<!-- loadtest bench: sqlite -->").count(), 1);
    assert_eq!(text.matches("<!-- /loadtest bench: sqlite -->").count(), 1);
    assert!(text.contains("| S_pipe | switch |"), "{text}");
    assert!(text.contains("K_copy"), "{text}");
    assert!(text.contains("a commit on average"), "{text}");
    assert!(text.contains("| D_pipe | durable |"), "{text}");
    assert!(text.contains("| S_rr / D_rr |"), "{text}");
    assert!(text.contains("K_append"), "{text}");
    assert!(text.contains("| overload |"), "{text}");
    assert!(text.contains("| goodput in overload / peak |"), "{text}");
}
