//! `switch serve`: wires the configuration, journal, vault, actors and both
//! listeners together, replays velocity, and shuts down cleanly on SIGTERM.
//!
//! Start-up, in the order [`run`] and `serve` take it:
//!
//! 1. read and check the configuration, and the files it names (the ISO
//!    dialect, certificates and keys): a bad one stops the switch before
//!    anything starts;
//! 2. open the audit log, then the journal;
//! 3. build the engine (vault, fleet, shards);
//! 4. bind the listeners and start HTTP, so a load balancer sees
//!    `/health/live` at once (card routes answer 503 until step 5 is done:
//!    the engine decides nothing before replay);
//! 5. replay the last 24 hours of approvals into the actors, page by page,
//!    which marks the engine ready (`/health/ready` turns 200, so a load
//!    balancer sends traffic only now), and start taking ISO traffic;
//! 6. wait for SIGTERM (caught from just before the "listening" log line)
//!    or Ctrl-C, then shut down: no new connections, the requests in flight
//!    finished, the journal and the audit log closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actors::{Clock, Shards, SystemClock};
use anyhow::Context;
use clap::Args;
use protocol::Spec;
use storage::{AnyStore, Journal, LogStore, PostgresStore, SqliteStore, StoreReader, Vault};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{AdmissionRates, LoadLimit};
use crate::config::{Config, Overrides, StorageSettings};
use crate::engine::{Engine, EngineParts, OsRandom};
use crate::fleet::{Fleet, FleetStore};
use crate::ingress::http::{self, HttpState};
use crate::ingress::iso;
use crate::ingress::tls;
use crate::ops::audit::{Audit, AuditEvent, events};
use crate::ops::metrics::Metrics;
use crate::ops::reload::{ConfigControl, ReloadBy};
use crate::ops::vault::VaultControl;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, env = "SWITCH_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Cards the vault remembers as already stored, so a returning card costs
/// no database read (8 bytes each).
const VAULT_SEALED_CACHE_SLOTS: usize = 1 << 20;
/// How long shutdown waits for the requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logs();
    let config = Config::load(&args.config, &args.overrides)?;
    let files = NamedFiles::read(&args.config, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
        .context("the runtime cannot start")?;
    runtime.block_on(serve(config, files, args))
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
}

