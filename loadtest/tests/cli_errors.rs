//! A bad flag or an unreachable target gives one line on stderr that names
//! it, and a non-zero exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::loadtest;

const BENCH_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/bench.log.toml");
const SQLITE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/bench.toml");

/// Runs `loadtest args`, expects `code`, and returns its one stderr line.
fn one_line_error(args: &[&str], code: i32) -> String {
    let output = loadtest(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?} printed a report");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line:\n{stderr}"
    );
    stderr
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    let target = closed_port();
    for (args, names) in [
        (vec!["iso", "--target", &target, "--bogus"], "--bogus"),
        (vec!["iso", "--target", &target, "--rate", "fast"], "--rate"),
        (
            vec!["iso", "--target", &target, "--duration", "10 parsecs"],
            "--duration",
        ),
        (vec!["iso", "--target", &target, "--mix", "0300=1"], "--mix"),
        (vec!["iso"], "--target"),
        (vec!["frobnicate"], "frobnicate"),
        (
            vec!["overload", "--target", &target, "--peak", "max"],
            "--peak",
        ),
        (
            vec!["overload", "--target", &target, "--protocol", "smtp"],
            "--protocol",
        ),
    ] {
        let line = one_line_error(&args, 2);
        assert!(line.contains(names), "{args:?}: {line}");
    }
}

#[test]
fn bad_values_are_one_line_and_exit_1() {
    let target = closed_port();
    for (args, names) in [
        (
            vec!["iso", "--target", &target, "--connections", "0"],
            "--connections",
        ),
        (
            vec!["iso", "--target", &target, "--in-flight", "0"],
            "--in-flight",
        ),
        (
            vec!["iso", "--target", &target, "--amount", "0"],
            "--amount",
        ),
        (vec!["iso", "--target", &target, "--zipf=-1"], "--zipf"),
        (
            vec!["iso", "--target", &target, "--invalid-cards", "2"],
            "--invalid-cards",
        ),
        (
            vec!["iso", "--target", &target, "--spec", "/no/such/spec.toml"],
            "--spec",
        ),
        (
            vec![
                "iso",
                "--target",
                &target,
                "--merchants",
                "A MERCHANT ID TOO LONG",
            ],
            "--merchants",
        ),
        (
            vec![
                "iso", "--target", &target, "--rate", "max", "--then", "5k:1s",
            ],
            "--then",
        ),
        (
            vec![
                "iso",
                "--target",
                &target,
                "--timeout",
                "1s",
                "--deadline",
                "2s",
            ],
            "--deadline",
        ),
        (vec!["http", "--target", "ftp://127.0.0.1:1"], "--target"),
        (
            vec!["overload", "--target", &target, "--factor", "0.5"],
            "--factor",
        ),
        (
            vec!["overload", "--target", &target, "--calm", "500ms"],
            "--calm",
        ),
        (
            vec!["overload", "--target", &target, "--deadline", "6s"],
            "--deadline",
        ),
        (
            vec!["overload", "--target", &target, "--in-flight", "0"],
            "--in-flight",
        ),
        (
            vec!["overload", "--target", &target, "--metrics-url", "ftp://x"],
            "--metrics-url",
        ),
        (
            vec!["overload", "--protocol", "http", "--target", "ftp://x"],
            "--target",
        ),
        (
            vec!["overload", "--target", &target, "--peak", "100"],
            target.as_str(),
        ),
        (vec!["http", "--target", "https://127.0.0.1:1"], "--tls-ca"),
        (vec!["echo", "--listen", "256.0.0.1:0"], "256.0.0.1:0"),
        (
            vec![
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--stall-every",
                "1s",
                "--stall-for",
                "2s",
            ],
            "--stall-for",
        ),
        (
            vec![
                "bench",
                "--switch",
                "/bin/true",
                "--config",
                BENCH_CONFIG,
                "--open-rate",
                "0",
            ],
            "--open-rate",
        ),
        (
            vec![
                "bench",
                "--switch",
                "/bin/true",
                "--config",
                BENCH_CONFIG,
                "--duration",
                "0s",
            ],
            "--duration",
        ),
        (
            // The default --backend is the segment log; this file names
            // SQLite.
            vec!["bench", "--switch", "/bin/true", "--config", SQLITE_CONFIG],
            "--backend sqlite",
        ),
    ] {
        let line = one_line_error(&args, 1);
        assert!(line.contains(names), "{args:?}: {line}");
    }
}

#[test]
fn an_unreachable_target_is_one_line_and_exit_1() {
    let target = closed_port();
    let line = one_line_error(&["iso", "--target", &target, "--duration", "1s"], 1);
    assert!(line.contains(&target), "{line}");
    assert!(line.contains("cannot connect"), "{line}");

    let url = format!("http://{target}");
    let line = one_line_error(&["http", "--target", &url, "--duration", "1s"], 1);
    assert!(line.contains(&target), "{line}");

    let line = one_line_error(&["iso", "--target", "no-such-host.invalid:8583"], 1);
    assert!(line.contains("no-such-host.invalid"), "{line}");
}

#[test]
fn help_lists_the_subcommands() {
    let output = loadtest(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["iso", "http", "echo", "issuer", "bench", "overload"] {
        assert!(help.contains(command), "{help}");
    }
}
