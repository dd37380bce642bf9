//! One load run from start to drain: connect every connection (a target
//! that refuses is an error before anything is measured), start the pacer,
//! and once a second move what the connections recorded into the totals,
//! the `.hlog`, the ack log and the progress line.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::Spec;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::clock::Instant;
use crate::connection::{self, Connection};
use crate::error::Error;
use crate::http::{HttpDialogue, HttpUrl};
use crate::iso::{IsoDialogue, run_tag};
use crate::schedule::{Pacer, RatePhase, Schedule};
use crate::stats::{Shard, Tally};
use crate::tls::{TlsClient, TlsOptions, Transport};
use crate::units::{format_ns, to_f64};
use crate::workload::Workload;

/// What is loaded.
#[derive(Debug, Clone)]
pub enum Target {
    /// ISO 8583 over TCP at `address` (`host:port`).
    Iso { address: String, spec: Arc<Spec> },
    /// The JSON API at `url`; with `idempotency_keys`, every request
    /// carries an `Idempotency-Key` of its own.
    Http {
        url: HttpUrl,
        api_key: String,
        idempotency_keys: bool,
    },
}

impl Target {
    /// `host:port` to connect to.
    pub fn authority(&self) -> &str {
        match self {
            Target::Iso { address, .. } => address,
            Target::Http { url, .. } => &url.authority,
        }
    }
}

/// Where the progress line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Off,
    /// A line redrawn in place (stderr is a terminal).
    Terminal,
    /// One line a second (`--progress` without a terminal, as in CI logs).
    Lines,
}

impl ProgressMode {
    /// `Terminal` when stderr is one, else `Lines` if forced, else `Off`.
    pub fn choose(forced: bool, disabled: bool) -> ProgressMode {
        if disabled {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Terminal
        } else if forced {
            ProgressMode::Lines
        } else {
            ProgressMode::Off
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    /// Requests per second; `None` for closed loop (`--rate max`).
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Open loop: later phases at other rates (`--then`).
    pub then: Vec<RatePhase>,
    /// Answers later than this after their intended time are late, not
    /// goodput (`--deadline`; `None`: the timeout).
    pub deadline: Option<Duration>,
    pub warmup: Duration,
    pub connections: u64,
    pub in_flight: usize,
    pub timeout: Duration,
    pub workload: Workload,
    pub progress: ProgressMode,
    pub ack_log: Option<PathBuf>,
    pub hlog: Option<PathBuf>,
    /// TLS (and a client certificate) for every connection.
    pub tls: Option<TlsOptions>,
    /// Told when measuring starts (once every connection is up), so what
    /// is read beside the run, as the switch's metrics at each phase's
    /// start, lines up with the measured phases.
    pub measure_start_to: Option<std::sync::mpsc::Sender<Instant>>,
}

/// One second of the measured run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct IntervalPoint {
    /// Seconds from the start of measuring to the end of the interval.
    pub end_s: f64,
    pub length_s: f64,
    /// Responses recorded in the interval.
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// Answers neither shed nor later than the deadline: what the
    /// acquirers could use.
    pub good: u64,
    /// Answers that refused the request (91, HTTP 503 or 429).
    pub shed: u64,
    /// Answers later than the deadline, shed or not.
    pub late: u64,
    /// p99 of the answers that were not shed.
    pub admitted_p99_ns: u64,
}

impl RunConfig {
    /// The measured time: `duration` and every later phase.
    pub fn measured(&self) -> Duration {
        crate::schedule::measured(self.duration, &self.then)
    }

    /// The highest rate asked for; `None` for closed loop.
    pub fn rate_max(&self) -> Option<f64> {
        let rate = self.rate?;
        Some(
            self.then
                .iter()
                .map(|phase| phase.rate)
                .fold(rate, f64::max),
        )
    }

    /// How long an answer is useful: `--deadline`, else `--timeout`.
    pub fn deadline(&self) -> Duration {
        self.deadline.unwrap_or(self.timeout)
    }

