//! `[merchants.ID]`: each merchant's API key and admission rate (for the
//! ingresses) and its limits (for the merchant actors), with the default
//! rate `[security]` gives merchants without their own.

use std::collections::{BTreeMap, HashMap};

use actors::MerchantLimits;
use protocol::domain::pad;
use protocol::ids::{MerchantId, Text};

use super::check::{Check, ConfigError};
use super::raw::{RawMerchant, RawSecurity};

/// A merchant's API key and admission rate; its limits are in
/// [`actors::ShardConfig::merchants`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantConfig {
    pub id: MerchantId,
    /// SHA-256 of the merchant's API key.
    pub api_key_sha256: Option<[u8; 32]>,
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

/// The merchants, checked: what the ingresses need and what the actors need.
pub(super) struct Merchants {
    pub(super) merchants: Vec<MerchantConfig>,
    pub(super) limits: HashMap<MerchantId, MerchantLimits>,
}

/// The admission rate `[security]` gives every merchant without its own.
pub(super) fn default_rate(
    check: &Check,
    raw: &RawSecurity,
) -> Result<Option<RateLimit>, ConfigError> {
    rate(check, "security", raw.rate_per_second, raw.rate_burst)
}

/// `[merchants.ID]`; a merchant without a rate takes `default_rate`.
pub(super) fn merchants(
    check: &Check,
    raw: &BTreeMap<String, RawMerchant>,
    default_rate: Option<RateLimit>,
) -> Result<Merchants, ConfigError> {
    let mut checked = Merchants {
        merchants: Vec::new(),
        limits: HashMap::new(),
    };
    for (id, merchant) in raw {
        let key = format!("merchants.{id}");
        let id: MerchantId = pad(id)
            .ok_or_else(|| check.error(&key, "a merchant id is 1 to 15 printable characters"))?;
        let allowed_mccs = merchant
            .allowed_mccs
            .as_ref()
            .map(|mccs| {
                mccs.iter()
                    .map(|mcc| {
                        Text::parse(mcc.as_bytes())
                            .filter(|_| mcc.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or_else(|| {
                                check.error(
                                    &format!("{key}.allowed_mccs"),
                                    format!("`{mcc}` is not 4 digits"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let api_key_sha256 = merchant
            .api_key_sha256
            .as_deref()
            .map(|hex| check.api_key_sha256(&format!("{key}.api_key_sha256"), hex))
            .transpose()?;
        let limits = MerchantLimits {
            amount_max_per_transaction: merchant
                .amount_max_per_transaction
                .map(|minor| check.amount(&format!("{key}.amount_max_per_transaction"), minor))
                .transpose()?,
            daily_volume_max: merchant
                .daily_volume_max
                .map(|minor| check.amount(&format!("{key}.daily_volume_max"), minor))
                .transpose()?,
            allowed_mccs,
            tps_max: merchant.tps_max,
        };
        let rate = rate(check, &key, merchant.rate_per_second, merchant.rate_burst)?;
        checked.merchants.push(MerchantConfig {
            id,
            api_key_sha256,
            rate: rate.or(default_rate),
        });
        checked.limits.insert(id, limits);
    }
    Ok(checked)
}

/// `rate_per_second` and `rate_burst` of the section at `key`.
fn rate(
    check: &Check,
    key: &str,
    per_second: Option<u32>,
    burst: Option<u32>,
) -> Result<Option<RateLimit>, ConfigError> {
    match (per_second, burst) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(check.error(&format!("{key}.rate_burst"), "needs rate_per_second")),
        (Some(per_second), burst) => {
            let per_second = check.positive(&format!("{key}.rate_per_second"), per_second)?;
            // Without a burst, one second's worth may come at once.
            let burst =
                check.positive(&format!("{key}.rate_burst"), burst.unwrap_or(per_second))?;
            Ok(Some(RateLimit { per_second, burst }))
        }
    }
}
