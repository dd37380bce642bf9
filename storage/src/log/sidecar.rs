//! The index of a closed segment, in a file beside it
//! (`journal-NNNNNNNN.idx`), so that a closed segment costs memory only
//! for a summary ([`Closed`]) and its lookups are binary searches in the
//! file.
//!
//! The file is a header, then four tables of fixed-width rows, each sorted
//! by a prefix of its bytes (numbers big-endian, so byte order is their
//! order):
//!
//! ```text
//! ids        [id 16][frame offset 8]                                  by id
//! originals  [acquirer-key hash 8][id 16]                             by (hash, id)
//! approvals  [at_ms 8][id 16][token 16][merchant 15][currency 2][amount 8]  by (at_ms, id)
//! reversals  [original 16][reversal 16][amount given back 8]          by original
//! ```
//!
//! The header holds the counts, the summary's fence keys, the segment's
//! length and the sequence after its last frame, a CRC-32 of the body and
//! one of itself. It is written to a temporary name and renamed (not
//! synced: see [`write_whole`]); start-up checks the header against the segment,
//! and the body's checksum is checked on the first lookup after start
//! (a damaged body fails that read, naming the file; a restart rebuilds
//! it from the segment).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use protocol::domain::{Token, TransactionId};
use protocol::ids::MerchantId;
use protocol::{Amount, Currency};

use super::frames::SegmentIndex;
use crate::convert::count_u64;
use crate::error::StorageError;
use crate::record::ReplayCursor;
use crate::tables::{Approval, Reversal};

const MAGIC: &[u8; 8] = b"SWIDX001";
const HEADER: usize = 8 + 8 * 7 + 16 * 4 + 8 * 2 + 4 + 4;
const ID_ROW: usize = 24;
const ORIGINAL_ROW: usize = 24;
const APPROVAL_ROW: usize = 65;
const REVERSAL_ROW: usize = 40;

/// The file name of segment `number`'s index.
pub(super) fn sidecar_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("journal-{number:08}.idx"))
}

/// What memory holds of a closed segment: its counts and fence keys.
#[derive(Debug)]
pub(super) struct Closed {
    pub(super) number: u64,
    /// The segment file's length when it was closed.
    pub(super) segment_len: u64,
    /// The sequence of the frame after its last.
    pub(super) next_sequence: u64,
    counts: [u64; 4],
    id_min: TransactionId,
    id_max: TransactionId,
    reversed_min: TransactionId,
    reversed_max: TransactionId,
    /// The latest `at_ms` of its approvals (0: none).
    approvals_max_ms: u64,
    /// The earliest `at_ms` of its approvals.
    approvals_min_ms: u64,
    /// The body's checksum, and whether the file's was found to match
    /// since start.
    body_crc: u32,
    verified: OnceLock<bool>,
    path: PathBuf,
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Log {
        operation,
        path,
        source,
    }
}

/// Writes the index of closed segment `number` from `index`.
pub(super) fn write(
    dir: &Path,
    number: u64,
    segment_len: u64,
    next_sequence: u64,
    index: &SegmentIndex,
) -> Result<Closed, StorageError> {
    let mut ids: Vec<(&TransactionId, &u64)> = index.ids.iter().collect();
    ids.sort_unstable();
    let mut reversals: Vec<(&TransactionId, &Reversal)> = index.reversals.iter().collect();
    reversals.sort_unstable_by_key(|(original, _)| **original);
    let mut body = Vec::with_capacity(
        ids.len() * ID_ROW
            + index.originals.len() * ORIGINAL_ROW
            + index.approvals.len() * APPROVAL_ROW
            + reversals.len() * REVERSAL_ROW,
    );
    for (id, packed) in &ids {
        body.extend_from_slice(id.as_bytes());
        // Only the offset: the segment is this one.
        body.extend_from_slice(&super::frames::offset_of(**packed).to_be_bytes());
    }
    for (hash, id) in &index.originals {
        body.extend_from_slice(&hash.to_be_bytes());
        body.extend_from_slice(id.as_bytes());
    }
    for approval in index.approvals.values() {
        body.extend_from_slice(&approval.cursor.at_ms.to_be_bytes());
        body.extend_from_slice(approval.cursor.id.as_bytes());
        body.extend_from_slice(approval.token.as_bytes());
        body.extend_from_slice(approval.merchant_id.as_bytes());
        body.extend_from_slice(&approval.currency.numeric().to_be_bytes());
        body.extend_from_slice(&approval.amount.minor().to_be_bytes());
    }
    for (original, reversal) in &reversals {
        body.extend_from_slice(original.as_bytes());
        body.extend_from_slice(reversal.id.as_bytes());
        body.extend_from_slice(&reversal.amount_minor.to_be_bytes());
    }
    let none = (
        TransactionId::from_bytes([0xFF; 16]),
        TransactionId::from_bytes([0; 16]),
    );
    let closed = Closed {
        number,
        segment_len,
        next_sequence,
        counts: [
            count_u64(ids.len()),
            count_u64(index.originals.len()),
            count_u64(index.approvals.len()),
            count_u64(reversals.len()),
        ],
        id_min: ids.first().map_or(none.0, |(id, _)| **id),
        id_max: ids.last().map_or(none.1, |(id, _)| **id),
        reversed_min: reversals.first().map_or(none.0, |(id, _)| **id),
        reversed_max: reversals.last().map_or(none.1, |(id, _)| **id),
        approvals_max_ms: index.approvals.keys().map(|c| c.at_ms).max().unwrap_or(0),
        approvals_min_ms: index
            .approvals
            .keys()
            .map(|c| c.at_ms)
            .min()
            .unwrap_or(u64::MAX),
        body_crc: crc32fast::hash(&body),
        verified: OnceLock::from(true),
        path: sidecar_path(dir, number),
    };
    let mut file_bytes = closed.header().to_vec();
    file_bytes.extend_from_slice(&body);
    write_whole(&closed.path, &file_bytes)?;
    Ok(closed)
}