    /// [`RunConfig::deadline`] in nanoseconds, as latencies are recorded.
    pub fn deadline_ns(&self) -> u64 {
        u64::try_from(self.deadline().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    pub totals: Tally,
    /// The totals of each rate phase (one for a run without `--then`), by
    /// when answers came: an interval counts in the phase its middle falls
    /// in, and what is answered after the schedule ends in the last.
    pub phases: Vec<Tally>,
    pub intervals: Vec<IntervalPoint>,
    /// Wall-clock time measuring started.
    pub measure_started_at: SystemTime,
    /// From the start of measuring until the last response or timeout.
    pub elapsed: Duration,
    pub acks_written: u64,
}

/// Open-loop rates up to this many requests a second run every connection
/// on one thread.
pub const ONE_THREAD_RATE_MAX: f64 = 25_000.0;

/// The runtime to run `config` on. Closed loop, and open loop above
/// [`ONE_THREAD_RATE_MAX`], use a worker thread per core: a peak must not
/// be the load tester's. Open loop below it uses one: the pacer wakes a
/// connection for nearly every request, and with two workers each wake-up
/// also woke the idle sibling to look for work (`perf trace`: two `futex`
/// calls and two context switches more per request at 10 000/s, on the
/// cores the server is measured on), while one thread carries such a rate
/// with most of a core to spare. Its send lag is in every report.
pub fn runtime(config: &RunConfig) -> Result<tokio::runtime::Runtime, Error> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config
        .rate_max()
        .is_some_and(|rate| rate <= ONE_THREAD_RATE_MAX)
    {
        builder.worker_threads(1);
    }
    builder
        .enable_all()
        .thread_name("loadtest")
        .build()
        .map_err(Error::Start)
}

/// Connections share this many recorders at most; more would only cost
/// memory (each holds histograms), fewer would make them contend.
const SHARDS_MAX: usize = 16;

/// Runs a load test as configured.
pub async fn run(config: &RunConfig) -> Result<RunResult, Error> {
    let authority = config.target.authority().to_owned();
    let mut ack_log = match &config.ack_log {
        Some(path) => Some((
            BufWriter::new(File::create(path).map_err(|e| Error::file(path, e))?),
            path.clone(),
        )),
        None => None,
    };
    let mut hlog_file = match &config.hlog {
        Some(path) => Some((
            BufWriter::new(File::create(path).map_err(|e| Error::file(path, e))?),
            path.clone(),
        )),
        None => None,
    };

    let address = resolve(&authority).await?;
    let tls = match &config.tls {
        Some(options) => {
            let host = authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(host, _)| host);
            Some(Arc::new(TlsClient::new(options, host)?))
        }
        None => None,
    };
    // `--connections` is at most 10 000, so it fits (the capacity is a hint).
    let mut streams = Vec::with_capacity(usize::try_from(config.connections).unwrap_or(0));
    for _ in 0..config.connections {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            Transport::connect(address, tls.as_deref()),
        )
        .await
        .map_err(|_| Error::Connect {
            target: authority.clone(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out after 5 s"),
        })?
        .map_err(|source| Error::Connect {
            target: authority.clone(),
            source,
        })?;
        streams.push(stream);
    }

    let workload = Arc::new(config.workload.clone());
    let kinds: Vec<_> = workload.mix.kinds().collect();
    let shard_count = usize::try_from(config.connections)
        .unwrap_or(usize::MAX)
        .clamp(1, SHARDS_MAX);
    let shards: Vec<Arc<Mutex<Shard>>> = (0..shard_count)
        .map(|_| Arc::new(Mutex::new(Shard::default())))
        .collect();
    let wakers: Vec<Arc<Notify>> = (0..config.connections)
        .map(|_| Arc::new(Notify::new()))
        .collect();
    // A few milliseconds for the tasks to start before request 0 is due.
    let schedule = Arc::new(Schedule {
        start: Instant::now() + Duration::from_millis(20),
        rate: config.rate,
        warmup: config.warmup,
        duration: config.duration,
        connections: config.connections,
        then: config.then.clone(),
    });
    let measure_start = schedule.measure_start();
    if let Some(to) = &config.measure_start_to {
        // Nobody listening any more is no reason to stop the run.
        let _ = to.send(measure_start);
    }
    let measure_started_at =
        SystemTime::now() + measure_start.saturating_duration_since(Instant::now());

    let tag = run_tag();
    let mut tasks = JoinSet::new();
    // Connection `id` records into shard `id % shard_count`.
    let connections = streams.into_iter().zip(&wakers).zip(shards.iter().cycle());
    for (id, ((stream, waker), shard)) in (0u64..).zip(connections) {
        let shard = Arc::clone(shard);
        let waker = Arc::clone(waker);
        let ack = ack_log.is_some();
        macro_rules! spawn_with {
            ($dialogue:expr) => {
                tasks.spawn(connection::drive(Connection {
                    id,
                    stream,
                    address,
                    tls: tls.clone(),
                    dialogue: $dialogue,
                    schedule: Arc::clone(&schedule),
                    workload: Arc::clone(&workload),
                    waker,
                    shard,
                    in_flight_max: config.in_flight,
                    timeout: config.timeout,
                }))
            };
        }
        match &config.target {
            Target::Iso { spec, .. } => spawn_with!(IsoDialogue::new(
                Arc::clone(spec),
                Arc::clone(&workload),
                tag,
                id,
                ack
            )),
            Target::Http {
                url,
                api_key,
                idempotency_keys,
            } => spawn_with!(HttpDialogue::new(
                Arc::new(url.clone()),
                api_key.clone(),
                Arc::clone(&workload),
                tag,
                id,
                ack,
                *idempotency_keys
            )),
        };
    }
    let pacer = match config.rate {
        Some(_) => Some(Pacer::start((*schedule).clone(), wakers).map_err(Error::Start)?),
        None => None,
    };

