//! Secrets: one reader for every value that must not be written in the file
//! in production. `env:NAME` reads the environment variable NAME and
//! `file:PATH` reads a file (trimmed); a literal vault key must be marked
//! `dev:` and is refused unless `mode = "dev"`; a database or Redis URL may
//! be written in the file, but not with a password in production.
//!
//! In production the keys and API key digests published in
//! `config/switch.toml` are refused however they arrive (see
//! [`DEV_SECRETS`]): a copied development setting must not protect real
//! cards. API keys are stored in the file only as SHA-256 digests, which are
//! not secret, so they are written in the file and only checked against the
//! published ones.

use zeroize::Zeroizing;

use super::check::{Check, ConfigError, Mode};

/// The secrets published in `config/switch.toml` for development, by name.
/// Vault keys are compared as keys, API keys as the SHA-256 digests the file
/// stores.
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

impl Check<'_> {
    /// The text behind `env:NAME` or `file:PATH`; `None` when `value` is
    /// neither, so it is written in the file itself and the caller decides
    /// whether that is allowed.
    fn read_secret(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Option<Zeroizing<String>>, ConfigError> {
        if let Some(name) = value.strip_prefix("env:") {
            let text = (self.env)(name).ok_or_else(|| {
                self.error(key, format!("environment variable {name} is not set"))
            })?;
            Ok(Some(Zeroizing::new(text)))
        } else if let Some(path) = value.strip_prefix("file:") {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|error| self.error(key, format!("{path} cannot be read: {error}")))?,
            );
            Ok(Some(Zeroizing::new(text.trim().to_owned())))
        } else {
            Ok(None)
        }
    }

    /// A 32-byte key, 64 hex digits: from `env:NAME` or `file:PATH`, or a
    /// `dev:HEX` literal in dev mode. Never a published development key in
    /// production.
    pub(super) fn key(&self, key: &str, value: &str) -> Result<[u8; 32], ConfigError> {
        let hex = match (self.read_secret(key, value)?, value.strip_prefix("dev:")) {
            (Some(text), _) => text,
            (None, Some(literal)) if self.mode == Mode::Dev => Zeroizing::new(literal.to_owned()),
            (None, Some(_)) => {
                return Err(self.error(
                    key,
                    "a `dev:` key is refused outside mode = \"dev\"; use env:NAME or file:PATH",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    key,
                    "must be env:NAME, file:PATH, or (in dev mode only) dev:HEX; keys are never written in the file",
                ));
            }
        };
        let bytes = Zeroizing::new(
            protocol::encoding::from_hex(hex.trim())
                .ok_or_else(|| self.error(key, "must be 64 hex digits (32 bytes)"))?,
        );
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| self.error(key, "must be 64 hex digits (32 bytes)"))?;
        if let Some(name) = self.published_in_production(&secret) {
            return Err(self.error(
                key,
                format!(
                    "is {name}, published in config/switch.toml; refused in mode = \"production\": generate a new key"
                ),
            ));
        }
        Ok(secret)
    }

    /// A database or Redis URL, which may hold a password: from `env:NAME`
    /// or `file:PATH`, or written in the file without a password in
    /// production.
    pub(super) fn url(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        match self.read_secret(key, value)? {
            Some(url) => Ok(url.as_str().to_owned()),
            None if self.mode == Mode::Production && url_has_password(value) => Err(self.error(
                key,
                "a password written in the file is refused in mode = \"production\"; use env:NAME or file:PATH",
            )),
            None => Ok(value.to_owned()),
        }
    }

    /// The SHA-256 digest of an API key, 64 hex digits written in the file.
    /// Never the digest of a published development key in production.
    pub(super) fn api_key_sha256(&self, key: &str, hex: &str) -> Result<[u8; 32], ConfigError> {
        let digest: [u8; 32] = protocol::encoding::from_hex(hex)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| self.error(key, "must be the SHA-256 of the key, 64 hex digits"))?;
        if let Some(name) = self.published_in_production(&digest) {
            return Err(self.error(
                key,
                format!(
                    "is the SHA-256 of {name}, published in config/switch.toml; refused in mode = \"production\""
                ),
            ));
        }
        Ok(digest)
    }

    /// The name of the published development secret equal to `value`, in
    /// production only: dev mode takes them.
    fn published_in_production(&self, value: &[u8; 32]) -> Option<&'static str> {
        if self.mode != Mode::Production {
            return None;
        }
        DEV_SECRETS.iter().find_map(|(name, hex)| {
            let known = protocol::encoding::from_hex(hex)?;
            (known.as_slice() == value.as_slice()).then_some(*name)
        })
    }
}

/// Whether a database or Redis URL carries a password: `scheme://user:pw@`
/// or a `password=` parameter.
pub(super) fn url_has_password(url: &str) -> bool {
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
