//! The command line's flags: one clap type per subcommand, the flags `iso`
//! and `http` share, and the parsers of their values (`--rate`, durations).
//! [`crate::cli`] checks what they mean together and runs the subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::schedule::RatePhase;
use crate::tls::TlsOptions;
use crate::workload::Mix;

/// Open-loop load for a card switch: ISO 8583 over TCP and its JSON API,
/// with latency taken from each request's intended send time
/// (coordinated-omission correct), HdrHistogram percentiles, `.hlog`
/// interval logs, plots, and the echo and issuer servers to compare with.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a switch (or `loadtest echo`) over ISO 8583 on TCP.
    Iso(IsoArgs),
    /// Load the JSON API: POST /v1/authorizations.
    Http(HttpArgs),
    /// Echo every frame back: the machine's own limit for the same frames.
    Echo(EchoArgs),
    /// An issuer host answering 0100/0200/0400 with 0110/0210/0410.
    Issuer(IssuerArgs),
    /// Echo and durable echo baselines against the switch, same frames, one
    /// command: E_rr, E_pipe, D_rr, D_pipe, the switch's peaks, open-loop
    /// latency and CPU per request of all three at one rate and at 50%,
    /// and a short overload scenario.
    Bench(BenchArgs),
    /// The overload scenario in one command: the target's own peak
    /// (closed loop), then open loop at 50% of it, FACTOR times it and
    /// 50% again against a deadline; goodput, sheds (by the switch's
    /// reasons with --metrics-url), late answers, admitted p99, recovery,
    /// and the goals of issue 13.
    Overload(OverloadArgs),
}

/// Requests outstanding per connection in the overload scenario's phases,
/// by default: 8 connections hold 4 096, as many as issue 13's 64 x 64 run
/// did, so a switch that queues instead of shedding is offered the
/// overload and not throttled by the load tester.
pub const OVERLOAD_IN_FLIGHT_DEFAULT: usize = 512;

