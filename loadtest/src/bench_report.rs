//! What `loadtest bench` measured and how it is shown: the
//! [`BenchReport`] (what `--report` writes as JSON), the table printed at
//! the end, and the Markdown section for `docs/BENCHMARKS.md` that
//! `--markdown` writes and `--docs` puts in place.

use std::path::Path;

use serde::Serialize;

use crate::durable::AppendRate;
use crate::error::Error;
use crate::goals::{GoalCheck, GoalUnit, ratio};
use crate::overload_report::OverloadReport;
use crate::run::{RunConfig, RunResult};
use crate::stats::{Percentiles, rate_per_s};
use crate::units::{format_ns, to_f64, to_u64_saturating};

/// One measurement of the bench.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub target: &'static str,
    /// `null` in closed loop.
    pub rate_offered: Option<f64>,
    pub in_flight: usize,
    pub rate_achieved: f64,
    pub latency_us: Percentiles,
    pub timeouts: u64,
    pub errors: u64,
    pub approved: u64,
    pub declined: u64,
    /// CPU time of the server process per request answered (warmup
    /// included, as is its CPU), µs; `None` where `/proc` did not say.
    pub server_cpu_us: Option<f64>,
    /// The load tester's own CPU time per request answered, µs.
    pub loadtest_cpu_us: Option<f64>,
}

/// Everything `loadtest bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `log`, `sqlite`, `postgres` or `fleet` (PostgreSQL and Redis).
    pub backend: &'static str,
    pub machine: String,
    pub version: &'static str,
    pub connections: u64,
    pub duration_s: f64,
    pub measurements: Vec<Measurement>,
    /// The journal database's own limits in the same run; `None` for the
    /// segment log, which has no database (`k_append` is its limit).
    pub baselines: Option<storage::baseline::Baselines>,
    /// `S_rr / E_rr`.
    pub ratio_rr: f64,
    /// `S_pipe / E_pipe`.
    pub ratio_pipe: f64,
    /// `S_pipe / K_copy`.
    pub ratio_pipe_k_copy: Option<f64>,
    /// `S_pipe / K_1`.
    pub ratio_pipe_k_1: Option<f64>,
    /// p99 at 80% of `S_pipe` over `L_1`'s median.
    pub ratio_p99_80_l_1: Option<f64>,
    /// The switch's journal over the whole run, from its `/metrics`:
    /// commits and the records they carried (`None` if it could not be read).
    pub journal_batches: Option<u64>,
    pub journal_records: Option<u64>,
    /// `K_append`: one request's journal record appended in batches with
    /// one `fdatasync` each, in the bench's temporary directory.
    pub k_append: Vec<AppendRate>,
    /// The bytes of that record.
    pub k_append_record_bytes: usize,
    /// The goals of issue 12, the switch against the durable echo.
    pub goals: Vec<GoalCheck>,
    /// The overload scenario from S_pipe, with the goals of issue 13
    /// (`None`: `--no-overload`).
    pub overload: Option<OverloadReport>,
}

/// The goals of issue 12 from the bench's measurements: peaks of the
/// switch (`S_*`) over the durable echo's (`D_*`), and for each open-loop
/// rate both were run at (`S_open` and `D_open`, `S_open_50` and
/// `D_open_50`), CPU per request and latency. A pair missing a side is
/// left out.
pub fn goals(measurements: &[Measurement]) -> Vec<GoalCheck> {
    let find = |name: &str| measurements.iter().find(|m| m.name == name);
    let mut goals = Vec::new();
    for (s, d, limit, goal) in [
        ("S_rr", "D_rr", 0.8, "≥ 0.8"),
        ("S_pipe", "D_pipe", 0.6, "≥ 0.6"),
    ] {
        if let (Some(sm), Some(dm)) = (find(s), find(d)) {
            goals.push(GoalCheck::new(
                format!("{s} / {d}"),
                ratio(sm.rate_achieved, dm.rate_achieved),
                limit,
                true,
                goal,
                GoalUnit::Ratio,
            ));
        }
    }
    for suffix in ["open", "open_50"] {
        let (Some(sm), Some(dm)) = (find(&format!("S_{suffix}")), find(&format!("D_{suffix}")))
        else {
            continue;
        };
        let rate = sm
            .rate_offered
            .map_or(String::new(), |r| format!(" at {r:.0}/s"));
        if let (Some(s_cpu), Some(d_cpu)) = (sm.server_cpu_us, dm.server_cpu_us) {
            goals.push(GoalCheck::new(
                format!("CPU/request S ÷ D{rate}"),
                ratio(s_cpu, d_cpu),
                1.3,
                false,
                "≤ 1.3",
                GoalUnit::Ratio,
            ));
        }
        let (s, d) = (&sm.latency_us, &dm.latency_us);
        for (name, s_value, d_value) in [("p50", s.p50, d.p50), ("p90", s.p90, d.p90)] {
            goals.push(GoalCheck::new(
                format!("{name} µs{rate}"),
                s_value,
                1.5 * d_value + 500.0,
                false,
                "≤ 1.5 × D's + 0.5 ms",
                GoalUnit::Microseconds,
            ));
        }
        goals.push(GoalCheck::new(
            format!("p99 µs{rate}"),
            s.p99,
            1.5 * d.p99,
            false,
            "≤ 1.5 × D's",
            GoalUnit::Microseconds,
        ));
    }
    goals
}

