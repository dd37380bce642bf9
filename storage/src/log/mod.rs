//! The segment log: an embedded journal of record that is only appended to.
//!
//! Each writer turn appends one checksummed frame to the current segment
//! file in the data directory (`journal-NNNNNNNN.seg`) with one `write`, and
//! a batch of records returns only after `fdatasync`: group commit is one
//! write and one sync per batch, with no B-tree, no index page and no
//! second file to update. Every read is answered from the tables in memory
//! (`tables`, the rules the memory test backend also follows), which the
//! writer updates after each frame is on disk and which are rebuilt at
//! start by reading every frame back.
//!
//! - `segment`: the files, the frame format, and recovery: every frame's
//!   checksum is verified at start; a torn tail of the last segment is cut
//!   off at the last whole frame, and damage anywhere else refuses to
//!   start, naming the file and offset.
//! - `codec`: the frames' payloads, a compact binary form of a batch with
//!   its riders, a turn of idempotency claims, or rewrapped vault rows.
//! - `store`: [`LogStore::open`], the writer (a
//!   [`JournalBackend`](crate::JournalBackend)) and the reads
//!   ([`StoreReader`](crate::StoreReader),
//!   [`VaultMaintenance`](crate::VaultMaintenance)).
//!
//! What it does not do yet: the tables hold every record since the first
//! segment in memory (about 800 bytes a record with a new card's vault row; see
//! docs/ARCHITECTURE.md), and no segment is ever compacted or removed.

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
