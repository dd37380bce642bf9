//! Latency and counts over time, so an engineer in an incident can answer
//! "what is p99 now, and since when?", which the since-start histograms of
//! `record.rs` cannot once the switch has served for a while.
//!
//! Recording: every stage timing also goes into the *open* interval's
//! histogram of its channel and stage ([`Metrics::record`]), behind a mutex
//! of its own (as the since-start histograms are; no lock is shared between
//! cells). Once a second a background task calls
//! [`Timeline::close_interval`]: it swaps each
//! open histogram for an empty one (the lock is held for the swap only),
//! takes the counters' deltas since the last close and the gauges of
//! [`Readings`], and files the closed interval in two bounded rings:
//!
//! - 1 s intervals for the last 5 minutes ([`SECONDS_KEPT`]);
//! - 1 min intervals for the last hour ([`MINUTES_KEPT`]), each the sum of
//!   the seconds closed while it was open (counters summed, gauges at their
//!   highest).
//!
//! A closed interval keeps its percentiles (for the JSON view) and its
//! histograms as V2 encoded bytes (for the `.hlog`), not the histograms
//! themselves: an interval histogram (1 us to 60 s, 2 significant digits,
//! 2,560 counts of 8 bytes) is 20 KB in memory, and 360 intervals of 8 of
//! them would be 58 MB. Memory: the open histograms, their spares and the
//! open minute's are 24 of 20 KB, about 0.5 MB. Encoded, a histogram is
//! under 100 B when idle, under 1 KB for a busy second (2,000 answers from
//! 0.2 to 20 ms: ~650 B) and at most 6 KB with every count filled (a test
//! below pins these), so the rings' 360 x 8 histograms take about 2 MB
//! under load and 18 MB at the very worst, plus about 1 KB of percentiles
//! and counts per interval.
//! Two significant digits put a value within 1% of its true value, finer
//! than any chart shows.
//!
//! Latency values are microseconds, as the stage histograms are.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{
    Deserializer, Serializer as _, V2DeflateSerializer, V2Serializer,
};
use protocol::domain::Channel;
use serde_json::{Value, json};

use crate::ops::metrics::Metrics;
use crate::ops::metrics::record::{
    CHANNELS, CODES, SHEDS, STAGES, Stage, channel_index, interval_histogram,
};
use crate::ops::metrics::render::{Percentiles, Readings};

/// 1 s intervals kept: the last 5 minutes.
pub const SECONDS_KEPT: usize = 300;
/// 1 min intervals kept: the last hour.
pub const MINUTES_KEPT: usize = 60;
/// The length of a coarse interval.
const MINUTE_MS: u64 = 60_000;

/// How fine the intervals of a timeline are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// 1 s intervals, the last 5 minutes.
    Second,
    /// 1 min intervals, the last hour.
    Minute,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Second => "1s",
            Resolution::Minute => "1m",
        }
    }
}

/// Why a timeline could not be read out.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// A stored interval histogram did not decode: a bug, not bad input.
    #[error("interval histogram {channel}/{stage} at {start_ms} ms does not decode: {detail}")]
    Decode {
        channel: &'static str,
        stage: &'static str,
        start_ms: u64,
        detail: String,
    },
    /// The interval log could not be written.
    #[error("interval log cannot be written: {0}")]
    Write(String),
}

/// Counters as deltas over an interval, and gauges as sampled at its close.
/// The same shape holds the cumulative totals a delta is taken from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// `[channel][code]`, codes as [`CODES`].
    responses: [[u64; CODES.len()]; 2],
    /// `[channel][reason]`, reasons as [`SHEDS`].
    shed: [[u64; SHEDS.len()]; 2],
    /// `[channel]`: answers that left after their deadline.
    deadline_missed: [u64; 2],
    journal_failures: u64,
    messages_malformed: u64,
    frames_unframeable: u64,
    fleet_errors: u64,
    /// Connections closed because their peer did not read its answers.
    write_timeouts: u64,
    journal_batches: u64,
    journal_records: u64,
    /// The committed batches' commit times added up, in microseconds.
    journal_commit_us: u64,
    // Gauges.
    journal_queue_depth: u64,
    shard_mailbox_depth: u64,
    admission_limit: u64,
    admission_in_flight: u64,
}

