//! `/metrics` as Prometheus and the ops tooling shipped under `config/` read
//! it, on a real switch that has served ISO 8583 and HTTP traffic:
//! `promtool check metrics` finds nothing to say, every metric the Grafana
//! dashboard and the alert rules use is in the scrape (so neither can rot
//! silently when a metric is renamed), and the dashboard's queries parse.
//!
//! promtool comes from Debian's `prometheus` package, which
//! `scripts/test-env` installs; without it these tests fail, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{ACME_KEY, TestSwitch, authorization, code, metric};

/// A file of the repository's `config/` folder.
fn config_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(relative)
}

fn read_config(relative: &str) -> String {
    let path = config_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool with `args`, `stdin` on its standard input.
fn promtool(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "promtool cannot run ({error}): it comes with Debian's `prometheus` package, \
                 which scripts/test-env installs (apt-get install --no-install-recommends \
                 prometheus)"
            )
        });
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// A switch that has answered ISO 8583 and HTTP requests, approved and
/// declined and refused, and its `/metrics` page read with the admin key.
fn switch_after_traffic() -> (TestSwitch, String) {
    let switch = TestSwitch::start();
    let mut acquirer = switch.iso();
    for amount in [1_000, 2_500] {
        let answer = acquirer.exchange(&authorization("4111111111111111", amount));
        assert_eq!(code(&answer), "00");
    }
    // Over the rules' amount_max: declined 13.
    let declined = acquirer.exchange(&authorization("4111111111111111", 2_000_000));
    assert_eq!(code(&declined), "13");
    for amount in [1_200, 3_400] {
        let body = format!(
            r#"{{"pan":"5555555555554444","expiry":"3012","amount":{amount},"currency":"EUR","merchant_id":"ACME0000001","terminal_id":"WEB00001","cvv":"123"}}"#
        );
        let reply = switch.http("POST", "/v1/authorizations", Some(ACME_KEY), &[], &body);
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let refused = switch.http("GET", "/metrics", None, &[], "");
    assert_eq!(refused.status, 401);
    let scrape = switch.metrics();
    // The scrape shows that traffic: the check below runs on real values.
    assert_eq!(
        metric(
            &scrape,
            "switch_responses_total{channel=\"iso\",code=\"00\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &scrape,
            "switch_responses_total{channel=\"http\",code=\"00\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &scrape,
            "switch_stage_seconds_count{channel=\"iso\",stage=\"total\"}"
        ),
        3
    );
    assert!(metric(&scrape, "switch_journal_batch_records_count") >= 1);
    assert_eq!(
        metric(&scrape, "switch_journal_batch_records_sum"),
        metric(&scrape, "switch_journal_records_total")
    );
    assert!(metric(&scrape, "switch_journal_commit_seconds_count") >= 1);
    assert_eq!(metric(&scrape, "switch_ready"), 1);
    (switch, scrape)
}

#[test]
fn a_scrape_after_iso_and_http_traffic_passes_promtool_check_metrics() {
    let (_switch, scrape) = switch_after_traffic();
    let checked = promtool(&["check", "metrics"], &scrape);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success(),
        "promtool check metrics: {}\n{said}",
        checked.status
    );
    assert_eq!(said, "", "promtool check metrics has something to say");
}

/// Every `switch_...` name in `text`: metric names in PromQL, and in the
/// prose of help texts and annotations alike.
fn switch_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|rest| rest.find("switch_")) {
        let start = from + found;
        let word_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let end = bytes
            .get(start..)
            .unwrap()
            .iter()
            .position(|b| !word_char(*b))
            .map_or(bytes.len(), |length| start + length);
        if start == 0 || !word_char(bytes[start - 1]) {
            names.insert(text[start..end].to_owned());
        }
        from = end;
    }
    names
}

/// The metric families (`# TYPE` lines) and sample names of a scrape.
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_the_dashboard_and_the_alert_rules_use_is_in_the_scrape() {
    let (_switch, scrape) = switch_after_traffic();
    let scraped = scraped_names(&scrape);
    for file in [
        "grafana/switch-dashboard.json",
        "prometheus/alerts.yml",
        "prometheus/alerts.test.yml",
    ] {
        let used = switch_names(&read_config(file));
        assert!(
            used.len() >= 5,
            "{file}: only {used:?}: the scan finds no metrics"
        );
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not have: {missing:?}"
        );
    }
}

/// The PromQL of every panel of the Grafana dashboard, with Grafana's
/// variables given values Prometheus would see.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read_config("grafana/switch-dashboard.json")).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            queries.push((
                title.to_owned(),
                expr.replace("$__rate_interval", "1m")
                    .replace("$instance", ".*"),
            ));
        }
    }
    queries
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    // promtool checks PromQL offline only in rule files: each query
    // becomes a recording rule. JSON strings are valid YAML strings.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (title, expr)) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n        labels: {{ panel: {} }}\n",
            serde_json::Value::from(expr.as_str()),
            serde_json::Value::from(title.as_str()),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let checked = promtool(&["check", "rules", file.to_str().unwrap()], "");
    assert!(
        checked.status.success(),
        "{}{}\n{rules}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn the_name_scan_finds_whole_names_only() {
    let names = switch_names(
        "rate(switch_shed_total{x=\"y\"}[1m]) / switch_ready; the switch sheds; my_switch_x",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["switch_ready", "switch_shed_total"]
    );
    let scraped = scraped_names(
        "# HELP switch_a A.\n# TYPE switch_a histogram\nswitch_a_bucket{le=\"1\"} 0\nswitch_b 1\n",
    );
    assert_eq!(
        scraped.into_iter().collect::<Vec<_>>(),
        ["switch_a", "switch_a_bucket", "switch_b"]
    );
}
