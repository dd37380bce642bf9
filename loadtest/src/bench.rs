//! `loadtest bench`: the whole comparison in one command, on this machine,
//! in one run (DESIGN.md, "Performance is measured against the machine
//! itself"). It starts `loadtest echo` and the switch (its embedded default,
//! a fresh data directory) as child processes, and measures with the same
//! frames, connections and CPUs:
//!
//! - `E_rr`, `E_pipe`: echo peak, one and `--in-flight` requests outstanding
//!   per connection (closed loop);
//! - `S_rr`, `S_pipe`: the switch's peak the same two ways, every answer
//!   durable;
//! - `D_rr`, `D_pipe`: the durable echo's peaks (`loadtest echo
//!   --durable`, each answer only after its record is synced to a file in
//!   the bench's temporary directory), the limit for a switch that answers
//!   once its record is durable;
//! - open-loop latency of E, D and the switch at one rate (`--open-rate`,
//!   10 000/s by default) and at 50% of `S_pipe`, and of the switch at 80%;
//!   with each server's CPU per request (and the load tester's own) from
//!   `/proc`;
//! - `K_append`: a request's journal record appended in batches with one
//!   `fdatasync` each, the disk's own limit for the durable echo;
//! - the journal database's own limits, `K_copy`, `K_1` and `L_1`
//!   (`storage::baseline`), measured against the same database while the
//!   switch is idle: a fresh SQLite file with the journal's schema and
//!   pragmas, or a scratch table in the switch's PostgreSQL database with
//!   `--backend postgres`.
//!
//! and prints the ratios, the goals of issue 12 among them. This file runs the servers and the measurements;
//! [`crate::bench_report`] holds the figures and writes them as a table,
//! JSON and Markdown.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use protocol::Spec;

use crate::bench_report::{BenchReport, Measurement, goals};
use crate::cpu::CpuReading;
use crate::error::Error;
use crate::goals::ratio;
use crate::run::{self, ProgressMode, RunConfig, Target};
use crate::units::{format_ns, to_u64_saturating};
use crate::workload::Workload;

/// What `loadtest bench` needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `switch` executable.
    pub switch: PathBuf,
    /// The switch configuration file.
    pub config: PathBuf,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u64,
    pub in_flight: usize,
    pub workload: Workload,
    pub progress: ProgressMode,
    pub backend: Backend,
    /// The open-loop rate E, D and the switch are compared at, requests/s.
    pub open_rate: f64,
    /// The overload scenario at the end, from S_pipe (`None`:
    /// `--no-overload`).
    pub overload: Option<OverloadConfig>,
}

/// The bench's overload scenario: its phases, deadline and in-flight.
#[derive(Debug, Clone)]
pub struct OverloadConfig {
    pub plan: crate::overload::Plan,
    pub deadline: Duration,
    pub in_flight: usize,
}

/// The switch's journal for the bench.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded default: the segment log in the bench's temporary data
    /// directory. It has no database: `K_append` is its limit.
    Log,
    /// SQLite in the bench's temporary data directory.
    Sqlite,
    /// PostgreSQL at this URL (passed to the switch as `--database-url`),
    /// and with a Redis URL a fleet node (`--redis-url`).
    Postgres {
        url: String,
        redis_url: Option<String>,
    },
}

impl Backend {
    /// The section's name: `log`, `sqlite`, `postgres` or `fleet`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Log => "log",
            Backend::Sqlite => "sqlite",
            Backend::Postgres {
                redis_url: None, ..
            } => "postgres",
            Backend::Postgres { .. } => "fleet",
        }
    }
}

/// What the switch's `/metrics` says of its journal: batches and records.
fn journal_figures(http: &str) -> Option<(u64, u64)> {
    let url = crate::http::HttpUrl::parse(&format!("http://{http}/metrics")).ok()?;
    let body = crate::http::get(&url, &admin_key()).ok()?;
    let text = String::from_utf8(body).ok()?;
    let value = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(to_u64_saturating)
    };
    Some((
        value("switch_journal_batches_total")?,
        value("switch_journal_records_total")?,
    ))
}

/// The switch's operator key: the published development key of
/// config/bench*.toml unless `LOADTEST_ADMIN_KEY` says otherwise.
fn admin_key() -> String {
    std::env::var("LOADTEST_ADMIN_KEY").unwrap_or_else(|_| "dev-admin-key".to_owned())
}

/// A child server, killed when dropped.
struct ChildServer {
    child: Child,
    name: String,
}

