//! When each request is meant to leave, and the pacer thread that wakes the
//! connections on time.
//!
//! Open loop: request `i` (counting over all connections, warmup included)
//! is intended for `start + i / rate`, and belongs to connection
//! `i % connections`. Its latency is taken from that intended time, so a
//! stalled server is charged for every request it kept from being sent (no
//! coordinated omission, as in wrk2).
//!
//! An open-loop run may change its rate part way (`--then RATE:DURATION`,
//! the overload scenario: half the peak, then three times it, then half
//! again): request indices then run on across the phases, each phase
//! spacing its requests at its own rate from where the last one ended.
//!
//! Closed loop (`--rate max`): each connection keeps `--in-flight` requests
//! outstanding and sends the next as soon as one is answered; the intended
//! time is the send time. That finds peak throughput, and hides stalls.
//!
//! Why a pacer thread: tokio's timer has a resolution of one millisecond, so
//! a connection sleeping until its next request would add up to 1 ms of
//! lateness to every latency, more than a fast server's whole answer. The
//! pacer sleeps with the operating system's timer (tens of microseconds),
//! learns how much that timer oversleeps, and wakes the connection whose
//! request is due up to [`EARLY_MAX`] ahead, to absorb the wake-up itself.
//! How late requests still leave is measured and reported as the send lag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Instant;
use crate::units::{to_f64, to_u64_saturating};

/// A later stretch of an open-loop run at a rate of its own
/// (`--then RATE:DURATION`, [`crate::args::parse_phase`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePhase {
    /// Requests per second over all connections.
    pub rate: f64,
    pub duration: Duration,
}

/// The timing of a run, shared by every connection.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When request 0 is intended (warmup starts).
    pub start: Instant,
    /// Requests per second over all connections during the warmup and
    /// `duration`; `None` for closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    pub connections: u64,
    /// Open loop: the phases that follow `duration`, in order.
    pub then: Vec<RatePhase>,
}

/// One stretch of constant rate: from `offset` after the start, `length`
/// long, its first request numbered `first`.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    offset: Duration,
    length: Duration,
    rate: f64,
    first: u64,
}

impl Stretch {
    /// How many requests it holds: those with `offset + i / rate` before
    /// its end.
    fn count(&self) -> u64 {
        to_u64_saturating((self.length.as_secs_f64() * self.rate).ceil())
    }
}

/// The measured time of a run: its `duration` and every later phase.
pub fn measured(duration: Duration, then: &[RatePhase]) -> Duration {
    duration + then.iter().map(|phase| phase.duration).sum::<Duration>()
}

impl Schedule {
    /// The measured time: `duration` and every later phase.
    pub fn measured(&self) -> Duration {
        measured(self.duration, &self.then)
    }

    /// The open loop's stretches of constant rate, in order: the warmup
    /// and `duration` at `rate`, then each phase.
    fn stretches(&self) -> impl Iterator<Item = Stretch> + '_ {
        let first = self.rate.map(|rate| (self.warmup + self.duration, rate));
        let later = self.then.iter().map(|phase| (phase.duration, phase.rate));
        first.into_iter().chain(later).scan(
            (Duration::ZERO, 0u64),
            |(offset, index), (length, rate)| {
                let stretch = Stretch {
                    offset: *offset,
                    length,
                    rate,
                    first: *index,
                };
                *offset += length;
                *index += stretch.count();
                Some(stretch)
            },
        )
    }

    /// The index of the last request intended at or before `since_start`
    /// after the start (open loop; 0 before any).
    pub fn last_due(&self, since_start: Duration) -> u64 {
        let mut last = 0;
        for stretch in self.stretches() {
            if since_start < stretch.offset {
                break;
            }
            let into = since_start.saturating_sub(stretch.offset).as_secs_f64();
            let within = to_u64_saturating((into * stretch.rate).floor());
            last = stretch.first + within.min(stretch.count().saturating_sub(1));
        }
        last
    }

    /// When measuring starts: requests intended before are warmup.
    pub fn measure_start(&self) -> Instant {
        self.start + self.warmup
    }

    /// When the schedule ends: no request is intended at or after it.
    pub fn end(&self) -> Instant {
        self.start + self.warmup + self.measured()
    }

    /// The intended send time of request `index` (open loop).
    pub fn intended(&self, index: u64) -> Instant {
        if self.rate.is_none() {
            return self.start;
        }
        let mut last = None;
        for stretch in self.stretches() {
            if index < stretch.first + stretch.count() {
                let within = to_f64(index - stretch.first) / stretch.rate;
                return self.start + stretch.offset + Duration::from_secs_f64(within);
            }
            last = Some(stretch);
        }
        // Past the schedule: spaced on at the last rate, all at or after
        // its end.
        last.map_or(self.start, |stretch| {
            let within = to_f64(index - stretch.first) / stretch.rate;
            self.start + stretch.offset + Duration::from_secs_f64(within)
        })
    }

    /// The number of requests the schedule holds (open loop): those intended
    /// before [`Schedule::end`].
    pub fn index_end(&self) -> u64 {
        if self.rate.is_none() {
            return u64::MAX;
        }
        self.stretches()
            .last()
            .map_or(0, |stretch| stretch.first + stretch.count())
    }

    /// Whether a request intended at `intended` is measured.
    pub fn is_measured(&self, intended: Instant) -> bool {
        intended >= self.measure_start() && intended < self.end()
    }

    /// The global index of connection `connection`'s `k`-th request.
    pub fn index(&self, connection: u64, k: u64) -> u64 {
        k * self.connections + connection
    }
}

/// The thread that wakes connections when their next request is due.
#[derive(Debug)]
pub struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Sleeps shorter than this are not worth a system call: the timer's slack
/// (50 µs by default on Linux) would make them longer anyway.
const SLEEP_MIN: Duration = Duration::from_micros(20);

