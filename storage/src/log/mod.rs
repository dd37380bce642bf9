//! The segment log: an embedded journal of record that is only appended to.
//!
//! Each writer turn appends one checksummed frame to the current segment
//! file in the data directory (`journal-NNNNNNNN.seg`) with one `write`, and
//! a batch of records returns only after `fdatasync`: group commit is one
//! write and one sync per batch, with no B-tree, no index page and no
//! second file to update on the commit path. The records stay in the
//! segments: memory holds the open segment's index (`index`), each closed
//! segment's index is a sorted file beside it read by binary search
//! (`sidecar`), and what is bounded by cards and keys (the vault, the
//! idempotency entries and claims) is held whole and snapshotted at each
//! segment close (`snapshot`), so start-up reads the latest snapshot and the
//! segments after it (`start`). docs/ARCHITECTURE.md, "The segment log",
//! has the layout, how far back each read looks, and the figures.
//!
//! - `segment`: the files, the frame format, and recovery: every frame's
//!   checksum is verified when read; a torn tail of the last segment is cut
//!   off at the last whole frame, and damage anywhere else refuses to
//!   start (or fails the read that meets it), naming the file and offset.
//! - `codec`: the frames' payloads, a compact binary form of a batch with
//!   its riders, a turn of idempotency claims, or rewrapped vault rows; and
//!   the snapshot's payload.
//! - `frames`, `index`: where a record's frame is, and the index of the
//!   records ([`History`](crate::tables::History) for the log).
//! - `sidecar`, `snapshot`, `start`: closing a segment, and starting.
//! - `store`: [`LogStore::open`], the writer (a
//!   [`JournalBackend`](crate::JournalBackend)) and the reads
//!   ([`StoreReader`](crate::StoreReader),
//!   [`VaultMaintenance`](crate::VaultMaintenance)).
//!
//! What it does not do yet: no segment is ever compacted or removed, and
//! closing a segment (its index file and the snapshot) is done on the
//! writer's thread.

mod codec;
mod frames;
mod index;
mod segment;
mod sidecar;
mod snapshot;
mod start;
mod store;

pub use segment::Recovery;
pub use store::{InMemory, LogConfig, LogStore, SEGMENT_BYTES_DEFAULT};
