//! The switch's configuration: one TOML file, with the listen addresses and
//! the data directory overridable by flags and environment variables, so
//! tests, benchmarks and operators can run several nodes from one file.
//!
//! Unknown keys are refused and every error names the file and the key, so
//! a typo never silently falls back to a default. Secrets (vault keys) are
//! never written in the file in production: a value `env:NAME` reads the
//! environment variable NAME and `file:PATH` reads a file; a literal key
//! must be marked `dev:` and the switch refuses it unless `mode = "dev"`.
//! In production the keys and API keys published in `config/switch.toml`
//! are refused however they arrive (see [`DEV_SECRETS`]), and so is a
//! database or Redis URL with a password written in the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use protocol::Amount;
use protocol::domain::pad;
use protocol::ids::{MerchantId, TerminalId, Text};
use serde::Deserialize;

pub use crate::fleet::OnRedisDown;

/// A configuration that cannot be used, with the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot be read: {reason}")]
    Unreadable { file: PathBuf, reason: String },
    #[error("{file}: {reason}")]
    Syntax { file: PathBuf, reason: String },
    #[error("{file}: {key}: {reason}")]
    Value {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// The secrets published in `config/switch.toml` for development, by name.
/// They are public, so a production switch refuses them even when they come
/// from the environment or a file: a copied development setting must not
/// protect real cards. Vault keys are compared as keys, API keys as the
/// SHA-256 digests the file stores.
pub const DEV_SECRETS: &[(&str, &str)] = &[
    (
        "the development tokenization key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ),
    (
        "the development vault encryption key 1",
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    ),
    (
        "the development admin key `dev-admin-key`",
        "df76ff796f70d2c9cb055ea6280553caa27eda26b70e01082c160de75a05a4a9",
    ),
    (
        "the development merchant key `dev-merchant-key-acme`",
        "c0b25ce7613e713a8149047fa3a32d050b46602e7231a0eb46e83883823f7b57",
    ),
    (
        "the development merchant key `dev-merchant-key-bistro`",
        "55604055569451644cb17df68b8b3e78fdc69f215f581db8450453c2095521f4",
    ),
    (
        "the development operator key `dev-operator-key`",
        "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca",
    ),
];

/// Ids of an acquirer's allowed merchants or terminals, space-padded to `N`;
/// the error is the key (from `key`) and why.
fn padded_ids<const N: usize>(
    ids: Option<&[String]>,
    what: &str,
    key: impl Fn() -> String,
) -> Result<Option<Vec<Text<N>>>, (String, String)> {
    ids.map(|ids| {
        ids.iter()
            .map(|id| {
                pad::<N>(id).filter(|_| !id.is_empty()).ok_or_else(|| {
                    (
                        key(),
                        format!("`{id}` is not a {what} id (1 to {N} printable characters)"),
                    )
                })
            })
            .collect()
    })
    .transpose()
}

/// The name of the published development secret equal to `value`, if any.
fn dev_secret_named(value: &[u8; 32]) -> Option<&'static str> {
    DEV_SECRETS.iter().find_map(|(name, hex)| {
        let known = protocol::encoding::from_hex(hex)?;
        (known.as_slice() == value.as_slice()).then_some(*name)
    })
}

/// Whether a database or Redis URL carries a password: `scheme://user:pw@`
/// or a `password=` parameter.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let in_userinfo = authority.rsplit_once('@').is_some_and(|(userinfo, _)| {
        userinfo
            .split_once(':')
            .is_some_and(|(_, pw)| !pw.is_empty())
    });
    let in_query = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("password=")));
    in_userinfo || in_query
}

/// Whether development shortcuts (literal `dev:` keys) are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dev,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Mode,
    data_dir: PathBuf,
    iso: RawIso,
    http: RawHttp,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    journal: RawJournal,
    vault: RawVault,
    #[serde(default)]
    shards: RawShards,
    rules: RawRules,
    #[serde(default)]
    card_limits: RawCardLimits,
    #[serde(default)]
    duplicates: RawDuplicates,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    admins: BTreeMap<String, RawAdmin>,
    #[serde(default)]
    operators: BTreeMap<String, RawAdmin>,
    #[serde(default)]
    merchants: BTreeMap<String, RawMerchant>,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    fleet: Option<RawFleet>,
    #[serde(default)]
    acquirers: BTreeMap<String, RawAcquirer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    redis_url: Option<String>,
    #[serde(default = "default_on_redis_down")]
    on_redis_down: OnRedisDown,
    #[serde(default = "default_fleet_timeout_ms")]
    timeout_ms: u64,
}

fn default_on_redis_down() -> OnRedisDown {
    OnRedisDown::Decline
}
fn default_fleet_timeout_ms() -> u64 {
    200
}

/// Several nodes sharing card velocity in Redis: on with a `[fleet]`
/// section. As `DATABASE_URL` only matters with `backend = "postgres"`,
/// `--redis-url` / `REDIS_URL` only gives the URL: a test environment that
/// exports REDIS_URL does not turn every single-node test into a fleet.
#[derive(Clone)]
pub struct FleetSettings {
    /// May hold a password, so never printed.
    pub redis_url: String,
    pub on_redis_down: OnRedisDown,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("redis_url", &"[redacted]")
            .field("on_redis_down", &self.on_redis_down)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIso {
    /// The plain TCP listener; may be left out when `[iso.tls]` is set.
    listen: Option<String>,
    #[serde(default = "default_spec")]
    spec: String,
    #[serde(default = "default_connections_max")]
    connections_max: usize,
    #[serde(default = "default_in_flight_max")]
    in_flight_max: usize,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    /// Overrides the dialect's largest frame.
    frame_length_max: Option<usize>,
    tls: Option<RawIsoTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIsoTls {
    listen: String,
    certificate: PathBuf,
    private_key: PathBuf,
    client_ca: PathBuf,
    #[serde(default = "default_handshake_timeout_ms")]
    handshake_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTls {
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcquirer {
    certificate_subject: String,
    merchants: Option<Vec<String>>,
    terminals: Option<Vec<String>>,
}

fn default_handshake_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    #[serde(default = "default_body_bytes_max")]
    body_bytes_max: usize,
    #[serde(default = "default_header_read_timeout_ms")]
    header_read_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
    tls: Option<RawHttpTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "default_backend")]
    backend: Backend,
    database_url: Option<String>,
    #[serde(default = "default_writer_connections")]
    writer_connections: usize,
    #[serde(default = "default_read_connections")]
    read_connections: u32,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u32,
    #[serde(default = "default_statement_timeout_ms")]
    statement_timeout_ms: u32,
}

impl Default for RawStorage {
    fn default() -> RawStorage {
        RawStorage {
            backend: default_backend(),
            database_url: None,
            writer_connections: default_writer_connections(),
            read_connections: default_read_connections(),
            connect_timeout_ms: default_connect_timeout_ms(),
            statement_timeout_ms: default_statement_timeout_ms(),
        }
    }
}

fn default_backend() -> Backend {
    Backend::Sqlite
}
fn default_writer_connections() -> usize {
    2
}
fn default_read_connections() -> u32 {
    4
}
fn default_connect_timeout_ms() -> u32 {
    2_000
}
fn default_statement_timeout_ms() -> u32 {
    2_000
}

/// Where the journal and vault live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A SQLite file under `data_dir`: no server (the default).
    Sqlite,
    /// PostgreSQL 15 or Aurora PostgreSQL at `storage.database_url`.
    Postgres,
}

