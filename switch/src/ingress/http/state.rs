//! What the HTTP handlers and the door in front of them share: the engine,
//! the configured keys, the lockout, the audit log and the vault's control.
//! Built once by `serve`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::Clock;
use protocol::domain::Channel;

use crate::admission::Lockout;
use crate::clock::{Deadline, Stopwatch};
use crate::config::Config;
use crate::engine::Engine;
use crate::ingress::http::principal::ApiKeys;
use crate::ops::audit::Audit;
use crate::ops::metrics::Timeline;
use crate::ops::vault::VaultControl;

/// Shared state of the HTTP handlers.
pub struct HttpState {
    pub(super) engine: Arc<Engine>,
    pub(super) keys: ApiKeys,
    pub(super) audit: Audit,
    pub(super) lockout: Lockout,
    pub(super) clock: Arc<dyn Clock>,
    /// How often a merchant key's success from one origin is audited.
    pub(super) success_interval_ms: u64,
    /// (key index, origin) -> when its success was last recorded.
    pub(super) successes_recorded: Mutex<HashMap<(usize, IpAddr), u64>>,
    /// Vault key reloads and the rewrap job (`/admin/vault*`).
    vault: Arc<VaultControl>,
    /// `http.deadline_ms`: how long a card request's answer is of use.
    deadline: Duration,
    /// The metrics' closed intervals (`/admin/timeline`), closed by
    /// `close_timeline_intervals`.
    pub(super) timeline: Timeline,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("keys", &self.keys.len())
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
    ) -> HttpState {
        HttpState {
            engine,
            keys: ApiKeys::from_config(config),
            audit,
            lockout: Lockout::new(config.security, Arc::clone(&clock)),
            clock,
            success_interval_ms: config.audit.success_interval_ms,
            successes_recorded: Mutex::new(HashMap::new()),
            vault,
            deadline: Duration::from_millis(config.http.deadline_ms),
            timeline: Timeline::default(),
        }
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
