//! Segment files and the frames in them: the journal of record.
//!
//! A segment `journal-NNNNNNNN.seg` is an 8-byte header (`SWLOG001`)
//! followed by frames, each
//!
//! ```text
//! [length u32][crc32 u32][sequence u64][payload: length bytes]
//! ```
//!
//! little-endian, the CRC-32 (crc32fast) taken over the length, the
//! sequence and the payload. Sequences run on from 1 across segments with
//! no gap. A frame is written with one `write`; [`Segments::append`] with
//! `sync` returns only after `fdatasync`. A segment is closed (synced) and
//! the next one begun once the next frame would take it past its size.
//!
//! [`recover`] reads every segment at start and checks every frame. A bad
//! frame (cut short, a checksum that fails, a length past the end) at the
//! end of the last segment is a write torn by a crash: the file is cut
//! back to the last whole frame, and the journal goes on from there. A bad
//! frame anywhere else, or one followed by a whole frame, is corruption:
//! recovery refuses, naming the file and the offset.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::convert::count_u64;
use crate::error::StorageError;

/// The first bytes of every segment: what it is and its format's version.
const MAGIC: &[u8; 8] = b"SWLOG001";
/// Length, checksum and sequence.
const FRAME_HEADER: usize = 16;

/// The file name of segment `number`.
fn segment_name(number: u64) -> String {
    format!("journal-{number:08}.seg")
}

/// The path of segment `number` under `dir`.
pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(segment_name(number))
}

/// The payload of the whole frame at `offset` in segment `number`, read
/// back with positioned reads and its checksum verified: a record that is
/// not held in memory. A frame that does not check is damage, named with
/// its file and offset.
pub(super) fn read_frame(dir: &Path, number: u64, offset: u64) -> Result<Vec<u8>, StorageError> {
    use std::os::unix::fs::FileExt;
    let path = segment_path(dir, number);
    let corrupt = |why| StorageError::LogCorrupt {
        path: path.clone(),
        offset,
        why,
    };
    let file = File::open(&path).map_err(io_error("open a journal segment", &path))?;
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut header, offset)
        .map_err(io_error("read a journal frame", &path))?;
    let length: [u8; 4] = header[0..4].try_into().map_err(|_| corrupt("length"))?;
    let crc: [u8; 4] = header[4..8].try_into().map_err(|_| corrupt("crc"))?;
    let sequence: [u8; 8] = header[8..16].try_into().map_err(|_| corrupt("sequence"))?;
    let payload_len =
        usize::try_from(u32::from_le_bytes(length)).map_err(|_| corrupt("a frame's length"))?;
    let mut payload = vec![0u8; payload_len];
    file.read_exact_at(&mut payload, offset + count_u64(FRAME_HEADER))
        .map_err(io_error("read a journal frame", &path))?;
    if checksum(length, sequence, &payload) != u32::from_le_bytes(crc) {
        return Err(corrupt("a checksum that does not match"));
    }
    Ok(payload)
}

/// The number in a segment's file name, or `None` for any other file.
fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".seg")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn checksum(length: [u8; 4], sequence: [u8; 8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length);
    hasher.update(&sequence);
    hasher.update(payload);
    hasher.finalize()
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Log {
        operation,
        path,
        source,
    }
}

/// The segments being written: the open last one and where the next frame
/// goes. One owner at a time (the log's writer lock).
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    number: u64,
    /// Bytes in the current segment.
    len: u64,
    next_sequence: u64,
    segment_bytes: u64,
    /// Frames written since the last `fdatasync`.
    unsynced: bool,
    /// Set when an `fdatasync` failed: what is on disk is unknown from then
    /// on, so nothing more is written until a restart reads it back.
    failed: bool,
    /// The frame being built, kept to reuse its allocation.
    frame: Vec<u8>,
    /// The segment and offset of the last frame appended.
    last_frame: (u64, u64),
    /// A segment closed and not yet indexed: number, length, next sequence.
    closed: Option<(u64, u64, u64)>,
}

impl Segments {
    /// The buffer to encode the next payload into, emptied.
    pub(super) fn payload(&mut self) -> &mut Vec<u8> {
        self.frame.clear();
        self.frame.resize(FRAME_HEADER, 0);
        &mut self.frame
    }

