//! The switch: ISO 8583 and JSON/HTTP ingress in front of the card and
//! merchant actors, the vault and the journal.
//!
//! The folders, in the order a request meets them:
//!
//! - [`ingress`]: where requests arrive. [`ingress::iso`] is ISO 8583 over
//!   TCP (plain and mutual TLS): framing, several requests in flight per
//!   connection, answers written as they complete. [`ingress::http`] is the
//!   JSON API with API keys, roles and idempotency keys, and the ops and
//!   admin routes. [`ingress::tls`] holds the TLS 1.2/1.3 listeners both use.
//! - [`admission`]: per-merchant rate limits (both ingresses) and the lockout
//!   of client origins after failed authentications, checked before any
//!   work is done for a request.
//! - [`engine`]: the one path both ingresses share: duplicates, rules,
//!   token, actors, journal, reply.
//! - [`fleet`]: card velocity and duplicate keys shared by several nodes in
//!   Redis, when a Redis URL is configured.
//! - [`ops`]: what operators read and run: metrics, the audit log, vault key
//!   reload and rewrap.
//!
//! Around them: [`config`] reads and checks the TOML configuration (with
//! flag and environment overrides); [`serve`] wires everything for
//! `switch serve` and owns start-up (journal, replay, listeners) and
//! shutdown; [`cli`] holds the other subcommands (`switch iso`,
//! `switch audit`, `switch vault`); [`clock`] is the one reader of monotonic time.

pub mod admission;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod ingress;
pub mod ops;
pub mod serve;
