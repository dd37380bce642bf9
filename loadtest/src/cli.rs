//! What each subcommand does: the flags of [`crate::args`] checked
//! together into a [`RunConfig`], a bench or a server configuration, then
//! run. Every error is one line that names the flag or the target, and
//! exits non-zero (2 for bad usage).

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use protocol::Spec;
use tokio::net::TcpListener;

use crate::args::{BenchArgs, Cli, Command, LoadArgs, Rate};
use crate::echo::{self, EchoConfig, Stall};
use crate::error::Error;
use crate::flags::{check_connections, check_http_mix, http_target, workload};
use crate::http::{self, HttpUrl};
use crate::issuer::{self, IssuerConfig};
use crate::report::{Summary, WorkloadLabels};
use crate::run::{self, ProgressMode, RunConfig, Target};
use crate::workload::{AmountDistribution, Kind, Mix, Workload};

/// Runs the command line `args` (the program name first) and returns the
/// process's exit code: 0 done, 1 failed, 2 bad usage.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = error.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = error.print();
                    ExitCode::from(2)
                }
                _ => {
                    // clap's message is several paragraphs (what is wrong,
                    // a tip, the usage); the first, joined into one line,
                    // says what is wrong and names the argument.
                    let text = error.to_string();
                    let first: Vec<&str> = text
                        .lines()
                        .map(str::trim)
                        .skip_while(|l| l.is_empty())
                        .take_while(|l| !l.is_empty())
                        .collect();
                    eprintln!("{} (see loadtest --help)", first.join(" "));
                    ExitCode::from(2)
                }
            };
        }
    };
    match execute(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loadtest")
        .build()
        .map_err(Error::Start)
}

fn execute(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Iso(args) => {
            let spec = Arc::new(Spec::resolve(&args.spec)?);
            let target = Target::Iso {
                address: args.target.clone(),
                spec,
            };
            load(target, args.mix, &args.load)
        }
        Command::Http(args) => {
            let target = http_target(&args.target, &args.api_key, args.idempotency_keys)?;
            load(target, Mix::default(), &args.load)
        }
        Command::Echo(args) => {
            let spec = Spec::resolve(&args.spec)?;
            let stall = match (args.stall_every, args.stall_for) {
                (Some(every), Some(length)) if !every.is_zero() && length < every => {
                    Some(Stall { every, length })
                }
                (Some(_), Some(_)) => {
                    return Err(Error::flag(
                        "stall-for",
                        "must be shorter than --stall-every",
                    ));
                }
                _ => None,
            };
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::server_config(
                    cert,
                    key,
                    args.tls_client_ca.as_deref(),
                )?),
                _ => None,
            };
            let journal = match &args.durable {
                Some(path) => Some(crate::durable::Journal::open(path).map_err(|e| {
                    Error::flag("durable", format!("{}: cannot open: {e}", path.display()))
                })?),
                None => None,
            };
            let config = EchoConfig {
                framing: spec.framing(),
                stall,
                tls,
                journal,
            };
            serve(&args.listen, |listener| echo::serve(listener, config))
        }
        Command::Issuer(args) => {
            let spec = Arc::new(Spec::resolve(&args.spec)?);
            for (flag, rate) in [
                ("decline-rate", args.decline_rate),
                ("silence-rate", args.silence_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(Error::flag(flag, "must be a fraction from 0 to 1"));
                }
            }
            let config = IssuerConfig {
                spec,
                latency: Duration::from_millis(args.latency_ms),
                decline_rate: args.decline_rate,
                silence_rate: args.silence_rate,
                seed: args.seed,
            };
            serve(&args.listen, |listener| issuer::serve(listener, config))
        }
        Command::Bench(args) => bench(&args),
        Command::Overload(args) => crate::overload::command(&args),
    }
}

