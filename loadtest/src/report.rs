//! The end of a run: the [`Summary`] (what `--report` writes as JSON, with
//! percentiles in microseconds) and the table printed from it, with the
//! switch's own per-stage latencies beside the load tester's when `--admin`
//! is given.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::http::StageLatency;
use crate::phases::Phases;
use crate::run::{RunConfig, RunResult, Target};
use crate::stats::{Counts, Percentiles, rate_per_s, us_of_ns};
use crate::units::{format_ns, to_f64, to_u64_saturating};
use crate::workload::Kind;

fn format_us(us: f64) -> String {
    format_ns(to_u64_saturating((us * 1e3).round()))
}

/// Counts, rate and latency of one request type or of all.
#[derive(Debug, Clone, Serialize)]
pub struct TypeSummary {
    #[serde(flatten)]
    pub counts: Counts,
    pub scheduled: u64,
    /// Responses per second of the measured window.
    pub rate_achieved: f64,
    pub latency_us: Percentiles,
    /// Responses by DE39 (or HTTP status).
    pub responses: BTreeMap<String, u64>,
}

/// One response code and what it means.
#[derive(Debug, Clone, Serialize)]
pub struct CodeSummary {
    pub count: u64,
    pub description: &'static str,
}

/// One second of the run, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalSummary {
    pub t_s: f64,
    pub count: u64,
    pub rate: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub timeouts: u64,
    pub errors: u64,
}

/// The run's workload as configured.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSummary {
    pub cards: u64,
    pub zipf: f64,
    pub amount: String,
    pub mix: String,
    pub merchants: Vec<String>,
    pub invalid_cards: f64,
}

/// Everything a run produced, as `--report` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tool: &'static str,
    pub version: &'static str,
    pub protocol: &'static str,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    pub started_at: String,
    /// `open` (constant rate) or `closed` (`--rate max`).
    pub mode: &'static str,
    /// Requests per second asked for; `null` in closed loop.
    pub rate_offered: Option<f64>,
    /// Responses per second of the measured window.
    pub rate_achieved: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: u64,
    pub in_flight: usize,
    pub timeout_ms: u64,
    pub seed: u64,
    pub workload: WorkloadSummary,
    pub all: TypeSummary,
    pub by_type: BTreeMap<String, TypeSummary>,
    pub responses: BTreeMap<String, CodeSummary>,
    pub errors: BTreeMap<String, u64>,
    pub unmatched: u64,
    pub bad_responses: u64,
    /// How late the load tester sent requests after their intended time.
    pub send_lag_us: Percentiles,
    pub intervals: Vec<IntervalSummary>,
    /// With `--then` or `--deadline`: each phase against the deadline, and
    /// the recovery after the last rise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    pub acks_written: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_stages: Option<Vec<StageLatency>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_stages_error: Option<String>,
}

/// Labels of the workload flags as given, for the report.
#[derive(Debug, Clone)]
pub struct WorkloadLabels {
    pub amount: String,
    pub mix: String,
    pub zipf: f64,
}

