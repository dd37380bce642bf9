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
use storage::{BATCH_ROWS_BOUNDS, COMMIT_TIME_BOUNDS_US, JournalStats};

use crate::ingress::tls::{RefusalReason, TlsListener};
use crate::ops::metrics::Metrics;
use crate::ops::metrics::record::{
    CHANNELS, CLOSED, CODES, LISTENERS, REFUSALS, SHEDS, Stage, channel_index,
};

/// Bucket bounds of the stage histograms, in microseconds; the `le` label
/// writes them in seconds ([`seconds_text`]).
const STAGE_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Values `/metrics` reads from other components when it is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readings {
    /// Messages waiting in all shard mailboxes.
    pub shard_mailbox_depth: u64,
    /// Requests shed at a full shard mailbox.
    pub shard_shed_total: u64,
    /// The journal's batches, records, histograms and queue.
    pub journal: JournalStats,
    /// What `/health/ready` says: velocity replayed, the journal writer
    /// running, the database (and a fleet's Redis) answering.
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

/// A duration in microseconds as decimal seconds, exactly (`2500` is
/// `0.0025`): the unit Prometheus expects in `le` labels and `_sum`s.
fn seconds_text(us: u64) -> String {
    let (seconds, fraction_us) = (us / 1_000_000, us % 1_000_000);
    if fraction_us == 0 {
        return seconds.to_string();
    }
    let fraction = format!("{fraction_us:06}");
    format!("{seconds}.{}", fraction.trim_end_matches('0'))
}

/// One series of a histogram: a `_bucket` line per bound with `le`, then
/// `+Inf`, `_sum` and `_count`. `buckets` are `(le, count)`, the counts
/// not cumulative; the last one counts what lies past every bound, so the
/// `+Inf` bucket and `_count` are all of them added up. `labels` are the
/// series' own (`channel="iso"`), or empty.
fn write_histogram_series(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: impl IntoIterator<Item = (String, u64)>,
    above_every_bound: u64,
    sum: &str,
) {
    let separator = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (le, count) in buckets {
        cumulative = cumulative.saturating_add(count);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}"
        );
    }
    let count = cumulative.saturating_add(above_every_bound);
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {count}"
    );
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {sum}");
    let _ = writeln!(out, "{name}_count{braced} {count}");
}

/// A histogram's count as the float its `_sum` is computed in.
// Exact up to 2^53 observations; past that the exposition format's float
// sum is approximate anyway.
#[allow(clippy::as_conversions)]
fn count_f64(count: u64) -> f64 {
    count as f64
}

