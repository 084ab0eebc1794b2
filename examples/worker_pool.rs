//! `worker_pool`: eight concurrent workers, `Manual` acks and a `FileStorage`, and what a crash
//! in the middle of a batch costs.
//!
//! ```text
//! cargo run --example worker_pool
//! ```
//!
//! With no arguments it is a demonstration on the built-in emulator (no account needed): it
//! publishes 40 orders, starts itself as a worker process, kills that process with SIGKILL
//! once 15 orders are done (7 more are in the workers' hands at that moment), starts a second
//! worker on the same replay file, and prints what each run did.
//!
//! The worker (`worker_pool --worker --total N --replay-file PATH --done-file PATH CHANNEL`,
//! with `SF_INSTANCE_URL` and `SF_ACCESS_TOKEN` naming the org or emulator):
//! - takes events with `buffer_unordered(8)`: eight in progress at once, finishing out of
//!   order;
//! - runs with `CommitPolicy::Manual` and acks each event when its work is done. The stored
//!   marker is the newest event before which *every* event is done, so a crash never skips an
//!   event still in progress: the next run starts at the oldest unfinished event;
//! - records each finished order in its own output (`--done-file`, an append-only file here; a
//!   database table with the replay id as key in real life) and skips orders found there. Events
//!   finished after the oldest unfinished one come again after a crash (that is what
//!   at-least-once means); the check makes the second run *process* only what the first did
//!   not finish.
//!
//! Output lines: `done ID` (processed), `skip ID` (redelivered, already done).

use futures::StreamExt;
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::replay::{CommitPolicy, FileStorage, ReplayOption};
use sfstream::{Client, Event, NoticeExt};
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const CHANNEL: &str = "/event/Order_Placed__e";
const WORKERS: usize = 8;

struct WorkerArgs {
    total: usize,
    replay_file: PathBuf,
    done_file: PathBuf,
    channel: String,
}

fn parse_worker_args(mut args: impl Iterator<Item = String>) -> Result<WorkerArgs, String> {
    let (mut total, mut replay_file, mut done_file, mut channel) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--total" => {
                let n = args.next().ok_or("--total needs a number")?;
                total = Some(
                    n.parse()
                        .map_err(|_| format!("--total: not a number: {n}"))?,
                );
            }
            "--replay-file" => replay_file = args.next().map(PathBuf::from),
            "--done-file" => done_file = args.next().map(PathBuf::from),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            other => channel = Some(other.to_owned()),
        }
    }
    Ok(WorkerArgs {
        total: total.ok_or("--total is required")?,
        replay_file: replay_file.ok_or("--replay-file is required")?,
        done_file: done_file.ok_or("--done-file is required")?,
        channel: channel.unwrap_or_else(|| CHANNEL.to_owned()),
    })
}

/// The orders already processed, by replay id: the worker's own record of its output.
struct Done {
    ids: Mutex<BTreeSet<i64>>,
    file: Mutex<std::fs::File>,
}

