//! Card velocity shared by a fleet of switch nodes, in Redis.
//!
//! Each node's card actors still decide first (they are a cache, and they
//! alone hold merchant limits); an approval is then confirmed by one Lua
//! script that, atomically in Redis, sums the card's buckets inside each
//! window, declines (65 count, 61 amount) without counting anything if one
//! more approval would exceed a window, and otherwise counts it in the current
//! bucket of every window. The buckets are those of the actors
//! ([`actors::Window`]): minute 6 x 10 s, hour 12 x 5 min, day 12 x 2 h, so
//! a node and Redis agree on which approvals a window still holds.
//!
//! One card is one Redis hash, `v:{token}`, with two fields per bucket:
//! `<window>:<bucket>:c` (count) and `<window>:<bucket>:a` (amount, minor
//! units), window `m`, `h` or `d`. The script reads the whole hash once
//! (`HGETALL`) and walks its fields once, summing those each window still
//! holds (building the name of every bucket of every window instead, 30 a
//! call, cost Redis about 60% more time), counts the approval in the current
//! bucket of each window with one `HSET`, deletes the fields that have left
//! their window, and keeps the hash for the longest window plus
//! one bucket, so Redis forgets an idle card by itself. An earlier layout
//! (a hash per bucket, 30 keys a card) cost Redis 30 `HMGET`s and about
//! 70 us per approval and capped a fleet node at a fifth of a single node's
//! rate (docs/BENCHMARKS.md); one key also keeps a card on one Redis
//! Cluster slot without a hash tag trick.
//!
//! **Generations.** Redis may lose its keys (a flush, a failover to an
//! empty replica, an eviction). The card hashes therefore live under a
//! generation, `v:{token}:<generation>`, and `v:built` names the generation
//! that is whole. Each node checks `v:built` once a second (and before it
//! turns ready); while it is missing no node uses Redis velocity (a reserve
//! is refused as if Redis were away, so `on_redis_down` applies) and one
//! node, holding `v:rebuilding`, counts every approval of the last day from
//! the shared journal into a fresh generation, then sets `v:built`. A
//! rebuild that dies half way leaves a generation nobody reads, which
//! expires by itself; the next one starts afresh. The reserve script also
//! reads `v:built` itself and refuses a generation it no longer names, so a
//! node that has not yet looked since a loss does not count in the lost
//! generation either. (`v:built` is a second key of that script: on Redis
//! Cluster it would have to share the cards' slot; this deployment runs one
//! Redis with replicas.)
//!
//! **Duplicate claims.** A request's acquirer keys are claimed here too, so
//! one node decides it (`claims.rs`: a claim's states and keys; `since.rs`:
//! when a fresh claim may vouch that no node answered). The claim and the
//! check-and-count above are one script, run once per request after the
//! node's actors decided (`settle.rs`): an approval is counted only when
//! the claim is this node's, so a request another node holds leaves the
//! card's velocity in Redis untouched. The answer that other nodes read
//! from the claim is written after the reply.
//!
//! The engine reaches this state through [`FleetStore`], which [`Fleet`]
//! implements over Redis, so a test or a simulation can give it an
//! in-memory fleet instead.
//!
//! Calls from every shard and connection share one multiplexed connection
//! (`ConnectionManager`): concurrent scripts are written back to back
//! without waiting for each other's replies, which is the pipelining a
//! per-shard batch would give, with no added wait for a batch to fill.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actors::{CardLimits, Window};
use protocol::Amount;
use protocol::domain::Token;
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use storage::{AnyStore, ReplayPages, StorageError};

pub use claims::{Approval, Claim, Settled, Velocity, request_key};
use scripts::{GIVE_BACK_LUA, RELEASE_LUA, REVERSING_LUA, SETTLE_LUA, SINCE_LUA};

mod claims;
mod scripts;
mod settle;
mod since;

/// What the switch does when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisDown {
    /// Answer 91: no card can exceed a global limit (the default).
    Decline,
    /// Keep the node's own decision: each node enforces the limits alone, so
    /// the fleet may approve up to `nodes x limit` while Redis is away.
    Local,
}