impl Measurement {
    /// The measurement `name` of `target`, a run of `config` that gave `result`.
    /// `cpu_ns` is the CPU time the server and the load tester used over
    /// the whole run.
    pub fn new(
        name: &str,
        target: &'static str,
        config: &RunConfig,
        result: &RunResult,
        cpu_ns: (Option<u64>, Option<u64>),
    ) -> Measurement {
        let counts = result.totals.counts_all();
        let answered = counts.received + result.totals.warmup_received;
        let outcomes = result.totals.outcomes_all();
        let approved = outcomes
            .iter()
            .filter(|(o, _)| o.is_approved())
            .map(|(_, n)| n)
            .sum();
        Measurement {
            name: name.to_owned(),
            target,
            rate_offered: config.rate,
            in_flight: config.in_flight,
            rate_achieved: rate_per_s(counts.received, config.duration.as_secs_f64()),
            latency_us: Percentiles::of(&result.totals.latency_all()),
            timeouts: counts.timeouts + counts.dropped,
            errors: counts.errors,
            approved,
            declined: counts.received - approved,
            server_cpu_us: cpu_ns.0.and_then(|ns| per_request_us(ns, answered)),
            loadtest_cpu_us: cpu_ns.1.and_then(|ns| per_request_us(ns, answered)),
        }
    }
}

/// `ns` of CPU over `answered` requests, in µs each.
fn per_request_us(ns: u64, answered: u64) -> Option<f64> {
    (answered > 0).then(|| to_f64(ns) / to_f64(answered) / 1e3)
}

/// A CPU figure for a table: `12.3` or `-`.
fn cpu(us: Option<f64>) -> String {
    us.map_or("-".to_owned(), |us| format!("{us:.1}"))
}

