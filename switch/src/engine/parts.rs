//! What an engine is made of ([`EngineParts`] -> [`Engine`]), what it lends
//! the ingresses and ops routes, and whether it is ready for traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actors::{Clock, RuleConfig, Shards};
use arc_swap::ArcSwap;
use storage::{AnyStore, Journal, StoreReader, Vault};

use crate::admission::{AdmissionRates, LoadLimit};
use crate::config::DuplicateSettings;
use crate::engine::duplicates::Duplicates;
use crate::engine::idempotency::KeysInFlight;
use crate::engine::ids::Random;
use crate::engine::policy::Policy;
use crate::engine::world::World;
use crate::fleet::{FleetStore, OnRedisDown};
use crate::ops::metrics::Metrics;

/// What an engine is built from.
pub struct EngineParts {
    pub metrics: Arc<Metrics>,
    /// Wall time, for what is journaled and for velocity windows.
    pub clock: Arc<dyn Clock>,
    /// Transaction ids and auth codes: [`OsRandom`](crate::engine::OsRandom)
    /// in production.
    pub random: Arc<dyn Random>,
    /// The rules at start; with the shards' limits and `admission_rates`,
    /// the engine's first [`Policy`].
    pub rules: RuleConfig,
    /// Shared with the vault admin routes, which rotate its keyring.
    pub vault: Arc<Vault>,
    pub shards: Shards,
    pub journal: Journal,
    pub store: AnyStore,
    pub duplicates: DuplicateSettings,
    /// Shared duplicate claims and card velocity ([`Fleet`](crate::fleet::Fleet)
    /// over Redis); `None` on a single node.
    pub fleet: Option<Arc<dyn FleetStore>>,
    /// Per-merchant admission rates, checked by both ingresses.
    pub admission_rates: Arc<AdmissionRates>,
    /// How much is worked on at once (`[overload]`).
    pub load_limit: LoadLimit,
}

impl std::fmt::Debug for EngineParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineParts").finish_non_exhaustive()
    }
}

/// The shared path of both ingresses.
pub struct Engine {
    pub(crate) world: World,
    /// The business configuration requests are decided by; a reload swaps
    /// it whole (see `policy.rs`).
    policy: ArcSwap<Policy>,
    pub(crate) duplicates: Duplicates,
    /// Idempotency keys being decided on this node.
    pub(crate) keys_in_flight: KeysInFlight,
    load_limit: LoadLimit,
    /// Set once velocity is replayed; nothing is decided before.
    ready: AtomicBool,
    database_answers: AtomicBool,
    redis_answers: AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(parts: EngineParts) -> Engine {
        let EngineParts {
            metrics,
            clock,
            random,
            rules,
            vault,
            shards,
            journal,
            store,
            duplicates,
            fleet,
            admission_rates,
            load_limit,
        } = parts;
        let policy = Policy {
            generation: 1,
            rules,
            limits: shards.limits_at_start(),
            admission_rates,
        };
        Engine {
            policy: ArcSwap::from_pointee(policy),
            world: World {
                metrics,
                clock,
                random,
                vault,
                shards,
                journal,
                store,
                fleet,
            },
            duplicates: Duplicates::new(duplicates),
            keys_in_flight: KeysInFlight::default(),
            load_limit,
            ready: AtomicBool::new(false),
            database_answers: AtomicBool::new(true),
            redis_answers: AtomicBool::new(true),
        }
    }

    /// The business configuration now: an ingress takes it once per
    /// request, checks the merchant's admission rate with it and hands it
    /// on in [`Received::policy`](crate::engine::Received::policy), so the
    /// request is decided under the same one.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Swaps in a reloaded configuration: requests that took the old one
    /// finish under it, every later one is decided by `policy`. The
    /// counters in the shards and the admission buckets are untouched.
    pub fn replace_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// The admission limit both ingresses take a permit from for each
    /// card request and reversal, before handing it over.
    pub fn load_limit(&self) -> &LoadLimit {
        &self.load_limit
    }