impl ChildServer {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` and waits up to 60 s for `find` to pick the addresses
/// out of one of its output lines (stdout for `loadtest echo`, stderr for
/// the switch's JSON log).
fn start_child(
    mut command: Command,
    name: &str,
    from_stderr: bool,
    find: fn(&str) -> Option<Vec<String>>,
) -> Result<(ChildServer, Vec<String>), Error> {
    let failed = |reason: String| Error::Child {
        program: name.to_owned(),
        reason,
    };
    command.stdin(Stdio::null());
    if from_stderr {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        command.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("cannot start: {e}")))?;
    let output: Box<dyn std::io::Read + Send> = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), _) if !from_stderr => Box::new(out),
        (_, Some(err)) => Box::new(err),
        _ => return Err(failed("no output to read".to_owned())),
    };
    let server = ChildServer {
        child,
        name: name.to_owned(),
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sender = Some(sender);
        // Keep reading to the end, so the child never blocks on a full pipe.
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = find(&line)
                && let Some(sender) = sender.take()
            {
                let _ = sender.send(found);
            }
        }
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(addresses) => Ok((server, addresses)),
        Err(_) => Err(failed(format!(
            "{} did not say where it listens within 60 s",
            server.name
        ))),
    }
}

fn echo_address(line: &str) -> Option<Vec<String>> {
    line.strip_prefix("listening on ")
        .map(|a| vec![a.trim().to_owned()])
}

fn switch_addresses(line: &str) -> Option<Vec<String>> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &json["fields"];
    if fields["message"] != "listening" {
        return None;
    }
    Some(vec![
        fields["iso"].as_str()?.to_owned(),
        fields["http"].as_str()?.to_owned(),
    ])
}

/// The `switch` beside this executable (both are built into one target
/// directory).
pub fn sibling_switch() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let switch = exe
        .parent()?
        .join(format!("switch{}", std::env::consts::EXE_SUFFIX));
    switch.exists().then_some(switch)
}

/// The machine, for the record: CPU model and count, kernel.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} x {cpu}, Linux {kernel}")
}

/// Runs the bench.
pub fn bench(config: &BenchConfig) -> Result<BenchReport, Error> {
    let exe = std::env::current_exe().map_err(Error::Start)?;
    let mut echo = Command::new(&exe);
    echo.args(["echo", "--listen", "127.0.0.1:0"]);
    let (echo_server, echo_addresses) = start_child(echo, "loadtest echo", false, echo_address)?;

    let data_dir = std::env::temp_dir().join(format!(
        "loadtest-bench-{}-{}",
        std::process::id(),
        crate::iso::run_tag() % 1_000_000
    ));
    // The durable echo's journal and K_append's file, on the disk the
    // switch's data directory is on.
    let durable_dir = data_dir.with_extension("durable");
    std::fs::create_dir_all(&durable_dir).map_err(|e| Error::file(&durable_dir, e))?;
    let mut durable = Command::new(&exe);
    durable
        .args(["echo", "--listen", "127.0.0.1:0", "--durable"])
        .arg(durable_dir.join("durable.journal"));
    let durable_server = start_child(durable, "loadtest echo --durable", false, echo_address);
    let (durable_server, durable_addresses) = match durable_server {
        Ok(started) => started,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&durable_dir);
            return Err(e);
        }
    };

    let mut switch = Command::new(&config.switch);
    switch
        .args(["serve", "--config"])
        .arg(&config.config)
        .args([
            "--iso-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "info");
    if let Backend::Postgres { url, redis_url } = &config.backend {
        switch.arg("--database-url").arg(url);
        if let Some(redis_url) = redis_url {
            switch.arg("--redis-url").arg(redis_url);
        }
    }
    let switch_name = config.switch.display().to_string();
    let started = start_child(switch, &switch_name, true, switch_addresses);
    let result = started.and_then(|(switch_server, switch_addresses)| {
        let servers = Servers {
            echo: (&echo_addresses, echo_server.pid()),
            durable: (&durable_addresses, durable_server.pid()),
            switch: (&switch_addresses, switch_server.pid()),
        };
        let report = measure_all(config, &servers, &data_dir, &durable_dir);
        drop(switch_server);
        report
    });
    drop(echo_server);
    drop(durable_server);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&durable_dir);
    result
}

/// The three servers measured: their addresses (ISO 8583 first) and
/// process ids.
struct Servers<'a> {
    echo: (&'a [String], u32),
    durable: (&'a [String], u32),
    switch: (&'a [String], u32),
}

/// One request frame of the bench's workload, as `loadtest iso` sends it:
/// the record `K_append` appends is made of it, as the durable echo's are.
fn sample_frame(spec: &Arc<Spec>, workload: &Workload) -> Vec<u8> {
    use crate::connection::Dialogue as _;
    let workload = Arc::new(workload.clone());
    let mut dialogue =
        crate::iso::IsoDialogue::new(Arc::clone(spec), Arc::clone(&workload), 0, 0, false);
    let mut frame = Vec::new();
    let _ = dialogue.write_request(0, &workload.plan(0), &mut frame);
    frame
}

fn measure_all(
    config: &BenchConfig,
    servers: &Servers<'_>,
    data_dir: &Path,
    durable_dir: &Path,
) -> Result<BenchReport, Error> {
    let spec = Arc::new(Spec::iso87()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Start)?;
    // The database's limits first, while the switch is idle.
    eprintln!("K_copy, K_1, L_1 on {} ...", config.backend.name());
    let size = storage::baseline::BaselineSize::default();
    let baselines = runtime
        .block_on(async {
            match &config.backend {
                Backend::Log => Ok(None),
                Backend::Sqlite => storage::baseline::sqlite(data_dir, size).await.map(Some),
                Backend::Postgres { url, .. } => {
                    storage::baseline::postgres(url, size).await.map(Some)
                }
            }
        })
        .map_err(|e| Error::Child {
            program: format!("{} baseline", config.backend.name()),
            reason: e.to_string(),
        })?;
    if let Some(baselines) = &baselines {
        eprintln!(
            "K_copy {:.0} rows/s, K_1 {:.0} commits/s, L_1 p50 {:.0} us, p99 {:.0} us",
            baselines.k_copy_rows_per_s,
            baselines.k_1_commits_per_s,
            baselines.l_1_us_p50,
            baselines.l_1_us_p99
        );
    }
    let mut record = Vec::new();
    crate::durable::append_record(&sample_frame(&spec, &config.workload), &mut record);
    let each = (config.duration / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
    eprintln!("K_append, {} bytes a record ...", record.len());
    let k_append =
        crate::durable::k_append(durable_dir, &record, &crate::durable::APPEND_BATCHES, each)
            .map_err(|e| Error::file(durable_dir, e))?;
    for rate in &k_append {
        eprintln!(
            "K_append {} a sync: {:.0} records/s",
            rate.batch, rate.records_per_s
        );
    }
    let target = |address: &str| Target::Iso {
        address: address.to_owned(),
        spec: Arc::clone(&spec),
    };
    let run_config = |address: &str, rate: Option<f64>, in_flight: usize| RunConfig {
        target: target(address),
        rate,
        duration: config.duration,
        then: Vec::new(),
        deadline: None,
        warmup: config.warmup,
        connections: config.connections,
        in_flight,
        timeout: Duration::from_secs(5),
        workload: config.workload.clone(),
        progress: config.progress,
        ack_log: None,
        hlog: None,
        tls: None,
        measure_start_to: None,
    };
    let first = |addresses: &[String]| addresses.first().cloned().unwrap_or_default();
    // Each measured server: the name's letter, the target's name, where.
    let echo = ("E", "echo", first(servers.echo.0), servers.echo.1);
    let durable = ("D", "durable", first(servers.durable.0), servers.durable.1);
    let switch = ("S", "switch", first(servers.switch.0), servers.switch.1);
    let mut measurements = Vec::new();
    let mut measure = |server: &(&str, &'static str, String, u32),
                       suffix: &str,
                       rate: Option<f64>,
                       in_flight: usize|
     -> Result<f64, Error> {
        let (letter, which, address, pid) = server;
        let name = format!("{letter}_{suffix}");
        let c = run_config(address, rate, in_flight);
        eprintln!("{name}: {} ...", describe(&c));
        let server_cpu = CpuReading::start(Some(*pid));
        let own_cpu = CpuReading::start(None);
        // Read before the run's runtime is dropped: its threads' time
        // leaves the per-thread counters with them.
        let runtime = run::runtime(&c)?;
        let result = runtime.block_on(run::run(&c))?;
        let cpu_ns = (server_cpu.used_ns(), own_cpu.used_ns());
        drop(runtime);
        let m = Measurement::new(&name, which, &c, &result, cpu_ns);
        eprintln!(
            "{name}: {:.1} req/s, p50 {}, p99 {}",
            m.rate_achieved,
            format_ns(to_u64_saturating(m.latency_us.p50 * 1e3)),
            format_ns(to_u64_saturating(m.latency_us.p99 * 1e3))
        );
        let rate = m.rate_achieved;
        measurements.push(m);
        Ok(rate)
    };
    let e_rr = measure(&echo, "rr", None, 1)?;
    let e_pipe = measure(&echo, "pipe", None, config.in_flight)?;
    measure(&durable, "rr", None, 1)?;
    measure(&durable, "pipe", None, config.in_flight)?;
    let s_rr = measure(&switch, "rr", None, 1)?;
    let s_pipe = measure(&switch, "pipe", None, config.in_flight)?;
    // E, D and the switch at the same rates, interleaved.
    let half = (s_pipe * 0.5).max(1.0).round();
    for (suffix, rate) in [("open", config.open_rate), ("open_50", half)] {
        for server in [&echo, &durable, &switch] {
            measure(server, suffix, Some(rate), config.in_flight)?;
        }
    }
    let eighty = (s_pipe * 0.8).max(1.0).round();
    measure(&switch, "open_80", Some(eighty), config.in_flight)?;
    let switch_http = servers
        .switch
        .0
        .get(1)
        .map(String::as_str)
        .unwrap_or_default();
    let journal = journal_figures(switch_http);
    // Last: the overload leaves the switch's queues and journal as it
    // leaves them, so nothing measured after it.
    let overload = match &config.overload {
        Some(overload) => {
            let base = RunConfig {
                timeout: Duration::from_secs(5),
                ..run_config(&switch.2, None, overload.in_flight)
            };
            let url = crate::http::HttpUrl::parse(&format!("http://{switch_http}")).map_err(
                |reason| Error::Child {
                    program: "switch".to_owned(),
                    reason: format!("its HTTP address: {reason}"),
                },
            )?;
            let scenario = crate::overload::Scenario {
                base,
                peak: crate::overload::Peak::Given(s_pipe),
                plan: overload.plan,
                deadline: overload.deadline,
                metrics: Some(crate::metrics::MetricsSource::new(url, admin_key())),
            };
            eprintln!("overload: {}x S_pipe ...", overload.plan.factor);
            Some(crate::overload::run(&scenario)?)
        }
        None => None,
    };
    let p99_80 = measurements
        .iter()
        .find(|m| m.name == "S_open_80")
        .map_or(0.0, |m| m.latency_us.p99);
    Ok(BenchReport {
        backend: config.backend.name(),
        machine: machine(),
        version: env!("CARGO_PKG_VERSION"),
        connections: config.connections,
        duration_s: config.duration.as_secs_f64(),
        ratio_rr: ratio(s_rr, e_rr),
        ratio_pipe: ratio(s_pipe, e_pipe),
        ratio_pipe_k_copy: baselines
            .as_ref()
            .map(|b| ratio(s_pipe, b.k_copy_rows_per_s)),
        ratio_pipe_k_1: baselines
            .as_ref()
            .map(|b| ratio(s_pipe, b.k_1_commits_per_s)),
        ratio_p99_80_l_1: baselines.as_ref().map(|b| ratio(p99_80, b.l_1_us_p50)),
        journal_batches: journal.map(|(batches, _)| batches),
        journal_records: journal.map(|(_, records)| records),
        baselines,
        goals: goals(&measurements),
        k_append,
        k_append_record_bytes: record.len(),
        measurements,
        overload,
    })
}

fn describe(c: &RunConfig) -> String {
    format!(
        "{} for {:?}, {} connections x {} in flight",
        c.rate
            .map_or("closed loop".to_owned(), |r| format!("{r} req/s")),
        c.duration,
        c.connections,
        c.in_flight
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_addresses_are_read_from_their_lines() {
        assert_eq!(
            echo_address("listening on 127.0.0.1:4000"),
            Some(vec!["127.0.0.1:4000".to_owned()])
        );
        assert_eq!(echo_address("hello"), None);
        let line = r#"{"level":"INFO","fields":{"message":"listening","iso":"127.0.0.1:1","http":"127.0.0.1:2"}}"#;
        assert_eq!(
            switch_addresses(line),
            Some(vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()])
        );
        assert_eq!(switch_addresses(r#"{"fields":{"message":"other"}}"#), None);
        assert!(!machine().is_empty());
    }
}
