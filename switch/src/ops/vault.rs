//! Vault key rotation while the switch serves: reloading the keyring from
//! the configuration file (SIGHUP or `POST /admin/vault/reload`), the
//! background job that re-encrypts old rows under the active key, and the
//! check that opens every row.
//!
//! The admin routes that drive this are in `ingress/http/vault.rs`; who may
//! call them is decided in `ingress::http::ROUTES` (admin only), where the
//! calling admin is audited. A reload (accepted or refused, with its source
//! and the key ids after) and a rewrap's start and finish are audited here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use storage::{AnyStore, KeyringChange, Vault, VaultMaintenance};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Overrides};
use crate::ops::audit::{Audit, AuditEvent, events};

/// Rows per rewrap batch when the request does not say.
pub const REWRAP_BATCH_ROWS_DEFAULT: u32 = 500;
/// Pause between rewrap batches when the request does not say: the journal
/// gets the database back between two batches.
pub const REWRAP_PAUSE_MS_DEFAULT: u64 = 20;
/// The longest pause a request may ask for.
pub const REWRAP_PAUSE_MS_MAX: u64 = 60_000;
/// Tries of one batch before the job fails. A batch contends with the
/// journal's writer for the database's write lock; on SQLite a writer that
/// commits back to back can hold it past the busy timeout (seen in the
/// rotation-under-load test), so a failed batch waits and tries again.
pub const REWRAP_TRIES_MAX: u32 = 6;

/// Walks over the vault before the job gives up on rows that keep arriving
/// under an old key (seals in flight during the reload).
const REWRAP_PASSES_MAX: u32 = 3;

/// Why a reload was refused. The running keyring is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Keys(#[from] storage::StorageError),
    #[error("the vault rows per key cannot be counted: {0}")]
    Count(storage::StorageError),
}

/// The state of the rewrap job, as `GET /admin/vault` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewrapProgress {
    /// `idle` (never started), `running`, `done`, `failed` or `stopped`.
    pub state: &'static str,
    pub batch_rows: u32,
    pub pause_ms: u64,
    pub batches: u64,
    pub moved: u64,
    pub skipped: u64,
    /// Batches that failed and were tried again (a busy database, a lost
    /// connection); the job fails only after [`REWRAP_TRIES_MAX`] in a row.
    pub retries: u64,
    pub passes: u32,
    /// Rows still under another key than the active one at the end of the
    /// last walk.
    pub remaining: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub error: Option<String>,
}

