//! The admission limit: how many card requests and reversals the switch
//! works on at once, adapted to what it can finish, with each merchant and
//! acquirer held to its share of it and reversals admitted first.
//!
//! A switch offered more than it can do must refuse the surplus at the
//! door, quickly, rather than queue it: a request queued behind the surplus
//! is answered after the acquirer has given up on it (and reversed it),
//! which is worse than a quick 91. So every card request and reversal takes
//! a [`Permit`] before the vault, the actors or the journal see it, and
//! gives it back when its answer is ready.
//!
//! **The limit** follows Little's law: requests in flight are throughput
//! times latency, so at a given throughput the limit sets the latency. Every
//! window (100 ms and at least 16 answers) the average time from admission
//! to answer is compared with `latency_target_ms`:
//!
//! - above it for two windows running, the limit is scaled by target ÷
//!   average (the limit that would have met the target at the window's
//!   throughput), by at most a fifth per window: a standing queue, not one
//!   slow fsync or a segment's close, which a switch under its peak rides
//!   out with its requests still well within their deadlines;
//! - below nine tenths of it, and the limit refused someone in the window,
//!   the limit grows by a tenth: more in flight means larger group commits,
//!   and the switch finds how far that pays. Below nine tenths and refusing
//!   no one, a limit cut in an overload grows back to `limit_initial`,
//!   so the next stall under ordinary load finds room again.
//!
//! `limit_initial` (4 096) is the room a switch under ordinary load has
//! for a stall: at 10 000 requests a second, 400 ms of them.
//!
//! Between `limit_min` and `limit_max`. This is the gradient family of
//! adaptive concurrency limits (TCP Vegas, Netflix's concurrency-limits),
//! with the target given rather than inferred: the latency an operator
//! wants under load is a promise to acquirers, not a property of the disk.
//!
//! **Fairness.** While the limit binds, a merchant (DE42, or an HTTP key's
//! merchant) or acquirer (a mutual-TLS client's name) is admitted only
//! while it holds less than its share of the limit (the limit divided
//! among the merchants, and among the acquirers, with requests in flight),
//! and such a request may go up to a quarter past the limit. A merchant
//! flooding at five times its share is held to its share, while another's
//! requests still get in: the flood is refused, not its neighbours.
//! Shares are counted in 256 buckets per kind under a keyed hash: two
//! merchants that share a bucket share a share, which no sender can
//! arrange on purpose.
//!
//! **Reversals first.** A reversal is admitted up to twice the limit, past
//! every share: a shed reversal is money a cardholder does not get back
//! until the acquirer retries, and reversals are few.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::clock::monotonic_us;

/// What the admission limit is configured with (`[overload]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSettings {
    /// The average time from admission to answer the limit aims at.
    pub latency_target_us: u64,
    /// The limit at start.
    pub limit_initial: u32,
    pub limit_min: u32,
    pub limit_max: u32,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            latency_target_us: 20_000,
            limit_initial: 4_096,
            limit_min: 16,
            limit_max: 65_536,
        }
    }
}

/// What a permit is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An authorization or purchase, ISO or JSON.
    Card,
    /// An ISO 0400/0420 or a JSON reversal: admitted first.
    Reversal,
}

/// Why a request was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The switch has as much in flight as it can finish in time.
    Limit,
    /// The limit binds and this merchant or acquirer holds its share.
    FairShare,
}

/// Buckets per kind of owner.
const BUCKETS: usize = 256;
/// The shortest window the limit is adjusted over.
const WINDOW_US: u64 = 100_000;
/// The fewest answers a window is judged on.
const WINDOW_ANSWERS_MIN: u64 = 16;

/// Requests in flight per bucket of one kind of owner.
struct Owners {
    counts: [AtomicU32; BUCKETS],
    /// Buckets with requests in flight.
    active: AtomicU32,
    hasher: std::collections::hash_map::RandomState,
}

