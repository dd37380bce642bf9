//! The switch's one reader of monotonic time. Stage latencies, rate-limit
//! buckets and deadlines take their time from here, so a reader finds every
//! timer in one place and a test can reason about what is measured. Wall
//! time (what is journaled) comes from the engine's [`actors::Clock`].

use std::sync::OnceLock;
use std::time::Duration;

/// The only place the switch names `std::time::Instant`: everything else
/// measures through [`Stopwatch`] and [`monotonic_us`].
#[allow(clippy::disallowed_types)]
type Instant = std::time::Instant;

/// Time spent since it was started; `Copy`, one clock read to start and one
/// to read.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: Instant,
}

impl Stopwatch {
    /// Starts measuring now.
    pub fn start() -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whole microseconds since the start, saturating (after 584 000 years).
    pub fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Microseconds on a monotonic clock whose zero is the first call in this
/// process: for buckets and deadlines that compare times, not for display.
pub fn monotonic_us() -> u64 {
    static ORIGIN: OnceLock<Stopwatch> = OnceLock::new();
    ORIGIN.get_or_init(Stopwatch::start).elapsed_us()
}

/// A point a wait gives up at, on tokio's timer clock: the clock the waits
/// themselves sleep on, so a test or the simulation that pauses tokio's
/// time moves both together, and a wait bounded in seconds takes no real
/// time there.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: tokio::time::Instant,
}

impl Deadline {
    /// `after` from now.
    pub fn after(after: Duration) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now() + after,
        }
    }

    /// Whether it has come.
    pub fn has_passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    /// A sleep that ends when it comes.
    pub fn sleep(self) -> tokio::time::Sleep {
        tokio::time::sleep_until(self.at)
    }
}
