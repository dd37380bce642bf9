//! What callers hand the audit log: one [`AuditEvent`], before it gets its
//! place in the chain, and the event names the switch records.

/// The event names the switch records. The lead's TLS and vault work adds
/// its own (`tls.handshake`, `vault.rotate`, ...) as plain strings.
pub mod events {
    pub const SWITCH_START: &str = "switch.start";
    pub const SWITCH_STOP: &str = "switch.stop";
    pub const CONFIG_LOAD: &str = "config.load";
    /// A key was accepted (a merchant's once per origin per interval).
    pub const AUTH_SUCCESS: &str = "auth.success";
    /// A key was sent that matches no principal.
    pub const AUTH_FAILURE: &str = "auth.failure";
    /// An origin has just been locked out after repeated failures.
    pub const AUTH_LOCKOUT: &str = "auth.lockout";
    /// An operator or admin route was allowed to a principal.
    pub const ACCESS_ALLOWED: &str = "access.allowed";
    /// A principal's role may not use the route.
    pub const ACCESS_DENIED: &str = "access.denied";
    /// The vault keyring was re-read (SIGHUP or the admin route).
    pub const VAULT_RELOAD: &str = "vault.reload";
    /// The job re-encrypting vault rows under the active key started.
    pub const VAULT_REWRAP_START: &str = "vault.rewrap.start";
    /// ... and finished (`done`, `stopped` or `failed`).
    pub const VAULT_REWRAP_FINISH: &str = "vault.rewrap.finish";
    /// The configuration file was read again (SIGHUP or the admin route):
    /// `applied` or `refused`, with what changed or the key at fault.
    pub const CONFIG_RELOAD: &str = "config.reload";
    /// A TLS handshake on an acquirer or HTTPS listener (`ok` or why not).
    pub const TLS_HANDSHAKE: &str = "tls.handshake";
}

/// The actor, origin and resource of events that are the switch's own.
pub const SYSTEM_ACTOR: &str = "switch";
pub const LOCAL_ORIGIN: &str = "local";

/// One thing that happened, before it gets its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who: `merchant:ID`, `operator:NAME`, `admin:NAME`, `unknown`, `switch`.
    pub actor: String,
    /// What: one of [`events`], or another dotted name.
    pub event: String,
    /// How it ended: `ok`, `allowed`, `denied`, `bad_key`, `locked_out`, ...
    pub outcome: String,
    /// Where from: the peer address, or `local`.
    pub origin: String,
    /// On what: a route (`GET /metrics`), a file, a key id.
    pub resource: String,
}

impl AuditEvent {
    /// An event of the switch itself (start, stop, configuration).
    pub fn system(event: &str, outcome: &str, resource: impl Into<String>) -> AuditEvent {
        AuditEvent {
            actor: SYSTEM_ACTOR.to_owned(),
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            origin: LOCAL_ORIGIN.to_owned(),
            resource: resource.into(),
        }
    }

    /// The `n`th of a run of admin events, for the chain's and the writer's
    /// tests.
    #[cfg(test)]
    pub(super) fn numbered_for_tests(n: u32) -> AuditEvent {
        AuditEvent {
            actor: format!("admin:root{n}"),
            event: events::ACCESS_ALLOWED.to_owned(),
            outcome: "allowed".to_owned(),
            origin: "127.0.0.1".to_owned(),
            resource: "GET /metrics".to_owned(),
        }
    }
}
