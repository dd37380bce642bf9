//! The order requests arrived in on one connection, kept for reversals.
//!
//! A connection answers its requests concurrently, so two requests
//! pipelined on one connection can reach the engine in either order. For
//! most that is fine (the acquirer matches answers by DE11 and DE41), but a
//! reversal sent right behind its original (a POS cancelling at once) could
//! run first, find no original, be acknowledged, and leave the original
//! approved and counted. The engine waits for an original it sees in
//! flight; one that has not reached the engine yet it cannot see. So a
//! reversal is held until every request that arrived before it on its
//! connection has been answered: the acquirer's order is the switch's.
//!
//! The connection's one task owns its `Arrivals`, so none of this takes a
//! lock or a wake-up of its own.

use std::collections::{BTreeSet, VecDeque};

/// The requests of one connection not answered yet, by arrival number, and
/// the reversals held back behind them.
#[derive(Debug)]
pub(super) struct Arrivals<T> {
    next: u64,
    /// Every request arrived and not answered, held ones included.
    open: BTreeSet<u64>,
    /// Held requests in arrival order, each waiting for every open request
    /// before it.
    held: VecDeque<(u64, T)>,
}

impl<T> Default for Arrivals<T> {
    fn default() -> Self {
        Arrivals {
            next: 0,
            open: BTreeSet::new(),
            held: VecDeque::new(),
        }
    }
}

impl<T> Arrivals<T> {
    /// The number of the next frame, taken in frame order; it stays open
    /// until [`Arrivals::answered`].
    pub(super) fn arrive(&mut self) -> u64 {
        let number = self.next;
        self.next += 1;
        self.open.insert(number);
        number
    }

    /// Requests arrived and not answered, held ones included.
    pub(super) fn open(&self) -> usize {
        self.open.len()
    }

    /// Starts `request` (arrival `number`) now, or holds it until every
    /// request before it is answered; returns it if it may start.
    pub(super) fn start_in_order(&mut self, number: u64, request: T) -> Option<T> {
        if self.open.first().is_some_and(|&first| first < number) {
            self.held.push_back((number, request));
            None
        } else {
            Some(request)
        }
    }

    /// Marks `number` answered; returns the held request that may start
    /// now, if any. At most one can: once it starts it is open, and every
    /// later held request waits for it.
    pub(super) fn answered(&mut self, number: u64) -> Option<T> {
        self.open.remove(&number);
        let (first_held, _) = self.held.front()?;
        if self.open.first() == Some(first_held) {
            self.held.pop_front().map(|(_, request)| request)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_request_waits_for_those_before_it_and_not_for_those_after() {
        let mut arrivals = Arrivals::default();
        let first = arrivals.arrive();
        let second = arrivals.arrive();
        let reversal = arrivals.arrive();
        let after = arrivals.arrive();
        assert_eq!(arrivals.start_in_order(first, "first"), Some("first"));
        assert_eq!(arrivals.start_in_order(reversal, "reversal"), None);
        // One after it starts at once, and its answer releases nothing.
        assert_eq!(arrivals.answered(after), None);
        assert_eq!(arrivals.answered(first), None, "the second is still open");
        assert_eq!(arrivals.answered(second), Some("reversal"));
        assert_eq!(arrivals.open(), 1, "the reversal itself, now started");
    }

    #[test]
    fn held_requests_start_one_after_another_in_arrival_order() {
        let mut arrivals = Arrivals::default();
        let original = arrivals.arrive();
        let one = arrivals.arrive();
        let two = arrivals.arrive();
        assert_eq!(arrivals.start_in_order(one, 1), None);
        assert_eq!(arrivals.start_in_order(two, 2), None);
        assert_eq!(arrivals.answered(original), Some(1));
        assert_eq!(arrivals.answered(one), Some(2));
        assert_eq!(arrivals.answered(two), None);
        assert_eq!(arrivals.open(), 0);
    }

    #[test]
    fn the_first_request_of_a_connection_starts_at_once() {
        let mut arrivals = Arrivals::default();
        let number = arrivals.arrive();
        assert_eq!(arrivals.start_in_order(number, ()), Some(()));
    }
}
