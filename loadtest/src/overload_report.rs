//! What `loadtest overload` (and the bench's overload rows) report: the
//! [`OverloadReport`] its `--report` writes as JSON, the table printed from
//! it, the goals of issue 13 checked against it, and the Markdown rows of
//! the bench's section.
//!
//! The goals: goodput during the overload at least 0.8 of the peak; no
//! answer later than the deadline (late answers and timeouts, in every
//! phase); admitted p99 during the overload at most twice the calm
//! phase's; recovery within 5 s.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use crate::goals::{GoalCheck, GoalUnit, ratio};
use crate::metrics::SwitchPhase;
use crate::phases::{PhaseSummary, Phases};
use crate::run::{RunConfig, Target};
use crate::units::{format_ns, to_u64_saturating};

/// Below this share of the asked rate actually sent, the report says the
/// load tester fell short, so a goal is not read against a load that was
/// never offered.
pub const SENT_FRACTION_MIN: f64 = 0.9;

/// The peak the phases are planned from.
#[derive(Debug, Clone, Serialize)]
pub struct PeakSummary {
    /// Answers per second neither shed nor later than the deadline.
    pub rate: f64,
    /// `false`: given (`--peak`, or the bench's S_pipe).
    pub measured: bool,
    pub duration_s: Option<f64>,
    pub in_flight: Option<usize>,
    /// Every answer per second, shed ones included.
    pub answered_per_s: Option<f64>,
}

/// One phase as answered, as sent, and as the switch counted it.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadPhase {
    /// `calm`, `overload` or `recover`.
    pub name: &'static str,
    #[serde(flatten)]
    pub summary: PhaseSummary,
    /// Requests the load tester put on the wire per second of the phase.
    pub rate_sent: f64,
    /// `rate_sent` over the rate asked.
    pub sent_fraction: f64,
    /// Requests never sent: older than the timeout before a slot was free.
    pub never_sent: u64,
    /// p99 of how late the load tester sent after the intended time: a
    /// backlog it could not send on time leaves in a later phase.
    pub send_lag_p99_us: f64,
    /// The switch's metrics over the phase (`--metrics-url`).
    pub switch: Option<SwitchPhase>,
}

/// Everything `loadtest overload` measured.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub protocol: &'static str,
    pub target: String,
    pub started_at: String,
    pub connections: u64,
    pub in_flight: usize,
    pub timeout_ms: u64,
    pub warmup_s: f64,
    pub deadline_ms: f64,
    pub factor: f64,
    pub peak: PeakSummary,
    pub phases: Vec<OverloadPhase>,
    /// From the start of `recover` until the switch answered as in `calm`
    /// (see [`crate::phases`]); `None` if it did not within the phase.
    pub recovery_s: Option<f64>,
    /// `--metrics-url`, when given.
    pub metrics_url: Option<String>,
    /// Why the switch's metrics are missing from a phase, if they are.
    pub metrics_error: Option<String>,
    pub goals: Vec<GoalCheck>,
}