impl BenchReport {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "loadtest bench on {} · {} connections · {}s per measurement\n\n",
            self.machine, self.connections, self.duration_s
        ));
        out.push_str(&format!(
            "{:<11} {:<7} {:>10} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "measure",
            "target",
            "offered/s",
            "in flight",
            "achieved/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "timeouts",
            "cpu µs",
            "lt µs"
        ));
        for m in &self.measurements {
            let l = &m.latency_us;
            let us = |v: f64| format_ns(to_u64_saturating(v * 1e3));
            out.push_str(&format!(
                "{:<11} {:<7} {:>10} {:>9} {:>11.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                m.name,
                m.target,
                m.rate_offered
                    .map_or("max".to_owned(), |r| format!("{r:.0}")),
                m.in_flight,
                m.rate_achieved,
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
                m.timeouts,
                cpu(m.server_cpu_us),
                cpu(m.loadtest_cpu_us)
            ));
        }
        out.push_str(
            "(cpu µs: the server's CPU per request answered; lt µs: the load tester's own)\n",
        );
        out.push_str(&format!(
            "\nS_rr / E_rr = {:.3} · S_pipe / E_pipe = {:.3}\n",
            self.ratio_rr, self.ratio_pipe
        ));
        out.push_str(&self.baseline_lines());
        out.push_str("\nissue 12: the switch against the durable echo D\n");
        for g in &self.goals {
            let (value, limit) = g.figures();
            out.push_str(&format!(
                "  {:<30} {:>8}  limit {:>8}  goal {:<22} {}\n",
                g.measure,
                value,
                limit,
                g.goal,
                if g.met { "met" } else { "missed" }
            ));
        }
        out.push_str(&self.k_append_line());
        if let Some(overload) = &self.overload {
            out.push_str("\nissue 13: the switch overloaded, from S_pipe\n");
            out.push_str(&overload.table());
        }
        out
    }

    /// `K_append` per batch size, one line.
    fn k_append_line(&self) -> String {
        let rates: Vec<String> = self
            .k_append
            .iter()
            .map(|r| {
                format!(
                    "{} a sync: {:.0} records/s (sync p50 {:.0} µs)",
                    r.batch, r.records_per_s, r.sync_us_p50
                )
            })
            .collect();
        format!(
            "K_append, {}-byte records, one fdatasync per batch: {}\n",
            self.k_append_record_bytes,
            rates.join(" · ")
        )
    }

    /// The database's limits and the ratios to them.
    fn baseline_lines(&self) -> String {
        let batches = match (self.journal_batches, self.journal_records) {
            (Some(batches), Some(records)) if batches > 0 => format!(
                "journal over the run: {records} records in {batches} commits, {:.1} a commit on average\n",
                to_f64(records) / to_f64(batches)
            ),
            _ => {
                "journal batch sizes: not read (the switch's /metrics did not answer)\n".to_owned()
            }
        };
        let Some((b, k_copy, k_1, l_1)) = self.baselines.as_ref().and_then(|b| {
            Some((
                b,
                self.ratio_pipe_k_copy?,
                self.ratio_pipe_k_1?,
                self.ratio_p99_80_l_1?,
            ))
        }) else {
            return batches
                + "the segment log has no journal database: K_append (below) is its limit\n";
        };
        batches
            + &format!(
                "{} journal database: K_copy {:.0} rows/s ({} rows, best of 3) · K_1 {:.0} commits/s \
             · L_1 p50 {:.0} µs, p99 {:.0} µs\n\
             S_pipe / K_copy = {:.3} · S_pipe / K_1 = {:.1} · p99 at 80% / L_1 p50 = {:.1}\n",
                b.backend,
                b.k_copy_rows_per_s,
                b.k_copy_rows,
                b.k_1_commits_per_s,
                b.l_1_us_p50,
                b.l_1_us_p99,
                k_copy,
                k_1,
                l_1
            )
    }

    /// The figures as a Markdown section for `docs/BENCHMARKS.md`.
    pub fn markdown(&self, command: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "## End to end: `loadtest bench`, {}\n\n",
            match self.backend {
                "fleet" => "a fleet node (PostgreSQL journal, velocity in Redis)",
                "postgres" => "PostgreSQL journal",
                "sqlite" => "embedded SQLite journal",
                _ => "the embedded segment log journal",
            }
        ));
        out.push_str(&format!(
            "Machine: {}. loadtest {}. Command: `{command}`.\n\n",
            self.machine, self.version
        ));
        out.push_str("| measure | target | offered/s | in flight | achieved/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | timeouts | server CPU µs/req | loadtest CPU µs/req |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.measurements {
            let l = &m.latency_us;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |\n",
                m.name,
                m.target,
                m.rate_offered
                    .map_or("max".to_owned(), |r| format!("{r:.0}")),
                m.in_flight,
                m.rate_achieved,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                m.timeouts,
                cpu(m.server_cpu_us),
                cpu(m.loadtest_cpu_us)
            ));
        }
        out.push_str(&format!(
            "\nS_rr / E_rr = {:.3}; S_pipe / E_pipe = {:.3}.\n\n",
            self.ratio_rr, self.ratio_pipe
        ));
        out.push_str(&self.baseline_lines().replace('\n', "\n\n"));
        out.push_str("The goals of issue 12, the switch (S) against the durable echo (D):\n\n");
        out.push_str("| measure | value | limit | goal | |\n|---|---:|---:|---|---|\n");
        for g in &self.goals {
            let (value, limit) = g.figures();
            out.push_str(&format!(
                "| {} | {value} | {limit} | {} | {} |\n",
                g.measure,
                g.goal,
                if g.met { "met" } else { "missed" }
            ));
        }
        out.push('\n');
        out.push_str(&self.k_append_line());
        if let Some(overload) = &self.overload {
            out.push('\n');
            out.push_str(&overload.markdown());
        }
        out
    }
}

