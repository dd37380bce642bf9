//! The journal's writer alone, through `storage::Journal` (group commit),
//! on SQLite and on the segment log, at fixed batch sizes; and `K_append`,
//! the same bytes appended with one `fdatasync` per batch and nothing else,
//! as the limit. Records/s and CPU per record (the process's utime+stime
//! from /proc, over the run).
//!
//! ```text
//! cargo run --release -p storage --example journal_writer -- [seconds] [dir]
//! ```
//!
//! Each run queues `batch` appends at once and waits for all of them. The
//! runtime has one thread, so all of them are queued before the writer
//! task runs, and every commit is one batch of that size (the average
//! batch is printed from the journal's counters to show it). Every record
//! is a new card's approval with its sealed PAN rider, as in a load test
//! over many cards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::as_conversions)]

mod common;

use std::io::Write;
use std::path::Path;

use storage::{Journal, JournalConfig, LogConfig, LogStore, SqliteStore};
use tokio::time::{Duration, Instant};

struct Figures {
    records_per_s: f64,
    cpu_us_per_record: f64,
    batch_avg: f64,
}

async fn drive(journal: &Journal, batch: usize, seconds: u64) -> Figures {
    let started = Instant::now();
    let cpu = common::cpu_seconds_of_self();
    let stats = journal.stats();
    let mut records = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let journal = journal.clone();
            let record = common::record(true);
            set.spawn(async move { journal.append(record).await });
        }
        while let Some(outcome) = set.join_next().await {
            outcome.unwrap().unwrap();
            records += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = journal.stats();
    Figures {
        records_per_s: records as f64 / elapsed,
        cpu_us_per_record: (common::cpu_seconds_of_self() - cpu) * 1e6 / records as f64,
        batch_avg: (after.records - stats.records) as f64
            / (after.batches - stats.batches).max(1) as f64,
    }
}

/// `K_append`: `frame_bytes` appended and fdatasynced per batch of `batch`
/// records, nothing else.
fn raw_append(dir: &Path, frame_bytes: usize, batch: usize, seconds: u64) -> Figures {
    let path = dir.join("raw.append");
    let mut file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let frame = vec![0x5Au8; frame_bytes];
    let started = std::time::SystemTime::now();
    let cpu = common::cpu_seconds_of_self();
    let mut batches = 0u64;
    while started.elapsed().unwrap() < std::time::Duration::from_secs(seconds) {
        file.write_all(&frame).unwrap();
        file.sync_data().unwrap();
        batches += 1;
    }
    let elapsed = started.elapsed().unwrap().as_secs_f64();
    let records = batches * batch as u64;
    std::fs::remove_file(&path).unwrap();
    Figures {
        records_per_s: records as f64 / elapsed,
        cpu_us_per_record: (common::cpu_seconds_of_self() - cpu) * 1e6 / records as f64,
        batch_avg: batch as f64,
    }
}

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".seg"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

