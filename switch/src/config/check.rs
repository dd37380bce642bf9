//! What every section's check shares: the mode, the error that names the file and
//! the key, and the checks of one value (an address, a number that must not
//! be zero, an amount). The readers of secrets (`env:`, `file:`, `dev:`) are
//! in [`super::secret`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use protocol::Amount;
use serde::Deserialize;

/// Whether development shortcuts (literal `dev:` keys) are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dev,
    Production,
}

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

/// The checker every section is read with: the file it names in errors, the
/// mode (which decides whether `dev:` secrets are allowed), and the
/// environment that `env:NAME` secrets are looked up in.
pub(super) struct Check<'a> {
    pub(super) file: &'a Path,
    pub(super) mode: Mode,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl Check<'_> {
    /// The error for the value at `key`.
    pub(super) fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            file: self.file.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// A socket address such as `127.0.0.1:8583`.
    pub(super) fn address(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.error(
                key,
                format!("`{text}` is not an address such as 127.0.0.1:8583"),
            )
        })
    }

    /// A count, size or duration that zero would make useless (a queue that
    /// holds nothing, a timeout that fires at once).
    pub(super) fn positive<T: PartialEq + From<u8>>(
        &self,
        key: &str,
        value: T,
    ) -> Result<T, ConfigError> {
        if value == T::from(0) {
            Err(self.error(key, "must be at least 1"))
        } else {
            Ok(value)
        }
    }

    /// An amount in minor units.
    pub(super) fn amount(&self, key: &str, minor: u64) -> Result<Amount, ConfigError> {
        Amount::from_minor(minor).ok_or_else(|| self.error(key, "must be at most 999999999999"))
    }
}
