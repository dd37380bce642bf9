//! When each request is meant to leave, and the pacer thread that wakes the
//! connections on time.
//!
//! Open loop: request `i` (counting over all connections, warmup included)
//! is intended for `start + i / rate`, and belongs to connection
//! `i % connections`. Its latency is taken from that intended time, so a
//! stalled server is charged for every request it kept from being sent (no
//! coordinated omission, as in wrk2).
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

/// The timing of a run, shared by every connection.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When request 0 is intended (warmup starts).
    pub start: Instant,
    /// Requests per second over all connections; `None` for closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    pub connections: u64,
}

impl Schedule {
    /// When measuring starts: requests intended before are warmup.
    pub fn measure_start(&self) -> Instant {
        self.start + self.warmup
    }

    /// When the schedule ends: no request is intended at or after it.
    pub fn end(&self) -> Instant {
        self.start + self.warmup + self.duration
    }

    /// The intended send time of request `index` (open loop).
    pub fn intended(&self, index: u64) -> Instant {
        match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(to_f64(index) / rate),
            None => self.start,
        }
    }

    /// The number of requests the schedule holds (open loop): those intended
    /// before [`Schedule::end`].
    pub fn index_end(&self) -> u64 {
        match self.rate {
            Some(rate) => {
                to_u64_saturating(((self.warmup + self.duration).as_secs_f64() * rate).ceil())
            }
            None => u64::MAX,
        }
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
                    let rate = schedule.rate.unwrap_or(1.0);
                    let last_due =
                        to_u64_saturating(((elapsed + EARLY_MAX).as_secs_f64() * rate).floor());
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
        };
        assert_eq!(schedule.index_end(), 3000);
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1500), start + Duration::from_millis(1500));
        assert!(!schedule.is_measured(schedule.intended(999)));
        assert!(schedule.is_measured(schedule.intended(1000)));
        assert!(schedule.is_measured(schedule.intended(2999)));
        assert!(!schedule.is_measured(schedule.intended(3000)));
        assert_eq!(schedule.index(3, 2), 11);
    }

    #[tokio::test]
    async fn the_pacer_wakes_each_connection() {
        let schedule = Schedule {
            start: Instant::now(),
            rate: Some(2000.0),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
            connections: 2,
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
