//! `[vault]`: the keys that turn PANs into tokens and seal them, as the
//! vault takes them.

use storage::VaultKeys;

use super::check::{Check, ConfigError};
use super::raw::RawVault;

/// `[vault]`: the tokenization key and the encryption keys by id, each from
/// the environment or a file (or a `dev:` literal in dev mode).
pub(super) fn vault(check: &Check, raw: &RawVault) -> Result<VaultKeys, ConfigError> {
    let mut encryption_keys = Vec::new();
    for (id, value) in &raw.encryption_keys {
        let key = format!("vault.encryption_keys.{id}");
        let id: u32 = id
            .parse()
            .map_err(|_| check.error(&key, "key ids are numbers"))?;
        encryption_keys.push((id, check.key(&key, value)?));
    }
    if !encryption_keys
        .iter()
        .any(|(id, _)| *id == raw.active_key_id)
    {
        return Err(check.error(
            "vault.active_key_id",
            format!("no key {} in vault.encryption_keys", raw.active_key_id),
        ));
    }
    Ok(VaultKeys {
        tokenization_key: check.key("vault.tokenization_key", &raw.tokenization_key)?,
        encryption_keys,
        active_key_id: raw.active_key_id,
    })
}