/// A Redis call that failed or did not answer within the timeout.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("redis answered the velocity script with {0}")]
    UnexpectedReply(i64),
    #[error("the fleet's velocity in redis is being rebuilt from the journal")]
    NotBuilt,
    #[error("the journal could not be read to rebuild the fleet's velocity: {0}")]
    Journal(#[from] StorageError),
}

/// Names the generation of card hashes that is whole; see the module docs.
const BUILT_KEY: &str = "v:built";
/// Gives each rebuild a generation of its own.
const GENERATION_KEY: &str = "v:generation";
/// Held by the one node that rebuilds; it expires if that node dies.
const REBUILDING_KEY: &str = "v:rebuilding";
/// How long a rebuild may go without finishing a page before another node
/// may take over.
const REBUILD_LOCK_MS: u64 = 30_000;
/// Approvals read from the journal and written to Redis at a time.
const REBUILD_PAGE_ROWS: u32 = 2_000;
/// How long one page's pipeline may take: far more than a request's call.
const REBUILD_PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The fleet's shared card velocity.
pub struct Fleet {
    connection: ConnectionManager,
    settle: Script,
    reversing: Script,
    release: Script,
    since: Script,
    limits: CardLimits,
    timeout: Duration,
    timeout_ms: u64,
    pub on_redis_down: OnRedisDown,
    give_back: Script,
    /// The generation of card hashes in use; 0 while none is whole.
    generation: AtomicU64,
    /// How long a request's claim or answer is kept: the duplicate window.
    duplicate_window_ms: u64,
    /// Since when (ms, Redis's clock) Redis has held the fleet's claims, as
    /// last read (`since.rs`); 0 while unknown.
    claims_since_ms: AtomicU64,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not printed.
        f.debug_struct("Fleet")
            .field("on_redis_down", &self.on_redis_down)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

fn window_tag(window: Window) -> &'static str {
    match window {
        Window::Minute => "m",
        Window::Hour => "h",
        Window::Day => "d",
    }
}

/// The card's hash in `generation`.
fn card_key(token: &Token, generation: u64) -> String {
    format!("v:{{{token}}}:{generation}")
}

/// How long a card's hash lives: the longest window and one bucket more, so
/// every bucket a window still holds outlives it.
fn card_ttl_ms() -> u64 {
    Window::ALL
        .iter()
        .map(|window| u64::from(window.length_s() + window.bucket_s()) * 1000)
        .max()
        .unwrap_or(0)
}

/// The prefix of a bucket's two fields in the card's hash.
fn bucket_prefix(window: Window, bucket: u64) -> String {
    format!("{}:{bucket}:", window_tag(window))
}

fn bucket_of(window: Window, at_ms: u64) -> u64 {
    at_ms / 1000 / u64::from(window.bucket_s())
}

fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |value| i64::try_from(value).unwrap_or(i64::MAX))
}