/// The journal backend and how to reach it.
#[derive(Clone)]
pub struct StorageSettings {
    pub backend: Backend,
    /// PostgreSQL only; may hold a password, so never printed.
    pub database_url: Option<String>,
    pub writer_connections: usize,
    pub read_connections: u32,
    pub connect_timeout_ms: u32,
    pub statement_timeout_ms: u32,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("backend", &self.backend)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("writer_connections", &self.writer_connections)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    #[serde(default = "default_queue_capacity")]
    queue_capacity: usize,
    #[serde(default = "default_batch_rows_max")]
    batch_rows_max: usize,
}

impl Default for RawJournal {
    fn default() -> RawJournal {
        RawJournal {
            queue_capacity: default_queue_capacity(),
            batch_rows_max: default_batch_rows_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    tokenization_key: String,
    active_key_id: u32,
    encryption_keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShards {
    #[serde(default)]
    count: usize,
    #[serde(default = "default_mailbox_capacity")]
    mailbox_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    amount_max: u64,
    #[serde(default)]
    blocked_bins: Vec<RawBinRange>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinRange {
    from: String,
    to: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCardLimits {
    #[serde(default)]
    per_minute: RawWindowLimit,
    #[serde(default)]
    per_hour: RawWindowLimit,
    #[serde(default)]
    per_day: RawWindowLimit,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindowLimit {
    count_max: Option<u32>,
    amount_max: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDuplicates {
    #[serde(default = "default_duplicate_window_ms")]
    window_ms: u64,
    #[serde(default = "default_duplicate_entries_max")]
    entries_max: usize,
}

impl Default for RawDuplicates {
    fn default() -> RawDuplicates {
        RawDuplicates {
            window_ms: default_duplicate_window_ms(),
            entries_max: default_duplicate_entries_max(),
        }
    }
}

fn default_duplicate_window_ms() -> u64 {
    120_000
}
fn default_duplicate_entries_max() -> usize {
    1_000_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    api_key_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerchant {
    api_key_sha256: Option<String>,
    amount_max_per_transaction: Option<u64>,
    daily_volume_max: Option<u64>,
    allowed_mccs: Option<Vec<String>>,
    tps_max: Option<u32>,
    rate_per_second: Option<u32>,
    rate_burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    #[serde(default = "default_lockout_failures")]
    lockout_failures: u32,
    #[serde(default = "default_lockout_ms")]
    lockout_ms: u64,
    #[serde(default = "default_lockout_origins_max")]
    lockout_origins_max: usize,
    rate_per_second: Option<u32>,
    rate_burst: Option<u32>,
}

impl Default for RawSecurity {
    fn default() -> RawSecurity {
        RawSecurity {
            lockout_failures: default_lockout_failures(),
            lockout_ms: default_lockout_ms(),
            lockout_origins_max: default_lockout_origins_max(),
            rate_per_second: None,
            rate_burst: None,
        }
    }
}

fn default_lockout_failures() -> u32 {
    10
}
fn default_lockout_ms() -> u64 {
    30 * 60 * 1000
}
fn default_lockout_origins_max() -> usize {
    100_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "default_audit_queue_capacity")]
    queue_capacity: usize,
    #[serde(default = "default_audit_batch_entries_max")]
    batch_entries_max: usize,
    #[serde(default = "default_audit_success_interval_ms")]
    success_interval_ms: u64,
}

impl Default for RawAudit {
    fn default() -> RawAudit {
        RawAudit {
            queue_capacity: default_audit_queue_capacity(),
            batch_entries_max: default_audit_batch_entries_max(),
            success_interval_ms: default_audit_success_interval_ms(),
        }
    }
}

fn default_audit_queue_capacity() -> usize {
    65_536
}
fn default_audit_batch_entries_max() -> usize {
    1_024
}
fn default_audit_success_interval_ms() -> u64 {
    60_000
}

fn default_spec() -> String {
    "iso87".to_owned()
}
fn default_connections_max() -> usize {
    1024
}
fn default_in_flight_max() -> usize {
    64
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
fn default_body_bytes_max() -> usize {
    16 * 1024
}
fn default_header_read_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_queue_capacity() -> usize {
    65_536
}
fn default_batch_rows_max() -> usize {
    1_024
}
fn default_mailbox_capacity() -> usize {
    4_096
}

/// The ISO 8583 listeners: plain TCP, TLS with client certificates, or both.
#[derive(Debug, Clone)]
pub struct IsoConfig {
    /// The plain TCP listener; `None` when only `[iso.tls]` takes acquirers.
    pub listen: Option<SocketAddr>,
    /// The mutual-TLS listener.
    pub tls: Option<IsoTlsConfig>,
    /// A built-in dialect name or a spec file.
    pub spec: String,
    pub connections_max: usize,
    /// Requests one connection may have in flight before the switch stops
    /// reading from it.
    pub in_flight_max: usize,
    pub idle_timeout_ms: u64,
    /// Overrides the dialect's largest frame, in bytes after the length header.
    pub frame_length_max: Option<usize>,
}

/// ISO 8583 over TLS 1.2/1.3 on its own listener; every client presents a
/// certificate issued under `client_ca` that names a configured acquirer.
/// Paths are as written in the file (relative ones from the working
/// directory, like `data_dir`).
#[derive(Debug, Clone)]
pub struct IsoTlsConfig {
    pub listen: SocketAddr,
    /// The server's certificate chain, PEM, leaf first.
    pub certificate: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The CA certificates acquirers' client certificates are issued under, PEM.
    pub client_ca: PathBuf,
    /// The longest a handshake may take before the connection is closed.
    pub handshake_timeout_ms: u64,
}

/// HTTPS for the JSON API and the ops routes: `http.listen` speaks TLS.
/// Client certificates are not asked for; API keys authenticate.
#[derive(Debug, Clone)]
pub struct HttpTlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// An acquirer identified by its TLS client certificate on `[iso.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquirerConfig {
    /// The table's name, `[acquirers.NAME]`: what the journal records.
    pub name: String,
    /// Matched, ignoring ASCII case, against the certificate's subject
    /// common name and its DNS subject alternative names.
    pub certificate_subject: String,
    /// The merchants (DE42) it may send for; `None`: any.
    pub merchants: Option<Vec<MerchantId>>,
    /// The terminals (DE41) it may send for; `None`: any.
    pub terminals: Option<Vec<TerminalId>>,
}

/// The JSON/HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `Some`: the listener speaks HTTPS only.
    pub tls: Option<HttpTlsConfig>,
    pub body_bytes_max: usize,
    pub header_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

/// The journal's queue and batches.
#[derive(Debug, Clone, Copy)]
pub struct JournalSettings {
    pub queue_capacity: usize,
    pub batch_rows_max: usize,
}

/// Vault keys, read from the environment or files (or `dev:` literals in dev mode).
#[derive(Clone)]
pub struct VaultSecrets {
    pub tokenization_key: [u8; 32],
    pub encryption_keys: Vec<(u32, [u8; 32])>,
    pub active_key_id: u32,
}

impl std::fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VaultSecrets {{ active_key_id: {}, keys: {:?}, [redacted] }}",
            self.active_key_id,
            self.encryption_keys
                .iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
        )
    }
}

impl VaultSecrets {
    /// The keys in the vault's form.
    pub fn vault_keys(&self) -> storage::VaultKeys {
        storage::VaultKeys {
            tokenization_key: self.tokenization_key,
            encryption_keys: self.encryption_keys.clone(),
            active_key_id: self.active_key_id,
        }
    }
}

impl Drop for VaultSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.tokenization_key.zeroize();
        for (_, key) in &mut self.encryption_keys {
            key.zeroize();
        }
    }
}

/// A blocked range of BINs, compared on the PAN's leading digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinRange {
    pub from: String,
    pub to: String,
}

