//! What a replay storage costs the stream: events per second, client CPU per event and marker
//! write latency with each storage, under `AfterProcessed` (every event committed when the
//! consumer asks for the next one; the writer coalesces commits into one write at a time).
//!
//! ```text
//! SFSTREAM_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \
//! SFSTREAM_TEST_REDIS_URL=redis://127.0.0.1:6379/0 \
//!   cargo bench --bench storage --features postgres,redis            # 5 rounds of 300,000 events
//! cargo bench --bench storage --features postgres,redis -- --quick  # 1 round of 50,000
//! ```
//!
//! A storage whose URL variable is unset is left out. The client runs on a current-thread
//! Tokio runtime on the main thread (the PostgreSQL and Redis connection tasks run there too;
//! `FileStorage`'s writes on Tokio's blocking threads), the emulator on a thread of its own.
//! "client CPU" is the CPU time of the whole process except the emulator's thread
//! (`CLOCK_PROCESS_CPUTIME_ID` minus that thread's `/proc/.../schedstat`), divided by the
//! events: HTTP, parsing, routing, the queue, the consumer and the marker writes wherever they
//! run. The database servers' own CPU is not in it. Write latency is the time each
//! `ReplayStorage::set` call takes, as the client's writer sees it.

mod common;

use futures::future::BoxFuture;
use sfstream::Client;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, PreparedBatch};
use sfstream::replay::{
    FileStorage, MappingStorage, PostgresStorage, RedisStorage, ReplayMarker, ReplayStorage,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CPU time of this process so far, but for the emulator's thread (`emu_thread`: its
/// `schedstat`).
fn client_cpu_ns(emu_thread: &Path) -> u64 {
    let emulator = common::schedstat_ns(emu_thread).expect("schedstat of the emulator thread");
    common::process_cpu().as_nanos() as u64 - emulator
}

/// The emulator on its own thread, and where to read that thread's CPU time.
fn start_emulator() -> (Emulator, PathBuf) {
    common::on_own_thread("emulator", || {
        let me = common::this_thread_schedstat();
        async { (common::batch_emulator().await, me) }
    })
}

/// A storage that records how long each write takes.
#[derive(Clone)]
struct Timed<S> {
    inner: S,
    writes: Arc<Mutex<Vec<Duration>>>,
}

impl<S: ReplayStorage> ReplayStorage for Timed<S> {
    fn get<'a>(
        &'a self,
        subscription: &'a str,
    ) -> BoxFuture<'a, sfstream::Result<Option<ReplayMarker>>> {
        self.inner.get(subscription)
    }

    fn set<'a>(
        &'a self,
        subscription: &'a str,
        marker: ReplayMarker,
    ) -> BoxFuture<'a, sfstream::Result<()>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.inner.set(subscription, marker).await;
            self.writes.lock().unwrap().push(start.elapsed());
            r
        })
    }
}

struct Run {
    events_per_sec: f64,
    cpu_ns_per_event: f64,
    writes: Vec<Duration>,
}

async fn end_to_end<S: ReplayStorage + Clone>(
    emu: &Emulator,
    emu_thread: &Path,
    batches: &[PreparedBatch],
    storage: S,
) -> Run {
    let timed = Timed {
        inner: storage,
        writes: Arc::default(),
    };
    let url = emu.instance_url().parse().unwrap();
    let client = Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .max_pending_count(10_000)
        .replay_storage(timed.clone())
        .connect()
        .await
        .unwrap();
    let channel = batches[0].channel().to_owned();
    let mut sub = client.subscribe(channel.as_str()).await.unwrap();
    emu.wait_until(|s| s.held_connects == 1).await;
    // Under AfterProcessed each event is committed by the poll for the next one.
    let pass = common::push_and_read(emu, &mut sub, batches, || client_cpu_ns(emu_thread)).await;
    let last_id = pass.last.replay_id().unwrap();
    // The last event is processed too; close waits for its write.
    pass.last.ack();
    drop(sub);
    client.close().await.unwrap();
    let stored = timed.get(&channel).await.unwrap().expect("a stored marker");
    assert_eq!(stored.replay_id, last_id, "the last marker was not stored");
    let writes = std::mem::take(&mut *timed.writes.lock().unwrap());
    Run {
        events_per_sec: pass.events_per_sec(),
        cpu_ns_per_event: pass.cpu_ns_per_event(),
        writes,
    }
}

/// Client CPU per `set`, one write after the other: what one marker write costs the client,
/// whatever the event rate (at a low rate every event gets a write of its own).
async fn write_cost<S: ReplayStorage>(storage: S, emu_thread: &Path, writes: i64) -> f64 {
    let cpu0 = client_cpu_ns(emu_thread);
    for id in 1..=writes {
        storage
            .set("/event/StorageBench__e", ReplayMarker::new(id, None))
            .await
            .unwrap();
    }
    (client_cpu_ns(emu_thread) - cpu0) as f64 / writes as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Memory,
    File,
    Postgres,
    Redis,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Memory => "MappingStorage (memory)",
            Kind::File => "FileStorage (fsync)",
            Kind::Postgres => "PostgresStorage",
            Kind::Redis => "RedisStorage",
        }
    }
}

