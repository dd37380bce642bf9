//! Everything the engine reaches outside its own memory: wall time, random
//! bits, the actors, the vault, the journal and its reader, the fleet's
//! shared store, and the metrics it writes. Each is a handle or a small
//! trait, so a test or a simulation can hand the engine a manual clock, a
//! seeded random source, an in-memory journal and an in-memory fleet.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actors::{Clock, Shards};
use protocol::domain::{Channel, TransactionId};
use storage::{AnyStore, AppendOutcome, Journal, JournalError, JournalRecord, Vault};

use crate::clock::{Deadline, Stopwatch};
use crate::engine::ids::{self, Random};
use crate::fleet::FleetStore;
use crate::ops::metrics::{Metrics, Stage};

/// The engine's handles on the world.
pub(crate) struct World {
    pub(crate) metrics: Arc<Metrics>,
    /// Wall time: what is journaled, and what velocity windows follow.
    pub(crate) clock: Arc<dyn Clock>,
    /// Transaction ids and auth codes.
    pub(crate) random: Arc<dyn Random>,
    pub(crate) vault: Arc<Vault>,
    pub(crate) shards: Shards,
    pub(crate) journal: Journal,
    pub(crate) store: AnyStore,
    /// Shared duplicate claims and card velocity; `None` on a single node.
    pub(crate) fleet: Option<Arc<dyn FleetStore>>,
}

impl World {
    /// A new id for a transaction created at `now_ms`.
    pub(crate) fn transaction_id(&self, now_ms: u64) -> TransactionId {
        ids::transaction_id(self.random.as_ref(), now_ms)
    }

    /// Appends `record` and waits for its commit, timing the wait. With a
    /// `deadline`, a record the writer cannot commit by then is not
    /// written ([`JournalError::Expired`]).
    pub(crate) async fn append(
        &self,
        channel: Channel,
        record: JournalRecord,
        deadline: Option<Deadline>,
    ) -> Result<AppendOutcome, JournalError> {
        let waiting = Stopwatch::start();
        let appended = self
            .journal
            .append_by(record, deadline.map(Deadline::instant))
            .await;
        self.metrics
            .record(channel, Stage::JournalWait, waiting.elapsed_us());
        appended
    }

    /// Counts a failed call to the fleet's store.
    pub(crate) fn count_fleet_error(&self) {
        self.metrics.fleet_errors.fetch_add(1, Ordering::Relaxed);
    }
}