/// Puts `section` between the markers `<!-- loadtest bench: NAME -->` and
/// `<!-- /loadtest bench: NAME -->` of `document`, replacing what was there,
/// or appends it with its markers when the document has none.
pub fn replace_section(document: &str, name: &str, section: &str) -> String {
    let open = format!("<!-- loadtest bench: {name} -->");
    let close = format!("<!-- /loadtest bench: {name} -->");
    let marked = format!("{open}\n{}\n{close}", section.trim_end());
    match (document.find(&open), document.find(&close)) {
        (Some(start), Some(end)) if end > start => format!(
            "{}{marked}{}",
            &document[..start],
            &document[end + close.len()..]
        ),
        _ => {
            let mut out = document.trim_end().to_owned();
            out.push_str("\n\n");
            out.push_str(&marked);
            out.push('\n');
            out
        }
    }
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::ratio;

    fn measurement(name: &str, rate: f64, p: [f64; 3], cpu_us: f64) -> Measurement {
        Measurement {
            name: name.to_owned(),
            target: "x",
            rate_offered: name.contains("open").then_some(10_000.0),
            in_flight: 4,
            rate_achieved: rate,
            latency_us: Percentiles {
                p50: p[0],
                p90: p[1],
                p99: p[2],
                ..Percentiles::default()
            },
            timeouts: 0,
            errors: 0,
            approved: 0,
            declined: 0,
            server_cpu_us: Some(cpu_us),
            loadtest_cpu_us: Some(1.0),
        }
    }

    #[test]
    fn the_goals_compare_the_switch_with_the_durable_echo() {
        let ms = [
            measurement("D_rr", 40_000.0, [0.0; 3], 0.0),
            measurement("S_rr", 30_000.0, [0.0; 3], 0.0),
            measurement("D_pipe", 100_000.0, [0.0; 3], 0.0),
            measurement("S_pipe", 61_000.0, [0.0; 3], 0.0),
            measurement("D_open", 10_000.0, [600.0, 1_000.0, 4_000.0], 40.0),
            measurement("S_open", 10_000.0, [1_400.0, 2_100.0, 6_100.0], 52.4),
        ];
        let goals = goals(&ms);
        let find = |name: &str| goals.iter().find(|g| g.measure == name).unwrap();
        let rr = find("S_rr / D_rr");
        assert_eq!((rr.value, rr.limit, rr.met), (0.75, 0.8, false));
        let pipe = find("S_pipe / D_pipe");
        assert_eq!((pipe.value, pipe.met), (0.61, true));
        let cpu = find("CPU/request S ÷ D at 10000/s");
        assert_eq!((cpu.value, cpu.limit, cpu.met), (1.31, 1.3, false));
        // p50: 1.5 × 600 + 500 = 1400, met at the limit; p90: 2000, missed.
        let p50 = find("p50 µs at 10000/s");
        assert_eq!((p50.value, p50.limit, p50.met), (1_400.0, 1_400.0, true));
        let p90 = find("p90 µs at 10000/s");
        assert_eq!((p90.limit, p90.met), (2_000.0, false));
        // p99: 1.5 × 4000 = 6000, no constant.
        let p99 = find("p99 µs at 10000/s");
        assert_eq!((p99.limit, p99.met), (6_000.0, false));
        // No D_open_50 measured: no goals at that rate.
        assert_eq!(goals.len(), 6);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }

    #[test]
    fn a_bench_section_is_replaced_in_place_or_appended() {
        let document = "# Benchmarks\n\nintro\n";
        let once = replace_section(document, "sqlite", "## Run 1\nfigures 1\n");
        assert!(once.starts_with("# Benchmarks\n\nintro\n\n<!-- loadtest bench: sqlite -->\n"));
        assert!(once.contains("figures 1"));
        let with_tail = format!("{once}\n## After\n");
        let twice = replace_section(&with_tail, "sqlite", "## Run 2\nfigures 2\n");
        assert!(!twice.contains("figures 1"));
        assert!(twice.contains("figures 2"));
        assert!(twice.ends_with("<!-- /loadtest bench: sqlite -->\n\n## After\n"));
        assert_eq!(twice.matches("<!-- loadtest bench: sqlite -->").count(), 1);
        // Another backend's section is its own.
        let both = replace_section(&twice, "postgres", "## PG\n");
        assert!(both.contains("figures 2"));
        assert!(both.contains("## PG"));
    }
}
