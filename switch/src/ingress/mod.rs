//! Where requests arrive, each ingress turning its wire into the domain
//! requests the [`engine`](crate::engine) decides, and the engine's outcomes
//! back into its wire:
//!
//! - [`iso`]: ISO 8583 over TCP, plain or mutual TLS.
//! - [`http`]: the JSON API and the ops and admin routes.
//! - [`tls`]: the TLS listeners both share, and the mapping of an acquirer's
//!   client certificate to its configured name.

pub mod http;
pub mod iso;
pub mod tls;
