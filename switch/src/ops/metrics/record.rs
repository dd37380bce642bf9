//! The counters and histograms the switch fills while it serves. Reading
//! them out (names, help texts, the Prometheus text) is `render.rs`'s.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use protocol::ResponseCode;
use protocol::domain::Channel;

use crate::admission::Refused;
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

pub(super) const STAGES: [Stage; 4] = [
    Stage::Decode,
    Stage::Decide,
    Stage::JournalWait,
    Stage::Total,
];
pub(super) const CHANNELS: [Channel; 2] = [Channel::Iso, Channel::Http];

impl Stage {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Decide => "decide",
            Stage::JournalWait => "journal_wait",
            Stage::Total => "total",
        }
    }

    /// The stage named `name` as [`Stage::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<Stage> {
        STAGES.into_iter().find(|stage| stage.as_str() == name)
    }

    // A fieldless enum's discriminant is its place in `STAGES`: nothing to lose.
    #[allow(clippy::as_conversions)]
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

pub(super) fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Iso => 0,
        Channel::Http => 1,
    }
}

/// Every DE39 value the switch counts by name; others are counted as "other".
pub(super) const CODES: [&str; 16] = [
    "00", "03", "05", "12", "13", "14", "30", "54", "57", "58", "61", "65", "91", "94", "96",
    "other",
];

/// A listener with a connection limit of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// ISO 8583 over plain TCP, `iso.connections_max`.
    Iso,
    /// ISO 8583 over mutual TLS, `iso.tls.connections_max`.
    IsoTls,
    /// The JSON API and the ops routes, `http.connections_max`.
    Http,
}

pub(super) const LISTENERS: [Listener; 3] = [Listener::Iso, Listener::IsoTls, Listener::Http];

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Iso => "iso",
            Listener::IsoTls => "iso_tls",
            Listener::Http => "http",
        }
    }

    // A fieldless enum's discriminant is its place in `LISTENERS`: nothing to lose.
    #[allow(clippy::as_conversions)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Why the switch closed an open connection of its own accord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer did not read its answers: a write waited the listener's
    /// write timeout (`iso.write_timeout_ms`, `http.write_timeout_ms`).
    WriteTimeout,
}

pub(super) const CLOSED: [Closed; 1] = [Closed::WriteTimeout];

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::WriteTimeout => "write_timeout",
        }
    }

    // A fieldless enum's discriminant is its place in `CLOSED`: nothing to lose.
    #[allow(clippy::as_conversions)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Why a card request or reversal was shed: answered 91 (HTTP 503) without
/// being decided, or with its decision given back before it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Refused at the door: the admission limit was reached.
    AdmissionLimit,
    /// Refused at the door: the limit binds and its merchant or acquirer
    /// holds its share.
    FairShare,
    /// Its deadline came before it could be answered in time.
    Deadline,
    /// The journal's queue was full.
    JournalQueue,
    /// A shard's mailbox was full.
    Mailbox,
}

/// A refusal at the door, as `switch_shed_total` counts it.
impl From<Refused> for Shed {
    fn from(refused: Refused) -> Shed {
        match refused {
            Refused::Limit => Shed::AdmissionLimit,
            Refused::FairShare => Shed::FairShare,
        }
    }
}

pub(super) const SHEDS: [Shed; 5] = [
    Shed::AdmissionLimit,
    Shed::FairShare,
    Shed::Deadline,
    Shed::JournalQueue,
    Shed::Mailbox,
];

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::AdmissionLimit => "admission_limit",
            Shed::FairShare => "fair_share",
            Shed::Deadline => "deadline",
            Shed::JournalQueue => "journal_queue",
            Shed::Mailbox => "mailbox",
        }
    }

    // A fieldless enum's discriminant is its place in `SHEDS`: nothing to lose.
    #[allow(clippy::as_conversions)]
    fn index(self) -> usize {
        self as usize
    }
}

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

pub(super) const REFUSALS: [Refusal; 5] = [
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

    // A fieldless enum's discriminant is its place in `REFUSALS`: nothing to lose.
    #[allow(clippy::as_conversions)]
    fn index(self) -> usize {
        self as usize
    }
}

/// The switch's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    /// `[channel][stage]`, microseconds, 3 significant digits, up to 60 s.
    pub(super) latency_us: [[Mutex<Histogram<u64>>; 4]; 2],
    pub(super) responses: [[AtomicU64; CODES.len()]; 2],
    /// Frames that could not be framed; their connection was closed.
    pub frames_unframeable: AtomicU64,
    /// Messages with a bad field, answered 30.
    pub messages_malformed: AtomicU64,
    /// `[listener]`: connections refused at the listener's connection limit.
    pub(super) connections_refused: [AtomicU64; LISTENERS.len()],
    /// `[reason]`: connections the switch closed.
    /// By listener, then by reason.
    pub(super) connections_closed: [[AtomicU64; CLOSED.len()]; LISTENERS.len()],
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Journal appends that failed (answered 96 / 503).
    pub journal_failures: AtomicU64,
    /// `[channel][reason]`: requests shed, answered 91 or HTTP 503.
    pub(super) shed: [[AtomicU64; SHEDS.len()]; 2],
    /// `[channel]`: answers that left after their request's deadline.
    pub(super) deadline_missed: [AtomicU64; 2],
    /// Duplicates answered with the original response.
    pub duplicates: AtomicU64,
    /// Redis calls (fleet velocity) that failed or timed out.
    pub fleet_errors: AtomicU64,
    /// Requests decided on the node's own limits because Redis failed
    /// (`fleet.on_redis_down = "local"`).
    pub fleet_fallbacks: AtomicU64,
    /// The generation of fleet velocity in Redis this node uses; 0 while
    /// none is whole (Redis lost it and it is being rebuilt).
    pub fleet_generation: AtomicU64,
    /// HTTP requests refused before their handler, by [`Refusal`].
    pub(super) refusals: [AtomicU64; REFUSALS.len()],
    /// Card requests refused at a merchant's admission rate, per channel.
    pub(super) rate_limited: [AtomicU64; 2],
    /// Failed authentications from an origin the full lockout table could
    /// not track.
    pub(super) lockout_untracked: AtomicU64,
    /// Configuration reloads: `[0]` applied, `[1]` refused.
    pub(super) config_reloads: [AtomicU64; 2],
    /// `[listener]`: TLS handshakes completed (on ISO, with an acquirer identified).
    pub(super) tls_handshakes: [AtomicU64; 2],
    /// `[listener][reason]`: TLS handshakes refused.
    pub(super) tls_refused: [[AtomicU64; RefusalReason::ALL.len()]; 2],
    /// `[channel][stage]`: the same timings in the timeline's open interval
    /// (`timeline.rs`), which swaps them out once a second.
    pub(super) interval_us: [[Mutex<Histogram<u64>>; 4]; 2],
}