/// What the configuration names by path, read before anything starts, so
/// a bad file is a one-line error naming the configuration key, not a
/// listener that fails its first handshake.
struct NamedFiles {
    iso: IsoFiles,
    http_tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The ISO 8583 dialect, and the mutual-TLS setup when `[iso.tls]` is set.
struct IsoFiles {
    spec: Spec,
    tls: Option<tls::IsoTls>,
}

impl NamedFiles {
    fn read(file: &Path, config: &Config) -> anyhow::Result<NamedFiles> {
        let mut spec = Spec::resolve(&config.iso.spec)
            .with_context(|| format!("{}: iso.spec", file.display()))?;
        if let Some(frame_length_max) = config.iso.frame_length_max {
            spec.set_frame_length_max(frame_length_max)
                .map_err(|problem| anyhow::anyhow!(problem))
                .with_context(|| format!("{}: iso.frame_length_max", file.display()))?;
        }
        Ok(NamedFiles {
            iso: IsoFiles {
                spec,
                tls: config
                    .iso
                    .tls
                    .as_ref()
                    .map(|tls| tls::iso_tls(file, tls, &config.acquirers))
                    .transpose()?,
            },
            http_tls: config
                .http
                .tls
                .as_ref()
                .map(|tls| tls::http_tls(file, tls))
                .transpose()?,
        })
    }
}

async fn serve(config: Config, files: NamedFiles, args: ServeArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let audit = open_audit_log(&config, &args.config, &clock)?;
    let (journal, store) = open_journal(&config).await?;
    let core = build_engine(&config, clock, &journal, store)?;
    let listeners = Listeners::bind(&config).await?;
    let tasks = Tasks {
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    start_http(
        &config,
        &core,
        listeners.http,
        files.http_tls,
        &audit,
        args,
        &tasks,
    );
    // Replay before taking ISO traffic, so no card starts with empty limits.
    let replayed = replay_then_ready(&core, &listeners.addresses, &tasks).await?;
    start_iso(&config, &core, listeners.iso, files.iso, &audit, &tasks);
    let sigterm = catch_sigterm();
    announce(&config, &listeners.addresses, replayed, &audit);

    wait_for_signal(sigterm).await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    shut_down(tasks, &core.engine, journal, core.store, audit).await;
    Ok(())
}

/// Opens the audit log, first: a switch that cannot record who did what
/// does not start.
fn open_audit_log(config: &Config, file: &Path, clock: &Arc<dyn Clock>) -> anyhow::Result<Audit> {
    let audit = Audit::open(
        &config.data_dir.join("audit.log"),
        config.audit.log,
        Arc::clone(clock),
    )?;
    audit.record_or_wait(AuditEvent::system(
        events::CONFIG_LOAD,
        "ok",
        file.display().to_string(),
    ));
    Ok(audit)
}

/// Opens the journal and the store that reads it back, on the configured
/// backend.
async fn open_journal(config: &Config) -> anyhow::Result<(Journal, AnyStore)> {
    match &config.storage {
        StorageSettings::Sqlite { journal } => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("data_dir {} cannot be created", config.data_dir.display())
            })?;
            let journal_path = config.data_dir.join("journal.sqlite");
            let (journal, store) = SqliteStore::open(&journal_path, *journal)
                .await
                .with_context(|| format!("journal {} cannot be opened", journal_path.display()))?;
            Ok((journal, AnyStore::new(store)))
        }
        StorageSettings::Log { log } => {
            // A data directory that holds a SQLite journal and no segment
            // is one written before the log was the default: starting an
            // empty log beside it would leave every record behind unseen.
            let sqlite = config.data_dir.join("journal.sqlite");
            let first_segment = config.data_dir.join("journal-00000001.seg");
            if sqlite.exists() && !first_segment.exists() {
                anyhow::bail!(
                    "data_dir {} holds a SQLite journal ({}) and no segment log: set \
                     [storage] backend = \"sqlite\" to go on with it (the segment log \
                     is the default now), or move it away to start an empty log",
                    config.data_dir.display(),
                    sqlite.display()
                );
            }
            // Start-up reads the latest snapshot and the segments after it,
            // and refuses to start on damage a crash cannot have made,
            // naming the file and offset.
            let (journal, store) =
                LogStore::open(&config.data_dir, *log)
                    .await
                    .with_context(|| {
                        format!(
                            "the journal log in {} cannot be opened",
                            config.data_dir.display()
                        )
                    })?;
            Ok((journal, AnyStore::new(store)))
        }
        StorageSettings::Postgres {
            database_url,
            postgres,
        } => {
            let (journal, store) = PostgresStore::open(database_url, *postgres)
                .await
                // The URL may hold a password: the error names the backend, not the URL.
                .context("the PostgreSQL journal cannot be opened")?;
            Ok((journal, AnyStore::new(store)))
        }
    }
}

/// The engine and what it shares with the listeners, replay and shutdown.
struct Core {
    clock: Arc<dyn Clock>,
    /// Reads the journal back: replay, lookups, vault rows.
    store: AnyStore,
    engine: Arc<Engine>,
    /// Shared with the vault admin routes, which rotate its keyring.
    vault: Arc<Vault>,
    metrics: Arc<Metrics>,
}

/// Builds the vault, the fleet store, the shards and the engine over them.
fn build_engine(
    config: &Config,
    clock: Arc<dyn Clock>,
    journal: &Journal,
    store: AnyStore,
) -> anyhow::Result<Core> {
    let vault =
        Arc::new(Vault::new(config.vault.clone(), VAULT_SEALED_CACHE_SLOTS).context("vault keys")?);
    let fleet = config
        .fleet
        .as_ref()
        .map(|settings| {
            Fleet::new(
                &settings.redis_url,
                config.shards.card_limits,
                settings.timeout_ms,
                settings.on_redis_down,
                config.duplicates.window_ms,
            )
            // The URL may hold a password: the error does not repeat it.
            .context("fleet.redis_url")
        })
        .transpose()?;
    config.shards.validate().context("shards")?;
    let shards = Shards::start(config.shards.clone(), Arc::clone(&clock));
    let metrics = Arc::new(Metrics::default());
    let engine = Arc::new(Engine::new(EngineParts {
        metrics: Arc::clone(&metrics),
        clock: Arc::clone(&clock),
        random: Arc::new(OsRandom),
        rules: config.rules.clone(),
        vault: Arc::clone(&vault),
        shards,
        journal: journal.clone(),
        store: store.clone(),
        duplicates: config.duplicates,
        fleet: fleet.map(|fleet| -> Arc<dyn FleetStore> { Arc::new(fleet) }),
        admission_rates: Arc::new(AdmissionRates::new(&config.merchants)),
        load_limit: LoadLimit::new(config.overload),
    }));
    Ok(Core {
        clock,
        store,
        engine,
        vault,
        metrics,
    })
}