impl Fleet {
    /// Builds the connection without connecting: a node starts even while
    /// Redis is away, and the connection manager reconnects by itself.
    /// `duplicate_window_ms`: how long Redis keeps a request's claim or
    /// answer (`duplicates.window_ms`).
    pub fn new(
        redis_url: &str,
        limits: CardLimits,
        timeout_ms: u64,
        on_redis_down: OnRedisDown,
        duplicate_window_ms: u64,
    ) -> Result<Fleet, FleetError> {
        let client = Client::open(redis_url)?;
        let timeout = Duration::from_millis(timeout_ms);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Fleet {
            connection,
            limits,
            timeout,
            timeout_ms,
            on_redis_down,
            settle: Script::new(SETTLE_LUA),
            reversing: Script::new(REVERSING_LUA),
            release: Script::new(RELEASE_LUA),
            since: Script::new(SINCE_LUA),
            give_back: Script::new(GIVE_BACK_LUA),
            generation: AtomicU64::new(0),
            duplicate_window_ms,
            claims_since_ms: AtomicU64::new(0),
        })
    }

    /// The generation of card hashes to use, or `NotBuilt` while Redis
    /// holds none that is whole.
    fn generation(&self) -> Result<u64, FleetError> {
        match self.generation.load(Ordering::Relaxed) {
            0 => Err(FleetError::NotBuilt),
            generation => Ok(generation),
        }
    }

    /// Checks that Redis holds a whole generation of card velocity and uses
    /// it; when Redis has lost it, rebuilds it from `store` (the shared
    /// journal) unless another node already is. Returns the generation in
    /// use, 0 while none is whole.
    pub async fn keep_built(&self, store: &AnyStore, now_ms: u64) -> Result<u64, FleetError> {
        if let Err(error) = self.keep_claims_since(store, now_ms).await {
            // Unknown: no claim vouches, each asks the journal.
            self.claims_since_ms.store(0, Ordering::Relaxed);
            tracing::warn!(%error, "fleet claims: since when redis holds them could not be read");
        }
        let mut connection = self.connection.clone();
        let built: Option<u64> = self
            .within_timeout(
                redis::cmd("GET")
                    .arg(BUILT_KEY)
                    .query_async(&mut connection),
            )
            .await?;
        if let Some(generation) = built {
            if self.generation.swap(generation, Ordering::Relaxed) != generation {
                tracing::info!(generation, "fleet velocity: using this generation");
            }
            return Ok(generation);
        }
        if self.generation.swap(0, Ordering::Relaxed) != 0 {
            tracing::warn!(
                "fleet velocity: redis lost it; not used until it is rebuilt from the journal"
            );
        }
        let locked: Option<String> = self
            .within_timeout(
                redis::cmd("SET")
                    .arg(REBUILDING_KEY)
                    .arg(std::process::id())
                    .arg("NX")
                    .arg("PX")
                    .arg(REBUILD_LOCK_MS)
                    .query_async(&mut connection),
            )
            .await?;
        if locked.is_none() {
            return Ok(0);
        }
        // The counter starts at the clock's milliseconds when Redis has lost
        // it too, so a generation is never used twice across losses.
        let (generation,): (u64,) = self
            .within_timeout(
                redis::pipe()
                    .cmd("SET")
                    .arg(GENERATION_KEY)
                    .arg(now_ms)
                    .arg("NX")
                    .ignore()
                    .cmd("INCR")
                    .arg(GENERATION_KEY)
                    .query_async(&mut connection),
            )
            .await?;
        let approvals = self.rebuild(store, generation, now_ms).await?;
        self.within_timeout(
            redis::pipe()
                .cmd("SET")
                .arg(BUILT_KEY)
                .arg(generation)
                .ignore()
                .cmd("DEL")
                .arg(REBUILDING_KEY)
                .ignore()
                .query_async::<()>(&mut connection),
        )
        .await?;
        self.generation.store(generation, Ordering::Relaxed);
        tracing::info!(
            generation,
            approvals,
            "fleet velocity rebuilt from the journal"
        );
        Ok(generation)
    }

    /// Counts every approval of the longest window from the journal into
    /// `generation`'s card hashes, a page at a time; returns how many.
    async fn rebuild(
        &self,
        store: &AnyStore,
        generation: u64,
        now_ms: u64,
    ) -> Result<u64, FleetError> {
        let ttl_ms = card_ttl_ms();
        let mut pages = ReplayPages::new(store, now_ms.saturating_sub(ttl_ms), REBUILD_PAGE_ROWS);
        let mut approvals = 0u64;
        let mut connection = self.connection.clone();
        while let Some(page) = pages.next_page().await? {
            let mut pipe = redis::pipe();
            for row in &page {
                let key = card_key(&row.token, generation);
                for window in Window::ALL {
                    let prefix = bucket_prefix(window, bucket_of(window, row.at_ms));
                    pipe.hincr(&key, format!("{prefix}c"), 1).ignore();
                    pipe.hincr(&key, format!("{prefix}a"), row.amount.minor())
                        .ignore();
                }
                pipe.pexpire(&key, limit_arg(Some(ttl_ms))).ignore();
            }
            // Still at work: the lock lasts another while.
            pipe.pexpire(REBUILDING_KEY, limit_arg(Some(REBUILD_LOCK_MS)))
                .ignore();
            match tokio::time::timeout(
                REBUILD_PAGE_TIMEOUT,
                pipe.query_async::<()>(&mut connection),
            )
            .await
            {
                Ok(result) => result?,
                Err(_) => {
                    return Err(FleetError::Timeout {
                        timeout_ms: u64::try_from(REBUILD_PAGE_TIMEOUT.as_millis())
                            .unwrap_or(u64::MAX),
                    });
                }
            }
            approvals = approvals.saturating_add(u64::try_from(page.len()).unwrap_or(u64::MAX));
        }
        Ok(approvals)
    }

    async fn within_timeout<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(FleetError::Timeout {
                timeout_ms: self.timeout_ms,
            }),
        }
    }

    /// Gives back `amount` of one approval counted at `original_at_ms`;
    /// `whole`: all of it, so it stops counting as a transaction, else a
    /// partial reversal that leaves it counted once.
    pub async fn give_back(
        &self,
        token: &Token,
        amount: Amount,
        whole: bool,
        original_at_ms: u64,
    ) -> Result<(), FleetError> {
        let generation = self.generation()?;
        let mut invocation = self.give_back.prepare_invoke();
        invocation
            .key(card_key(token, generation))
            .arg(amount.minor())
            .arg(u8::from(whole));
        for window in Window::ALL {
            invocation.arg(bucket_prefix(window, bucket_of(window, original_at_ms)));
        }
        let mut connection = self.connection.clone();
        let _: i64 = self
            .within_timeout(invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
    }

    /// PING, for `/health/ready`.
    pub async fn ping(&self) -> Result<(), FleetError> {
        let mut connection = self.connection.clone();
        let _: String = self
            .within_timeout(redis::cmd("PING").query_async(&mut connection))
            .await?;
        Ok(())
    }
}