impl Counts {
    /// The counters' growth from `earlier` to `self`, with `self`'s gauges.
    fn since(&self, earlier: &Counts) -> Counts {
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        let mut out = *self;
        for (row, earlier_row) in out.responses.iter_mut().zip(&earlier.responses) {
            for (value, then) in row.iter_mut().zip(earlier_row) {
                *value = delta(*value, *then);
            }
        }
        for (row, earlier_row) in out.shed.iter_mut().zip(&earlier.shed) {
            for (value, then) in row.iter_mut().zip(earlier_row) {
                *value = delta(*value, *then);
            }
        }
        for (value, then) in out.deadline_missed.iter_mut().zip(&earlier.deadline_missed) {
            *value = delta(*value, *then);
        }
        out.journal_failures = delta(self.journal_failures, earlier.journal_failures);
        out.messages_malformed = delta(self.messages_malformed, earlier.messages_malformed);
        out.frames_unframeable = delta(self.frames_unframeable, earlier.frames_unframeable);
        out.fleet_errors = delta(self.fleet_errors, earlier.fleet_errors);
        out.write_timeouts = delta(self.write_timeouts, earlier.write_timeouts);
        out.journal_batches = delta(self.journal_batches, earlier.journal_batches);
        out.journal_records = delta(self.journal_records, earlier.journal_records);
        out.journal_commit_us = delta(self.journal_commit_us, earlier.journal_commit_us);
        out
    }

    /// Adds a later interval to this one: counters summed, gauges at their
    /// highest (in an incident the peak depth is the one to see).
    fn add(&mut self, later: &Counts) {
        for (row, later_row) in self.responses.iter_mut().zip(&later.responses) {
            for (value, add) in row.iter_mut().zip(later_row) {
                *value = value.saturating_add(*add);
            }
        }
        for (row, later_row) in self.shed.iter_mut().zip(&later.shed) {
            for (value, add) in row.iter_mut().zip(later_row) {
                *value = value.saturating_add(*add);
            }
        }
        for (value, add) in self.deadline_missed.iter_mut().zip(&later.deadline_missed) {
            *value = value.saturating_add(*add);
        }
        self.journal_failures = self.journal_failures.saturating_add(later.journal_failures);
        self.messages_malformed = self
            .messages_malformed
            .saturating_add(later.messages_malformed);
        self.frames_unframeable = self
            .frames_unframeable
            .saturating_add(later.frames_unframeable);
        self.fleet_errors = self.fleet_errors.saturating_add(later.fleet_errors);
        self.write_timeouts = self.write_timeouts.saturating_add(later.write_timeouts);
        self.journal_batches = self.journal_batches.saturating_add(later.journal_batches);
        self.journal_records = self.journal_records.saturating_add(later.journal_records);
        self.journal_commit_us = self
            .journal_commit_us
            .saturating_add(later.journal_commit_us);
        self.journal_queue_depth = self.journal_queue_depth.max(later.journal_queue_depth);
        self.shard_mailbox_depth = self.shard_mailbox_depth.max(later.shard_mailbox_depth);
        self.admission_limit = self.admission_limit.max(later.admission_limit);
        self.admission_in_flight = self.admission_in_flight.max(later.admission_in_flight);
    }

    /// Records per committed batch in the interval; 0 without a batch.
    // Counts far below 2^53: the division is exact enough for a chart.
    #[allow(clippy::as_conversions)]
    fn journal_batch_size_mean(&self) -> f64 {
        if self.journal_batches == 0 {
            0.0
        } else {
            self.journal_records as f64 / self.journal_batches as f64
        }
    }

    /// A batch's mean commit time in the interval, in microseconds; 0
    /// without a batch.
    fn journal_commit_us_mean(&self) -> u64 {
        self.journal_commit_us
            .checked_div(self.journal_batches)
            .unwrap_or(0)
    }

