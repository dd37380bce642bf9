//! Since when Redis has held the fleet's duplicate claims: `d:since`, read
//! by each node once a second with the velocity's generation check. A claim
//! on absent keys vouches that no node answered them only once that is a
//! whole duplicate window ago (`claims.rs`); when Redis lost its keys (a
//! flush, a failover to an empty replica) `d:since` is gone with them, and
//! the first node to notice sets it afresh, so for the next window every
//! claim asks the journal. Unless the journal holds no request of the
//! window before now: then there is nothing a claim could miss (a new
//! fleet, a test or a benchmark on an empty journal), and it is set a window
//! back. As for velocity, a node still vouches for at most the second
//! between a loss and its next check.

use std::sync::atomic::Ordering;

use storage::{AnyStore, StoreReader};

use super::{Fleet, FleetError};

/// Names since when Redis has held the fleet's claims.
const SINCE_KEY: &str = "d:since";

impl Fleet {
    /// Reads `d:since` for the claims to come, setting it when it is
    /// missing; `now_ms` bounds the journal's window.
    pub(super) async fn keep_claims_since(
        &self,
        store: &AnyStore,
        now_ms: u64,
    ) -> Result<(), FleetError> {
        let mut connection = self.connection.clone();
        let held: Option<u64> = self
            .within_timeout(
                redis::cmd("GET")
                    .arg(SINCE_KEY)
                    .query_async(&mut connection),
            )
            .await?;
        let since = match held {
            Some(since) => since,
            None => {
                // Any request of the window, as after a single node's
                // restart: a decline retransmitted gets that decline too.
                let window_start = now_ms.saturating_sub(self.duplicate_window_ms);
                let quiet = !store.recorded_since(window_start).await?;
                let back_ms = if quiet { self.duplicate_window_ms } else { 0 };
                let mut invocation = self.since.prepare_invoke();
                invocation.key(SINCE_KEY).arg(back_ms);
                let since: u64 = self
                    .within_timeout(invocation.invoke_async(&mut connection))
                    .await?;
                tracing::info!(
                    quiet,
                    "fleet claims: redis holds none; they vouch for absent keys from one window on"
                );
                since
            }
        };
        self.claims_since_ms.store(since, Ordering::Relaxed);
        Ok(())
    }
}
