//! The examples of the README, each run as a program (built by `cargo test`) to completion on
//! the built-in emulator, and checked for what it claims to show.

mod common;

use common::{example_binary, fresh_dir, within};
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::replay::FileStorage;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::io::AsyncBufReadExt;

/// Run an example with no credentials in its environment.
async fn run(name: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(example_binary(name));
    cmd.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.to_ascii_uppercase().ends_with("_PROXY") {
            cmd.env_remove(k);
        }
    }
    cmd.output().await.unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cdc_typed_prints_each_field_change_and_goes_on_after_one_that_does_not_fit() {
    within("cdc_typed", async {
        let out = run("cdc_typed", &[]).await;
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        let expected = [
            "CREATE Account 001xx000003DGb2AAG: Name = Acme",
            "CREATE Account 001xx000003DGb2AAG: Phone = (415) 555-0100",
            "UPDATE Account 001xx000003DGb2AAG: Phone = (415) 555-0199",
            "UPDATE Account 001xx000003DGb2AAG: AnnualRevenue = 2500000",
            "UPDATE Account 001xx000003DGb2AAG: Website cleared",
            "UPDATE Account 001xx000003DGb2AAG: BillingAddress.City = Paris",
            "UPDATE Account 001xx000003DGb2AAG: BillingAddress.Country = France",
            "DELETE Account 001xx000003DGb2AAG",
            "GAP_UPDATE Account 001xx000003DGb2AAG: no field values (a gap event); read the records from the REST API",
        ];
        assert_eq!(lines, expected);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("skipped") && stderr.contains("AnnualRevenue"),
            "the change that does not fit is reported with its field: {stderr}"
        );
    })
    .await;
}

#[tokio::test]
async fn custom_layer_tags_every_message_and_counts_round_trips() {
    within("custom_layer", async {
        let text = stdout(&run("custom_layer", &[]).await);
        assert_eq!(text.matches("event Some(").count(), 3, "{text}");
        for channel in ["/meta/handshake", "/meta/subscribe", "/meta/connect"] {
            assert!(
                text.contains(&format!("round trips {channel}: ")),
                "{channel} counted: {text}"
            );
        }
        assert!(text.contains("round trips /meta/handshake: 1 "), "{text}");
        let tagged: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("the server saw ext.consumer on "))
            .and_then(|l| l.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no count of tagged messages: {text}"));
        // Handshake, subscribe, at least two connects and the disconnect all carried it.
        assert!(tagged >= 5, "{text}");
    })
    .await;
}

/// Worker process of `worker_pool` on `emu`; killed with SIGKILL once `kill_after` orders are
/// done. Its output lines.
async fn worker(
    emu: &Emulator,
    dir: &Path,
    total: usize,
    kill_after: Option<usize>,
) -> Vec<String> {
    let mut child = tokio::process::Command::new(example_binary("worker_pool"))
        .args(["--worker", "--total", &total.to_string(), "--replay-file"])
        .arg(dir.join("replay.json"))
        .arg("--done-file")
        .arg(dir.join("done.txt"))
        .arg("/event/Order__e")
        .env("SF_INSTANCE_URL", emu.instance_url())
        .env("SF_ACCESS_TOKEN", emu.issue_token())
        .env("SF_API_VERSION", emu.api_version())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        output.push(line);
        if kill_after == Some(output.iter().filter(|l| l.starts_with("done ")).count()) {
            child.start_kill().unwrap();
            break;
        }
    }
    let status = child.wait().await.unwrap();
    match kill_after {
        Some(_) => assert!(!status.success(), "killed: {status:?}"),
        None => assert!(status.success(), "{status:?}"),
    }
    output
}

fn ids(lines: &[String], prefix: &str) -> BTreeSet<i64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn worker_pool_killed_mid_batch_redelivers_from_the_oldest_unfinished_event_and_reprocesses_nothing()
 {
    within("worker_pool crash", async {
        let emu = Emulator::start().await.unwrap();
        let total = 60;
        for n in 0..total {
            emu.publish("/event/Order__e", json!({ "n": n }));
        }
        let dir = fresh_dir("worker-pool");
        // SIGKILL once 20 orders are done: up to 7 others are in the workers' hands.
        let first = worker(&emu, &dir, total, Some(20)).await;
        assert_eq!(ids(&first, "done ").len(), 20, "{first:?}");
        let marker = FileStorage::read(dir.join("replay.json"))
            .unwrap()
            .get("/event/Order__e")
            .map_or(0, |m| m.replay_id);
        // The stored marker never passes an event that was not done.
        // The workers' own record (a line is written just before its `done` is printed).
        let record: Vec<i64> = std::fs::read_to_string(dir.join("done.txt"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let first_done: BTreeSet<i64> = record.iter().copied().collect();
        assert!(
            (1..=marker).all(|id| record.contains(&id)),
            "marker {marker} passed an unfinished event: {record:?}"
        );
        assert!(marker < total as i64, "the crash left work to do");

        let second = worker(&emu, &dir, total, None).await;
        let redelivered: BTreeSet<i64> = ids(&second, "skip ")
            .union(&ids(&second, "done "))
            .copied()
            .collect();
        // Redelivery starts right after the marker: nothing before it...
        assert_eq!(redelivered.first(), Some(&(marker + 1)), "{second:?}");
        // ...and everything the first run had not finished is done now.
        let unfinished: BTreeSet<i64> = (marker + 1..=total as i64)
            .filter(|id| !first_done.contains(id))
            .collect();
        assert!(
            unfinished.is_subset(&ids(&second, "done ")),
            "marker {marker}: {second:?}"
        );
        // Only what the first run had not finished is processed again.
        let second_done = ids(&second, "done ");
        assert!(second_done.is_disjoint(&first_done), "{second:?}");
        let record: Vec<i64> = std::fs::read_to_string(dir.join("done.txt"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let unique: BTreeSet<i64> = record.iter().copied().collect();
        assert_eq!(
            unique,
            (1..=total as i64).collect(),
            "every order processed"
        );
        assert_eq!(record.len(), unique.len(), "none processed twice");
    })
    .await;
}

#[tokio::test]
async fn worker_pool_demo_runs_to_completion() {
    within("worker_pool demo", async {
        let text = stdout(&run("worker_pool", &[]).await);
        assert!(
            text.contains("orders processed: 40 of 40, 0 of them twice"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn pipeline_stops_on_sigint_after_writing_and_storing_everything_it_took() {
    within("pipeline", async {
        let dir = fresh_dir("pipeline");
        let replay = dir.join("replay.json");
        let mut child = tokio::process::Command::new(example_binary("pipeline"))
            .arg(&replay)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut batches = Vec::new();
        while batches.len() < 2 {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("batches before the signal");
            assert!(line.starts_with("batch of "), "{line}");
            batches.push(line);
        }
        common::interrupt(&child);
        let mut last = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            last = line;
        }
        let output = child.wait_with_output().await.unwrap();
        assert!(
            output.status.success(),
            "{:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // "stopped: R orders in B batches; last event taken X, replay marker stored Y"
        let numbers: Vec<i64> = last
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(last.starts_with("stopped: "), "{last}");
        let [rows, written, taken, stored] = numbers[..] else {
            panic!("{last}")
        };
        assert!(rows > 0 && written >= 2, "{last}");
        assert!(taken > 0, "{last}");
        assert_eq!(
            stored, taken,
            "every event taken was written and its marker stored"
        );
        assert_eq!(
            FileStorage::read(&replay).unwrap()["/event/Order_Placed__e"].replay_id,
            stored
        );
    })
    .await;
}