    fn json(&self) -> Value {
        let by_channel = |rows: &[[u64; CODES.len()]; 2]| -> BTreeMap<&str, BTreeMap<&str, u64>> {
            CHANNELS
                .iter()
                .zip(rows)
                .map(|(channel, row)| {
                    (
                        channel.as_str(),
                        CODES.iter().copied().zip(row.iter().copied()).collect(),
                    )
                })
                .collect()
        };
        let shed: BTreeMap<&str, BTreeMap<&str, u64>> = CHANNELS
            .iter()
            .zip(&self.shed)
            .map(|(channel, row)| {
                (
                    channel.as_str(),
                    SHEDS
                        .iter()
                        .map(|reason| reason.as_str())
                        .zip(row.iter().copied())
                        .collect(),
                )
            })
            .collect();
        let deadline_missed: BTreeMap<&str, u64> = CHANNELS
            .iter()
            .map(|channel| channel.as_str())
            .zip(self.deadline_missed.iter().copied())
            .collect();
        json!({
            "responses": by_channel(&self.responses),
            "shed": shed,
            "deadline_missed": deadline_missed,
            "errors": {
                "journal_failures": self.journal_failures,
                "messages_malformed": self.messages_malformed,
                "frames_unframeable": self.frames_unframeable,
                "fleet_errors": self.fleet_errors,
                "write_timeouts": self.write_timeouts,
            },
            "journal": {
                "batches": self.journal_batches,
                "records": self.journal_records,
                "batch_size_mean": self.journal_batch_size_mean(),
                "commit_us_mean": self.journal_commit_us_mean(),
                "queue_depth": self.journal_queue_depth,
            },
            "shard_mailbox_depth": self.shard_mailbox_depth,
            "admission": {
                "limit": self.admission_limit,
                "in_flight": self.admission_in_flight,
            },
        })
    }
}

/// One closed interval.
#[derive(Debug, Clone)]
struct Interval {
    start_ms: u64,
    length_ms: u64,
    /// Every channel and stage, in the order of [`Metrics::percentiles`].
    latency: Vec<Percentiles>,
    /// `[channel][stage]`: the histogram, V2 encoded ([`summarize`]).
    encoded: [[Vec<u8>; STAGES.len()]; 2],
    counts: Counts,
}

impl Interval {
    fn to_json(&self) -> Value {
        let mut value = self.counts.json();
        if let Value::Object(map) = &mut value {
            map.insert("start_ms".to_owned(), json!(self.start_ms));
            map.insert("length_ms".to_owned(), json!(self.length_ms));
            map.insert("latency_us".to_owned(), json!(self.latency));
        }
        value
    }
}

/// The minute being filled from closed seconds.
#[derive(Debug)]
struct OpenMinute {
    start_ms: u64,
    histograms: [[Histogram<u64>; STAGES.len()]; 2],
    counts: Counts,
}

/// What the closing task owns: the rings and the state between closes.
#[derive(Debug, Default)]
struct History {
    seconds: VecDeque<Interval>,
    minutes: VecDeque<Interval>,
    minute: Option<OpenMinute>,
    /// When the open interval began and the totals then; `None` before the
    /// first close, which only starts the timeline.
    opened: Option<(u64, Counts)>,
    /// Emptied histograms to swap in at the next close.
    spares: Vec<Histogram<u64>>,
}

/// The closed intervals of the switch's [`Metrics`]; see the module doc.
#[derive(Debug, Default)]
pub struct Timeline {
    history: Mutex<History>,
}

/// An interval's percentiles and encoded histograms, `[channel][stage]`.
///
/// V2 encoded, not deflated: deflating eight histograms every second (a
/// fresh compressor each, hundreds of KB zeroed) cost 4 million
/// instructions a second, more than the requests themselves at 250 a
/// second (`scripts/instructions-per-request`). The `.hlog`, asked for
/// rarely, deflates what it writes.
fn summarize(
    histograms: &[[Histogram<u64>; STAGES.len()]; 2],
) -> (Vec<Percentiles>, [[Vec<u8>; STAGES.len()]; 2]) {
    let mut latency = Vec::with_capacity(CHANNELS.len() * STAGES.len());
    let mut serializer = V2Serializer::new();
    let encoded = std::array::from_fn(|channel_at| {
        std::array::from_fn(|stage_at| {
            let mut bytes = Vec::new();
            if let (Some(channel), Some(stage), Some(histogram)) = (
                CHANNELS.get(channel_at),
                STAGES.get(stage_at),
                histograms.get(channel_at).and_then(|row| row.get(stage_at)),
            ) {
                latency.push(Percentiles::of(*channel, *stage, histogram));
                if let Err(error) = serializer.serialize(histogram, &mut bytes) {
                    // Only a histogram larger than memory can fail to encode.
                    tracing::warn!(?error, "interval histogram not encoded");
                    bytes.clear();
                }
            }
            bytes
        })
    });
    (latency, encoded)
}

