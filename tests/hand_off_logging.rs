//! A `Handed` dropped without `ack()` is warned about once. One test in its own binary:
//! tracing caches which callsites are enabled, so a capture beside parallel tests that hit the
//! same callsite without a subscriber could miss the line.

mod common;

use common::log::Captured;
use common::{fresh_dir, within};
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::replay::{CommitPolicy, FileStorage, ReplayOption};

const CH: &str = "/event/Work__e";

/// Issue 11 review: a `Handed` dropped unacked under `Manual` was warned about twice, by the
/// hand-off and by the tracker. Once now, under `Manual` and under `AfterProcessed`.
#[test]
fn a_handed_event_dropped_unacked_is_warned_about_once() {
    // Current-thread runtime: the client, its task and the emulator all log into this.
    let (captured, _guard) = Captured::this_thread(tracing::Level::WARN);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let warnings = || {
        let log = captured.text();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("without ack()"))
            .map(str::to_owned)
            .collect();
        lines
    };
    runtime.block_on(within("dropped handed event", async {
        let emu = Emulator::start().await.unwrap();
        for n in 0..10 {
            emu.publish(CH, json!({"n": n}));
        }
        for (policy, name) in [
            (CommitPolicy::Manual, "manual"),
            (CommitPolicy::AfterProcessed, "after-processed"),
        ] {
            let before = warnings().len();
            let path = fresh_dir(name).join("replay.json");
            let client = emu
                .client_builder()
                .replay(ReplayOption::AllEvents)
                .replay_storage(FileStorage::open(&path).unwrap())
                .commit_policy(policy)
                .connect()
                .await
                .unwrap();
            let work = client.subscribe(CH).await.unwrap().hand_off(4);
            let first = work.recv().await.unwrap().unwrap();
            drop(first);
            let new: Vec<String> = warnings().split_off(before);
            assert_eq!(new.len(), 1, "{policy:?}: {new:#?}");
            assert!(
                new[0].contains(CH) && new[0].contains("replay_id=1"),
                "{new:?}"
            );
            drop(work);
            client.close().await.unwrap();
        }
    }));
}