/// The bound listeners, before any of them accepts.
struct Listeners {
    iso: IsoListeners,
    http: TcpListener,
    addresses: Addresses,
}

/// The plain and the mutual-TLS ISO 8583 listener, each when configured.
struct IsoListeners {
    plain: Option<TcpListener>,
    tls: Option<TcpListener>,
}

/// Where the listeners are bound (a configured port 0 is a real one here).
struct Addresses {
    iso: Option<std::net::SocketAddr>,
    iso_tls: Option<std::net::SocketAddr>,
    http: std::net::SocketAddr,
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let plain = match config.iso.listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("iso.listen {address} cannot be bound"))?,
            ),
            None => None,
        };
        let tls = match &config.iso.tls {
            Some(settings) => {
                Some(TcpListener::bind(settings.listen).await.with_context(|| {
                    format!("iso.tls.listen {} cannot be bound", settings.listen)
                })?)
            }
            None => None,
        };
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("http.listen {} cannot be bound", config.http.listen))?;
        let addresses = Addresses {
            iso: plain.as_ref().map(TcpListener::local_addr).transpose()?,
            iso_tls: tls.as_ref().map(TcpListener::local_addr).transpose()?,
            http: http.local_addr()?,
        };
        Ok(Listeners {
            iso: IsoListeners { plain, tls },
            http,
            addresses,
        })
    }
}

