//! CPU time of a process, read from `/proc`, for the bench's CPU per
//! request: the server's and the load tester's own, before and after a
//! measurement.
//!
//! The first field of `/proc/PID/task/TID/schedstat` is the nanoseconds the
//! thread has run, exact where `utime + stime` of `/proc/PID/stat` counts
//! in clock ticks (`USER_HZ`, 100 a second on Linux, which `getconf
//! CLK_TCK` would say but reading it needs libc). Summed over the threads
//! alive at each reading; a thread that ends between two readings takes its
//! time with it, so where `/proc/PID/stat`'s ticks (which keep the time of
//! ended threads) say more, those are used.

use std::path::Path;

/// Nanoseconds of one `USER_HZ` tick (Linux's user-visible clock tick is
/// 100 Hz on every architecture it runs on).
const TICK_NS: u64 = 10_000_000;

/// The CPU time (user and system) process `pid` has used so far, in
/// nanoseconds, or `None` where `/proc` does not say (not Linux, or the
/// process is gone). `pid` may be `"self"`.
pub fn process_ns(pid: &str) -> Option<u64> {
    let root = Path::new("/proc").join(pid);
    let ticks = stat_ns(&std::fs::read_to_string(root.join("stat")).ok()?);
    let mut threads = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(root.join("task")) {
        for task in tasks.flatten() {
            if let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|text| schedstat_ns(&text))
            {
                threads = threads.saturating_add(ns);
                any = true;
            }
        }
    }
    match (any, ticks) {
        // The ticks are sampled: trust them over the exact sum only when
        // they exceed it by more than their own grain (ended threads).
        (true, Some(ticks)) if ticks > threads + 2 * TICK_NS => Some(ticks),
        (true, _) => Some(threads),
        (false, ticks) => ticks,
    }
}

/// The first field of a `schedstat` line: nanoseconds on a CPU.
fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `utime + stime` of a `/proc/PID/stat` line, in nanoseconds.
fn stat_ns(text: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing one, from field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime).saturating_mul(TICK_NS))
}

/// CPU time a process used over a measurement.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pid: Option<u32>,
    ns: Option<u64>,
}

impl CpuReading {
    /// Reads process `pid` now, or this process with `None`.
    pub fn start(pid: Option<u32>) -> CpuReading {
        CpuReading {
            pid,
            ns: process_ns(&pid.map_or("self".to_owned(), |p| p.to_string())),
        }
    }

    /// Nanoseconds used since [`CpuReading::start`].
    pub fn used_ns(&self) -> Option<u64> {
        let now = CpuReading::start(self.pid).ns?;
        Some(now.saturating_sub(self.ns?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_are_read() {
        assert_eq!(schedstat_ns("123456 789 10\n"), Some(123_456));
        // pid (comm with spaces) state ppid ... utime=7 stime=5 (fields 14, 15).
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 7 5 0 0 20 0 1 0 100";
        assert_eq!(stat_ns(stat), Some(12 * TICK_NS));
        assert_eq!(stat_ns("garbage"), None);
    }

    #[test]
    fn this_process_uses_cpu_while_it_works() {
        let reading = CpuReading::start(None);
        let mut x = 0u64;
        let until = crate::clock::Instant::now() + std::time::Duration::from_millis(30);
        while crate::clock::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = reading.used_ns().unwrap();
        assert!(used >= 10_000_000, "{used} ns");
    }
}