/// Limits of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowLimit {
    pub count_max: Option<u32>,
    pub amount_max: Option<Amount>,
}

/// A merchant's limits and API key.
#[derive(Debug, Clone)]
pub struct MerchantConfig {
    pub id: MerchantId,
    /// SHA-256 of the merchant's API key.
    pub api_key_sha256: Option<[u8; 32]>,
    pub amount_max_per_transaction: Option<Amount>,
    pub daily_volume_max: Option<Amount>,
    pub allowed_mccs: Option<Vec<Text<4>>>,
    pub tps_max: Option<u32>,
    /// The merchant's admission rate on both ingresses (token bucket), from
    /// its own section or `[security]`; `None`: not limited.
    pub rate: Option<RateLimit>,
}

/// A token bucket: `per_second` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A named operator or admin credential: the name is what the audit log
/// records as the actor, never the key.
#[derive(Debug, Clone)]
pub struct StaffKey {
    pub name: String,
    /// SHA-256 of the API key.
    pub api_key_sha256: [u8; 32],
}

/// Lockout of client origins after failed authentications.
#[derive(Debug, Clone, Copy)]
pub struct SecuritySettings {
    /// Failed authentications from one origin within `lockout_ms` that lock it out.
    pub lockout_failures: u32,
    /// How long the failures are counted and the lockout lasts.
    pub lockout_ms: u64,
    /// Origins tracked at most (failures or lockouts), so many addresses
    /// cannot grow the table without end.
    pub lockout_origins_max: usize,
}

/// The audit log's queue and batches.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    pub queue_capacity: usize,
    pub batch_entries_max: usize,
    /// A merchant key's successful authentications are recorded once per
    /// origin per interval, not once per request.
    pub success_interval_ms: u64,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub iso: IsoConfig,
    pub http: HttpConfig,
    pub storage: StorageSettings,
    pub journal: JournalSettings,
    pub vault: VaultSecrets,
    pub shard_count: usize,
    pub mailbox_capacity: usize,
    pub amount_max: Amount,
    pub blocked_bins: Vec<BinRange>,
    pub card_limits: [WindowLimit; 3],
    /// How long answered ISO requests are remembered in memory for
    /// recognizing retransmissions, and how many at most.
    pub duplicate_window_ms: u64,
    pub duplicate_entries_max: usize,
    /// SHA-256 of the admin credential.
    pub admin_key_sha256: Option<[u8; 32]>,
    /// Admin credentials: `[admin]` (named "admin") and `[admins.NAME]`.
    pub admins: Vec<StaffKey>,
    /// Operator credentials, `[operators.NAME]`.
    pub operators: Vec<StaffKey>,
    pub merchants: Vec<MerchantConfig>,
    pub security: SecuritySettings,
    pub audit: AuditSettings,
    /// `None`: a single node, no Redis.
    pub fleet: Option<FleetSettings>,
    /// Acquirers identified by client certificate on `[iso.tls]`.
    pub acquirers: Vec<AcquirerConfig>,
}

