//! A request's one call to Redis on its reply path, after the node's card
//! actors decided: its acquirer keys claimed and, when the claim is this
//! node's, its approval checked and counted against the card's global
//! limits, in one script (`SETTLE_LUA`). Claiming first and counting after,
//! in two round trips, held a fleet node to about half a single node's rate
//! (docs/BENCHMARKS.md); the answer that other nodes read is left after the
//! reply (`engine/duplicates.rs`).

use std::sync::atomic::Ordering;

use actors::Window;
use protocol::Amount;
use protocol::domain::{DeclineReason, Token};

use super::claims::{Approval, Claim, Settled, Velocity};
use super::{
    BUILT_KEY, Fleet, FleetError, bucket_of, card_key, card_ttl_ms, limit_arg, window_tag,
};

/// The script's reply for "nothing counted".
const NOT_COUNTED: i64 = -2;

impl Fleet {
    /// Claims `key` (pending for at most `pending_ms`) and, when the claim
    /// is this node's, checks and counts `approval`, in one round trip.
    pub async fn settle(
        &self,
        key: Option<&str>,
        pending_ms: u64,
        approval: Option<Approval>,
    ) -> Result<Settled, FleetError> {
        // While no generation is whole nothing is counted (`NotBuilt`), but
        // the claim still is.
        let generation = self.generation.load(Ordering::Relaxed);
        let counting = approval.filter(|_| generation != 0);
        if key.is_none() && counting.is_none() {
            return Ok(Settled {
                claim: Claim::Mine,
                velocity: match approval {
                    Some(_) => Velocity::NotBuilt,
                    None => Velocity::NotAsked,
                },
            });
        }
        let mut invocation = self.settle.prepare_invoke();
        match key {
            Some(key) => invocation
                .key(key)
                .arg(1)
                .arg(pending_ms)
                .arg(self.duplicate_window_ms.max(pending_ms))
                .arg(self.claims_since_ms.load(Ordering::Relaxed)),
            None => invocation.arg(0).arg(0).arg(0).arg(0),
        };
        match counting {
            Some(approval) => {
                invocation
                    .key(card_key(&approval.token, generation))
                    .key(BUILT_KEY)
                    .arg(1)
                    .arg(approval.amount.minor())
                    .arg(card_ttl_ms());
                for window in Window::ALL {
                    let current = bucket_of(window, approval.at_ms);
                    // Fewer buckets only in the first minutes after 1970.
                    let buckets = u64::from(window.bucket_count()).min(current + 1);
                    let limit = self.limits.of(window);
                    invocation
                        .arg(window_tag(window))
                        .arg(current)
                        .arg(buckets)
                        .arg(limit_arg(limit.count_max.map(u64::from)))
                        .arg(limit_arg(limit.amount_max.map(|amount| amount.minor())))
                        .arg(window.bucket_s());
                }
                invocation.arg(generation);
            }
            None => {
                invocation.arg(0);
            }
        }
        let mut connection = self.connection.clone();
        let (held, counted): (Option<String>, i64) = self
            .within_timeout(invocation.invoke_async(&mut connection))
            .await?;
        let claim = match key {
            Some(_) => Claim::read(held),
            None => Claim::Mine,
        };
        let velocity = match counted {
            _ if approval.is_none() || !claim.is_this_nodes() => Velocity::NotAsked,
            NOT_COUNTED if counting.is_none() => Velocity::NotBuilt,
            0 => Velocity::Counted,
            65 => Velocity::Declined(DeclineReason::CardCountLimit),
            61 => Velocity::Declined(DeclineReason::CardAmountLimit),
            // Lost since this node last looked: nothing is counted until a
            // generation is whole again, as while it is being rebuilt.
            -1 => {
                self.generation.store(0, Ordering::Relaxed);
                Velocity::NotBuilt
            }
            other => return Err(FleetError::UnexpectedReply(other)),
        };
        Ok(Settled { claim, velocity })
    }

    /// Checks one approval of `amount` at `at_ms` against the card's global
    /// limits and counts it if it fits, claiming nothing: `Ok(Err(reason))`
    /// is a decline, nothing counted.
    pub async fn reserve(
        &self,
        token: &Token,
        amount: Amount,
        at_ms: u64,
    ) -> Result<Result<(), DeclineReason>, FleetError> {
        let approval = Approval {
            token: *token,
            amount,
            at_ms,
        };
        match self.settle(None, 0, Some(approval)).await?.velocity {
            Velocity::Counted => Ok(Ok(())),
            Velocity::Declined(reason) => Ok(Err(reason)),
            Velocity::NotBuilt => Err(FleetError::NotBuilt),
            Velocity::NotAsked => Err(FleetError::UnexpectedReply(NOT_COUNTED)),
        }
    }
}
