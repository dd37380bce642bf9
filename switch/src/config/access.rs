//! Who may call the HTTP API and what is recorded about it: `[admin]`,
//! `[admins.NAME]` and `[operators.NAME]` (staff keys), one key per
//! principal across staff and merchants, `[security]` (lockout of client
//! origins after failed authentications) and `[audit]`.

use std::collections::BTreeMap;

use crate::ops::audit::AuditOptions;

use super::check::{Check, ConfigError};
use super::merchants::MerchantConfig;
use super::raw::{RawAudit, RawSecurity, RawStaffKey};

/// A named operator or admin credential: the name is what the audit log
/// records as the actor, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffKey {
    pub name: String,
    /// SHA-256 of the API key.
    pub api_key_sha256: [u8; 32],
}

/// The staff credentials, checked.
pub(super) struct Staff {
    /// `[admin]` (named "admin") and `[admins.NAME]`.
    pub(super) admins: Vec<StaffKey>,
    /// `[operators.NAME]`.
    pub(super) operators: Vec<StaffKey>,
}

/// Lockout of client origins after failed authentications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecuritySettings {
    /// Failed authentications from one origin within `lockout_ms` that lock it out.
    pub lockout_failures: u32,
    /// How long the failures are counted and the lockout lasts.
    pub lockout_ms: u64,
    /// Origins tracked at most (failures or lockouts), so many addresses
    /// cannot grow the table without end.
    pub lockout_origins_max: usize,
}

/// The audit log's queue and batches, and how often successes are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSettings {
    pub log: AuditOptions,
    /// A merchant key's successful authentications are recorded once per
    /// origin per interval, not once per request.
    pub success_interval_ms: u64,
}

/// `[admin]`, `[admins.NAME]` and `[operators.NAME]`. A name is what the
/// audit log shows, so it is a plain identifier; one key never serves two
/// principals, staff or merchant.
pub(super) fn staff(
    check: &Check,
    admin: Option<&RawStaffKey>,
    admins: &BTreeMap<String, RawStaffKey>,
    operators: &BTreeMap<String, RawStaffKey>,
    merchants: &[MerchantConfig],
) -> Result<Staff, ConfigError> {
    let admin_key_sha256 = admin
        .map(|admin| check.api_key_sha256("admin.api_key_sha256", &admin.api_key_sha256))
        .transpose()?;
    let mut admins = staff_keys(check, "admins", admins)?;
    if let Some(digest) = admin_key_sha256 {
        if admins.iter().any(|admin| admin.name == "admin") {
            return Err(check.error(
                "admins.admin",
                "the name `admin` is taken by the [admin] section",
            ));
        }
        admins.push(StaffKey {
            name: "admin".to_owned(),
            api_key_sha256: digest,
        });
    }
    let operators = staff_keys(check, "operators", operators)?;

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
            return Err(check.error(
                &format!("{key}.api_key_sha256"),
                format!("the same key as {first}: one key, one principal"),
            ));
        }
        seen.push((digest, key));
    }
    Ok(Staff { admins, operators })
}

/// The named keys of one section, `[SECTION.NAME]`.
fn staff_keys(
    check: &Check,
    section: &str,
    entries: &BTreeMap<String, RawStaffKey>,
) -> Result<Vec<StaffKey>, ConfigError> {
    let mut keys = Vec::new();
    for (name, entry) in entries {
        let key = format!("{section}.{name}");
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(check.error(&key, "a name is 1 to 32 letters, digits, `_` or `-`"));
        }
        keys.push(StaffKey {
            name: name.clone(),
            api_key_sha256: check
                .api_key_sha256(&format!("{key}.api_key_sha256"), &entry.api_key_sha256)?,
        });
    }
    Ok(keys)
}

/// `[security]`'s lockout; its default merchant rate is read with the
/// merchants.
pub(super) fn security(check: &Check, raw: &RawSecurity) -> Result<SecuritySettings, ConfigError> {
    Ok(SecuritySettings {
        lockout_failures: check.positive("security.lockout_failures", raw.lockout_failures)?,
        lockout_ms: check.positive("security.lockout_ms", raw.lockout_ms)?,
        lockout_origins_max: check
            .positive("security.lockout_origins_max", raw.lockout_origins_max)?,
    })
}

/// `[audit]`.
pub(super) fn audit(check: &Check, raw: &RawAudit) -> Result<AuditSettings, ConfigError> {
    Ok(AuditSettings {
        log: AuditOptions {
            queue_capacity: check.positive("audit.queue_capacity", raw.queue_capacity)?,
            batch_entries_max: check.positive("audit.batch_entries_max", raw.batch_entries_max)?,
        },
        success_interval_ms: raw.success_interval_ms,
    })
}
