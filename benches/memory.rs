//! Memory of a client whose consumer stalls while 1,000,000 events wait at the server (issue 8):
//! one fast and one slow channel on one client, 90 % of the events on the fast one.
//!
//! ```text
//! cargo bench --bench memory                   # the four cases, 1,000,000 events each
//! cargo bench --bench memory -- --events 20000 # a short round
//! ```
//!
//! Each case runs the emulator in one child process and the client in another, so the client's
//! RSS is its own. The emulator holds the whole backlog as generated runs
//! ([`Emulator::push_generated`]): an event is built from its replay id only when a response
//! takes it, so 1,000,000 events of 10 KB cost the server no 10 GB.
//!
//! Two phases, with `/proc/self/status` `VmRSS` sampled every 20 ms throughout:
//! - **stall**: the fast channel is drained as events come, the slow one is held and never
//!   polled, so its queue fills up to `max_pending_count` and the connect loop pauses for both;
//!   the phase ends 2 s into the pause, with most of the backlog still at the server;
//! - **drain**: the slow consumer stalls again and again: each time the loop pauses it takes
//!   what its queue holds, then waits for the next pause, until every event has gone through the
//!   client at the bound.
//!
//! Per phase: RSS at its start and end, the highest sample, `VmHWM` (the peak so far), and the
//! process CPU time (`CLOCK_PROCESS_CPUTIME_ID`: the client and both consumers) per event taken.
//! Then the highest sample in each tenth of the events, to show RSS flat over the run, and per
//! case the RSS right after subscribing and the longest `data`: the `R0` and `d` of the README's
//! bound. Figures are in the README's Backpressure section; the last run, 2026-12-07 20:53 UTC
//! on the project's 2-core AMD EPYC machine at load 11-12 (`nice cargo bench --bench memory`),
//! peaked at 8.1, 12.4, 27.6 and 126.0 MiB against bounds of 8.6, 13.3, 28.7 and 127.9 MiB.

mod common;

use common::{process_cpu, status_bytes};
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::{Client, ConnectionState};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FAST: &str = "/event/Fast__e";
const SLOW: &str = "/event/Slow__e";
/// Events per server round, and the most per response.
const ROUND: usize = 1000;
/// Of each round, the events on the slow channel.
const SLOW_PER_ROUND: usize = 100;
/// How often RSS is sampled (reading `/proc/self/status` costs about 20 µs).
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long the stall phase holds the pause.
const HOLD: Duration = Duration::from_secs(2);
/// No case may take longer (each waits at most this long for the next milestone).
const DEADLINE: Duration = Duration::from_secs(900);

#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    /// Length of the `Notes__c` text (0: no such field).
    notes: usize,
    max_pending: usize,
}

const CASES: [Case; 4] = [
    Case {
        label: "~280 B",
        notes: 0,
        max_pending: 100,
    },
    Case {
        label: "~280 B",
        notes: 0,
        max_pending: 10_000,
    },
    Case {
        label: "~10 KB",
        notes: 10_000,
        max_pending: 100,
    },
    Case {
        label: "~10 KB",
        notes: 10_000,
        max_pending: 10_000,
    },
];

/// What the client process reports for one phase.
#[derive(Serialize, Deserialize, Default)]
struct Phase {
    events: usize,
    waiting_at_end: usize,
    rss_start: usize,
    rss_end: usize,
    rss_max: usize,
    hwm_end: usize,
    cpu_ns: u64,
    secs: f64,
}

/// What the client process reports for one case.
#[derive(Serialize, Deserialize)]
struct Report {
    pending_at_pause: usize,
    /// `VmRSS` right after subscribing (the server queues the events only then).
    rss_connected: usize,
    /// The longest event `data` taken, in bytes.
    data_len: usize,
    stall: Phase,
    drain: Phase,
    /// The highest `VmRSS` sample in each tenth of the events (none: that tenth went by
    /// between two samples).
    tenths: Vec<Option<usize>>,
}

