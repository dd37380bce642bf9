//! The switch's own account of an overload, read from its Prometheus text
//! (`GET /metrics` with the operator's bearer key) at the start and end of
//! each phase: requests shed by reason, answers sent after their deadline,
//! and the admission limit and what it had admitted when the phase ended.
//!
//! The parser is small and generic (a sample's name, labels and value;
//! a family summed by one label), because the label sets grow: a reason
//! the switch adds later is reported without a change here, and a family
//! the switch does not expose is left out of the report, never an error.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::http::HttpUrl;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The samples of a Prometheus text exposition; comments, blank lines and
/// lines that are not samples are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inside)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp.
    let value = rest.split_ascii_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` and what follows the closing brace. Label values may
/// hold escaped quotes, backslashes and newlines, commas and braces.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = text.split_once('=')?;
        let mut chars = after.trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let close = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, escaped) => value.push(escaped),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.trim().to_owned(), value));
        let quoted = after.trim_start().get(1..)?;
        text = quoted.get(close + 1..)?.trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// The samples of `family` whose labels match every `(label, value)` of
/// `only` (a sample without that label matches too: a switch that does not
/// split by it counts everything there), summed by the value of label `by`
/// (`""` for samples without it). `None` when the text has no sample of
/// the family: the switch does not expose it.
pub fn sum_by(
    samples: &[Sample],
    family: &str,
    by: &str,
    only: &[(&str, &str)],
) -> Option<BTreeMap<String, f64>> {
    let mut sums: Option<BTreeMap<String, f64>> = None;
    for sample in samples.iter().filter(|s| s.name == family) {
        let sums = sums.get_or_insert_with(BTreeMap::new);
        let matches = only
            .iter()
            .all(|(label, value)| sample.label(label).is_none_or(|v| v == *value));
        if matches {
            *sums
                .entry(sample.label(by).unwrap_or_default().to_owned())
                .or_insert(0.0) += sample.value;
        }
    }
    sums
}

/// The sum of `family` over the samples matching `only` (see [`sum_by`]).
pub fn sum(samples: &[Sample], family: &str, only: &[(&str, &str)]) -> Option<f64> {
    sum_by(samples, family, "", only).map(|sums| sums.values().sum())
}

/// What the switch said at one moment, for one channel (`iso` or `http`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `switch_shed_total` by `reason`.
    pub shed_by_reason: Option<BTreeMap<String, f64>>,
    /// `switch_deadline_missed_total`.
    pub deadline_missed: Option<f64>,
    /// `switch_admission_limit` (gauge).
    pub admission_limit: Option<f64>,
    /// `switch_admission_in_flight` (gauge).
    pub admission_in_flight: Option<f64>,
}

impl Reading {
    /// The families of issue 13 in `text`, for `channel`.
    pub fn of(text: &str, channel: &str) -> Reading {
        let samples = parse(text);
        let only = [("channel", channel)];
        Reading {
            shed_by_reason: sum_by(&samples, "switch_shed_total", "reason", &only),
            deadline_missed: sum(&samples, "switch_deadline_missed_total", &only),
            admission_limit: sum(&samples, "switch_admission_limit", &only),
            admission_in_flight: sum(&samples, "switch_admission_in_flight", &only),
        }
    }
}

/// What the switch counted over one phase: counters as the difference of
/// the readings at its end and start, gauges as read at its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwitchPhase {
    /// Requests the switch shed, by reason (`""`: a switch that gives none).
    pub shed_by_reason: Option<BTreeMap<String, f64>>,
    pub shed: Option<f64>,
    /// Answers the switch sent after their deadline.
    pub deadline_missed: Option<f64>,
    pub admission_limit: Option<f64>,
    pub admission_in_flight: Option<f64>,
}

impl SwitchPhase {
    /// From the readings at the start and the end of a phase. A counter
    /// that went down (the switch restarted) counts from zero.
    pub fn between(start: &Reading, end: &Reading) -> SwitchPhase {
        let delta = |end: f64, start: Option<f64>| {
            let start = start.unwrap_or(0.0);
            if end >= start { end - start } else { end }
        };
        let shed_by_reason = end.shed_by_reason.as_ref().map(|end_sums| {
            end_sums
                .iter()
                .map(|(reason, value)| {
                    let before = start
                        .shed_by_reason
                        .as_ref()
                        .and_then(|sums| sums.get(reason).copied());
                    (reason.clone(), delta(*value, before))
                })
                .collect::<BTreeMap<_, _>>()
        });
        SwitchPhase {
            shed: shed_by_reason.as_ref().map(|sums| sums.values().sum()),
            shed_by_reason,
            deadline_missed: end
                .deadline_missed
                .map(|value| delta(value, start.deadline_missed)),
            admission_limit: end.admission_limit,
            admission_in_flight: end.admission_in_flight,
        }
    }

    /// One line for the report: `shed admission_limit 12 · deadline 3 ·
    /// deadline missed 0 · admission limit 480 · in flight 12`, or `-`.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(sums) = &self.shed_by_reason {
            let reasons: Vec<String> = sums
                .iter()
                .filter(|(_, n)| **n > 0.0)
                .map(|(reason, n)| {
                    let reason = if reason.is_empty() { "any" } else { reason };
                    format!("{reason} {n:.0}")
                })
                .collect();
            parts.push(if reasons.is_empty() {
                "shed 0".to_owned()
            } else {
                format!("shed {}", reasons.join(", "))
            });
        }
        for (name, value) in [
            ("deadline missed", self.deadline_missed),
            ("admission limit", self.admission_limit),
            ("in flight", self.admission_in_flight),
        ] {
            if let Some(value) = value {
                parts.push(format!("{name} {value:.0}"));
            }
        }
        if parts.is_empty() {
            "none of the overload metrics exposed".to_owned()
        } else {
            parts.join(" · ")
        }
    }
}

