//! The order requests arrived in on one connection, kept for reversals.
//!
//! Each frame is answered in a task of its own, so two requests pipelined
//! on one connection can reach the engine in either order. For most that
//! is fine (the acquirer matches answers by DE11 and DE41), but a reversal
//! sent right behind its original (a POS cancelling at once) could run
//! first, find no original, be acknowledged, and leave the original
//! approved and counted. The engine waits for an original it sees in
//! flight; one that has not reached the engine yet it cannot see. So a
//! reversal first waits until every request that arrived before it on its
//! connection has been answered: the acquirer's order is the switch's.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The requests of one connection not answered yet, by arrival number.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    open: Mutex<Open>,
    answered: Notify,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    numbers: BTreeSet<u64>,
}

impl Arrivals {
    /// A ticket for the next frame, taken by the reader in frame order and
    /// held by the frame's task until it is answered.
    pub(super) fn arrive(self: &Arc<Self>) -> Ticket {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let number = open.next;
        open.next += 1;
        open.numbers.insert(number);
        Ticket {
            arrivals: Arc::clone(self),
            number,
        }
    }

    fn earliest_open(&self) -> Option<u64> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.numbers.first().copied()
    }
}

/// One request's place in its connection's order; dropping it marks the
/// request answered.
#[derive(Debug)]
pub(crate) struct Ticket {
    arrivals: Arc<Arrivals>,
    number: u64,
}

impl Ticket {
    /// Returns once every request that arrived before this one on the
    /// connection has been answered. Requests after it are not waited for,
    /// so two waiting requests never wait for each other.
    pub(crate) async fn after_earlier_requests(&self) {
        loop {
            // Registered before the check, so an answer between the check
            // and the wait still wakes it.
            let answered = self.arrivals.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if self
                .arrivals
                .earliest_open()
                .is_none_or(|earliest| earliest >= self.number)
            {
                return;
            }
            answered.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.arrivals.open.lock().unwrap_or_else(|e| e.into_inner());
        open.numbers.remove(&self.number);
        drop(open);
        self.arrivals.answered.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_waits_for_those_before_it_and_not_for_those_after() {
        let arrivals = Arc::new(Arrivals::default());
        let first = arrivals.arrive();
        let second = arrivals.arrive();
        let third = arrivals.arrive();
        // The first has nothing before it.
        first.after_earlier_requests().await;
        let waiting = tokio::spawn(async move {
            third.after_earlier_requests().await;
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the first two are still open");
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second is still open");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("released once both earlier requests are answered")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}