/// CPU time of every thread of this process so far, in nanoseconds.
fn process_cpu_ns() -> u64 {
    u64::try_from(process_cpu().as_nanos()).unwrap_or(u64::MAX)
}

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The server: prints how to reach it, waits for both subscriptions and the held connect, then
/// queues every event at once (generated when sent), and serves until its stdin closes.
fn serve(case: Case, events: usize) {
    runtime().block_on(async {
        let emu = Emulator::builder()
            .max_batch(Some(ROUND))
            .reconnect_window(Duration::from_secs(3600))
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
        let notes: Arc<str> = "x".repeat(case.notes).into();
        let fields = move |id: i64| {
            let mut f = json!({"Order_Number__c": format!("ORD-{id:07}"), "Amount__c": 249.5});
            if !notes.is_empty() {
                f["Notes__c"] = Value::String(notes.to_string());
            }
            f
        };
        emu.wait_until(|s| s.subscribes >= 2 && s.held_connects >= 1)
            .await;
        for _ in 0..events / ROUND {
            emu.push_generated(FAST, ROUND - SLOW_PER_ROUND, fields.clone());
            emu.push_generated(SLOW, SLOW_PER_ROUND, fields.clone());
        }
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        });
        let _ = stdin.await;
    });
}

fn paused(state: &ConnectionState) -> bool {
    matches!(
        state,
        ConnectionState::Paused { .. } | ConnectionState::PausedLong { .. }
    )
}

/// Samples RSS against the number of events taken so far.
struct Sampler {
    taken: Arc<[AtomicUsize; 2]>,
    samples: Vec<(usize, usize)>,
    t0: Instant,
}

impl Sampler {
    fn taken(&self) -> usize {
        self.taken[0].load(Ordering::Relaxed) + self.taken[1].load(Ordering::Relaxed)
    }

    async fn tick(&mut self) {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let rss = status_bytes("VmRSS:");
        self.samples.push((self.taken(), rss));
        assert!(self.t0.elapsed() < DEADLINE, "the case took too long");
    }

    fn max_since(&self, from: usize) -> usize {
        self.samples[from..].iter().map(|s| s.1).max().unwrap_or(0)
    }
}

