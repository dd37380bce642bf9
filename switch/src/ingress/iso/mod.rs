//! ISO 8583 over TCP, plain (`iso.listen`) or mutual TLS (`[iso.tls]`):
//!
//! ```text
//! accept.rs      accept within the shared connection limit; on TLS, the
//!                handshake names the acquirer first
//! connection.rs  one reader and one writer per connection: cut frames,
//!                decode each in its own task, write answers as they complete
//! mapping.rs     Message -> Authorization / Reversal -> engine -> response;
//!                network management answered without the engine
//! ```

mod accept;
mod connection;
mod mapping;

pub use accept::{IsoIngress, serve};