    pub fn metrics(&self) -> &Metrics {
        &self.world.metrics
    }

    pub fn shards(&self) -> &Shards {
        &self.world.shards
    }

    pub fn store(&self) -> &AnyStore {
        &self.world.store
    }

    pub fn journal(&self) -> &Journal {
        &self.world.journal
    }

    /// The vault: the HTTP ingress digests idempotency keys and requests
    /// with it.
    pub fn vault(&self) -> &Vault {
        &self.world.vault
    }

    /// Ready once the journal is open and velocity is replayed, and for as
    /// long as the journal's writer is taking records and the database
    /// answers (see [`Engine::watch_database`]).
    ///
    /// In a fleet that declines while Redis is away, Redis must answer too;
    /// a fleet that falls back to local limits can still decide without it.
    pub fn is_ready(&self) -> bool {
        let redis_needed = self
            .world
            .fleet
            .as_ref()
            .is_some_and(|fleet| fleet.on_redis_down() == OnRedisDown::Decline);
        self.replayed()
            && self.world.journal.is_running()
            && self.database_answers.load(Ordering::Relaxed)
            && (!redis_needed || self.redis_answers.load(Ordering::Relaxed))
    }

    /// Asks the database once a second whether it answers, for
    /// `/health/ready`: a PostgreSQL that went away keeps the writers alive
    /// (their batches fail with 96), so the writer's state alone would not
    /// tell. Ends when `shutdown` fires.
    pub async fn watch_database(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let answers = self.world.store.check().await.is_ok();
            if answers != self.database_answers.swap(answers, Ordering::Relaxed) {
                if answers {
                    tracing::info!("the database answers again");
                } else {
                    tracing::warn!("the database does not answer; not ready");
                }
            }
            self.keep_fleet_built().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    /// In a fleet: whether the fleet store answers and holds the shared
    /// velocity whole, rebuilding it from the journal if it was lost (see
    /// `fleet/mod.rs`). Until then the node is not ready. Called once a second
    /// by [`Engine::watch_database`], and once before the node turns ready.
    pub async fn keep_fleet_built(&self) {
        let Some(fleet) = &self.world.fleet else {
            return;
        };
        let generation = match fleet.ping().await {
            Ok(()) => match fleet
                .keep_built(&self.world.store, self.world.clock.now_ms())
                .await
            {
                Ok(generation) => generation,
                Err(error) => {
                    tracing::warn!(%error, "fleet velocity could not be checked or rebuilt");
                    0
                }
            },
            Err(_) => 0,
        };
        self.world
            .metrics
            .fleet_generation
            .store(generation, Ordering::Relaxed);
        let usable = generation != 0;
        if usable != self.redis_answers.swap(usable, Ordering::Relaxed) {
            if usable {
                tracing::info!("redis answers again with the fleet's velocity");
            } else {
                tracing::warn!("redis does not answer, or is rebuilding the fleet's velocity");
            }
        }
    }

    /// At shutdown, once no request is in flight: waits for the answers
    /// a fleet node writes to Redis after its replies, so another node
    /// answers a retransmission from there, not after a lapse.
    pub async fn finish_fleet_answers(&self) {
        self.duplicates.finish_fleet_answers().await;
    }

    /// Marks velocity as replayed: card requests and reversals are decided
    /// from now on. [`Engine::replay`] calls it once it has restored the
    /// journal; only an engine with nothing to replay (a test's, over a
    /// journal it knows is empty or does not need) calls it directly.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether velocity is replayed, so requests may be decided.
    pub(crate) fn replayed(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// At start: if the journal holds requests answered within the duplicate
    /// window before now, their retransmissions must be found in the journal
    /// until the window has passed, since the in-memory index starts empty.
    pub async fn check_journal_for_duplicates_after_restart(
        &self,
    ) -> Result<(), storage::StorageError> {
        self.duplicates
            .check_journal_after_restart(&self.world)
            .await
    }
}