/// Writes `bytes` to `path` by a temporary file renamed over it. Not
/// synced: an index file or snapshot is never the only copy of anything
/// (the segments are, and they are synced), and start-up checks each one
/// against its checksum and the segment it describes, rebuilding what a
/// crash cut short or lost. An `fsync` here would stall the writer, which
/// closes segments on its own thread, for the disk's worst case.
///
/// The temporary name keeps the file's own extension (`.idx.tmp`,
/// `.snap.tmp`): a segment's index file (written by a thread of its own)
/// and its snapshot (by the writer) are written at the same time.
pub(super) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes).map_err(io_error("write a journal index", path))?;
    std::fs::rename(&temporary, path).map_err(io_error("rename a journal index", path))
}

/// The summary of segment `number` from its index file, if the file is
/// there, its header whole and it describes this segment as it is
/// (`segment_len` bytes). `None`: it is to be rebuilt.
pub(super) fn read(dir: &Path, number: u64, segment_len: u64) -> Option<Closed> {
    let path = sidecar_path(dir, number);
    let file = File::open(&path).ok()?;
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, 0).ok()?;
    let closed = Closed::parse(&header, path)?;
    let body_len = closed.body_len()?;
    let file_len = file.metadata().ok()?.len();
    (closed.number == number
        && closed.segment_len == segment_len
        && file_len == count_u64(HEADER).checked_add(body_len)?)
    .then_some(closed)
}

fn be_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or_default()
}

fn id_at(bytes: &[u8]) -> TransactionId {
    TransactionId::from_bytes(bytes.try_into().unwrap_or([0; 16]))
}

