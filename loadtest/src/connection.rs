//! One client connection: sends the requests the [`Schedule`] gives it,
//! matches responses to pending requests, times them out, and reconnects if
//! the server drops it. What is said on the wire is the [`Dialogue`]'s
//! business (ISO 8583 frames or HTTP/1.1), so both protocols share the
//! timing, the accounting and the coordinated-omission rules here.
//!
//! One task does both directions, with readiness-based `try_read` and
//! `try_write`, so its state (pending requests, buffers) needs no lock and a
//! large burst of requests can never deadlock against unread responses.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Instant;
use crate::schedule::{EARLY_MAX, Schedule};
use crate::stats::{ErrorReason, Outcome, Shard};
use crate::tls::{TlsClient, Transport};
use crate::units::duration_ns;
use crate::workload::{Kind, Plan, Workload};

/// What came off the wire for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A response carrying `key`, the value [`Dialogue::write_request`]
    /// returned for its request.
    Matched { key: u64, outcome: Outcome },
    /// A whole response that is not for this connection (another terminal).
    Stranger,
    /// A whole frame or body that could not be decoded.
    Undecodable,
}

/// A protocol spoken over one connection.
pub trait Dialogue: Send + 'static {
    /// Appends request `index`, planned as `plan`, to `out`, and returns the
    /// key its response will be matched by (DE11 for ISO 8583, the position
    /// on the connection for HTTP/1.1).
    fn write_request(
        &mut self,
        index: u64,
        plan: &Plan,
        out: &mut Vec<u8>,
    ) -> Result<u64, ErrorReason>;

    /// Takes one whole response off the front of `input`: `Ok(None)` until
    /// one is buffered, `Err` when the stream can no longer be read (a broken
    /// length header), which closes the connection. Appends an `--ack-log`
    /// line to `acks` for an approval when asked to.
    fn read_response(
        &mut self,
        input: &[u8],
        acks: &mut String,
    ) -> Result<Option<(usize, Reply)>, String>;

    /// The connection was replaced by a fresh one.
    fn reconnected(&mut self);
}

/// A request waiting for its response.
#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: Kind,
    /// When the schedule meant it to leave; timeouts count from here.
    intended: Instant,
    /// Where its latency starts: the earlier of intended and actual send.
    started: Instant,
    measured: bool,
}

/// Everything one connection task needs.
#[derive(Debug)]
pub struct Connection<D> {
    /// 0-based; decides which requests of the schedule are this
    /// connection's.
    pub id: u64,
    pub stream: Transport,
    /// Where to reconnect.
    pub address: SocketAddr,
    /// Reconnects shake hands again with this when set.
    pub tls: Option<Arc<TlsClient>>,
    pub dialogue: D,
    pub schedule: Arc<Schedule>,
    pub workload: Arc<Workload>,
    /// Woken by the pacer when a request of this connection is due.
    pub waker: Arc<Notify>,
    pub shard: Arc<Mutex<Shard>>,
    pub in_flight_max: usize,
    pub timeout: Duration,
}