    /// Appends the payload built in [`Segments::payload`] as one frame,
    /// with one `write`, and with `sync` returns only after `fdatasync`
    /// (which also covers the frames written before it without). On an
    /// error nothing of the frame stays in the file, or (a failed sync)
    /// the log takes no more writes.
    pub(super) fn append(&mut self, sync: bool) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::LogFailed {
                path: self.path.clone(),
            });
        }
        let payload_len = self.frame.len().saturating_sub(FRAME_HEADER);
        let length = u32::try_from(payload_len)
            .map_err(|_| StorageError::InvalidRecord {
                field: "batch",
                reason: "over 4 GiB in one frame",
            })?
            .to_le_bytes();
        let sequence = self.next_sequence.to_le_bytes();
        let crc = checksum(length, sequence, &self.frame[FRAME_HEADER..]);
        self.frame[0..4].copy_from_slice(&length);
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.frame[8..16].copy_from_slice(&sequence);
        let frame_len = count_u64(self.frame.len());
        if self.len > count_u64(MAGIC.len()) && self.len + frame_len > self.segment_bytes {
            self.roll()?;
        }
        if let Err(error) = (&self.file).write_all(&self.frame) {
            // Cut the part written (if any) back off, so the next frame
            // follows the last whole one.
            if self.file.set_len(self.len).is_err() {
                self.failed = true;
            }
            return Err(io_error("append to the journal", &self.path)(error));
        }
        self.last_frame = (self.number, self.len);
        self.len += frame_len;
        self.next_sequence += 1;
        self.unsynced = true;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Whether a failed `fdatasync` (or a failed cut after a failed
    /// write) has stopped the log taking writes.
    pub(super) fn has_failed(&self) -> bool {
        self.failed
    }

    /// Makes the log fail as after a failed `fdatasync`, for tests.
    #[cfg(test)]
    pub(super) fn fail(&mut self) {
        self.failed = true;
    }

    /// The file being written now.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The number of the segment being written and the sequence of the
    /// next frame.
    pub(super) fn position(&self) -> (u64, u64) {
        (self.number, self.next_sequence)
    }

    /// The segment closed since last asked, if one was: its number, its
    /// length and the sequence of the frame after its last.
    pub(super) fn take_closed(&mut self) -> Option<(u64, u64, u64)> {
        self.closed.take()
    }

    /// Where the last frame appended is: its segment and offset.
    pub(super) fn last_frame(&self) -> (u64, u64) {
        self.last_frame
    }

    /// `fdatasync`s the frames written since the last one.
    pub(super) fn sync(&mut self) -> Result<(), StorageError> {
        if !self.unsynced {
            return Ok(());
        }
        if let Err(error) = self.file.sync_data() {
            self.failed = true;
            return Err(io_error("fdatasync the journal", &self.path)(error));
        }
        self.unsynced = false;
        Ok(())
    }

    /// Closes the current segment and begins the next.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        let number = self.number + 1;
        let path = self.dir.join(segment_name(number));
        let file = create_segment(&self.dir, &path)?;
        tracing::info!(segment = %path.display(), "journal: began a new segment");
        self.closed = Some((self.number, self.len, self.next_sequence));
        self.file = file;
        self.path = path;
        self.number = number;
        self.len = count_u64(MAGIC.len());
        Ok(())
    }
}

/// Creates a segment holding only its header, durably: the file, its
/// header and its name in the directory.
fn create_segment(dir: &Path, path: &Path) -> Result<File, StorageError> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io_error("create a journal segment", path))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(io_error("write a journal segment's header", path))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync the journal's directory", dir))
}

