//! A shard's table of cards, and the sweep that evicts the idle ones.
//!
//! Cards live in a dense vector found through an index from token to
//! position, rather than in the map itself, so the map's spare capacity (up to
//! half its slots after it grows) costs 24 bytes a slot instead of 200, and so
//! the sweep can walk them with a plain cursor. The index and the vector change
//! together in this file only.

use std::collections::HashMap;

use protocol::domain::Token;

use super::hash::EntityHash;
use crate::card::CardState;

/// Bytes one card takes in a shard's table of cards, beside the index entry
/// (a token and a `u32`) that finds it.
pub const CARD_SLOT_BYTES: usize = std::mem::size_of::<CardSlot>();

/// How long the eviction sweep takes to pass over all of a shard's cards, by
/// the shards' clock. Only cards idle for a whole day are evicted, so an hour
/// per pass is plenty, and it costs a shard with a million cards about 280
/// looks a second: far below a decision each, where a fixed number of looks
/// per message measurably slowed decisions under load (each look at a card
/// is a cache miss).
const SWEEP_PASS_MS: u64 = 3_600_000;

/// The most cards one batch looks at, so a clock that jumped (or a shard
/// that sat idle) spreads its catching up over several batches.
const SWEEP_STEPS_MAX: u64 = 4_096;

/// One card in a shard's table. The token is kept beside the state so the
/// sweep can remove the card's index entry when it evicts it.
struct CardSlot {
    token: Token,
    state: CardState,
}

/// The cards one shard holds.
pub(super) struct CardTable {
    /// Token to position in `cards`; a `u32` rather than a `usize` keeps an
    /// index entry small, and a shard would need 4 billion cards (800 GB) to
    /// pass it.
    index: HashMap<Token, u32, EntityHash>,
    cards: Vec<CardSlot>,
    sweep_cursor: usize,
    /// The shard time the sweep has caught up to.
    swept_at_ms: u64,
}

impl CardTable {
    /// An empty table whose sweep starts at `now_ms`.
    pub(super) fn new(now_ms: u64) -> CardTable {
        CardTable {
            index: HashMap::default(),
            cards: Vec::new(),
            sweep_cursor: 0,
            swept_at_ms: now_ms,
        }
    }

    /// Cards held.
    pub(super) fn len(&self) -> usize {
        self.cards.len()
    }

    fn position(&self, token: &Token) -> Option<usize> {
        let &slot = self.index.get(token)?;
        usize::try_from(slot).ok()
    }

    /// The card with `token`, if the table holds it.
    pub(super) fn find(&mut self, token: &Token) -> Option<&mut CardState> {
        let position = self.position(token)?;
        self.cards.get_mut(position).map(|slot| &mut slot.state)
    }

    /// The card with `token`, created empty as of `now_ms` if the table does
    /// not hold it.
    pub(super) fn find_or_insert(&mut self, token: Token, now_ms: u64) -> &mut CardState {
        let position = match self.position(&token) {
            Some(position) => position,
            None => {
                let position = self.cards.len();
                self.cards.push(CardSlot {
                    token,
                    state: CardState::new(now_ms),
                });
                self.index
                    .insert(token, u32::try_from(position).unwrap_or(u32::MAX));
                position
            }
        };
        // `index` and `cards` change together, so every position is in range.
        &mut self.cards[position].state
    }

    /// Sweeps as many cards as the time since the last sweep is worth, so a
    /// pass over every card takes `SWEEP_PASS_MS` of the shards' clock.
    /// `now_ms` is the latest time the shard has seen.
    pub(super) fn sweep_due(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.swept_at_ms);
        let cards = u64::try_from(self.cards.len()).unwrap_or(u64::MAX);
        let due = u128::from(elapsed_ms) * u128::from(cards) / u128::from(SWEEP_PASS_MS);
        let due = u64::try_from(due).unwrap_or(u64::MAX);
        if due == 0 {
            // Less than one card's worth of time: let it add up. An empty
            // shard has nothing to owe.
            if cards == 0 {
                self.swept_at_ms = now_ms;
            }
            return;
        }
        let steps = due.min(cards).min(SWEEP_STEPS_MAX);
        self.swept_at_ms = if steps == cards {
            // A whole pass is done: nothing more can be owed.
            now_ms
        } else {
            // Time is spent in proportion to the steps taken; what the cap
            // held back stays owed to the next batches.
            let spent_ms = steps * SWEEP_PASS_MS / cards;
            self.swept_at_ms.saturating_add(spent_ms).min(now_ms)
        };
        // At most the number of cards, which is a `usize`.
        self.sweep(usize::try_from(steps).unwrap_or(usize::MAX), now_ms);
    }

    /// Looks at the next `steps` cards and drops the idle ones: a card with
    /// nothing in any window decides exactly as a new one would, so evicting
    /// it loses nothing.
    fn sweep(&mut self, steps: usize, now_ms: u64) {
        for _ in 0..steps {
            if self.sweep_cursor >= self.cards.len() {
                self.sweep_cursor = 0;
                self.shrink();
                if self.cards.is_empty() {
                    return;
                }
            }
            let cursor = self.sweep_cursor;
            let idle = self
                .cards
                .get_mut(cursor)
                .is_some_and(|slot| slot.state.is_idle(now_ms));
            if !idle {
                self.sweep_cursor += 1;
                continue;
            }
            let evicted = self.cards.swap_remove(cursor);
            self.index.remove(&evicted.token);
            // The last card moved into the hole; the cursor looks at it next.
            if let Some(moved) = self.cards.get(cursor) {
                let slot = u32::try_from(cursor).unwrap_or(u32::MAX);
                self.index.insert(moved.token, slot);
            }
        }
    }

    /// After a full pass, gives memory back if most cards have gone. Both
    /// the vector and the map keep twice what they hold, so the next burst
    /// does not reallocate at once.
    fn shrink(&mut self) {
        const SHRINK_FLOOR: usize = 1024;
        let held = self.cards.len();
        if self.cards.capacity() > SHRINK_FLOOR.max(4 * held) {
            self.cards.shrink_to(2 * held);
            self.index.shrink_to(2 * held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_slot_is_near_200_bytes() {
        assert_eq!(CARD_SLOT_BYTES, 200);
    }
}