impl Metrics {
    /// Swaps every open interval histogram for an empty one (from `spares`
    /// when there is one) and returns the closed ones, `[channel][stage]`.
    fn take_interval(
        &self,
        spares: &mut Vec<Histogram<u64>>,
    ) -> [[Histogram<u64>; STAGES.len()]; 2] {
        std::array::from_fn(|channel| {
            std::array::from_fn(|stage| {
                let mut fresh = spares.pop().unwrap_or_else(interval_histogram);
                if let Some(cell) = self.interval_us.get(channel).and_then(|row| row.get(stage))
                    && let Ok(mut open) = cell.lock()
                {
                    std::mem::swap(&mut *open, &mut fresh);
                }
                fresh
            })
        })
    }

    /// The cumulative counters now, with the gauges of `readings`.
    fn totals(&self, readings: &Readings) -> Counts {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            responses: std::array::from_fn(|channel| {
                std::array::from_fn(|code| {
                    self.responses
                        .get(channel)
                        .and_then(|row| row.get(code))
                        .map_or(0, load)
                })
            }),
            shed: std::array::from_fn(|channel| {
                std::array::from_fn(|reason| {
                    self.shed
                        .get(channel)
                        .and_then(|row| row.get(reason))
                        .map_or(0, load)
                })
            }),
            deadline_missed: std::array::from_fn(|channel| {
                self.deadline_missed.get(channel).map_or(0, load)
            }),
            journal_failures: load(&self.journal_failures),
            messages_malformed: load(&self.messages_malformed),
            frames_unframeable: load(&self.frames_unframeable),
            fleet_errors: load(&self.fleet_errors),
            write_timeouts: self
                .connections_closed
                .iter()
                .flatten()
                .map(load)
                .fold(0, u64::saturating_add),
            journal_batches: readings.journal.batches,
            journal_records: readings.journal.records,
            journal_commit_us: readings.journal.commit_time_us_sum,
            journal_queue_depth: readings.journal.queue_depth,
            shard_mailbox_depth: readings.shard_mailbox_depth,
            admission_limit: readings.admission_limit,
            admission_in_flight: readings.admission_in_flight,
        }
    }
}

impl Timeline {
    /// Closes `metrics`' open interval at `now_ms` (wall clock) and opens
    /// the next; `readings` are the other components' values now. Called
    /// once a second by one task; the first call only starts the timeline.
    pub fn close_interval(&self, metrics: &Metrics, now_ms: u64, readings: &Readings) {
        let totals = metrics.totals(readings);
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        let history = &mut *history;
        let mut closed = metrics.take_interval(&mut history.spares);
        let Some((start_ms, totals_then)) = history.opened.replace((now_ms, totals)) else {
            // What was recorded before the timeline started belongs to no interval.
            for histogram in closed.iter_mut().flatten() {
                histogram.reset();
            }
            history.spares.extend(closed.into_iter().flatten());
            return;
        };
        let counts = totals.since(&totals_then);
        let (latency, encoded) = summarize(&closed);
        push_bounded(
            &mut history.seconds,
            Interval {
                start_ms,
                length_ms: now_ms.saturating_sub(start_ms),
                latency,
                encoded,
                counts,
            },
            SECONDS_KEPT,
        );
        let minute = history.minute.get_or_insert_with(|| OpenMinute {
            start_ms,
            histograms: std::array::from_fn(|_| std::array::from_fn(|_| interval_histogram())),
            counts: Counts::default(),
        });
        for (sum, second) in minute
            .histograms
            .iter_mut()
            .flatten()
            .zip(closed.iter().flatten())
        {
            // Same bounds on both sides: adding cannot fail.
            let _ = sum.add(second);
        }
        minute.counts.add(&counts);
        if now_ms.saturating_sub(minute.start_ms) >= MINUTE_MS
            && let Some(minute) = history.minute.take()
        {
            let (latency, encoded) = summarize(&minute.histograms);
            push_bounded(
                &mut history.minutes,
                Interval {
                    start_ms: minute.start_ms,
                    length_ms: now_ms.saturating_sub(minute.start_ms),
                    latency,
                    encoded,
                    counts: minute.counts,
                },
                MINUTES_KEPT,
            );
        }
        for histogram in closed.iter_mut().flatten() {
            histogram.reset();
        }
        history.spares.extend(closed.into_iter().flatten());
    }