impl Owners {
    fn new() -> Owners {
        Owners {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            active: AtomicU32::new(0),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn bucket(&self, owner: &[u8]) -> usize {
        // The low byte of a keyed hash: a bucket index below BUCKETS.
        usize::from(self.hasher.hash_one(owner).to_le_bytes()[0])
    }

    fn count(&self, bucket: usize) -> u32 {
        self.counts
            .get(bucket)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Whether `bucket` holds less than its share of `limit`, counting it
    /// among the active if it is not yet.
    fn under_share(&self, bucket: usize, limit: u32) -> bool {
        let held = self.count(bucket);
        let active = self.active.load(Ordering::Relaxed) + u32::from(held == 0);
        held < limit.div_ceil(active.max(1))
    }

    fn enter(&self, bucket: usize) {
        if let Some(count) = self.counts.get(bucket)
            && count.fetch_add(1, Ordering::Relaxed) == 0
        {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn leave(&self, bucket: usize) {
        if let Some(count) = self.counts.get(bucket)
            && count.fetch_sub(1, Ordering::Relaxed) == 1
        {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Latency buckets of a window: four per doubling of microseconds, so a
/// bucket's value is known to within a fifth, from 1 µs to past a minute.
const LATENCY_BUCKETS: usize = 104;

/// The bucket of `us`.
fn latency_bucket(us: u64) -> usize {
    let us = us.max(1);
    let octave = us.ilog2();
    let quarter = if octave >= 2 {
        (us >> (octave - 2)) & 3
    } else {
        // Below 4 µs each value has a bucket of its own.
        us - (1 << octave)
    };
    usize::try_from(u64::from(octave) * 4 + quarter)
        .unwrap_or(usize::MAX)
        .min(LATENCY_BUCKETS - 1)
}

/// The middle of bucket `index`, in microseconds.
fn bucket_middle_us(index: usize) -> u64 {
    let (octave, quarter) = (index / 4, u64::try_from(index % 4).unwrap_or(0));
    if octave < 2 {
        (1 << octave) + quarter
    } else {
        let width = 1u64 << (octave - 2);
        (4 + quarter) * width + width / 2
    }
}

/// The answers of the window being measured.
struct Window {
    started_us: AtomicU64,
    answers: AtomicU64,
    /// Answers by [`latency_bucket`]: the window's median is its signal,
    /// which one stalled batch among a hundred does not move.
    latencies: [AtomicU32; LATENCY_BUCKETS],
    /// Card requests that found the limit reached.
    limited: AtomicU64,
    /// The window before was over the target.
    over: std::sync::atomic::AtomicBool,
    /// The limit refused a card request in this window or the last.
    refusing: std::sync::atomic::AtomicBool,
}

impl Window {
    fn new() -> Window {
        Window {
            started_us: AtomicU64::new(monotonic_us()),
            answers: AtomicU64::new(0),
            latencies: std::array::from_fn(|_| AtomicU32::new(0)),
            limited: AtomicU64::new(0),
            over: std::sync::atomic::AtomicBool::new(false),
            refusing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn record(&self, latency_us: u64) -> u64 {
        if let Some(bucket) = self.latencies.get(latency_bucket(latency_us)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.answers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The median of the window's answers, and empties it.
    fn take_median_us(&self) -> u64 {
        let counts: Vec<u32> = self
            .latencies
            .iter()
            .map(|bucket| bucket.swap(0, Ordering::Relaxed))
            .collect();
        self.answers.store(0, Ordering::Relaxed);
        let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
        let mut seen = 0;
        for (index, &n) in counts.iter().enumerate() {
            seen += u64::from(n);
            if seen * 2 >= total && total > 0 {
                return bucket_middle_us(index);
            }
        }
        0
    }
}

/// The switch's admission limit; one per process, shared by both
/// ingresses through the engine.
pub struct LoadLimit {
    settings: LoadSettings,
    limit: AtomicU32,
    in_flight: AtomicU32,
    merchants: Owners,
    acquirers: Owners,
    window: Window,
}

impl std::fmt::Debug for LoadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadLimit")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl LoadLimit {
    pub fn new(settings: LoadSettings) -> LoadLimit {
        let limit_min = settings.limit_min.max(1);
        let settings = LoadSettings {
            limit_min,
            limit_max: settings.limit_max.max(limit_min),
            ..settings
        };
        LoadLimit {
            limit: AtomicU32::new(
                settings
                    .limit_initial
                    .clamp(settings.limit_min, settings.limit_max),
            ),
            in_flight: AtomicU32::new(0),
            merchants: Owners::new(),
            acquirers: Owners::new(),
            window: Window::new(),
            settings,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Card requests and reversals admitted and not answered yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the limit binds: it is reached, or it refused card requests
    /// in this window or the last. In an overload the requests in flight
    /// hover just under the limit between refusals, so being at it is not
    /// enough to say.
    pub fn binds(&self) -> bool {
        self.in_flight() >= self.limit() || self.window.refusing.load(Ordering::Relaxed)
    }

    /// A permit for a request of `class` for `merchant` (its id's bytes)
    /// from `acquirer` (a mutual-TLS client's name; `None` on plain TCP and
    /// HTTP), or why not.
    pub fn admit(
        &self,
        class: Class,
        merchant: &[u8],
        acquirer: Option<&str>,
    ) -> Result<Permit<'_>, Refused> {
        let limit = self.limit();
        let total = self.in_flight();
        let merchant = self.merchants.bucket(merchant);
        // Plain TCP and HTTP name no acquirer: only merchants share there.
        let acquirer = acquirer.map(|name| self.acquirers.bucket(name.as_bytes()));
        let headroom = (limit / 4).max(8);
        match class {
            Class::Reversal => {
                if total >= limit.saturating_mul(2).saturating_add(headroom) {
                    return Err(Refused::Limit);
                }
            }
            Class::Card if total >= limit => {
                self.window.limited.fetch_add(1, Ordering::Relaxed);
                self.window.refusing.store(true, Ordering::Relaxed);
                if total >= limit.saturating_add(headroom) {
                    return Err(Refused::Limit);
                }
                if !(self.merchants.under_share(merchant, limit)
                    && acquirer.is_none_or(|bucket| self.acquirers.under_share(bucket, limit)))
                {
                    let shared = self.merchants.active.load(Ordering::Relaxed) > 1
                        || self.acquirers.active.load(Ordering::Relaxed) > 1;
                    return Err(if shared {
                        Refused::FairShare
                    } else {
                        Refused::Limit
                    });
                }
            }
            Class::Card => {}
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.merchants.enter(merchant);
        if let Some(bucket) = acquirer {
            self.acquirers.enter(bucket);
        }
        Ok(Permit {
            load: self,
            merchant,
            acquirer,
            admitted_us: monotonic_us(),
        })
    }

    fn release(&self, permit: &Permit<'_>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.merchants.leave(permit.merchant);
        if let Some(bucket) = permit.acquirer {
            self.acquirers.leave(bucket);
        }
        let now_us = monotonic_us();
        let window = &self.window;
        let answers = window.record(now_us.saturating_sub(permit.admitted_us));
        let started_us = window.started_us.load(Ordering::Relaxed);
        if answers >= WINDOW_ANSWERS_MIN
            && now_us.saturating_sub(started_us) >= WINDOW_US
            && window
                .started_us
                .compare_exchange(started_us, now_us, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.adjust();
        }
    }

    /// Moves the limit by the window just ended, and starts the next.
    fn adjust(&self) {
        let window = &self.window;
        let median_us = window.take_median_us().max(1);
        let limited = window.limited.swap(0, Ordering::Relaxed) > 0;
        window.refusing.store(limited, Ordering::Relaxed);
        let limit = u64::from(self.limit());
        let target = self.settings.latency_target_us.max(1);
        let over = median_us > target;
        let over_before = window.over.swap(over, Ordering::Relaxed);
        let initial = u64::from(self.settings.limit_initial);
        // Little's law: at the window's throughput, limit x target / median
        // would have answered in the target. Moved by at most a fifth down
        // and a quarter up per window.
        let toward = limit * target / median_us;
        let next = if over && over_before {
            toward.max(limit * 4 / 5)
        } else if median_us < target * 9 / 10 && (limited || limit < initial) {
            let grown = toward.clamp(limit + 1, limit + limit / 4 + 1);
            if limited { grown } else { grown.min(initial) }
        } else {
            limit
        };
        let next = u32::try_from(next)
            .unwrap_or(u32::MAX)
            .clamp(self.settings.limit_min, self.settings.limit_max);
        self.limit.store(next, Ordering::Relaxed);
    }
}

/// A request admitted: held until its answer is ready, then dropped, which
/// frees its place and times it for the limit.
pub struct Permit<'a> {
    load: &'a LoadLimit,
    merchant: usize,
    acquirer: Option<usize>,
    admitted_us: u64,
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.load.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(limit: u32) -> LoadLimit {
        LoadLimit::new(LoadSettings {
            latency_target_us: 20_000,
            limit_initial: limit,
            limit_min: 4,
            limit_max: 1000,
        })
    }

    #[test]
    fn card_requests_past_the_limit_are_refused_and_a_permit_given_back_makes_room() {
        let load = load(10);
        let permits: Vec<_> = (0..10)
            .map(|_| load.admit(Class::Card, b"M1", None).unwrap())
            .collect();
        assert_eq!(load.in_flight(), 10);
        assert!(load.binds());
        assert_eq!(
            load.admit(Class::Card, b"M1", None).err(),
            Some(Refused::Limit)
        );
        drop(permits);
        assert_eq!(load.in_flight(), 0);
        assert!(load.binds(), "it refused in this window");
        assert!(load.admit(Class::Card, b"M1", None).is_ok());
        window(&load, 960, false);
        assert!(!load.binds(), "a window without refusals");
    }

    #[test]
    fn a_merchant_holding_the_limit_does_not_shut_another_out() {
        let load = load(40);
        let flood: Vec<_> = (0..40)
            .map(|_| load.admit(Class::Card, b"FLOODER", None).unwrap())
            .collect();
        assert_eq!(
            load.admit(Class::Card, b"FLOODER", None).err(),
            Some(Refused::Limit),
            "alone, the flooder meets the limit itself"
        );
        // Another merchant is under its share: admitted past the limit.
        let other: Vec<_> = (0..5)
            .map(|_| load.admit(Class::Card, b"QUIET", None).unwrap())
            .collect();
        assert_eq!(
            load.admit(Class::Card, b"FLOODER", None).err(),
            Some(Refused::FairShare)
        );
        assert_eq!(load.in_flight(), 45);
        drop((flood, other));
    }

    #[test]
    fn reversals_are_admitted_past_the_limit_that_refuses_card_requests() {
        let load = load(10);
        let _cards: Vec<_> = (0..10)
            .map(|_| load.admit(Class::Card, b"M1", None).unwrap())
            .collect();
        assert!(load.admit(Class::Card, b"M1", None).is_err());
        let reversals: Vec<_> = (0..18)
            .map(|_| load.admit(Class::Reversal, b"M1", None))
            .collect();
        assert!(reversals.iter().all(Result::is_ok));
        assert_eq!(
            load.admit(Class::Reversal, b"M1", None).err(),
            Some(Refused::Limit),
            "twice the limit and the headroom at most"
        );
    }

    #[test]
    fn an_acquirer_is_held_to_its_share_like_a_merchant() {
        let load = load(20);
        let _flood: Vec<_> = (0..20)
            .map(|i| {
                load.admit(Class::Card, format!("M{i}").as_bytes(), Some("BIGBANK"))
                    .unwrap()
            })
            .collect();
        assert!(
            load.admit(Class::Card, b"NEWMERCHANT", Some("BIGBANK"))
                .is_err(),
            "a new merchant does not lift its acquirer's share"
        );
        assert!(
            load.admit(Class::Card, b"SMALLSHOP", Some("SMALLBANK"))
                .is_ok()
        );
    }

    /// A window of 16 answers of `latency_us`, the limit refusing someone
    /// in it or not, then the limit moved by it.
    fn window(load: &LoadLimit, latency_us: u64, limited: bool) -> u32 {
        for _ in 0..16 {
            load.window.record(latency_us);
        }
        load.window
            .limited
            .store(u64::from(limited), Ordering::Relaxed);
        load.adjust();
        load.limit()
    }

    #[test]
    fn a_latency_is_bucketed_to_within_a_fifth() {
        for us in (1..200_000).chain([1 << 20, 3_000_000, 60_000_000]) {
            let middle = bucket_middle_us(latency_bucket(us));
            assert!(
                middle.abs_diff(us) * 5 <= us.max(4),
                "{us} µs read as {middle}"
            );
        }
    }

    #[test]
    fn the_limit_falls_when_answers_take_longer_than_the_target_and_grows_when_it_binds() {
        let load = load(100);
        // 73 728 µs is a bucket's middle, the median exactly.
        assert_eq!(
            window(&load, 73_728, false),
            100,
            "one slow window is a stall, not a queue"
        );
        assert_eq!(window(&load, 73_728, false), 80, "by a fifth at most");
        assert_eq!(window(&load, 22_528, false), 71, "80 x 20 000 / 22 528");
        // Fast answers, nobody refused: back to the initial limit, by a
        // quarter at most per window, and no further.
        assert_eq!(window(&load, 960, false), 89);
        assert_eq!(window(&load, 960, false), 100);
        assert_eq!(window(&load, 960, false), 100);
        // Fast answers and the limit refusing some: past it.
        assert_eq!(window(&load, 960, true), 126);
        // A median under the target but near it: held where it is.
        assert_eq!(window(&load, 18_944, true), 126);
    }

    #[test]
    fn the_median_is_the_signal_and_a_few_stalled_answers_do_not_move_it() {
        let load = load(100);
        for _ in 0..2 {
            for _ in 0..10 {
                load.window.record(2_000_000);
            }
            assert_eq!(window(&load, 960, true), 126, "the median: 960 µs");
            load.limit.store(100, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let load = load(5);
        for _ in 0..20 {
            window(&load, 1_000_000, false);
        }
        assert_eq!(load.limit(), 4);
        for _ in 0..200 {
            window(&load, 1, true);
        }
        assert_eq!(load.limit(), 1000);
    }
}
