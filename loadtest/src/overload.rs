//! `loadtest overload`: the overload scenario of issue 13 as one command.
//!
//! It first finds the target's own peak, a short closed-loop run whose
//! answers neither shed nor later than the deadline are counted (or takes
//! `--peak`), then runs open loop in three phases: 50% of the peak
//! (`--calm`), `--factor` times it (`--overload`), 50% again (`--recover`),
//! against `--deadline`. With `--metrics-url` it reads the switch's own
//! counters at each phase's start and end ([`crate::metrics`]), so sheds
//! are reported by the switch's reasons beside the load tester's count.
//!
//! What it reports and the goals it checks are in
//! [`crate::overload_report`]; `loadtest bench` runs a shorter scenario
//! through [`run()`] against its switch.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use protocol::Spec;

use crate::args::OverloadArgs;
use crate::clock::Instant;
use crate::error::Error;
use crate::http::HttpUrl;
use crate::metrics::{MetricsSource, Reading, SwitchPhase};
use crate::overload_report::{OverloadPhase, OverloadReport, PeakSummary};
use crate::phases::Phases;
use crate::run::{self, ProgressMode, RunConfig, Target};
use crate::schedule::RatePhase;
use crate::stats::{rate_per_s, us_of_ns};
use crate::units::to_f64;
use crate::workload::Mix;

/// One phase of the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhasePlan {
    pub name: &'static str,
    pub rate: f64,
    pub duration: Duration,
}

/// The scenario's phases, from the peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The overload phase offers this many times the peak.
    pub factor: f64,
    pub calm: Duration,
    pub overload: Duration,
    pub recover: Duration,
}

impl Plan {
    /// Checks the plan's flags together with the deadline and timeout.
    pub fn check(&self, deadline: Duration, timeout: Duration) -> Result<(), Error> {
        if !(self.factor.is_finite() && self.factor >= 1.0 && self.factor <= 100.0) {
            return Err(Error::flag("factor", "must be from 1 to 100"));
        }
        for (flag, length) in [
            ("calm", self.calm),
            ("overload", self.overload),
            ("recover", self.recover),
        ] {
            if length < Duration::from_secs(1) {
                return Err(Error::flag(flag, "a phase lasts at least 1s"));
            }
        }
        if deadline.is_zero() || deadline > timeout {
            return Err(Error::flag(
                "deadline",
                "must be more than 0 and at most --timeout",
            ));
        }
        Ok(())
    }

    /// Calm at 50% of `peak`, overload at `factor` times it, recover at
    /// 50% (rates whole, at least 1/s).
    pub fn phases(&self, peak: f64) -> [PhasePlan; 3] {
        let rate = |share: f64| (peak * share).round().max(1.0);
        [
            PhasePlan {
                name: "calm",
                rate: rate(0.5),
                duration: self.calm,
            },
            PhasePlan {
                name: "overload",
                rate: rate(self.factor),
                duration: self.overload,
            },
            PhasePlan {
                name: "recover",
                rate: rate(0.5),
                duration: self.recover,
            },
        ]
    }
}

/// Where the peak comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Peak {
    /// Given (`--peak`, or the bench's own S_pipe).
    Given(f64),
    /// Measured: closed loop for `duration`, `in_flight` per connection.
    Measure {
        duration: Duration,
        in_flight: usize,
    },
}

/// Everything a scenario needs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Target, connections, in-flight and timeout of the phases, workload,
    /// warmup, progress and TLS; its rates and durations are the plan's.
    pub base: RunConfig,
    pub peak: Peak,
    pub plan: Plan,
    pub deadline: Duration,
    pub metrics: Option<MetricsSource>,
}

