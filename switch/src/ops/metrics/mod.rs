//! What ops read about the traffic: latency histograms per stage and
//! channel, counters per response code, refusals, shed and error counts.
//!
//! - `record.rs`: [`Metrics`], what the ingresses and the engine count and
//!   time while they serve; each histogram sits behind its own mutex, taken
//!   once per stage per request for a few tens of nanoseconds, and the
//!   decision path itself (the actors) takes no lock.
//! - `render.rs`: the Prometheus text of `/metrics`, with every metric name
//!   and help text of the switch, including the values `/metrics` reads
//!   from other components when scraped ([`Readings`]); and the
//!   [`Percentiles`] of the admin view.

mod record;
mod render;

pub use record::{Closed, Listener, Metrics, Refusal, Shed, Stage};
pub use render::{Percentiles, Readings};