fn histogram() -> Mutex<Histogram<u64>> {
    // 1 us to 60 s at 3 significant digits: fixed memory, never resizes.
    #[allow(clippy::expect_used)]
    let histogram =
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid");
    Mutex::new(histogram)
}

/// A histogram of one timeline interval: 1 us to 60 s as the since-start
/// ones, with 2 significant digits to keep the timeline small (see
/// `timeline.rs`).
pub(super) fn interval_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    let histogram =
        Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds are valid");
    histogram
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            latency_us: std::array::from_fn(|_| std::array::from_fn(|_| histogram())),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            frames_unframeable: AtomicU64::new(0),
            messages_malformed: AtomicU64::new(0),
            connections_refused: std::array::from_fn(|_| AtomicU64::new(0)),
            connections_closed: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            connections_open: AtomicU64::new(0),
            journal_failures: AtomicU64::new(0),
            shed: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            deadline_missed: std::array::from_fn(|_| AtomicU64::new(0)),
            duplicates: AtomicU64::new(0),
            fleet_errors: AtomicU64::new(0),
            fleet_fallbacks: AtomicU64::new(0),
            fleet_generation: AtomicU64::new(0),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            rate_limited: std::array::from_fn(|_| AtomicU64::new(0)),
            lockout_untracked: AtomicU64::new(0),
            config_reloads: std::array::from_fn(|_| AtomicU64::new(0)),
            tls_handshakes: std::array::from_fn(|_| AtomicU64::new(0)),
            tls_refused: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            interval_us: std::array::from_fn(|_| {
                std::array::from_fn(|_| Mutex::new(interval_histogram()))
            }),
        }
    }
}

impl Metrics {
    /// Records `us` microseconds spent in `stage`: since start, and in the
    /// timeline's open interval.
    pub fn record(&self, channel: Channel, stage: Stage, us: u64) {
        for cells in [&self.latency_us, &self.interval_us] {
            if let Some(cell) = cells
                .get(channel_index(channel))
                .and_then(|row| row.get(stage.index()))
                && let Ok(mut histogram) = cell.lock()
            {
                histogram.saturating_record(us.max(1));
            }
        }
    }

    /// Counts one request shed for `reason`.
    pub fn count_shed(&self, channel: Channel, reason: Shed) {
        if let Some(counter) = self
            .shed
            .get(channel_index(channel))
            .and_then(|row| row.get(reason.index()))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests shed on `channel`, every reason together.
    pub fn shed_total(&self, channel: Channel) -> u64 {
        self.shed
            .get(channel_index(channel))
            .map_or(0, |row| row.iter().map(|c| c.load(Ordering::Relaxed)).sum())
    }

    /// Records an answer leaving `elapsed` after its request arrived: its
    /// total time, and whether it missed the request's `deadline`.
    pub fn record_answer(&self, channel: Channel, elapsed: Duration, deadline: Duration) {
        self.record(
            channel,
            Stage::Total,
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        if elapsed > deadline
            && let Some(counter) = self.deadline_missed.get(channel_index(channel))
        {
            counter.fetch_add(1, Ordering::Relaxed);
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
        if let Some(counter) = self.refusals.get(reason.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection refused at `listener`'s connection limit.
    pub fn count_connection_refused(&self, listener: Listener) {
        if let Some(counter) = self.connections_refused.get(listener.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection of `listener` the switch closed for `reason`.
    pub fn count_closed(&self, listener: Listener, reason: Closed) {
        if let Some(counter) = self
            .connections_closed
            .get(listener.index())
            .and_then(|by_reason| by_reason.get(reason.index()))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a TLS handshake completed on `listener`.
    pub fn count_tls_handshake(&self, listener: TlsListener) {
        if let Some(counter) = self.tls_handshakes.get(listener.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a card request refused at its merchant's admission rate.
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

    /// Counts a configuration reload, applied or refused.
    pub fn count_config_reload(&self, applied: bool) {
        let index = usize::from(!applied);
        if let Some(counter) = self.config_reloads.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failure the lockout table had no room to track.
    pub fn count_lockout_untracked(&self) {
        self.lockout_untracked.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls `each` with every channel's and stage's histogram, locked.
    pub(super) fn each_histogram(&self, mut each: impl FnMut(Channel, Stage, &Histogram<u64>)) {
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
}
