//! What ops read: latency histograms per stage and channel, counters per
//! response code, shed and error counts, rendered as Prometheus text for
//! `/metrics` and as percentiles for the admin view.
//!
//! Each histogram sits behind its own mutex, taken once per stage per request
//! for a few tens of nanoseconds; the decision path itself (the actors) takes
//! no lock.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use protocol::ResponseCode;
use protocol::domain::Channel;

use crate::ingress::tls::{RefusalReason, TlsListener};

/// A stage of a request's path through the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Bytes or JSON to a domain request.
    Decode,
    /// Rules, tokenization, card and merchant actors.
    Decide,
    /// Waiting for the journal's group commit.
    JournalWait,
    /// From the first byte read (or the HTTP handler's start) to the reply.
    Total,
}

const STAGES: [Stage; 4] = [
    Stage::Decode,
    Stage::Decide,
    Stage::JournalWait,
    Stage::Total,
];
const CHANNELS: [Channel; 2] = [Channel::Iso, Channel::Http];

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Decide => "decide",
            Stage::JournalWait => "journal_wait",
            Stage::Total => "total",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Iso => 0,
        Channel::Http => 1,
    }
}

/// Every DE39 value the switch counts by name; others are counted as "other".
const CODES: [&str; 15] = [
    "00", "05", "12", "13", "14", "30", "54", "57", "58", "61", "65", "91", "94", "96", "other",
];

/// Why an HTTP request was refused before its handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header on a route that needs a key.
    NoKey,
    /// A key that matches no principal.
    BadKey,
    /// The client origin is locked out after failed authentications.
    LockedOut,
    /// The key's role may not use the route.
    ForbiddenRole,
    /// The merchant is over its rate.
    RateLimited,
}

const REFUSALS: [Refusal; 5] = [
    Refusal::NoKey,
    Refusal::BadKey,
    Refusal::LockedOut,
    Refusal::ForbiddenRole,
    Refusal::RateLimited,
];

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::BadKey => "bad_key",
            Refusal::LockedOut => "locked_out",
            Refusal::ForbiddenRole => "forbidden_role",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// Bucket bounds of the Prometheus histograms, in seconds.
const BUCKETS_S: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// The switch's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    /// `[channel][stage]`, microseconds, 3 significant digits, up to 60 s.
    latency_us: [[Mutex<Histogram<u64>>; 4]; 2],
    responses: [[AtomicU64; CODES.len()]; 2],
    /// Frames that could not be framed; their connection was closed.
    pub frames_unframeable: AtomicU64,
    /// Messages with a bad field, answered 30.
    pub messages_malformed: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Journal appends that failed (answered 96 / 503).
    pub journal_failures: AtomicU64,
    /// Requests shed because a journal queue or shard mailbox was full.
    pub shed: AtomicU64,
    /// Duplicates answered with the original response.
    pub duplicates: AtomicU64,
    /// Redis calls (fleet velocity) that failed or timed out.
    pub fleet_errors: AtomicU64,
    /// Requests decided on the node's own limits because Redis failed
    /// (`fleet.on_redis_down = "local"`).
    pub fleet_fallbacks: AtomicU64,
    /// HTTP requests refused before their handler, by [`Refusal`].
    refusals: [AtomicU64; REFUSALS.len()],
    /// Card requests refused at a merchant's rate limit, per channel.
    rate_limited: [AtomicU64; 2],
    /// Failed authentications from an origin the full lockout table could
    /// not track.
    lockout_untracked: AtomicU64,
    /// `[listener]`: TLS handshakes completed (on ISO, with an acquirer identified).
    tls_handshakes: [AtomicU64; 2],
    /// `[listener][reason]`: TLS handshakes refused.
    tls_refused: [[AtomicU64; RefusalReason::ALL.len()]; 2],
}

