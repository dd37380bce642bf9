//! `[fleet]`: several nodes sharing card velocity in Redis.

use crate::fleet::OnRedisDown;

use super::check::{Check, ConfigError};
use super::raw::RawFleet;

/// Several nodes sharing card velocity in Redis: on with a `[fleet]`
/// section. As `DATABASE_URL` only matters with `backend = "postgres"`,
/// `--redis-url` / `REDIS_URL` only gives the URL: a test environment that
/// exports REDIS_URL does not turn every single-node test into a fleet.
#[derive(Clone, PartialEq, Eq)]
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

/// `[fleet]`, if the file has one; `redis_url` is `--redis-url` /
/// `REDIS_URL` when given, over the file's.
pub(super) fn fleet(
    check: &Check,
    raw: Option<&RawFleet>,
    redis_url: Option<&str>,
) -> Result<Option<FleetSettings>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let redis_url = match (redis_url, &raw.redis_url) {
        (Some(url), _) => url.to_owned(),
        (None, Some(value)) => check.url("fleet.redis_url", value)?,
        (None, None) => {
            return Err(check.error(
                "fleet.redis_url",
                "[fleet] needs a Redis URL: set it here (env:NAME or file:PATH), or pass --redis-url or REDIS_URL",
            ));
        }
    };
    Ok(Some(FleetSettings {
        redis_url,
        on_redis_down: raw.on_redis_down,
        timeout_ms: check.positive("fleet.timeout_ms", raw.timeout_ms)?,
    }))
}
