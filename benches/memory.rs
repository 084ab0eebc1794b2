//! Peak memory of a client whose consumer stalls while many events wait at the server
//! (issue 8): one fast and one slow channel on one client, the fast one drained as events come,
//! the slow one held but never polled, so its queue fills up to `max_pending_count` and the
//! connect loop pauses for both.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Each case runs the emulator in one child process and the client in another, so the client's
//! RSS is its own: `/proc/self/status` `VmRSS` sampled every 50 ms from before the subscriptions
//! to 2 s into the pause, and `VmHWM` (its peak). Figures are in the README's Backpressure section.

mod common;

use common::status_bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, PreparedBatch};
use sfstream::{Client, ConnectionState};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAST: &str = "/event/Fast__e";
const SLOW: &str = "/event/Slow__e";
/// Events per server round (and per response): `slow` of them on the slow channel.
const ROUND: usize = 1000;

#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    event_bytes: usize,
    /// Events waiting at the server.
    events: usize,
    slow_per_round: usize,
    max_pending: usize,
}

const CASES: [Case; 4] = [
    Case {
        label: "~280 B",
        event_bytes: 0,
        events: 1_000_000,
        slow_per_round: 10,
        max_pending: 100,
    },
    Case {
        label: "~280 B",
        event_bytes: 0,
        events: 1_000_000,
        slow_per_round: 10,
        max_pending: 10_000,
    },
    Case {
        label: "~10 KB",
        event_bytes: 10_000,
        events: 100_000,
        slow_per_round: 100,
        max_pending: 100,
    },
    Case {
        label: "~10 KB",
        event_bytes: 10_000,
        events: 100_000,
        slow_per_round: 100,
        max_pending: 10_000,
    },
];

fn fields(case: Case, i: usize) -> Value {
    let mut f = json!({"Order_Number__c": format!("ORD-{i:06}"), "Amount__c": 249.5});
    if case.event_bytes > 0 {
        f["Notes__c"] = "x".repeat(case.event_bytes).into();
    }
    f
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The server: prints how to reach it, waits for both subscriptions and the held connect, then
/// publishes every event at once (prepared batches pushed again share their bytes), and serves
/// until its stdin closes.
fn serve(case: Case) {
    runtime().block_on(async {
        let emu = Emulator::builder()
            .max_batch(Some(ROUND))
            .reconnect_window(Duration::from_secs(600))
            .start()
            .await
            .unwrap();
        println!(
            "{} {} {}",
            emu.instance_url(),
            emu.issue_token(),
            emu.api_version()
        );
        std::io::stdout().flush().unwrap();
        let fast_n = ROUND - case.slow_per_round;
        let fast_fields: Vec<Value> = (0..fast_n).map(|i| fields(case, i)).collect();
        let slow_fields: Vec<Value> = (0..case.slow_per_round).map(|i| fields(case, i)).collect();
        let fast: PreparedBatch = emu.prepare(FAST, &fast_fields);
        let slow: PreparedBatch = emu.prepare(SLOW, &slow_fields);
        emu.wait_until(|s| s.subscribes >= 2 && s.held_connects >= 1)
            .await;
        for _ in 0..case.events / ROUND {
            emu.push_prepared(&fast);
            emu.push_prepared(&slow);
        }
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        });
        let _ = stdin.await;
    });
}

fn client(case: Case, url: &str, token: &str, api: &str) {
    runtime().block_on(async {
        let start_rss = status_bytes("VmRSS:");
        let client = Client::builder(AccessToken::new(token, url.parse().unwrap()))
            .api_version(api)
            .max_pending_count(case.max_pending)
            .connect()
            .await
            .unwrap();
        let mut fast = client.subscribe(FAST).await.unwrap();
        let _slow = client.subscribe(SLOW).await.unwrap(); // held, never polled
        let drained = tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(item) = fast.next().await {
                item.unwrap();
                n += 1;
            }
            n
        });
        let t0 = Instant::now();
        let mut samples = Vec::new();
        let mut paused_since: Option<Instant> = None;
        let mut rss_at_pause = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let rss = status_bytes("VmRSS:");
            samples.push(rss);
            let paused = matches!(client.state(), ConnectionState::Paused { .. })
                && client.pending_count() >= case.max_pending;
            match (paused, paused_since) {
                (true, None) => {
                    paused_since = Some(Instant::now());
                    rss_at_pause = rss;
                }
                (true, Some(t)) if t.elapsed() >= Duration::from_secs(2) => break,
                (false, _) => paused_since = None,
                _ => {}
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "never paused");
        }
        let end_rss = *samples.last().unwrap();
        let peak = status_bytes("VmHWM:");
        let pending = client.pending_count();
        drained.abort();
        println!(
            "| {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} s |",
            case.label,
            case.max_pending,
            pending,
            mib(start_rss),
            mib(rss_at_pause),
            mib(end_rss),
            mib(peak),
            t0.elapsed().as_secs_f64() - 2.0,
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1..].to_vec())
    };
    if let Some(a) = arg("--serve") {
        return serve(CASES[a[0].parse::<usize>().unwrap()]);
    }
    if let Some(a) = arg("--client") {
        return client(CASES[a[0].parse::<usize>().unwrap()], &a[1], &a[2], &a[3]);
    }
    let me = std::env::current_exe().unwrap();
    println!(
        "| event | `max_pending_count` | pending at the pause | RSS before subscribing | RSS at the pause | RSS 2 s later | peak RSS (`VmHWM`) | time to the pause |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for i in 0..CASES.len() {
        let mut server = Command::new(&me)
            .args(["--serve", &i.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let reach: Vec<&str> = line.split_whitespace().collect();
        let status = Command::new(&me)
            .args(["--client", &i.to_string(), reach[0], reach[1], reach[2]])
            .status()
            .unwrap();
        drop(server.stdin.take()); // the server stops
        let _ = server.wait();
        assert!(status.success(), "case {i} failed");
    }
}
