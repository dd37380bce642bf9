//! A run in phases (`--then`) and answers against a deadline
//! (`--deadline`): what an overload test asks of a switch.
//!
//! The overload scenario offers half the switch's peak, then three times
//! it, then half again. For each phase it reports the goodput (answers
//! neither shed nor later than the deadline, per second), what was shed
//! (91, HTTP 503 or 429), late answers, timeouts, and the p99 of what the
//! switch admitted; then how long after the load fell back the switch took
//! to recover.
//!
//! **Recovery** is counted from the start of the last phase to the start
//! of the first second from which every second of that phase has good
//! answers, no late answer, no timeout, and an admitted p99 no worse than
//! the worst second of the first phase, or than 5 ms if that was faster:
//! the switch is back to what it did before the overload, stalls of the
//! disk included, and no backlog is left to drain. A switch that never gets
//! there within the phase has no recovery time. The 5 ms floor is the
//! resolution of "as before" on a shared two-core machine: one wake-up
//! late or one deschedule of the load tester moves a sub-millisecond p99
//! by a few milliseconds, and without it the echo server, which answers in
//! 90 µs, "recovered" only after 29 s.

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::{IntervalPoint, RunConfig, RunResult};
use crate::stats::{Percentiles, Tally, rate_per_s, us_of_ns};
use crate::units::{format_ns, to_u64_saturating};

/// One phase of the run, as answered.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub rate_offered: f64,
    /// Seconds of measured time the phase spans.
    pub from_s: f64,
    pub to_s: f64,
    pub answered: u64,
    /// Answers neither shed nor late.
    pub good: u64,
    /// `good` per second of the phase.
    pub goodput: f64,
    pub shed: u64,
    pub late: u64,
    /// Timeouts and requests never sent.
    pub timeouts: u64,
    pub errors: u64,
    /// Latency of the answers that were not shed.
    pub admitted_us: Percentiles,
    /// Latency of every answer, shed ones included.
    pub latency_us: Percentiles,
}

/// The phases of a run and its recovery.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    pub deadline_ms: f64,
    pub phases: Vec<PhaseSummary>,
    /// From the start of the last phase until the switch answered as in the
    /// first again; `None` if it did not within the phase (or the run has
    /// one phase).
    pub recovery_s: Option<f64>,
}

impl Phases {
    /// The phases of `result`, when the run had more than one or a
    /// deadline; `None` otherwise.
    pub fn of(config: &RunConfig, result: &RunResult) -> Option<Phases> {
        if config.then.is_empty() && config.deadline.is_none() {
            return None;
        }
        Some(Phases::from_run(config, result))
    }

    /// The phases of `result`, however many it had.
    pub fn from_run(config: &RunConfig, result: &RunResult) -> Phases {
        let deadline_ns = config.deadline_ns();
        let spans = std::iter::once((config.rate.unwrap_or(0.0), config.duration))
            .chain(config.then.iter().map(|phase| (phase.rate, phase.duration)));
        let mut from_s = 0.0;
        let phases: Vec<PhaseSummary> = spans
            .zip(&result.phases)
            .map(|((rate, length), tally)| {
                let to_s = from_s + length.as_secs_f64();
                let phase = summarize(tally, rate, from_s, to_s, deadline_ns);
                from_s = to_s;
                phase
            })
            .collect();
        let recovery_s = match (phases.first(), phases.last()) {
            (Some(first), Some(last)) if phases.len() > 1 => {
                recovery(&result.intervals, first, last)
            }
            _ => None,
        };
        Phases {
            deadline_ms: config.deadline().as_secs_f64() * 1e3,
            phases,
            recovery_s,
        }
    }

    /// The table printed after the run's own.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nphases (deadline {} ms; good: answered within it and not shed; shed: 91, HTTP 503/429):",
            self.deadline_ms
        );
        let _ = writeln!(
            out,
            "{:>11} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "seconds",
            "offered/s",
            "goodput/s",
            "answered",
            "shed",
            "late",
            "timeouts",
            "admit p50",
            "admit p99"
        );
        let us = |us: f64| format_ns(to_u64_saturating((us * 1e3).round()));
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:>11} {:>12.0} {:>10.1} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10}",
                format!("{:.0}-{:.0}", p.from_s, p.to_s),
                p.rate_offered,
                p.goodput,
                p.answered,
                p.shed,
                p.late,
                p.timeouts,
                us(p.admitted_us.p50),
                us(p.admitted_us.p99)
            );
        }
        if self.phases.len() > 1 {
            let _ = match self.recovery_s {
                Some(seconds) => writeln!(
                    out,
                    "recovery: {seconds:.0} s after the last phase began, the switch answered as in the first"
                ),
                None => writeln!(
                    out,
                    "recovery: not within the last phase (late answers, timeouts or a p99 above the first phase's worst second, or 5 ms)"
                ),
            };
        }
        out
    }
}

