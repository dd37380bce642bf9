//! ISO 8583 over TCP, plain (`iso.listen`) or mutual TLS (`[iso.tls]`):
//!
//! ```text
//! accept.rs      accept within the shared connection limit; on TLS, the
//!                handshake names the acquirer first
//! connection.rs  one task per connection: cut and decode frames, answer
//!                them concurrently, write every ready answer in one go
//! mapping.rs     Message -> Authorization / Reversal -> engine -> response;
//!                network management answered without the engine
//! order.rs       the order requests arrived in on a connection: a reversal
//!                is held until those before it are answered
//! ```

mod accept;
mod connection;
mod mapping;
mod order;

pub use accept::{IsoIngress, serve};
