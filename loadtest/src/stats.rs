//! What a run measured: [`Tally`] (latency histograms per request type, the
//! counts that must add up, responses by code) and the [`Shard`]s the
//! connections record into.
//!
//! Connections record into a few shards behind mutexes rather than one: a
//! record is a histogram increment under an uncontended lock, and the
//! reporter takes each lock once a second to move the shard's interval into
//! the run's totals (the HdrHistogram "recorder" pattern). Latencies are in
//! nanoseconds, so the `.hlog` is in the unit HdrHistogram's own tools assume.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::units::to_f64;
use crate::workload::Kind;

/// A new auto-resizing histogram with 3 significant digits: it starts small
/// and grows only to the largest value seen.
#[allow(clippy::expect_used)]
pub fn histogram() -> Histogram<u64> {
    // Creation fails only for more than 5 significant digits; 3 is a constant.
    Histogram::new(3).expect("3 significant digits are supported")
}

/// Nanoseconds as microseconds to one decimal, as reports give latencies.
pub fn us_of_ns(ns: u64) -> f64 {
    (to_f64(ns) / 100.0).round() / 10.0
}

/// `count` over `seconds` to one decimal, as reports give rates.
pub fn rate_per_s(count: u64, seconds: f64) -> f64 {
    (to_f64(count) / seconds * 10.0).round() / 10.0
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `h` (nanoseconds), in microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: (h.mean() / 100.0).round() / 10.0,
            p50: us_of_ns(h.value_at_quantile(0.5)),
            p90: us_of_ns(h.value_at_quantile(0.9)),
            p99: us_of_ns(h.value_at_quantile(0.99)),
            p999: us_of_ns(h.value_at_quantile(0.999)),
            p9999: us_of_ns(h.value_at_quantile(0.9999)),
            max: us_of_ns(h.max()),
        }
    }
}

/// What came back for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// An ISO 8583 response's DE39, or the JSON `response_code`.
    Code([u8; 2]),
    /// A response without DE39 (the echo server sends requests back).
    NoCode,
    /// An HTTP status other than 2xx.
    Http(u16),
}

impl Outcome {
    /// Whether the request was approved.
    pub fn is_approved(self) -> bool {
        self == Outcome::Code(*b"00")
    }

    /// Whether the switch refused the request rather than decide it: 91
    /// (issuer or switch inoperative, what a shed ISO request gets), HTTP
    /// 503 or 429. Everything else is an answer the acquirer can use.
    pub fn is_shed(self) -> bool {
        matches!(
            self,
            Outcome::Code([b'9', b'1']) | Outcome::Http(503) | Outcome::Http(429)
        )
    }

    /// The label in reports: `00`, `none`, `HTTP 503`.
    pub fn label(self) -> String {
        self.to_string()
    }

    /// What the code means, from the protocol's DE39 table.
    pub fn description(self) -> &'static str {
        match self {
            Outcome::Code(code) => protocol::ResponseCode::parse(&code)
                .map_or("not a response code", |code| code.description()),
            Outcome::NoCode => "(no DE39: an echo)",
            Outcome::Http(status) if status >= 500 => "server error",
            Outcome::Http(_) => "client error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Code(code) => f.write_str(&String::from_utf8_lossy(code)),
            Outcome::NoCode => f.write_str("none"),
            Outcome::Http(status) => write!(f, "HTTP {status}"),
        }
    }
}

/// Why a sent request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorReason {
    /// The connection closed (or broke) while the request was pending.
    ConnectionClosed,
    /// The request could not be encoded under the dialect.
    Encode,
}

impl ErrorReason {
    /// The label in reports.
    pub fn label(self) -> &'static str {
        match self {
            ErrorReason::ConnectionClosed => "connection closed",
            ErrorReason::Encode => "encode failed",
        }
    }
}

/// Counts of one request type. They add up: `scheduled = sent + dropped`
/// and `sent = received + timeouts + errors` once a run has drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Requests put on the wire.
    pub sent: u64,
    /// Responses matched to a pending request in time.
    pub received: u64,
    /// Sent requests not answered within `--timeout` of their intended time.
    pub timeouts: u64,
    /// Sent requests lost to a broken connection.
    pub errors: u64,
    /// Requests never sent: by the time a slot was free (or the connection
    /// back) they were already older than `--timeout`. Open loop only.
    pub dropped: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.received += other.received;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
        self.dropped += other.dropped;
    }

    /// Requests the schedule asked for.
    pub fn scheduled(&self) -> u64 {
        self.sent + self.dropped
    }
}