/// What a [`FleetStore`] call returns: boxed, so the engine can hold any
/// store behind `dyn`. A Redis round trip costs far more than the box.
pub type FleetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FleetError>> + Send + 'a>>;

/// The state a fleet of nodes shares, as the engine uses it: duplicate
/// claims on a request's acquirer keys, and card velocity.
pub trait FleetStore: Send + Sync + 'static {
    /// What the node does while the store does not answer.
    fn on_redis_down(&self) -> OnRedisDown;

    /// The request's one call on its reply path, after the node's actors
    /// decided: claims `key` for this node (pending for at most
    /// `pending_ms`), or says who holds it ([`Claim::Mine`] only when the
    /// store can vouch that no node answered `key` within the duplicate
    /// window, else [`Claim::TakenOver`]); and when the claim is this node's
    /// (or there is no key), checks `approval` against the card's global
    /// limits and counts it if it fits. A claim that is another node's
    /// counts nothing ([`Velocity::NotAsked`]).
    fn settle<'a>(
        &'a self,
        key: Option<&'a str>,
        pending_ms: u64,
        approval: Option<Approval>,
    ) -> FleetFuture<'a, Settled>;

    /// [`FleetStore::settle`] of `key` alone: who holds it, claimed for this
    /// node if no other node does.
    fn claim<'a>(&'a self, key: &'a str, pending_ms: u64) -> FleetFuture<'a, Claim> {
        Box::pin(async move { Ok(self.settle(Some(key), pending_ms, None).await?.claim) })
    }

    /// Records this node's answer to the request it claimed, for `ttl_ms`.
    /// The engine calls it after the reply (it is not on the reply path): a
    /// node that dies first leaves its claim pending, to lapse.
    fn answer<'a>(&'a self, key: &'a str, answer: &'a str, ttl_ms: u64) -> FleetFuture<'a, ()>;

    /// Gives up a claim without an answer: the next claim of `key` is
    /// [`Claim::TakenOver`], so it is checked in the journal before it is
    /// decided.
    fn release<'a>(&'a self, key: &'a str) -> FleetFuture<'a, ()>;

    /// Before a reversal of the request `key` looks for it: whether a node
    /// holds `key`'s claim pending now (it is deciding that request), without
    /// claiming it. Keys no node holds are marked reversed for the duplicate
    /// window: the original, if it reaches a node only now, gets
    /// [`Claim::Reversed`] and is not decided after its reversal.
    fn reversing<'a>(&'a self, key: &'a str) -> FleetFuture<'a, bool>;

    /// Gives back `amount` of one approval counted at `original_at_ms`;
    /// `whole`: all of it, else a partial reversal that leaves it counted.
    fn give_back(
        &self,
        token: Token,
        amount: Amount,
        whole: bool,
        original_at_ms: u64,
    ) -> FleetFuture<'_, ()>;

    /// Whether the store answers, for `/health/ready`.
    fn ping(&self) -> FleetFuture<'_, ()>;

    /// Checks that the shared velocity is whole, rebuilding it from the
    /// journal (`store`) when the fleet store lost it, and reads since when
    /// the store has held the duplicate claims (`since.rs`); returns the
    /// generation in use, 0 while none is whole. Called once a second and
    /// before the node turns ready.
    fn keep_built<'a>(&'a self, store: &'a AnyStore, now_ms: u64) -> FleetFuture<'a, u64>;
}

