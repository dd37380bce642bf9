//! `switch serve`: wires the configuration, journal, vault, actors and both
//! listeners together, replays velocity, and shuts down cleanly on SIGTERM.
//!
//! Start-up order matters: the listeners are bound first, so a load balancer
//! sees `/health/live` at once and `/health/ready` turn 200 only once the
//! journal is open and the last 24 hours of approvals are replayed into the
//! actors; requests that arrive before are decided on full state anyway,
//! because they wait for replay (the engine is built after it).

use std::sync::Arc;
use std::time::Duration;

use actors::{Clock, Restore, ShardConfig, Shards, SystemClock};
use anyhow::Context;
use protocol::Spec;
use storage::{
    AnyStore, JournalConfig, PostgresConfig, PostgresStore, SqliteStore, StoreReader, Vault,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::path::PathBuf;

use crate::admission::RateLimits;
use crate::config::{Backend, Config, Overrides};
use crate::engine::{DuplicateSettings, Engine, EngineParts, OsRandom};
use crate::fleet::{Fleet, FleetStore};
use crate::ingress::http::{self, HttpState};
use crate::ingress::iso;
use crate::ingress::tls;
use crate::ops::audit::{Audit, AuditEvent, AuditOptions, events};
use crate::ops::metrics::Metrics;
use crate::ops::vault::VaultControl;
use clap::Args;
use tokio::sync::Semaphore;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, env = "SWITCH_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Overrides `iso.listen`, for example 127.0.0.1:0 for any free port.
    #[arg(long, env = "SWITCH_ISO_LISTEN", value_name = "ADDR")]
    pub iso_listen: Option<String>,
    /// Overrides `http.listen`.
    #[arg(long, env = "SWITCH_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// Overrides `data_dir`: where the embedded journal and vault live.
    #[arg(long, env = "SWITCH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Overrides `storage.database_url` (backend "postgres").
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Overrides `fleet.redis_url`; used only when the configuration has a
    /// `[fleet]` section (shared card velocity in Redis).
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// The longest velocity window; replay covers it.
const REPLAY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Rows read per replay query, so 24 hours of approvals never load at once.
const REPLAY_PAGE_ROWS: u32 = 10_000;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logs();
    let overrides = Overrides {
        iso_listen: args.iso_listen,
        http_listen: args.http_listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        redis_url: args.redis_url,
    };
    let config = Config::load(&args.config, &overrides)?;
    let spec = Spec::resolve(&config.iso.spec)
        .with_context(|| format!("{}: iso.spec", args.config.display()))?;
    // Certificates and keys are read before anything starts, so a bad file
    // is a one-line error naming the configuration key, not a listener
    // that fails its first handshake.
    let tls = Tls {
        iso: config
            .iso
            .tls
            .as_ref()
            .map(|tls| tls::iso_tls(&args.config, tls, &config.acquirers))
            .transpose()?,
        http: config
            .http
            .tls
            .as_ref()
            .map(|tls| tls::http_tls(&args.config, tls))
            .transpose()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("the runtime cannot start")?;
    // The file and overrides again, for vault reloads (SIGHUP, admin route).
    let reload_from = (args.config, overrides);
    runtime.block_on(serve(config, spec, tls, reload_from))
}

/// The TLS configurations built from the files the configuration names.
struct Tls {
    iso: Option<tls::IsoTls>,
    http: Option<tokio_rustls::TlsAcceptor>,
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

async fn serve(
    config: Config,
    spec: Spec,
    tls: Tls,
    (config_file, overrides): (PathBuf, Overrides),
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The audit log opens first: a switch that cannot record who did what
    // does not start.
    let audit = Audit::open(
        &config.data_dir.join("audit.log"),
        AuditOptions {
            queue_capacity: config.audit.queue_capacity,
            batch_entries_max: config.audit.batch_entries_max,
        },
        Arc::clone(&clock),
    )?;
    audit.record_or_wait(AuditEvent::system(
        events::CONFIG_LOAD,
        "ok",
        config_file.display().to_string(),
    ));
    let journal_config = JournalConfig {
        queue_capacity: config.journal.queue_capacity,
        batch_rows_max: config.journal.batch_rows_max,
        ..JournalConfig::default()
    };
    let (journal, store) = match config.storage.backend {
        Backend::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("data_dir {} cannot be created", config.data_dir.display())
            })?;
            let journal_path = config.data_dir.join("journal.sqlite");
            let (journal, store) = SqliteStore::open(&journal_path, journal_config)
                .await
                .with_context(|| format!("journal {} cannot be opened", journal_path.display()))?;
            (journal, AnyStore::new(store))
        }
        Backend::Postgres => {
            let url = config.storage.database_url.clone().unwrap_or_default();
            let (journal, store) = PostgresStore::open(
                &url,
                PostgresConfig {
                    journal: journal_config,
                    writer_connections: config.storage.writer_connections,
                    read_connections: config.storage.read_connections,
                    connect_timeout_ms: config.storage.connect_timeout_ms,
                    statement_timeout_ms: config.storage.statement_timeout_ms,
                },
            )
            .await
            // The URL may hold a password: the error names the backend, not the URL.
            .context("the PostgreSQL journal cannot be opened")?;
            (journal, AnyStore::new(store))
        }
    };
    let vault = Arc::new(Vault::new(config.vault.vault_keys(), 1 << 20).context("vault keys")?);

    let card_limits = actors::CardLimits {
        per_minute: window(config.card_limits[0]),
        per_hour: window(config.card_limits[1]),
        per_day: window(config.card_limits[2]),
    };
    let fleet = match &config.fleet {
        None => None,
        Some(settings) => Some(
            Fleet::new(
                &settings.redis_url,
                card_limits,
                settings.timeout_ms,
                settings.on_redis_down,
            )
            // The URL may hold a password: the error does not repeat it.
            .context("fleet.redis_url")?,
        ),
    };
    let shard_config = ShardConfig {
        shard_count: config.shard_count,
        mailbox_capacity: config.mailbox_capacity,
        card_limits,
        merchants: config
            .merchants
            .iter()
            .map(|m| {
                (
                    m.id,
                    actors::MerchantLimits {
                        amount_max_per_transaction: m.amount_max_per_transaction,
                        daily_volume_max: m.daily_volume_max,
                        allowed_mccs: m.allowed_mccs.clone(),
                        tps_max: m.tps_max,
                    },
                )
            })
            .collect(),
    };
    shard_config.validate().context("shards")?;
    let shards = Shards::start(shard_config, Arc::clone(&clock));
    let rules = actors::RuleConfig {
        amount_max: config.amount_max,
        blocked_bins: config
            .blocked_bins
            .iter()
            .filter_map(|range| actors::BinRange::new(&range.from, &range.to))
            .collect(),
    };

    let metrics = Arc::new(Metrics::default());
    let engine = Arc::new(Engine::new(EngineParts {
        metrics: Arc::clone(&metrics),
        clock: Arc::clone(&clock),
        random: Arc::new(OsRandom),
        rules,
        vault: Arc::clone(&vault),
        shards: shards.clone(),
        journal: journal.clone(),
        store: store.clone(),
        duplicates: DuplicateSettings {
            window_ms: config.duplicate_window_ms,
            entries_max: config.duplicate_entries_max,
        },
        fleet: fleet.map(|fleet| -> Arc<dyn FleetStore> { Arc::new(fleet) }),
        limits: Arc::new(RateLimits::new(&config.merchants)),
    }));

    let iso_listener = match config.iso.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("iso.listen {address} cannot be bound"))?,
        ),
        None => None,
    };
    let iso_tls_listener = match (&config.iso.tls, tls.iso) {
        (Some(settings), Some(iso_tls)) => Some((
            TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("iso.tls.listen {} cannot be bound", settings.listen))?,
            iso_tls,
        )),
        _ => None,
    };
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen {} cannot be bound", config.http.listen))?;
    let iso_address = iso_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let iso_tls_address = iso_tls_listener
        .as_ref()
        .map(|(listener, _)| listener.local_addr())
        .transpose()?;
    let http_address = http_listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let vault_control = Arc::new(VaultControl::new(
        vault,
        store.clone(),
        config_file,
        overrides,
        audit.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(reload_vault_on_sighup(
        Arc::clone(&vault_control),
        shutdown.clone(),
    ));
    let http_state = Arc::new(HttpState::new(
        Arc::clone(&engine),
        &config,
        audit.clone(),
        Arc::clone(&clock),
        vault_control,
    ));
    tracker.spawn(http::serve(
        http_listener,
        http::router(http_state, &config.http),
        config.http.clone(),
        tls.http,
        Arc::clone(&metrics),
        audit.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));

    // Replay before taking ISO traffic, so no card starts with empty limits.
    let since_ms = clock.now_ms().saturating_sub(REPLAY_WINDOW_MS);
    let mut restores = Vec::new();
    let replayed = storage::replay_approved(&store, since_ms, REPLAY_PAGE_ROWS, |row| {
        restores.push(Restore {
            token: row.token,
            merchant_id: row.merchant_id,
            amount: row.amount,
            at_ms: row.at_ms,
        });
    })
    .await
    .context("velocity replay")?;
    for restore in restores {
        shards.restore(restore).await;
    }
    engine
        .check_journal_for_duplicates_after_restart()
        .await
        .context("duplicate window after restart")?;
    engine.set_ready();
    {
        let engine = Arc::clone(&engine);
        let shutdown = shutdown.clone();
        tracker.spawn(async move { engine.watch_database(shutdown).await });
    }
    // One connection limit for both ISO listeners.
    let ingress = iso::IsoIngress {
        engine: Arc::clone(&engine),
        spec: Arc::new(spec),
        config: config.iso.clone(),
        connections: Arc::new(Semaphore::new(config.iso.connections_max)),
        audit: audit.clone(),
    };
    if let Some(listener) = iso_listener {
        tracker.spawn(iso::serve(
            listener,
            ingress.clone(),
            None,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    if let Some((listener, iso_tls)) = iso_tls_listener {
        tracker.spawn(iso::serve(
            listener,
            ingress,
            Some(iso_tls),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    let off = || "off".to_owned();
    tracing::info!(
        iso = %iso_address.map_or_else(off, |a| a.to_string()),
        iso_tls = %iso_tls_address.map_or_else(off, |a| a.to_string()),
        acquirers = config.acquirers.len(),
        http = %http_address,
        https = config.http.tls.is_some(),
        backend = ?config.storage.backend,
        fleet = ?config.fleet.as_ref().map(|f| f.on_redis_down),
        data_dir = %config.data_dir.display(),
        replayed,
        "listening"
    );
    audit.record_or_wait(AuditEvent::system(
        events::SWITCH_START,
        "ok",
        format!(
            "iso={},iso_tls={},http={http_address}",
            iso_address.map_or_else(off, |a| a.to_string()),
            iso_tls_address.map_or_else(off, |a| a.to_string()),
        ),
    ));

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(30), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; stopping anyway");
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
    Ok(())
}

fn window(limit: crate::config::WindowLimit) -> actors::WindowLimit {
    actors::WindowLimit {
        count_max: limit.count_max,
        amount_max: limit.amount_max,
    }
}

/// Reloads the vault keys from the configuration file on each SIGHUP until
/// shutdown. A refused reload is logged and changes nothing.
async fn reload_vault_on_sighup(control: Arc<VaultControl>, shutdown: CancellationToken) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::warn!(%error, "SIGHUP cannot be caught; reload the vault with POST /admin/vault/reload");
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
                // The outcome is logged by `reload`.
                let _ = control.reload("SIGHUP").await;
            }
        }
    }
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "SIGTERM cannot be caught; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
