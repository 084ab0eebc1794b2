//! `pipeline`: a combinator chain from a subscription into a bulk sink, inside a program that
//! shuts down gracefully on Ctrl-C (SIGINT) or SIGTERM.
//!
//! ```text
//! cargo run --example pipeline        # then Ctrl-C
//! ```
//!
//! On the built-in emulator (no account needed) a background task publishes an order every
//! 10 ms. The pipeline:
//!
//! 1. `subscribe(..).typed::<PlatformEvent<Order>>()`: typed events;
//! 2. `.on_notice(..)`: outages and replay gaps are logged, not fatal;
//! 3. `.take_until(shutdown)`: on a signal, stop *taking* events; what was taken still flows
//!    through;
//! 4. `.filter_map(..)`: orders under 100 are dropped (and acked: with `Manual` acks an event
//!    never acked holds the replay marker back), orders that do not decode are reported;
//! 5. `.map(..)`: an order becomes a row;
//! 6. `chunks_timeout(.., 25, 200 ms)`: batches of up to 25 rows, or fewer after 200 ms;
//! 7. the bulk sink writes a batch, then the batch's events are acked.
//!
//! `chunks_timeout` reads ahead (it takes event 2 before event 1 is written), so the client
//! runs with `CommitPolicy::Manual`. On shutdown the last partial batch is written and acked,
//! and `client.close()` waits until the replay file holds the marker of the last event taken,
//! so the next run starts right after it.

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use sfstream::NoticeExt;
use sfstream::emulator::Emulator;
use sfstream::events::{PlatformEvent, TypedEvent};
use sfstream::replay::{CommitPolicy, FileStorage, ReplayOption};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const CHANNEL: &str = "/event/Order_Placed__e";
const MIN_AMOUNT: f64 = 100.0;

/// The platform event's payload, as this program needs it.
#[derive(Debug, Deserialize)]
struct Order {
    #[serde(rename = "Order_Number__c")]
    number: String,
    #[serde(rename = "Amount__c")]
    amount: f64,
}

/// What the sink stores.
struct Row {
    number: String,
    amount: f64,
}

/// A bulk sink (a database's `COPY`, a bulk API): one write per batch.
struct BulkSink {
    out: std::io::Stdout,
    batches: usize,
    rows: usize,
}

impl BulkSink {
    fn insert(&mut self, rows: &[Row]) -> std::io::Result<()> {
        let total: f64 = rows.iter().map(|r| r.amount).sum();
        let numbers: Vec<&str> = rows.iter().map(|r| r.number.as_str()).collect();
        let mut out = self.out.lock();
        writeln!(
            out,
            "batch of {} orders, {total:.2} in all: {}",
            rows.len(),
            numbers.join(" ")
        )?;
        out.flush()?;
        self.batches += 1;
        self.rows += rows.len();
        Ok(())
    }
}

/// Like tokio-stream's `chunks_timeout`: a chunk when `max` items are in, or `wait` after the
/// first item of the chunk, whichever comes first; the last partial chunk when the stream ends.
fn chunks_timeout<S: Stream + Unpin>(
    stream: S,
    max: usize,
    wait: Duration,
) -> impl Stream<Item = Vec<S::Item>> {
    futures::stream::unfold(stream, move |mut stream| async move {
        let first = stream.next().await?;
        let mut chunk = vec![first];
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        while chunk.len() < max {
            tokio::select! {
                item = stream.next() => match item {
                    Some(item) => chunk.push(item),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        Some((chunk, stream))
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("pipeline: shutting down: finishing the events taken");
}

/// Publish an order every 10 ms, forever.
async fn publish_orders(emulator: Emulator) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 1u64.. {
        tick.tick().await;
        let amount = ((n * 37) % 250) as f64;
        emulator.publish(
            CHANNEL,
            json!({"Order_Number__c": format!("ORD-{n:05}"), "Amount__c": amount}),
        );
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let replay_file = match std::env::args().nth(1) {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::temp_dir().join(format!("sfstream-pipeline-{}.json", std::process::id())),
    };
    let emulator = Emulator::start().await?;
    let client = emulator
        .client_builder()
        .replay(ReplayOption::AllEvents)
        .replay_storage(FileStorage::open(&replay_file)?)
        .commit_policy(CommitPolicy::Manual)
        .connect()
        .await?;
    let subscription = client.subscribe(CHANNEL).await?;
    tokio::spawn(publish_orders(emulator));

    let last_taken = AtomicI64::new(-1);
    let last_taken = &last_taken;
    let rows = subscription
        .typed::<PlatformEvent<Order>>()
        .on_notice(|notice| eprintln!("pipeline: notice: {notice}"))
        .take_until(shutdown())
        .filter_map(|item| async move {
            match item {
                Ok(order) => {
                    if let Some(id) = order.replay_id {
                        last_taken.fetch_max(id, Ordering::Relaxed);
                    }
                    if order.payload.amount >= MIN_AMOUNT {
                        return Some(Ok(order));
                    }
                    order.ack(); // not for us: done with it
                    None
                }
                Err(e) => Some(Err(e)),
            }
        })
        .map(|item| {
            item.map(|order: TypedEvent<PlatformEvent<Order>>| {
                let row = Row {
                    number: order.payload.number.clone(),
                    amount: order.payload.amount,
                };
                (row, order)
            })
        });
    let mut batches = Box::pin(chunks_timeout(
        Box::pin(rows),
        25,
        Duration::from_millis(200),
    ));
    let mut sink = BulkSink {
        out: std::io::stdout(),
        batches: 0,
        rows: 0,
    };
    let mut failed = None;
    while let Some(batch) = batches.next().await {
        let mut rows = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for item in batch {
            match item {
                Ok((row, order)) => {
                    rows.push(row);
                    events.push(order);
                }
                // Not our shape: report it and let it go (a dead-letter queue would keep it).
                Err(e) if e.kind() == sfstream::ErrorKind::Decode => {
                    eprintln!("pipeline: skipped: {e}");
                    if let Some(event) = e.event() {
                        event.ack();
                    }
                }
                // Needs a person: write what we have, then stop.
                Err(e) => failed = Some(e),
            }
        }
        if !rows.is_empty() {
            sink.insert(&rows)?;
        }
        for order in events {
            order.ack();
        }
        if let Some(e) = failed.take() {
            client.close().await?;
            return Err(e.into());
        }
    }
    drop(batches);
    client.close().await?;
    let stored = FileStorage::read(&replay_file)?
        .get(CHANNEL)
        .map(|m| m.replay_id);
    println!(
        "stopped: {} orders in {} batches; last event taken {}, replay marker stored {}",
        sink.rows,
        sink.batches,
        last_taken.load(Ordering::Relaxed),
        stored.unwrap_or(-1)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline: error: {e}");
            ExitCode::FAILURE
        }
    }
}