fn bench(args: &BenchArgs) -> Result<ExitCode, Error> {
    let switch = match &args.switch {
        Some(path) => path.clone(),
        None => crate::bench::sibling_switch().ok_or_else(|| {
            Error::flag(
                "switch",
                "no `switch` beside loadtest; build it (cargo build --release -p switch) or name it",
            )
        })?,
    };
    let backend = match (args.backend.as_str(), &args.database_url) {
        ("postgres", Some(url)) => crate::bench::Backend::Postgres {
            url: url.clone(),
            redis_url: args.redis_url.clone(),
        },
        ("postgres", None) => {
            return Err(Error::flag(
                "database-url",
                "--backend postgres needs --database-url or DATABASE_URL",
            ));
        }
        _ if args.redis_url.is_some() => {
            return Err(Error::flag(
                "redis-url",
                "a fleet node journals in PostgreSQL: add --backend postgres",
            ));
        }
        ("sqlite", _) => crate::bench::Backend::Sqlite,
        _ => crate::bench::Backend::Log,
    };
    let config_file = args.config.clone().unwrap_or_else(|| match backend {
        crate::bench::Backend::Log => PathBuf::from("config/bench.log.toml"),
        crate::bench::Backend::Sqlite => PathBuf::from("config/bench.toml"),
        crate::bench::Backend::Postgres {
            redis_url: Some(_), ..
        } => PathBuf::from("config/bench.fleet.toml"),
        crate::bench::Backend::Postgres { .. } => PathBuf::from("config/bench.postgres.toml"),
    });
    let config_text = std::fs::read_to_string(&config_file)
        .map_err(|e| Error::flag("config", format!("{}: {e}", config_file.display())))?;
    let journal = journal_of(&config_text);
    let expected = match backend {
        crate::bench::Backend::Postgres { .. } => "postgres",
        ref embedded => embedded.name(),
    };
    if journal != expected {
        return Err(Error::flag(
            "config",
            format!(
                "{} journals in `{journal}`, not the bench's --backend `{expected}`: \
                 give --backend {journal}",
                config_file.display()
            ),
        ));
    }
    check_connections(args.connections, args.in_flight, "in-flight")?;
    check_connections(
        args.connections,
        args.overload_in_flight,
        "overload-in-flight",
    )?;
    if args.duration.is_zero() {
        return Err(Error::flag("duration", "must be more than 0"));
    }
    let overload = if args.no_overload {
        None
    } else {
        let plan = crate::overload::Plan {
            factor: args.overload_factor,
            calm: args.overload_calm,
            overload: args.overload_duration,
            recover: args.overload_recover,
        };
        plan.check(args.overload_deadline, Duration::from_secs(5))?;
        Some(crate::bench::OverloadConfig {
            plan,
            deadline: args.overload_deadline,
            in_flight: args.overload_in_flight,
        })
    };
    if !(args.open_rate.is_finite() && args.open_rate >= 1.0) {
        return Err(Error::flag("open-rate", "must be at least 1 request/s"));
    }
    let workload = Workload::new(
        args.seed,
        args.cards,
        0.0,
        AmountDistribution::LogNormal {
            median: 2500.0,
            sigma: 1.0,
        },
        Mix::default(),
        &["ACME0000001".to_owned()],
        0.0,
        840,
        "5411",
    )?;
    let config = crate::bench::BenchConfig {
        switch,
        config: config_file,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        in_flight: args.in_flight,
        workload,
        progress: ProgressMode::choose(args.progress, false),
        backend,
        open_rate: args.open_rate,
        overload,
    };
    let report = crate::bench::bench(&config)?;
    print!("{}", report.table());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::file(path, std::io::Error::other(e)))?;
        crate::bench_report::write(path, &(json + "\n"))?;
    }
    // The command as typed, without the URLs (they may hold a password).
    let mut previous = String::new();
    let command: Vec<String> = std::env::args()
        .map(|arg| {
            let shown = if arg.contains("://") {
                if previous == "--redis-url" {
                    "$REDIS_URL".to_owned()
                } else {
                    "$DATABASE_URL".to_owned()
                }
            } else {
                arg.clone()
            };
            previous = arg;
            shown
        })
        .collect();
    let section = report.markdown(&command.join(" "));
    if let Some(path) = &args.markdown {
        crate::bench_report::write(path, &section)?;
    }
    if let Some(path) = &args.docs {
        let document = std::fs::read_to_string(path).unwrap_or_default();
        let updated = crate::bench_report::replace_section(&document, report.backend, &section);
        crate::bench_report::write(path, &updated)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds `listen`, prints `listening on ADDR` (so scripts can read the
/// port when 0 was asked), and serves until interrupted.
fn serve<F, Fut>(listen: &str, server: F) -> Result<ExitCode, Error>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = runtime()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                address: listen.to_owned(),
                source,
            })?;
        let address: SocketAddr = listener.local_addr().map_err(|source| Error::Listen {
            address: listen.to_owned(),
            source,
        })?;
        println!("listening on {address}");
        let _ = std::io::stdout().flush();
        tokio::select! {
            result = server(listener) => result.map_err(|source| Error::Listen {
                address: address.to_string(),
                source,
            })?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The journal a switch configuration names in `[storage] backend`; the
/// segment log, the switch's default, when it names none.
fn journal_of(config: &str) -> String {
    let mut section = "";
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            section = line;
        } else if section == "[storage]"
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "backend"
        {
            return value.trim().trim_matches('"').to_owned();
        }
    }
    "log".to_owned()
}