#[derive(Debug, Args)]
pub struct OverloadArgs {
    /// The switch's ISO 8583 listener, HOST:PORT; with `--protocol http`
    /// its HTTP listener, http://HOST:PORT (path defaults to
    /// /v1/authorizations).
    #[arg(long, value_name = "HOST:PORT|URL")]
    pub target: String,
    /// `iso` (ISO 8583 over TCP) or `http` (the JSON API).
    #[arg(long, default_value = "iso", value_parser = ["iso", "http"])]
    pub protocol: String,
    /// ISO 8583 dialect: a built-in (iso87, iso87-hex) or a spec file.
    #[arg(long, default_value = "iso87")]
    pub spec: String,
    /// ISO 8583 request types and their weights (0100, 0200, 0400, 0800).
    #[arg(long, default_value = "0100=100", value_parser = Mix::parse, value_name = "MTI=W,..")]
    pub mix: Mix,
    /// The merchant's API key (`--protocol http`).
    #[arg(
        long,
        env = "LOADTEST_API_KEY",
        hide_env_values = true,
        default_value = "dev-merchant-key-acme"
    )]
    pub api_key: String,
    /// The peak in requests/s, instead of measuring it.
    #[arg(long, value_parser = parse_open_rate, value_name = "RATE")]
    pub peak: Option<f64>,
    /// How long the closed-loop run that measures the peak lasts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub peak_duration: Duration,
    /// Requests outstanding per connection in the peak run (as `loadtest
    /// bench` measures S_pipe).
    #[arg(long, default_value_t = 16)]
    pub peak_in_flight: usize,
    /// The overload phase offers this many times the peak.
    #[arg(long, default_value_t = 3.0)]
    pub factor: f64,
    /// The first phase, at 50% of the peak.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub calm: Duration,
    /// The overload phase, at FACTOR times the peak.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub overload: Duration,
    /// The last phase, at 50% of the peak again: how the target recovers.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub recover: Duration,
    /// How long an answer stays useful to the acquirer: later ones are
    /// late, not goodput.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Load at 50% before the first phase; not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// TCP connections.
    #[arg(long, default_value_t = 8)]
    pub connections: u64,
    /// Requests outstanding per connection at most in the phases: room for
    /// the overload to queue, so the load tester offers what it is asked.
    #[arg(long, default_value_t = OVERLOAD_IN_FLIGHT_DEFAULT)]
    pub in_flight: usize,
    /// A request not answered this long after its intended send time is a
    /// timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The switch's HTTP listener (http://HOST:PORT; path defaults to
    /// /metrics): its Prometheus text is read at each phase's start and
    /// end, for sheds by reason, answers after their deadline and the
    /// admission limit.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    /// Bearer key for --metrics-url: the switch's operator key.
    #[arg(
        long,
        env = "LOADTEST_ADMIN_KEY",
        hide_env_values = true,
        default_value = "dev-admin-key"
    )]
    pub metrics_key: String,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Print progress even when stderr is not a terminal (one line a second).
    #[arg(long, conflicts_with = "no_progress")]
    pub progress: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The switch executable [default: `switch` beside this one].
    #[arg(long, value_name = "PATH")]
    pub switch: Option<PathBuf>,
    /// Switch configuration (a fresh temporary data directory is used)
    /// [default: config/bench.log.toml; config/bench.toml with `--backend
    /// sqlite`, config/bench.postgres.toml with `--backend postgres`].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The switch's journal: `log` (the embedded segment log, the switch's
    /// default), `sqlite` (embedded) or `postgres`. It must be the journal
    /// `--config` names.
    #[arg(long, default_value = "log", value_parser = ["log", "sqlite", "postgres"])]
    pub backend: String,
    /// PostgreSQL for `--backend postgres`; the switch journals there and
    /// K_copy, K_1 and L_1 are measured in the same database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis for a fleet node (with `--backend postgres`): card velocity and
    /// duplicate keys checked in Redis on every request
    /// [default config: config/bench.fleet.toml].
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// How long each measurement lasts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before each measurement; not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// TCP connections.
    #[arg(long, default_value_t = 8)]
    pub connections: u64,
    /// Requests outstanding per connection for the pipelined figures.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// The open-loop rate the echo, the durable echo and the switch are
    /// all measured at (requests/s), beside 50% of the switch's S_pipe.
    #[arg(long, default_value_t = 10_000.0)]
    pub open_rate: f64,
    /// Distinct cards.
    #[arg(long, default_value_t = 100_000)]
    pub cards: u64,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the figures as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write the figures as a Markdown section (for docs/BENCHMARKS.md).
    #[arg(long, value_name = "FILE.md")]
    pub markdown: Option<PathBuf>,
    /// Replace this backend's section of a Markdown document in place (for
    /// example docs/BENCHMARKS.md), or append it.
    #[arg(long, value_name = "FILE.md")]
    pub docs: Option<PathBuf>,
    /// Print progress even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Skip the overload scenario at the end.
    #[arg(long)]
    pub no_overload: bool,
    /// The overload scenario's first phase, at 50% of S_pipe.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub overload_calm: Duration,
    /// Its overload phase, at --overload-factor times S_pipe.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub overload_duration: Duration,
    /// Its last phase, at 50% of S_pipe again.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub overload_recover: Duration,
    /// How many times S_pipe the overload phase offers.
    #[arg(long, default_value_t = 3.0)]
    pub overload_factor: f64,
    /// Its deadline: later answers are late, not goodput.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub overload_deadline: Duration,
    /// Requests outstanding per connection at most in its phases.
    #[arg(long, default_value_t = OVERLOAD_IN_FLIGHT_DEFAULT)]
    pub overload_in_flight: usize,
}

