//! What an HTTP proxy costs per event: the throughput bench's session over TLS, once straight to
//! the server and once through a real tinyproxy (CONNECT), rounds alternating.
//!
//! ```text
//! cargo bench --bench proxy_throughput            # 100,000 events ~280 B, 3 rounds each
//! cargo bench --bench proxy_throughput -- --quick # 20,000 events, 2 rounds each
//! ```
//!
//! The proxy: the one `SFSTREAM_BENCH_PROXY` names if set (any HTTP proxy, e.g. a squid you
//! started; with `SFSTREAM_BENCH_PROXY_PID` its CPU per event is shown too), otherwise a
//! tinyproxy this bench starts on a free loopback port when `tinyproxy` is on PATH (its CPU is
//! shown), otherwise the one `SFSTREAM_TEST_PROXY` names (`.ci/run` starts one), otherwise the
//! bench prints a hint and exits.
//!
//! As in `benches/throughput.rs`, the client runs on a current-thread runtime on the main
//! thread, and "client CPU" is that thread's CPU time per event. The emulator and the TLS
//! front that terminates TLS in front of it (the test-only certificate, `tests/common/front.rs`)
//! share another thread, so neither counts. Figures are in the README's "Running in production".

#[path = "../tests/common/front.rs"]
#[allow(dead_code, unreachable_pub)]
mod front;

use futures::StreamExt;
use serde_json::{Value, json};
use sfstream::Client;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, PreparedBatch};
use sfstream::transport::Proxy;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BATCH: usize = 1000;

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in nanoseconds (`/proc/PID/stat`, in clock ticks).
fn process_cpu_ns(pid: u32) -> Option<u64> {
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
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    })
}

