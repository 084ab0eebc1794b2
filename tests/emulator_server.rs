//! The standalone emulator (`examples/emulator.rs`) with its retention file, and what the README
//! promises for consecutive `tail --replay-file` runs: run as programs, the way users run them.

mod common;

use common::{fresh_dir, within};
use serde_json::Value;
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running `emulator` example: its process, stdin for publishing, stdout lines.
struct Server {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    /// `KEY=value` pairs of its second line: the environment `tail` needs.
    env: Vec<(String, String)>,
}

impl Server {
    async fn start(retention: &Path) -> Server {
        let mut child = Command::new(common::example_binary("emulator"))
            .args(["--port", "0", "--retention-file"])
            .arg(retention)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next_line().await.unwrap().unwrap();
        assert!(
            first.starts_with("emulator: listening on http://127.0.0.1:"),
            "{first}"
        );
        let env = out
            .next_line()
            .await
            .unwrap()
            .unwrap()
            .split_whitespace()
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let third = out.next_line().await.unwrap().unwrap();
        assert!(third.contains("retained events kept in"), "{third}");
        Server { child, out, env }
    }

    /// Publish from stdin; the replay ids it answers with.
    async fn publish(&mut self, channel: &str, count: usize) -> Vec<i64> {
        let stdin = self.child.stdin.as_mut().unwrap();
        for n in 0..count {
            let line = format!("{channel} {{\"Amount__c\": {n}}}\n");
            stdin.write_all(line.as_bytes()).await.unwrap();
        }
        stdin.flush().await.unwrap();
        let mut ids = Vec::new();
        while ids.len() < count {
            let line = self.out.next_line().await.unwrap().unwrap();
            let rest = line
                .strip_prefix("published ")
                .unwrap_or_else(|| panic!("{line}"));
            let (ch, id) = rest.rsplit_once(' ').unwrap();
            assert_eq!(ch, channel);
            ids.push(id.parse().unwrap());
        }
        ids
    }

    /// Killed, as a crash would end it (SIGKILL on unix).
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

async fn tail(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(common::example_binary("tail"));
    cmd.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.to_ascii_uppercase().ends_with("_PROXY") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `(channel, replay id)` of each printed line.
fn printed(out: &Output) -> Vec<(String, i64)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let id = v["data"]["event"]["replayId"].as_i64().unwrap();
            (v["channel"].as_str().unwrap().to_owned(), id)
        })
        .collect()
}

fn ids(out: &Output) -> Vec<i64> {
    printed(out).into_iter().map(|(_, id)| id).collect()
}

#[tokio::test]
async fn tail_resumes_across_restarts_of_itself_and_of_the_standalone_emulator() {
    within("standalone emulator", async {
        let dir = fresh_dir("standalone");
        let retention = dir.join("events.jsonl");
        let replay_file = dir.join("replay.json");
        let replay_file = replay_file.to_str().unwrap();
        let args = [
            "--count",
            "10",
            "--replay",
            "all",
            "--replay-file",
            replay_file,
            "/event/Order__e",
        ];

        let mut server = Server::start(&retention).await;
        assert_eq!(
            server.publish("/event/Order__e", 25).await,
            (1..=25).collect::<Vec<_>>()
        );
        // Two runs of tail against the same server: consecutive events.
        assert_eq!(
            ids(&tail(&args, &server.env).await),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            ids(&tail(&args, &server.env).await),
            (11..=20).collect::<Vec<_>>()
        );
        // The emulator crashes and comes back with its retention file: tail goes on where it
        // stopped, and new events continue the replay ids.
        server.kill().await;
        let mut server = Server::start(&retention).await;
        assert_eq!(
            server.publish("/event/Order__e", 5).await,
            (26..=30).collect::<Vec<_>>()
        );
        assert_eq!(
            ids(&tail(&args, &server.env).await),
            (21..=30).collect::<Vec<_>>()
        );
        server.kill().await;
    })
    .await
}

#[tokio::test]
async fn consecutive_tail_runs_on_the_built_in_emulator_print_consecutive_events() {
    // The README's promise with no credentials at all: each run starts its own emulator, which
    // keeps its events next to the replay file so the stored id is still valid next time.
    within("built-in emulator resumes", async {
        let dir = fresh_dir("built-in");
        let replay_file = dir.join("replay.json");
        let replay_file = replay_file.to_str().unwrap();
        let args = [
            "--count",
            "4",
            "--replay-file",
            replay_file,
            "/event/Order_Placed__e",
        ];
        let mut all = Vec::new();
        for _ in 0..3 {
            all.extend(ids(&tail(&args, &[]).await));
        }
        let first = all[0];
        assert_eq!(
            all,
            (first..first + 12).collect::<Vec<_>>(),
            "no gap, no repeat"
        );
    })
    .await
}

#[tokio::test]
async fn an_emulator_started_on_its_retention_file_replays_what_the_last_one_retained() {
    within("retention file", async {
        use futures::StreamExt;
        use sfstream::emulator::Emulator;
        let path = fresh_dir("library").join("events.jsonl");
        let emu = Emulator::builder()
            .retention_file(&path)
            .start()
            .await
            .unwrap();
        emu.publish("/event/Order__e", serde_json::json!({"Amount__c": 1}));
        let client = emu.client_builder().build().unwrap();
        // REST publishes and change events (two channels, one id space) are kept too.
        assert!(
            client
                .publish_event("Order__e", &serde_json::json!({"Amount__c": 2}))
                .await
                .unwrap()
                .success
        );
        emu.publish(
            "/data/AccountChangeEvent",
            serde_json::json!({"Name": "Acme"}),
        );
        emu.shutdown().await;

        let emu = Emulator::builder()
            .retention_file(&path)
            .start()
            .await
            .unwrap();
        assert_eq!(emu.retained("/event/Order__e"), 2);
        assert_eq!(emu.retained("/data/ChangeEvents"), 1);
        assert_eq!(emu.publish("/event/Order__e", serde_json::json!({})), 3);
        assert_eq!(
            emu.publish("/data/ContactChangeEvent", serde_json::json!({})),
            2
        );
        let client = common::all_events_client(&emu).await;
        let mut orders = client.subscribe("/event/Order__e").await.unwrap();
        let mut amounts = Vec::new();
        for _ in 0..3 {
            let e = orders.next().await.unwrap().unwrap();
            amounts.push((
                e.replay_id().unwrap(),
                e.data().to_value()["payload"]["Amount__c"].clone(),
            ));
        }
        assert_eq!(amounts[0], (1, serde_json::json!(1)));
        assert_eq!(amounts[1], (2, serde_json::json!(2)));
        assert_eq!(amounts[2].0, 3);
        let mut from = client
            .subscribe_from("/data/AccountChangeEvent", 0)
            .await
            .unwrap();
        assert_eq!(from.next().await.unwrap().unwrap().replay_id(), Some(1));
        client.close().await.unwrap();
    })
    .await
}