/// Measurements of some stretch of a run: an interval, or all of it.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency from intended send time to response, nanoseconds, per kind.
    pub latency_ns: [Histogram<u64>; 4],
    /// The same, of the answers that were not shed ([`Outcome::is_shed`]):
    /// what the switch admitted took this long.
    pub admitted_ns: Histogram<u64>,
    /// How late the load tester itself put requests on the wire, relative
    /// to their intended time. High values mean the tester is the
    /// bottleneck.
    pub send_lag_ns: Histogram<u64>,
    pub counts: [Counts; 4],
    pub outcomes: BTreeMap<(Kind, Outcome), u64>,
    pub errors: BTreeMap<ErrorReason, u64>,
    /// Responses that match no pending request of their connection: late
    /// answers to requests already counted as timeouts, or strangers.
    pub unmatched: u64,
    /// Frames that did not decode (or HTTP bodies that did not parse).
    pub bad_responses: u64,
    /// Responses to warmup requests: in no other count, but work the
    /// server and the load tester did (CPU per request over a whole run).
    pub warmup_received: u64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            latency_ns: [histogram(), histogram(), histogram(), histogram()],
            admitted_ns: histogram(),
            send_lag_ns: histogram(),
            counts: [Counts::default(); 4],
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
            unmatched: 0,
            bad_responses: 0,
            warmup_received: 0,
        }
    }
}

impl Tally {
    /// Records a response to a measured request.
    pub fn record_response(&mut self, kind: Kind, outcome: Outcome, latency_ns: u64) {
        let _ = self.latency_ns[kind.index()].record(latency_ns);
        if !outcome.is_shed() {
            let _ = self.admitted_ns.record(latency_ns);
        }
        self.counts[kind.index()].received += 1;
        *self.outcomes.entry((kind, outcome)).or_insert(0) += 1;
    }

    /// Records a measured request put on the wire `lag_ns` after its
    /// intended time.
    pub fn record_sent(&mut self, kind: Kind, lag_ns: Option<u64>) {
        self.counts[kind.index()].sent += 1;
        if let Some(lag) = lag_ns {
            let _ = self.send_lag_ns.record(lag);
        }
    }

    /// Records a measured request that timed out.
    pub fn record_timeout(&mut self, kind: Kind) {
        self.counts[kind.index()].timeouts += 1;
    }

    /// Records a measured request that was never sent.
    pub fn record_dropped(&mut self, kind: Kind) {
        self.counts[kind.index()].dropped += 1;
    }

    /// Records a measured, sent request lost for `reason`.
    pub fn record_error(&mut self, kind: Kind, reason: ErrorReason) {
        self.counts[kind.index()].errors += 1;
        *self.errors.entry(reason).or_insert(0) += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        for (mine, theirs) in self.latency_ns.iter_mut().zip(&other.latency_ns) {
            // Auto-resizing histograms of one precision always add.
            let _ = mine.add(theirs);
        }
        let _ = self.admitted_ns.add(&other.admitted_ns);
        let _ = self.send_lag_ns.add(&other.send_lag_ns);
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            mine.add(theirs);
        }
        for (key, count) in &other.outcomes {
            *self.outcomes.entry(*key).or_insert(0) += count;
        }
        for (key, count) in &other.errors {
            *self.errors.entry(*key).or_insert(0) += count;
        }
        self.unmatched += other.unmatched;
        self.bad_responses += other.bad_responses;
        self.warmup_received += other.warmup_received;
    }

    /// Empties `self`, keeping the histograms' memory.
    pub fn reset(&mut self) {
        for h in &mut self.latency_ns {
            h.reset();
        }
        self.admitted_ns.reset();
        self.send_lag_ns.reset();
        self.counts = [Counts::default(); 4];
        self.outcomes.clear();
        self.errors.clear();
        self.unmatched = 0;
        self.bad_responses = 0;
        self.warmup_received = 0;
    }

    /// All kinds' latencies in one histogram.
    pub fn latency_all(&self) -> Histogram<u64> {
        let mut all = histogram();
        for h in &self.latency_ns {
            let _ = all.add(h);
        }
        all
    }

    /// All kinds' counts added.
    pub fn counts_all(&self) -> Counts {
        let mut all = Counts::default();
        for c in &self.counts {
            all.add(c);
        }
        all
    }

    /// Answers that refused the request ([`Outcome::is_shed`]).
    pub fn shed(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|((_, outcome), _)| outcome.is_shed())
            .map(|(_, count)| count)
            .sum()
    }

    /// Answers neither shed nor later than `deadline_ns`.
    pub fn good(&self, deadline_ns: u64) -> u64 {
        self.admitted_ns.count_between(0, deadline_ns)
    }

    /// Answers later than `deadline_ns`, shed or not; `all` is
    /// [`Tally::latency_all`], which the caller has at hand. The complement
    /// of the count [`Tally::good`] takes: the histogram's buckets near the
    /// deadline hold answers from both sides of it (0.1% precision), and
    /// `count_between` counts a range's edge buckets whole, so counting
    /// from just past the deadline counted that bucket twice.
    pub fn late(all: &Histogram<u64>, deadline_ns: u64) -> u64 {
        all.len().saturating_sub(all.count_between(0, deadline_ns))
    }

    /// Responses by outcome over all kinds.
    pub fn outcomes_all(&self) -> BTreeMap<Outcome, u64> {
        let mut all = BTreeMap::new();
        for ((_, outcome), count) in &self.outcomes {
            *all.entry(*outcome).or_insert(0) += count;
        }
        all
    }
}

