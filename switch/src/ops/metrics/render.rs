//! What `/metrics` and the admin view show: the Prometheus text, with every
//! metric name and help text of the switch in this one file, and the
//! percentiles of each stage.
//!
//! Most values are [`Metrics`]' own; the rest are read from other components
//! (shards, journal, audit log, lockout) when `/metrics` is scraped and
//! handed in as [`Readings`], so this file names them without depending on
//! the components that hold them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;
use protocol::domain::Channel;

use crate::ingress::tls::{RefusalReason, TlsListener};
use crate::ops::metrics::Metrics;
use crate::ops::metrics::record::{
    CHANNELS, CLOSED, CODES, LISTENERS, REFUSALS, SHEDS, Stage, channel_index,
};

/// Bucket bounds of the Prometheus histograms: in microseconds, and as the
/// `le` label writes them in seconds.
const BUCKETS: [(u64, &str); 14] = [
    (50, "0.00005"),
    (100, "0.0001"),
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
];

/// Values `/metrics` reads from other components when it is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readings {
    /// Messages waiting in all shard mailboxes.
    pub shard_mailbox_depth: u64,
    /// Requests shed at a full shard mailbox.
    pub shard_shed_total: u64,
    pub journal_batches_total: u64,
    pub journal_records_total: u64,
    /// Records in the last journal batch.
    pub journal_batch_size_last: u64,
    /// Records waiting for the journal writer.
    pub journal_queue_depth: u64,
    /// The journal is open and replay is done.
    pub ready: bool,
    /// Audit log entries written and synced.
    pub audit_entries_total: u64,
    /// Audit events dropped at a full audit queue.
    pub audit_dropped_total: u64,
    /// Audit batches that could not be written or synced.
    pub audit_write_failures_total: u64,
    /// Client origins locked out since start.
    pub http_lockouts_total: u64,
    /// Client origins the lockout table tracks now.
    pub http_lockout_origins: u64,
    /// The admission limit now.
    pub admission_limit: u64,
    /// Card requests and reversals admitted and not answered.
    pub admission_in_flight: u64,
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

