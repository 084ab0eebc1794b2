#![allow(dead_code, unreachable_pub)]
pub mod child;
pub mod front;
pub mod log;
pub mod mock;
pub mod proxy;

use std::future::Future;
use std::time::Duration;

/// Every test ends by itself: a hang is a failure, not a stuck CI job.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// An emulator that answers held connects every 100 ms, so quiet periods pass quickly.
pub async fn quick_emulator() -> sfstream::emulator::Emulator {
    sfstream::emulator::Emulator::builder()
        .advice_timeout(Duration::from_millis(100))
        .start()
        .await
        .unwrap()
}

/// A client of `emu` that starts every subscription from all retained events.
pub async fn all_events_client(emu: &sfstream::emulator::Emulator) -> sfstream::Client {
    emu.client_builder()
        .replay(sfstream::replay::ReplayOption::AllEvents)
        .connect()
        .await
        .unwrap()
}

pub fn token_for(instance_url: &str) -> sfstream::auth::AccessToken {
    sfstream::auth::AccessToken::new("test-token", instance_url.parse().unwrap())
}

/// For `start_paused` tests: time is virtual, so the limit can be generous.
pub async fn within_virtual<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The path of an example built by `cargo test` (target/<profile>/deps/<test>-<hash> ->
/// target/<profile>/examples/<name>).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --all-features` builds the examples before running tests",
        bin.display()
    );
    bin
}

/// Starts example `name` with `--requests N` (it answers N HTTP requests, then exits); returns
/// it and the address its first line says it listens on. The rest of its output is drained.
pub async fn serving_example(name: &str, requests: u32) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(example_binary(name))
        .args(["--requests", &requests.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a first line");
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// One `GET path` on a connection of its own: the status and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits until `client` reports a state matching `pred` (state changes are pushed: no sleeping).
pub async fn wait_state(
    client: &sfstream::Client,
    pred: impl Fn(&sfstream::ConnectionState) -> bool,
) {
    use futures::StreamExt;
    let mut updates = client.state_updates();
    while let Some(s) = updates.next().await {
        if pred(&s) {
            return;
        }
    }
    panic!("client closed before reaching the state");
}

/// Sends SIGINT (Ctrl-C) to `child`, through the shell's builtin `kill`: no dependency on
/// procps, no unsafe code.
pub fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("a running child");
    let killed = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// An empty directory under the system temp dir, named after this test binary, this process
/// and `name` (emptied first, in case an earlier run with the same pid left it behind).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split('-').next())
        .unwrap_or("test")
        .to_owned();
    let dir = std::env::temp_dir().join(format!("sfstream-{binary}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A [`fresh_dir`] of its own for each call.
pub fn unique_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fresh_dir(
        &N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    )
}
