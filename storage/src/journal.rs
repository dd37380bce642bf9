//! Group commit: many appends, one transaction, one fsync.
//!
//! Callers hand records to a [`Journal`] handle. One writer task per backend
//! connection waits for the first record, then takes every record already
//! waiting in the bounded queue (up to `batch_rows_max`), writes them all in
//! one database transaction through its [`JournalBackend`], commits, and only
//! then answers each caller. There is no timer: an idle journal commits a
//! lone record at once, and under load the records that arrive during one
//! commit form the next batch, so batch size follows load by itself.
//!
//! ```text
//! append --try_send--> [bounded queue] --recv_many--> writer --write_batch--> backend
//!    ^                                                  |
//!    +---------------- oneshot, after COMMIT -----------+
//! ```
//!
//! A server database commits on several connections at once, so
//! [`Journal::start_many`] runs one writer per backend connection on the one
//! queue. The writers take turns at the queue: the one holding it waits for
//! records while the others commit, then lets go before it commits, so one
//! writer's commit overlaps the next one's batch forming.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::convert::count_u64;
use crate::error::{JournalError, StorageError};
use crate::record::{AppendOutcome, ClaimOutcome, IdempotencyClaim, JournalRecord, KeyClaim};

/// Bounds of the queue and of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Records that may wait for the writer; one more is refused with
    /// [`JournalError::QueueFull`] at once.
    pub queue_capacity: usize,
    /// The most records one transaction writes.
    pub batch_rows_max: usize,
    /// How long a statement waits for a database lock held by someone else
    /// before the batch fails (SQLite's busy timeout).
    pub busy_timeout_ms: u32,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            queue_capacity: 8192,
            batch_rows_max: 1024,
            busy_timeout_ms: 2000,
        }
    }
}

/// A database that can write a batch of records in one transaction.
///
/// The journal's only way to write. A backend owns one connection; a
/// journal with several writer connections has one backend per connection
/// ([`Journal::start_many`]).
pub trait JournalBackend: Send + 'static {
    /// Writes `batch` and its riders in one transaction and commits. Returns
    /// one outcome per record, in order, only after the commit; on `Err`
    /// nothing of the batch may be on disk, and the next call must work on
    /// a fresh transaction.
    fn write_batch(
        &mut self,
        batch: &[JournalRecord],
    ) -> impl Future<Output = Result<Vec<AppendOutcome>, StorageError>> + Send;

    /// Makes or gives up idempotency claims, in order, in one transaction
    /// of their own, committed before any record of the same turn is
    /// written (see [`Journal::claim`]). Returns one outcome per claim; on
    /// `Err` none of them may be on disk.
    fn write_claims(
        &mut self,
        claims: &[KeyClaim],
    ) -> impl Future<Output = Result<Vec<ClaimOutcome>, StorageError>> + Send;

    /// Closes the connection cleanly once the writer has written its last
    /// batch.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Upper bounds of the batch-size buckets, in records: powers of two, so
/// bucket `i` counts batches of more than `2^(i-1)` and at most `2^i`
/// records. A Prometheus histogram's `le` bounds as they are.
pub const BATCH_ROWS_BOUNDS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Batch-size buckets: one per bound in [`BATCH_ROWS_BOUNDS`], and a last
/// one for every batch larger than the largest bound.
pub const BATCH_SIZE_BUCKETS: usize = BATCH_ROWS_BOUNDS.len() + 1;

/// Upper bounds of the commit-time buckets, in microseconds: from a
/// commit that only writes to the page cache (100 us) past the disk's
/// `fdatasync` stalls (100-300 ms) to a database's lock timeout (seconds).
pub const COMMIT_TIME_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Commit-time buckets: one per bound in [`COMMIT_TIME_BOUNDS_US`], and a
/// last one for every commit slower than the largest bound.
pub const COMMIT_TIME_BUCKETS: usize = COMMIT_TIME_BOUNDS_US.len() + 1;