impl Percentiles {
    /// The percentiles of `histogram`, the times of `stage` on `channel`.
    pub(super) fn of(channel: Channel, stage: Stage, histogram: &Histogram<u64>) -> Percentiles {
        Percentiles {
            channel: channel.as_str(),
            stage: stage.as_str(),
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// A counter or gauge without labels: its help, type and value.
fn write_one(out: &mut String, kind: &str, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// A histogram's count as the float its `_sum` is computed in.
// Exact up to 2^53 observations; past that the exposition format's float
// sum is approximate anyway.
#[allow(clippy::as_conversions)]
fn count_f64(count: u64) -> f64 {
    count as f64
}

impl Metrics {
    /// Percentiles of every stage and channel.
    pub fn percentiles(&self) -> Vec<Percentiles> {
        let mut out = Vec::new();
        self.each_histogram(|channel, stage, histogram| {
            out.push(Percentiles::of(channel, stage, histogram));
        });
        out
    }

    /// The Prometheus text exposition of `/metrics`: the switch's own
    /// counters and histograms, and `readings` from the other components.
    pub fn render(&self, readings: &Readings) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_stages(&mut out);
        self.render_responses(&mut out);
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
                "switch_journal_failures_total",
                "Journal appends that failed, answered 96.",
                &self.journal_failures,
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
            write_one(
                &mut out,
                "counter",
                name,
                help,
                value.load(Ordering::Relaxed),
            );
        }
        self.render_overload(&mut out, readings);
        write_one(
            &mut out,
            "gauge",
            "switch_fleet_velocity_generation",
            "The generation of fleet velocity in Redis this node uses; 0 while it is rebuilt.",
            self.fleet_generation.load(Ordering::Relaxed),
        );
        self.render_connections(&mut out);
        self.render_tls(&mut out);
        write_one(
            &mut out,
            "gauge",
            "switch_connections_open",
            "ISO 8583 connections open.",
            self.connections_open.load(Ordering::Relaxed),
        );
        // The shard and journal values are all typed as gauges, the totals
        // among them included: they are read, not counted, here.
        for (name, help, value) in [
            (
                "switch_shard_mailbox_depth",
                "Messages waiting in all shard mailboxes.",
                readings.shard_mailbox_depth,
            ),
            (
                "switch_shard_shed_total",
                "Requests shed at a full shard mailbox.",
                readings.shard_shed_total,
            ),
            (
                "switch_journal_batches_total",
                "Journal batches committed.",
                readings.journal_batches_total,
            ),
            (
                "switch_journal_records_total",
                "Journal records committed.",
                readings.journal_records_total,
            ),
            (
                "switch_journal_batch_size_last",
                "Records in the last journal batch.",
                readings.journal_batch_size_last,
            ),
            (
                "switch_journal_queue_depth",
                "Records waiting for the journal writer.",
                readings.journal_queue_depth,
            ),
            (
                "switch_ready",
                "1 once the journal is open and replay is done.",
                u64::from(readings.ready),
            ),
        ] {
            write_one(&mut out, "gauge", name, help, value);
        }
        self.render_access(&mut out);
        for (name, help, value) in [
            (
                "switch_audit_entries_total",
                "Audit log entries written and synced.",
                readings.audit_entries_total,
            ),
            (
                "switch_audit_dropped_total",
                "Audit events dropped at a full audit queue.",
                readings.audit_dropped_total,
            ),
            (
                "switch_audit_write_failures_total",
                "Audit batches that could not be written or synced.",
                readings.audit_write_failures_total,
            ),
            (
                "switch_http_lockouts_total",
                "Client origins locked out after failed authentications.",
                readings.http_lockouts_total,
            ),
        ] {
            write_one(&mut out, "counter", name, help, value);
        }
        write_one(
            &mut out,
            "gauge",
            "switch_http_lockout_origins",
            "Client origins with failed authentications or a lockout, tracked now.",
            readings.http_lockout_origins,
        );
        out
    }

    /// `switch_stage_seconds`: every channel's and stage's histogram.
    fn render_stages(&self, out: &mut String) {
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
            for (bound_us, bound_label) in BUCKETS {
                let count = histogram.count_between(0, bound_us);
                let _ = writeln!(
                    out,
                    "switch_stage_seconds_bucket{{{labels},le=\"{bound_label}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "switch_stage_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.len()
            );
            let sum_s = histogram.mean() * count_f64(histogram.len()) / 1_000_000.0;
            let _ = writeln!(out, "switch_stage_seconds_sum{{{labels}}} {sum_s}");
            let _ = writeln!(
                out,
                "switch_stage_seconds_count{{{labels}}} {}",
                histogram.len()
            );
        });
    }

    /// `switch_responses_total`, by channel and DE39 code.
    fn render_responses(&self, out: &mut String) {
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
    }

    /// Sheds by channel and reason, deadline misses, and the admission
    /// limit.
    fn render_overload(&self, out: &mut String, readings: &Readings) {
        let _ = writeln!(
            out,
            "# HELP switch_shed_total Card requests and reversals shed (91, HTTP 503), by channel and reason.\n# TYPE switch_shed_total counter"
        );
        for channel in CHANNELS {
            if let Some(row) = self.shed.get(channel_index(channel)) {
                for (reason, counter) in SHEDS.iter().zip(row) {
                    let _ = writeln!(
                        out,
                        "switch_shed_total{{channel=\"{}\",reason=\"{}\"}} {}",
                        channel.as_str(),
                        reason.as_str(),
                        counter.load(Ordering::Relaxed)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP switch_deadline_missed_total Answers sent after their request's deadline, by channel.\n# TYPE switch_deadline_missed_total counter"
        );
        for channel in CHANNELS {
            if let Some(counter) = self.deadline_missed.get(channel_index(channel)) {
                let _ = writeln!(
                    out,
                    "switch_deadline_missed_total{{channel=\"{}\"}} {}",
                    channel.as_str(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        write_one(
            out,
            "gauge",
            "switch_admission_limit",
            "Card requests and reversals the switch admits at once now.",
            readings.admission_limit,
        );
        write_one(
            out,
            "gauge",
            "switch_admission_in_flight",
            "Card requests and reversals admitted and not answered yet.",
            readings.admission_in_flight,
        );
    }

    /// Connections refused at a listener's limit, and closed by the switch.
    fn render_connections(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP switch_connections_refused_total Connections refused at their listener's connection limit.\n# TYPE switch_connections_refused_total counter"
        );
        for (listener, counter) in LISTENERS.iter().zip(&self.connections_refused) {
            let _ = writeln!(
                out,
                "switch_connections_refused_total{{listener=\"{}\"}} {}",
                listener.as_str(),
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switch_connections_closed_total Open connections the switch closed, by listener and reason.\n# TYPE switch_connections_closed_total counter"
        );
        for (listener, by_reason) in LISTENERS.iter().zip(&self.connections_closed) {
            for (reason, counter) in CLOSED.iter().zip(by_reason) {
                let _ = writeln!(
                    out,
                    "switch_connections_closed_total{{listener=\"{}\",reason=\"{}\"}} {}",
                    listener.as_str(),
                    reason.as_str(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
    }

    /// The TLS handshakes completed and refused, by listener.
    fn render_tls(&self, out: &mut String) {
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
    }

    /// The HTTP refusals and the admission rate refusals.
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
        write_one(
            out,
            "counter",
            "switch_http_lockout_untracked_total",
            "Failed authentications from origins the full lockout table could not track.",
            self.lockout_untracked.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::{Closed, Listener, Refusal, Stage};
    use protocol::ResponseCode;
    use protocol::domain::Channel;

    #[test]
    fn records_render_as_prometheus_histograms() {
        let metrics = Metrics::default();
        metrics.record(Channel::Iso, Stage::Total, 300);
        metrics.record(Channel::Iso, Stage::Total, 3_000);
        metrics.count_response(Channel::Iso, ResponseCode::Approved);
        metrics.count_response(Channel::Http, ResponseCode::Other(*b"51"));
        let text = metrics.render(&Readings {
            shard_mailbox_depth: 7,
            ..Readings::default()
        });
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
        let text = metrics.render(&Readings::default());
        assert!(text.contains("switch_http_refusals_total{reason=\"locked_out\"} 1"));
        assert!(text.contains("switch_http_refusals_total{reason=\"no_key\"} 0"));
        assert!(text.contains("switch_rate_limited_total{channel=\"iso\"} 1"));
        metrics.count_tls_refused(TlsListener::Iso, RefusalReason::Expired);
        metrics.count_tls_handshake(TlsListener::Http);
        let text = metrics.render(&Readings::default());
        assert!(text.contains(
            "switch_tls_handshakes_refused_total{listener=\"iso\",reason=\"expired\"} 1"
        ));
        assert!(text.contains(
            "switch_tls_handshakes_refused_total{listener=\"http\",reason=\"expired\"} 0"
        ));
        assert!(text.contains("switch_tls_handshakes_total{listener=\"http\"} 1"));
        metrics.count_connection_refused(Listener::IsoTls);
        metrics.count_closed(Listener::Iso, Closed::WriteTimeout);
        let text = metrics.render(&Readings::default());
        assert!(text.contains("switch_connections_refused_total{listener=\"iso_tls\"} 1"));
        assert!(text.contains("switch_connections_refused_total{listener=\"http\"} 0"));
        assert!(text.contains(
            "switch_connections_closed_total{listener=\"iso\",reason=\"write_timeout\"} 1"
        ));
        assert!(text.contains(
            "switch_connections_closed_total{listener=\"http\",reason=\"write_timeout\"} 0"
        ));
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

    #[test]
    fn bucket_labels_are_their_bounds_in_seconds() {
        for (bound_us, label) in BUCKETS {
            let bound_s = f64::from(u32::try_from(bound_us).unwrap()) / 1_000_000.0;
            assert_eq!(format!("{bound_s}"), label);
        }
    }

    /// Dashboards and alerts know the switch's metrics by these names, and
    /// scrapers by this order: a change here is a change for operators.
    #[test]
    fn every_metric_is_named_and_typed_in_one_order() {
        let text = Metrics::default().render(&Readings::default());
        let declared: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("# TYPE "))
            .collect();
        assert_eq!(
            declared,
            [
                "# TYPE switch_stage_seconds histogram",
                "# TYPE switch_responses_total counter",
                "# TYPE switch_frames_unframeable_total counter",
                "# TYPE switch_messages_malformed_total counter",
                "# TYPE switch_journal_failures_total counter",
                "# TYPE switch_duplicates_total counter",
                "# TYPE switch_fleet_errors_total counter",
                "# TYPE switch_fleet_fallbacks_total counter",
                "# TYPE switch_shed_total counter",
                "# TYPE switch_deadline_missed_total counter",
                "# TYPE switch_admission_limit gauge",
                "# TYPE switch_admission_in_flight gauge",
                "# TYPE switch_fleet_velocity_generation gauge",
                "# TYPE switch_connections_refused_total counter",
                "# TYPE switch_connections_closed_total counter",
                "# TYPE switch_tls_handshakes_total counter",
                "# TYPE switch_tls_handshakes_refused_total counter",
                "# TYPE switch_connections_open gauge",
                "# TYPE switch_shard_mailbox_depth gauge",
                "# TYPE switch_shard_shed_total gauge",
                "# TYPE switch_journal_batches_total gauge",
                "# TYPE switch_journal_records_total gauge",
                "# TYPE switch_journal_batch_size_last gauge",
                "# TYPE switch_journal_queue_depth gauge",
                "# TYPE switch_ready gauge",
                "# TYPE switch_http_refusals_total counter",
                "# TYPE switch_rate_limited_total counter",
                "# TYPE switch_http_lockout_untracked_total counter",
                "# TYPE switch_audit_entries_total counter",
                "# TYPE switch_audit_dropped_total counter",
                "# TYPE switch_audit_write_failures_total counter",
                "# TYPE switch_http_lockouts_total counter",
                "# TYPE switch_http_lockout_origins gauge",
            ]
        );
    }
}
