//! ISO 8583 over TCP, plain (`iso.listen`) or mutual TLS (`[iso.tls]`):
//!
//! ```text
//! accept.rs      accept within the shared connection limit; on TLS, the
//!                handshake names the acquirer first
//! connection.rs  one reader and one writer per connection: cut frames,
//!                decode each in its own task, write answers as they complete
//! mapping.rs     Message -> Authorization / Reversal -> engine -> response;
//!                network management answered without the engine
//! order.rs       the order requests arrived in on a connection: a reversal
//!                waits for those before it
//! ```

mod accept;
mod connection;
mod mapping;
mod order;

pub use accept::{IsoIngress, serve};
