//! [`ConfigControl`]: one reload from start to end, under one lock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::changes::{LiveChanges, fixed_changes};
use crate::config::{Config, ConfigError, Overrides};
use crate::engine::{Engine, Policy};
use crate::ops::audit::{Audit, AuditEvent, events};

/// Why a reload was refused. The running configuration is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or checked, as it could not be at start.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The file changes settings the switch took at start.
    #[error(
        "cannot change while the switch runs (restart to apply): {}",
        .0.join(", ")
    )]
    Fixed(Vec<&'static str>),
}

impl ReloadError {
    /// The key at fault (several, comma-separated, for fixed settings);
    /// `None` when the file as a whole is (unreadable, bad TOML).
    pub fn key(&self) -> Option<String> {
        match self {
            ReloadError::Config(ConfigError::Value { key, .. }) => Some(key.clone()),
            ReloadError::Config(_) => None,
            ReloadError::Fixed(keys) => Some(keys.join(", ")),
        }
    }

    /// What the audit log records: the key and the switch's own reason,
    /// never a line of the file (a TOML error may quote one; it stays in
    /// the switch's log and the admin route's answer).
    fn audited(&self) -> String {
        match self {
            ReloadError::Config(ConfigError::Value { key, reason, .. }) => {
                format!("{key}: {reason}")
            }
            ReloadError::Config(ConfigError::Syntax { .. }) => "not valid TOML".to_owned(),
            ReloadError::Config(ConfigError::Unreadable { .. }) => "cannot be read".to_owned(),
            ReloadError::Fixed(_) => self.to_string(),
        }
    }
}

/// A reload applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The configuration's generation now (unchanged when nothing changed).
    pub generation: u64,
    pub changes: LiveChanges,
}

/// Who asked for a reload, as the audit log records it.
#[derive(Debug, Clone)]
pub struct ReloadBy {
    /// `sighup`, or the principal (`operator:NAME`, `admin:NAME`).
    pub actor: String,
    /// `local`, or the peer address.
    pub origin: String,
}

impl ReloadBy {
    /// A SIGHUP sent to the process.
    pub fn sighup() -> ReloadBy {
        ReloadBy {
            actor: "sighup".to_owned(),
            origin: crate::ops::audit::LOCAL_ORIGIN.to_owned(),
        }
    }
}

/// Told of each configuration applied, after the engine, with the policy
/// the engine now holds (the HTTP door swaps its keys with it).
type Follower = Box<dyn Fn(&Config, &Arc<Policy>) + Send + Sync>;

/// What SIGHUP and the admin route share.
pub struct ConfigControl {
    engine: Arc<Engine>,
    config_file: PathBuf,
    overrides: Overrides,
    /// The configuration running now. Held for the whole of a reload, so
    /// two cannot interleave their comparisons and swaps.
    running: tokio::sync::Mutex<Config>,
    /// Touched at start and by reloads only, never by a request.
    followers: Mutex<Vec<Follower>>,
    audit: Audit,
}

impl std::fmt::Debug for ConfigControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigControl")
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

impl ConfigControl {
    /// `running`: the configuration the switch started with, from
    /// `config_file` with `overrides`.
    pub fn new(
        engine: Arc<Engine>,
        running: Config,
        config_file: PathBuf,
        overrides: Overrides,
        audit: Audit,
    ) -> ConfigControl {
        ConfigControl {
            engine,
            config_file,
            overrides,
            running: tokio::sync::Mutex::new(running),
            followers: Mutex::new(Vec::new()),
            audit,
        }
    }

    /// Calls `follower` with each configuration applied from now on.
    pub fn on_applied(&self, follower: impl Fn(&Config, &Arc<Policy>) + Send + Sync + 'static) {
        match self.followers.lock() {
            Ok(mut followers) => followers.push(Box::new(follower)),
            Err(poisoned) => poisoned.into_inner().push(Box::new(follower)),
        }
    }

    /// Reads the file again and applies it, or refuses it and keeps the
    /// running configuration. Audited, counted and logged either way.
    pub async fn reload(&self, by: &ReloadBy) -> Result<Applied, ReloadError> {
        let mut running = self.running.lock().await;
        let outcome = self.apply(&mut running);
        let file = self.config_file.display();
        let (result, resource) = match &outcome {
            Ok(applied) => {
                tracing::info!(
                    actor = %by.actor,
                    generation = applied.generation,
                    changes = %applied.changes.summary(),
                    "configuration reloaded"
                );
                (
                    "applied",
                    format!(
                        "{file}: generation {}: {}",
                        applied.generation,
                        applied.changes.summary()
                    ),
                )
            }
            Err(error) => {
                tracing::warn!(
                    actor = %by.actor,
                    key = error.key().as_deref().unwrap_or(""),
                    %error,
                    "configuration reload refused; the running configuration is unchanged"
                );
                ("refused", format!("{file}: {}", error.audited()))
            }
        };
        self.engine.metrics().count_config_reload(outcome.is_ok());
        self.audit.record_or_wait(AuditEvent {
            actor: by.actor.clone(),
            event: events::CONFIG_RELOAD.to_owned(),
            outcome: result.to_owned(),
            origin: by.origin.clone(),
            resource,
        });
        outcome
    }

    /// The steps of a reload, under the lock; nothing changes unless all
    /// pass.
    fn apply(&self, running: &mut Config) -> Result<Applied, ReloadError> {
        let next = Config::load(&self.config_file, &self.overrides)?;
        let fixed = fixed_changes(running, &next);
        if !fixed.is_empty() {
            return Err(ReloadError::Fixed(fixed));
        }
        let changes = LiveChanges::between(running, &next);
        let current = self.engine.policy();
        if changes.is_empty() {
            return Ok(Applied {
                generation: current.generation,
                changes,
            });
        }
        let policy = Arc::new(Policy {
            generation: current.generation + 1,
            rules: next.rules.clone(),
            limits: Arc::new(next.shards.limits()),
            admission_rates: Arc::new(current.admission_rates.reconfigured(&next.merchants)),
        });
        self.engine.replace_policy(Arc::clone(&policy));
        let followers = match self.followers.lock() {
            Ok(followers) => followers,
            Err(poisoned) => poisoned.into_inner(),
        };
        for follower in followers.iter() {
            follower(&next, &policy);
        }
        drop(followers);
        *running = next;
        Ok(Applied {
            generation: policy.generation,
            changes,
        })
    }
}