/// Resident memory now, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Writes `records` records (each a new card's, with its sealed PAN) in
/// segments of `segment_bytes`, then measures what reopening the log adds
/// to the resident memory, per record, and how long it takes.
async fn memory_per_record(base: &Path, records: usize, segment_bytes: u64) {
    const RECORDS: usize = 400_000;
    let records_max = if records == 0 { RECORDS } else { records };
    let dir = tempfile::tempdir_in(base).unwrap();
    let config = LogConfig {
        segment_bytes,
        ..LogConfig::default()
    };
    {
        let (journal, _store) = LogStore::open(dir.path(), config).await.unwrap();
        let mut written = 0;
        while written < records_max {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..256 {
                let journal = journal.clone();
                let record = common::record(true);
                set.spawn(async move { journal.append(record).await });
            }
            while let Some(outcome) = set.join_next().await {
                outcome.unwrap().unwrap();
                written += 1;
            }
        }
        journal.close().await;
    }
    // Reopened in a process of its own: memory this one freed would be
    // reused and hide what the reopened log holds.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["0", "/tmp", "reopen"])
        .arg(dir.path())
        .arg(segment_bytes.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Opens the log in `dir` and prints what that adds to the resident
/// memory, per record, how long it takes and what it read.
async fn reopen(dir: &Path, segment_bytes: u64) {
    let config = LogConfig {
        segment_bytes,
        ..LogConfig::default()
    };
    let before = rss_bytes();
    let started = Instant::now();
    let (journal, store) = LogStore::open(dir, config).await.unwrap();
    let recovered_in = started.elapsed();
    let after = rss_bytes();
    let records = store.records();
    let held = store.in_memory();
    let recovery = store.recovery();
    println!(
        "{records} records: {} bytes resident, {} bytes per record (each with a vault row); \
         started in {recovered_in:?} from the snapshot of segment {} reading {} segment(s), \
         {} frames; {} records of the open segment indexed in memory, {} closed segments",
        after - before,
        (after - before) / records as u64,
        recovery.snapshot,
        recovery.segments,
        recovery.frames,
        held.open_records,
        held.closed_segments,
    );
    journal.close().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(3, |s| s.parse().unwrap());
    let base = args.next().unwrap_or_else(|| "/tmp".to_owned());
    // `log`: the segment log alone (for a profile); `memory`: the bytes of
    // memory the log's tables hold per record.
    let mode = args.next();
    if mode.as_deref() == Some("reopen") {
        let dir = args.next().unwrap();
        let segment_bytes = args.next().unwrap().parse().unwrap();
        reopen(Path::new(&dir), segment_bytes).await;
        return;
    }
    if mode.as_deref() == Some("memory") {
        // Optional: records (400 000) and segment bytes (the default).
        let records = args.next().map_or(0, |s| s.parse().unwrap());
        let segment_bytes = args
            .next()
            .map_or(storage::log::SEGMENT_BYTES_DEFAULT, |s| s.parse().unwrap());
        memory_per_record(Path::new(&base), records, segment_bytes).await;
        return;
    }
    let only_log = mode.as_deref() == Some("log");
    let config = JournalConfig::default();
    println!("batch | backend | records/s | CPU us/record | records/s vs K_append | batch avg");
    for batch in [1usize, 16, 64, 256] {
        // The log first: its bytes per batch size the raw append.
        let dir = tempfile::tempdir_in(&base).unwrap();
        let (journal, store) = LogStore::open(
            dir.path(),
            LogConfig {
                journal: config,
                ..LogConfig::default()
            },
        )
        .await
        .unwrap();
        let before = segment_bytes(dir.path());
        let log = drive(&journal, batch, seconds).await;
        journal.close().await;
        let frames = journal.stats().batches.max(1);
        let frame_bytes = usize::try_from((segment_bytes(dir.path()) - before) / frames).unwrap();
        let records = store.records();
        drop(store);

        if only_log {
            println!(
                "{batch} | log | {:.0} | {:.1} | | {:.1}",
                log.records_per_s, log.cpu_us_per_record, log.batch_avg
            );
            continue;
        }
        let dir = tempfile::tempdir_in(&base).unwrap();
        let raw = raw_append(dir.path(), frame_bytes, batch, seconds);

        let dir = tempfile::tempdir_in(&base).unwrap();
        let (journal, _store) = SqliteStore::open(&dir.path().join("journal.sqlite"), config)
            .await
            .unwrap();
        let sqlite = drive(&journal, batch, seconds).await;
        journal.close().await;

        for (name, figures) in [("K_append", &raw), ("log", &log), ("sqlite", &sqlite)] {
            println!(
                "{batch} | {name} | {:.0} | {:.1} | {:.2} | {:.1}",
                figures.records_per_s,
                figures.cpu_us_per_record,
                figures.records_per_s / raw.records_per_s,
                figures.batch_avg
            );
        }
        println!("  (log frame {frame_bytes} bytes per batch of {batch}, {records} records held)");
    }
}
