//! What the HTTP handlers and the door in front of them share: the engine,
//! the configured keys (with the engine's policy of the same
//! configuration, swapped together by a reload), the lockout, the audit
//! log, and the configuration's and the vault's controls. Built once by
//! `serve`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::Clock;
use arc_swap::ArcSwap;
use protocol::domain::Channel;

use crate::admission::Lockout;
use crate::clock::{Deadline, Stopwatch};
use crate::config::Config;
use crate::engine::{Engine, Policy};
use crate::ingress::http::principal::ApiKeys;
use crate::ops::audit::Audit;
use crate::ops::metrics::Timeline;
use crate::ops::reload::ConfigControl;
use crate::ops::vault::VaultControl;

/// One configuration as the door sees it: the API keys and the engine's
/// [`Policy`] of the same generation. The door loads it once per request,
/// matches the key with it and hands its policy to the handler, so a
/// request authenticated under one configuration is decided under it too.
pub(super) struct LiveConfig {
    pub(super) keys: ApiKeys,
    pub(super) policy: Arc<Policy>,
}

/// Shared state of the HTTP handlers.
pub struct HttpState {
    pub(super) engine: Arc<Engine>,
    /// Swapped whole by a configuration reload ([`HttpState::reconfigure`]).
    pub(super) live: ArcSwap<LiveConfig>,
    pub(super) audit: Audit,
    pub(super) lockout: Lockout,
    pub(super) clock: Arc<dyn Clock>,
    /// How often a merchant key's success from one origin is audited.
    pub(super) success_interval_ms: u64,
    /// (configuration generation, key index, origin) -> when its success
    /// was last recorded. Key indices are a configuration's own.
    pub(super) successes_recorded: Mutex<HashMap<(u64, usize, IpAddr), u64>>,
    /// Vault key reloads and the rewrap job (`/admin/vault*`).
    vault: Arc<VaultControl>,
    /// Configuration reloads (`/admin/reload`).
    config: Arc<ConfigControl>,
    /// `http.deadline_ms`: how long a card request's answer is of use.
    deadline: Duration,
    /// The metrics' closed intervals (`/admin/timeline`), closed by
    /// `close_timeline_intervals`.
    pub(super) timeline: Timeline,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("keys", &self.live.load().keys.len())
            .finish_non_exhaustive()
    }
}

impl HttpState {
    pub fn new(
        engine: Arc<Engine>,
        config: &Config,
        audit: Audit,
        clock: Arc<dyn Clock>,
        vault: Arc<VaultControl>,
        config_control: Arc<ConfigControl>,
    ) -> HttpState {
        let live = LiveConfig {
            keys: ApiKeys::from_config(config),
            policy: engine.policy(),
        };
        HttpState {
            engine,
            live: ArcSwap::from_pointee(live),
            audit,
            lockout: Lockout::new(config.security, Arc::clone(&clock)),
            clock,
            success_interval_ms: config.audit.success_interval_ms,
            successes_recorded: Mutex::new(HashMap::new()),
            vault,
            config: config_control,
            deadline: Duration::from_millis(config.http.deadline_ms),
            timeline: Timeline::default(),
        }
    }

    /// Takes the keys of a reloaded `config`, with `policy`, the engine's
    /// for it: a key removed or rotated is refused from the next request
    /// on, a new merchant's key works.
    pub fn reconfigure(&self, config: &Config, policy: &Arc<Policy>) {
        self.live.store(Arc::new(LiveConfig {
            keys: ApiKeys::from_config(config),
            policy: Arc::clone(policy),
        }));
    }

    /// Configuration reloads.
    pub(super) fn config_control(&self) -> &ConfigControl {
        &self.config
    }

    /// The deadline of a request whose handler started at `started`.
    pub(super) fn deadline_after(&self, started: Stopwatch) -> Deadline {
        Deadline::after(self.deadline.saturating_sub(started.elapsed()))
    }

    /// Times a card request or reversal answered, counting it if it missed
    /// its deadline.
    pub(super) fn answered(&self, started: Stopwatch) {
        self.engine
            .metrics()
            .record_answer(Channel::Http, started.elapsed(), self.deadline);
    }

    /// The vault's reload and rewrap control.
    pub(super) fn vault(&self) -> &VaultControl {
        &self.vault
    }

    /// The same, shared (the rewrap job keeps it while it runs).
    pub(super) fn vault_arc(&self) -> &Arc<VaultControl> {
        &self.vault
    }
}