/// Counters of the writer, read with [`Journal::stats`]. Each is written
/// once per batch, never per record, and by atomics only: the writers
/// take no lock to count.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    batch_rows_last: AtomicU64,
    batch_rows_largest: AtomicU64,
    failed_batches: AtomicU64,
    failed_records: AtomicU64,
    queue_full: AtomicU64,
    expired: AtomicU64,
    batch_sizes: [AtomicU64; BATCH_SIZE_BUCKETS],
    commit_times: [AtomicU64; COMMIT_TIME_BUCKETS],
    commit_time_us_sum: AtomicU64,
}

/// A snapshot of the journal's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Committed batches.
    pub batches: u64,
    /// Committed records.
    pub records: u64,
    /// Records in the last committed batch.
    pub batch_rows_last: u64,
    /// Records in the largest committed batch.
    pub batch_rows_largest: u64,
    /// Batches that failed to commit.
    pub failed_batches: u64,
    /// Records answered [`JournalError::Unavailable`].
    pub failed_records: u64,
    /// Appends refused with [`JournalError::QueueFull`].
    pub queue_full: u64,
    /// Appends refused with [`JournalError::Expired`].
    pub expired: u64,
    /// Records waiting for the writer now.
    pub queue_depth: u64,
    /// Committed batches by size, not cumulative; see [`BATCH_ROWS_BOUNDS`].
    pub batch_sizes: [u64; BATCH_SIZE_BUCKETS],
    /// Committed batches by the time their backend took to write and
    /// commit them, not cumulative; see [`COMMIT_TIME_BOUNDS_US`].
    pub commit_times: [u64; COMMIT_TIME_BUCKETS],
    /// The time every committed batch took to commit, added up.
    pub commit_time_us_sum: u64,
}

impl JournalStats {
    /// Records per committed batch.
    #[allow(
        clippy::as_conversions,
        reason = "u64 to f64 has no From; past 2^53 a count rounds, harmless in an average"
    )]
    pub fn batch_rows_avg(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.records as f64 / self.batches as f64
        }
    }
}

/// What the queue carries. The record travels inline: boxing it to shrink
/// the rare `Close` would cost an allocation on every append.
#[allow(
    clippy::large_enum_variant,
    reason = "Append is the common variant; Close is sent once"
)]
enum Command {
    Append {
        record: JournalRecord,
        reply: oneshot::Sender<Result<AppendOutcome, JournalError>>,
        /// Past this the record's answer is of no use: it is not written.
        deadline: Option<Instant>,
    },
    /// Records that go into one batch together.
    AppendAll(
        Vec<(
            JournalRecord,
            oneshot::Sender<Result<AppendOutcome, JournalError>>,
        )>,
    ),
    /// An idempotency claim, made or given up.
    Claim {
        claim: KeyClaim,
        reply: oneshot::Sender<Result<ClaimOutcome, JournalError>>,
    },
    /// Write everything queued before this, stop taking records, answer.
    Close { done: oneshot::Sender<()> },
}

/// The handle the switch appends through. Cheap to clone; all clones feed the
/// same queue and its writers.
#[derive(Debug, Clone)]
pub struct Journal {
    queue: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    queue_capacity: usize,
    batch_rows_max: usize,
}

impl Journal {
    /// Starts the writer task for `backend` on the current tokio runtime.
    pub fn start<B: JournalBackend>(backend: B, config: &JournalConfig) -> Journal {
        Journal::start_many(vec![backend], config)
    }

    /// Starts one writer task per backend, all taking from one queue, on the
    /// current tokio runtime. Records of one caller may then commit out of
    /// order between writers; each append still returns only after its own
    /// commit. With no backend at all the journal is closed from the start.
    pub fn start_many<B: JournalBackend>(backends: Vec<B>, config: &JournalConfig) -> Journal {
        let (journal, shared) = Journal::queue(config);
        let writers: Vec<_> = backends
            .into_iter()
            .map(|backend| tokio::spawn(journal.writer(backend, &shared, config)))
            .collect();
        // `close` is answered once every writer has written its last batch
        // and closed its connection, not when the first one stops.
        tokio::spawn(async move {
            for writer in writers {
                let _ = writer.await;
            }
            shared.answer_closing();
        });
        journal
    }

