//! What the benches share: CPU and memory readings of this process and its threads (Linux
//! `/proc` and clocks), and the emulator session they time. `mod common;` in a bench; each
//! bench uses a part of it.
#![allow(dead_code, unreachable_pub)]

use futures::StreamExt;
use serde_json::{Value, json};
use sfstream::emulator::{Emulator, PreparedBatch};
use sfstream::{Event, Subscription};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Events per prepared response in the throughput benches.
pub const BATCH: usize = 1000;

/// CPU time of a thread in nanoseconds, from its `schedstat` file (first field).
pub fn schedstat_ns(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Nanoseconds this thread has spent on a CPU (0 where `/proc` cannot tell).
pub fn thread_cpu_ns() -> u64 {
    schedstat_ns(Path::new("/proc/thread-self/schedstat")).unwrap_or(0)
}

/// The `schedstat` file of the calling thread under its stable name
/// (`/proc/<pid>/task/<tid>/schedstat`), for reading from another thread.
pub fn this_thread_schedstat() -> PathBuf {
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    PathBuf::from("/proc").join(me).join("schedstat")
}

/// CPU time of every thread of this process so far (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User plus system CPU time of another process, in nanoseconds (`/proc/PID/stat`, in clock
/// ticks).
pub fn other_process_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000_000 / clock_ticks_per_second())
}

/// `getconf CLK_TCK` (100 on every usual Linux), asked once.
fn clock_ticks_per_second() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    })
}

/// A field of `/proc/self/status` in bytes (`"VmRSS:"`, `"VmHWM:"`; 0 where it is missing).
pub fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .map_or(0, |kb: usize| kb * 1024)
}

/// Runs `start` on a thread named `name` with a current-thread runtime of its own, which goes
/// on serving what `start` spawned (an emulator, a TLS front) after it returns; returns what it
/// returned. That thread's CPU is apart from the caller's.
pub fn on_own_thread<T, F, Fut>(name: &str, start: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tx.send(start().await).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

/// An emulator answering with up to [`BATCH`] events per response.
pub async fn batch_emulator() -> Emulator {
    Emulator::builder()
        .max_batch(Some(BATCH))
        .start()
        .await
        .unwrap()
}

/// The fields of a ~280 B platform event, order `i`.
pub fn order_fields(i: usize) -> Value {
    json!({"Order_Number__c": format!("ORD-{i:06}"), "Amount__c": 249.5})
}

/// `events` events of `fields(i)` on `channel`, pre-serialised [`BATCH`] to a response.
pub fn prepare(
    emu: &Emulator,
    channel: &str,
    events: usize,
    fields: impl Fn(usize) -> Value,
) -> Vec<PreparedBatch> {
    (0..events / BATCH)
        .map(|b| {
            let batch: Vec<Value> = (0..BATCH).map(|i| fields(b * BATCH + i)).collect();
            emu.prepare(channel, &batch)
        })
        .collect()
}

/// One timed pass: every batch pushed, every event read from `sub`.
pub struct Pass {
    pub events: usize,
    pub wall: Duration,
    /// What `cpu_ns` advanced by.
    pub cpu_ns: u64,
    /// The last event read (checked to be the last one pushed).
    pub last: Event,
}

impl Pass {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_ns_per_event(&self) -> f64 {
        self.cpu_ns as f64 / self.events as f64
    }
}

/// Pushes `batches` to the emulator (whose long poll `sub`'s client holds) and reads every
/// event; the wall time and the `cpu_ns` clock cover both.
pub async fn push_and_read(
    emu: &Emulator,
    sub: &mut Subscription,
    batches: &[PreparedBatch],
    cpu_ns: impl Fn() -> u64,
) -> Pass {
    let events: usize = batches.iter().map(PreparedBatch::len).sum();
    let last_id = batches.last().unwrap().replay_ids().last().unwrap();
    let cpu0 = cpu_ns();
    let t0 = Instant::now();
    for b in batches {
        emu.push_prepared(b);
    }
    let mut last = None;
    for _ in 0..events {
        last = Some(sub.next().await.unwrap().unwrap());
    }
    let wall = t0.elapsed();
    let cpu_ns = cpu_ns() - cpu0;
    let last = last.unwrap();
    assert_eq!(last.replay_id(), Some(last_id), "events lost or reordered");
    Pass {
        events,
        wall,
        cpu_ns,
        last,
    }
}