impl FleetStore for Fleet {
    fn on_redis_down(&self) -> OnRedisDown {
        self.on_redis_down
    }

    fn settle<'a>(
        &'a self,
        key: Option<&'a str>,
        pending_ms: u64,
        approval: Option<Approval>,
    ) -> FleetFuture<'a, Settled> {
        Box::pin(Fleet::settle(self, key, pending_ms, approval))
    }

    fn answer<'a>(&'a self, key: &'a str, answer: &'a str, ttl_ms: u64) -> FleetFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let mut set = redis::cmd("SET");
            set.arg(key).arg(answer).arg("PX").arg(ttl_ms);
            self.within_timeout(set.query_async::<()>(&mut connection))
                .await
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> FleetFuture<'a, ()> {
        Box::pin(async move {
            let mut invocation = self.release.prepare_invoke();
            invocation.key(key);
            let mut connection = self.connection.clone();
            self.within_timeout(invocation.invoke_async::<()>(&mut connection))
                .await
        })
    }

    fn reversing<'a>(&'a self, key: &'a str) -> FleetFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.reversing.prepare_invoke();
            invocation.key(key).arg(self.duplicate_window_ms);
            let mut connection = self.connection.clone();
            let pending: i64 = self
                .within_timeout(invocation.invoke_async(&mut connection))
                .await?;
            Ok(pending == 1)
        })
    }

    fn give_back(
        &self,
        token: Token,
        amount: Amount,
        whole: bool,
        original_at_ms: u64,
    ) -> FleetFuture<'_, ()> {
        Box::pin(async move { Fleet::give_back(self, &token, amount, whole, original_at_ms).await })
    }

    fn ping(&self) -> FleetFuture<'_, ()> {
        Box::pin(Fleet::ping(self))
    }

    fn keep_built<'a>(&'a self, store: &'a AnyStore, now_ms: u64) -> FleetFuture<'a, u64> {
        Box::pin(Fleet::keep_built(self, store, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_is_one_hash_with_a_field_pair_per_bucket() {
        let token = Token::from_bytes([0xAB; 16]);
        assert_eq!(card_key(&token, 7), format!("v:{{{token}}}:7"));
        let prefix = bucket_prefix(Window::Minute, bucket_of(Window::Minute, 125_000));
        assert_eq!(prefix, "m:12:");
        assert_eq!(bucket_of(Window::Hour, 600_000), 2);
        assert_eq!(bucket_of(Window::Day, 7_199_999), 0);
    }
}