/// Bytes read at most per `try_read`.
const READ_CHUNK: usize = 64 * 1024;
/// How long a reconnect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between reconnect attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// A receive buffer: bytes `start..end` are unread.
struct Input {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn new() -> Input {
        Input {
            bytes: vec![0; 2 * READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        self.bytes.get(self.start..self.end).unwrap_or_default()
    }

    fn consume(&mut self, count: usize) {
        self.start = (self.start + count).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for at least `READ_CHUNK` more bytes, moving the unread bytes to
    /// the front or growing when a large frame is still incomplete.
    fn spare(&mut self) -> &mut [u8] {
        if self.bytes.len() - self.end < READ_CHUNK {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.bytes.len() - self.end < READ_CHUNK {
                self.bytes.resize(self.end + READ_CHUNK, 0);
            }
        }
        let end = self.end;
        self.bytes.get_mut(end..).unwrap_or_default()
    }

    fn filled(&mut self, count: usize) {
        self.end = (self.end + count).min(self.bytes.len());
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// Locks `shard`, taking the data even if another connection panicked
/// while holding it: counts stay usable for the report.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the connection until its part of the schedule is sent and every
/// request is answered, timed out or lost.
pub async fn drive<D: Dialogue>(connection: Connection<D>) {
    let Connection {
        id,
        stream,
        address,
        tls,
        mut dialogue,
        schedule,
        workload,
        waker,
        shard,
        in_flight_max,
        timeout,
    } = connection;
    let open_loop = schedule.rate.is_some();
    let index_end = schedule.index_end();
    let end = schedule.end();
    // Timeouts are checked this often, so they are counted within 5% of
    // `--timeout` (and at least every 100 ms, which also bounds how long a
    // backlog of expired requests waits to be dropped).
    let sweep_every = (timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(100));

    let mut stream = Some(stream);
    let mut k = 0u64;
    let mut pending: HashMap<u64, Pending> = HashMap::with_capacity(in_flight_max * 2);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut written = 0usize;
    let mut input = Input::new();
    let mut acks = String::new();
    let mut next_sweep = Instant::now() + sweep_every;
    let mut reconnect_at = Instant::now();
    // One timer for the connection's life, moved only when its deadline
    // does (every sweep): a fresh `sleep_until` per pass of the loop put
    // an entry in tokio's timer wheel and took it out again for every
    // request.
    let timer = tokio::time::sleep_until(next_sweep.into());
    tokio::pin!(timer);

    loop {
        let now = Instant::now();
        let sending_done = if open_loop {
            schedule.index(id, k) >= index_end
        } else {
            now >= end
        };

        if now >= next_sweep {
            next_sweep = now + sweep_every;
            let expired: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.intended) >= timeout)
                .map(|(key, _)| *key)
                .collect();
            if !expired.is_empty() {
                let mut shard = lock(&shard);
                for key in expired {
                    if let Some(p) = pending.remove(&key)
                        && p.measured
                    {
                        shard.tally.record_timeout(p.kind);
                    }
                }
            }
        }

        if stream.is_none() && !sending_done && now >= reconnect_at {
            match tokio::time::timeout(CONNECT_TIMEOUT, Transport::connect(address, tls.as_deref()))
                .await
            {
                Ok(Ok(fresh)) => {
                    dialogue.reconnected();
                    stream = Some(fresh);
                }
                _ => reconnect_at = Instant::now() + RECONNECT_PAUSE,
            }
            continue;
        }

        // Send everything that is due while there is room.
        if !sending_done {
            let mut guard: Option<MutexGuard<'_, Shard>> = None;
            loop {
                let index = schedule.index(id, k);
                let intended = if open_loop {
                    if index >= index_end {
                        break;
                    }
                    let intended = schedule.intended(index);
                    if intended > now + EARLY_MAX {
                        break;
                    }
                    intended
                } else {
                    if now >= end || stream.is_none() || pending.len() >= in_flight_max {
                        break;
                    }
                    now
                };
                let measured = schedule.is_measured(intended);
                // A request already older than the timeout would count as a
                // timeout the moment it left; it is dropped instead (and
                // counted), so a backlog after a stall drains at once.
                let expired = open_loop && now.saturating_duration_since(intended) >= timeout;
                if !expired && (stream.is_none() || pending.len() >= in_flight_max) {
                    break;
                }
                k += 1;
                let plan = workload.plan(index);
                if expired {
                    if measured {
                        let shard = guard.get_or_insert_with(|| lock(&shard));
                        shard.tally.record_dropped(plan.kind);
                    }
                    continue;
                }
                let written_before = out.len();
                let result = dialogue.write_request(index, &plan, &mut out);
                if measured {
                    let lag = open_loop.then(|| now.saturating_duration_since(intended));
                    let shard = guard.get_or_insert_with(|| lock(&shard));
                    shard.tally.record_sent(plan.kind, lag.map(duration_ns));
                    if let Err(reason) = result {
                        shard.tally.record_error(plan.kind, reason);
                    }
                }
                match result {
                    Ok(key) => {
                        let request = Pending {
                            kind: plan.kind,
                            intended,
                            // Late: charged from the intended time (no
                            // coordinated omission). Early: from the send.
                            // Either way, from the earlier of the two.
                            started: intended.min(now),
                            measured,
                        };
                        if let Some(old) = pending.insert(key, request)
                            && old.measured
                        {
                            // The key came round again while its first user
                            // was still pending: that one is long overdue.
                            let shard = guard.get_or_insert_with(|| lock(&shard));
                            shard.tally.record_timeout(old.kind);
                        }
                    }
                    Err(_) => out.truncate(written_before),
                }
            }
        }

        let mut lost = false;
        if let Some(s) = &mut stream {
            if written < out.len() {
                match s.try_write(out.get(written..).unwrap_or_default()) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => lost = true,
                }
                if written >= out.len() {
                    out.clear();
                    written = 0;
                }
            } else if s.wants_flush() && s.flush().is_err() {
                lost = true;
            }
        }

        if !lost {
            if sending_done && pending.is_empty() {
                break;
            }
            if stream.is_none() && sending_done {
                break;
            }
            let wants_wake = open_loop && !sending_done && pending.len() < in_flight_max;
            let deadline = if stream.is_none() {
                next_sweep.min(reconnect_at)
            } else {
                next_sweep
            };
            let deadline = tokio::time::Instant::from(deadline);
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            match &mut stream {
                Some(s) => {
                    let wants_write = written < out.len() || s.wants_flush();
                    // Decrypted bytes already held count as readable now.
                    let readable = if s.has_buffered() {
                        true
                    } else {
                        tokio::select! {
                            biased;
                            ready = s.readable() => {
                                lost = ready.is_err();
                                !lost
                            }
                            ready = s.writable(), if wants_write => {
                                lost = ready.is_err();
                                false
                            }
                            () = waker.notified(), if wants_wake => false,
                            () = &mut timer => false,
                        }
                    };
                    if readable {
                        lost = read_responses(
                            s,
                            &mut input,
                            &mut dialogue,
                            &mut pending,
                            &shard,
                            &mut acks,
                        );
                    }
                }
                None => timer.as_mut().await,
            }
        }

        if lost {
            stream = None;
            out.clear();
            written = 0;
            input.clear();
            let mut shard = lock(&shard);
            for (_, p) in pending.drain() {
                if p.measured {
                    shard
                        .tally
                        .record_error(p.kind, ErrorReason::ConnectionClosed);
                }
            }
            reconnect_at = Instant::now() + RECONNECT_PAUSE;
        }
    }

    // Whatever the schedule still held was never sent (the connection was
    // down until the end).
    if open_loop {
        let mut shard = lock(&shard);
        while schedule.index(id, k) < index_end {
            let index = schedule.index(id, k);
            if schedule.is_measured(schedule.intended(index)) {
                shard.tally.record_dropped(workload.plan(index).kind);
            }
            k += 1;
        }
    }
    if !acks.is_empty() {
        lock(&shard).acks.push_str(&acks);
    }
}

/// Reads what is there and handles every whole response. Returns whether
/// the connection is lost.
fn read_responses<D: Dialogue>(
    stream: &mut Transport,
    input: &mut Input,
    dialogue: &mut D,
    pending: &mut HashMap<u64, Pending>,
    shard: &Mutex<Shard>,
    acks: &mut String,
) -> bool {
    match stream.try_read(input.spare()) {
        Ok(0) => return true,
        Ok(n) => input.filled(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
        Err(_) => return true,
    }
    // Responses read together arrived together.
    let arrived = Instant::now();
    let mut guard: Option<MutexGuard<'_, Shard>> = None;
    let mut lost = false;
    loop {
        match dialogue.read_response(input.unread(), acks) {
            Ok(Some((used, reply))) => {
                input.consume(used);
                let shard = guard.get_or_insert_with(|| lock(shard));
                match reply {
                    Reply::Matched { key, outcome } => match pending.remove(&key) {
                        Some(p) if p.measured => {
                            let latency = arrived.saturating_duration_since(p.started);
                            shard
                                .tally
                                .record_response(p.kind, outcome, duration_ns(latency));
                        }
                        Some(_) => shard.tally.warmup_received += 1,
                        None => shard.tally.unmatched += 1,
                    },
                    Reply::Stranger => shard.tally.unmatched += 1,
                    Reply::Undecodable => shard.tally.bad_responses += 1,
                }
            }
            Ok(None) => break,
            Err(_) => {
                let shard = guard.get_or_insert_with(|| lock(shard));
                shard.tally.bad_responses += 1;
                lost = true;
                break;
            }
        }
    }
    if !acks.is_empty() {
        let shard = guard.get_or_insert_with(|| lock(shard));
        shard.acks.push_str(acks);
        acks.clear();
    }
    lost
}