#[derive(Debug, Args)]
pub struct IsoArgs {
    /// The switch's ISO 8583 listener, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// Dialect: a built-in (iso87, iso87-hex) or a spec file.
    #[arg(long, default_value = "iso87")]
    pub spec: String,
    /// Request types and their weights: 0100 authorization, 0200 purchase,
    /// 0400 reversal of an earlier approval, 0800 echo.
    #[arg(long, default_value = "0100=100", value_parser = Mix::parse, value_name = "MTI=W,..")]
    pub mix: Mix,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The switch's HTTP listener, http://HOST:PORT (path defaults to
    /// /v1/authorizations).
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// The merchant's API key; `--merchants` must be that merchant.
    #[arg(
        long,
        env = "LOADTEST_API_KEY",
        hide_env_values = true,
        default_value = "dev-merchant-key-acme"
    )]
    pub api_key: String,
    /// Send every request with an `Idempotency-Key` of its own, so each is
    /// claimed and its reply stored (what an idempotent request costs).
    #[arg(long)]
    pub idempotency_keys: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Flags shared by `iso` and `http`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Requests per second over all connections (`50000`, `50k`), or `max`
    /// for closed loop: every connection keeps --in-flight outstanding.
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub rate: Rate,
    /// How long to measure (`10s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// After --duration at --rate, go on at RATE for DURATION (`60k:30s`);
    /// repeat for more phases (`loadtest overload` runs the overload
    /// scenario's phases from a measured peak).
    #[arg(long, value_name = "RATE:DURATION", value_parser = parse_phase)]
    pub then: Vec<RatePhase>,
    /// How long an answer stays useful to the acquirer: answers later than
    /// this after their intended send time are counted late, not as
    /// goodput [default: --timeout].
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// How long to load before measuring; not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// TCP connections.
    #[arg(long, default_value_t = 8)]
    pub connections: u64,
    /// Requests outstanding per connection at most.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// A request not answered this long after its intended send time is a
    /// timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Write the results as JSON (percentiles in microseconds).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram per second,
    /// nanoseconds; untagged: all requests, tagged by MTI when mixed).
    #[arg(long, value_name = "FILE.hlog")]
    pub hlog: Option<PathBuf>,
    /// Draw latency over time and the percentile spectrum.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write one line per approval: STAN terminal RRN auth-code (HTTP:
    /// `-` terminal transaction-id auth-code), warmup included.
    #[arg(long, value_name = "FILE")]
    pub ack_log: Option<PathBuf>,
    /// The switch's HTTP base URL; its /admin/latency stages are printed
    /// beside loadtest's own at the end.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Admin credential for --admin.
    #[arg(
        long,
        env = "LOADTEST_ADMIN_KEY",
        hide_env_values = true,
        default_value = "dev-admin-key"
    )]
    pub admin_key: String,
    /// Print progress even when stderr is not a terminal (one line a second).
    #[arg(long, conflicts_with = "no_progress")]
    pub progress: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// What is sent: cards, amounts, merchants (shared by `iso`, `http` and