    /// Starts the writer on a thread of its own, under a one-thread runtime,
    /// for a backend whose writes block the thread they run on (a file's
    /// `write` and `fdatasync`): the runtime that serves requests never
    /// waits on the disk, and a batch costs this thread one wake-up, not a
    /// hop to a worker thread per write.
    pub fn start_on_thread<B: JournalBackend>(
        backend: B,
        config: &JournalConfig,
    ) -> std::io::Result<Journal> {
        let (journal, shared) = Journal::queue(config);
        let writer = journal.writer(backend, &shared, config);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("journal-writer".to_owned())
            .spawn(move || {
                runtime.block_on(writer);
                shared.answer_closing();
            })?;
        Ok(journal)
    }

    /// The handle and the queue's receiving end, no writer yet.
    fn queue(config: &JournalConfig) -> (Journal, Arc<SharedQueue>) {
        // Zero would make every append QueueFull.
        let queue_capacity = config.queue_capacity.max(1);
        let (queue, commands) = mpsc::channel(queue_capacity);
        let shared = Arc::new(SharedQueue {
            commands: tokio::sync::Mutex::new(commands),
            closing: std::sync::Mutex::new(Vec::new()),
        });
        let journal = Journal {
            queue,
            counters: Arc::new(Counters::default()),
            queue_capacity,
            batch_rows_max: config.batch_rows_max.max(1),
        };
        (journal, shared)
    }