/// A tinyproxy of our own, stopped (and its config removed) on drop.
struct OwnProxy {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for OwnProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_tinyproxy() -> Option<OwnProxy> {
    // A free port: bind, read it, release it for tinyproxy (a bench may live with the race).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("sfstream-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let conf = dir.join("tinyproxy.conf");
    // No ConnectPort line: CONNECT to any port (the front's is ephemeral).
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 100\nLogFile \"{}\"\n\
             LogLevel Warning\nDisableViaHeader Yes\n",
            dir.join("tinyproxy.log").display()
        ),
    )
    .ok()?;
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let proxy = OwnProxy {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            eprintln!("tinyproxy did not start listening on port {port}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(proxy)
}

/// The emulator and its TLS front on their own thread and runtime; the front's https URL.
fn start_emulator() -> (Emulator, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("emulator".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let emu = Emulator::builder()
                    .max_batch(Some(BATCH))
                    .start()
                    .await
                    .unwrap();
                let front = front::front(emu.local_addr(), true).await;
                tx.send((emu, front.url(true))).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

struct Run {
    events_per_sec: f64,
    client_cpu_ns_per_event: f64,
    proxy_cpu_ns_per_event: Option<f64>,
}

async fn session(
    emu: &Emulator,
    instance: &str,
    batches: &[PreparedBatch],
    proxy: Option<(&str, Option<u32>)>,
) -> Run {
    let url = instance.parse().unwrap();
    let mut builder = Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .add_root_certificates_pem(front::ca_path())
        .max_pending_count(10_000);
    if let Some((proxy, _)) = proxy {
        builder = builder.proxy(Proxy::all(proxy).unwrap());
    }
    let client = builder.connect().await.unwrap();
    let channel = batches[0].channel().to_owned();
    let mut sub = client.subscribe(channel).await.unwrap();
    emu.wait_until(|s| s.held_connects == 1).await;
    let total: usize = batches.iter().map(PreparedBatch::len).sum();
    let last_id = batches.last().unwrap().replay_ids().last().unwrap();

    let proxy_pid = proxy.and_then(|(_, pid)| pid);
    let proxy0 = proxy_pid.and_then(process_cpu_ns);
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    for b in batches {
        emu.push_prepared(b);
    }
    let mut last = None;
    for _ in 0..total {
        last = Some(sub.next().await.unwrap().unwrap());
    }
    let wall = t0.elapsed();
    let cpu = thread_cpu_ns() - cpu0;
    let proxy_cpu = proxy_pid
        .and_then(process_cpu_ns)
        .zip(proxy0)
        .map(|(after, before)| (after - before) as f64 / total as f64);
    assert_eq!(
        last.unwrap().replay_id(),
        Some(last_id),
        "events lost or reordered"
    );
    drop(sub);
    client.close().await.unwrap();
    Run {
        events_per_sec: total as f64 / wall.as_secs_f64(),
        client_cpu_ns_per_event: cpu as f64 / total as f64,
        proxy_cpu_ns_per_event: proxy_cpu,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let chosen = env("SFSTREAM_BENCH_PROXY");
    let own = if chosen.is_some() {
        None
    } else {
        start_tinyproxy()
    };
    let route = if own.is_some() { "tinyproxy" } else { "proxy" };
    let (proxy_url, proxy_pid) = match (&chosen, &own) {
        (Some(url), _) => (
            url.clone(),
            env("SFSTREAM_BENCH_PROXY_PID").and_then(|p| p.parse().ok()),
        ),
        (None, Some(p)) => (p.url.clone(), Some(p.child.id())),
        (None, None) => match std::env::var("SFSTREAM_TEST_PROXY")
            .ok()
            .filter(|v| !v.is_empty())
        {
            Some(url) => (url, None),
            None => {
                eprintln!(
                    "proxy_throughput skipped: no tinyproxy on PATH and SFSTREAM_TEST_PROXY is \
                     not set (apt-get install tinyproxy, or start one as .ci/run does)"
                );
                return;
            }
        },
    };
    let (events, rounds) = if quick { (20_000, 2) } else { (100_000, 3) };
    let (emu, instance) = start_emulator();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = "/event/ProxyBench__e";
    let batches: Vec<PreparedBatch> = (0..events / BATCH)
        .map(|b| {
            let fields: Vec<Value> = (0..BATCH)
                .map(|i| json!({"Order_Number__c": format!("ORD-{:06}", b * BATCH + i), "Amount__c": 249.5}))
                .collect();
            emu.prepare(channel, &fields)
        })
        .collect();
    let size = batches[0].byte_len() / batches[0].len();
    println!(
        "sfstream through an HTTP proxy: {events} events of {size} B over TLS, {BATCH} per \
         response, max_pending_count 10000; proxy {proxy_url}{}\n",
        if own.is_some() {
            " (tinyproxy started by this bench)"
        } else {
            ""
        }
    );
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for round in 1..=rounds {
        let d = rt.block_on(session(&emu, &instance, &batches, None));
        let p = rt.block_on(session(
            &emu,
            &instance,
            &batches,
            Some((&proxy_url, proxy_pid)),
        ));
        println!(
            "  round {round}: direct {:>6.0} ns client CPU/event {:>9.0} events/s | \
             through {route} {:>6.0} ns client CPU/event {:>9.0} events/s{}",
            d.client_cpu_ns_per_event,
            d.events_per_sec,
            p.client_cpu_ns_per_event,
            p.events_per_sec,
            p.proxy_cpu_ns_per_event
                .map(|n| format!(", {route} {n:.0} ns CPU/event"))
                .unwrap_or_default()
        );
        direct.push(d);
        proxied.push(p);
    }
    let summary = |label: &str, runs: &[Run]| {
        println!(
            "  median {label:<18} {:>6.0} ns client CPU/event {:>9.0} events/s",
            median(runs.iter().map(|r| r.client_cpu_ns_per_event).collect()),
            median(runs.iter().map(|r| r.events_per_sec).collect()),
        );
    };
    println!();
    summary("direct (TLS)", &direct);
    summary(&format!("through {route}"), &proxied);
    drop(own);
}
