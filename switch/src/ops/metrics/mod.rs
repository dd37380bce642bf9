//! What ops read about the traffic: latency histograms per stage and
//! channel, counters per response code, refusals, shed and error counts.
//!
//! - `record.rs`: [`Metrics`], what the ingresses and the engine count and
//!   time while they serve; each histogram sits behind its own mutex, taken
//!   twice per stage per request (the since-start histogram and the
//!   timeline's open interval) for a few tens of nanoseconds each, and the
//!   decision path itself (the actors) takes no lock.
//! - `render.rs`: the Prometheus text of `/metrics`, with every metric name
//!   and help text of the switch, including the values `/metrics` reads
//!   from other components when scraped ([`Readings`]); and the
//!   [`Percentiles`] of the admin view.
//! - `timeline.rs`: the same timings and counts per interval (1 s for the
//!   last 5 minutes, 1 min for the last hour), closed once a second
//!   ([`Timeline::close_interval`]), as JSON and as an HdrHistogram interval
//!   log.

mod record;
mod render;
mod timeline;

pub use record::{Closed, Listener, Metrics, Refusal, Shed, Stage};
pub use render::{Percentiles, Readings};
pub use timeline::{MINUTES_KEPT, Resolution, SECONDS_KEPT, Timeline, TimelineError};