/// Values given on the command line or in the environment, over the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub iso_listen: Option<String>,
    pub http_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Overrides `storage.database_url`.
    pub database_url: Option<String>,
    /// Overrides `fleet.redis_url` (used only with a `[fleet]` section).
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
    pub fn load_vault(file: &Path, overrides: &Overrides) -> Result<VaultSecrets, ConfigError> {
        Config::load(file, overrides).map(|config| config.vault)
    }

    /// Parses and checks configuration text; `env` looks up `env:` secrets.
    pub fn parse(
        text: &str,
        file: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // One line: where, then what (toml's own Display spans several
        // lines, quoting the file).
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let at = error.span().map_or(String::new(), |span| {
                let before = text.get(..span.start).unwrap_or_default();
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            ConfigError::Syntax {
                file: file.to_owned(),
                reason: format!("{at}{}", error.message().trim_end().replace('\n', " ")),
            }
        })?;
        let value_error = |key: &str, reason: String| ConfigError::Value {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let address = |key: &str, text: &str| -> Result<SocketAddr, ConfigError> {
            text.parse().map_err(|_| {
                value_error(
                    key,
                    format!("`{text}` is not an address such as 127.0.0.1:8583"),
                )
            })
        };
        let positive = |key: &str, value: usize| -> Result<usize, ConfigError> {
            if value == 0 {
                Err(value_error(key, "must be at least 1".to_owned()))
            } else {
                Ok(value)
            }
        };

        let iso_tls = raw
            .iso
            .tls
            .as_ref()
            .map(|tls| -> Result<IsoTlsConfig, ConfigError> {
                Ok(IsoTlsConfig {
                    listen: address("iso.tls.listen", &tls.listen)?,
                    certificate: tls.certificate.clone(),
                    private_key: tls.private_key.clone(),
                    client_ca: tls.client_ca.clone(),
                    handshake_timeout_ms: positive(
                        "iso.tls.handshake_timeout_ms",
                        tls.handshake_timeout_ms as usize,
                    )? as u64,
                })
            })
            .transpose()?;
        let iso_listen = match (overrides.iso_listen.as_deref(), raw.iso.listen.as_deref()) {
            (Some(text), _) | (None, Some(text)) => Some(address("iso.listen", text)?),
            (None, None) if iso_tls.is_some() => None,
            (None, None) => {
                return Err(value_error(
                    "iso.listen",
                    "is needed unless [iso.tls] takes acquirers over TLS".to_owned(),
                ));
            }
        };
        let iso = IsoConfig {
            listen: iso_listen,
            tls: iso_tls,
            spec: raw.iso.spec.clone(),
            connections_max: positive("iso.connections_max", raw.iso.connections_max)?,
            in_flight_max: positive("iso.in_flight_max", raw.iso.in_flight_max)?,
            idle_timeout_ms: positive("iso.idle_timeout_ms", raw.iso.idle_timeout_ms as usize)?
                as u64,
            frame_length_max: raw
                .iso
                .frame_length_max
                .map(|value| positive("iso.frame_length_max", value))
                .transpose()?,
        };
        let http = HttpConfig {
            listen: address(
                "http.listen",
                overrides.http_listen.as_deref().unwrap_or(&raw.http.listen),
            )?,
            tls: raw.http.tls.as_ref().map(|tls| HttpTlsConfig {
                certificate: tls.certificate.clone(),
                private_key: tls.private_key.clone(),
            }),
            body_bytes_max: positive("http.body_bytes_max", raw.http.body_bytes_max)?,
            header_read_timeout_ms: positive(
                "http.header_read_timeout_ms",
                raw.http.header_read_timeout_ms as usize,
            )? as u64,
            request_timeout_ms: positive(
                "http.request_timeout_ms",
                raw.http.request_timeout_ms as usize,
            )? as u64,
        };
        let journal = JournalSettings {
            queue_capacity: positive("journal.queue_capacity", raw.journal.queue_capacity)?,
            batch_rows_max: positive("journal.batch_rows_max", raw.journal.batch_rows_max)?,
        };

        let secret = |key: &str, value: &str| -> Result<[u8; 32], ConfigError> {
            let hex = if let Some(name) = value.strip_prefix("env:") {
                env(name).ok_or_else(|| {
                    value_error(key, format!("environment variable {name} is not set"))
                })?
            } else if let Some(path) = value.strip_prefix("file:") {
                std::fs::read_to_string(path)
                    .map_err(|error| value_error(key, format!("{path} cannot be read: {error}")))?
            } else if let Some(literal) = value.strip_prefix("dev:") {
                if raw.mode != Mode::Dev {
                    return Err(value_error(
                        key,
                        "a `dev:` key is refused outside mode = \"dev\"; use env:NAME or file:PATH"
                            .to_owned(),
                    ));
                }
                literal.to_owned()
            } else {
                return Err(value_error(
                    key,
                    "must be env:NAME, file:PATH, or (in dev mode only) dev:HEX; keys are never written in the file"
                        .to_owned(),
                ));
            };
            let bytes =
                zeroize::Zeroizing::new(protocol::encoding::from_hex(hex.trim()).ok_or_else(
                    || value_error(key, "must be 64 hex digits (32 bytes)".to_owned()),
                )?);
            let secret: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| value_error(key, "must be 64 hex digits (32 bytes)".to_owned()))?;
            if raw.mode == Mode::Production
                && let Some(name) = dev_secret_named(&secret)
            {
                return Err(value_error(
                    key,
                    format!(
                        "is {name}, published in config/switch.toml; refused in mode = \"production\": generate a new key"
                    ),
                ));
            }
            Ok(secret)
        };
        let mut encryption_keys = Vec::new();
        for (id, value) in &raw.vault.encryption_keys {
            let key = format!("vault.encryption_keys.{id}");
            let id: u32 = id
                .parse()
                .map_err(|_| value_error(&key, "key ids are numbers".to_owned()))?;
            encryption_keys.push((id, secret(&key, value)?));
        }
        if !encryption_keys
            .iter()
            .any(|(id, _)| *id == raw.vault.active_key_id)
        {
            return Err(value_error(
                "vault.active_key_id",
                format!(
                    "no key {} in vault.encryption_keys",
                    raw.vault.active_key_id
                ),
            ));
        }
        let vault = VaultSecrets {
            tokenization_key: secret("vault.tokenization_key", &raw.vault.tokenization_key)?,
            encryption_keys,
            active_key_id: raw.vault.active_key_id,
        };

        // A URL may hold a password, so like a key it can come from the
        // environment or a file.
        let url_value = |key: &str, value: &str| -> Result<String, ConfigError> {
            if let Some(name) = value.strip_prefix("env:") {
                env(name).ok_or_else(|| {
                    value_error(key, format!("environment variable {name} is not set"))
                })
            } else if let Some(path) = value.strip_prefix("file:") {
                Ok(std::fs::read_to_string(path)
                    .map_err(|error| value_error(key, format!("{path} cannot be read: {error}")))?
                    .trim()
                    .to_owned())
            } else if raw.mode == Mode::Production && url_has_password(value) {
                Err(value_error(
                    key,
                    "a password written in the file is refused in mode = \"production\"; use env:NAME or file:PATH".to_owned(),
                ))
            } else {
                Ok(value.to_owned())
            }
        };
        let database_url = match (&overrides.database_url, &raw.storage.database_url) {
            (Some(url), _) => Some(url.clone()),
            (None, None) => None,
            (None, Some(value)) => Some(url_value("storage.database_url", value)?),
        };
        let fleet = match &raw.fleet {
            None => None,
            Some(raw_fleet) => {
                let redis_url = match (&overrides.redis_url, &raw_fleet.redis_url) {
                    (Some(url), _) => url.clone(),
                    (None, Some(value)) => url_value("fleet.redis_url", value)?,
                    (None, None) => return Err(value_error(
                        "fleet.redis_url",
                        "[fleet] needs a Redis URL: set it here (env:NAME or file:PATH), or pass --redis-url or REDIS_URL".to_owned(),
                    )),
                };
                Some(FleetSettings {
                    redis_url,
                    on_redis_down: raw_fleet.on_redis_down,
                    timeout_ms: positive("fleet.timeout_ms", raw_fleet.timeout_ms as usize)? as u64,
                })
            }
        };
        if raw.storage.backend == Backend::Postgres && database_url.is_none() {
            return Err(value_error(
                "storage.database_url",
                "backend \"postgres\" needs a URL: set it here (env:NAME or file:PATH), or pass --database-url or DATABASE_URL".to_owned(),
            ));
        }
        let storage = StorageSettings {
            backend: raw.storage.backend,
            database_url,
            writer_connections: positive(
                "storage.writer_connections",
                raw.storage.writer_connections,
            )?,
            read_connections: positive(
                "storage.read_connections",
                raw.storage.read_connections as usize,
            )? as u32,
            connect_timeout_ms: positive(
                "storage.connect_timeout_ms",
                raw.storage.connect_timeout_ms as usize,
            )? as u32,
            statement_timeout_ms: positive(
                "storage.statement_timeout_ms",
                raw.storage.statement_timeout_ms as usize,
            )? as u32,
        };

        let amount = |key: &str, minor: u64| -> Result<Amount, ConfigError> {
            Amount::from_minor(minor)
                .ok_or_else(|| value_error(key, "must be at most 999999999999".to_owned()))
        };
        let digest = |key: &str, hex: &str| -> Result<[u8; 32], ConfigError> {
            let digest: [u8; 32] = protocol::encoding::from_hex(hex)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    value_error(
                        key,
                        "must be the SHA-256 of the key, 64 hex digits".to_owned(),
                    )
                })?;
            if raw.mode == Mode::Production
                && let Some(name) = dev_secret_named(&digest)
            {
                return Err(value_error(
                    key,
                    format!(
                        "is the SHA-256 of {name}, published in config/switch.toml; refused in mode = \"production\""
                    ),
                ));
            }
            Ok(digest)
        };

        let mut blocked_bins = Vec::new();
        for (i, range) in raw.rules.blocked_bins.iter().enumerate() {
            let key = format!("rules.blocked_bins[{i}]");
            let digits =
                |s: &str| (6..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(&range.from)
                || !digits(&range.to)
                || range.from.len() != range.to.len()
                || range.from > range.to
            {
                return Err(value_error(
                    &key,
                    "from and to must be BINs of the same length, 6 to 8 digits, from <= to"
                        .to_owned(),
                ));
            }
            blocked_bins.push(BinRange {
                from: range.from.clone(),
                to: range.to.clone(),
            });
        }

        let window = |key: &str, raw: RawWindowLimit| -> Result<WindowLimit, ConfigError> {
            Ok(WindowLimit {
                count_max: raw.count_max,
                amount_max: raw.amount_max.map(|minor| amount(key, minor)).transpose()?,
            })
        };

        let rate = |key: &str,
                    per_second: Option<u32>,
                    burst: Option<u32>|
         -> Result<Option<RateLimit>, ConfigError> {
            match (per_second, burst) {
                (None, None) => Ok(None),
                (None, Some(_)) => Err(value_error(
                    &format!("{key}.rate_burst"),
                    "needs rate_per_second".to_owned(),
                )),
                (Some(per_second), burst) => {
                    let per_second =
                        positive(&format!("{key}.rate_per_second"), per_second as usize)? as u32;
                    // Without a burst, one second's worth may come at once.
                    let burst = positive(
                        &format!("{key}.rate_burst"),
                        burst.unwrap_or(per_second) as usize,
                    )? as u32;
                    Ok(Some(RateLimit { per_second, burst }))
                }
            }
        };
        let default_rate = rate(
            "security",
            raw.security.rate_per_second,
            raw.security.rate_burst,
        )?;

        let mut merchants = Vec::new();
        for (id, merchant) in &raw.merchants {
            let key = format!("merchants.{id}");
            let merchant_id: MerchantId = pad(id).ok_or_else(|| {
                value_error(
                    &key,
                    "a merchant id is 1 to 15 printable characters".to_owned(),
                )
            })?;
            let allowed_mccs = merchant
                .allowed_mccs
                .as_ref()
                .map(|mccs| {
                    mccs.iter()
                        .map(|mcc| {
                            Text::parse(mcc.as_bytes())
                                .filter(|_| mcc.bytes().all(|b| b.is_ascii_digit()))
                                .ok_or_else(|| {
                                    value_error(
                                        &format!("{key}.allowed_mccs"),
                                        format!("`{mcc}` is not 4 digits"),
                                    )
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            merchants.push(MerchantConfig {
                id: merchant_id,
                api_key_sha256: merchant
                    .api_key_sha256
                    .as_deref()
                    .map(|hex| digest(&format!("{key}.api_key_sha256"), hex))
                    .transpose()?,
                amount_max_per_transaction: merchant
                    .amount_max_per_transaction
                    .map(|minor| amount(&format!("{key}.amount_max_per_transaction"), minor))
                    .transpose()?,
                daily_volume_max: merchant
                    .daily_volume_max
                    .map(|minor| amount(&format!("{key}.daily_volume_max"), minor))
                    .transpose()?,
                allowed_mccs,
                tps_max: merchant.tps_max,
                rate: rate(&key, merchant.rate_per_second, merchant.rate_burst)?.or(default_rate),
            });
        }

        // Staff credentials. A name is what the audit log shows, so it is a
        // plain identifier; one key never serves two principals.
        let staff = |section: &str,
                     entries: &BTreeMap<String, RawAdmin>|
         -> Result<Vec<StaffKey>, ConfigError> {
            let mut out = Vec::new();
            for (name, entry) in entries {
                let key = format!("{section}.{name}");
                if name.is_empty()
                    || name.len() > 32
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(value_error(
                        &key,
                        "a name is 1 to 32 letters, digits, `_` or `-`".to_owned(),
                    ));
                }
                out.push(StaffKey {
                    name: name.clone(),
                    api_key_sha256: digest(
                        &format!("{key}.api_key_sha256"),
                        &entry.api_key_sha256,
                    )?,
                });
            }
            Ok(out)
        };
        let admin_key_sha256 = raw
            .admin
            .as_ref()
            .map(|admin| digest("admin.api_key_sha256", &admin.api_key_sha256))
            .transpose()?;
        let mut admins = staff("admins", &raw.admins)?;
        if let Some(digest) = admin_key_sha256 {
            if admins.iter().any(|admin| admin.name == "admin") {
                return Err(value_error(
                    "admins.admin",
                    "the name `admin` is taken by the [admin] section".to_owned(),
                ));
            }
            admins.push(StaffKey {
                name: "admin".to_owned(),
                api_key_sha256: digest,
            });
        }
        let operators = staff("operators", &raw.operators)?;
        let mut seen: Vec<(&[u8; 32], String)> = Vec::new();
        for (digest, key) in merchants
            .iter()
            .filter_map(|m| {
                m.api_key_sha256
                    .as_ref()
                    .map(|d| (d, format!("merchants.{}", m.id.as_str().trim_end())))
            })
            .chain(admins.iter().map(|a| {
                let section = if a.name == "admin" && admin_key_sha256.is_some() {
                    "admin".to_owned()
                } else {
                    format!("admins.{}", a.name)
                };
                (&a.api_key_sha256, section)
            }))
            .chain(
                operators
                    .iter()
                    .map(|o| (&o.api_key_sha256, format!("operators.{}", o.name))),
            )
        {
            if let Some((_, first)) = seen.iter().find(|(d, _)| *d == digest) {
                return Err(value_error(
                    &format!("{key}.api_key_sha256"),
                    format!("the same key as {first}: one key, one principal"),
                ));
            }
            seen.push((digest, key));
        }
        let security = SecuritySettings {
            lockout_failures: positive(
                "security.lockout_failures",
                raw.security.lockout_failures as usize,
            )? as u32,
            lockout_ms: positive("security.lockout_ms", raw.security.lockout_ms as usize)? as u64,
            lockout_origins_max: positive(
                "security.lockout_origins_max",
                raw.security.lockout_origins_max,
            )?,
        };
        let audit = AuditSettings {
            queue_capacity: positive("audit.queue_capacity", raw.audit.queue_capacity)?,
            batch_entries_max: positive("audit.batch_entries_max", raw.audit.batch_entries_max)?,
            success_interval_ms: raw.audit.success_interval_ms,
        };
        let mut acquirers: Vec<AcquirerConfig> = Vec::new();
        for (name, acquirer) in &raw.acquirers {
            let key = format!("acquirers.{name}");
            if iso.tls.is_none() {
                return Err(value_error(
                    &key,
                    "acquirers are identified by client certificates on [iso.tls], which is not set"
                        .to_owned(),
                ));
            }
            if name.is_empty()
                || name.len() > storage::record::ACQUIRER_LENGTH_MAX
                || !name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(value_error(
                    &key,
                    "an acquirer name is 1 to 64 printable characters without spaces".to_owned(),
                ));
            }
            let subject = acquirer.certificate_subject.trim();
            if subject.is_empty() {
                return Err(value_error(
                    &format!("{key}.certificate_subject"),
                    "must name the certificate's subject common name or a DNS name".to_owned(),
                ));
            }
            if let Some(other) = acquirers
                .iter()
                .find(|other| other.certificate_subject.eq_ignore_ascii_case(subject))
            {
                return Err(value_error(
                    &format!("{key}.certificate_subject"),
                    format!("`{subject}` is already acquirer {}'s", other.name),
                ));
            }
            let merchants = padded_ids::<15>(acquirer.merchants.as_deref(), "merchant", || {
                format!("{key}.merchants")
            })
            .map_err(|(key, reason)| value_error(&key, reason))?;
            let terminals = padded_ids::<8>(acquirer.terminals.as_deref(), "terminal", || {
                format!("{key}.terminals")
            })
            .map_err(|(key, reason)| value_error(&key, reason))?;
            acquirers.push(AcquirerConfig {
                name: name.clone(),
                certificate_subject: subject.to_owned(),
                merchants,
                terminals,
            });
        }
        if iso.tls.is_some() && acquirers.is_empty() {
            return Err(value_error(
                "iso.tls",
                "no [acquirers.NAME] is configured, so every client certificate would be refused"
                    .to_owned(),
            ));
        }

        Ok(Config {
            mode: raw.mode,
            data_dir: overrides.data_dir.clone().unwrap_or(raw.data_dir),
            iso,
            http,
            storage,
            journal,
            vault,
            shard_count: raw.shards.count,
            mailbox_capacity: positive("shards.mailbox_capacity", raw.shards.mailbox_capacity)?,
            amount_max: amount("rules.amount_max", raw.rules.amount_max)?,
            blocked_bins,
            card_limits: [
                window("card_limits.per_minute", raw.card_limits.per_minute)?,
                window("card_limits.per_hour", raw.card_limits.per_hour)?,
                window("card_limits.per_day", raw.card_limits.per_day)?,
            ],
            duplicate_window_ms: positive(
                "duplicates.window_ms",
                raw.duplicates.window_ms as usize,
            )? as u64,
            duplicate_entries_max: positive("duplicates.entries_max", raw.duplicates.entries_max)?,
            admin_key_sha256,
            admins,
            operators,
            merchants,
            security,
            audit,
            fleet,
            acquirers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../config/switch.toml");

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("switch.toml"), &Overrides::default(), env)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_shipped_configuration_loads() {
        let config = parse(SHIPPED, &no_env).unwrap();
        assert_eq!(config.mode, Mode::Dev);
        assert_eq!(
            config.iso.listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8583")
        );
        assert!(config.iso.tls.is_none(), "TLS is off by default");
        assert!(config.http.tls.is_none());
        assert_eq!(config.merchants.len(), 2);
        assert_eq!(config.card_limits[0].count_max, Some(5));
        assert!(config.admin_key_sha256.is_some());
        assert_eq!(config.admins.len(), 1);
        assert_eq!(config.admins[0].name, "admin");
        assert_eq!(config.operators.len(), 1);
        assert_eq!(config.operators[0].name, "ops");
        assert_eq!(config.security.lockout_failures, 10);
        assert_eq!(config.security.lockout_ms, 1_800_000);
        assert_eq!(config.audit.success_interval_ms, 60_000);
        let bistro = config
            .merchants
            .iter()
            .find(|m| m.id.as_str().starts_with("BISTRO"))
            .unwrap();
        assert_eq!(
            bistro.rate,
            Some(RateLimit {
                per_second: 100,
                burst: 200
            })
        );
        assert_eq!(
            format!("{:?}", config.vault),
            "VaultSecrets { active_key_id: 1, keys: [1], [redacted] }"
        );
    }

    #[test]
    fn the_shipped_postgres_and_bench_configurations_load() {
        let postgres = include_str!("../../../config/switch.postgres.toml");
        let error = parse(postgres, &no_env).unwrap_err().to_string();
        assert!(
            error
                .starts_with("switch.toml: storage.database_url: backend \"postgres\" needs a URL"),
            "{error}"
        );
        let overrides = Overrides {
            database_url: Some("postgres://switch@127.0.0.1:5432/switch".to_owned()),
            ..Overrides::default()
        };
        let config =
            Config::parse(postgres, Path::new("switch.toml"), &overrides, &no_env).unwrap();
        assert_eq!(config.storage.backend, Backend::Postgres);
        assert_eq!(config.storage.writer_connections, 2);
        assert!(
            !format!("{:?}", config.storage).contains("127.0.0.1"),
            "the URL is never printed"
        );
        let from_env = postgres.replace(
            "[storage]\n",
            "[storage]\ndatabase_url = \"env:SWITCH_DATABASE_URL\"\n",
        );
        let env =
            |name: &str| (name == "SWITCH_DATABASE_URL").then(|| "postgres://a@b/c".to_owned());
        assert_eq!(
            parse(&from_env, &env)
                .unwrap()
                .storage
                .database_url
                .as_deref(),
            Some("postgres://a@b/c")
        );
        let bench = parse(include_str!("../../../config/bench.toml"), &no_env).unwrap();
        assert_eq!(bench.storage.backend, Backend::Sqlite);
        let bench_postgres = Config::parse(
            include_str!("../../../config/bench.postgres.toml"),
            Path::new("bench.postgres.toml"),
            &overrides,
            &no_env,
        )
        .unwrap();
        assert_eq!(bench_postgres.storage.backend, Backend::Postgres);
        let fleet_overrides = Overrides {
            redis_url: Some("redis://127.0.0.1:6379".to_owned()),
            ..overrides.clone()
        };
        let bench_fleet = Config::parse(
            include_str!("../../../config/bench.fleet.toml"),
            Path::new("bench.fleet.toml"),
            &fleet_overrides,
            &no_env,
        )
        .unwrap();
        assert_eq!(bench_fleet.storage.backend, Backend::Postgres);
        assert!(bench_fleet.fleet.is_some());
    }

    #[test]
    fn fleet_mode_needs_a_redis_url_and_defaults_to_declining() {
        let single = parse(SHIPPED, &no_env).unwrap();
        assert!(single.fleet.is_none(), "no [fleet]: one node");
        let fleet_file = include_str!("../../../config/switch.fleet.toml");
        let database_only = Overrides {
            database_url: Some("postgres://a@b/c".to_owned()),
            ..Overrides::default()
        };
        let error = Config::parse(fleet_file, Path::new("fleet.toml"), &database_only, &no_env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("fleet.redis_url"), "{error}");
        let overrides = Overrides {
            database_url: Some("postgres://a@b/c".to_owned()),
            redis_url: Some("redis://:secret@127.0.0.1:6379/".to_owned()),
            ..Overrides::default()
        };
        let config =
            Config::parse(fleet_file, Path::new("fleet.toml"), &overrides, &no_env).unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.on_redis_down, OnRedisDown::Decline);
        assert_eq!(fleet.timeout_ms, 200);
        assert!(!format!("{fleet:?}").contains("secret"), "never printed");
        // REDIS_URL without [fleet] (a test environment exports it for
        // every test) leaves a single node alone.
        let config = Config::parse(SHIPPED, Path::new("switch.toml"), &overrides, &no_env).unwrap();
        assert!(config.fleet.is_none());
        let local = SHIPPED.to_owned()
            + "\n[fleet]\nredis_url = \"env:R\"\non_redis_down = \"local\"\ntimeout_ms = 50\n";
        let env = |name: &str| (name == "R").then(|| "redis://r/".to_owned());
        let fleet = parse(&local, &env).unwrap().fleet.unwrap();
        assert_eq!(fleet.redis_url, "redis://r/");
        assert_eq!(fleet.on_redis_down, OnRedisDown::Local);
        assert_eq!(fleet.timeout_ms, 50);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            iso_listen: Some("127.0.0.1:0".to_owned()),
            http_listen: Some("127.0.0.1:9".to_owned()),
            data_dir: Some(PathBuf::from("/tmp/node-2")),
            database_url: None,
            redis_url: None,
        };
        let config = Config::parse(SHIPPED, Path::new("switch.toml"), &overrides, &no_env).unwrap();
        assert_eq!(config.iso.listen.map(|a| a.port()), Some(0));
        assert_eq!(config.http.listen.port(), 9);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/node-2"));
    }

    #[test]
    fn production_takes_keys_from_the_environment_only() {
        let production = SHIPPED.replace("mode = \"dev\"", "mode = \"production\"");
        let error = parse(&production, &no_env).unwrap_err().to_string();
        assert!(
            error.starts_with("switch.toml: vault.encryption_keys.1: a `dev:` key is refused"),
            "{error}"
        );

        let from_env = production
            .replace(
                "\"dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
                "\"env:SWITCH_TOKENIZATION_KEY\"",
            )
            .replace(
                "\"dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"",
                "\"env:SWITCH_VAULT_KEY_1\"",
            );
        let error = parse(&from_env, &no_env).unwrap_err().to_string();
        assert_eq!(
            error,
            "switch.toml: vault.encryption_keys.1: environment variable SWITCH_VAULT_KEY_1 is not set"
        );
        let from_env = without_dev_api_keys(&from_env);
        let env = |name: &str| match name {
            "SWITCH_TOKENIZATION_KEY" => Some("ab".repeat(32)),
            "SWITCH_VAULT_KEY_1" => Some("cd".repeat(32)),
            _ => None,
        };
        let config = parse(&from_env, &env).unwrap();
        assert_eq!(config.vault.tokenization_key, [0xAB; 32]);
        let short = |name: &str| {
            (name == "SWITCH_VAULT_KEY_1")
                .then(|| "cd".to_owned())
                .or_else(|| env(name))
        };
        let error = parse(&from_env, &short).unwrap_err().to_string();
        assert!(error.contains("must be 64 hex digits"), "{error}");
        let literal = production.replace("\"dev:2021", "\"2021");
        assert!(
            parse(&literal, &no_env)
                .unwrap_err()
                .to_string()
                .contains("keys are never written in the file")
        );
    }

    /// The shipped file with its published API key digests replaced.
    fn without_dev_api_keys(text: &str) -> String {
        let mut text = text.to_owned();
        for (i, (_, hex)) in DEV_SECRETS.iter().enumerate().skip(2) {
            text = text.replace(hex, &format!("{i:064x}"));
        }
        text
    }

    #[test]
    fn production_refuses_the_published_dev_secrets_however_given() {
        let production = SHIPPED
            .replace("mode = \"dev\"", "mode = \"production\"")
            .replace(
                "\"dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
                "\"env:T\"",
            )
            .replace(
                "\"dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"",
                "\"env:K\"",
            );
        let fresh = |name: &str| match name {
            "T" => Some("ab".repeat(32)),
            "K" => Some("cd".repeat(32)),
            _ => None,
        };
        // The published API key digests are still in the file.
        let error = parse(&production, &fresh).unwrap_err().to_string();
        assert!(
            error.contains(".api_key_sha256: is the SHA-256 of the development"),
            "{error}"
        );
        let production = without_dev_api_keys(&production);
        assert!(parse(&production, &fresh).is_ok());
        for (name, value, key) in [
            ("T", DEV_SECRETS[0].1, "vault.tokenization_key"),
            ("K", DEV_SECRETS[1].1, "vault.encryption_keys.1"),
            ("K", DEV_SECRETS[0].1, "vault.encryption_keys.1"),
        ] {
            let env = |asked: &str| {
                if asked == name {
                    Some(value.to_owned())
                } else {
                    fresh(asked)
                }
            };
            let error = parse(&production, &env).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("switch.toml: {key}: is the development")),
                "{error}"
            );
            assert!(error.contains("production"), "{error}");
            assert!(
                !error.contains(value),
                "the key itself is never printed: {error}"
            );
        }
        // Dev mode still takes them.
        assert!(parse(SHIPPED, &no_env).is_ok());
    }

    #[test]
    fn production_refuses_a_password_written_in_the_file() {
        assert!(url_has_password("postgres://switch:secret@db:5432/switch"));
        assert!(url_has_password("redis://:secret@127.0.0.1:6379/"));
        assert!(url_has_password("postgres://db/switch?user=a&password=b"));
        assert!(!url_has_password("postgres://switch@db:5432/switch"));
        assert!(!url_has_password("redis://127.0.0.1:6379/"));
        let production = without_dev_api_keys(
            &SHIPPED
                .replace("mode = \"dev\"", "mode = \"production\"")
                .replace(
                    "\"dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
                    "\"env:T\"",
                )
                .replace(
                    "\"dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"",
                    "\"env:K\"",
                ),
        );
        let env = |name: &str| match name {
            "T" => Some("ab".repeat(32)),
            "K" => Some("cd".repeat(32)),
            "DB" => Some("postgres://switch:secret@db/switch".to_owned()),
            _ => None,
        };
        let literal = format!(
            "{production}\n[storage]\nbackend = \"postgres\"\ndatabase_url = \"postgres://switch:secret@db/switch\"\n"
        );
        let error = parse(&literal, &env).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "switch.toml: storage.database_url: a password written in the file is refused"
            ),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
        let from_env = literal.replace("\"postgres://switch:secret@db/switch\"", "\"env:DB\"");
        assert!(parse(&from_env, &env).is_ok());
        let no_password = literal.replace("switch:secret@", "switch@");
        assert!(parse(&no_password, &env).is_ok());
        let redis = format!("{production}\n[fleet]\nredis_url = \"redis://:pw@r:6379/\"\n");
        let error = parse(&redis, &env).unwrap_err().to_string();
        assert!(
            error.contains("fleet.redis_url: a password written"),
            "{error}"
        );
    }

    #[test]
    fn the_shipped_tls_configuration_loads() {
        let config = parse(include_str!("../../../config/switch.tls.toml"), &no_env).unwrap();
        let iso_tls = config.iso.tls.unwrap();
        assert_eq!(iso_tls.listen.port(), 8584);
        assert_eq!(iso_tls.client_ca, PathBuf::from("dev-certs/ca.pem"));
        assert!(config.http.tls.is_some());
        assert_eq!(config.acquirers[0].name, "north");
    }

    #[test]
    fn tls_listeners_and_acquirers_are_checked() {
        let tls = SHIPPED.replace(
            "[http]\n",
            "[iso.tls]\nlisten = \"127.0.0.1:8584\"\ncertificate = \"s.pem\"\nprivate_key = \"s.key\"\nclient_ca = \"ca.pem\"\n\n[http]\n",
        ) + "\n[acquirers.north]\ncertificate_subject = \"acq-north\"\nmerchants = [\"ACME0000001\"]\nterminals = [\"TERM0001\"]\n";
        let config = parse(&tls, &no_env).unwrap();
        let iso_tls = config.iso.tls.unwrap();
        assert_eq!(iso_tls.listen.port(), 8584);
        assert_eq!(iso_tls.handshake_timeout_ms, 5_000);
        assert_eq!(config.acquirers.len(), 1);
        assert_eq!(config.acquirers[0].name, "north");
        assert_eq!(
            config.acquirers[0].merchants.as_deref(),
            Some(&[pad("ACME0000001").unwrap()][..])
        );
        // The plain listener may be left out once TLS takes acquirers.
        let tls_only = tls.replace("listen = \"127.0.0.1:8583\"\n", "");
        assert!(parse(&tls_only, &no_env).unwrap().iso.listen.is_none());
        let neither = SHIPPED.replace("listen = \"127.0.0.1:8583\"\n", "");
        let error = parse(&neither, &no_env).unwrap_err().to_string();
        assert!(error.starts_with("switch.toml: iso.listen: "), "{error}");

        for (text, key) in [
            (
                SHIPPED.to_owned() + "\n[acquirers.north]\ncertificate_subject = \"acq-north\"\n",
                "acquirers.north",
            ),
            (
                // TLS on, but no acquirer its certificates could name.
                tls.split("\n[acquirers.north]").next().unwrap().to_owned(),
                "iso.tls",
            ),
            (
                tls.clone() + "\n[acquirers.again]\ncertificate_subject = \"ACQ-NORTH\"\n",
                "acquirers.north.certificate_subject",
            ),
            (
                tls.replace("[\"TERM0001\"]", "[\"TERMINAL_TOO_LONG\"]"),
                "acquirers.north.terminals",
            ),
            (
                tls.replace("handshake_timeout_ms", "x").replace(
                    "client_ca = \"ca.pem\"\n",
                    "client_ca = \"ca.pem\"\nhandshake_timeout_ms = 0\n",
                ),
                "iso.tls.handshake_timeout_ms",
            ),
        ] {
            let error = parse(&text, &no_env).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("switch.toml: {key}: ")),
                "{key}: {error}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            (
                "listen = \"127.0.0.1:8583\"",
                "listen = \"localhost\"",
                "iso.listen",
            ),
            (
                "connections_max = 1024",
                "connections_max = 0",
                "iso.connections_max",
            ),
            (
                "active_key_id = 1",
                "active_key_id = 2",
                "vault.active_key_id",
            ),
            (
                "{ from = \"400000\", to = \"400099\" }",
                "{ from = \"4000\", to = \"400099\" }",
                "rules.blocked_bins[0]",
            ),
            (
                "allowed_mccs = [\"5812\", \"5814\"]",
                "allowed_mccs = [\"58\"]",
                "merchants.BISTRO00001.allowed_mccs",
            ),
            (
                "[merchants.BISTRO00001]",
                "[merchants.BISTRO00001_TOO_LONG]",
                "merchants.BISTRO00001_TOO_LONG",
            ),
        ] {
            assert!(SHIPPED.contains(from), "{from}");
            let error = parse(&SHIPPED.replace(from, to), &no_env)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("switch.toml: {key}: ")),
                "{key}: {error}"
            );
        }
        for (from, to, key) in [
            (
                "lockout_failures = 10",
                "lockout_failures = 0",
                "security.lockout_failures",
            ),
            (
                "rate_per_second = 100",
                "rate_per_second = 0",
                "merchants.BISTRO00001.rate_per_second",
            ),
            (
                "rate_per_second = 100",
                "rate_per_seconds = 100",
                "unknown field `rate_per_seconds`",
            ),
            ("[operators.ops]", "[operators.\"o p\"]", "operators.o p"),
            (
                "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca",
                "df76ff796f70d2c9cb055ea6280553caa27eda26b70e01082c160de75a05a4a9",
                "operators.ops.api_key_sha256",
            ),
        ] {
            assert!(SHIPPED.contains(from), "{from}");
            let error = parse(&SHIPPED.replace(from, to), &no_env)
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(error.starts_with("switch.toml: "), "{error}");
        }
        let only_burst = SHIPPED.replace("rate_per_second = 100       #", "#");
        let error = parse(&only_burst, &no_env).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "switch.toml: merchants.BISTRO00001.rate_burst: needs rate_per_second"
            ),
            "{error}"
        );
        // A default rate in [security] applies to a merchant without its own.
        let default_rate = SHIPPED.replace(
            "lockout_origins_max = 100000",
            "lockout_origins_max = 100000\nrate_per_second = 7",
        );
        let config = parse(&default_rate, &no_env).unwrap();
        let acme = config
            .merchants
            .iter()
            .find(|m| m.id.as_str().starts_with("ACME"))
            .unwrap();
        assert_eq!(
            acme.rate,
            Some(RateLimit {
                per_second: 7,
                burst: 7
            })
        );
        let typo = parse(&SHIPPED.replace("[shards]", "[shard]"), &no_env)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `shard`"), "{typo}");
    }

    /// Every secret the shipped development configurations publish is one
    /// production refuses: a key added to config/*.toml without being
    /// listed in DEV_SECRETS fails here.
    #[test]
    fn every_published_development_secret_is_refused_in_production() {
        fn walk(value: &toml::Value, found: &mut Vec<String>) {
            match value {
                toml::Value::String(text) => {
                    let hex = text.strip_prefix("dev:").unwrap_or(text);
                    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        found.push(hex.to_ascii_lowercase());
                    }
                }
                toml::Value::Table(table) => table.values().for_each(|v| walk(v, found)),
                toml::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        for text in [
            include_str!("../../../config/switch.toml"),
            include_str!("../../../config/bench.toml"),
            include_str!("../../../config/bench.postgres.toml"),
            include_str!("../../../config/bench.fleet.toml"),
            include_str!("../../../config/switch.postgres.toml"),
            include_str!("../../../config/switch.fleet.toml"),
        ] {
            walk(&toml::from_str::<toml::Value>(text).unwrap(), &mut found);
        }
        assert!(found.len() >= 6, "{found:?}");
        for hex in found {
            assert!(
                DEV_SECRETS.iter().any(|(_, known)| *known == hex),
                "{hex} is published in config/ but not in DEV_SECRETS"
            );
        }
    }
}