    /// One writer's loop over `backend`, taking from the shared queue.
    fn writer<B: JournalBackend>(
        &self,
        backend: B,
        shared: &Arc<SharedQueue>,
        config: &JournalConfig,
    ) -> impl Future<Output = ()> + Send + 'static {
        // Zero would make a batch that never ends.
        let batch_rows_max = config.batch_rows_max.max(1);
        run_writer(
            backend,
            Arc::clone(shared),
            Arc::clone(&self.counters),
            batch_rows_max,
        )
    }

    /// Appends `record` and resolves once it is committed.
    ///
    /// A full queue answers [`JournalError::QueueFull`] at once, without
    /// waiting for room: the switch sheds instead of queueing without end.
    /// If the batch fails, [`JournalError::Unavailable`]: nothing of it is
    /// on disk.
    ///
    /// Once queued, a record is written even if this future is dropped (a
    /// caller's timeout, say): a caller that stops waiting knows only that
    /// the record may or may not be committed, never that it is not.
    pub async fn append(&self, record: JournalRecord) -> Result<AppendOutcome, JournalError> {
        self.append_by(record, None).await
    }

    /// [`Journal::append`] for a record whose answer is of use only until
    /// `deadline`: if the writer comes to it too late to commit it by then
    /// (the deadline less the time its recent batches took to commit), it
    /// is not written and the answer is [`JournalError::Expired`], at once.
    /// Once the writer has taken it into a batch it is written whatever
    /// the time: its answer is then whatever the commit says.
    pub async fn append_by(
        &self,
        record: JournalRecord,
        deadline: Option<Instant>,
    ) -> Result<AppendOutcome, JournalError> {
        record.validate()?;
        if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            return Err(JournalError::Expired);
        }
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Command::Append {
            record,
            reply,
            deadline,
        })?;
        // A writer that died without answering (it would have to panic) has
        // not committed this record.
        outcome.await.unwrap_or(Err(JournalError::Unavailable))
    }

    /// Appends `records` in one batch, in order, and resolves once it is
    /// committed, with each record's outcome: a caller that has several
    /// records at once hands them over together, and they share one commit
    /// whatever the writer is doing when they arrive. At most
    /// `batch_rows_max` records; errors as [`Journal::append`], each record
    /// its own (one that fails `validate` is refused alone).
    pub async fn append_all(
        &self,
        records: Vec<JournalRecord>,
    ) -> Vec<Result<AppendOutcome, JournalError>> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut queued = Vec::with_capacity(records.len());
        for record in records {
            match record.validate() {
                Ok(()) => {
                    let (reply, outcome) = oneshot::channel();
                    queued.push((record, reply));
                    outcomes.push(Ok(outcome));
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }
        if queued.len() > self.batch_rows_max {
            return outcomes
                .into_iter()
                .map(|_| Err(JournalError::QueueFull))
                .collect();
        }
        let sent = if queued.is_empty() {
            Ok(())
        } else {
            self.enqueue(Command::AppendAll(queued))
        };
        let mut answers = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            answers.push(match (outcome, &sent) {
                (Err(error), _) => Err(error),
                (Ok(_), Err(error)) => Err(*error),
                (Ok(outcome), Ok(())) => outcome.await.unwrap_or(Err(JournalError::Unavailable)),
            });
        }
        answers
    }

    /// Queues `command` without waiting for room: a full queue is refused
    /// at once, and counted.
    fn enqueue(&self, command: Command) -> Result<(), JournalError> {
        match self.queue.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                Err(JournalError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(JournalError::Closed),
        }
    }

    /// Claims an idempotency key before its request is decided, in the
    /// store the record will go to. The claim rides the group commit: the
    /// writer makes every claim waiting in the queue in one transaction
    /// before it writes the records gathered with them, rather than each
    /// claim paying a commit of its own on a second connection that would
    /// fight the writer for SQLite's write lock. That transaction does not
    /// wait for the disk; the next record commit makes it durable (see the
    /// backends' `claims` modules for why that is safe).
    ///
    /// Errors as [`Journal::append`]: a full queue at once, a failed commit
    /// as [`JournalError::Unavailable`] (nothing claimed).
    pub async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, JournalError> {
        self.send_claim(KeyClaim::Claim(claim)).await
    }

    /// Gives up the claim `claimed_by` holds on a merchant's key, so a retry
    /// is decided afresh; nothing happens if another request holds it now.
    pub async fn release(
        &self,
        merchant_id: String,
        key: String,
        claimed_by: protocol::domain::TransactionId,
    ) -> Result<(), JournalError> {
        self.send_claim(KeyClaim::Release {
            merchant_id,
            key,
            claimed_by,
        })
        .await
        .map(|_| ())
    }

    async fn send_claim(&self, claim: KeyClaim) -> Result<ClaimOutcome, JournalError> {
        claim.validate()?;
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Command::Claim { claim, reply })?;
        outcome.await.unwrap_or(Err(JournalError::Unavailable))
    }

    /// Writes every record queued before this call, then stops the writers:
    /// later appends answer [`JournalError::Closed`]. Returns once every
    /// writer has finished and closed its backend connection. For graceful
    /// shutdown.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        // `send` waits for room: shutdown may wait behind a full queue, which
        // is the point, since those records are being written.
        if self.queue.send(Command::Close { done }).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> JournalStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        JournalStats {
            batches: load(&c.batches),
            records: load(&c.records),
            batch_rows_last: load(&c.batch_rows_last),
            batch_rows_largest: load(&c.batch_rows_largest),
            failed_batches: load(&c.failed_batches),
            failed_records: load(&c.failed_records),
            queue_full: load(&c.queue_full),
            expired: load(&c.expired),
            queue_depth: self.queue_depth(),
            batch_sizes: std::array::from_fn(|i| load(&c.batch_sizes[i])),
            commit_times: std::array::from_fn(|i| load(&c.commit_times[i])),
            commit_time_us_sum: load(&c.commit_time_us_sum),
        }
    }

    /// Whether the writers are taking records: false once the journal is
    /// closed or every writer has stopped. For `/health/ready`.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Records waiting for the writer now.
    pub fn queue_depth(&self) -> u64 {
        count_u64(self.queue_capacity.saturating_sub(self.queue.capacity()))
    }
}