fn summarize(tally: &Tally, rate: f64, from_s: f64, to_s: f64, deadline_ns: u64) -> PhaseSummary {
    let counts = tally.counts_all();
    let all = tally.latency_all();
    let good = tally.good(deadline_ns);
    PhaseSummary {
        rate_offered: rate,
        from_s,
        to_s,
        answered: counts.received,
        good,
        goodput: rate_per_s(good, (to_s - from_s).max(1e-9)),
        shed: tally.shed(),
        late: Tally::late(&all, deadline_ns),
        timeouts: counts.timeouts + counts.dropped,
        errors: counts.errors,
        admitted_us: Percentiles::of(&tally.admitted_ns),
        latency_us: Percentiles::of(&all),
    }
}

/// The admitted p99 a second may have and count as recovered, however fast
/// the first phase was (see the module's doc).
const RECOVERY_P99_FLOOR_US: f64 = 5_000.0;

/// Seconds from the start of `last` until every later second of it answers
/// as the worst second of `first` did (see the module's doc).
fn recovery(intervals: &[IntervalPoint], first: &PhaseSummary, last: &PhaseSummary) -> Option<f64> {
    let whole = |p: &&IntervalPoint| p.length_s > 0.5;
    let normal_us = intervals
        .iter()
        .filter(whole)
        .filter(|p| p.end_s <= first.to_s + 1e-6)
        .map(|p| us_of_ns(p.admitted_p99_ns))
        .fold(RECOVERY_P99_FLOOR_US, f64::max);
    let within: Vec<&IntervalPoint> = intervals
        .iter()
        .filter(whole)
        .filter(|p| p.end_s - p.length_s >= last.from_s - 1e-6 && p.end_s <= last.to_s + 1e-6)
        .collect();
    let healthy = |p: &&IntervalPoint| {
        p.good > 0 && p.late == 0 && p.timeouts == 0 && us_of_ns(p.admitted_p99_ns) <= normal_us
    };
    // The first second from which every second of the phase is healthy.
    let bad_last = within.iter().rposition(|p| !healthy(p));
    let from = match bad_last {
        None => within.first(),
        Some(at) => within.get(at + 1),
    }?;
    Some(((from.end_s - from.length_s - last.from_s).max(0.0) * 1e3).round() / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(end_s: f64, good: u64, p99_ms: u64, late: u64) -> IntervalPoint {
        IntervalPoint {
            end_s,
            length_s: 1.0,
            count: good + late,
            good,
            late,
            admitted_p99_ns: p99_ms * 1_000_000,
            ..IntervalPoint::default()
        }
    }

    fn phase(from_s: f64, to_s: f64) -> PhaseSummary {
        PhaseSummary {
            rate_offered: 0.0,
            from_s,
            to_s,
            answered: 0,
            good: 0,
            goodput: 0.0,
            shed: 0,
            late: 0,
            timeouts: 0,
            errors: 0,
            admitted_us: Percentiles::default(),
            latency_us: Percentiles::default(),
        }
    }

    #[test]
    fn recovery_is_the_first_second_from_which_every_second_is_as_before() {
        // Phase 1: 0-3 s, worst second p99 20 ms. Overload 3-5 s. Last
        // phase 5-10 s: late answers in its first second, a p99 over 20 ms
        // in its third, then healthy.
        let intervals = vec![
            second(1.0, 100, 5, 0),
            second(2.0, 100, 20, 0),
            second(3.0, 100, 8, 0),
            second(4.0, 10, 900, 50),
            second(5.0, 10, 900, 50),
            second(6.0, 80, 300, 20),
            second(7.0, 100, 10, 0),
            second(8.0, 100, 40, 0),
            second(9.0, 100, 12, 0),
            second(10.0, 100, 9, 0),
        ];
        let (first, last) = (phase(0.0, 3.0), phase(5.0, 10.0));
        assert_eq!(recovery(&intervals, &first, &last), Some(3.0));

        let mut never = intervals.clone();
        never[9].late = 1;
        assert_eq!(
            recovery(&never, &first, &last),
            None,
            "a late answer in the last second"
        );

        let mut at_once = intervals;
        for p in &mut at_once[5..] {
            p.admitted_p99_ns = 5_000_000;
            p.late = 0;
        }
        assert_eq!(recovery(&at_once, &first, &last), Some(0.0));
    }

    #[test]
    fn a_target_answering_in_microseconds_recovers_within_the_floor() {
        // The echo server: 0.85 ms at worst before, 3 ms in a second after
        // (a deschedule), which is not a backlog.
        let mut intervals: Vec<IntervalPoint> =
            (1..=3).map(|s| second(f64::from(s), 100, 0, 0)).collect();
        for p in &mut intervals {
            p.admitted_p99_ns = 850_000;
        }
        intervals.extend((4..=6).map(|s| second(f64::from(s), 100, 3, 0)));
        let (first, last) = (phase(0.0, 3.0), phase(3.0, 6.0));
        assert_eq!(recovery(&intervals, &first, &last), Some(0.0));
        // Past the floor it is slower than before, however fast before was.
        intervals[4].admitted_p99_ns = 6_000_000;
        assert_eq!(recovery(&intervals, &first, &last), Some(2.0));
    }
}
