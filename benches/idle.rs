//! Idle cost (issue 10): CPU per minute of a client holding one subscription on a server that
//! holds each `/meta/connect` for 110 s (Salesforce's value), with tracing at `info` (into a
//! fmt subscriber writing to a sink) and metrics on (metrics-exporter-prometheus' recorder),
//! and the live heap before and after.
//!
//! ```text
//! cargo bench --bench idle --features metrics
//! ```
//!
//! Time is tokio's paused (virtual) clock: one current-thread runtime runs the client and the
//! in-process emulator, and whenever both wait, the clock jumps to the next timer (the
//! emulator's 110 s hold), so 30 virtual minutes pass in well under a second. The CPU figure is
//! the whole process (client and emulator, every thread, `CLOCK_PROCESS_CPUTIME_ID`),
//! so it is an upper bound on the client's own cost. The heap is counted by a global allocator
//! wrapper (bytes allocated and not freed).

mod common;

use common::process_cpu;
use futures::StreamExt;
use serde_json::json;
use sfstream::emulator::Emulator;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WARM_UP_MINUTES: u64 = 5;
const MINUTES: u64 = 30;

fn main() {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("one recorder");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let emu = Emulator::builder()
            .advice_timeout(Duration::from_secs(110))
            .start()
            .await
            .expect("emulator");
        let client = emu.client_builder().connect().await.expect("client");
        let mut sub = client.subscribe("/data/AccountChangeEvent").await.expect("subscribe");
        emu.publish("/data/AccountChangeEvent", json!({"Name": "warm-up"}));
        sub.next().await.expect("an event").expect("not an error");
        tokio::time::sleep(Duration::from_secs(WARM_UP_MINUTES * 60)).await;
        metrics.run_upkeep();

        let connects = emu.stats().connects;
        let heap = LIVE.load(Ordering::Relaxed);
        let cpu = process_cpu();
        let wall = std::time::Instant::now();
        // The exporter's upkeep every 5 virtual minutes, as a scrape would.
        for _ in 0..MINUTES / 5 {
            tokio::time::sleep(Duration::from_secs(5 * 60)).await;
            metrics.run_upkeep();
        }
        let cpu = process_cpu() - cpu;
        let wall = wall.elapsed();
        let heap_after = LIVE.load(Ordering::Relaxed);
        let connects = emu.stats().connects - connects;
        assert!(client.health().healthy, "{:?}", client.health());

        println!(
            "idle: {MINUTES} virtual minutes in {wall:.2?} real time, {connects} connects held 110 s"
        );
        println!(
            "cpu: {:.3} ms in all, {:.3} ms per minute (client and emulator)",
            cpu.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3 / MINUTES as f64
        );
        println!(
            "heap: {heap} bytes live before, {heap_after} after ({:+} bytes)",
            heap_after - heap
        );
        client.close().await.expect("close");
    });
}
