//! Reloading the business configuration while the switch serves: SIGHUP or
//! `POST /admin/reload` (operators and admins) read the file the switch
//! was started with again, with the same overrides, secrets and checks as
//! at start, and either apply it whole or refuse it whole.
//!
//! ```text
//! Config::load(file, overrides)      a bad file: refused, its key named
//!   fixed_changes(running, next)     listeners, journal, shards ...: refused, each named
//!   LiveChanges::between             what the answer and the audit log name
//!   Policy { rules, limits, rates }  -> Engine::replace_policy (one atomic swap)
//!   followers (the HTTP door's keys, with the same Policy)
//! ```
//!
//! Velocity is not touched: the shards keep every card's and merchant's
//! counters and judge them by the new limits from the next decision on,
//! and the admission buckets carry their state over. Every attempt is
//! audited (`config.reload`, `applied` or `refused`, with who asked) and
//! counted (`switch_config_reloads_total{result}`).
//!
//! - `changes.rs`: what may change live and what is fixed at start, and
//!   the names of what changed ([`LiveChanges`], [`fixed_changes`]).
//! - `control.rs`: [`ConfigControl`], one reload from the file to the swap,
//!   its audit record, count and log line.

mod changes;
mod control;

pub use changes::{LiveChanges, fixed_changes};
pub use control::{Applied, ConfigControl, ReloadBy, ReloadError};
