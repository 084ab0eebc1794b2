//! Events per second through one `Subscription`, emulator on loopback serving pre-serialised
//! batches, next to the single-thread parse rate of the same response bodies.
//!
//! ```text
//! cargo bench --bench throughput            # full run (~1 min)
//! cargo bench --bench throughput -- --quick # smaller counts
//! cargo bench --bench throughput -- --e2e-only   # client only, five rounds (for perf record)
//! ```
//!
//! Figures measured on the project's 2-core machine are in the README's Performance section.
//!
//! The client runs on a current-thread Tokio runtime on the main thread (its connection task,
//! hyper's connection tasks and the consumer all share that thread), the emulator on its own
//! thread and runtime. "client CPU" is the CPU time of the main thread only
//! (`/proc/thread-self/schedstat`, Linux), divided by the number of events: it includes HTTP,
//! parsing, routing, the queue and the consumer, and excludes the emulator.

mod common;

use common::{BATCH, thread_cpu_ns};
use serde_json::{Value, json};
use sfstream::Client;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, PreparedBatch};
use sfstream::replay::FileStorage;
use std::time::{Duration, Instant};

fn large_fields(i: usize) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("Order_Number__c".into(), json!(format!("ORD-{i:06}")));
    m.insert("Amount__c".into(), json!(249.5));
    for f in 0..9 {
        m.insert(
            format!("Description_{f}__c"),
            json!(format!(
                "Line item {f} of order {i}: widgets, gadgets and assorted parts x{f}"
            )),
        );
    }
    m.insert("Status__c".into(), json!("Placed"));
    Value::Object(m)
}

struct Shape {
    label: &'static str,
    fields: fn(usize) -> Value,
    events: usize,
}

fn parse_rates(batch: &PreparedBatch) -> (f64, f64) {
    let body = batch.connect_response();
    let n = batch.len() as f64;
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..5 {
            f();
        }
        let start = Instant::now();
        let mut rounds = 0u32;
        while start.elapsed() < Duration::from_secs(2) {
            f();
            rounds += 1;
        }
        start.elapsed().as_secs_f64() * 1e9 / (rounds as f64 * n)
    };
    let full = time(&mut || {
        let v: Vec<Value> = serde_json::from_slice(&body).unwrap();
        std::hint::black_box(v);
    });
    let ours = time(&mut || {
        let b = sfstream::bayeux::parse_batch(body.clone()).unwrap();
        std::hint::black_box(b);
    });
    (full, ours)
}

async fn end_to_end(
    emu: &Emulator,
    batches: &[PreparedBatch],
    max_pending: usize,
    storage: Option<FileStorage>,
) -> common::Pass {
    let url = emu.instance_url().parse().unwrap();
    let mut builder = Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .max_pending_count(max_pending);
    if let Some(storage) = storage {
        builder = builder.replay_storage(storage);
    }
    let client = builder.connect().await.unwrap();
    let channel = batches[0].channel().to_owned();
    let mut sub = client.subscribe(channel).await.unwrap();
    emu.wait_until(|s| s.held_connects == 1).await;
    let pass = common::push_and_read(emu, &mut sub, batches, thread_cpu_ns).await;
    drop(sub);
    client.close().await.unwrap();
    pass
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // For profiling the client alone.
    let e2e_only = std::env::args().any(|a| a == "--e2e-only");
    let shapes = [
        Shape {
            label: "platform event ~280 B",
            fields: common::order_fields,
            events: if quick { 50_000 } else { 300_000 },
        },
        Shape {
            label: "platform event ~1.2 KB",
            fields: large_fields,
            events: if quick { 20_000 } else { 100_000 },
        },
    ];
    let emu = common::on_own_thread("emulator", common::batch_emulator);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("sfstream throughput (client: one current-thread runtime; emulator: own thread)\n");
    for (n, shape) in shapes.iter().enumerate() {
        let channel = format!("/event/Bench{n}__e");
        let batches = common::prepare(&emu, &channel, shape.events, shape.fields);
        let size = batches[0].byte_len() / batches[0].len();
        let (full, ours) = if e2e_only {
            (f64::NAN, f64::NAN)
        } else {
            parse_rates(&batches[0])
        };
        println!(
            "{} (measured {size} B per event message, {BATCH} events per response)",
            shape.label
        );
        println!(
            "  serde_json::from_slice::<Vec<Value>>   {:>8.0} ns/event  {:>10.0} events/s (1 thread)",
            full,
            1e9 / full
        );
        println!(
            "  sfstream::bayeux::parse_batch          {:>8.0} ns/event  {:>10.0} events/s (1 thread)",
            ours,
            1e9 / ours
        );
        // With --e2e-only, several rounds so that a profile is dominated by the client.
        let rounds = if e2e_only { 5 } else { 1 };
        for max_pending in std::iter::repeat_n([100, 10_000], rounds).flatten() {
            let run = rt.block_on(end_to_end(&emu, &batches, max_pending, None));
            println!(
                "  end to end, max_pending_count {:>6}   {:>8.0} ns client CPU/event  {:>10.0} events/s",
                max_pending,
                run.cpu_ns_per_event(),
                run.events_per_sec()
            );
        }
        // The same with processing tracked and markers written to a file (fsync per write,
        // coalesced): what a restartable consumer pays.
        let file =
            std::env::temp_dir().join(format!("sfstream-bench-{}-{n}.json", std::process::id()));
        let storage = FileStorage::open(&file).unwrap();
        let run = rt.block_on(end_to_end(&emu, &batches, 10_000, Some(storage)));
        println!(
            "  end to end, 10000 + FileStorage      {:>8.0} ns client CPU/event  {:>10.0} events/s",
            run.cpu_ns_per_event(),
            run.events_per_sec()
        );
        let _ = std::fs::remove_file(&file);
        println!();
    }
}
