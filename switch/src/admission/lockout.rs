//! The lockout of client origins after failed HTTP authentications: an
//! origin (peer IP) that sends too many wrong keys within a period is
//! refused for that period, right key or not, so a guesser learns nothing
//! once locked out.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actors::Clock;

use crate::admission::RetryAfter;
use crate::config::SecuritySettings;

/// What [`Lockout::check`] found for an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockoutStanding {
    Allowed,
    LockedOut(RetryAfter),
}

/// What [`Lockout::fail`] did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockoutFailure {
    /// Counted; the origin may still try.
    Counted,
    /// This failure locked the origin out.
    LockedOut,
    /// The table is full of other origins; this one is not tracked.
    Untracked,
}

#[derive(Debug, Clone, Copy)]
struct Origin {
    failures: u32,
    /// When the first counted failure came; failures older than the period
    /// are forgotten.
    since_ms: u64,
    /// Set once locked out.
    locked_until_ms: Option<u64>,
}

/// Shards of the origin table, so lookups from many connections rarely meet
/// on one lock.
const LOCKOUT_SHARDS: u8 = 16;

/// Failed authentications per client origin, bounded.
///
/// Every authenticated request asks [`Lockout::check`], one short lock on
/// one of 16 shards; only failures write. Each shard holds at most
/// `lockout_origins_max / 16` origins: when full it first forgets origins
/// whose period has passed, and if it is still full the new origin is not
/// tracked (counted as untracked). So an attacker with many addresses gets
/// at most `lockout_failures` tries from each, and cannot grow the memory.
pub struct Lockout {
    shards: Vec<Mutex<HashMap<IpAddr, Origin>>>,
    origins_max_per_shard: usize,
    failures_max: u32,
    period_ms: u64,
    clock: Arc<dyn Clock>,
    /// Origins locked out since start.
    lockouts: AtomicU64,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout")
            .field("failures_max", &self.failures_max)
            .field("period_ms", &self.period_ms)
            .finish_non_exhaustive()
    }
}

impl Lockout {
    pub fn new(settings: SecuritySettings, clock: Arc<dyn Clock>) -> Lockout {
        Lockout {
            shards: (0..LOCKOUT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            origins_max_per_shard: settings
                .lockout_origins_max
                .div_ceil(usize::from(LOCKOUT_SHARDS)),
            failures_max: settings.lockout_failures,
            period_ms: settings.lockout_ms,
            clock,
            lockouts: AtomicU64::new(0),
        }
    }

    fn shard(&self, origin: IpAddr) -> Option<&Mutex<HashMap<IpAddr, Origin>>> {
        let mut hasher = DefaultHasher::new();
        origin.hash(&mut hasher);
        let index = hasher.finish() % u64::from(LOCKOUT_SHARDS);
        self.shards.get(usize::try_from(index).ok()?)
    }

    /// Whether `origin` may try to authenticate now.
    pub fn check(&self, origin: IpAddr) -> LockoutStanding {
        let now_ms = self.clock.now_ms();
        let Some(Ok(mut shard)) = self.shard(origin).map(Mutex::lock) else {
            return LockoutStanding::Allowed;
        };
        match shard.get(&origin).copied() {
            Some(Origin {
                locked_until_ms: Some(until_ms),
                ..
            }) => {
                if now_ms < until_ms {
                    LockoutStanding::LockedOut(RetryAfter {
                        us: (until_ms - now_ms).saturating_mul(1000),
                    })
                } else {
                    // The lockout is over: the origin starts afresh.
                    shard.remove(&origin);
                    LockoutStanding::Allowed
                }
            }
            _ => LockoutStanding::Allowed,
        }
    }

    /// Counts a failed authentication from `origin`.
    pub fn fail(&self, origin: IpAddr) -> LockoutFailure {
        let failure = self.count_failure(origin);
        if failure == LockoutFailure::LockedOut {
            self.lockouts.fetch_add(1, Ordering::Relaxed);
        }
        failure
    }

    fn count_failure(&self, origin: IpAddr) -> LockoutFailure {
        let now_ms = self.clock.now_ms();
        let Some(Ok(mut shard)) = self.shard(origin).map(Mutex::lock) else {
            return LockoutFailure::Untracked;
        };
        if !shard.contains_key(&origin) && shard.len() >= self.origins_max_per_shard {
            let period_ms = self.period_ms;
            shard.retain(|_, entry| match entry.locked_until_ms {
                Some(until_ms) => now_ms < until_ms,
                None => now_ms.saturating_sub(entry.since_ms) < period_ms,
            });
            if shard.len() >= self.origins_max_per_shard {
                return LockoutFailure::Untracked;
            }
        }
        let entry = shard.entry(origin).or_insert(Origin {
            failures: 0,
            since_ms: now_ms,
            locked_until_ms: None,
        });
        if let Some(until_ms) = entry.locked_until_ms {
            if now_ms < until_ms {
                return LockoutFailure::Counted;
            }
            *entry = Origin {
                failures: 0,
                since_ms: now_ms,
                locked_until_ms: None,
            };
        }
        if now_ms.saturating_sub(entry.since_ms) >= self.period_ms {
            entry.failures = 0;
            entry.since_ms = now_ms;
        }
        entry.failures += 1;
        if entry.failures >= self.failures_max {
            entry.locked_until_ms = Some(now_ms.saturating_add(self.period_ms));
            LockoutFailure::LockedOut
        } else {
            LockoutFailure::Counted
        }
    }

    /// Origins tracked now, for metrics and tests.
    pub fn origins(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok().map(|map| map.len()))
            .sum()
    }