impl OverloadReport {
    /// The report of the phases run as `config`, `factor` times the peak
    /// in the overload, the switch read at `metrics_url`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &RunConfig,
        factor: f64,
        metrics_url: Option<String>,
        peak: PeakSummary,
        phases: Vec<OverloadPhase>,
        recovery_s: Option<f64>,
        started_at: SystemTime,
        metrics_error: Option<String>,
    ) -> OverloadReport {
        let (protocol, target) = match &config.target {
            Target::Iso { address, .. } => ("iso", address.clone()),
            Target::Http { url, .. } => ("http", format!("http://{}{}", url.authority, url.path)),
        };
        let goals = goals(peak.rate, &phases, recovery_s);
        OverloadReport {
            tool: "loadtest",
            version: env!("CARGO_PKG_VERSION"),
            protocol,
            target,
            started_at: crate::clock::rfc3339(started_at),
            connections: config.connections,
            in_flight: config.in_flight,
            timeout_ms: u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
            warmup_s: config.warmup.as_secs_f64(),
            deadline_ms: config.deadline().as_secs_f64() * 1e3,
            factor,
            peak,
            phases,
            recovery_s,
            metrics_url,
            metrics_error,
            goals,
        }
    }

    /// The phases the load tester sent less than [`SENT_FRACTION_MIN`] of.
    pub fn short_phases(&self) -> impl Iterator<Item = &OverloadPhase> {
        self.phases
            .iter()
            .filter(|p| p.sent_fraction < SENT_FRACTION_MIN)
    }

    /// The table printed at the end of `loadtest overload`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadtest overload {} {} · {} connections x {} in flight · deadline {} ms · {}s warmup",
            self.protocol,
            self.target,
            self.connections,
            self.in_flight,
            self.deadline_ms,
            self.warmup_s
        );
        out.push_str(&self.peak_line());
        let phases = Phases {
            deadline_ms: self.deadline_ms,
            phases: self.phases.iter().map(|p| p.summary.clone()).collect(),
            recovery_s: self.recovery_s,
        };
        out.push_str(&phases.table());
        out.push_str(&self.sent_lines());
        out.push_str(&self.switch_lines());
        out.push_str("\ngoals (issue 13):\n");
        out.push_str(&self.goal_lines());
        out
    }

    fn peak_line(&self) -> String {
        let p = &self.peak;
        match (p.measured, p.duration_s, p.in_flight) {
            (true, Some(seconds), Some(in_flight)) => format!(
                "peak: {:.1} req/s good (closed loop for {seconds}s, {} x {in_flight} in flight; {:.1} req/s answered)\n",
                p.rate,
                self.connections,
                p.answered_per_s.unwrap_or(0.0)
            ),
            _ => format!("peak: {:.1} req/s (given)\n", p.rate),
        }
    }

    /// What the load tester sent in each phase, and a note for each phase
    /// it fell short in.
    fn sent_lines(&self) -> String {
        let mut out = String::from("\nas sent by the load tester:\n");
        let _ = writeln!(
            out,
            "{:<9} {:>12} {:>12} {:>8} {:>13} {:>11}",
            "phase", "offered/s", "sent/s", "sent", "send lag p99", "never sent"
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:<9} {:>12.0} {:>12.1} {:>7.1}% {:>13} {:>11}",
                p.name,
                p.summary.rate_offered,
                p.rate_sent,
                p.sent_fraction * 100.0,
                format_ns(to_u64_saturating(p.send_lag_p99_us * 1e3)),
                p.never_sent
            );
        }
        for p in self.short_phases() {
            let _ = writeln!(
                out,
                "note: in `{}` the load tester sent {:.1}% of the {:.0} req/s asked \
                 (its CPU, or {} connections x {} in flight all waiting on the target); \
                 the goals are against what it sent",
                p.name,
                p.sent_fraction * 100.0,
                p.summary.rate_offered,
                self.connections,
                self.in_flight
            );
        }
        out
    }

    fn switch_lines(&self) -> String {
        let Some(url) = &self.metrics_url else {
            return "\nthe switch's metrics: not read (give --metrics-url)\n".to_owned();
        };
        let mut out = format!(
            "\nthe switch's metrics ({url}; counters over each phase, gauges at its end):\n"
        );
        for p in &self.phases {
            let line = p
                .switch
                .as_ref()
                .map_or("not read".to_owned(), SwitchPhase::line);
            let _ = writeln!(out, "{:<9} {line}", p.name);
        }
        if let Some(error) = &self.metrics_error {
            let _ = writeln!(out, "metrics: {error}");
        }
        out
    }

    /// One line per goal, as the bench's table writes its own.
    pub fn goal_lines(&self) -> String {
        let mut out = String::new();
        for g in &self.goals {
            let (value, limit) = g.figures();
            let _ = writeln!(
                out,
                "  {:<36} {:>8}  limit {:>8}  goal {:<8} {}",
                g.measure,
                value,
                limit,
                g.goal,
                if g.met { "met" } else { "missed" }
            );
        }
        out
    }

    /// The bench's Markdown rows: the phases, then the goals.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Overload at {} × the peak ({:.0}/s), deadline {} ms, {} connections × {} in flight:\n\n",
            self.factor, self.peak.rate, self.deadline_ms, self.connections, self.in_flight
        );
        out.push_str("| phase | offered/s | sent/s | goodput/s | answered | shed | late | timeouts | admitted p50 µs | admitted p99 µs | the switch's metrics |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for p in &self.phases {
            let s = &p.summary;
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
                p.name,
                s.rate_offered,
                p.rate_sent,
                s.goodput,
                s.answered,
                s.shed,
                s.late,
                s.timeouts,
                s.admitted_us.p50,
                s.admitted_us.p99,
                p.switch.as_ref().map_or("-".to_owned(), SwitchPhase::line)
            );
        }
        for p in self.short_phases() {
            let _ = writeln!(
                out,
                "\nThe load tester sent {:.1}% of the rate asked in `{}`.",
                p.sent_fraction * 100.0,
                p.name
            );
        }
        out.push_str("\nThe goals of issue 13:\n\n| measure | value | limit | goal | |\n|---|---:|---:|---|---|\n");
        for g in &self.goals {
            let (value, limit) = g.figures();
            let _ = writeln!(
                out,
                "| {} | {value} | {limit} | {} | {} |",
                g.measure,
                g.goal,
                if g.met { "met" } else { "missed" }
            );
        }
        out
    }
}

