//! What operators read and run while the switch serves:
//!
//! - [`metrics`]: latency histograms per stage and channel, counters, and
//!   the Prometheus text of `/metrics`.
//! - [`audit`]: the hash-chained, append-only audit log and its verifier.
//! - [`reload`]: the business configuration read again and swapped while
//!   the switch serves (SIGHUP or `POST /admin/reload`), or refused whole.
//! - [`vault`]: vault key reload (SIGHUP or admin route) and the background
//!   rewrap of old rows under the active key.
//! - [`time`]: timestamps as the API and the audit log write them.

pub mod audit;
pub mod metrics;
pub mod reload;
pub mod time;
pub mod vault;