impl Done {
    fn open(path: &Path) -> std::io::Result<Done> {
        let mut ids = BTreeSet::new();
        if let Ok(file) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(file).lines() {
                if let Ok(id) = line?.trim().parse() {
                    ids.insert(id);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Done {
            ids: Mutex::new(ids),
            file: Mutex::new(file),
        })
    }

    fn contains(&self, id: i64) -> bool {
        self.ids.lock().unwrap().contains(&id)
    }

    /// Record `id` as processed; the number of orders processed so far.
    fn record(&self, id: i64) -> std::io::Result<usize> {
        writeln!(self.file.lock().unwrap(), "{id}")?;
        let mut ids = self.ids.lock().unwrap();
        ids.insert(id);
        Ok(ids.len())
    }

    fn len(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

/// One order's work: skipped if an earlier run finished it, else processed (a few
/// milliseconds that vary per order, so workers finish out of order) and recorded. The event is
/// acked only once its order is recorded.
async fn work(event: Event, done: &Done) -> std::io::Result<()> {
    let id = event.replay_id().unwrap_or(-1);
    if done.contains(id) {
        println!("skip {id}");
    } else {
        let ms = 2 + (id.unsigned_abs() * 7) % 11;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        done.record(id)?;
        println!("done {id}");
    }
    event.ack();
    Ok(())
}

async fn worker(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SF_INSTANCE_URL").map_err(|_| "SF_INSTANCE_URL is not set")?;
    let token = std::env::var("SF_ACCESS_TOKEN").map_err(|_| "SF_ACCESS_TOKEN is not set")?;
    let mut builder = Client::access_token(token, url.parse()?)
        .replay(ReplayOption::AllEvents)
        .replay_storage(FileStorage::open(&args.replay_file)?)
        // Workers finish out of order: only an ack says an event is done.
        .commit_policy(CommitPolicy::Manual);
    if let Ok(version) = std::env::var("SF_API_VERSION") {
        builder = builder.api_version(version);
    }
    let client = builder.connect().await?;
    let done = Done::open(&args.done_file)?;
    let mut results = client
        .subscribe(args.channel.as_str())
        .await?
        .on_notice(|notice| eprintln!("worker_pool: notice: {notice}"))
        .map(|item| {
            let done = &done;
            async move {
                match item {
                    Ok(event) => work(event, done).await.map_err(Into::into),
                    Err(e) => Err::<(), Box<dyn std::error::Error>>(e.into()),
                }
            }
        })
        .buffer_unordered(WORKERS);
    while done.len() < args.total {
        match results.next().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err("the stream ended".into()),
        }
    }
    drop(results);
    // Waits until the markers of every acked event are in the replay file.
    client.close().await?;
    Ok(())
}

/// Run a worker process; kill it with SIGKILL after `kill_after` orders done, if given.
/// Returns its output lines.
async fn run_worker(
    emulator: &Emulator,
    dir: &Path,
    total: usize,
    kill_after: Option<usize>,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--worker", "--total", &total.to_string(), "--replay-file"])
        .arg(dir.join("replay.json"))
        .arg("--done-file")
        .arg(dir.join("done.txt"))
        .arg(CHANNEL)
        .env("SF_INSTANCE_URL", emulator.instance_url())
        .env("SF_ACCESS_TOKEN", emulator.issue_token())
        .env("SF_API_VERSION", emulator.api_version())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut output = Vec::new();
    while let Some(line) = lines.next_line().await? {
        output.push(line);
        let done = output.iter().filter(|l| l.starts_with("done ")).count();
        if kill_after == Some(done) {
            child.start_kill()?; // SIGKILL: no close, no flush, workers mid-event
            break;
        }
    }
    let status = child.wait().await?;
    if kill_after.is_none() && !status.success() {
        return Err(format!("the worker failed: {status}").into());
    }
    Ok(output)
}

fn ids(lines: &[String], prefix: &str) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .collect()
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::start().await?;
    let total = 40;
    for n in 1..=total {
        emulator.publish(CHANNEL, json!({"Order_Number__c": format!("ORD-{n:05}")}));
    }
    let dir = std::env::temp_dir().join(format!("sfstream-worker-pool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let first = run_worker(&emulator, &dir, total, Some(15)).await?;
    let stored = FileStorage::read(dir.join("replay.json"))?
        .get(CHANNEL)
        .map(|m| m.replay_id);
    println!(
        "first run, killed after 15 orders: done {:?}",
        ids(&first, "done ")
    );
    println!("replay marker at the crash: {stored:?} (every event up to it was done)");

    let second = run_worker(&emulator, &dir, total, None).await?;
    println!(
        "second run: redelivered but already done {:?}",
        ids(&second, "skip ")
    );
    println!("second run: done {:?}", ids(&second, "done "));
    // The workers' own record: one line per order processed, in both runs.
    let record = std::fs::read_to_string(dir.join("done.txt"))?;
    let all: Vec<&str> = record.lines().collect();
    let unique: BTreeSet<&str> = all.iter().copied().collect();
    println!(
        "orders processed: {} of {total}, {} of them twice",
        unique.len(),
        all.len() - unique.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let result = if args.peek().is_some_and(|a| a == "--worker") {
        args.next();
        match parse_worker_args(args) {
            Ok(args) => worker(args).await,
            Err(e) => Err(e.into()),
        }
    } else {
        demo().await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker_pool: error: {e}");
            ExitCode::FAILURE
        }
    }
}