/// The goals of issue 13 from the peak, the phases (`calm`, `overload`,
/// `recover`) and the recovery.
pub fn goals(peak: f64, phases: &[OverloadPhase], recovery_s: Option<f64>) -> Vec<GoalCheck> {
    let find = |name: &str| phases.iter().find(|p| p.name == name);
    let mut goals = Vec::new();
    if let Some(overload) = find("overload") {
        goals.push(GoalCheck::new(
            "goodput in overload / peak".to_owned(),
            ratio(overload.summary.goodput, peak),
            0.8,
            true,
            "≥ 0.8",
            GoalUnit::Ratio,
        ));
    }
    let late: u64 = phases
        .iter()
        .map(|p| p.summary.late + p.summary.timeouts)
        .sum();
    goals.push(GoalCheck::new(
        "late answers + timeouts".to_owned(),
        crate::units::to_f64(late),
        0.0,
        false,
        "0",
        GoalUnit::Answers,
    ));
    if let (Some(calm), Some(overload)) = (find("calm"), find("overload")) {
        let (calm_p99, overload_p99) = (
            calm.summary.admitted_us.p99,
            overload.summary.admitted_us.p99,
        );
        // Nothing admitted in the calm phase: nothing to compare with.
        let value = if calm_p99 > 0.0 {
            ratio(overload_p99, calm_p99)
        } else {
            f64::NAN
        };
        goals.push(GoalCheck::new(
            "admitted p99 overload / calm".to_owned(),
            value,
            2.0,
            false,
            "≤ 2",
            GoalUnit::Ratio,
        ));
    }
    goals.push(GoalCheck::new(
        "recovery s".to_owned(),
        recovery_s.unwrap_or(f64::NAN),
        5.0,
        false,
        "≤ 5 s",
        GoalUnit::Seconds,
    ));
    goals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    fn phase(
        name: &'static str,
        goodput: f64,
        late: u64,
        timeouts: u64,
        p99: f64,
    ) -> OverloadPhase {
        OverloadPhase {
            name,
            summary: PhaseSummary {
                rate_offered: 1000.0,
                from_s: 0.0,
                to_s: 10.0,
                answered: 0,
                good: 0,
                goodput,
                shed: 0,
                late,
                timeouts,
                errors: 0,
                admitted_us: Percentiles {
                    p99,
                    ..Percentiles::default()
                },
                latency_us: Percentiles::default(),
            },
            rate_sent: 1000.0,
            sent_fraction: 1.0,
            never_sent: 0,
            send_lag_p99_us: 0.0,
            switch: None,
        }
    }

    fn by_name<'a>(goals: &'a [GoalCheck], name: &str) -> &'a GoalCheck {
        goals.iter().find(|g| g.measure.starts_with(name)).unwrap()
    }

    #[test]
    fn the_four_goals_are_checked_against_their_limits() {
        let phases = [
            phase("calm", 5_000.0, 0, 0, 4_000.0),
            phase("overload", 8_000.0, 0, 0, 8_000.0),
            phase("recover", 5_000.0, 0, 0, 3_000.0),
        ];
        let goals = goals(10_000.0, &phases, Some(5.0));
        assert_eq!(goals.len(), 4);
        let goodput = by_name(&goals, "goodput");
        assert_eq!((goodput.value, goodput.met), (0.8, true), "at the limit");
        let late = by_name(&goals, "late answers");
        assert_eq!((late.value, late.met), (0.0, true));
        let p99 = by_name(&goals, "admitted p99");
        assert_eq!((p99.value, p99.met), (2.0, true), "at the limit");
        let recovery = by_name(&goals, "recovery");
        assert_eq!((recovery.value, recovery.met), (5.0, true));
        assert_eq!(recovery.figures(), ("5.0".to_owned(), "5.0".to_owned()));
    }

    #[test]
    fn each_goal_misses_past_its_limit() {
        let phases = [
            phase("calm", 5_000.0, 0, 1, 4_000.0),
            phase("overload", 7_990.0, 2, 0, 8_100.0),
            phase("recover", 5_000.0, 3, 0, 3_000.0),
        ];
        let goals = goals(10_000.0, &phases, None);
        assert!(!by_name(&goals, "goodput").met);
        let late = by_name(&goals, "late answers");
        assert_eq!(
            (late.value, late.met),
            (6.0, false),
            "late and timeouts of every phase"
        );
        assert_eq!(late.figures().0, "6");
        let p99 = by_name(&goals, "admitted p99");
        assert_eq!((p99.value, p99.met), (2.025, false));
        let recovery = by_name(&goals, "recovery");
        assert!(!recovery.met, "no recovery within the phase");
        assert_eq!(recovery.figures().0, "none");
        // Nothing admitted while calm: the ratio is not a number, missed.
        let empty = [
            phase("calm", 0.0, 0, 0, 0.0),
            phase("overload", 0.0, 0, 0, 10.0),
        ];
        let p99 = goals_p99(&empty);
        assert!(!p99.met);
        assert_eq!(p99.figures().0, "none");
        // JSON has no NaN: a missing figure is null.
        assert_eq!(
            serde_json::to_value(&p99).unwrap()["value"],
            serde_json::Value::Null
        );
    }

    fn goals_p99(phases: &[OverloadPhase]) -> GoalCheck {
        by_name(&goals(1.0, phases, Some(0.0)), "admitted p99").clone()
    }
}
