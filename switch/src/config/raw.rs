//! The configuration file as written: one serde type per TOML section, with
//! the defaults of the keys that may be left out. Nothing here is checked
//! beyond its type; the section files turn each of these into the value the
//! switch uses, and every error names its key.
//!
//! `deny_unknown_fields` on every section refuses a misspelt key instead of
//! silently falling back to its default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::check::{ConfigError, Mode};
use crate::fleet::OnRedisDown;

/// Where the journal and vault live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A SQLite file under `data_dir`: no server.
    Sqlite,
    /// The segment log (the default): append-only files
    /// `journal-NNNNNNNN.seg` under `data_dir`, one write and one
    /// fdatasync per batch, the open segment indexed in memory and each
    /// closed one in an index file beside it. No server.
    Log,
    /// PostgreSQL 15 or Aurora PostgreSQL at `storage.database_url`.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) mode: Mode,
    pub(super) data_dir: PathBuf,
    pub(super) iso: RawIso,
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) journal: RawJournal,
    pub(super) vault: RawVault,
    #[serde(default)]
    pub(super) shards: RawShards,
    #[serde(default)]
    pub(super) runtime: RawRuntime,
    pub(super) rules: RawRules,
    #[serde(default)]
    pub(super) card_limits: RawCardLimits,
    #[serde(default)]
    pub(super) duplicates: RawDuplicates,
    #[serde(default)]
    pub(super) admin: Option<RawStaffKey>,
    #[serde(default)]
    pub(super) admins: BTreeMap<String, RawStaffKey>,
    #[serde(default)]
    pub(super) operators: BTreeMap<String, RawStaffKey>,
    #[serde(default)]
    pub(super) merchants: BTreeMap<String, RawMerchant>,
    #[serde(default)]
    pub(super) security: RawSecurity,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) fleet: Option<RawFleet>,
    #[serde(default)]
    pub(super) acquirers: BTreeMap<String, RawAcquirer>,
    #[serde(default)]
    pub(super) overload: RawOverload,
}