/// Every whole frame of segment `number`, in order, handed to `each` with
/// its offset: a segment read back whole without recovering it (a closed
/// segment's index rebuilt, or everything committed, for a test). A bad
/// frame is damage, named, unless `open` says the segment may be being
/// written, where the scan ends at it.
pub(super) fn scan(
    dir: &Path,
    number: u64,
    open: bool,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let path = segment_path(dir, number);
    let data = std::fs::read(&path).map_err(io_error("read a journal segment", &path))?;
    let corrupt = |offset: usize, why: &'static str| StorageError::LogCorrupt {
        path: path.clone(),
        offset: count_u64(offset),
        why,
    };
    if data.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(corrupt(0, "not a journal segment (its header is wrong)"));
    }
    let mut at = MAGIC.len();
    let mut sequence = None;
    while at < data.len() {
        let expected = sequence.unwrap_or_else(|| {
            data.get(at + 8..at + 16)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        });
        match frame_at(&data, at, expected) {
            Ok((payload, next)) => {
                each(count_u64(at), payload)?;
                sequence = Some(expected + 1);
                at = next;
            }
            Err(_) if open => break,
            Err(Bad::Sequence) => return Err(corrupt(at, "a whole frame out of sequence")),
            Err(Bad::Torn(why)) => return Err(corrupt(at, why)),
        }
    }
    Ok(())
}

/// The numbers of the segments under `dir`, ascending.
pub(super) fn numbers(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_error("list the journal's directory", dir))?
        .filter_map(|entry| segment_number(entry.ok()?.file_name().to_str()?))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The segment whose snapshot start-up began from (0: none, every
    /// segment was read).
    pub snapshot: u64,
    /// Segments read (those after the snapshot).
    pub segments: u64,
    /// Whole frames read (commits, claim turns, vault rewraps).
    pub frames: u64,
    /// Bytes of a torn tail cut off the last segment (0: none).
    pub torn_bytes: u64,
}

/// Why a frame at some offset is not a whole frame.
enum Bad {
    Torn(&'static str),
    /// A whole frame, checksum and all, but not the one expected next.
    Sequence,
}

/// The frame at `at` in `data`: its payload and where the next begins.
fn frame_at(data: &[u8], at: usize, sequence: u64) -> Result<(&[u8], usize), Bad> {
    let header = data
        .get(at..at + FRAME_HEADER)
        .ok_or(Bad::Torn("a frame header cut short"))?;
    let length: [u8; 4] = header[0..4].try_into().map_err(|_| Bad::Torn("length"))?;
    let crc: [u8; 4] = header[4..8].try_into().map_err(|_| Bad::Torn("crc"))?;
    let seq: [u8; 8] = header[8..16]
        .try_into()
        .map_err(|_| Bad::Torn("sequence"))?;
    let payload_len = usize::try_from(u32::from_le_bytes(length))
        .map_err(|_| Bad::Torn("a length past the end of the file"))?;
    let end = at
        .checked_add(FRAME_HEADER + payload_len)
        .filter(|end| *end <= data.len())
        .ok_or(Bad::Torn("a length past the end of the file"))?;
    let payload = &data[at + FRAME_HEADER..end];
    if checksum(length, seq, payload) != u32::from_le_bytes(crc) {
        return Err(Bad::Torn("a checksum that does not match"));
    }
    if u64::from_le_bytes(seq) != sequence {
        return Err(Bad::Sequence);
    }
    Ok((payload, end))
}

/// Whether a whole frame numbered `sequence` or later starts anywhere
/// after `from`: if so, the bad frame at `from` is not a torn tail but
/// damage in the middle of the journal.
fn whole_frame_after(data: &[u8], from: usize, sequence: u64) -> bool {
    (from + 1..data.len().saturating_sub(FRAME_HEADER - 1)).any(|at| {
        let seq = data
            .get(at + 8..at + 16)
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        seq >= sequence && seq - sequence < (1 << 32) && frame_at(data, at, seq).is_ok()
    })
}

/// Where recovery starts reading: the first segment after the latest
/// snapshot, and the sequence of its first frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadFrom {
    pub(super) segment: u64,
    pub(super) sequence: u64,
}

impl ReadFrom {
    /// Every segment, from the first.
    pub(super) const START: ReadFrom = ReadFrom {
        segment: 1,
        sequence: 1,
    };
}

/// Where a frame read back at start is.
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) number: u64,
    pub(super) path: &'a Path,
    pub(super) offset: u64,
    pub(super) sequence: u64,
}