/// How early a request may leave. Waking a thread takes tens of
/// microseconds (the pacer's own timer slack, then the connection's task),
/// so the pacer wakes a connection this much before a request is due and
/// the connection sends what falls due within it. A request's latency
/// starts at the earlier of its intended and its actual send time: one that
/// leaves early is charged from when it left, so never less than its true
/// service time; one that leaves late, from when it should have left.
pub const EARLY_MAX: Duration = Duration::from_micros(50);

impl Pacer {
    /// Starts pacing `schedule` (open loop only), waking `wakers[c]` when a
    /// request of connection `c` falls due.
    pub fn start(schedule: Schedule, wakers: Vec<Arc<Notify>>) -> std::io::Result<Pacer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("loadtest-pacer".to_owned())
            .spawn(move || pace(&schedule, &wakers, &stopped))?;
        Ok(Pacer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pace(schedule: &Schedule, wakers: &[Arc<Notify>], stop: &AtomicBool) {
    let end = schedule.index_end();
    let connections = u64::try_from(wakers.len()).unwrap_or(u64::MAX);
    if connections == 0 {
        return;
    }
    let mut woken = vec![false; wakers.len()];
    let mut index = 0u64;
    // How much later than asked the operating system wakes this thread
    // (the timer slack, 50 µs by default on Linux, plus scheduling): the
    // pacer asks to wake that much early, so it wakes about on time.
    let mut oversleep = Duration::from_micros(50);
    while index < end && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let horizon = now + EARLY_MAX;
        let due = schedule.intended(index);
        if due > horizon {
            // Never sleep long, so a stop is seen within 100 ms; never
            // spin: a short sleep overshoots by about EARLY_MAX at worst.
            let asked = due
                .saturating_duration_since(horizon)
                .saturating_sub(oversleep)
                .clamp(SLEEP_MIN, Duration::from_millis(100));
            thread::sleep(asked);
            let over = now.elapsed().saturating_sub(asked);
            // A moving average, so one long preemption does not make every
            // later wake-up early.
            oversleep = (oversleep * 7 + over.min(Duration::from_millis(1))) / 8;
            continue;
        }
        // Wake every connection with a request due by now, each once: a
        // woken connection sends everything it has due.
        woken.fill(false);
        let mut pending = 0usize;
        while index < end && schedule.intended(index) <= horizon {
            // Below `wakers.len()`, so it always fits.
            let connection = usize::try_from(index % connections).unwrap_or(usize::MAX);
            if let Some(flag) = woken.get_mut(connection)
                && !*flag
            {
                *flag = true;
                pending += 1;
                if let Some(waker) = wakers.get(connection) {
                    waker.notify_one();
                }
                if pending == wakers.len() {
                    // Everyone is awake; skip ahead over the rest that is due.
                    let elapsed = now.saturating_duration_since(schedule.start);
                    let last_due = schedule.last_due(elapsed + EARLY_MAX);
                    index = index.max(last_due.min(end.saturating_sub(1)));
                }
            }
            index += 1;
        }
    }
    // The end of the schedule: wake everyone so they notice.
    for waker in wakers {
        waker.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_indices_and_times() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            rate: Some(1000.0),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            connections: 4,
            then: Vec::new(),
        };
        assert_eq!(schedule.index_end(), 3000);
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1500), start + Duration::from_millis(1500));
        assert!(!schedule.is_measured(schedule.intended(999)));
        assert!(schedule.is_measured(schedule.intended(1000)));
        assert!(schedule.is_measured(schedule.intended(2999)));
        assert!(!schedule.is_measured(schedule.intended(3000)));
        assert_eq!(schedule.index(3, 2), 11);
        assert_eq!(schedule.last_due(Duration::from_micros(1_500_500)), 1500);
    }

    #[test]
    fn phases_follow_each_other_at_their_own_rates() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            rate: Some(1000.0),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(1),
            connections: 4,
            then: vec![
                RatePhase {
                    rate: 3000.0,
                    duration: Duration::from_secs(2),
                },
                RatePhase {
                    rate: 500.0,
                    duration: Duration::from_secs(1),
                },
            ],
        };
        assert_eq!(schedule.measured(), Duration::from_secs(4));
        assert_eq!(schedule.end(), start + Duration::from_secs(5));
        // 2 000 requests at 1 000/s, 6 000 at 3 000/s, 500 at 500/s.
        assert_eq!(schedule.index_end(), 8500);
        assert_eq!(schedule.intended(1999), start + Duration::from_millis(1999));
        assert_eq!(schedule.intended(2000), start + Duration::from_secs(2));
        assert_eq!(schedule.intended(2003), start + Duration::from_millis(2001));
        assert_eq!(schedule.intended(8000), start + Duration::from_secs(4));
        assert_eq!(schedule.intended(8499), start + Duration::from_millis(4998));
        assert!(schedule.intended(8500) >= schedule.end());
        assert!(schedule.is_measured(schedule.intended(8499)));
        assert_eq!(schedule.last_due(Duration::from_millis(2001)), 2003);
        assert_eq!(schedule.last_due(Duration::from_secs(60)), 8499);
    }

    #[tokio::test]
    async fn the_pacer_wakes_each_connection() {
        let schedule = Schedule {
            start: Instant::now(),
            rate: Some(2000.0),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
            connections: 2,
            then: Vec::new(),
        };
        let wakers: Vec<Arc<Notify>> = (0..2).map(|_| Arc::new(Notify::new())).collect();
        let pacer = Pacer::start(schedule, wakers.clone()).unwrap();
        for waker in &wakers {
            tokio::time::timeout(Duration::from_secs(5), waker.notified())
                .await
                .unwrap();
        }
        pacer.stop();
    }
}