    /// The closed intervals at `resolution` that started at or after
    /// `since_ms`, oldest first, as the JSON of `GET /admin/timeline`.
    pub fn json(&self, resolution: Resolution, since_ms: u64) -> Value {
        let intervals: Vec<Value> = self
            .history
            .lock()
            .map(|history| {
                ring(&history, resolution)
                    .iter()
                    .filter(|interval| interval.start_ms >= since_ms)
                    .map(Interval::to_json)
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "resolution": resolution.as_str(),
            "intervals": intervals,
        })
    }

    /// The closed intervals of one channel and stage at `resolution` as an
    /// HdrHistogram interval log (`.hlog`, V2 compressed histograms), which
    /// HdrHistogram's own log processors read.
    pub fn hlog(
        &self,
        resolution: Resolution,
        channel: Channel,
        stage: Stage,
    ) -> Result<Vec<u8>, TimelineError> {
        // Copied out so the lock is not held while decoding.
        let intervals: Vec<(u64, u64, Vec<u8>)> = self
            .history
            .lock()
            .map(|history| {
                ring(&history, resolution)
                    .iter()
                    .filter_map(|interval| {
                        let bytes = interval
                            .encoded
                            .get(channel_index(channel))?
                            .get(stage.index())?;
                        Some((interval.start_ms, interval.length_ms, bytes.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let base_ms = intervals.first().map_or(0, |(start_ms, _, _)| *start_ms);
        let base = UNIX_EPOCH + Duration::from_millis(base_ms);
        let write = |error: std::io::Error| TimelineError::Write(error.to_string());
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "[Logged with switch {}: {} {} latency, {} intervals]",
                env!("CARGO_PKG_VERSION"),
                channel.as_str(),
                stage.as_str(),
                resolution.as_str()
            ))
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Values in microseconds]")
            .with_start_time(base)
            .with_base_time(base)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(write)?;
        // The column legend Java's log writer puts before the first interval;
        // the crate's writer has no call for it.
        out.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut out, &mut serializer)
            .map_err(write)?;
        let mut deserializer = Deserializer::new();
        for (start_ms, length_ms, bytes) in intervals {
            let histogram: Histogram<u64> = deserializer
                .deserialize(&mut bytes.as_slice())
                .map_err(|error| TimelineError::Decode {
                    channel: channel.as_str(),
                    stage: stage.as_str(),
                    start_ms,
                    detail: format!("{error:?}"),
                })?;
            writer
                .write_histogram(
                    &histogram,
                    Duration::from_millis(start_ms.saturating_sub(base_ms)),
                    Duration::from_millis(length_ms),
                    None,
                )
                .map_err(|error| TimelineError::Write(format!("{error:?}")))?;
        }
        Ok(out)
    }
}

fn ring(history: &History, resolution: Resolution) -> &VecDeque<Interval> {
    match resolution {
        Resolution::Second => &history.seconds,
        Resolution::Minute => &history.minutes,
    }
}

/// Appends `interval`, dropping the oldest beyond `kept`.
fn push_bounded(ring: &mut VecDeque<Interval>, interval: Interval, kept: usize) {
    while ring.len() >= kept {
        ring.pop_front();
    }
    ring.push_back(interval);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use protocol::ResponseCode;

    use crate::ops::metrics::Shed;
    use storage::JournalStats;

    const T0_MS: u64 = 1_764_806_400_000;

    fn total<'a>(interval: &'a Value, channel: &str, stage: &str) -> &'a Value {
        interval["latency_us"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["channel"] == channel && p["stage"] == stage)
            .unwrap()
    }

