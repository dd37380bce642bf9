//! Admission limits in front of the engine, shared by both ingresses:
//!
//! - [`RateLimits`]: a token bucket per merchant (DE42, or the merchant of
//!   an HTTP API key). Over its rate a merchant's card request is refused at
//!   once, before the vault, the actors and the journal: HTTP 429 with
//!   `Retry-After`, ISO 8583 DE39 91.
//! - [`Lockout`]: failed HTTP authentications counted per client origin (peer
//!   IP); an origin with too many is refused for a while, right key or not.
//!
//! Each merchant's bucket is one atomic word in a map built at start and
//! never changed, so checking it takes no lock and a merchant over its limit
//! cannot slow another down: they share nothing but the read-only map.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actors::Clock;
use protocol::iso::MerchantId;

use crate::config::{MerchantConfig, RateLimit, SecuritySettings};

/// A refused request may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub us: u64,
}

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1: what `Retry-After` carries.
    pub fn seconds(self) -> u64 {
        self.us.div_ceil(1_000_000).max(1)
    }
}

/// One merchant's bucket, as a generic cell rate algorithm (GCRA): the
/// "theoretical arrival time" of the next request is all the state, so one
/// compare-and-swap admits a request. It admits exactly what a token bucket
/// of `burst` tokens refilled at `per_second` would.
#[derive(Debug)]
struct Bucket {
    /// Microseconds between tokens.
    interval_us: u64,
    /// How far ahead of now the arrival time may run: `burst` tokens.
    tolerance_us: u64,
    /// Microseconds since [`RateLimits::started`].
    arrival_us: AtomicU64,
}

impl Bucket {
    fn new(rate: RateLimit) -> Bucket {
        let interval_us = (1_000_000 / u64::from(rate.per_second.max(1))).max(1);
        Bucket {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(rate.burst.max(1))),
            arrival_us: AtomicU64::new(0),
        }
    }

    fn admit(&self, now_us: u64) -> Result<(), RetryAfter> {
        let mut current = self.arrival_us.load(Ordering::Relaxed);
        loop {
            let next = current.max(now_us).saturating_add(self.interval_us);
            let ahead_us = next - now_us;
            if ahead_us > self.tolerance_us {
                return Err(RetryAfter {
                    us: ahead_us - self.tolerance_us,
                });
            }
            match self.arrival_us.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}

/// Every configured merchant's bucket; a merchant without a rate (or not
/// configured) is not limited here.
#[derive(Debug)]
pub struct RateLimits {
    buckets: HashMap<MerchantId, Bucket>,
    started: Instant,
}

impl RateLimits {
    pub fn new(merchants: &[MerchantConfig]) -> RateLimits {
        RateLimits {
            buckets: merchants
                .iter()
                .filter_map(|m| m.rate.map(|rate| (m.id, Bucket::new(rate))))
                .collect(),
            started: Instant::now(),
        }
    }

    /// Takes a token from `merchant`'s bucket, or says when one will be there.
    pub fn admit(&self, merchant: MerchantId) -> Result<(), RetryAfter> {
        let now_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.admit_at(merchant, now_us)
    }

    /// [`RateLimits::admit`] at a given time, for tests.
    pub fn admit_at(&self, merchant: MerchantId, now_us: u64) -> Result<(), RetryAfter> {
        match self.buckets.get(&merchant) {
            Some(bucket) => bucket.admit(now_us),
            None => Ok(()),
        }
    }
}

/// What [`Lockout::check`] found for an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Allowed,
    LockedOut(RetryAfter),
}

