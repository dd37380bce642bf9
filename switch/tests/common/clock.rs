//! The tests' one reader of monotonic time: how long the switch took to
//! answer, and how long a test has been waiting for something.

use std::time::Duration;

/// The only place the tests name `std::time::Instant` (the workspace
/// disallows it elsewhere, so every timer is found here).
#[allow(clippy::disallowed_types)]
type Instant = std::time::Instant;

/// Time spent since it was started.
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
}