/// Where the switch's metrics are read: `--metrics-url` (its HTTP
/// listener; the path defaults to `/metrics`) and the bearer key.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    pub url: HttpUrl,
    pub key: String,
}

impl MetricsSource {
    /// `url` with `/metrics` when it names no path.
    pub fn new(url: HttpUrl, key: String) -> MetricsSource {
        let url = if url.path == "/" {
            url.with_path("/metrics")
        } else {
            url
        };
        MetricsSource { url, key }
    }

    /// Scrapes once (a blocking GET, at most 5 s).
    pub fn read(&self, channel: &str) -> Result<Reading, String> {
        let body = crate::http::get(&self.url, &self.key)?;
        let text = String::from_utf8(body).map_err(|_| "/metrics is not UTF-8".to_owned())?;
        Ok(Reading::of(&text, channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP switch_shed_total Requests shed.
# TYPE switch_shed_total counter
switch_shed_total{channel="iso",reason="admission_limit"} 120
switch_shed_total{channel="iso",reason="deadline"} 7
switch_shed_total{channel="http",reason="admission_limit"} 1000
switch_shed_total{reason="mailbox",channel="iso"} 3 1700000000000
switch_deadline_missed_total{channel="iso"} 2
switch_deadline_missed_total{channel="http"} 50
# TYPE switch_admission_limit gauge
switch_admission_limit 480
switch_admission_in_flight{pool="a \"quoted\", {odd} one"} 31
switch_admission_in_flight{pool="b"} 1.5e1
switch_other_total NaN
"#;

    #[test]
    fn samples_parse_with_escaped_labels_and_timestamps() {
        let samples = parse(TEXT);
        assert_eq!(samples.len(), 10);
        assert_eq!(samples[3].label("reason"), Some("mailbox"));
        assert_eq!(samples[3].value, 3.0);
        assert_eq!(samples[7].label("pool"), Some("a \"quoted\", {odd} one"));
        assert_eq!(samples[8].value, 15.0);
        assert!(samples[9].value.is_nan());
        assert!(parse("not a sample\n{x=\"1\"} 2\nbad{x=\"1\" 2\n").is_empty());
    }

    #[test]
    fn a_family_sums_by_one_label_for_one_channel() {
        let samples = parse(TEXT);
        let iso = sum_by(
            &samples,
            "switch_shed_total",
            "reason",
            &[("channel", "iso")],
        )
        .unwrap();
        assert_eq!(
            iso,
            BTreeMap::from([
                ("admission_limit".to_owned(), 120.0),
                ("deadline".to_owned(), 7.0),
                ("mailbox".to_owned(), 3.0),
            ])
        );
        assert_eq!(sum(&samples, "switch_shed_total", &[]), Some(1130.0));
        // A sample without the channel label counts for every channel.
        assert_eq!(
            sum(&samples, "switch_admission_limit", &[("channel", "iso")]),
            Some(480.0)
        );
        assert_eq!(sum(&samples, "switch_admission_in_flight", &[]), Some(46.0));
        // A family the switch does not expose is not reported.
        assert_eq!(sum_by(&samples, "switch_absent_total", "reason", &[]), None);
        // Today's unlabelled counter sums under "".
        let old = parse("switch_shed_total 9\n");
        assert_eq!(
            sum_by(&old, "switch_shed_total", "reason", &[("channel", "iso")]),
            Some(BTreeMap::from([(String::new(), 9.0)]))
        );
    }

    #[test]
    fn a_phase_is_the_difference_of_its_readings() {
        let start = Reading::of(TEXT, "iso");
        let later = TEXT
            .replace("reason=\"deadline\"} 7", "reason=\"deadline\"} 10")
            .replace("switch_deadline_missed_total{channel=\"iso\"} 2", "switch_deadline_missed_total{channel=\"iso\"} 2\nswitch_shed_total{channel=\"iso\",reason=\"fair_share\"} 4")
            .replace("switch_admission_limit 480", "switch_admission_limit 300");
        let end = Reading::of(&later, "iso");
        let phase = SwitchPhase::between(&start, &end);
        assert_eq!(
            phase.shed_by_reason,
            Some(BTreeMap::from([
                ("admission_limit".to_owned(), 0.0),
                ("deadline".to_owned(), 3.0),
                ("fair_share".to_owned(), 4.0),
                ("mailbox".to_owned(), 0.0),
            ]))
        );
        assert_eq!(phase.shed, Some(7.0));
        assert_eq!(phase.deadline_missed, Some(0.0));
        assert_eq!(phase.admission_limit, Some(300.0));
        assert_eq!(phase.admission_in_flight, Some(46.0));
        assert_eq!(
            phase.line(),
            "shed deadline 3, fair_share 4 · deadline missed 0 · admission limit 300 · in flight 46"
        );
        // A switch without these families: nothing reported.
        let bare = Reading::of("switch_connections_open 3\n", "iso");
        let phase = SwitchPhase::between(&bare, &bare);
        assert_eq!(phase, SwitchPhase::default());
        assert_eq!(phase.line(), "none of the overload metrics exposed");
        // A counter that went down (a restart) counts from zero.
        let restarted = Reading::of("switch_deadline_missed_total 1\n", "iso");
        let before = Reading::of("switch_deadline_missed_total 5\n", "iso");
        assert_eq!(
            SwitchPhase::between(&before, &restarted).deadline_missed,
            Some(1.0)
        );
    }
}