/// What [`Lockout::fail`] did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
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
const LOCKOUT_SHARDS: usize = 16;

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
            origins_max_per_shard: settings.lockout_origins_max.div_ceil(LOCKOUT_SHARDS),
            failures_max: settings.lockout_failures,
            period_ms: settings.lockout_ms,
            clock,
        }
    }

    fn shard(&self, origin: IpAddr) -> Option<&Mutex<HashMap<IpAddr, Origin>>> {
        let mut hasher = DefaultHasher::new();
        origin.hash(&mut hasher);
        self.shards
            .get((hasher.finish() as usize) % LOCKOUT_SHARDS.max(1))
    }

    /// Whether `origin` may try to authenticate now.
    pub fn check(&self, origin: IpAddr) -> Standing {
        let now_ms = self.clock.now_ms();
        let Some(Ok(mut shard)) = self.shard(origin).map(Mutex::lock) else {
            return Standing::Allowed;
        };
        match shard.get(&origin).copied() {
            Some(Origin {
                locked_until_ms: Some(until_ms),
                ..
            }) => {
                if now_ms < until_ms {
                    Standing::LockedOut(RetryAfter {
                        us: (until_ms - now_ms).saturating_mul(1000),
                    })
                } else {
                    // The lockout is over: the origin starts afresh.
                    shard.remove(&origin);
                    Standing::Allowed
                }
            }
            _ => Standing::Allowed,
        }
    }

    /// Counts a failed authentication from `origin`.
    pub fn fail(&self, origin: IpAddr) -> Failure {
        let now_ms = self.clock.now_ms();
        let Some(Ok(mut shard)) = self.shard(origin).map(Mutex::lock) else {
            return Failure::Untracked;
        };
        if !shard.contains_key(&origin) && shard.len() >= self.origins_max_per_shard {
            let period_ms = self.period_ms;
            shard.retain(|_, entry| match entry.locked_until_ms {
                Some(until_ms) => now_ms < until_ms,
                None => now_ms.saturating_sub(entry.since_ms) < period_ms,
            });
            if shard.len() >= self.origins_max_per_shard {
                return Failure::Untracked;
            }
        }
        let entry = shard.entry(origin).or_insert(Origin {
            failures: 0,
            since_ms: now_ms,
            locked_until_ms: None,
        });
        if let Some(until_ms) = entry.locked_until_ms {
            if now_ms < until_ms {
                return Failure::Counted;
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
            Failure::LockedOut
        } else {
            Failure::Counted
        }
    }

    /// Origins tracked now, for metrics and tests.
    pub fn origins(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok().map(|map| map.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::ManualClock;
    use protocol::domain::pad;

    fn merchant(id: &str, rate: Option<RateLimit>) -> MerchantConfig {
        MerchantConfig {
            id: pad(id).unwrap(),
            api_key_sha256: None,
            rate,
        }
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let limits = RateLimits::new(&[
            merchant(
                "A",
                Some(RateLimit {
                    per_second: 10,
                    burst: 3,
                }),
            ),
            merchant("B", None),
        ]);
        let a = pad("A").unwrap();
        let b = pad("B").unwrap();
        let t0 = 5_000_000;
        for _ in 0..3 {
            assert_eq!(limits.admit_at(a, t0), Ok(()));
        }
        let refused = limits.admit_at(a, t0).unwrap_err();
        assert_eq!(refused.us, 100_000, "one token every 100 ms");
        assert_eq!(refused.seconds(), 1, "rounded up");
        // B has no rate; A's state does not touch it.
        for _ in 0..1000 {
            assert_eq!(limits.admit_at(b, t0), Ok(()));
        }
        assert!(limits.admit_at(a, t0 + 99_999).is_err());
        assert_eq!(limits.admit_at(a, t0 + 100_000), Ok(()));
        assert!(limits.admit_at(a, t0 + 100_000).is_err());
        // Idle for a long time: the bucket is full again, but no fuller.
        let later = t0 + 60_000_000;
        for _ in 0..3 {
            assert_eq!(limits.admit_at(a, later), Ok(()));
        }
        assert!(limits.admit_at(a, later).is_err());
        // An unknown merchant is not limited here (the actors decline it).
        assert_eq!(limits.admit_at(pad("NOBODY").unwrap(), t0), Ok(()));
    }

    #[test]
    fn a_bucket_admits_its_rate_over_time_from_many_threads() {
        let limits = Arc::new(RateLimits::new(&[merchant(
            "A",
            Some(RateLimit {
                per_second: 1000,
                burst: 10,
            }),
        )]));
        let a = pad("A").unwrap();
        // 4 threads ask 1000 times each at every 1 ms step for 100 ms:
        // 10 (burst) + 100 (one per ms) may pass, and no more.
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for step in 0..=100u64 {
                        for _ in 0..250 {
                            if limits.admit_at(a, step * 1000).is_ok() {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let admitted = admitted.load(Ordering::Relaxed);
        assert!((100..=111).contains(&admitted), "{admitted}");
    }

    fn lockout(clock: &Arc<ManualClock>, origins_max: usize) -> Lockout {
        Lockout::new(
            SecuritySettings {
                lockout_failures: 3,
                lockout_ms: 60_000,
                lockout_origins_max: origins_max,
            },
            Arc::clone(clock) as Arc<dyn Clock>,
        )
    }

    #[test]
    fn an_origin_is_locked_out_after_its_failures_and_let_in_after_the_period() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let lockout = lockout(&clock, 1000);
        let origin: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(lockout.fail(origin), Failure::Counted);
        assert_eq!(lockout.fail(origin), Failure::Counted);
        assert_eq!(lockout.check(origin), Standing::Allowed);
        assert_eq!(lockout.fail(origin), Failure::LockedOut);
        assert_eq!(
            lockout.check(origin),
            Standing::LockedOut(RetryAfter { us: 60_000_000 })
        );
        assert_eq!(lockout.check(other), Standing::Allowed);
        clock.advance(std::time::Duration::from_millis(59_999));
        assert!(matches!(lockout.check(origin), Standing::LockedOut(_)));
        clock.advance(std::time::Duration::from_millis(1));
        assert_eq!(lockout.check(origin), Standing::Allowed);
        assert_eq!(lockout.origins(), 0, "forgotten once over");
        // Failures spread over more than the period never lock out.
        for _ in 0..10 {
            assert_eq!(lockout.fail(other), Failure::Counted);
            clock.advance(std::time::Duration::from_secs(31));
            assert_eq!(lockout.fail(other), Failure::Counted);
            clock.advance(std::time::Duration::from_secs(31));
        }
    }

    #[test]
    fn many_origins_cannot_grow_the_table() {
        let clock = Arc::new(ManualClock::new(0));
        let lockout = lockout(&clock, 64);
        let mut untracked = 0;
        for i in 0..10_000u32 {
            let origin = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            if lockout.fail(origin) == Failure::Untracked {
                untracked += 1;
            }
        }
        assert!(lockout.origins() <= 64, "{}", lockout.origins());
        assert!(untracked >= 10_000 - 64);
        // Once their period has passed, room is made for new origins.
        clock.advance(std::time::Duration::from_secs(61));
        let origin: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(lockout.fail(origin), Failure::Counted);
    }
}