impl RawConfig {
    /// Parses the file's text; an error is one line: where, then what
    /// (toml's own `Display` spans several lines, quoting the file).
    pub(super) fn from_toml(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|error| {
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
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIso {
    /// The plain TCP listener; may be left out when `[iso.tls]` is set.
    pub(super) listen: Option<String>,
    #[serde(default = "default_spec")]
    pub(super) spec: String,
    #[serde(default = "default_connections_max")]
    pub(super) connections_max: usize,
    #[serde(default = "default_in_flight_max")]
    pub(super) in_flight_max: usize,
    #[serde(default = "default_idle_timeout_ms")]
    pub(super) idle_timeout_ms: u64,
    #[serde(default = "default_write_timeout_ms")]
    pub(super) write_timeout_ms: u64,
    #[serde(default = "default_deadline_ms")]
    pub(super) deadline_ms: u64,
    /// Overrides the dialect's largest frame.
    pub(super) frame_length_max: Option<usize>,
    pub(super) tls: Option<RawIsoTls>,
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
fn default_write_timeout_ms() -> u64 {
    5_000
}
fn default_deadline_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIsoTls {
    pub(super) listen: String,
    pub(super) certificate: PathBuf,
    pub(super) private_key: PathBuf,
    pub(super) client_ca: PathBuf,
    #[serde(default = "default_handshake_timeout_ms")]
    pub(super) handshake_timeout_ms: u64,
    #[serde(default = "default_connections_max")]
    pub(super) connections_max: usize,
    /// `iso.deadline_ms` when left out.
    pub(super) deadline_ms: Option<u64>,
}

fn default_handshake_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcquirer {
    pub(super) certificate_subject: String,
    pub(super) merchants: Option<Vec<String>>,
    pub(super) terminals: Option<Vec<String>>,
    /// `iso.tls.deadline_ms` when left out.
    pub(super) deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: String,
    #[serde(default = "default_body_bytes_max")]
    pub(super) body_bytes_max: usize,
    #[serde(default = "default_header_read_timeout_ms")]
    pub(super) header_read_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    pub(super) request_timeout_ms: u64,
    #[serde(default = "default_write_timeout_ms")]
    pub(super) write_timeout_ms: u64,
    #[serde(default = "default_connections_max")]
    pub(super) connections_max: usize,
    #[serde(default = "default_deadline_ms")]
    pub(super) deadline_ms: u64,
    pub(super) tls: Option<RawHttpTls>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpTls {
    pub(super) certificate: PathBuf,
    pub(super) private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    #[serde(default = "default_backend")]
    pub(super) backend: Backend,
    pub(super) database_url: Option<String>,
    #[serde(default = "default_writer_connections")]
    pub(super) writer_connections: usize,
    #[serde(default = "default_read_connections")]
    pub(super) read_connections: u32,
    #[serde(default = "default_connect_timeout_ms")]
    pub(super) connect_timeout_ms: u32,
    #[serde(default = "default_statement_timeout_ms")]
    pub(super) statement_timeout_ms: u32,
    /// `backend = "log"`: where a segment is closed and the next begun.
    #[serde(default = "default_segment_bytes")]
    pub(super) segment_bytes: u64,
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
            segment_bytes: default_segment_bytes(),
        }
    }
}

fn default_backend() -> Backend {
    Backend::Log
}
fn default_segment_bytes() -> u64 {
    storage::log::SEGMENT_BYTES_DEFAULT
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJournal {
    #[serde(default = "default_queue_capacity")]
    pub(super) queue_capacity: usize,
    #[serde(default = "default_batch_rows_max")]
    pub(super) batch_rows_max: usize,
}

impl Default for RawJournal {
    fn default() -> RawJournal {
        RawJournal {
            queue_capacity: default_queue_capacity(),
            batch_rows_max: default_batch_rows_max(),
        }
    }
}

fn default_queue_capacity() -> usize {
    65_536
}
fn default_batch_rows_max() -> usize {
    1_024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    pub(super) tokenization_key: String,
    pub(super) active_key_id: u32,
    pub(super) encryption_keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) redis_url: Option<String>,
    #[serde(default = "default_on_redis_down")]
    pub(super) on_redis_down: OnRedisDown,
    #[serde(default = "default_fleet_timeout_ms")]
    pub(super) timeout_ms: u64,
}

fn default_on_redis_down() -> OnRedisDown {
    OnRedisDown::Decline
}
fn default_fleet_timeout_ms() -> u64 {
    200
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShards {
    #[serde(default)]
    pub(super) count: usize,
    #[serde(default = "default_mailbox_capacity")]
    pub(super) mailbox_capacity: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    /// 0: one per core.
    #[serde(default)]
    pub(super) worker_threads: usize,
}

/// `[overload]`: the admission limit (`switch::admission::LoadLimit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverload {
    /// Absent: the journal's default (`decisions::overload`).
    #[serde(default)]
    pub(super) latency_target_ms: Option<u64>,
    #[serde(default = "default_limit_initial")]
    pub(super) limit_initial: u32,
    #[serde(default = "default_limit_min")]
    pub(super) limit_min: u32,
    #[serde(default = "default_limit_max")]
    pub(super) limit_max: u32,
    #[serde(default = "default_stall_room_ms")]
    pub(super) stall_room_ms: u64,
}

impl Default for RawOverload {
    fn default() -> Self {
        RawOverload {
            latency_target_ms: None,
            limit_initial: default_limit_initial(),
            limit_min: default_limit_min(),
            limit_max: default_limit_max(),
            stall_room_ms: default_stall_room_ms(),
        }
    }
}

fn default_limit_initial() -> u32 {
    4_096
}
fn default_limit_min() -> u32 {
    16
}
fn default_limit_max() -> u32 {
    65_536
}
fn default_stall_room_ms() -> u64 {
    500
}

fn default_mailbox_capacity() -> usize {
    4_096
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRules {
    pub(super) amount_max: u64,
    #[serde(default)]
    pub(super) blocked_bins: Vec<RawBinRange>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinRange {
    pub(super) from: String,
    pub(super) to: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCardLimits {
    #[serde(default)]
    pub(super) per_minute: RawWindowLimit,
    #[serde(default)]
    pub(super) per_hour: RawWindowLimit,
    #[serde(default)]
    pub(super) per_day: RawWindowLimit,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindowLimit {
    pub(super) count_max: Option<u32>,
    pub(super) amount_max: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDuplicates {
    #[serde(default = "default_duplicate_window_ms")]
    pub(super) window_ms: u64,
    #[serde(default = "default_duplicate_entries_max")]
    pub(super) entries_max: usize,
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

/// `[admin]`, `[admins.NAME]` and `[operators.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaffKey {
    pub(super) api_key_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMerchant {
    pub(super) api_key_sha256: Option<String>,
    pub(super) amount_max_per_transaction: Option<u64>,
    pub(super) daily_volume_max: Option<u64>,
    pub(super) allowed_mccs: Option<Vec<String>>,
    pub(super) tps_max: Option<u32>,
    pub(super) rate_per_second: Option<u32>,
    pub(super) rate_burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    #[serde(default = "default_lockout_failures")]
    pub(super) lockout_failures: u32,
    #[serde(default = "default_lockout_ms")]
    pub(super) lockout_ms: u64,
    #[serde(default = "default_lockout_origins_max")]
    pub(super) lockout_origins_max: usize,
    /// The admission rate of every merchant without its own.
    pub(super) rate_per_second: Option<u32>,
    pub(super) rate_burst: Option<u32>,
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
pub(super) struct RawAudit {
    #[serde(default = "default_audit_queue_capacity")]
    pub(super) queue_capacity: usize,
    #[serde(default = "default_audit_batch_entries_max")]
    pub(super) batch_entries_max: usize,
    #[serde(default = "default_audit_success_interval_ms")]
    pub(super) success_interval_ms: u64,
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