/// The queue's receiving end, shared by the writers.
struct SharedQueue {
    /// Held by the writer waiting for records; released before it commits.
    commands: tokio::sync::Mutex<mpsc::Receiver<Command>>,
    /// `close` callers, answered after the last writer stops.
    closing: std::sync::Mutex<Vec<oneshot::Sender<()>>>,
}

impl SharedQueue {
    /// Tells every `close` caller the writers have stopped.
    fn answer_closing(&self) {
        let closing = match self.closing.lock() {
            Ok(mut closing) => std::mem::take(&mut *closing),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for done in closing {
            let _ = done.send(());
        }
    }
}

async fn run_writer<B: JournalBackend>(
    mut backend: B,
    shared: Arc<SharedQueue>,
    counters: Arc<Counters>,
    batch_rows_max: usize,
) {
    let mut received = Vec::with_capacity(batch_rows_max);
    let mut batch = Vec::with_capacity(batch_rows_max);
    let mut replies = Vec::with_capacity(batch_rows_max);
    let mut claims = Vec::new();
    let mut claim_replies = Vec::new();
    // How long a batch takes to commit, lately: a record whose deadline
    // comes sooner than that after the writer reaches it is not written.
    let mut commit_time = CommitTime::default();
    loop {
        {
            let mut commands = shared.commands.lock().await;
            // `recv_many` sleeps until the first command, then takes what is
            // already queued without waiting for more: that is the whole
            // batching policy.
            if commands.recv_many(&mut received, batch_rows_max).await == 0 {
                break;
            }
            let too_late = commit_time.cutoff();
            for command in received.drain(..) {
                match command {
                    Command::Append {
                        record,
                        reply,
                        deadline,
                    } => {
                        if deadline.is_some_and(|deadline| deadline <= too_late) {
                            counters.expired.fetch_add(1, Ordering::Relaxed);
                            let _ = reply.send(Err(JournalError::Expired));
                            continue;
                        }
                        batch.push(record);
                        replies.push(reply);
                    }
                    Command::AppendAll(records) => {
                        for (record, reply) in records {
                            batch.push(record);
                            replies.push(reply);
                        }
                    }
                    Command::Claim { claim, reply } => {
                        claims.push(claim);
                        claim_replies.push(reply);
                    }
                    Command::Close { done } => {
                        // Later senders get `Closed`; what is queued still
                        // drains, through every writer.
                        commands.close();
                        match shared.closing.lock() {
                            Ok(mut closing) => closing.push(done),
                            Err(poisoned) => poisoned.into_inner().push(done),
                        }
                    }
                }
            }
            // The queue is let go here, so another writer gathers the next
            // batch while this one commits.
        }
        if !claims.is_empty() {
            flush_claims(&mut backend, &claims, &mut claim_replies).await;
            claims.clear();
        }
        if !batch.is_empty() {
            let took = flush_batch(&mut backend, &batch, &mut replies, &counters).await;
            commit_time.took(took);
            batch.clear();
        }
    }
    backend.close().await;
}

/// Writes and commits `batch`, answers its callers, and returns how long
/// the backend took: the one place every backend's commit is timed.
async fn flush_batch<B: JournalBackend>(
    backend: &mut B,
    batch: &[JournalRecord],
    replies: &mut Vec<oneshot::Sender<Result<AppendOutcome, JournalError>>>,
    counters: &Counters,
) -> std::time::Duration {
    let started = Instant::now();
    let written = backend.write_batch(batch).await;
    let took = started.elapsed();
    match written {
        Ok(outcomes) if outcomes.len() == batch.len() => {
            record_batch(counters, batch.len(), took);
            // A caller that gave up waiting has dropped its receiver; its
            // record is committed all the same.
            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(outcomes) => {
            // A backend bug after its commit: the records are on disk but
            // nobody can say which reversal came first. Answering Unavailable
            // errs on the safe side: a retried reversal then finds its
            // original reversed and gives nothing back, rather than twice.
            tracing::error!(
                records = batch.len(),
                outcomes = outcomes.len(),
                "journal backend returned the wrong number of outcomes"
            );
            flush_batch_on_error(batch.len(), replies, counters);
        }
        Err(error) => {
            tracing::warn!(records = batch.len(), %error, "journal batch failed to commit");
            flush_batch_on_error(batch.len(), replies, counters);
        }
    }
    took
}

async fn flush_claims<B: JournalBackend>(
    backend: &mut B,
    claims: &[KeyClaim],
    replies: &mut Vec<oneshot::Sender<Result<ClaimOutcome, JournalError>>>,
) {
    match backend.write_claims(claims).await {
        Ok(outcomes) if outcomes.len() == claims.len() => {
            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        written => {
            // Unavailable: the caller decides nothing, and a claim that did
            // commit all the same goes stale and is taken over.
            if let Err(error) = written {
                tracing::warn!(claims = claims.len(), %error, "idempotency claims failed to commit");
            } else {
                tracing::error!("journal backend returned the wrong number of claim outcomes");
            }
            for reply in replies.drain(..) {
                let _ = reply.send(Err(JournalError::Unavailable));
            }
        }
    }
}

/// A moving average of how long a batch takes from the writer taking it to
/// its commit.
#[derive(Debug, Default)]
struct CommitTime {
    average: std::time::Duration,
}

impl CommitTime {
    /// Records one batch's time; each counts for an eighth.
    fn took(&mut self, took: std::time::Duration) {
        self.average = (self.average * 7 + took) / 8;
    }

    /// A record whose deadline is at or before this cannot be committed by
    /// then.
    fn cutoff(&self) -> Instant {
        Instant::now() + self.average
    }
}

fn flush_batch_on_error(
    records: usize,
    replies: &mut Vec<oneshot::Sender<Result<AppendOutcome, JournalError>>>,
    counters: &Counters,
) {
    counters.failed_batches.fetch_add(1, Ordering::Relaxed);
    counters
        .failed_records
        .fetch_add(count_u64(records), Ordering::Relaxed);
    for reply in replies.drain(..) {
        let _ = reply.send(Err(JournalError::Unavailable));
    }
}

/// Counts one committed batch of `rows` records that took `took` to commit.
fn record_batch(counters: &Counters, rows: usize, took: std::time::Duration) {
    let rows = count_u64(rows);
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.records.fetch_add(rows, Ordering::Relaxed);
    counters.batch_rows_last.store(rows, Ordering::Relaxed);
    counters
        .batch_rows_largest
        .fetch_max(rows, Ordering::Relaxed);
    if let Some(counter) = counters
        .batch_sizes
        .get(bucket_of(&BATCH_ROWS_BOUNDS, rows))
    {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    if let Some(counter) = counters
        .commit_times
        .get(bucket_of(&COMMIT_TIME_BOUNDS_US, took_us))
    {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    counters
        .commit_time_us_sum
        .fetch_add(took_us, Ordering::Relaxed);
}

/// The bucket `value` falls in: the first whose upper bound in `bounds`
/// (ascending) is at least `value`, or `bounds.len()`, the bucket past the
/// largest bound.
fn bucket_of(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|&bound| bound < value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::record::sample::record;

    /// A backend that takes a while to commit and notes who wrote what.
    struct SlowBackend {
        writer: usize,
        written: Arc<Mutex<Vec<(usize, usize)>>>,
        closed: Arc<AtomicUsize>,
    }

    impl JournalBackend for SlowBackend {
        async fn write_batch(
            &mut self,
            batch: &[JournalRecord],
        ) -> Result<Vec<AppendOutcome>, StorageError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.written
                .lock()
                .unwrap()
                .push((self.writer, batch.len()));
            Ok(vec![AppendOutcome::Recorded; batch.len()])
        }

        async fn write_claims(
            &mut self,
            claims: &[KeyClaim],
        ) -> Result<Vec<ClaimOutcome>, StorageError> {
            Ok(vec![ClaimOutcome::Released; claims.len()])
        }

        async fn close(self) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_writers_share_the_queue_and_close_waits_for_every_one() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let backends = (0..3)
            .map(|writer| SlowBackend {
                writer,
                written: Arc::clone(&written),
                closed: Arc::clone(&closed),
            })
            .collect();
        let journal = Journal::start_many(backends, &JournalConfig::default());
        let tasks: Vec<_> = (0..300)
            .map(|n| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    for k in 0..5 {
                        let outcome = journal.append(record(n * 10 + k)).await;
                        assert_eq!(outcome, Ok(AppendOutcome::Recorded));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = journal.stats();
        assert_eq!(stats.records, 1500);
        let writers: std::collections::HashSet<usize> =
            written.lock().unwrap().iter().map(|(w, _)| *w).collect();
        assert_eq!(writers.len(), 3, "every writer took batches");

        journal.close().await;
        assert_eq!(closed.load(Ordering::SeqCst), 3);
        assert!(!journal.is_running());
        assert_eq!(journal.append(record(1)).await, Err(JournalError::Closed));
    }

    #[tokio::test]
    async fn records_appended_together_commit_in_one_batch_and_too_many_are_shed() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let backend = SlowBackend {
            writer: 0,
            written: Arc::clone(&written),
            closed: Arc::new(AtomicUsize::new(0)),
        };
        let config = JournalConfig {
            batch_rows_max: 3,
            ..JournalConfig::default()
        };
        let journal = Journal::start_on_thread(backend, &config).unwrap();
        let outcomes = journal
            .append_all(vec![record(1), record(2), record(3)])
            .await;
        assert_eq!(outcomes, vec![Ok(AppendOutcome::Recorded); 3]);
        assert_eq!(*written.lock().unwrap(), vec![(0, 3)], "one batch of three");

        let too_many = journal.append_all((1..=4).map(record).collect()).await;
        assert_eq!(too_many, vec![Err(JournalError::QueueFull); 4]);
        assert_eq!(journal.stats().records, 3, "none of the four written");
        journal.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_whose_deadline_comes_before_the_writer_can_commit_it_is_not_written() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let backend = SlowBackend {
            writer: 0,
            written: Arc::clone(&written),
            closed: Arc::new(AtomicUsize::new(0)),
        };
        let journal = Journal::start(backend, &JournalConfig::default());
        let now = Instant::now();
        assert_eq!(
            journal.append_by(record(1), Some(now)).await,
            Err(JournalError::Expired),
            "a deadline already passed is refused at once"
        );
        // The first batch takes the writer 20 ms; the second record's
        // deadline comes in 5, the third's in a second.
        let first = tokio::spawn({
            let journal = journal.clone();
            async move { journal.append(record(2)).await }
        });
        tokio::task::yield_now().await;
        let soon = journal.append_by(record(3), Some(now + Duration::from_millis(5)));
        let later = journal.append_by(record(4), Some(now + Duration::from_secs(1)));
        let (soon, later) = tokio::join!(soon, later);
        assert_eq!(first.await.unwrap(), Ok(AppendOutcome::Recorded));
        assert_eq!(soon, Err(JournalError::Expired));
        assert_eq!(later, Ok(AppendOutcome::Recorded));
        assert_eq!(
            *written.lock().unwrap(),
            vec![(0, 1), (0, 1)],
            "the expired record was in neither batch"
        );
        let stats = journal.stats();
        assert_eq!((stats.records, stats.expired), (2, 2));
        journal.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn every_committed_batch_is_counted_by_its_size_and_its_commit_time() {
        let backend = SlowBackend {
            writer: 0,
            written: Arc::new(Mutex::new(Vec::new())),
            closed: Arc::new(AtomicUsize::new(0)),
        };
        let journal = Journal::start(backend, &JournalConfig::default());
        let three = journal
            .append_all(vec![record(1), record(2), record(3)])
            .await;
        assert_eq!(three, vec![Ok(AppendOutcome::Recorded); 3]);
        assert_eq!(journal.append(record(4)).await, Ok(AppendOutcome::Recorded));
        let stats = journal.stats();
        let mut sizes = [0; BATCH_SIZE_BUCKETS];
        sizes[0] = 1; // one record: at most 1
        sizes[2] = 1; // three records: more than 2, at most 4
        assert_eq!(stats.batch_sizes, sizes);
        // The backend takes 20 ms of the paused clock: more than 10 ms, at
        // most 25 ms.
        let mut times = [0; COMMIT_TIME_BUCKETS];
        times[7] = 2;
        assert_eq!(COMMIT_TIME_BOUNDS_US[7], 25_000);
        assert_eq!(stats.commit_times, times);
        assert_eq!(stats.commit_time_us_sum, 40_000);
        journal.close().await;
    }

    #[test]
    fn a_value_falls_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket_of(&BATCH_ROWS_BOUNDS, 0), 0);
        assert_eq!(bucket_of(&BATCH_ROWS_BOUNDS, 1), 0);
        assert_eq!(bucket_of(&BATCH_ROWS_BOUNDS, 2), 1);
        assert_eq!(bucket_of(&BATCH_ROWS_BOUNDS, 3), 2);
        assert_eq!(bucket_of(&BATCH_ROWS_BOUNDS, 4096), 12);
        assert_eq!(bucket_of(&BATCH_ROWS_BOUNDS, 4097), BATCH_SIZE_BUCKETS - 1);
        assert_eq!(
            bucket_of(&COMMIT_TIME_BOUNDS_US, u64::MAX),
            COMMIT_TIME_BUCKETS - 1
        );
    }

    /// A backend whose write blocks its thread until the test lets it go.
    struct BlockingBackend {
        started: Arc<std::sync::atomic::AtomicBool>,
        release: std::sync::mpsc::Receiver<()>,
        released: Arc<std::sync::atomic::AtomicBool>,
    }

    impl JournalBackend for BlockingBackend {
        async fn write_batch(
            &mut self,
            batch: &[JournalRecord],
        ) -> Result<Vec<AppendOutcome>, StorageError> {
            self.started.store(true, Ordering::SeqCst);
            // Blocks the thread, as a file's fdatasync does. On the test's
            // own one-thread runtime this would wait out its five seconds,
            // since the test could not run to let it go.
            if self.release.recv_timeout(Duration::from_secs(5)).is_ok() {
                self.released.store(true, Ordering::SeqCst);
            }
            Ok(vec![AppendOutcome::Recorded; batch.len()])
        }

        async fn write_claims(
            &mut self,
            claims: &[KeyClaim],
        ) -> Result<Vec<ClaimOutcome>, StorageError> {
            Ok(vec![ClaimOutcome::Released; claims.len()])
        }
    }

    #[tokio::test]
    async fn a_writer_on_its_own_thread_blocks_only_that_thread() {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (release, on_release) = std::sync::mpsc::channel();
        let backend = BlockingBackend {
            started: Arc::clone(&started),
            release: on_release,
            released: Arc::clone(&released),
        };
        let journal = Journal::start_on_thread(backend, &JournalConfig::default()).unwrap();
        let appending = tokio::spawn({
            let journal = journal.clone();
            async move { journal.append(record(1)).await }
        });
        // This runtime has one thread: it runs while the write blocks only
        // because the write is on a thread of its own.
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        assert_eq!(appending.await.unwrap(), Ok(AppendOutcome::Recorded));
        assert!(
            released.load(Ordering::SeqCst),
            "let go by the test, not timed out"
        );
        journal.close().await;
        assert!(!journal.is_running());
    }

    #[tokio::test]
    async fn a_journal_without_writers_is_closed() {
        let journal = Journal::start_many(Vec::<SlowBackend>::new(), &JournalConfig::default());
        journal.close().await;
        assert!(!journal.is_running());
    }
}
