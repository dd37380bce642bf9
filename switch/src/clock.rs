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

    /// The instant it comes, on tokio's clock (the journal takes it so).
    pub fn instant(self) -> tokio::time::Instant {
        self.at
    }

    /// Whether it has come.
    pub fn has_passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    /// A sleep that ends when it comes.
    pub fn sleep(self) -> tokio::time::Sleep {
        tokio::time::sleep_until(self.at)
    }

    /// Moves `sleep` to end when this comes.
    pub fn reset(self, sleep: std::pin::Pin<&mut tokio::time::Sleep>) {
        sleep.reset(self.at);
    }
}

/// Microseconds on tokio's timer clock since its own origin: for logic
/// that time drives (the admission limit's windows and stalls) and that a
/// test or the simulation pausing tokio's time must drive the same way.
#[derive(Debug, Clone, Copy)]
pub struct TimerClock {
    origin: tokio::time::Instant,
}

impl TimerClock {
    /// A clock whose zero is now.
    pub fn start() -> TimerClock {
        TimerClock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Whole microseconds since the zero, saturating.
    pub fn now_us(&self) -> u64 {
        u64::try_from(
            tokio::time::Instant::now()
                .saturating_duration_since(self.origin)
                .as_micros(),
        )
        .unwrap_or(u64::MAX)
    }
}

/// A timeout that activity pushes back, as a connection's idle and write
/// timeouts are on every read and write. Activity only notes when it
/// happened (one clock read); the sleep that watches it is armed once and,
/// when it ends before the timeout has truly run out, re-armed for the
/// rest ([`Quiet::rearm`]). Re-arming a tokio timer on every activity would
/// cost a timer-wheel update per request.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    after: Duration,
    last: tokio::time::Instant,
}

impl Quiet {
    /// A timeout of `after`, counting from now.
    pub fn new(after: Duration) -> Quiet {
        Quiet {
            after,
            last: tokio::time::Instant::now(),
        }
    }

    /// Activity now: the timeout counts again from here.
    pub fn touch(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// When the timeout runs out if nothing else happens.
    pub fn deadline(&self) -> Deadline {
        Deadline {
            at: self.last + self.after,
        }
    }

    /// Called when `sleep` (armed at an earlier [`Quiet::deadline`]) ends:
    /// `true` if the timeout has run out; otherwise `sleep` is re-armed for
    /// the rest and `false`.
    pub fn rearm(&self, sleep: std::pin::Pin<&mut tokio::time::Sleep>) -> bool {
        let deadline = self.deadline();
        if deadline.has_passed() {
            return true;
        }
        deadline.reset(sleep);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn activity_pushes_a_quiet_timeout_back_without_rearming_on_each() {
        let mut quiet = Quiet::new(Duration::from_secs(10));
        let sleep = quiet.deadline().sleep();
        tokio::pin!(sleep);
        tokio::time::advance(Duration::from_secs(6)).await;
        quiet.touch();
        // The sleep, armed at the first deadline, ends at 10 s; the
        // timeout, pushed back to 16 s, has not run out: re-armed.
        (&mut sleep).await;
        assert!(
            !quiet.rearm(sleep.as_mut()),
            "ran out at 10 s despite activity at 6 s"
        );
        let armed_at = tokio::time::Instant::now();
        (&mut sleep).await;
        assert_eq!(
            armed_at.elapsed(),
            Duration::from_secs(6),
            "re-armed for the rest"
        );
        assert!(quiet.rearm(sleep.as_mut()), "16 s passed with no activity");
    }
}