fn client(case: Case, events: usize, url: &str, token: &str, api: &str) {
    runtime().block_on(async {
        let rss_start = status_bytes("VmRSS:");
        let cpu_start = process_cpu_ns();
        let t0 = Instant::now();
        let client = Client::builder(AccessToken::new(token, url.parse().unwrap()))
            .api_version(api)
            .max_pending_count(case.max_pending)
            .connect()
            .await
            .unwrap();
        let taken: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let mut fast = client.subscribe(FAST).await.unwrap();
        let mut slow = client.subscribe(SLOW).await.unwrap();
        // The server queues the events once both subscriptions are in and a connect waits.
        let rss_connected = status_bytes("VmRSS:");
        let data_len = Arc::new(AtomicUsize::new(0));
        let longest = data_len.clone();
        let counts = taken.clone();
        let drained = tokio::spawn(async move {
            while let Some(item) = fast.next().await {
                longest.fetch_max(item.unwrap().data().get().len(), Ordering::Relaxed);
                counts[0].fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut s = Sampler {
            taken,
            samples: Vec::new(),
            t0,
        };

        // Stall: the slow subscription is held, never polled.
        let mut paused_since: Option<Instant> = None;
        loop {
            s.tick().await;
            // A short round may hold fewer slow events than the limit: then the stall ends
            // once every event has reached the client.
            let pending = client.pending_count();
            let at_bound = (paused(&client.state()) && pending >= case.max_pending)
                || s.taken() + pending >= events;
            match (at_bound, paused_since) {
                (true, None) => paused_since = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() >= HOLD => break,
                (false, _) => paused_since = None,
                _ => {}
            }
        }
        let pending_at_pause = client.pending_count();
        let stall_taken = s.taken();
        let stall = Phase {
            events: stall_taken,
            waiting_at_end: events - stall_taken - pending_at_pause,
            rss_start,
            rss_end: s.samples.last().unwrap().1,
            rss_max: s.max_since(0),
            hwm_end: status_bytes("VmHWM:"),
            cpu_ns: process_cpu_ns() - cpu_start,
            secs: t0.elapsed().as_secs_f64(),
        };

        // Drain: the slow consumer takes its queue each time the loop pauses.
        let drain_from = s.samples.len();
        let cpu_drain = process_cpu_ns();
        let t_drain = Instant::now();
        let counts = s.taken.clone();
        let watcher = client.clone();
        let slow_events = events / ROUND * SLOW_PER_ROUND;
        let slow_task = tokio::spawn(async move {
            let mut updates = watcher.state_updates();
            let mut taken = 0;
            while taken < slow_events {
                // A state change, or a tick: the last events may arrive without a pause.
                let _ = tokio::time::timeout(Duration::from_millis(50), updates.next()).await;
                let all_here =
                    counts[0].load(Ordering::Relaxed) + taken + watcher.pending_count() >= events;
                if paused(&watcher.state()) || all_here {
                    while let Some(Some(item)) = slow.next().now_or_never() {
                        item.unwrap();
                        taken += 1;
                        counts[1].store(taken, Ordering::Relaxed);
                    }
                }
            }
        });
        while s.taken() < events {
            s.tick().await;
        }
        slow_task.await.unwrap();
        let drain = Phase {
            events: events - stall_taken,
            waiting_at_end: 0,
            rss_start: stall.rss_end,
            rss_end: s.samples.last().unwrap().1,
            rss_max: s.max_since(drain_from),
            hwm_end: status_bytes("VmHWM:"),
            cpu_ns: process_cpu_ns() - cpu_drain,
            secs: t_drain.elapsed().as_secs_f64(),
        };
        drained.abort();
        let tenths = (0..10)
            .map(|k| {
                let (lo, hi) = (events * k / 10, events * (k + 1) / 10);
                s.samples
                    .iter()
                    .filter(|(n, _)| (lo..hi).contains(n) || (k == 9 && *n == events))
                    .map(|(_, rss)| *rss)
                    .max()
            })
            .collect();
        let report = Report {
            pending_at_pause,
            rss_connected,
            data_len: data_len.load(Ordering::Relaxed),
            stall,
            drain,
            tenths,
        };
        println!("{}", serde_json::to_string(&report).unwrap());
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1..].to_vec())
    };
    let num = |s: &String| s.replace(['_', ','], "").parse::<usize>().unwrap();
    if let Some(a) = arg("--serve") {
        return serve(CASES[num(&a[0])], num(&a[1]));
    }
    if let Some(a) = arg("--client") {
        return client(CASES[num(&a[0])], num(&a[1]), &a[2], &a[3], &a[4]);
    }
    let events = arg("--events").map_or(1_000_000, |a| num(&a[0]));
    assert!(
        events >= 10 * ROUND,
        "--events: at least {} (ten server rounds)",
        10 * ROUND
    );
    let events = events / ROUND * ROUND;
    let me = std::env::current_exe().unwrap();
    let mut reports = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        eprintln!(
            "case {}: {} events, max_pending_count {}, {} events",
            i + 1,
            case.label,
            case.max_pending,
            events
        );
        let mut server = Command::new(&me)
            .args(["--serve", &i.to_string(), &events.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let reach: Vec<&str> = line.split_whitespace().collect();
        let out = Command::new(&me)
            .args(["--client", &i.to_string(), &events.to_string()])
            .args(&reach[..3])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        drop(server.stdin.take()); // the server stops
        let _ = server.wait();
        assert!(out.status.success(), "case {} failed", i + 1);
        let report: Report = serde_json::from_slice(&out.stdout).unwrap();
        reports.push((*case, report));
    }

    println!(
        "\n| event `data` | `max_pending_count` | phase | events taken | left at the server | RSS: start → end | highest `VmRSS` sample | `VmHWM` at the end | client CPU per event | time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (case, r) in &reports {
        for (name, p) in [
            (format!("stall ({} pending)", r.pending_at_pause), &r.stall),
            ("drain".to_owned(), &r.drain),
        ] {
            println!(
                "| {} | {} | {} | {} | {} | {} → {} MiB | {} MiB | {} MiB | {:.2} µs | {:.1} s |",
                case.label,
                case.max_pending,
                name,
                p.events,
                p.waiting_at_end,
                mib(p.rss_start),
                mib(p.rss_end),
                mib(p.rss_max),
                mib(p.hwm_end),
                p.cpu_ns as f64 / p.events.max(1) as f64 / 1000.0,
                p.secs,
            );
        }
    }
    println!(
        "\n| event `data` | `max_pending_count` | highest `VmRSS` sample (MiB) in each tenth of the {events} events |"
    );
    println!("|---|---|---|");
    for (case, r) in &reports {
        let tenths: Vec<String> = r
            .tenths
            .iter()
            .map(|b| b.map_or("–".to_owned(), mib))
            .collect();
        println!(
            "| {} | {} | {} |",
            case.label,
            case.max_pending,
            tenths.join(" · ")
        );
    }
    println!(
        "\n| event `data` | `max_pending_count` | `VmRSS` connected, before the first event | longest `data` |"
    );
    println!("|---|---|---|---|");
    for (case, r) in &reports {
        println!(
            "| {} | {} | {} MiB | {} B |",
            case.label,
            case.max_pending,
            mib(r.rss_connected),
            r.data_len
        );
    }
}