/// Per storage: CPU per event and events/s of each round, and every write's latency.
type Results = (Kind, Vec<f64>, Vec<f64>, Vec<Duration>);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (events, rounds) = if quick { (50_000, 1) } else { (300_000, 5) };
    let pg = std::env::var("SFSTREAM_TEST_POSTGRES_URL").ok();
    let redis = std::env::var("SFSTREAM_TEST_REDIS_URL").ok();
    let mut kinds = vec![Kind::Memory, Kind::File];
    match &pg {
        Some(_) => kinds.push(Kind::Postgres),
        None => eprintln!("leaving out PostgresStorage: SFSTREAM_TEST_POSTGRES_URL is not set"),
    }
    match &redis {
        Some(_) => kinds.push(Kind::Redis),
        None => eprintln!("leaving out RedisStorage: SFSTREAM_TEST_REDIS_URL is not set"),
    }

    let (emu, emu_thread) = start_emulator();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = "/event/StorageBench__e";
    let batches = common::prepare(&emu, channel, events, common::order_fields);
    let size = batches[0].byte_len() / batches[0].len();
    println!(
        "sfstream with each replay storage: {events} events of {size} B per round, {rounds} round(s), \
         AfterProcessed, max_pending_count 10000\n"
    );
    println!(
        "{:<26} {:>5} {:>16} {:>12} {:>8} {:>10} {:>10}",
        "storage", "round", "client CPU/event", "events/s", "writes", "write p50", "write p99"
    );
    let dir = std::env::temp_dir().join(format!("sfstream-storage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut results: Vec<Results> = kinds
        .iter()
        .map(|k| (*k, Vec::new(), Vec::new(), Vec::new()))
        .collect();
    // Rounds interleave the storages, so that a change in the machine's load hits them all.
    for round in 1..=rounds {
        for (kind, cpus, rates, all_writes) in &mut results {
            let key = format!("bench-{}-{round}", std::process::id());
            let run = rt.block_on(async {
                match kind {
                    Kind::Memory => {
                        end_to_end(&emu, &emu_thread, &batches, MappingStorage::new()).await
                    }
                    Kind::File => {
                        let storage = FileStorage::open(dir.join(format!("{key}.json"))).unwrap();
                        end_to_end(&emu, &emu_thread, &batches, storage).await
                    }
                    Kind::Postgres => {
                        let storage = PostgresStorage::connect(pg.as_deref().unwrap(), key)
                            .await
                            .unwrap();
                        end_to_end(&emu, &emu_thread, &batches, storage).await
                    }
                    Kind::Redis => {
                        let storage = RedisStorage::connect(redis.as_deref().unwrap(), key)
                            .await
                            .unwrap();
                        end_to_end(&emu, &emu_thread, &batches, storage).await
                    }
                }
            });
            let mut writes = run.writes;
            writes.sort();
            println!(
                "{:<26} {:>5} {:>13.0} ns {:>12.0} {:>8} {:>7.0} µs {:>7.0} µs",
                kind.label(),
                round,
                run.cpu_ns_per_event,
                run.events_per_sec,
                writes.len(),
                percentile(&writes, 0.5).as_secs_f64() * 1e6,
                percentile(&writes, 0.99).as_secs_f64() * 1e6,
            );
            cpus.push(run.cpu_ns_per_event);
            rates.push(run.events_per_sec);
            all_writes.extend(writes);
        }
    }
    // What one write costs, measured apart: the rounds above are too noisy on a shared
    // machine to resolve a few per cent, but writes per event times CPU per write is the
    // storage's whole share of the client's CPU.
    let set_costs: Vec<f64> = kinds
        .iter()
        .map(|kind| {
            let key = format!("bench-{}-cost", std::process::id());
            rt.block_on(async {
                match kind {
                    Kind::Memory => write_cost(MappingStorage::new(), &emu_thread, 300).await,
                    Kind::File => {
                        let storage = FileStorage::open(dir.join(format!("{key}.json"))).unwrap();
                        write_cost(storage, &emu_thread, 300).await
                    }
                    Kind::Postgres => {
                        let url = pg.as_deref().unwrap();
                        let storage = PostgresStorage::connect(url, key).await.unwrap();
                        write_cost(storage, &emu_thread, 300).await
                    }
                    Kind::Redis => {
                        let url = redis.as_deref().unwrap();
                        let storage = RedisStorage::connect(url, key).await.unwrap();
                        write_cost(storage, &emu_thread, 300).await
                    }
                }
            })
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let file = results
        .iter()
        .find(|(k, ..)| *k == Kind::File)
        .map(|(_, cpus, ..)| median(cpus).0)
        .unwrap();
    println!("\nmedian (min–max) over the rounds; write latency over every write of every round:");
    println!(
        "{:<26} {:>22} {:>10} {:>26} {:>10} {:>10}",
        "storage", "client CPU/event", "vs File", "events/s", "write p50", "write p99"
    );
    for (kind, cpus, rates, writes) in &mut results {
        writes.sort();
        let (c, c0, c1) = median(cpus);
        let (r, r0, r1) = median(rates);
        println!(
            "{:<26} {:>6.0} ({:.0}–{:.0}) ns {:>+9.1} % {:>9.0} ({:.0}–{:.0}) {:>7.2} ms {:>7.2} ms",
            kind.label(),
            c,
            c0,
            c1,
            (c / file - 1.0) * 100.0,
            r,
            r0,
            r1,
            percentile(writes, 0.5).as_secs_f64() * 1e3,
            percentile(writes, 0.99).as_secs_f64() * 1e3,
        );
    }
    println!(
        "\nclient CPU per marker write (300 writes one after the other), and per event above:"
    );
    for ((kind, _, _, writes), cost) in results.iter().zip(&set_costs) {
        let per_event = cost * writes.len() as f64 / (rounds * events) as f64;
        println!(
            "{:<26} {:>8.1} µs per write {:>8.1} ns per event ({:.4} writes per event)",
            kind.label(),
            cost / 1e3,
            per_event,
            writes.len() as f64 / (rounds * events) as f64,
        );
    }
}
