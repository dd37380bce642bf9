//! The subcommands beside `switch serve`, for people at a terminal:
//!
//! - [`iso`]: `switch iso decode|encode|send` reads, writes and sends ISO
//!   8583 messages as JSON.
//! - [`audit`]: `switch audit verify` checks the audit log's hash chain.
//! - [`vault`]: `switch vault status|reload|rewrap|verify`, the operator's
//!   side of the vault admin routes of a running switch.

pub mod audit;
pub mod iso;
pub mod vault;