/// Reads every segment under `dir` from `from` on, oldest first, handing each whole
/// frame's payload to `each` (with the segment's number and path and the
/// frame's offset); cuts a torn tail off the last segment; and opens the last
/// segment (or a first one) for appending. `segment_bytes` is where a
/// segment is closed and the next begun.
pub(super) fn recover(
    dir: &Path,
    segment_bytes: u64,
    from: ReadFrom,
    mut each: impl FnMut(&[u8], At<'_>) -> Result<(), StorageError>,
) -> Result<(Segments, Recovery), StorageError> {
    std::fs::create_dir_all(dir).map_err(io_error("create the journal's directory", dir))?;
    let numbers = numbers(dir)?;
    let mut recovery = Recovery::default();
    let mut sequence = from.sequence;
    let mut last = None;
    for (i, &number) in numbers.iter().enumerate() {
        let path = segment_path(dir, number);
        let corrupt = |offset: usize, why: &'static str| StorageError::LogCorrupt {
            path: path.clone(),
            offset: count_u64(offset),
            why,
        };
        if i > 0 && numbers[i - 1] + 1 != number {
            return Err(corrupt(0, "the segment before it is missing"));
        }
        if number < from.segment {
            // Closed and indexed; what its frames did is in the snapshot.
            continue;
        }
        let is_last = i + 1 == numbers.len();
        let data = std::fs::read(&path).map_err(io_error("read a journal segment", &path))?;
        recovery.segments += 1;
        let mut at = MAGIC.len();
        if data.len() < MAGIC.len() && is_last && MAGIC.starts_with(&data) {
            // Created and cut short by a crash before its header was
            // synced: no frame can be in it. Written afresh below.
            at = 0;
        } else if data.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(corrupt(0, "not a journal segment (its header is wrong)"));
        }
        while at > 0 && at < data.len() {
            match frame_at(&data, at, sequence) {
                Ok((payload, next)) => {
                    each(
                        payload,
                        At {
                            number,
                            path: &path,
                            offset: count_u64(at),
                            sequence,
                        },
                    )?;
                    recovery.frames += 1;
                    sequence += 1;
                    at = next;
                }
                Err(Bad::Sequence) => {
                    return Err(corrupt(at, "a whole frame out of sequence"));
                }
                Err(Bad::Torn(why)) => {
                    if !is_last {
                        return Err(corrupt(at, why));
                    }
                    if whole_frame_after(&data, at, sequence) {
                        return Err(corrupt(at, "a bad frame followed by whole ones"));
                    }
                    recovery.torn_bytes = count_u64(data.len() - at);
                    tracing::warn!(
                        segment = %path.display(),
                        offset = at,
                        bytes = recovery.torn_bytes,
                        why,
                        "journal: cut off a torn tail, the last whole commit stands"
                    );
                    break;
                }
            }
        }
        last = Some((number, path, count_u64(at)));
    }
    let segments = match last {
        Some((number, path, len)) if len > 0 => {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error("open a journal segment", &path))?;
            if recovery.torn_bytes > 0 {
                file.set_len(len)
                    .and_then(|()| file.sync_all())
                    .map_err(io_error("cut a torn tail off a journal segment", &path))?;
            }
            Segments::new(dir, file, path, number, len, sequence, segment_bytes)
        }
        Some((number, path, _)) => {
            std::fs::remove_file(&path)
                .map_err(io_error("remove a journal segment cut short", &path))?;
            let file = create_segment(dir, &path)?;
            Segments::new(
                dir,
                file,
                path,
                number,
                count_u64(MAGIC.len()),
                sequence,
                segment_bytes,
            )
        }
        None => {
            let path = dir.join(segment_name(1));
            let file = create_segment(dir, &path)?;
            Segments::new(
                dir,
                file,
                path,
                1,
                count_u64(MAGIC.len()),
                sequence,
                segment_bytes,
            )
        }
    };
    Ok((segments, recovery))
}

impl Segments {
    fn new(
        dir: &Path,
        file: File,
        path: PathBuf,
        number: u64,
        len: u64,
        next_sequence: u64,
        segment_bytes: u64,
    ) -> Segments {
        Segments {
            dir: dir.to_path_buf(),
            file,
            path,
            number,
            len,
            next_sequence,
            segment_bytes,
            unsynced: false,
            failed: false,
            frame: Vec::new(),
            last_frame: (number, 0),
            closed: None,
        }
    }
}
