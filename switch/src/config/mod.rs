//! The switch's configuration: one TOML file, with the listen addresses, the
//! data directory and the database and Redis URLs overridable by flags and
//! environment variables ([`Overrides`]), so tests, benchmarks and operators
//! can run several nodes from one file.
//!
//! Unknown keys are refused and every error names the file and the key, so
//! a typo never silently falls back to a default. Secrets are never written
//! in the file in production: see [`secret`] for `env:NAME`, `file:PATH` and
//! `dev:` and the published development secrets a production switch refuses.
//!
//! A file is read in three steps:
//!
//! - [`raw`]: the text as serde types, one per section, defaults filled in.
//! - one function per section turns its raw section into the value the
//!   switch uses, and where a library takes the setting that is the
//!   library's own type ([`actors::RuleConfig`], [`actors::ShardConfig`],
//!   [`storage::JournalConfig`], [`storage::PostgresConfig`],
//!   [`storage::VaultKeys`], ...), so `serve` only wires: [`iso`] (with the
//!   acquirers), [`http`], [`journal`] (storage and journal), [`vault`],
//!   [`fleet`], [`decisions`] (rules, card limits, shards, duplicates),
//!   [`merchants`], [`access`] (staff keys, security, audit).
//! - [`Config::parse`] calls them in order and gathers the results; [`check`]
//!   holds what every section shares (the error type, addresses, numbers
//!   that must not be zero, amounts).
//!
//! A running switch reads its file again on SIGHUP or `POST /admin/reload`
//! with [`Config::load`], as at start; [`crate::ops::reload`] compares the
//! result with the running configuration.

mod access;
mod check;
mod decisions;
mod fleet;
mod http;
mod iso;
mod journal;
mod merchants;
mod raw;
mod secret;
mod vault;

use std::path::{Path, PathBuf};

use actors::{RuleConfig, ShardConfig};

use crate::admission::LoadSettings;
use storage::VaultKeys;

pub use access::{AuditSettings, SecuritySettings, StaffKey};
pub use check::{ConfigError, Mode};
pub use decisions::DuplicateSettings;
pub use fleet::FleetSettings;
pub use http::{HttpConfig, HttpTlsConfig};
pub use iso::{AcquirerConfig, IsoConfig, IsoTlsConfig};
pub use journal::StorageSettings;
pub use merchants::{MerchantConfig, RateLimit};
pub use raw::Backend;
pub use secret::DEV_SECRETS;

use check::Check;
use raw::RawConfig;

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub iso: IsoConfig,
    pub http: HttpConfig,
    /// The journal's backend, queue and batches.
    pub storage: StorageSettings,
    pub vault: VaultKeys,
    /// Shards, card limits and each merchant's limits.
    pub shards: ShardConfig,
    /// Threads of the runtime that serves requests (`[runtime]`).
    pub worker_threads: usize,
    pub rules: RuleConfig,
    pub duplicates: DuplicateSettings,
    /// Admin credentials: `[admin]` (named "admin") and `[admins.NAME]`.
    pub admins: Vec<StaffKey>,
    /// Operator credentials, `[operators.NAME]`.
    pub operators: Vec<StaffKey>,
    /// Merchants' API keys and admission rates.
    pub merchants: Vec<MerchantConfig>,
    pub security: SecuritySettings,
    pub audit: AuditSettings,
    /// `None`: a single node, no Redis.
    pub fleet: Option<FleetSettings>,
    /// Acquirers identified by client certificate on `[iso.tls]`.
    pub acquirers: Vec<AcquirerConfig>,
    /// The admission limit (`[overload]`).
    pub overload: LoadSettings,
}

/// Values given on the command line or in the environment, over the file's
/// (the flags of `switch serve`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
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

impl Config {
    /// Reads and checks `file`, with `overrides` applied.
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Unreadable {
            file: file.to_owned(),
            reason: error.to_string(),
        })?;
        Config::parse(&text, file, overrides, &|name| std::env::var(name).ok())
    }

    /// Reads `file` again for its `[vault]` section, as a running switch does
    /// on SIGHUP or `POST /admin/vault/reload`. The whole file is checked,
    /// so a reload never applies keys from a file the switch could not
    /// start with; only the vault keys are taken from it.
    pub fn load_vault(file: &Path, overrides: &Overrides) -> Result<VaultKeys, ConfigError> {
        Config::load(file, overrides).map(|config| config.vault)
    }

    /// Parses and checks configuration text; `env` looks up `env:` secrets.
    /// The sections are checked in this order, so with several mistakes the
    /// first one here is the one reported.
    pub fn parse(
        text: &str,
        file: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = RawConfig::from_toml(text, file)?;
        let check = Check {
            file,
            mode: raw.mode,
            env,
        };
        let iso = iso::iso(&check, &raw.iso, overrides.iso_listen.as_deref())?;
        let http = http::http(&check, &raw.http, overrides.http_listen.as_deref())?;
        let journal = journal::journal(&check, &raw.journal)?;
        let vault = vault::vault(&check, &raw.vault)?;
        let storage = journal::storage(
            &check,
            &raw.storage,
            journal,
            overrides.database_url.as_deref(),
        )?;
        let fleet = fleet::fleet(&check, raw.fleet.as_ref(), overrides.redis_url.as_deref())?;
        let rules = decisions::rules(&check, &raw.rules)?;
        let default_rate = merchants::default_rate(&check, &raw.security)?;
        let merchants = merchants::merchants(&check, &raw.merchants, default_rate)?;
        let staff = access::staff(
            &check,
            raw.admin.as_ref(),
            &raw.admins,
            &raw.operators,
            &merchants.merchants,
        )?;
        let security = access::security(&check, &raw.security)?;
        let audit = access::audit(&check, &raw.audit)?;
        let acquirers = iso::acquirers(&check, &raw.acquirers, &iso)?;
        let card_limits = decisions::card_limits(&check, &raw.card_limits)?;
        let shards = decisions::shards(&check, &raw.shards, card_limits, merchants.limits)?;
        let duplicates = decisions::duplicates(&check, &raw.duplicates)?;
        let overload = decisions::overload(&check, &raw.overload, storage.backend())?;
        Ok(Config {
            mode: raw.mode,
            data_dir: overrides.data_dir.clone().unwrap_or(raw.data_dir),
            iso,
            http,
            storage,
            vault,
            shards,
            worker_threads: decisions::worker_threads(
                raw.runtime.worker_threads,
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            rules,
            duplicates,
            admins: staff.admins,
            operators: staff.operators,
            merchants: merchants.merchants,
            security,
            audit,
            fleet,
            acquirers,
            overload,
        })
    }
}

#[cfg(test)]
mod tests;