/// What one group of connections records into.
#[derive(Debug, Default)]
pub struct Shard {
    pub tally: Tally,
    /// `--ack-log` lines not yet written.
    pub acks: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&histogram()).count, 0);
    }

    #[test]
    fn an_answer_near_the_deadline_is_good_or_late_never_both() {
        // A histogram bucket near 100 ms spans tens of microseconds: one
        // answer just inside the deadline and one just past it share it.
        let deadline_ns = 100_000_000;
        let mut tally = Tally::default();
        for latency_ns in [
            1_000_000,
            deadline_ns - 10_000,
            deadline_ns + 10_000,
            150_000_000,
        ] {
            tally.record_response(Kind::Authorization, Outcome::Code(*b"00"), latency_ns);
        }
        let all = tally.latency_all();
        let (good, late) = (tally.good(deadline_ns), Tally::late(&all, deadline_ns));
        assert_eq!(good + late, 4, "good {good} + late {late}");
        assert_eq!(good, 2);
        assert_eq!(late, 2);
    }

    #[test]
    fn tallies_merge_and_reset() {
        let mut a = Tally::default();
        a.record_sent(Kind::Authorization, Some(1_000));
        a.record_response(Kind::Authorization, Outcome::Code(*b"00"), 2_000_000);
        a.record_sent(Kind::Network, None);
        a.record_error(Kind::Network, ErrorReason::ConnectionClosed);
        let mut b = Tally::default();
        b.record_sent(Kind::Authorization, Some(3_000));
        b.record_timeout(Kind::Authorization);
        b.record_dropped(Kind::Authorization);
        b.merge(&a);
        let all = b.counts_all();
        assert_eq!(all.sent, 3);
        assert_eq!(all.sent, all.received + all.timeouts + all.errors);
        assert_eq!(all.scheduled(), 4);
        assert_eq!(b.latency_all().len(), 1);
        assert_eq!(b.admitted_ns.len(), 1);
        b.record_response(Kind::Authorization, Outcome::Code(*b"91"), 1_000);
        b.record_response(Kind::Authorization, Outcome::Http(503), 1_000);
        assert_eq!(b.latency_all().len(), 3);
        assert_eq!(b.admitted_ns.len(), 1, "sheds are not admitted");
        assert_eq!(b.send_lag_ns.len(), 2);
        assert_eq!(b.outcomes_all().get(&Outcome::Code(*b"00")), Some(&1));
        b.reset();
        assert_eq!(b.counts_all(), Counts::default());
        assert!(b.latency_all().is_empty());
        assert!(b.admitted_ns.is_empty());
        assert_eq!(Outcome::Http(503).label(), "HTTP 503");
        assert_eq!(Outcome::Code(*b"65").label(), "65");
        assert!(Outcome::Code(*b"00").is_approved());
    }
}