/// What the vault routes and SIGHUP share.
pub struct VaultControl {
    vault: Arc<Vault>,
    store: AnyStore,
    config_file: PathBuf,
    overrides: Overrides,
    /// One reload at a time, so two cannot interleave count and swap.
    reloading: tokio::sync::Mutex<()>,
    job: Mutex<RewrapProgress>,
    audit: Audit,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for VaultControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultControl")
            .field("vault", &self.vault)
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl VaultControl {
    /// Opens every vault row with the keyring, counting rows per key id
    /// that open and that fail.
    pub async fn verify(&self) -> Result<storage::VerifyReport, storage::StorageError> {
        storage::verify_all(&self.store, &self.vault, REWRAP_BATCH_ROWS_DEFAULT).await
    }

    pub fn new(
        vault: Arc<Vault>,
        store: AnyStore,
        config_file: PathBuf,
        overrides: Overrides,
        audit: Audit,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> VaultControl {
        VaultControl {
            vault,
            store,
            config_file,
            overrides,
            reloading: tokio::sync::Mutex::new(()),
            job: Mutex::new(RewrapProgress {
                state: "idle",
                ..RewrapProgress::default()
            }),
            audit,
            shutdown,
            tracker,
        }
    }

    /// Re-reads the configuration file and swaps in its vault keys, if the
    /// vault accepts them (see [`Vault::rotate`]). `source` says who asked,
    /// for the log. Never panics; a refused reload changes nothing.
    pub async fn reload(&self, source: &'static str) -> Result<KeyringChange, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let outcome = async {
            let secrets = Config::load_vault(&self.config_file, &self.overrides)?;
            // Counting rows per key scans the vault, so it is done only when
            // the reload removes a key: adding a key or changing the active
            // one costs no database work.
            let removes_a_key = self
                .vault
                .keyring()
                .key_ids
                .iter()
                .any(|id| !secrets.encryption_keys.iter().any(|(kept, _)| kept == id));
            let in_use: Vec<u32> = if removes_a_key {
                self.store
                    .vault_rows_per_key()
                    .await
                    .map_err(ReloadError::Count)?
                    .into_iter()
                    .filter(|(_, rows)| *rows > 0)
                    .map(|(key_id, _)| key_id)
                    .collect()
            } else {
                Vec::new()
            };
            Ok(self.vault.rotate(&secrets, &in_use)?)
        }
        .await;
        let audit = |outcome: &str, resource: String| {
            self.audit.record_or_wait(AuditEvent {
                actor: if source == "SIGHUP" {
                    "switch"
                } else {
                    "admin"
                }
                .to_owned(),
                event: events::VAULT_RELOAD.to_owned(),
                outcome: outcome.to_owned(),
                origin: source.to_owned(),
                resource,
            });
        };
        match &outcome {
            Ok(change) => {
                audit(
                    "ok",
                    format!(
                        "vault keys {:?}, active {} (was {:?}, active {})",
                        change.after.key_ids,
                        change.after.active_key_id,
                        change.before.key_ids,
                        change.before.active_key_id
                    ),
                );
                tracing::info!(
                source,
                key_ids_before = ?change.before.key_ids,
                active_key_id_before = change.before.active_key_id,
                key_ids = ?change.after.key_ids,
                active_key_id = change.after.active_key_id,
                "vault keyring reloaded"
                );
            }
            Err(error) => {
                // The reason stays in the log: a configuration error may
                // quote a line of the file.
                audit("refused", "vault keys".to_owned());
                tracing::warn!(
                    source,
                    %error,
                    "vault reload refused; the running keyring is unchanged"
                );
            }
        }
        outcome
    }

    /// Starts the rewrap job; `false` if one is running already.
    pub fn start_rewrap(self: &Arc<Self>, batch_rows: u32, pause_ms: u64) -> bool {
        {
            let Ok(mut job) = self.job.lock() else {
                return false;
            };
            if job.state == "running" {
                return false;
            }
            *job = RewrapProgress {
                state: "running",
                batch_rows,
                pause_ms,
                started_at_ms: Some(now_ms()),
                ..RewrapProgress::default()
            };
        }
        self.audit.record_or_wait(AuditEvent {
            actor: "admin".to_owned(),
            event: events::VAULT_REWRAP_START.to_owned(),
            outcome: "ok".to_owned(),
            origin: "admin route".to_owned(),
            resource: format!(
                "vault rows to key {}, {batch_rows} a batch, {pause_ms} ms apart",
                self.vault.active_key_id()
            ),
        });
        tracing::info!(
            batch_rows,
            pause_ms,
            active_key_id = self.vault.active_key_id(),
            "vault rewrap started"
        );
        let control = Arc::clone(self);
        self.tracker
            .spawn(async move { control.run_rewrap(batch_rows, pause_ms).await });
        true
    }

    fn update(&self, change: impl FnOnce(&mut RewrapProgress)) {
        match self.job.lock() {
            Ok(mut job) => change(&mut job),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    async fn run_rewrap(&self, batch_rows: u32, pause_ms: u64) {
        let mut after = None;
        let mut passes = 0u32;
        let mut tries = 0u32;
        let outcome: Result<&'static str, String> = loop {
            let batch = tokio::select! {
                () = self.shutdown.cancelled() => break Ok("stopped"),
                batch = storage::rewrap_batch(&self.store, &self.vault, after, batch_rows) => batch,
            };
            let batch = match batch {
                Ok(batch) => {
                    tries = 0;
                    batch
                }
                // StorageError never carries card data.
                Err(error) => {
                    tries += 1;
                    if tries >= REWRAP_TRIES_MAX {
                        break Err(error.to_string());
                    }
                    tracing::warn!(%error, tries, "vault rewrap batch failed; trying it again");
                    self.update(|job| job.retries += 1);
                    // 100 ms, 200 ms, ... 1.6 s: the same rows again.
                    let wait = Duration::from_millis(100 << (tries - 1).min(4));
                    tokio::select! {
                        () = self.shutdown.cancelled() => break Ok("stopped"),
                        () = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            self.update(|job| {
                job.batches += 1;
                job.moved += batch.moved;
                job.skipped += batch.skipped;
            });
            after = batch.next;
            if after.is_none() {
                passes += 1;
                let remaining = match self.store.vault_rows_per_key().await {
                    Ok(rows) => rows
                        .iter()
                        .filter(|(key_id, _)| *key_id != self.vault.active_key_id())
                        .map(|(_, rows)| rows)
                        .sum::<u64>(),
                    Err(error) => break Err(error.to_string()),
                };
                self.update(|job| {
                    job.passes = passes;
                    job.remaining = Some(remaining);
                });
                if remaining == 0 {
                    break Ok("done");
                }
                if passes >= REWRAP_PASSES_MAX {
                    break Err(format!(
                        "{remaining} rows still under an old key after {passes} passes; start the rewrap again"
                    ));
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break Ok("stopped"),
                () = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            }
        };
        let mut finished = RewrapProgress::default();
        self.update(|job| {
            job.finished_at_ms = Some(now_ms());
            match &outcome {
                Ok(state) => job.state = state,
                Err(error) => {
                    job.state = "failed";
                    job.error = Some(error.clone());
                }
            }
            finished = job.clone();
        });
        self.audit.record_or_wait(AuditEvent {
            actor: "switch".to_owned(),
            event: events::VAULT_REWRAP_FINISH.to_owned(),
            outcome: finished.state.to_owned(),
            origin: "local".to_owned(),
            resource: format!(
                "vault rows: {} moved, {} skipped, {:?} left",
                finished.moved, finished.skipped, finished.remaining
            ),
        });
        match outcome {
            Ok(state) => tracing::info!(
                state,
                moved = finished.moved,
                skipped = finished.skipped,
                batches = finished.batches,
                remaining = finished.remaining,
                "vault rewrap finished"
            ),
            Err(error) => tracing::warn!(
                %error,
                moved = finished.moved,
                batches = finished.batches,
                "vault rewrap failed"
            ),
        }
    }

    /// The keyring, rows per key id, and the job, as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, storage::StorageError> {
        let rows = self.store.vault_rows_per_key().await?;
        let keyring = self.vault.keyring();
        let job = match self.job.lock() {
            Ok(job) => job.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Ok(serde_json::json!({
            "key_ids": keyring.key_ids,
            "active_key_id": keyring.active_key_id,
            "rows_per_key_id": rows
                .iter()
                .map(|(key_id, rows)| (key_id.to_string(), serde_json::json!(rows)))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "rewrap": job,
        }))
    }
}