    #[test]
    fn the_first_close_starts_the_timeline_and_each_next_closes_one_interval() {
        let metrics = Metrics::default();
        let timeline = Timeline::default();
        metrics.record(Channel::Iso, Stage::Total, 777);
        timeline.close_interval(&metrics, T0_MS, &Readings::default());
        let json = timeline.json(Resolution::Second, 0);
        assert_eq!(json["intervals"].as_array().unwrap().len(), 0);

        metrics.record(Channel::Iso, Stage::Total, 100);
        metrics.record(Channel::Iso, Stage::Total, 200);
        metrics.record(Channel::Http, Stage::Decode, 5);
        timeline.close_interval(&metrics, T0_MS + 1_003, &Readings::default());
        timeline.close_interval(&metrics, T0_MS + 2_000, &Readings::default());

        let json = timeline.json(Resolution::Second, 0);
        let intervals = json["intervals"].as_array().unwrap();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0]["start_ms"], T0_MS);
        assert_eq!(intervals[0]["length_ms"], 1_003);
        assert_eq!(intervals[1]["start_ms"], T0_MS + 1_003);
        assert_eq!(intervals[1]["length_ms"], 997);
        // The 777 us before the start belongs to no interval.
        assert_eq!(total(&intervals[0], "iso", "total")["count"], 2);
        assert_eq!(total(&intervals[0], "iso", "total")["max_us"], 200);
        assert_eq!(total(&intervals[0], "http", "decode")["count"], 1);
        assert_eq!(total(&intervals[1], "iso", "total")["count"], 0);
        // The since-start histogram still has all three.
        let since_start = metrics.percentiles();
        let iso_total = since_start
            .iter()
            .find(|p| p.channel == "iso" && p.stage == "total")
            .unwrap();
        assert_eq!(iso_total.count, 3);
        // `since` keeps the newer ones only.
        let json = timeline.json(Resolution::Second, T0_MS + 1);
        assert_eq!(json["intervals"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn each_interval_has_its_own_percentiles() {
        let metrics = Metrics::default();
        let timeline = Timeline::default();
        timeline.close_interval(&metrics, T0_MS, &Readings::default());
        for us in 1..=1_000 {
            metrics.record(Channel::Iso, Stage::JournalWait, us);
        }
        timeline.close_interval(&metrics, T0_MS + 1_000, &Readings::default());
        for _ in 0..100 {
            metrics.record(Channel::Iso, Stage::JournalWait, 250_000);
        }
        timeline.close_interval(&metrics, T0_MS + 2_000, &Readings::default());

        let json = timeline.json(Resolution::Second, 0);
        let intervals = json["intervals"].as_array().unwrap();
        let first = total(&intervals[0], "iso", "journal_wait");
        let near = |value: &Value, expected: u64| {
            let value = value.as_u64().unwrap();
            // Two significant digits: within 1%.
            assert!(
                value.abs_diff(expected) * 100 <= expected,
                "{value} vs {expected}"
            );
        };
        assert_eq!(first["count"], 1_000);
        near(&first["p50_us"], 500);
        near(&first["p90_us"], 900);
        near(&first["p99_us"], 990);
        near(&first["p999_us"], 999);
        near(&first["max_us"], 1_000);
        let second = total(&intervals[1], "iso", "journal_wait");
        assert_eq!(second["count"], 100);
        near(&second["p50_us"], 250_000);
        near(&second["p99_us"], 250_000);
    }

    #[test]
    fn the_rings_keep_five_minutes_of_seconds_and_an_hour_of_minutes() {
        let metrics = Metrics::default();
        let timeline = Timeline::default();
        timeline.close_interval(&metrics, T0_MS, &Readings::default());
        for second in 1..=(u64::try_from(SECONDS_KEPT).unwrap() + 20) {
            metrics.record(Channel::Iso, Stage::Total, second);
            timeline.close_interval(&metrics, T0_MS + second * 1_000, &Readings::default());
        }
        let json = timeline.json(Resolution::Second, 0);
        let seconds = json["intervals"].as_array().unwrap();
        assert_eq!(seconds.len(), SECONDS_KEPT);
        // The oldest 20 were dropped: the first kept started at second 20.
        assert_eq!(seconds[0]["start_ms"], T0_MS + 20_000);
        assert_eq!(total(&seconds[0], "iso", "total")["max_us"], 21);
        // 320 s of seconds closed five minutes: each holds its 60 seconds.
        let json = timeline.json(Resolution::Minute, 0);
        let minutes = json["intervals"].as_array().unwrap();
        assert_eq!(minutes.len(), 5);
        assert_eq!(minutes[0]["start_ms"], T0_MS);
        assert_eq!(minutes[0]["length_ms"], 60_000);
        assert_eq!(total(&minutes[0], "iso", "total")["count"], 60);
        assert_eq!(total(&minutes[0], "iso", "total")["max_us"], 60);
        assert_eq!(minutes[1]["start_ms"], T0_MS + 60_000);

        // Long closes (a stalled ticker) close a minute each; only the last
        // hour of them is kept.
        let start_ms = T0_MS + 400_000;
        for minute in 0..(u64::try_from(MINUTES_KEPT).unwrap() + 10) {
            timeline.close_interval(&metrics, start_ms + minute * 60_000, &Readings::default());
        }
        let json = timeline.json(Resolution::Minute, 0);
        assert_eq!(json["intervals"].as_array().unwrap().len(), MINUTES_KEPT);
        let json = timeline.json(Resolution::Second, 0);
        assert_eq!(json["intervals"].as_array().unwrap().len(), SECONDS_KEPT);
    }

    /// The journal's counters as its writer reports them.
    fn journal(batches: u64, records: u64, commit_us: u64, queue_depth: u64) -> JournalStats {
        JournalStats {
            batches,
            records,
            commit_time_us_sum: commit_us,
            queue_depth,
            ..JournalStats::default()
        }
    }

    #[test]
    fn counts_are_deltas_per_interval_and_gauges_are_sampled() {
        let metrics = Metrics::default();
        let timeline = Timeline::default();
        metrics.count_response(Channel::Iso, ResponseCode::Approved);
        timeline.close_interval(
            &metrics,
            T0_MS,
            &Readings {
                journal: journal(10, 100, 20_000, 0),
                ..Readings::default()
            },
        );
        for _ in 0..3 {
            metrics.count_response(Channel::Iso, ResponseCode::Approved);
        }
        metrics.count_response(Channel::Http, ResponseCode::Other(*b"51"));
        metrics.count_shed(Channel::Iso, Shed::Deadline);
        metrics.record_answer(
            Channel::Http,
            Duration::from_millis(30),
            Duration::from_millis(20),
        );
        metrics.journal_failures.fetch_add(2, Ordering::Relaxed);
        timeline.close_interval(
            &metrics,
            T0_MS + 1_000,
            &Readings {
                journal: journal(14, 130, 32_000, 42),
                shard_mailbox_depth: 7,
                admission_limit: 256,
                admission_in_flight: 9,
                ..Readings::default()
            },
        );
        timeline.close_interval(
            &metrics,
            T0_MS + 2_000,
            &Readings {
                journal: journal(14, 130, 32_000, 1),
                ..Readings::default()
            },
        );
        let json = timeline.json(Resolution::Second, 0);
        let intervals = json["intervals"].as_array().unwrap();
        let first = &intervals[0];
        assert_eq!(first["responses"]["iso"]["00"], 3);
        assert_eq!(first["responses"]["http"]["other"], 1);
        assert_eq!(first["responses"]["http"]["00"], 0);
        assert_eq!(first["shed"]["iso"]["deadline"], 1);
        assert_eq!(first["shed"]["http"]["mailbox"], 0);
        assert_eq!(first["deadline_missed"]["http"], 1);
        assert_eq!(first["errors"]["journal_failures"], 2);
        assert_eq!(first["journal"]["batches"], 4);
        assert_eq!(first["journal"]["records"], 30);
        assert_eq!(first["journal"]["batch_size_mean"], 7.5);
        assert_eq!(
            first["journal"]["commit_us_mean"], 3_000,
            "12 000 µs over 4 batches"
        );
        assert_eq!(first["journal"]["queue_depth"], 42);
        assert_eq!(first["shard_mailbox_depth"], 7);
        assert_eq!(first["admission"]["limit"], 256);
        assert_eq!(first["admission"]["in_flight"], 9);
        let second = &intervals[1];
        assert_eq!(second["responses"]["iso"]["00"], 0);
        assert_eq!(second["journal"]["batches"], 0);
        assert_eq!(second["journal"]["batch_size_mean"], 0.0);
        assert_eq!(second["journal"]["queue_depth"], 1);
    }

    #[test]
    fn the_json_has_every_stage_channel_and_count_of_an_interval() {
        let metrics = Metrics::default();
        let timeline = Timeline::default();
        timeline.close_interval(&metrics, T0_MS, &Readings::default());
        timeline.close_interval(&metrics, T0_MS + 1_000, &Readings::default());
        let json = timeline.json(Resolution::Second, 0);
        assert_eq!(json["resolution"], "1s");
        let interval = &json["intervals"][0];
        let mut keys: Vec<&str> = interval
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "admission",
                "deadline_missed",
                "errors",
                "journal",
                "latency_us",
                "length_ms",
                "responses",
                "shard_mailbox_depth",
                "shed",
                "start_ms"
            ]
        );
        let latency = interval["latency_us"].as_array().unwrap();
        assert_eq!(latency.len(), CHANNELS.len() * STAGES.len());
        for channel in CHANNELS {
            for stage in STAGES {
                let p = total(interval, channel.as_str(), stage.as_str());
                for key in ["count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
                    assert!(p[key].is_u64(), "{channel:?} {stage:?} {key}");
                }
            }
        }
        assert_eq!(
            interval["responses"]["iso"].as_object().unwrap().len(),
            CODES.len()
        );
        assert_eq!(
            interval["shed"]["http"].as_object().unwrap().len(),
            SHEDS.len()
        );
    }

    #[test]
    fn the_hlog_holds_each_interval_as_the_json_counts_it() {
        let metrics = Metrics::default();
        let timeline = Timeline::default();
        timeline.close_interval(&metrics, T0_MS, &Readings::default());
        for (second, values) in [(1_u64, 10_u64), (2, 0), (3, 250)] {
            for us in 1..=values {
                metrics.record(Channel::Http, Stage::Decide, us * 100);
            }
            timeline.close_interval(&metrics, T0_MS + second * 1_000, &Readings::default());
        }
        let log = timeline
            .hlog(Resolution::Second, Channel::Http, Stage::Decide)
            .unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(
            text.contains("#[StartTime: 1764806400.000 (seconds since epoch)]"),
            "{text}"
        );
        assert!(text.contains(
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
        ));
        let mut deserializer = Deserializer::new();
        let mut counts = Vec::new();
        let mut starts = Vec::new();
        for entry in IntervalLogIterator::new(&log) {
            if let LogEntry::Interval(interval) = entry.unwrap() {
                let bytes = base64_decode(interval.encoded_histogram());
                let histogram: Histogram<u64> =
                    deserializer.deserialize(&mut bytes.as_slice()).unwrap();
                counts.push(histogram.len());
                starts.push(interval.start_timestamp().as_millis());
            }
        }
        assert_eq!(counts, [10, 0, 250]);
        assert_eq!(starts, [0, 1_000, 2_000]);
    }

    /// Standard base64, as interval logs write histograms.
    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let mut buffer = 0_u32;
        let mut bits = 0;
        for byte in text.bytes().filter(|b| *b != b'=') {
            let value = ALPHABET.iter().position(|a| *a == byte).unwrap();
            buffer = buffer << 6 | u32::try_from(value).unwrap();
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push(u8::try_from(buffer >> bits & 0xff).unwrap());
            }
        }
        out
    }

    /// The sizes the module doc states the rings' memory from.
    #[test]
    fn an_interval_histogram_is_as_large_as_the_module_doc_says() {
        let mut histogram = interval_histogram();
        assert_eq!(histogram.distinct_values(), 2_560);
        let encode = |histogram: &Histogram<u64>| {
            let mut bytes = Vec::new();
            V2Serializer::new()
                .serialize(histogram, &mut bytes)
                .unwrap();
            bytes.len()
        };
        let idle = encode(&histogram);
        // A busy second: 2,000 answers spread from 200 us to 20 ms.
        let mut seed = 7_u64;
        for _ in 0..2_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            histogram.record(200 + (seed >> 33) % 19_800).unwrap();
        }
        let busy = encode(&histogram);
        // Every count filled.
        let values: Vec<u64> = histogram
            .iter_all()
            .map(|step| step.value_iterated_to())
            .collect();
        assert_eq!(values.len(), 2_560);
        for (step, value) in (0_u64..).zip(values) {
            histogram.record_n(value, 1_000 + step).unwrap();
        }
        let full = encode(&histogram);
        println!("idle {idle} B, busy {busy} B, full {full} B");
        assert!(idle < 100, "{idle}");
        assert!(busy < 1_024, "{busy}");
        assert!(full <= 6_144, "{full}");
    }
}