fn histogram() -> Mutex<Histogram<u64>> {
    // 1 us to 60 s at 3 significant digits: fixed memory, never resizes.
    #[allow(clippy::expect_used)]
    let histogram =
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid");
    Mutex::new(histogram)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            latency_us: std::array::from_fn(|_| std::array::from_fn(|_| histogram())),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            frames_unframeable: AtomicU64::new(0),
            messages_malformed: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            journal_failures: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            fleet_errors: AtomicU64::new(0),
            fleet_fallbacks: AtomicU64::new(0),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            rate_limited: std::array::from_fn(|_| AtomicU64::new(0)),
            lockout_untracked: AtomicU64::new(0),
            tls_handshakes: std::array::from_fn(|_| AtomicU64::new(0)),
            tls_refused: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// Percentiles of one histogram, for the admin view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    pub channel: &'static str,
    pub stage: &'static str,
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Metrics {
    /// Records `us` microseconds spent in `stage`.
    pub fn record(&self, channel: Channel, stage: Stage, us: u64) {
        let Some(row) = self.latency_us.get(channel_index(channel)) else {
            return;
        };
        if let Some(cell) = row.get(stage.index())
            && let Ok(mut histogram) = cell.lock()
        {
            histogram.saturating_record(us.max(1));
        }
    }

    /// Counts one response with `code`.
    pub fn count_response(&self, channel: Channel, code: ResponseCode) {
        let index = CODES
            .iter()
            .position(|c| *c == code.as_str())
            .unwrap_or(CODES.len() - 1);
        if let Some(counter) = self
            .responses
            .get(channel_index(channel))
            .and_then(|row| row.get(index))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an HTTP request refused for `reason`.
    pub fn count_refusal(&self, reason: Refusal) {
        if let Some(counter) = self.refusals.get(reason as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a TLS handshake completed on `listener`.
    pub fn count_tls_handshake(&self, listener: TlsListener) {
        if let Some(counter) = self.tls_handshakes.get(listener.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a card request refused at its merchant's rate limit.
    pub fn count_rate_limited(&self, channel: Channel) {
        if let Some(counter) = self.rate_limited.get(channel_index(channel)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a TLS handshake refused on `listener` for `reason`.
    pub fn count_tls_refused(&self, listener: TlsListener, reason: RefusalReason) {
        if let Some(counter) = self
            .tls_refused
            .get(listener.index())
            .and_then(|row| row.get(reason.index()))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failure the lockout table had no room to track.
    pub fn count_lockout_untracked(&self) {
        self.lockout_untracked.fetch_add(1, Ordering::Relaxed);
    }

    /// The access counters, in Prometheus text.
    fn render_access(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP switch_http_refusals_total HTTP requests refused before their handler, by reason.\n# TYPE switch_http_refusals_total counter"
        );
        for (reason, counter) in REFUSALS.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "switch_http_refusals_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switch_rate_limited_total Card requests refused at their merchant's rate limit (HTTP 429, DE39 91), per channel.\n# TYPE switch_rate_limited_total counter"
        );
        for channel in CHANNELS {
            if let Some(counter) = self.rate_limited.get(channel_index(channel)) {
                let _ = writeln!(
                    out,
                    "switch_rate_limited_total{{channel=\"{}\"}} {}",
                    channel.as_str(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        render_counters(
            out,
            &[(
                "switch_http_lockout_untracked_total",
                "Failed authentications from origins the full lockout table could not track.",
                self.lockout_untracked.load(Ordering::Relaxed),
            )],
        );
    }

    /// Calls `each` with every channel's and stage's histogram, locked.
    fn each_histogram(&self, mut each: impl FnMut(Channel, Stage, &Histogram<u64>)) {
        for channel in CHANNELS {
            for stage in STAGES {
                let Some(cell) = self
                    .latency_us
                    .get(channel_index(channel))
                    .and_then(|row| row.get(stage.index()))
                else {
                    continue;
                };
                if let Ok(histogram) = cell.lock() {
                    each(channel, stage, &histogram);
                }
            }
        }
    }

    /// Percentiles of every stage and channel.
    pub fn percentiles(&self) -> Vec<Percentiles> {
        let mut out = Vec::new();
        self.each_histogram(|channel, stage, histogram| {
            out.push(Percentiles {
                channel: channel.as_str(),
                stage: stage.as_str(),
                count: histogram.len(),
                p50_us: histogram.value_at_quantile(0.5),
                p90_us: histogram.value_at_quantile(0.9),
                p99_us: histogram.value_at_quantile(0.99),
                p999_us: histogram.value_at_quantile(0.999),
                max_us: histogram.max(),
            });
        });
        out
    }

    /// The Prometheus text exposition. `gauges` are extra values the caller
    /// reads from other components (mailbox depths, journal batches).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = writeln!(
            out,
            "# HELP switch_stage_seconds Latency of each stage of a request, per channel."
        );
        let _ = writeln!(out, "# TYPE switch_stage_seconds histogram");
        self.each_histogram(|channel, stage, histogram| {
            let labels = format!(
                "channel=\"{}\",stage=\"{}\"",
                channel.as_str(),
                stage.as_str()
            );
            for bound in BUCKETS_S {
                let bound_us = (bound * 1_000_000.0) as u64;
                let count = histogram.count_between(0, bound_us);
                let _ = writeln!(
                    out,
                    "switch_stage_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "switch_stage_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.len()
            );
            let sum_s = histogram.mean() * histogram.len() as f64 / 1_000_000.0;
            let _ = writeln!(out, "switch_stage_seconds_sum{{{labels}}} {sum_s}");
            let _ = writeln!(
                out,
                "switch_stage_seconds_count{{{labels}}} {}",
                histogram.len()
            );
        });
        let _ = writeln!(
            out,
            "# HELP switch_responses_total Responses sent, by channel and DE39 code."
        );
        let _ = writeln!(out, "# TYPE switch_responses_total counter");
        for channel in CHANNELS {
            if let Some(row) = self.responses.get(channel_index(channel)) {
                for (code, counter) in CODES.iter().zip(row) {
                    let _ = writeln!(
                        out,
                        "switch_responses_total{{channel=\"{}\",code=\"{code}\"}} {}",
                        channel.as_str(),
                        counter.load(Ordering::Relaxed)
                    );
                }
            }
        }
        for (name, help, value) in [
            (
                "switch_frames_unframeable_total",
                "Streams closed because a frame could not be framed.",
                &self.frames_unframeable,
            ),
            (
                "switch_messages_malformed_total",
                "Messages with a bad field, answered 30.",
                &self.messages_malformed,
            ),
            (
                "switch_connections_refused_total",
                "Connections refused at the connection limit.",
                &self.connections_refused,
            ),
            (
                "switch_journal_failures_total",
                "Journal appends that failed, answered 96.",
                &self.journal_failures,
            ),
            (
                "switch_shed_total",
                "Requests shed at a full queue or mailbox.",
                &self.shed,
            ),
            (
                "switch_duplicates_total",
                "Duplicates answered with the original response.",
                &self.duplicates,
            ),
            (
                "switch_fleet_errors_total",
                "Redis calls for fleet velocity that failed or timed out.",
                &self.fleet_errors,
            ),
            (
                "switch_fleet_fallbacks_total",
                "Requests decided on local limits because Redis failed.",
                &self.fleet_fallbacks,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switch_tls_handshakes_total TLS handshakes completed, by listener.\n# TYPE switch_tls_handshakes_total counter"
        );
        for listener in TlsListener::ALL {
            if let Some(counter) = self.tls_handshakes.get(listener.index()) {
                let _ = writeln!(
                    out,
                    "switch_tls_handshakes_total{{listener=\"{}\"}} {}",
                    listener.as_str(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP switch_tls_handshakes_refused_total TLS handshakes refused, by listener and reason.\n# TYPE switch_tls_handshakes_refused_total counter"
        );
        for listener in TlsListener::ALL {
            for reason in RefusalReason::ALL {
                if let Some(counter) = self
                    .tls_refused
                    .get(listener.index())
                    .and_then(|row| row.get(reason.index()))
                {
                    let _ = writeln!(
                        out,
                        "switch_tls_handshakes_refused_total{{listener=\"{}\",reason=\"{}\"}} {}",
                        listener.as_str(),
                        reason.as_str(),
                        counter.load(Ordering::Relaxed)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP switch_connections_open ISO 8583 connections open.\n# TYPE switch_connections_open gauge\nswitch_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        self.render_access(&mut out);
        out
    }
}

/// Appends counters read from other components (the audit log's).
pub fn render_counters(out: &mut String, counters: &[(&str, &str, u64)]) {
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
}

/// Appends gauges read from other components.
pub fn render_gauges(out: &mut String, gauges: &[(&str, &str, u64)]) {
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_as_prometheus_histograms() {
        let metrics = Metrics::default();
        metrics.record(Channel::Iso, Stage::Total, 300);
        metrics.record(Channel::Iso, Stage::Total, 3_000);
        metrics.count_response(Channel::Iso, ResponseCode::Approved);
        metrics.count_response(Channel::Http, ResponseCode::Other(*b"51"));
        let text = metrics.render(&[("switch_shard_mailbox_depth", "Messages waiting.", 7)]);
        assert!(
            text.contains(
                "switch_stage_seconds_bucket{channel=\"iso\",stage=\"total\",le=\"0.0005\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("switch_stage_seconds_count{channel=\"iso\",stage=\"total\"} 2"));
        assert!(text.contains("switch_responses_total{channel=\"iso\",code=\"00\"} 1"));
        assert!(text.contains("switch_responses_total{channel=\"http\",code=\"other\"} 1"));
        assert!(text.contains("switch_shard_mailbox_depth 7"));
        metrics.count_refusal(Refusal::LockedOut);
        metrics.count_rate_limited(Channel::Iso);
        let text = metrics.render(&[]);
        assert!(text.contains("switch_http_refusals_total{reason=\"locked_out\"} 1"));
        assert!(text.contains("switch_http_refusals_total{reason=\"no_key\"} 0"));
        assert!(text.contains("switch_rate_limited_total{channel=\"iso\"} 1"));
        metrics.count_tls_refused(TlsListener::Iso, RefusalReason::Expired);
        metrics.count_tls_handshake(TlsListener::Http);
        let text = metrics.render(&[]);
        assert!(text.contains(
            "switch_tls_handshakes_refused_total{listener=\"iso\",reason=\"expired\"} 1"
        ));
        assert!(text.contains(
            "switch_tls_handshakes_refused_total{listener=\"http\",reason=\"expired\"} 0"
        ));
        assert!(text.contains("switch_tls_handshakes_total{listener=\"http\"} 1"));
        let p = metrics.percentiles();
        let total = p
            .iter()
            .find(|p| p.channel == "iso" && p.stage == "total")
            .unwrap();
        assert_eq!(total.count, 2);
        assert!(
            total.max_us >= 2_990 && total.max_us <= 3_010,
            "{}",
            total.max_us
        );
    }
}