impl Summary {
    /// Builds the summary of `result`.
    pub fn new(
        config: &RunConfig,
        labels: &WorkloadLabels,
        result: &RunResult,
        admin: Option<Result<Vec<StageLatency>, String>>,
    ) -> Summary {
        let totals = &result.totals;
        let seconds = config.measured().as_secs_f64().max(1e-9);
        let type_summary = |counts: Counts, h: &Histogram<u64>, kind: Option<Kind>| {
            let responses = totals
                .outcomes
                .iter()
                .filter(|((k, _), _)| kind.is_none_or(|kind| *k == kind))
                .fold(BTreeMap::new(), |mut map, ((_, outcome), count)| {
                    *map.entry(outcome.label()).or_insert(0) += count;
                    map
                });
            TypeSummary {
                counts,
                scheduled: counts.scheduled(),
                rate_achieved: rate_per_s(counts.received, seconds),
                latency_us: Percentiles::of(h),
                responses,
            }
        };
        let mut by_type = BTreeMap::new();
        for kind in Kind::ALL {
            let counts = totals.counts[kind.index()];
            if counts.scheduled() > 0 {
                // Over HTTP an authorization is a POST, not an MTI.
                let name = match (&config.target, kind) {
                    (Target::Http { .. }, Kind::Authorization) => "POST",
                    _ => kind.mti(),
                };
                by_type.insert(
                    name.to_owned(),
                    type_summary(counts, &totals.latency_ns[kind.index()], Some(kind)),
                );
            }
        }
        let all = type_summary(totals.counts_all(), &totals.latency_all(), None);
        let responses = totals
            .outcomes_all()
            .into_iter()
            .map(|(outcome, count)| {
                (
                    outcome.label(),
                    CodeSummary {
                        count,
                        description: outcome.description(),
                    },
                )
            })
            .collect();
        let (protocol, spec) = match &config.target {
            Target::Iso { spec, .. } => ("iso", Some(spec.name().to_owned())),
            Target::Http { .. } => ("http", None),
        };
        let target = match &config.target {
            Target::Iso { address, .. } => address.clone(),
            Target::Http { url, .. } => format!("http://{}{}", url.authority, url.path),
        };
        let (switch_stages, switch_stages_error) = match admin {
            Some(Ok(stages)) => (Some(stages), None),
            Some(Err(error)) => (None, Some(error)),
            None => (None, None),
        };
        Summary {
            tool: "loadtest",
            version: env!("CARGO_PKG_VERSION"),
            protocol,
            target,
            spec,
            started_at: crate::clock::rfc3339(result.measure_started_at),
            mode: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate_offered: config.rate,
            rate_achieved: all.rate_achieved,
            duration_s: config.measured().as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            connections: config.connections,
            in_flight: config.in_flight,
            timeout_ms: u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
            seed: config.workload.seed,
            workload: WorkloadSummary {
                cards: config.workload.cards,
                zipf: labels.zipf,
                amount: labels.amount.clone(),
                mix: labels.mix.clone(),
                merchants: config
                    .workload
                    .merchants
                    .iter()
                    .map(|m| m.trim_end().to_owned())
                    .collect(),
                invalid_cards: config.workload.invalid_fraction,
            },
            all,
            by_type,
            responses,
            errors: totals
                .errors
                .iter()
                .map(|(reason, count)| (reason.label().to_owned(), *count))
                .collect(),
            unmatched: totals.unmatched,
            bad_responses: totals.bad_responses,
            send_lag_us: Percentiles::of(&totals.send_lag_ns),
            intervals: result
                .intervals
                .iter()
                .map(|p| IntervalSummary {
                    t_s: (p.end_s * 1000.0).round() / 1000.0,
                    count: p.count,
                    rate: if p.length_s > 0.0 {
                        rate_per_s(p.count, p.length_s)
                    } else {
                        0.0
                    },
                    p50_us: us_of_ns(p.p50_ns),
                    p90_us: us_of_ns(p.p90_ns),
                    p99_us: us_of_ns(p.p99_ns),
                    max_us: us_of_ns(p.max_ns),
                    timeouts: p.timeouts,
                    errors: p.errors,
                })
                .collect(),
            phases: Phases::of(config, result),
            acks_written: result.acks_written,
            switch_stages,
            switch_stages_error,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let phased = self.phases.as_ref().is_some_and(|p| p.phases.len() > 1);
        let mode = match self.rate_offered {
            Some(_) if phased => "open loop in phases (below)".to_owned(),
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop (--rate max)".to_owned(),
        };
        let spec = self
            .spec
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "loadtest {} {}{spec} · {mode} for {}s after {}s warmup · {} connections x {} in flight · seed {}",
            self.protocol,
            self.target,
            self.duration_s,
            self.warmup_s,
            self.connections,
            self.in_flight,
            self.seed
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<5} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "type",
            "sent",
            "recv/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "max",
            "timeouts",
            "errors",
            "dropped"
        );
        let mut row = |name: &str, t: &TypeSummary| {
            let l = &t.latency_us;
            let _ = writeln!(
                out,
                "{:<5} {:>9} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
                name,
                t.counts.sent,
                t.rate_achieved,
                format_us(l.p50),
                format_us(l.p90),
                format_us(l.p99),
                format_us(l.p999),
                format_us(l.p9999),
                format_us(l.max),
                t.counts.timeouts,
                t.counts.errors,
                t.counts.dropped
            );
        };
        for (name, t) in &self.by_type {
            row(name, t);
        }
        if self.by_type.len() != 1 {
            row("all", &self.all);
        }
        let _ = writeln!(out);
        let c = &self.all.counts;
        let offered = match self.rate_offered {
            Some(_) if phased => format!(
                "{:.1} req/s over the phases",
                rate_per_s(self.all.scheduled, self.duration_s.max(1e-9))
            ),
            Some(rate) => format!("{rate:.1} req/s"),
            None => "max".to_owned(),
        };
        let _ = writeln!(
            out,
            "offered {offered} · achieved {:.1} req/s · {} sent = {} received + {} timeouts + {} errors{}",
            self.rate_achieved,
            c.sent,
            c.received,
            c.timeouts,
            c.errors,
            if c.dropped > 0 {
                format!(" · {} never sent (older than the timeout)", c.dropped)
            } else {
                String::new()
            }
        );
        if !self.responses.is_empty() {
            let received = to_f64(c.received.max(1));
            let parts: Vec<String> = self
                .responses
                .iter()
                .map(|(code, s)| {
                    format!(
                        "{code} {} {} ({:.1}%)",
                        s.description,
                        s.count,
                        to_f64(s.count) * 100.0 / received
                    )
                })
                .collect();
            let _ = writeln!(out, "responses: {}", parts.join(" · "));
        }
        if !self.errors.is_empty() {
            let parts: Vec<String> = self
                .errors
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            let _ = writeln!(out, "errors: {}", parts.join(" · "));
        }
        if self.unmatched + self.bad_responses > 0 {
            let _ = writeln!(
                out,
                "unmatched responses {} · undecodable responses {}",
                self.unmatched, self.bad_responses
            );
        }
        if self.send_lag_us.count > 0 {
            let l = &self.send_lag_us;
            let _ = writeln!(
                out,
                "send lag (how late loadtest itself sent, included above): p50 {} · p99 {} · max {}",
                format_us(l.p50),
                format_us(l.p99),
                format_us(l.max)
            );
        }
        if let Some(phases) = &self.phases {
            out.push_str(&phases.table());
        }
        if let Some(stages) = &self.switch_stages {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "the switch's own stages (GET /admin/latency, since it started), beside loadtest's:"
            );
            let _ = writeln!(
                out,
                "{:<8} {:<14} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "channel", "stage", "count", "p50", "p90", "p99", "p99.9", "max"
            );
            // Stages of a channel the run did not use are all zero.
            for s in stages.iter().filter(|s| s.count > 0) {
                let us = |v: u64| format_ns(v * 1000);
                let _ = writeln!(
                    out,
                    "{:<8} {:<14} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    s.channel,
                    s.stage,
                    s.count,
                    us(s.p50_us),
                    us(s.p90_us),
                    us(s.p99_us),
                    us(s.p999_us),
                    us(s.max_us)
                );
            }
            let l = &self.all.latency_us;
            let _ = writeln!(
                out,
                "{:<8} {:<14} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "loadtest",
                "client",
                self.all.counts.received,
                format_us(l.p50),
                format_us(l.p90),
                format_us(l.p99),
                format_us(l.p999),
                format_us(l.max)
            );
        }
        if let Some(error) = &self.switch_stages_error {
            let _ = writeln!(out, "--admin: {error}");
        }
        out
    }
}
