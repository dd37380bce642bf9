//! Who a request is from: the roles a payments platform grants, the
//! principal a configured API key stands for, and the match of a request's
//! `Authorization` header against the configured keys. The door
//! (`access.rs`) matches the key; the handlers receive the principal.

use axum::http::{HeaderMap, header};
use protocol::ids::MerchantId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// A role, as a payments platform grants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its own authorizations and transactions only.
    Merchant,
    /// Reads every transaction and the metrics; never card data.
    Operator,
    /// Configuration, key rotation, the audit log.
    Admin,
}

/// Who a request is from, once its key matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Principal {
    Merchant(MerchantId),
    Operator,
    Admin,
}

impl Principal {
    pub(super) fn role(self) -> Role {
        match self {
            Principal::Merchant(_) => Role::Merchant,
            Principal::Operator => Role::Operator,
            Principal::Admin => Role::Admin,
        }
    }
}

/// The name of the operator or admin a request is from, as the audit log
/// shows it (`operator:NAME`), for handlers that record who acted.
#[derive(Debug, Clone)]
pub(super) struct StaffName(pub(super) String);

/// A configured key: its digest, whose it is, and the name the audit log
/// shows (`merchant:ID`, `operator:NAME`, `admin:NAME`), never the key.
pub(super) struct ApiKey {
    sha256: [u8; 32],
    pub(super) principal: Principal,
    pub(super) actor: String,
}

/// What a request's `Authorization` header held.
pub(super) enum Credential {
    Missing,
    Wrong,
    /// The index of the key in [`ApiKeys`].
    Matched(usize),
}

/// Every configured key: merchants', operators' and admins'.
pub(super) struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    pub(super) fn from_config(config: &Config) -> ApiKeys {
        let mut keys: Vec<ApiKey> = config
            .merchants
            .iter()
            .filter_map(|m| {
                m.api_key_sha256.map(|sha256| ApiKey {
                    sha256,
                    principal: Principal::Merchant(m.id),
                    actor: format!("merchant:{}", m.id.as_str().trim_end()),
                })
            })
            .collect();
        keys.extend(config.operators.iter().map(|o| ApiKey {
            sha256: o.api_key_sha256,
            principal: Principal::Operator,
            actor: format!("operator:{}", o.name),
        }));
        keys.extend(config.admins.iter().map(|a| ApiKey {
            sha256: a.api_key_sha256,
            principal: Principal::Admin,
            actor: format!("admin:{}", a.name),
        }));
        ApiKeys { keys }
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn get(&self, index: usize) -> Option<&ApiKey> {
        self.keys.get(index)
    }

    /// Which key a request's `Authorization: Bearer` header holds. Keys are
    /// compared as SHA-256 digests in constant time, against every
    /// configured key, so timing tells nothing about which key was close.
    pub(super) fn credential(&self, headers: &HeaderMap) -> Credential {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credential::Missing;
        };
        let Some(key) = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Credential::Wrong;
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every configured key is compared, whatever matched first.
        let mut found = None;
        for (index, configured) in self.keys.iter().enumerate() {
            if bool::from(configured.sha256.ct_eq(&digest)) {
                found = Some(index);
            }
        }
        found.map_or(Credential::Wrong, Credential::Matched)
    }
}