impl Closed {
    fn header(&self) -> [u8; HEADER] {
        let mut out = Vec::with_capacity(HEADER);
        out.extend_from_slice(MAGIC);
        for n in [self.number, self.segment_len, self.next_sequence] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for n in self.counts {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for id in [
            self.id_min,
            self.id_max,
            self.reversed_min,
            self.reversed_max,
        ] {
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&self.approvals_min_ms.to_be_bytes());
        out.extend_from_slice(&self.approvals_max_ms.to_be_bytes());
        out.extend_from_slice(&self.body_crc.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&out);
        header
    }

    fn parse(header: &[u8; HEADER], path: PathBuf) -> Option<Closed> {
        let (body, crc) = header.split_at(HEADER - 4);
        if header.get(..8) != Some(MAGIC.as_slice())
            || crc32fast::hash(body).to_be_bytes().as_slice() != crc
        {
            return None;
        }
        let n = |i: usize| be_u64(&header[8 + 8 * i..16 + 8 * i]);
        let ids = 8 + 8 * 7;
        let id = |i: usize| id_at(&header[ids + 16 * i..ids + 16 * (i + 1)]);
        let tail = ids + 64;
        Some(Closed {
            number: n(0),
            segment_len: n(1),
            next_sequence: n(2),
            counts: [n(3), n(4), n(5), n(6)],
            id_min: id(0),
            id_max: id(1),
            reversed_min: id(2),
            reversed_max: id(3),
            approvals_min_ms: be_u64(&header[tail..tail + 8]),
            approvals_max_ms: be_u64(&header[tail + 8..tail + 16]),
            body_crc: u32::from_be_bytes(header[tail + 16..tail + 20].try_into().ok()?),
            verified: OnceLock::new(),
            path,
        })
    }

    fn row_sizes() -> [usize; 4] {
        [ID_ROW, ORIGINAL_ROW, APPROVAL_ROW, REVERSAL_ROW]
    }

    fn body_len(&self) -> Option<u64> {
        self.counts
            .iter()
            .zip(Closed::row_sizes())
            .try_fold(0u64, |sum, (count, row)| {
                sum.checked_add(count.checked_mul(count_u64(row))?)
            })
    }

    /// Records indexed.
    pub(super) fn records(&self) -> u64 {
        self.counts[0]
    }

    fn corrupt(&self, why: &'static str) -> StorageError {
        StorageError::LogCorrupt {
            path: self.path.clone(),
            offset: 0,
            why,
        }
    }

    /// The file, its body checked against its checksum once since start.
    fn open(&self) -> Result<File, StorageError> {
        let file = File::open(&self.path).map_err(io_error("open a journal index", &self.path))?;
        let whole = *self.verified.get_or_init(|| {
            let mut body = Vec::new();
            let read = std::io::Read::read_to_end(&mut &file, &mut body);
            let whole = read.is_ok()
                && body.len() >= HEADER
                && crc32fast::hash(&body[HEADER..]) == self.body_crc;
            if !whole {
                // Set aside (kept for a person to look at), so that the
                // next start finds no index and rebuilds it.
                let aside = self.path.with_extension("idx.damaged");
                let renamed = std::fs::rename(&self.path, &aside);
                tracing::error!(
                    index = %self.path.display(),
                    set_aside = renamed.is_ok(),
                    "journal: a closed segment's index fails its checksum; reads of that segment fail until a restart rebuilds it"
                );
            }
            whole
        });
        if !whole {
            return Err(self.corrupt(
                "an index whose checksum does not match (a restart rebuilds it from its segment)",
            ));
        }
        Ok(file)
    }

    /// Where table `table` starts in the file.
    fn table_start(&self, table: usize) -> u64 {
        let before: u64 = self.counts[..table]
            .iter()
            .zip(Closed::row_sizes())
            .map(|(count, row)| count * count_u64(row))
            .sum();
        count_u64(HEADER) + before
    }

    /// Table `table` of the open file.
    fn table<'f, const N: usize>(&'f self, file: &'f File, table: usize) -> Table<'f, N> {
        Table {
            file,
            start: self.table_start(table),
            rows: self.counts[table],
            path: &self.path,
        }
    }

    /// The offset of record `id`'s frame in this segment.
    pub(super) fn frame_of(&self, id: TransactionId) -> Result<Option<u64>, StorageError> {
        if id < self.id_min || id > self.id_max {
            return Ok(None);
        }
        let file = self.open()?;
        let table = self.table::<ID_ROW>(&file, 0);
        let at = table.lower_bound(id.as_bytes())?;
        match table.row_opt(at)? {
            Some(row) if row[..16] == id.as_bytes()[..] => Ok(Some(be_u64(&row[16..24]))),
            _ => Ok(None),
        }
    }

    /// The first reversal of `original`, if this segment holds it.
    pub(super) fn reversal(
        &self,
        original: TransactionId,
    ) -> Result<Option<Reversal>, StorageError> {
        if original < self.reversed_min || original > self.reversed_max {
            return Ok(None);
        }
        let file = self.open()?;
        let table = self.table::<REVERSAL_ROW>(&file, 3);
        let at = table.lower_bound(original.as_bytes())?;
        match table.row_opt(at)? {
            Some(row) if row[..16] == original.as_bytes()[..] => Ok(Some(Reversal {
                id: id_at(&row[16..32]),
                amount_minor: be_u64(&row[32..40]),
            })),
            _ => Ok(None),
        }
    }

    /// The ids entered under an acquirer-key hash.
    pub(super) fn originals(&self, hash: u64) -> Result<Vec<TransactionId>, StorageError> {
        if self.counts[1] == 0 {
            return Ok(Vec::new());
        }
        let file = self.open()?;
        let table = self.table::<ORIGINAL_ROW>(&file, 1);
        let mut at = table.lower_bound(&hash.to_be_bytes())?;
        let mut ids = Vec::new();
        while let Some(row) = table.row_opt(at)? {
            if be_u64(&row[..8]) != hash {
                break;
            }
            ids.push(id_at(&row[8..24]));
            at += 1;
        }
        Ok(ids)
    }

    /// Whether any approval here is at or after `at_ms`.
    pub(super) fn approvals_reach(&self, at_ms: u64) -> bool {
        self.counts[2] > 0 && self.approvals_max_ms >= at_ms
    }

    /// The earliest `at_ms` of its approvals.
    pub(super) fn approvals_from_ms(&self) -> u64 {
        self.approvals_min_ms
    }

    /// The approvals from `from` on, in order, a page at a time.
    pub(super) fn approvals_after(
        &self,
        from: std::ops::Bound<ReplayCursor>,
    ) -> Result<ApprovalRows, StorageError> {
        let file = self.open()?;
        let (cursor, exclusive) = match from {
            std::ops::Bound::Included(cursor) => (Some(cursor), false),
            std::ops::Bound::Excluded(cursor) => (Some(cursor), true),
            std::ops::Bound::Unbounded => (None, false),
        };
        let mut next = 0;
        if let Some(cursor) = cursor {
            let mut key = cursor.at_ms.to_be_bytes().to_vec();
            key.extend_from_slice(cursor.id.as_bytes());
            let table = self.table::<APPROVAL_ROW>(&file, 2);
            next = table.lower_bound(&key)?;
            if exclusive
                && let Some(row) = table.row_opt(next)?
                && row[..24] == key[..]
            {
                next += 1;
            }
        }
        Ok(ApprovalRows {
            start: self.table_start(2),
            rows: self.counts[2],
            next,
            file,
            path: self.path.clone(),
            page: Vec::new(),
            page_at: 0,
        })
    }
}

/// A sorted table of `N`-byte rows in an index file.
struct Table<'f, const N: usize> {
    file: &'f File,
    start: u64,
    rows: u64,
    path: &'f Path,
}

