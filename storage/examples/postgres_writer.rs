//! The PostgreSQL journal writer alone, against the server at
//! `DATABASE_URL` (run it under `scripts/test-env`):
//!
//! - one [`PostgresWriter`] writing batches of 1, 16, 64 and 256 records
//!   back to back, every card new (each record with its sealed PAN) and
//!   every card known (none): milliseconds a batch, records/s;
//! - the [`Journal`] with 1, 2 and 4 writer connections under 512 appends
//!   always in flight, half the cards new: records/s and the average batch.
//!
//! Each line also gives the CPU per record of this process (utime+stime
//! from /proc) and of the PostgreSQL server (its postmaster and every
//! child: backends, WAL writer, checkpointer), which shares the machine
//! with the switch in `loadtest bench` and which the bench's CPU figure
//! leaves out.
//!
//! ```text
//! scripts/test-env cargo run --release -p storage --example postgres_writer -- \
//!     [seconds] [writer|journal] [batch size]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::as_conversions)]

mod common;

use storage::{
    Journal, JournalBackend, JournalConfig, PostgresConfig, PostgresStore, PostgresWriter,
};
use tokio::time::{Duration, Instant};

/// The postmaster of scripts/test-env's cluster.
fn postmaster() -> Option<u32> {
    let dir = std::env::var("SWITCH_TEST_ENV_DIR").ok()?;
    let pid = std::fs::read_to_string(format!("{dir}/pg/postmaster.pid")).ok()?;
    pid.lines().next()?.trim().parse().ok()
}

/// CPU seconds of the postmaster and its children so far. A child that
/// has exited is not counted: the writers' backends live through a run.
fn cpu_seconds_of_server(postmaster: u32) -> f64 {
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, t)) = common::ticks_of(&stat)
            && (pid == postmaster || ppid == postmaster)
        {
            ticks += t;
        }
    }
    ticks as f64 / 100.0
}

struct Meter {
    started: Instant,
    client: f64,
    server: f64,
    postmaster: Option<u32>,
}

impl Meter {
    fn start() -> Meter {
        let postmaster = postmaster();
        Meter {
            started: Instant::now(),
            client: common::cpu_seconds_of_self(),
            server: postmaster.map_or(0.0, cpu_seconds_of_server),
            postmaster,
        }
    }

    /// records/s, client and server CPU µs a record.
    fn figures(&self, records: u64) -> (f64, f64, f64) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let records = records.max(1) as f64;
        let client = (common::cpu_seconds_of_self() - self.client) * 1e6 / records;
        let server = self.postmaster.map_or(f64::NAN, |pm| {
            (cpu_seconds_of_server(pm) - self.server) * 1e6 / records
        });
        (records / elapsed, client, server)
    }
}

async fn writer_alone(url: &str, seconds: u64, sizes: &[usize]) {
    let options = url.parse().unwrap();
    let mut writer = PostgresWriter::connect(&options, &PostgresConfig::default())
        .await
        .unwrap();
    println!(
        "writer alone | batch | cards | ms a batch | records/s | client CPU µs/record | server CPU µs/record"
    );
    for &batch_size in sizes {
        for new_card in [true, false] {
            let meter = Meter::start();
            let mut records = 0u64;
            let mut batches = 0u64;
            while meter.started.elapsed() < Duration::from_secs(seconds) {
                let batch: Vec<_> = (0..batch_size).map(|_| common::record(new_card)).collect();
                writer.write_batch(&batch).await.unwrap();
                records += batch_size as u64;
                batches += 1;
            }
            let ms = meter.started.elapsed().as_secs_f64() * 1e3 / batches as f64;
            let (rate, client, server) = meter.figures(records);
            println!(
                "writer alone | {batch_size} | {} | {ms:.2} | {rate:.0} | {client:.1} | {server:.1}",
                if new_card { "new" } else { "known" }
            );
        }
    }
    writer.close().await;
}

async fn journal_writers(url: &str, seconds: u64) {
    const IN_FLIGHT: usize = 512;
    println!(
        "journal | writers | records/s | batch avg | client CPU µs/record | server CPU µs/record"
    );
    for writers in [1usize, 2, 4] {
        let config = PostgresConfig {
            writer_connections: writers,
            journal: JournalConfig {
                queue_capacity: 8192,
                ..JournalConfig::default()
            },
            ..PostgresConfig::default()
        };
        let (journal, _store) = PostgresStore::open(url, config).await.unwrap();
        let before = journal.stats();
        let meter = Meter::start();
        let deadline = meter.started + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..IN_FLIGHT {
            let journal: Journal = journal.clone();
            tasks.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    journal
                        .append(common::record((n + task as u64).is_multiple_of(2)))
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            });
        }
        let mut records = 0;
        while let Some(n) = tasks.join_next().await {
            records += n.unwrap();
        }
        let (rate, client, server) = meter.figures(records);
        let after = journal.stats();
        let batch_avg = (after.records - before.records) as f64
            / (after.batches - before.batches).max(1) as f64;
        println!("journal | {writers} | {rate:.0} | {batch_avg:.1} | {client:.1} | {server:.1}");
        journal.close().await;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(3, |s| s.parse().unwrap());
    // `writer` or `journal` for one part only, and a batch size for the
    // writer alone (to profile the server at that size).
    let only = args.next();
    let sizes = args
        .next()
        .map_or(vec![1, 16, 64, 256], |size| vec![size.parse().unwrap()]);
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run under scripts/test-env");
    // Migrates the schema.
    let (journal, _store) = PostgresStore::open(&url, PostgresConfig::default())
        .await
        .unwrap();
    journal.close().await;
    if only.as_deref() != Some("journal") {
        writer_alone(&url, seconds, &sizes).await;
    }
    if only.as_deref() != Some("writer") {
        journal_writers(&url, seconds).await;
    }
}
