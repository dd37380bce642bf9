//! Per-merchant admission rates: one token bucket per merchant, checked by
//! both ingresses before any work is done for a card request.
//!
//! Each merchant's bucket is one atomic word in a map that is never changed
//! once built, so checking it takes no lock and a merchant over its rate
//! cannot slow another down: they share nothing but the read-only map. A
//! configuration reload builds a new map ([`AdmissionRates::reconfigured`])
//! that carries each kept merchant's bucket state over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::ids::MerchantId;

use crate::admission::RetryAfter;
use crate::clock::monotonic_us;
use crate::config::{MerchantConfig, RateLimit};

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
    /// On the [`monotonic_us`] clock.
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

/// Every configured merchant's admission bucket; a merchant without a rate
/// (or not configured) is not limited here.
#[derive(Debug)]
pub struct AdmissionRates {
    buckets: HashMap<MerchantId, Bucket>,
}

impl AdmissionRates {
    pub fn new(merchants: &[MerchantConfig]) -> AdmissionRates {
        AdmissionRates {
            buckets: merchants
                .iter()
                .filter_map(|m| m.rate.map(|rate| (m.id, Bucket::new(rate))))
                .collect(),
        }
    }

    /// The rates of `merchants` (a reloaded configuration), each merchant
    /// that had a bucket here keeping how far ahead its arrival time runs:
    /// a reload neither refills a merchant's burst nor takes it away. A
    /// request admitted by this map between the copy and the swap is not
    /// carried over, which at most lets one more through.
    pub fn reconfigured(&self, merchants: &[MerchantConfig]) -> AdmissionRates {
        let rates = AdmissionRates::new(merchants);
        for (merchant, bucket) in &rates.buckets {
            if let Some(old) = self.buckets.get(merchant) {
                bucket
                    .arrival_us
                    .store(old.arrival_us.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        rates
    }

    /// Takes a token from `merchant`'s bucket, or says when one will be there.
    pub fn admit(&self, merchant: MerchantId) -> Result<(), RetryAfter> {
        self.admit_at(merchant, monotonic_us())
    }

    /// [`AdmissionRates::admit`] at a given time, for tests.
    pub fn admit_at(&self, merchant: MerchantId, now_us: u64) -> Result<(), RetryAfter> {
        match self.buckets.get(&merchant) {
            Some(bucket) => bucket.admit(now_us),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
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
        let rates = AdmissionRates::new(&[
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
            assert_eq!(rates.admit_at(a, t0), Ok(()));
        }
        let refused = rates.admit_at(a, t0).unwrap_err();
        assert_eq!(refused.us, 100_000, "one token every 100 ms");
        assert_eq!(refused.seconds(), 1, "rounded up");
        // B has no rate; A's state does not touch it.
        for _ in 0..1000 {
            assert_eq!(rates.admit_at(b, t0), Ok(()));
        }
        assert!(rates.admit_at(a, t0 + 99_999).is_err());
        assert_eq!(rates.admit_at(a, t0 + 100_000), Ok(()));
        assert!(rates.admit_at(a, t0 + 100_000).is_err());
        // Idle for a long time: the bucket is full again, but no fuller.
        let later = t0 + 60_000_000;
        for _ in 0..3 {
            assert_eq!(rates.admit_at(a, later), Ok(()));
        }
        assert!(rates.admit_at(a, later).is_err());
        // An unknown merchant is not limited here (the actors decline it).
        assert_eq!(rates.admit_at(pad("NOBODY").unwrap(), t0), Ok(()));
    }

    #[test]
    fn a_reload_keeps_a_spent_bucket_spent_and_applies_the_new_rate() {
        let slow = Some(RateLimit {
            per_second: 10,
            burst: 2,
        });
        let rates = AdmissionRates::new(&[merchant("A", slow), merchant("B", slow)]);
        let (a, b, c) = (pad("A").unwrap(), pad("B").unwrap(), pad("C").unwrap());
        let t0 = 5_000_000;
        for _ in 0..2 {
            assert_eq!(rates.admit_at(a, t0), Ok(()));
        }
        assert!(rates.admit_at(a, t0).is_err());
        // A keeps its rate, B loses its own, C is new.
        let reloaded = rates.reconfigured(&[
            merchant("A", slow),
            merchant("B", None),
            merchant("C", slow),
        ]);
        assert!(
            reloaded.admit_at(a, t0).is_err(),
            "A's spent burst stays spent"
        );
        assert_eq!(reloaded.admit_at(a, t0 + 100_000), Ok(()));
        for _ in 0..100 {
            assert_eq!(reloaded.admit_at(b, t0), Ok(()), "B is no longer limited");
        }
        for _ in 0..2 {
            assert_eq!(reloaded.admit_at(c, t0), Ok(()));
        }
        assert!(reloaded.admit_at(c, t0).is_err(), "C gets its own burst");
    }

    #[test]
    fn a_bucket_admits_its_rate_over_time_from_many_threads() {
        let rates = Arc::new(AdmissionRates::new(&[merchant(
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
                            if rates.admit_at(a, step * 1000).is_ok() {
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
}