/// Checks the shared load flags and builds the run's configuration.
pub fn run_config(target: Target, mix: Mix, args: &LoadArgs) -> Result<RunConfig, Error> {
    check_connections(args.connections, args.in_flight, "in-flight")?;
    if args.duration.is_zero() {
        return Err(Error::flag("duration", "must be more than 0"));
    }
    if args.timeout < Duration::from_millis(1) {
        return Err(Error::flag("timeout", "must be at least 1ms"));
    }
    if !args.then.is_empty() && args.rate == Rate::Max {
        return Err(Error::flag(
            "then",
            "phases follow an open-loop --rate, not --rate max",
        ));
    }
    if args
        .deadline
        .is_some_and(|deadline| deadline.is_zero() || deadline > args.timeout)
    {
        return Err(Error::flag(
            "deadline",
            "must be more than 0 and at most --timeout",
        ));
    }
    let https = matches!(&target, Target::Http { url, .. } if url.tls);
    let tls = args.tls.options(https)?;
    check_http_mix(&target, &mix)?;
    let workload = workload(mix, &args.workload)?;
    Ok(RunConfig {
        target,
        rate: match args.rate {
            Rate::PerSecond(rate) => Some(rate),
            Rate::Max => None,
        },
        duration: args.duration,
        then: args.then.clone(),
        deadline: args.deadline,
        warmup: args.warmup,
        connections: args.connections,
        in_flight: args.in_flight,
        timeout: args.timeout,
        workload,
        progress: ProgressMode::choose(args.progress, args.no_progress),
        ack_log: args.ack_log.clone(),
        hlog: args.hlog.clone(),
        tls,
        measure_start_to: None,
    })
}

fn load(target: Target, mix: Mix, args: &LoadArgs) -> Result<ExitCode, Error> {
    let mix_label = mix.kinds().map(Kind::mti).collect::<Vec<_>>().join(",");
    let config = run_config(target, mix, args)?;
    let admin = args
        .admin
        .as_deref()
        .map(|url| HttpUrl::parse(url).map_err(|reason| Error::flag("admin", reason)))
        .transpose()?;
    let runtime = run::runtime(&config)?;
    let result = runtime.block_on(run::run(&config))?;
    let stages = admin.map(|url| http::fetch_admin_latency(&url, &args.admin_key));
    let labels = WorkloadLabels {
        amount: args.workload.amount.clone(),
        mix: mix_label,
        zipf: args.workload.zipf,
    };
    let summary = Summary::new(&config, &labels, &result, stages);
    print!("{}", summary.table());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::file(path, std::io::Error::other(e)))?;
        std::fs::write(path, json + "\n").map_err(|e| Error::file(path, e))?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "loadtest {} {} · {} · {} connections x {} in flight",
            summary.protocol,
            summary.target,
            summary
                .rate_offered
                .map_or("closed loop".to_owned(), |r| format!("{r} req/s")),
            summary.connections,
            summary.in_flight
        );
        crate::plot::write_svg(
            path,
            &title,
            &result.intervals,
            &result.totals.latency_all(),
        )?;
    }
    let counts = result.totals.counts_all();
    if counts.received == 0 {
        return Err(Error::Target {
            target: config.target.authority().to_owned(),
            reason: format!(
                "no response to {} requests ({} timeouts, {} errors)",
                counts.sent, counts.timeouts, counts.errors
            ),
        });
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_read_from_the_storage_section() {
        assert_eq!(journal_of("[iso]\nlisten = \"x\"\n"), "log");
        assert_eq!(
            journal_of("[storage]\nbackend = \"sqlite\"   # embedded\n"),
            "sqlite"
        );
        assert_eq!(
            journal_of("[fleet]\nbackend = \"redis\"\n[storage]\nbackend = \"postgres\"\n"),
            "postgres"
        );
        assert_eq!(journal_of("# backend = \"sqlite\"\n[storage]\n"), "log");
        for (file, journal) in [
            ("bench.toml", "sqlite"),
            ("bench.log.toml", "log"),
            ("bench.postgres.toml", "postgres"),
            ("bench.fleet.toml", "postgres"),
        ] {
            let path = format!("{}/../config/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(journal_of(&text), journal, "{file}");
        }
    }
}
