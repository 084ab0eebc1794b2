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

mod common;

use common::{BATCH, other_process_cpu_ns, thread_cpu_ns};
use sfstream::Client;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, PreparedBatch};
use sfstream::transport::Proxy;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The emulator and its TLS front (on their own thread); the front's https URL.
fn start_emulator() -> (Emulator, String) {
    common::on_own_thread("emulator", || async {
        let emu = common::batch_emulator().await;
        let front = front::front(emu.local_addr(), true).await;
        let url = front.url(true);
        (emu, url)
    })
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
    let proxy_pid = proxy.and_then(|(_, pid)| pid);
    let proxy0 = proxy_pid.and_then(other_process_cpu_ns);
    let pass = common::push_and_read(emu, &mut sub, batches, thread_cpu_ns).await;
    let proxy_cpu = proxy_pid
        .and_then(other_process_cpu_ns)
        .zip(proxy0)
        .map(|(after, before)| (after - before) as f64 / pass.events as f64);
    drop(sub);
    client.close().await.unwrap();
    Run {
        events_per_sec: pass.events_per_sec(),
        client_cpu_ns_per_event: pass.cpu_ns_per_event(),
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
    let batches = common::prepare(&emu, channel, events, common::order_fields);
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