    let progress = Progress::new(config.progress);
    // The writer borrows the file and the serializer for the whole run.
    let mut serializer = V2DeflateSerializer::new();
    let mut hlog = match &mut hlog_file {
        Some((file, path)) => Some(Hlog {
            writer: IntervalLogWriterBuilder::new()
                .add_comment(&format!("[Logged with loadtest {}]", env!("CARGO_PKG_VERSION")))
                .add_comment("[Histogram log format version 1.3]")
                .add_comment(
                    "[Latency in nanoseconds from each request's intended send time; untagged: all requests, tagged: one request MTI]",
                )
                .with_start_time(measure_started_at)
                .with_base_time(measure_started_at)
                .with_max_value_divisor(1e6)
                .begin_log_with(file, &mut serializer)
                .map_err(|e| Error::file(path.clone(), e))?,
            path: path.clone(),
        }),
        None => None,
    };

    let mut harvest = Harvest {
        shards: &shards,
        interval: Tally::default(),
        totals: Tally::default(),
        intervals: Vec::new(),
        measure_start,
        acks: String::new(),
        acks_written: 0,
        kinds_tagged: if kinds.len() > 1 { kinds } else { Vec::new() },
        duration: config.measured(),
        warmup: config.warmup,
        deadline_ns: config.deadline_ns(),
        phase_ends_s: std::iter::once(config.duration)
            .chain(config.then.iter().map(|phase| phase.duration))
            .scan(Duration::ZERO, |end, length| {
                *end += length;
                Some(end.as_secs_f64())
            })
            .collect(),
        phases: std::iter::repeat_with(Tally::default)
            .take(config.then.len() + 1)
            .collect(),
    };

    let mut previous = schedule.start;
    let mut next = following_tick(previous, measure_start);
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            () = tokio::time::sleep_until(next.into()) => {
                harvest.tick(previous, next, &mut hlog, &mut ack_log, &progress)?;
                previous = next;
                next = following_tick(next, measure_start);
            }
        }
    }
    let finished = Instant::now();
    if finished > previous {
        harvest.tick(previous, finished, &mut hlog, &mut ack_log, &progress)?;
    }
    if let Some(pacer) = pacer {
        pacer.stop();
    }
    progress.finish();
    drop(hlog);
    if let Some((mut file, path)) = hlog_file {
        file.flush().map_err(|e| Error::file(path, e))?;
    }
    if let Some((mut file, path)) = ack_log {
        file.flush().map_err(|e| Error::file(path, e))?;
    }
    Ok(RunResult {
        totals: harvest.totals,
        phases: harvest.phases,
        intervals: harvest.intervals,
        measure_started_at,
        elapsed: finished.saturating_duration_since(measure_start),
        acks_written: harvest.acks_written,
    })
}

/// The `.hlog` being written.
struct Hlog<'a, 'b> {
    writer: hdrhistogram::serialization::interval_log::IntervalLogWriter<
        'a,
        'b,
        BufWriter<File>,
        V2DeflateSerializer,
    >,
    path: PathBuf,
}

async fn resolve(authority: &str) -> Result<SocketAddr, Error> {
    let mut addresses =
        tokio::net::lookup_host(authority)
            .await
            .map_err(|source| Error::Connect {
                target: authority.to_owned(),
                source,
            })?;
    addresses.next().ok_or_else(|| Error::Connect {
        target: authority.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"),
    })
}

/// The tick after `previous`: every second of warmup, then the start of
/// measuring, then every second of it, so intervals line up with the
/// measured window.
fn following_tick(previous: Instant, measure_start: Instant) -> Instant {
    if previous < measure_start {
        (previous + Duration::from_secs(1)).min(measure_start)
    } else {
        previous + Duration::from_secs(1)
    }
}

/// Moves what connections recorded into the run's totals, once a tick.
struct Harvest<'s> {
    shards: &'s [Arc<Mutex<Shard>>],
    interval: Tally,
    totals: Tally,
    intervals: Vec<IntervalPoint>,
    measure_start: Instant,
    acks: String,
    acks_written: u64,
    /// Request MTIs that get their own tagged histogram in the `.hlog`
    /// (none when the mix has one type: the untagged one says it all).
    kinds_tagged: Vec<crate::workload::Kind>,
    duration: Duration,
    warmup: Duration,
    deadline_ns: u64,
    /// Where each phase ends, in seconds of the measured time.
    phase_ends_s: Vec<f64>,
    phases: Vec<Tally>,
}

