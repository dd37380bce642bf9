//! The switch: ISO 8583 and JSON/HTTP ingress in front of the card and
//! merchant actors, the vault and the journal.
//!
//! The modules, in the order a request meets them:
//!
//! - [`serve`]: `switch serve` wires everything and owns start-up (journal,
//!   replay, listeners) and shutdown.
//! - [`config`]: the TOML configuration, checked, with flag and environment
//!   overrides.
//! - [`iso_server`]: ISO 8583 over TCP: framing, several requests in flight per
//!   connection, answers written as they complete.
//! - [`tls`]: TLS 1.2/1.3 (ring) for both listeners; mutual TLS on ISO 8583,
//!   where the client certificate names the acquirer.
//! - [`http`]: the JSON API, API keys and roles, idempotency keys, and the
//!   ops routes.
//! - [`limits`]: per-merchant rate limits (both ingresses) and the lockout
//!   of client origins after failed authentications.
//! - [`engine`]: the one path both ingresses share: rules, token, actors,
//!   journal, reply.
//! - [`fleet`]: card velocity shared by several nodes in Redis (one Lua
//!   check-and-increment per approval), when a Redis URL is configured.
//! - [`metrics`]: latency histograms per stage and channel, counters.
//! - [`audit`]: the hash-chained, append-only audit log, and its verifier.
//! - [`iso_cli`]: `switch iso decode|encode` for people who read messages.
//! - [`vault_admin`]: vault key reload (SIGHUP or admin route) and the
//!   background rewrap of old rows under the active key.
//! - [`vault_cli`]: `switch vault status|reload|rewrap|verify`, the
//!   operator's side of those routes.

pub mod audit;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod iso_cli;
pub mod iso_server;
pub mod limits;
pub mod metrics;
pub mod serve;
pub mod tls;
pub mod vault_admin;
pub mod vault_cli;
