//! Start-up: [`Engine::replay`] puts the journal's last 24 hours of
//! approvals back into the card and merchant actors, and only then lets the
//! engine decide.
//!
//! ```text
//! Engine::new           not replayed: authorize -> 91 (HTTP 503), reverse -> 91,
//!                       neither decided nor journaled
//! Engine::replay        approvals since now - 24 h, page by page -> shards.restore
//!                       -> the duplicate window asks the journal until it has passed
//!                       -> replayed: authorize and reverse decide from here on
//! ```
//!
//! The rule lives here, not in an ingress, so no ingress can decide on
//! empty limits: HTTP is up during replay (health routes answer, reporting
//! not ready) and its card routes answer 503 with `Retry-After`; ISO 8583
//! is accepted only after replay.

use actors::Restore;
use protocol::domain::{Authorization, DeclineReason, Token};
use storage::StorageError;

use crate::engine::parts::Engine;
use crate::engine::record::CardOutcome;

/// The longest velocity window; replay covers it.
const REPLAY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Rows read per replay query: each page is restored before the next is
/// read, so 24 hours of approvals never sit in memory at once.
const REPLAY_PAGE_ROWS: u32 = 10_000;

impl Engine {
    /// Restores the velocity of every approved, unreversed authorization
    /// and purchase of the last 24 hours (by the engine's clock), row by
    /// row as the journal hands them over, then marks the engine replayed:
    /// requests are decided from then on. Returns the approvals replayed.
    /// Called once, at start, before any ingress takes ISO 8583 traffic: a
    /// second call would count every approval twice.
    pub async fn replay(&self) -> Result<u64, StorageError> {
        let world = &self.world;
        let since_ms = world.clock.now_ms().saturating_sub(REPLAY_WINDOW_MS);
        let replayed =
            storage::replay_approved(&world.store, since_ms, REPLAY_PAGE_ROWS, async |row| {
                world
                    .shards
                    .restore(Restore {
                        token: row.token,
                        merchant_id: row.merchant_id,
                        amount: row.amount,
                        at_ms: row.at_ms,
                    })
                    .await;
            })
            .await?;
        self.check_journal_for_duplicates_after_restart().await?;
        // In a fleet, the shared velocity in Redis must be whole too.
        self.keep_fleet_built().await;
        self.set_ready();
        Ok(replayed)
    }

    /// The answer to a card request that arrives before replay is done:
    /// 91 (HTTP 503, retry), nothing decided, journaled or counted. `None`
    /// once replayed.
    pub(crate) fn refuse_before_replay(
        &self,
        authorization: &Authorization,
        token: Token,
    ) -> Option<CardOutcome> {
        if self.replayed() {
            return None;
        }
        Some(self.undecided(authorization, token, DeclineReason::Starting))
    }
}
