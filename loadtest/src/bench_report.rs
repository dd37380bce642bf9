//! What `loadtest bench` measured and how it is shown: the
//! [`BenchReport`] (what `--report` writes as JSON), the table printed at
//! the end, and the Markdown section for `docs/BENCHMARKS.md` that
//! `--markdown` writes and `--docs` puts in place.

use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::report::{Percentiles, rate_per_s};
use crate::run::{RunConfig, RunResult};
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
}

/// Everything `loadtest bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `sqlite`, `postgres` or `fleet` (PostgreSQL and Redis).
    pub backend: &'static str,
    pub machine: String,
    pub version: &'static str,
    pub connections: u64,
    pub duration_s: f64,
    pub measurements: Vec<Measurement>,
    /// The journal database's own limits in the same run.
    pub baselines: storage::baseline::Baselines,
    /// `S_rr / E_rr`.
    pub ratio_rr: f64,
    /// `S_pipe / E_pipe`.
    pub ratio_pipe: f64,
    /// `S_pipe / K_copy`.
    pub ratio_pipe_k_copy: f64,
    /// `S_pipe / K_1`.
    pub ratio_pipe_k_1: f64,
    /// p99 at 80% of `S_pipe` over `L_1`'s median.
    pub ratio_p99_80_l_1: f64,
    /// The switch's journal over the whole run, from its `/metrics`:
    /// commits and the records they carried (`None` if it could not be read).
    pub journal_batches: Option<u64>,
    pub journal_records: Option<u64>,
}

impl Measurement {
    /// The measurement `name` of `target`, a run of `config` that gave `result`.
    pub fn new(
        name: &str,
        target: &'static str,
        config: &RunConfig,
        result: &RunResult,
    ) -> Measurement {
        let counts = result.totals.counts_all();
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
        }
    }
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
            "{:<11} {:<7} {:>12} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}\n",
            "measure",
            "target",
            "offered/s",
            "in flight",
            "achieved/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "timeouts",
            "approved"
        ));
        for m in &self.measurements {
            let l = &m.latency_us;
            let us = |v: f64| format_ns(to_u64_saturating(v * 1e3));
            out.push_str(&format!(
                "{:<11} {:<7} {:>12} {:>10} {:>12.1} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}\n",
                m.name,
                m.target,
                m.rate_offered
                    .map_or("max".to_owned(), |r| format!("{r:.0}")),
                m.in_flight,
                m.rate_achieved,
                us(l.p50),
                us(l.p99),
                us(l.p999),
                us(l.max),
                m.timeouts,
                m.approved
            ));
        }
        out.push_str(&format!(
            "\nS_rr / E_rr = {:.3} · S_pipe / E_pipe = {:.3}\n",
            self.ratio_rr, self.ratio_pipe
        ));
        out.push_str(&self.baseline_lines());
        out
    }

    /// The database's limits and the ratios to them.
    fn baseline_lines(&self) -> String {
        let b = &self.baselines;
        let batches = match (self.journal_batches, self.journal_records) {
            (Some(batches), Some(records)) if batches > 0 => format!(
                "journal over the run: {records} records in {batches} commits, {:.1} a commit on average\n",
                to_f64(records) / to_f64(batches)
            ),
            _ => {
                "journal batch sizes: not read (the switch's /metrics did not answer)\n".to_owned()
            }
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
                self.ratio_pipe_k_copy,
                self.ratio_pipe_k_1,
                self.ratio_p99_80_l_1
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
                _ => "embedded SQLite journal",
            }
        ));
        out.push_str(&format!(
            "Machine: {}. loadtest {}. Command: `{command}`.\n\n",
            self.machine, self.version
        ));
        out.push_str("| measure | target | offered/s | in flight | achieved/s | p50 µs | p99 µs | p99.9 µs | max µs | timeouts |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.measurements {
            let l = &m.latency_us;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
                m.name,
                m.target,
                m.rate_offered
                    .map_or("max".to_owned(), |r| format!("{r:.0}")),
                m.in_flight,
                m.rate_achieved,
                l.p50,
                l.p99,
                l.p999,
                l.max,
                m.timeouts
            ));
        }
        out.push_str(&format!(
            "\nS_rr / E_rr = {:.3}; S_pipe / E_pipe = {:.3}.\n\n",
            self.ratio_rr, self.ratio_pipe
        ));
        out.push_str(&self.baseline_lines().replace('\n', "\n\n"));
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