/// `overload`).
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Distinct cards (the demo config approves 5 per card per minute).
    #[arg(long, default_value_t = 10_000)]
    pub cards: u64,
    /// Zipf exponent of card popularity; 0 is uniform.
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Amounts in minor units: N, MIN-MAX, or lognormal:MEDIAN:SIGMA.
    #[arg(long, default_value = "lognormal:2500:1.0")]
    pub amount: String,
    /// Fraction of requests whose PAN fails the Luhn check.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_cards: f64,
    /// Merchant ids (DE42, space-padded to 15), comma-separated.
    #[arg(long, default_value = "ACME0000001", value_delimiter = ',')]
    pub merchants: Vec<String>,
    /// Merchant category code (DE18, `mcc`).
    #[arg(long, default_value = "5411")]
    pub mcc: String,
    /// Currency, ISO 4217 numeric (DE49).
    #[arg(long, default_value_t = 840)]
    pub currency: u16,
    /// Seed of the workload: same seed, same cards, amounts and types.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// TLS for the load's connections (an https:// target implies --tls).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Speak TLS 1.2/1.3 to the target (ISO 8583 over TLS, or HTTPS).
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the target's certificate must chain to.
    #[arg(long, value_name = "FILE.pem")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS.
    #[arg(long, value_name = "FILE.pem", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE.pem", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the target's certificate must carry [default: the target's host].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The options when TLS is asked for (or implied by `https`).
    pub fn options(&self, implied: bool) -> Result<Option<TlsOptions>, Error> {
        let any_option =
            self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some();
        if !(self.tls || implied) {
            if any_option {
                return Err(Error::flag(
                    "tls",
                    "--tls-ca, --tls-cert and --tls-server-name need --tls (or an https:// target)",
                ));
            }
            return Ok(None);
        }
        Ok(Some(TlsOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        }))
    }
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on, HOST:PORT (port 0 picks one; it is printed).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Dialect whose length header frames the stream.
    #[arg(long, default_value = "iso87")]
    pub spec: String,
    /// Stall the whole server this often (with --stall-for), to show a run
    /// sees server pauses.
    #[arg(long, value_parser = parse_duration, requires = "stall_for")]
    pub stall_every: Option<Duration>,
    /// How long each stall lasts.
    #[arg(long, value_parser = parse_duration, requires = "stall_every")]
    pub stall_for: Option<Duration>,
    /// Serve TLS with this certificate chain (PEM): the echo baseline for a
    /// switch behind TLS pays for the same encryption.
    #[arg(long, value_name = "FILE.pem", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE.pem", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask for a client certificate signed by these CAs (mutual TLS).
    #[arg(long, value_name = "FILE.pem", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The durable echo: answer each request only after a record of it is
    /// appended to FILE (created if absent) and synced (`fdatasync`), in
    /// group commits whose size follows the load.
    #[arg(long, value_name = "FILE")]
    pub durable: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IssuerArgs {
    /// Address to listen on, HOST:PORT (port 0 picks one; it is printed).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Dialect.
    #[arg(long, default_value = "iso87")]
    pub spec: String,
    /// Milliseconds from reading a request to answering it.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction of card requests declined with 05.
    #[arg(long, default_value_t = 0.0)]
    pub decline_rate: f64,
    /// Fraction of requests never answered (0800 always is).
    #[arg(long, default_value_t = 0.0)]
    pub silence_rate: f64,
    /// Seed of the decline and silence draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `--rate`: requests per second, or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    Max,
}

/// Parses `max`, `5000`, `2.5k`, `1M`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let (number, scale) = match text.char_indices().last() {
        Some((at, 'k' | 'K')) => (&text[..at], 1e3),
        Some((at, 'm' | 'M')) => (&text[..at], 1e6),
        _ => (text, 1.0),
    };
    let rate = number
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e8)
        .ok_or_else(|| format!("`{text}` is not a rate: give requests per second or `max`"))?;
    Ok(Rate::PerSecond(rate))
}

/// Parses an open-loop rate (`--peak`): as `--rate`, without `max`.
pub fn parse_open_rate(text: &str) -> Result<f64, String> {
    match parse_rate(text)? {
        Rate::PerSecond(rate) => Ok(rate),
        Rate::Max => Err("give requests per second".to_owned()),
    }
}

/// Parses a `--then` phase, `RATE:DURATION` (as `60k:30s`).
pub fn parse_phase(text: &str) -> Result<RatePhase, String> {
    let (rate, duration) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not RATE:DURATION (as `60k:30s`)"))?;
    let Rate::PerSecond(rate) = parse_rate(rate)? else {
        return Err("a phase is open loop: give its rate in requests per second".into());
    };
    let duration = parse_duration(duration)?;
    if duration.is_zero() {
        return Err(format!("`{text}`: a phase lasts more than 0"));
    }
    Ok(RatePhase { rate, duration })
}

/// Parses `10s`, `500ms`, `250us`, `2m`, `1h`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration such as 10s, 500ms or 2m");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("5000"), Ok(Rate::PerSecond(5000.0)));
        assert_eq!(parse_rate("2.5k"), Ok(Rate::PerSecond(2500.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn phases_parse() {
        assert_eq!(
            parse_phase("60k:30s"),
            Ok(RatePhase {
                rate: 60_000.0,
                duration: Duration::from_secs(30)
            })
        );
        assert!(parse_phase("max:1s").is_err());
        assert!(parse_phase("10k").is_err());
        assert!(parse_phase("10k:0s").is_err());
        assert!(parse_phase("fast:1s").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