impl Harvest<'_> {
    fn tick(
        &mut self,
        from: Instant,
        to: Instant,
        hlog: &mut Option<Hlog<'_, '_>>,
        ack_log: &mut Option<(BufWriter<File>, PathBuf)>,
        progress: &Progress,
    ) -> Result<(), Error> {
        // Tallies hold measured requests only. A tick of the warmup can fire
        // (a timer is up to a millisecond late) after the first measured
        // responses were recorded: those wait for the first measured tick,
        // so the `.hlog` and the totals count the same responses.
        let warmup = to <= self.measure_start;
        for shard in self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            if !warmup {
                self.interval.merge(&shard.tally);
                shard.tally.reset();
            }
            self.acks.push_str(&shard.acks);
            shard.acks.clear();
        }
        if let Some((file, path)) = ack_log {
            file.write_all(self.acks.as_bytes())
                .map_err(|e| Error::file(path.clone(), e))?;
            self.acks_written += u64::try_from(self.acks.lines().count()).unwrap_or(u64::MAX);
        }
        self.acks.clear();
        if warmup {
            let into = self
                .warmup
                .saturating_sub(self.measure_start.saturating_duration_since(to));
            progress.update(format!(
                "warming up {:.0}/{:.0}s",
                into.as_secs_f64(),
                self.warmup.as_secs_f64()
            ));
            return Ok(());
        }
        self.totals.merge(&self.interval);
        let from = from.max(self.measure_start);
        let length = to.saturating_duration_since(from);
        let offset = from.saturating_duration_since(self.measure_start);
        let all = self.interval.latency_all();
        if let Some(hlog) = hlog {
            let failed =
                |e| Error::file(hlog.path.clone(), std::io::Error::other(format!("{e:?}")));
            hlog.writer
                .write_histogram(&all, offset, length, None)
                .map_err(failed)?;
            for kind in &self.kinds_tagged {
                let failed =
                    |e| Error::file(hlog.path.clone(), std::io::Error::other(format!("{e:?}")));
                hlog.writer
                    .write_histogram(
                        &self.interval.latency_ns[kind.index()],
                        offset,
                        length,
                        Tag::new(kind.mti()),
                    )
                    .map_err(failed)?;
            }
        }
        let counts = self.interval.counts_all();
        let admitted = &self.interval.admitted_ns;
        let point = IntervalPoint {
            end_s: to
                .saturating_duration_since(self.measure_start)
                .as_secs_f64(),
            length_s: length.as_secs_f64(),
            count: all.len(),
            p50_ns: all.value_at_quantile(0.5),
            p90_ns: all.value_at_quantile(0.9),
            p99_ns: all.value_at_quantile(0.99),
            max_ns: all.max(),
            timeouts: counts.timeouts,
            errors: counts.errors,
            good: self.interval.good(self.deadline_ns),
            shed: self.interval.shed(),
            late: Tally::late(&all, self.deadline_ns),
            admitted_p99_ns: admitted.value_at_quantile(0.99),
        };
        self.intervals.push(point);
        let middle = point.end_s - point.length_s / 2.0;
        let phase = self
            .phase_ends_s
            .iter()
            .position(|end| middle < *end)
            .unwrap_or(self.phases.len().saturating_sub(1));
        if let Some(phase) = self.phases.get_mut(phase) {
            phase.merge(&self.interval);
        }
        let total = self.totals.counts_all();
        let in_flight = total
            .sent
            .saturating_sub(total.received + total.timeouts + total.errors);
        let rate = if point.length_s > 0.0 {
            to_f64(point.count) / point.length_s
        } else {
            0.0
        };
        let phase = if point.end_s > self.duration.as_secs_f64() + 0.5 {
            "draining".to_owned()
        } else {
            format!("{:>4.0}s/{:.0}s", point.end_s, self.duration.as_secs_f64())
        };
        progress.update(format!(
            "{phase} {:>10.1} req/s  p50 {:>8}  p99 {:>8}  in flight {:>5}  timeouts {}  errors {}",
            rate,
            format_ns(point.p50_ns),
            format_ns(point.p99_ns),
            in_flight,
            total.timeouts + total.dropped,
            total.errors,
        ));
        self.interval.reset();
        Ok(())
    }
}

/// The live progress line.
struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(mode: ProgressMode) -> Progress {
        let bar = (mode == ProgressMode::Terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { mode, bar }
    }

    fn update(&self, line: String) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(line),
            (None, ProgressMode::Lines) => eprintln!("{line}"),
            _ => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