impl<const N: usize> Table<'_, N> {
    fn row_opt(&self, at: u64) -> Result<Option<[u8; N]>, StorageError> {
        if at >= self.rows {
            return Ok(None);
        }
        let mut row = [0u8; N];
        self.file
            .read_exact_at(&mut row, self.start + at * count_u64(N))
            .map_err(io_error("read a journal index", self.path))?;
        Ok(Some(row))
    }

    /// The first row whose key prefix is not below `key`.
    fn lower_bound(&self, key: &[u8]) -> Result<u64, StorageError> {
        let (mut low, mut high) = (0, self.rows);
        while low < high {
            let mid = low + (high - low) / 2;
            let row = self.row_opt(mid)?.unwrap_or([0xFF; N]);
            if row[..key.len()] < *key {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }
}

/// Approvals read from an index file in order, a page of rows per read.
pub(super) struct ApprovalRows {
    file: File,
    path: PathBuf,
    start: u64,
    rows: u64,
    next: u64,
    page: Vec<u8>,
    page_at: usize,
}

/// Rows read with one `pread`.
const PAGE_ROWS: u64 = 256;

impl ApprovalRows {
    /// The next approval, if any.
    pub(super) fn next_row(&mut self) -> Result<Option<Approval>, StorageError> {
        if self.page_at >= self.page.len() {
            let rows = PAGE_ROWS.min(self.rows.saturating_sub(self.next));
            if rows == 0 {
                return Ok(None);
            }
            let len = usize::try_from(rows * count_u64(APPROVAL_ROW)).unwrap_or(0);
            self.page.resize(len, 0);
            self.file
                .read_exact_at(
                    &mut self.page,
                    self.start + self.next * count_u64(APPROVAL_ROW),
                )
                .map_err(io_error("read a journal index", &self.path))?;
            self.next += rows;
            self.page_at = 0;
        }
        let row = &self.page[self.page_at..self.page_at + APPROVAL_ROW];
        self.page_at += APPROVAL_ROW;
        let corrupt = || StorageError::LogCorrupt {
            path: self.path.clone(),
            offset: 0,
            why: "an approval in an index that does not decode",
        };
        Ok(Some(Approval {
            cursor: ReplayCursor {
                at_ms: be_u64(&row[0..8]),
                id: id_at(&row[8..24]),
            },
            token: Token::from_bytes(row[24..40].try_into().map_err(|_| corrupt())?),
            merchant_id: MerchantId::parse(&row[40..55]).ok_or_else(corrupt)?,
            currency: Currency::from_numeric(u16::from_be_bytes(
                row[55..57].try_into().map_err(|_| corrupt())?,
            ))
            .ok_or_else(corrupt)?,
            amount: Amount::from_minor(be_u64(&row[57..65])).ok_or_else(corrupt)?,
        }))
    }
}