/// The shutdown signal and the tasks that finish before the switch stops.
struct Tasks {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Starts the JSON API and the ops routes, and configuration and vault
/// reloads on SIGHUP.
/// `/health/live` answers at once; `/health/ready` once replay is done.
fn start_http(
    config: &Config,
    core: &Core,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    audit: &Audit,
    args: ServeArgs,
    tasks: &Tasks,
) {
    // The file and overrides again, for reloads (SIGHUP, admin routes).
    let config_control = Arc::new(ConfigControl::new(
        Arc::clone(&core.engine),
        config.clone(),
        args.config.clone(),
        args.overrides.clone(),
        audit.clone(),
    ));
    let vault_control = Arc::new(VaultControl::new(
        Arc::clone(&core.vault),
        core.store.clone(),
        args.config,
        args.overrides,
        audit.clone(),
        tasks.shutdown.clone(),
        tasks.tracker.clone(),
    ));
    tasks.tracker.spawn(reload_on_sighup(
        Arc::clone(&config_control),
        Arc::clone(&vault_control),
        tasks.shutdown.clone(),
    ));
    let state = Arc::new(HttpState::new(
        Arc::clone(&core.engine),
        config,
        audit.clone(),
        Arc::clone(&core.clock),
        vault_control,
        Arc::clone(&config_control),
    ));
    // The door's keys follow each configuration applied. Weak: the state
    // holds the control, which must not keep the state alive in turn.
    let door = Arc::downgrade(&state);
    config_control.on_applied(move |config, policy| {
        if let Some(state) = door.upgrade() {
            state.reconfigure(config, policy);
        }
    });
    tasks.tracker.spawn(http::close_timeline_intervals(
        Arc::clone(&state),
        tasks.shutdown.clone(),
    ));
    tasks.tracker.spawn(http::serve(
        listener,
        http::router(state, &config.http),
        config.http.clone(),
        tls,
        Arc::clone(&core.metrics),
        audit.clone(),
        tasks.shutdown.clone(),
        tasks.tracker.clone(),
    ));
}

/// Replays the journal's approvals into the actors (the engine decides
/// nothing before: HTTP card routes answer 503 meanwhile), then starts
/// watching the database. Returns the approvals replayed.
async fn replay_then_ready(
    core: &Core,
    addresses: &Addresses,
    tasks: &Tasks,
) -> anyhow::Result<u64> {
    // Where HTTP already answers: health routes report not ready, card
    // routes 503 with Retry-After, until replay is done.
    tracing::info!(
        iso = %address_or_off(addresses.iso),
        iso_tls = %address_or_off(addresses.iso_tls),
        http = %addresses.http,
        "replaying velocity from the journal; card requests are answered 503 until it is done"
    );
    let replayed = core.engine.replay().await.context("velocity replay")?;
    let engine = Arc::clone(&core.engine);
    let shutdown = tasks.shutdown.clone();
    tasks
        .tracker
        .spawn(async move { engine.watch_database(shutdown).await });
    Ok(replayed)
}

/// Starts taking ISO 8583 traffic on the bound listeners, each with its own
/// connection limit.
fn start_iso(
    config: &Config,
    core: &Core,
    listeners: IsoListeners,
    files: IsoFiles,
    audit: &Audit,
    tasks: &Tasks,
) {
    let ingress = iso::IsoIngress {
        engine: Arc::clone(&core.engine),
        spec: Arc::new(files.spec),
        config: config.iso.clone(),
        connections: Arc::new(Semaphore::new(config.iso.connections_max)),
        audit: audit.clone(),
    };
    if let Some(listener) = listeners.plain {
        tasks.tracker.spawn(iso::serve(
            listener,
            ingress.clone(),
            None,
            tasks.shutdown.clone(),
            tasks.tracker.clone(),
        ));
    }
    if let (Some(listener), Some(iso_tls), Some(tls_config)) =
        (listeners.tls, files.tls, config.iso.tls.as_ref())
    {
        tasks.tracker.spawn(iso::serve(
            listener,
            iso::IsoIngress {
                connections: Arc::new(Semaphore::new(tls_config.connections_max)),
                ..ingress
            },
            Some(iso_tls),
            tasks.shutdown.clone(),
            tasks.tracker.clone(),
        ));
    }
}

/// Logs where the switch listens and records its start in the audit log.
fn announce(config: &Config, addresses: &Addresses, replayed: u64, audit: &Audit) {
    tracing::info!(
        iso = %address_or_off(addresses.iso),
        iso_tls = %address_or_off(addresses.iso_tls),
        acquirers = config.acquirers.len(),
        http = %addresses.http,
        https = config.http.tls.is_some(),
        backend = ?config.storage.backend(),
        fleet = ?config.fleet.as_ref().map(|f| f.on_redis_down),
        data_dir = %config.data_dir.display(),
        replayed,
        "listening"
    );
    audit.record_or_wait(AuditEvent::system(
        events::SWITCH_START,
        "ok",
        format!(
            "iso={},iso_tls={},http={}",
            address_or_off(addresses.iso),
            address_or_off(addresses.iso_tls),
            addresses.http,
        ),
    ));
}

/// A listener's address for the logs, or "off" when not configured.
fn address_or_off(address: Option<std::net::SocketAddr>) -> String {
    address.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

/// Stops accepting, lets the requests in flight finish (for at most
/// `SHUTDOWN_GRACE`) and a fleet node's answers reach Redis, then closes the
/// journal, the store and the audit log.
async fn shut_down(tasks: Tasks, engine: &Engine, journal: Journal, store: AnyStore, audit: Audit) {
    tasks.shutdown.cancel();
    tasks.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; stopping anyway");
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, engine.finish_fleet_answers())
        .await
        .is_err()
    {
        tracing::warn!("answers still being written to redis after 30 s; stopping anyway");
    }
    journal.close().await;
    store.close().await;
    audit.record_or_wait(AuditEvent::system(events::SWITCH_STOP, "ok", ""));
    // The chain's head, logged where the log is shipped: it anchors the end
    // of the audit log, which the chain alone cannot (a cut tail).
    match tokio::task::spawn_blocking(move || audit.close()).await {
        Ok(Some(head)) => tracing::info!(seq = head.seq, hash = %head.hash, "audit log closed"),
        _ => tracing::warn!("the audit log did not close cleanly"),
    }
    tracing::info!("stopped");
}

/// Reloads the configuration file on each SIGHUP until shutdown: the
/// business configuration (`ops/reload.rs`), then the vault keys. A refused
/// reload is logged and audited and changes nothing; one refused does not
/// stop the other.
async fn reload_on_sighup(
    config: Arc<ConfigControl>,
    vault: Arc<VaultControl>,
    shutdown: CancellationToken,
) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::warn!(%error, "SIGHUP cannot be caught; reload with POST /admin/reload and POST /admin/vault/reload");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                // The outcomes are logged by each `reload`.
                let _ = config.reload(&ReloadBy::sighup()).await;
                let _ = vault.reload("SIGHUP").await;
            }
        }
    }
}

/// SIGTERM, caught from now on. It is caught before the switch logs
/// "listening", so a SIGTERM sent as soon as that line appears still shuts
/// the switch down cleanly; `None` when it cannot be caught.
fn catch_sigterm() -> Option<Signal> {
    match signal(SignalKind::terminate()) {
        Ok(sigterm) => Some(sigterm),
        Err(error) => {
            tracing::warn!(%error, "SIGTERM cannot be caught; stop with Ctrl-C");
            None
        }
    }
}

/// Waits for SIGTERM (when caught) or Ctrl-C.
async fn wait_for_signal(sigterm: Option<Signal>) {
    let terminate = async {
        match sigterm {
            Some(mut sigterm) => {
                sigterm.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