/// The journal's histograms: records per committed batch, and seconds per
/// commit.
fn render_journal_histograms(out: &mut String, journal: &JournalStats) {
    let _ = writeln!(
        out,
        "# HELP switch_journal_batch_records Records per committed journal batch.\n# TYPE switch_journal_batch_records histogram"
    );
    let (sizes, larger) = journal.batch_sizes.split_at(BATCH_ROWS_BOUNDS.len());
    write_histogram_series(
        out,
        "switch_journal_batch_records",
        "",
        BATCH_ROWS_BOUNDS
            .iter()
            .zip(sizes)
            .map(|(bound, count)| (bound.to_string(), *count)),
        larger.iter().sum(),
        &journal.records.to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP switch_journal_commit_seconds Time the journal backend took to write and commit one batch, per committed batch.\n# TYPE switch_journal_commit_seconds histogram"
    );
    let (times, slower) = journal.commit_times.split_at(COMMIT_TIME_BOUNDS_US.len());
    write_histogram_series(
        out,
        "switch_journal_commit_seconds",
        "",
        COMMIT_TIME_BOUNDS_US
            .iter()
            .zip(times)
            .map(|(bound_us, count)| (seconds_text(*bound_us), *count)),
        slower.iter().sum(),
        &seconds_text(journal.commit_time_us_sum),
    );
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
        // Counters the shards and the journal keep are read, not counted,
        // here; they are typed by what they are, counters or gauges.
        for (kind, name, help, value) in [
            (
                "gauge",
                "switch_shard_mailbox_depth",
                "Messages waiting in all shard mailboxes.",
                readings.shard_mailbox_depth,
            ),
            (
                "counter",
                "switch_shard_shed_total",
                "Requests shed at a full shard mailbox.",
                readings.shard_shed_total,
            ),
            (
                "counter",
                "switch_journal_batches_total",
                "Journal batches committed.",
                readings.journal.batches,
            ),
            (
                "counter",
                "switch_journal_records_total",
                "Journal records committed.",
                readings.journal.records,
            ),
        ] {
            write_one(&mut out, kind, name, help, value);
        }
        render_journal_histograms(&mut out, &readings.journal);
        write_one(
            &mut out,
            "gauge",
            "switch_journal_queue_depth",
            "Records waiting for the journal writer.",
            readings.journal.queue_depth,
        );
        write_one(
            &mut out,
            "gauge",
            "switch_ready",
            "1 while /health/ready answers 200 (velocity replayed, the journal writer running, the database and a fleet's Redis answering); 0 otherwise.",
            u64::from(readings.ready),
        );
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
            // The HdrHistogram answers how many values lie up to a bound;
            // a bucket's own count is the difference from the bound below.
            let mut below = 0u64;
            let buckets = STAGE_BOUNDS_US.map(|bound_us| {
                let cumulative = histogram.count_between(0, bound_us);
                let count = cumulative.saturating_sub(below);
                below = cumulative;
                (seconds_text(bound_us), count)
            });
            let sum_s = histogram.mean() * count_f64(histogram.len()) / 1_000_000.0;
            write_histogram_series(
                out,
                "switch_stage_seconds",
                &labels,
                buckets,
                histogram.len().saturating_sub(below),
                &sum_s.to_string(),
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
        let _ = writeln!(
            out,
            "# HELP switch_config_reloads_total Configuration reloads (SIGHUP or POST /admin/reload), applied or refused.\n# TYPE switch_config_reloads_total counter"
        );
        for (result, counter) in ["applied", "refused"].iter().zip(&self.config_reloads) {
            let _ = writeln!(
                out,
                "switch_config_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
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
    fn bucket_bounds_are_written_in_seconds_exactly() {
        for (bound_us, label) in [
            (50, "0.00005"),
            (2_500, "0.0025"),
            (250_000, "0.25"),
            (1_000_000, "1"),
            (2_500_000, "2.5"),
            (10_000_000, "10"),
            (0, "0"),
        ] {
            assert_eq!(seconds_text(bound_us), label);
        }
        for bound_us in STAGE_BOUNDS_US.into_iter().chain(COMMIT_TIME_BOUNDS_US) {
            let bound_s = f64::from(u32::try_from(bound_us).unwrap()) / 1_000_000.0;
            assert_eq!(seconds_text(bound_us), format!("{bound_s}"));
        }
    }

    #[test]
    fn journal_stats_render_as_cumulative_histograms_with_sum_and_count() {
        let mut journal = JournalStats {
            batches: 3,
            records: 4_103,
            commit_time_us_sum: 1_502_500,
            ..JournalStats::default()
        };
        // Batches of 1 and 2 records, and one of 4100, past every bound.
        journal.batch_sizes[0] = 1;
        journal.batch_sizes[1] = 1;
        journal.batch_sizes[BATCH_ROWS_BOUNDS.len()] = 1;
        // Commits of 2.5 ms (at most 2.5 ms) and 1.5 s (twice).
        journal.commit_times[4] = 1;
        journal.commit_times[13] = 2;
        let text = Metrics::default().render(&Readings {
            journal,
            ..Readings::default()
        });
        for expected in [
            "switch_journal_batch_records_bucket{le=\"1\"} 1\n",
            "switch_journal_batch_records_bucket{le=\"2\"} 2\n",
            "switch_journal_batch_records_bucket{le=\"4096\"} 2\n",
            "switch_journal_batch_records_bucket{le=\"+Inf\"} 3\n",
            "switch_journal_batch_records_sum 4103\n",
            "switch_journal_batch_records_count 3\n",
            "switch_journal_commit_seconds_bucket{le=\"0.001\"} 0\n",
            "switch_journal_commit_seconds_bucket{le=\"0.0025\"} 1\n",
            "switch_journal_commit_seconds_bucket{le=\"1\"} 1\n",
            "switch_journal_commit_seconds_bucket{le=\"2.5\"} 3\n",
            "switch_journal_commit_seconds_bucket{le=\"+Inf\"} 3\n",
            "switch_journal_commit_seconds_sum 1.5025\n",
            "switch_journal_commit_seconds_count 3\n",
            "switch_journal_batches_total 3\n",
            "switch_journal_records_total 4103\n",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
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
                "# TYPE switch_shard_shed_total counter",
                "# TYPE switch_journal_batches_total counter",
                "# TYPE switch_journal_records_total counter",
                "# TYPE switch_journal_batch_records histogram",
                "# TYPE switch_journal_commit_seconds histogram",
                "# TYPE switch_journal_queue_depth gauge",
                "# TYPE switch_ready gauge",
                "# TYPE switch_http_refusals_total counter",
                "# TYPE switch_rate_limited_total counter",
                "# TYPE switch_http_lockout_untracked_total counter",
                "# TYPE switch_config_reloads_total counter",
                "# TYPE switch_audit_entries_total counter",
                "# TYPE switch_audit_dropped_total counter",
                "# TYPE switch_audit_write_failures_total counter",
                "# TYPE switch_http_lockouts_total counter",
                "# TYPE switch_http_lockout_origins gauge",
            ]
        );
    }
}