/// `loadtest overload`.
pub fn command(args: &OverloadArgs) -> Result<ExitCode, Error> {
    let target = match args.protocol.as_str() {
        "http" => crate::flags::http_target(&args.target, &args.api_key, false)?,
        _ => Target::Iso {
            address: args.target.clone(),
            spec: Arc::new(Spec::resolve(&args.spec)?),
        },
    };
    let mix = match target {
        Target::Iso { .. } => args.mix.clone(),
        Target::Http { .. } => Mix::default(),
    };
    crate::flags::check_connections(args.connections, args.in_flight, "in-flight")?;
    crate::flags::check_connections(args.connections, args.peak_in_flight, "peak-in-flight")?;
    let plan = Plan {
        factor: args.factor,
        calm: args.calm,
        overload: args.overload,
        recover: args.recover,
    };
    plan.check(args.deadline, args.timeout)?;
    let peak = match args.peak {
        Some(rate) => Peak::Given(rate),
        None if args.peak_duration.is_zero() => {
            return Err(Error::flag("peak-duration", "must be more than 0"));
        }
        None => Peak::Measure {
            duration: args.peak_duration,
            in_flight: args.peak_in_flight,
        },
    };
    let metrics = args
        .metrics_url
        .as_deref()
        .map(|url| {
            let url = HttpUrl::parse(url).map_err(|reason| Error::flag("metrics-url", reason))?;
            if url.tls {
                return Err(Error::flag("metrics-url", "give the switch's http:// URL"));
            }
            Ok(MetricsSource::new(url, args.metrics_key.clone()))
        })
        .transpose()?;
    let https = matches!(&target, Target::Http { url, .. } if url.tls);
    let tls = args.tls.options(https)?;
    crate::flags::check_http_mix(&target, &mix)?;
    let workload = crate::flags::workload(mix, &args.workload)?;
    let scenario = Scenario {
        base: RunConfig {
            target,
            rate: None,
            duration: Duration::from_secs(1),
            then: Vec::new(),
            deadline: None,
            warmup: args.warmup,
            connections: args.connections,
            in_flight: args.in_flight,
            timeout: args.timeout,
            workload,
            progress: ProgressMode::choose(args.progress, args.no_progress),
            ack_log: None,
            hlog: None,
            tls,
            measure_start_to: None,
        },
        peak,
        plan,
        deadline: args.deadline,
        metrics,
    };
    let report = run(&scenario)?;
    print!("{}", report.table());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::file(path, std::io::Error::other(e)))?;
        std::fs::write(path, json + "\n").map_err(|e| Error::file(path, e))?;
    }
    let answered: u64 = report.phases.iter().map(|p| p.summary.answered).sum();
    if answered == 0 {
        return Err(Error::Target {
            target: scenario.base.target.authority().to_owned(),
            reason: "no answer in any phase".to_owned(),
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr what is about to run, where progress is shown: stderr
/// is otherwise kept for the one line of an error.
fn say(config: &RunConfig, line: String) {
    if config.progress != ProgressMode::Off {
        eprintln!("{line}");
    }
}

/// Runs `config` on a runtime of its own.
fn run_once(config: &RunConfig) -> Result<run::RunResult, Error> {
    let runtime = run::runtime(config)?;
    runtime.block_on(run::run(config))
}

/// The peak: answers per second neither shed nor later than the deadline,
/// closed loop.
fn measure_peak(
    scenario: &Scenario,
    duration: Duration,
    in_flight: usize,
) -> Result<PeakSummary, Error> {
    let config = RunConfig {
        rate: None,
        duration,
        deadline: Some(scenario.deadline),
        in_flight,
        ..scenario.base.clone()
    };
    say(
        &config,
        format!(
            "peak: closed loop for {duration:?}, {} connections x {in_flight} in flight ...",
            config.connections
        ),
    );
    let result = run_once(&config)?;
    let seconds = duration.as_secs_f64();
    let answered = result.totals.counts_all().received;
    let good = result.totals.good(config.deadline_ns());
    let peak = PeakSummary {
        rate: rate_per_s(good, seconds),
        measured: true,
        duration_s: Some(seconds),
        in_flight: Some(in_flight),
        answered_per_s: Some(rate_per_s(answered, seconds)),
    };
    if peak.rate < 1.0 {
        return Err(Error::Target {
            target: config.target.authority().to_owned(),
            reason: format!(
                "no good answers in the peak run ({answered} answered, {} shed)",
                result.totals.shed()
            ),
        });
    }
    say(&config, format!("peak: {:.1} req/s", peak.rate));
    Ok(peak)
}

/// Runs the scenario: the peak, then the three phases, reading the
/// switch's metrics at each boundary when asked.
pub fn run(scenario: &Scenario) -> Result<OverloadReport, Error> {
    let peak = match scenario.peak {
        Peak::Given(rate) => PeakSummary {
            rate,
            measured: false,
            duration_s: None,
            in_flight: None,
            answered_per_s: None,
        },
        Peak::Measure {
            duration,
            in_flight,
        } => measure_peak(scenario, duration, in_flight)?,
    };
    let [calm, overload, recover] = scenario.plan.phases(peak.rate);
    let (start_to, start_from) = mpsc::channel();
    let mut config = RunConfig {
        rate: Some(calm.rate),
        duration: calm.duration,
        then: [overload, recover]
            .iter()
            .map(|p| RatePhase {
                rate: p.rate,
                duration: p.duration,
            })
            .collect(),
        deadline: Some(scenario.deadline),
        measure_start_to: Some(start_to),
        ..scenario.base.clone()
    };
    say(
        &config,
        format!(
            "phases: {:.0}/s for {:?}, {:.0}/s for {:?}, {:.0}/s for {:?}, deadline {:?} ...",
            calm.rate,
            calm.duration,
            overload.rate,
            overload.duration,
            recover.rate,
            recover.duration,
            scenario.deadline
        ),
    );
    let channel = match config.target {
        Target::Iso { .. } => "iso",
        Target::Http { .. } => "http",
    };
    // The phases' starts, from when measuring starts.
    let starts = [
        Duration::ZERO,
        calm.duration,
        calm.duration + overload.duration,
    ];
    let (stop_to, stop_from) = mpsc::channel::<()>();
    let reader = scenario.metrics.clone().map(|source| {
        std::thread::spawn(move || {
            read_at_starts(&source, channel, &start_from, &stop_from, starts)
        })
    });
    let result = run_once(&config);
    // A run that failed before measuring never said when it started: the
    // reader learns it from the channel closing.
    config.measure_start_to = None;
    drop(stop_to);
    let at_starts = reader.map(|thread| thread.join().unwrap_or_default());
    let result = result?;
    // The last phase ends when the run has drained: its late answers and
    // the switch's late sheds count in it.
    let at_end = scenario.metrics.as_ref().map(|source| source.read(channel));
    let (switch, metrics_error) = match (at_starts, at_end) {
        (Some(mut readings), Some(end)) => {
            readings.push(end);
            switch_phases(&readings)
        }
        _ => (vec![None; 3], None),
    };
    let phases = Phases::from_run(&config, &result);
    let overload_phases: Vec<OverloadPhase> = [calm, overload, recover]
        .iter()
        .zip(phases.phases)
        .zip(&result.phases)
        .zip(switch)
        .map(|(((plan, summary), tally), switch)| {
            let counts = tally.counts_all();
            let seconds = (summary.to_s - summary.from_s).max(1e-9);
            OverloadPhase {
                name: plan.name,
                rate_sent: rate_per_s(counts.sent, seconds),
                sent_fraction: if plan.rate > 0.0 {
                    (to_f64(counts.sent) / seconds / plan.rate * 1000.0).round() / 1000.0
                } else {
                    0.0
                },
                never_sent: counts.dropped,
                send_lag_p99_us: us_of_ns(tally.send_lag_ns.value_at_quantile(0.99)),
                summary,
                switch,
            }
        })
        .collect();
    Ok(OverloadReport::new(
        &config,
        scenario.plan.factor,
        scenario
            .metrics
            .as_ref()
            .map(|m| format!("http://{}{}", m.url.authority, m.url.path)),
        peak,
        overload_phases,
        phases.recovery_s,
        result.measure_started_at,
        metrics_error,
    ))
}

/// Reads the metrics at each phase's start, from when the run says
/// measuring started; stops early when the run ends. A failed read is
/// kept as its error.
fn read_at_starts(
    source: &MetricsSource,
    channel: &str,
    start_from: &mpsc::Receiver<Instant>,
    stop: &mpsc::Receiver<()>,
    starts: [Duration; 3],
) -> Vec<Result<Reading, String>> {
    let Ok(measure_start) = start_from.recv() else {
        return Vec::new();
    };
    let mut readings = Vec::new();
    for offset in starts {
        let wait = (measure_start + offset).saturating_duration_since(Instant::now());
        if !wait.is_zero() && stop.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
            break;
        }
        readings.push(source.read(channel));
    }
    readings
}

/// Each phase's figures from the readings at its start and end (four for
/// three phases); the first error, if a read failed, and `None` for the
/// phases it touched.
fn switch_phases(
    readings: &[Result<Reading, String>],
) -> (Vec<Option<SwitchPhase>>, Option<String>) {
    let phases = (0..3)
        .map(|i| match (readings.get(i), readings.get(i + 1)) {
            (Some(Ok(start)), Some(Ok(end))) => Some(SwitchPhase::between(start, end)),
            _ => None,
        })
        .collect();
    let error = readings
        .iter()
        .find_map(|r| r.as_ref().err().cloned())
        .or_else(|| {
            (readings.len() < 4).then(|| "the run ended before every phase began".to_owned())
        });
    (phases, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_half_the_peak_then_factor_times_then_half() {
        let plan = Plan {
            factor: 3.0,
            calm: Duration::from_secs(10),
            overload: Duration::from_secs(30),
            recover: Duration::from_secs(30),
        };
        let [calm, overload, recover] = plan.phases(19_001.0);
        assert_eq!(
            (calm.name, calm.rate, calm.duration),
            ("calm", 9_501.0, plan.calm)
        );
        assert_eq!(
            (overload.name, overload.rate, overload.duration),
            ("overload", 57_003.0, plan.overload)
        );
        assert_eq!((recover.name, recover.rate), ("recover", 9_501.0));
        // A tiny peak still offers something.
        assert_eq!(plan.phases(1.0)[0].rate, 1.0);

        let second = Duration::from_secs(1);
        assert!(
            plan.check(Duration::from_secs(2), Duration::from_secs(5))
                .is_ok()
        );
        assert!(
            plan.check(Duration::from_secs(6), Duration::from_secs(5))
                .is_err()
        );
        assert!(plan.check(Duration::ZERO, Duration::from_secs(5)).is_err());
        let short = Plan {
            calm: Duration::from_millis(500),
            ..plan
        };
        assert!(short.check(second, second).is_err());
        let under = Plan {
            factor: 0.5,
            ..plan
        };
        assert!(under.check(second, second).is_err());
    }

    #[test]
    fn metrics_phases_come_from_consecutive_readings() {
        let reading = |shed: f64| {
            Ok(Reading::of(
                &format!("switch_shed_total{{reason=\"deadline\"}} {shed}\n"),
                "iso",
            ))
        };
        let (phases, error) =
            switch_phases(&[reading(0.0), reading(2.0), reading(10.0), reading(10.0)]);
        assert_eq!(error, None);
        let shed: Vec<Option<f64>> = phases
            .iter()
            .map(|p| p.as_ref().and_then(|p| p.shed))
            .collect();
        assert_eq!(shed, [Some(2.0), Some(8.0), Some(0.0)]);

        let (phases, error) = switch_phases(&[
            reading(0.0),
            Err("refused".to_owned()),
            reading(3.0),
            reading(4.0),
        ]);
        assert_eq!(error.as_deref(), Some("refused"));
        assert!(phases[0].is_none() && phases[1].is_none());
        assert_eq!(phases[2].as_ref().and_then(|p| p.shed), Some(1.0));

        let (phases, error) = switch_phases(&[reading(0.0)]);
        assert!(error.is_some());
        assert!(phases.iter().all(Option::is_none));
    }
}