    /// Origins locked out since start, for metrics.
    pub fn lockouts_total(&self) -> u64 {
        self.lockouts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::ManualClock;

    fn lockout(clock: &Arc<ManualClock>, origins_max: usize) -> Lockout {
        let clock: Arc<dyn Clock> = Arc::<ManualClock>::clone(clock);
        Lockout::new(
            SecuritySettings {
                lockout_failures: 3,
                lockout_ms: 60_000,
                lockout_origins_max: origins_max,
            },
            clock,
        )
    }

    #[test]
    fn an_origin_is_locked_out_after_its_failures_and_let_in_after_the_period() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let lockout = lockout(&clock, 1000);
        let origin: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(lockout.fail(origin), LockoutFailure::Counted);
        assert_eq!(lockout.fail(origin), LockoutFailure::Counted);
        assert_eq!(lockout.check(origin), LockoutStanding::Allowed);
        assert_eq!(lockout.lockouts_total(), 0);
        assert_eq!(lockout.fail(origin), LockoutFailure::LockedOut);
        assert_eq!(lockout.lockouts_total(), 1);
        assert_eq!(
            lockout.check(origin),
            LockoutStanding::LockedOut(RetryAfter { us: 60_000_000 })
        );
        assert_eq!(lockout.check(other), LockoutStanding::Allowed);
        clock.advance(std::time::Duration::from_millis(59_999));
        assert!(matches!(
            lockout.check(origin),
            LockoutStanding::LockedOut(_)
        ));
        clock.advance(std::time::Duration::from_millis(1));
        assert_eq!(lockout.check(origin), LockoutStanding::Allowed);
        assert_eq!(lockout.origins(), 0, "forgotten once over");
        // Failures spread over more than the period never lock out.
        for _ in 0..10 {
            assert_eq!(lockout.fail(other), LockoutFailure::Counted);
            clock.advance(std::time::Duration::from_secs(31));
            assert_eq!(lockout.fail(other), LockoutFailure::Counted);
            clock.advance(std::time::Duration::from_secs(31));
        }
        assert_eq!(lockout.lockouts_total(), 1);
    }

    #[test]
    fn many_origins_cannot_grow_the_table() {
        let clock = Arc::new(ManualClock::new(0));
        let lockout = lockout(&clock, 64);
        let mut untracked = 0;
        for i in 0..10_000u32 {
            let origin = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            if lockout.fail(origin) == LockoutFailure::Untracked {
                untracked += 1;
            }
        }
        assert!(lockout.origins() <= 64, "{}", lockout.origins());
        assert!(untracked >= 10_000 - 64);
        // Once their period has passed, room is made for new origins.
        clock.advance(std::time::Duration::from_secs(61));
        let origin: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(lockout.fail(origin), LockoutFailure::Counted);
    }
}
