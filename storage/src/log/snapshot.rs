//! What the log keeps whole in memory (the vault, the idempotency entries
//! and claims, the latest record's time: [`Keyed`]), written beside a
//! segment when it is closed (`journal-NNNNNNNN.snap`), so that start-up
//! reads the latest snapshot, the closed segments' index headers and the
//! segments after the snapshot (normally the open one alone), not every
//! frame since the first.
//!
//! ```text
//! [SWSNP001][segment number u64][payload: log::codec::encode_keyed][crc32 u32]
//! ```
//!
//! Written to a temporary name and renamed, not synced (the segments are
//! the journal of record; see `sidecar::write_whole`); one that is missing,
//! cut short or fails its checksum is passed over for an older one, or
//! for reading the segments from the first.

use std::path::{Path, PathBuf};

use super::codec;
use super::sidecar::write_whole;
use crate::error::StorageError;
use crate::tables::Keyed;

const MAGIC: &[u8; 8] = b"SWSNP001";

/// Snapshots kept: the latest, and the one before in case the latest is
/// found damaged.
const KEPT: u64 = 2;

fn snapshot_name(number: u64) -> String {
    format!("journal-{number:08}.snap")
}

fn snapshot_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".snap")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The path of the snapshot taken when segment `number` was closed.
pub(super) fn snapshot_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(snapshot_name(number))
}

/// Writes the state as it stands when segment `number` is closed,
/// and removes snapshots older than the ones kept.
pub(super) fn write(dir: &Path, number: u64, keyed: &Keyed) -> Result<(), StorageError> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&number.to_le_bytes());
    codec::encode_keyed(&mut bytes, keyed);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_whole(&snapshot_path(dir, number), &bytes)?;
    for old in numbers(dir) {
        if old + KEPT <= number {
            // A stale snapshot left behind costs disk only.
            let _ = std::fs::remove_file(snapshot_path(dir, old));
        }
    }
    Ok(())
}

/// The numbers of the snapshots under `dir`, latest first.
fn numbers(dir: &Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| snapshot_number(entry.ok()?.file_name().to_str()?))
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers
}

/// The latest whole snapshot whose segment `usable` accepts, with that
/// segment's number; `None`: start from the first segment.
pub(super) fn latest(dir: &Path, mut usable: impl FnMut(u64) -> bool) -> Option<(u64, Keyed)> {
    numbers(dir).into_iter().find_map(|number| {
        let path = snapshot_path(dir, number);
        let keyed = read(&path, number);
        if keyed.is_none() {
            tracing::warn!(snapshot = %path.display(), "journal: a snapshot is damaged; passed over");
        }
        keyed
            .filter(|_| usable(number))
            .map(|keyed| (number, keyed))
    })
}

fn read(path: &Path, number: u64) -> Option<Keyed> {
    let bytes = std::fs::read(path).ok()?;
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes().as_slice() != crc
        || body.get(..8) != Some(MAGIC.as_slice())
        || body.get(8..16)? != number.to_le_bytes().as_slice()
    {
        return None;
    }
    codec::decode_keyed(body.get(16..)?).ok()
}
