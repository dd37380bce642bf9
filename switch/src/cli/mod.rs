//! The subcommands beside `switch serve`, for people at a terminal:
//!
//! - [`iso`]: `switch iso decode|encode|send` reads, writes and sends ISO
//!   8583 messages as JSON.
//! - [`vault`]: `switch vault status|reload|rewrap|verify`, the operator's
//!   side of the vault admin routes of a running switch.

pub mod iso;
pub mod vault;
