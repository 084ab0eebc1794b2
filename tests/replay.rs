//! Replay: where subscriptions start, what is stored when, fallbacks, and never losing an event
//! across reconnects and restarts. End to end over HTTP against the emulator.

mod common;

use common::log::Captured;
use common::{unique_dir, within};
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::replay::{CommitPolicy, FileStorage, MappingStorage, ReplayMarker, ReplayOption};
use sfstream::{Client, ClientBuilder, ErrorKind, Subscription};
use std::time::Duration;

const CH: &str = "/event/Order__e";

fn builder(emu: &Emulator) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// A client that replays everything retained and keeps markers in `storage`.
fn stored(emu: &Emulator, storage: impl sfstream::replay::ReplayStorage) -> ClientBuilder {
    builder(emu)
        .replay(ReplayOption::AllEvents)
        .replay_storage(storage)
}

/// A client on `emu` under `policy`, storing its markers in the returned `MappingStorage`.
async fn in_memory(emu: &Emulator, policy: CommitPolicy) -> (Client, MappingStorage) {
    let storage = MappingStorage::new();
    let client = stored(emu, storage.clone())
        .commit_policy(policy)
        .connect()
        .await
        .unwrap();
    (client, storage)
}

async fn next_id(sub: &mut Subscription) -> i64 {
    sub.next().await.unwrap().unwrap().replay_id().unwrap()
}

/// Take `n` events and say each was processed.
async fn take_acked(sub: &mut Subscription, n: usize) -> Vec<i64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let event = sub.next().await.unwrap().unwrap();
        event.ack();
        v.push(event.replay_id().unwrap());
    }
    v
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<i64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(next_id(sub).await);
    }
    v
}

fn publish(emu: &Emulator, n: usize) {
    for i in 0..n {
        emu.publish(CH, json!({"n": i}));
    }
}

fn last_subscribe_replay(emu: &Emulator) -> serde_json::Value {
    emu.received()
        .into_iter()
        .filter(|m| m.channel == "/meta/subscribe")
        .last()
        .and_then(|m| m.ext_field("replay").cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn handshake_and_subscribe_carry_the_replay_extension() {
    within("wire", async {
        let emu = Emulator::start().await.unwrap();
        let client = builder(&emu).connect().await.unwrap();
        let handshake = emu
            .received()
            .into_iter()
            .find(|m| m.channel == "/meta/handshake")
            .unwrap();
        assert_eq!(handshake.ext_field("replay"), Some(&json!(true)));
        // Keyed by the channel without its PushTopic filter.
        let _s = client
            .subscribe("/topic/Invoices?Status__c=Open")
            .await
            .unwrap();
        assert_eq!(last_subscribe_replay(&emu), json!({"/topic/Invoices": -1}));
    })
    .await;
}

#[tokio::test]
async fn all_new_and_after_a_specific_id() {
    within("-2 -1 N", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 5);
        // -2: everything retained.
        let all = builder(&emu)
            .replay(ReplayOption::AllEvents)
            .connect()
            .await
            .unwrap();
        let mut s = all.subscribe(CH).await.unwrap();
        assert_eq!(take(&mut s, 5).await, vec![1, 2, 3, 4, 5]);
        // -1: only what comes next.
        let new = builder(&emu).connect().await.unwrap();
        let mut n = new.subscribe(CH).await.unwrap();
        // N: events after N.
        let from = builder(&emu).connect().await.unwrap();
        let mut f = from.subscribe_from(CH, 3).await.unwrap();
        assert_eq!(last_subscribe_replay(&emu), json!({CH: 3}));
        publish(&emu, 1);
        assert_eq!(take(&mut f, 3).await, vec![4, 5, 6]);
        assert_eq!(take(&mut n, 1).await, vec![6]);
        assert_eq!(take(&mut s, 1).await, vec![6]);
    })
    .await;
}

#[tokio::test]
async fn replay_ids_above_2_pow_32_round_trip_through_a_file() {
    within("big ids", async {
        let dir = unique_dir();
        let path = dir.join("replay.json");
        let emu = Emulator::builder()
            .replay_id_start(5_000_000_000)
            .replay_id_step(7)
            .start()
            .await
            .unwrap();
        publish(&emu, 3);
        let client = stored(&emu, FileStorage::open(&path).unwrap())
            .connect()
            .await
            .unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(
            take_acked(&mut s, 3).await,
            vec![5_000_000_000, 5_000_000_007, 5_000_000_014]
        );
        client.close().await.unwrap();
        let stored = FileStorage::read(&path).unwrap();
        assert_eq!(stored[CH].replay_id, 5_000_000_014);
    })
    .await;
}

#[tokio::test]
async fn a_restarted_client_resumes_from_the_file_exactly_once_in_order() {
    within("restart", async {
        let dir = unique_dir();
        let path = dir.join("replay.json");
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 30);
        let mut seen = Vec::new();
        for run in 0..3 {
            let client = stored(&emu, FileStorage::open(&path).unwrap())
                .connect()
                .await
                .unwrap();
            let mut s = client.subscribe(CH).await.unwrap();
            seen.extend(take(&mut s, 9).await);
            // The tenth event: processed, and said so (the stream is not polled past it).
            let tenth = s.next().await.unwrap().unwrap();
            seen.push(tenth.replay_id().unwrap());
            tenth.ack();
            client.close().await.unwrap();
            assert_eq!(
                FileStorage::read(&path).unwrap()[CH].replay_id,
                (run + 1) * 10
            );
        }
        assert_eq!(seen, (1..=30).collect::<Vec<i64>>());
    })
    .await;
}

#[tokio::test]
async fn a_consumer_that_dies_mid_event_gets_it_again() {
    within("crash mid-event", async {
        let storage = MappingStorage::new();
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 5);
        let client = stored(&emu, storage.clone()).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(take(&mut s, 3).await, vec![1, 2, 3]);
        // Event 3 is being processed when the consumer dies (the stream is dropped, no close).
        drop(s);
        // Wait for the background writer: event 2 was processed (the stream was polled after it).
        let restart = builder(&emu)
            .replay_storage(storage.clone())
            .connect()
            .await
            .unwrap();
        wait_for_marker(&storage, 2).await;
        let mut s = restart.subscribe(CH).await.unwrap();
        assert_eq!(take(&mut s, 3).await, vec![3, 4, 5], "event 3 comes again");
    })
    .await;
}

async fn wait_for_marker(storage: &MappingStorage, id: i64) {
    // The marker is written by a background task; poll its map until it lands.
    loop {
        if storage.map().lock().unwrap().get(CH).map(|m| m.replay_id) == Some(id) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn commit_policies_store_at_the_documented_moment() {
    within("policies", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 3);
        // OnReceive: stored when handed out.
        let (client, storage) = in_memory(&emu, CommitPolicy::OnReceive).await;
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(next_id(&mut s).await, 1);
        wait_for_marker(&storage, 1).await;
        client.close().await.unwrap();

        // Manual: only ack() stores.
        let (client, storage) = in_memory(&emu, CommitPolicy::Manual).await;
        let mut s = client.subscribe(CH).await.unwrap();
        let _a = s.next().await.unwrap().unwrap(); // still being processed
        let b = s.next().await.unwrap().unwrap();
        let _c = s.next().await.unwrap().unwrap();
        // Out of order: 2 is done but 1 is not, so nothing may be stored yet.
        b.ack();
        client.close().await.unwrap();
        assert!(
            storage.map().lock().unwrap().get(CH).is_none(),
            "1 would be skipped"
        );
        let client = stored(&emu, storage.clone())
            .commit_policy(CommitPolicy::Manual)
            .connect()
            .await
            .unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        let a = s.next().await.unwrap().unwrap();
        let b = s.next().await.unwrap().unwrap();
        let _c = s.next().await.unwrap().unwrap();
        b.ack();
        a.ack(); // now 1 and 2 are done: 2 is stored
        wait_for_marker(&storage, 2).await;
        client.close().await.unwrap();
        assert_eq!(
            storage.map().lock().unwrap()[CH].replay_id,
            2,
            "close stores nothing unacked"
        );
        drop((a, b));

        // AfterProcessed: the previous event is stored when the stream is polled again.
        let storage = MappingStorage::new();
        let client = stored(&emu, storage.clone()).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(take(&mut s, 2).await, vec![1, 2]);
        wait_for_marker(&storage, 1).await;
        assert_eq!(
            storage.map().lock().unwrap()[CH].replay_id,
            1,
            "2 is not processed yet"
        );
        // Neither an unsubscribe nor a close says that 2 was processed...
        s.unsubscribe().await.unwrap();
        client.close().await.unwrap();
        assert_eq!(storage.map().lock().unwrap()[CH].replay_id, 1);
    })
    .await;
}

#[tokio::test]
async fn markers_never_move_backwards_when_old_events_are_replayed() {
    within("never backwards", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 10);
        let storage = MappingStorage::new();
        let client = stored(&emu, storage.clone()).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        take_acked(&mut s, 10).await;
        s.unsubscribe().await.unwrap();
        wait_for_marker(&storage, 10).await;
        // Replaying older events again (from 2) must not move the stored marker back.
        let mut again = client.subscribe_from(CH, 2).await.unwrap();
        assert_eq!(
            take_acked(&mut again, 8).await,
            (3..=10).collect::<Vec<_>>()
        );
        again.unsubscribe().await.unwrap();
        client.close().await.unwrap();
        assert_eq!(storage.map().lock().unwrap()[CH].replay_id, 10);
    })
    .await;
}

#[tokio::test]
async fn a_rehandshake_resumes_after_the_last_delivered_event() {
    within("rehandshake", async {
        let emu = Emulator::start().await.unwrap();
        // No storage, start at new events: the in-memory marker still carries the stream.
        let client = builder(&emu).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        publish(&emu, 3);
        assert_eq!(take(&mut s, 3).await, vec![1, 2, 3]);
        emu.wait_until(|st| st.held_connects == 1).await;
        emu.forget_sessions();
        // Published while the client is between sessions.
        publish(&emu, 3);
        emu.wait_until(|st| st.handshakes == 2 && st.subscribes == 2)
            .await;
        assert_eq!(last_subscribe_replay(&emu), json!({CH: 3}));
        publish(&emu, 2);
        assert_eq!(
            take(&mut s, 5).await,
            vec![4, 5, 6, 7, 8],
            "no loss, no duplicate"
        );
    })
    .await;
}

#[tokio::test]
async fn an_expired_replay_id_falls_back_and_says_so() {
    within("fallback", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 20);
        emu.expire_events(CH, 10);
        let storage = MappingStorage::new();
        storage
            .map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(5, None));
        let client = builder(&emu)
            .replay_storage(storage.clone())
            .replay_fallback(ReplayOption::AllEvents)
            .connect()
            .await
            .unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        let notice = s.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::ReplayGap);
        let gap = notice.replay_gap_info().unwrap();
        assert_eq!(
            (gap.channel.as_str(), gap.rejected_id, gap.fallback_id),
            (CH, Some(5), -2)
        );
        assert_eq!(take(&mut s, 10).await, (11..=20).collect::<Vec<_>>());
    })
    .await;
}

/// Issue 11's crash loop: a `FileStorage` holding an id outside the retention window, an
/// `AllEvents` fallback, and a consumer that stops on the first error (`try_next()?`). Each
/// restart used to meet the same expired id and the same notice, forever, because nothing
/// moved the stored marker.
#[tokio::test]
async fn a_consumer_that_stops_on_the_gap_notice_makes_progress_when_restarted() {
    within("gap crash loop", async {
        use futures::TryStreamExt;
        let dir = unique_dir();
        let path = dir.join("replay.json");
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 20);
        emu.expire_events(CH, 10);
        use sfstream::replay::ReplayStorage;
        FileStorage::open(&path)
            .unwrap()
            .set(CH, ReplayMarker::new(5, None))
            .await
            .unwrap();
        // One run of the consumer: up to three events, stopping at the first error.
        let run = || async {
            let client = builder(&emu)
                .replay_storage(FileStorage::open(&path).unwrap())
                .replay_fallback(ReplayOption::AllEvents)
                .connect()
                .await
                .unwrap();
            let mut s = client.subscribe(CH).await.unwrap();
            let mut seen = Vec::new();
            let result: sfstream::Result<()> = async {
                while seen.len() < 3 {
                    let event = s.try_next().await?.expect("the stream goes on");
                    event.ack();
                    seen.push(event.replay_id().unwrap());
                }
                Ok(())
            }
            .await;
            drop(s);
            client.close().await.unwrap();
            (result.map_err(|e| e.kind()), seen)
        };
        // The first run stops on the notice, as such a consumer does...
        assert_eq!(run().await, (Err(ErrorKind::ReplayGap), vec![]));
        // ...and the next one starts from the fallback instead of the expired id.
        assert_eq!(
            FileStorage::read(&path).unwrap()[CH],
            ReplayMarker::new(-2, None)
        );
        assert_eq!(run().await, (Ok(()), vec![11, 12, 13]));
        assert_eq!(run().await, (Ok(()), vec![14, 15, 16]));
        assert_eq!(FileStorage::read(&path).unwrap()[CH].replay_id, 16);
    })
    .await;
}

#[tokio::test]
async fn the_fallback_also_applies_after_a_rehandshake() {
    within("fallback after rehandshake", async {
        let emu = Emulator::start().await.unwrap();
        let client = builder(&emu)
            .replay_fallback(ReplayOption::NewEvents)
            .connect()
            .await
            .unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        publish(&emu, 5);
        assert_eq!(take(&mut s, 5).await, vec![1, 2, 3, 4, 5]);
        emu.wait_until(|st| st.held_connects == 1).await;
        // The session is lost; before the client is back, 6..8 arrive and retention drops
        // everything through 7 (the test runtime is single-threaded: these run first).
        emu.forget_sessions();
        publish(&emu, 3);
        emu.expire_events(CH, 7);
        let notice = s.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::ReplayGap, "{notice}");
        let gap = notice.replay_gap_info().unwrap();
        assert_eq!((gap.rejected_id, gap.fallback_id), (Some(5), -1));
        emu.wait_until(|st| st.subscribes == 3 && st.held_connects == 1)
            .await;
        publish(&emu, 1);
        assert_eq!(take(&mut s, 1).await, vec![9]);
    })
    .await;
}

#[tokio::test]
async fn without_a_fallback_an_expired_id_is_a_typed_error() {
    within("no fallback", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 20);
        emu.expire_events(CH, 10);
        let client = builder(&emu).connect().await.unwrap();
        let e = client.subscribe_from(CH, 5).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay, "{e}");
        assert_eq!(e.server_error().unwrap().replay_id(), Some(5));
    })
    .await;
}

#[tokio::test]
async fn markers_of_every_event_family_are_stored_with_their_dates() {
    within("families", async {
        let dir = unique_dir();
        let path = dir.join("replay.json");
        let emu = Emulator::start().await.unwrap();
        let channels = [
            "/topic/Invoices",
            "/event/Order__e",
            "/data/AccountChangeEvent",
            "/u/Notes",
        ];
        emu.publish(channels[0], json!({"Name": "INV-1"}));
        emu.publish(channels[1], json!({"Amount__c": 1.5}));
        emu.publish(channels[2], json!({"Phone": "1"}));
        emu.publish(channels[3], json!("note"));
        let client = stored(&emu, FileStorage::open(&path).unwrap())
            .connect()
            .await
            .unwrap();
        let mut expected = Vec::new();
        let mut subs = Vec::new();
        for ch in channels {
            let mut sub = client.subscribe(ch).await.unwrap();
            let event = sub.next().await.unwrap().unwrap();
            event.ack();
            let marker = event.replay_marker().unwrap();
            assert!(marker.date.is_some(), "{ch} has a date");
            expected.push((ch, marker));
            subs.push(sub);
        }
        client.close().await.unwrap();
        let stored = FileStorage::read(&path).unwrap();
        for (ch, marker) in expected {
            let got = stored[ch];
            assert_eq!(got.replay_id, marker.replay_id, "{ch}");
            // Stored at millisecond precision, as Salesforce dates are.
            let diff = got
                .date
                .unwrap()
                .duration_since(marker.date.unwrap())
                .unwrap_or_default();
            assert!(diff < Duration::from_millis(1), "{ch}");
        }
    })
    .await;
}

/// Child half of `file_writes_survive_a_kill`: write markers as fast as possible until killed.
#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var("SFSTREAM_CRASH_WRITER") else {
        return; // only meaningful when started by the parent test
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = FileStorage::open(&path).unwrap();
    rt.block_on(async {
        use sfstream::replay::ReplayStorage;
        for id in 1.. {
            let date = std::time::SystemTime::now();
            storage
                .set(CH, ReplayMarker::new(id, Some(date)))
                .await
                .unwrap();
        }
    });
}

#[test]
fn file_writes_survive_a_kill() {
    let dir = unique_dir();
    for round in 0..5u64 {
        let path = dir.join(format!("replay-{round}.json"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SFSTREAM_CRASH_WRITER", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait (on another process, so by looking at its file) until it has written a while.
        let target = 20 + round * 17;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // `read`, not `open`: the writer holds the file's lock.
            if let Ok(markers) = FileStorage::read(&path)
                && markers
                    .get(CH)
                    .is_some_and(|m| m.replay_id as u64 >= target)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writer made no progress"
            );
            std::thread::yield_now();
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no flush, possibly mid-write
        child.wait().unwrap();
        // The killed process's lock is released: the file opens, and it is whole.
        let stored = FileStorage::open(&path).expect("the file is valid after a kill");
        let id = stored.markers()[CH].replay_id as u64;
        assert!(id >= target, "round {round}: {id} < {target}");
    }
}

#[tokio::test]
async fn a_backlog_bigger_than_max_pending_in_the_subscribe_reply_is_handled() {
    within("backlog", async {
        let emu = Emulator::builder()
            .backlog_in_subscribe_reply(true)
            .start()
            .await
            .unwrap();
        publish(&emu, 500);
        let client = builder(&emu)
            .replay(ReplayOption::AllEvents)
            .max_pending_count(10)
            .connect()
            .await
            .unwrap();
        // The reply arrives with 500 events in front of it; subscribe returns at once.
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(client.pending_count(), 500);
        let second = client.subscribe("/event/Other__e").await.unwrap();
        drop(second);
        assert_eq!(take(&mut s, 500).await, (1..=500).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn a_new_subscription_starts_from_what_was_processed_not_delivered() {
    within("forget on drop", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 5);
        let storage = MappingStorage::new();
        let client = stored(&emu, storage.clone()).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(take(&mut s, 2).await, vec![1, 2]);
        wait_for_marker(&storage, 1).await;
        // 3..5 were delivered to the queue but never taken; 2 was taken, not processed.
        drop(s);
        emu.wait_until(|st| st.unsubscribes == 1).await;
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(take(&mut s, 4).await, vec![2, 3, 4, 5]);
    })
    .await;
}

#[tokio::test]
async fn subscribe_from_on_a_live_channel_does_not_rewind_it() {
    within("subscribe_from duplicate", async {
        let emu = Emulator::start().await.unwrap();
        let client = builder(&emu).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        publish(&emu, 3);
        assert_eq!(take(&mut s, 3).await, vec![1, 2, 3]);
        let e = client.subscribe_from(CH, 0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        emu.wait_until(|st| st.held_connects == 1).await;
        emu.forget_sessions();
        emu.wait_until(|st| st.subscribes == 2).await;
        assert_eq!(last_subscribe_replay(&emu), json!({CH: 3}));
    })
    .await;
}

/// A storage whose writes can be made to fail or panic.
#[derive(Clone, Default)]
struct Flaky {
    inner: MappingStorage,
    fail_next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    panic: std::sync::Arc<std::sync::atomic::AtomicBool>,
    panic_next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl sfstream::replay::ReplayStorage for Flaky {
    fn get<'a>(
        &'a self,
        subscription: &'a str,
    ) -> futures::future::BoxFuture<'a, sfstream::Result<Option<ReplayMarker>>> {
        self.inner.get(subscription)
    }
    fn set<'a>(
        &'a self,
        subscription: &'a str,
        marker: ReplayMarker,
    ) -> futures::future::BoxFuture<'a, sfstream::Result<()>> {
        use std::sync::atomic::Ordering;
        if self.panic.load(Ordering::SeqCst)
            || self
                .panic_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            panic!("storage bug");
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Any error will do: borrow one from a bad file.
            return Box::pin(async { Err(FileStorage::open("/dev/null/nope").unwrap_err()) });
        }
        self.inner.set(subscription, marker)
    }
}

/// One event on each of `channels`, acked together so that their markers go to `storage` in
/// one batch, whose first write goes wrong; after `close()` every channel's marker is stored.
async fn a_batch_of_markers_survives_a_bad_write(storage: Flaky, channels: &[&str]) {
    let emu = Emulator::start().await.unwrap();
    for ch in channels {
        emu.publish(ch, json!({}));
    }
    let client = stored(&emu, storage.clone())
        .commit_policy(CommitPolicy::Manual)
        .connect()
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut subs = Vec::new();
    for ch in channels {
        let mut s = client.subscribe(*ch).await.unwrap();
        events.push(s.next().await.unwrap().unwrap());
        subs.push(s);
    }
    for e in &events {
        e.ack();
    }
    client.close().await.unwrap();
    let map = storage.inner.map().lock().unwrap().clone();
    for ch in channels {
        assert_eq!(
            map.get(*ch).map(|m| m.replay_id),
            Some(1),
            "{ch} lost: {map:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_write_keeps_every_pending_marker_for_the_next_try() {
    let storage = Flaky::default();
    storage
        .fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let channels = ["/event/A__e", "/event/B__e", "/event/C__e"];
    within(
        "failing storage",
        a_batch_of_markers_survives_a_bad_write(storage, &channels),
    )
    .await;
}

#[tokio::test]
async fn close_returns_and_reports_a_storage_that_panics() {
    within("panicking storage", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 1);
        let storage = Flaky::default();
        storage
            .panic
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let client = stored(&emu, storage).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(take_acked(&mut s, 1).await, vec![1]);
        // The marker of event 1 was never stored: close must not say it was.
        let e = client.close().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay, "{e}");
    })
    .await;
}

#[tokio::test]
async fn a_storage_that_panics_once_loses_no_marker_of_the_batch() {
    let storage = Flaky::default();
    storage
        .panic_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let channels = ["/event/A__e", "/event/B__e"];
    within(
        "storage panics once",
        a_batch_of_markers_survives_a_bad_write(storage, &channels),
    )
    .await;
}

#[test]
fn one_process_per_replay_file() {
    let dir = unique_dir();
    let path = dir.join("replay.json");
    // Another process holding the lock (simulated with our own lock on its lock file).
    let lock = std::fs::File::create(dir.join(".replay.json.lock")).unwrap();
    lock.try_lock().unwrap();
    let e = FileStorage::open(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replay);
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(lock);
    // In one process, opening twice shares one storage.
    let a = FileStorage::open(&path).unwrap();
    let b = FileStorage::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        use sfstream::replay::ReplayStorage;
        a.set("/a", ReplayMarker::new(1, None)).await.unwrap();
        b.set("/b", ReplayMarker::new(2, None)).await.unwrap();
    });
    let on_disk = FileStorage::read(&path).unwrap();
    assert_eq!(on_disk.len(), 2, "neither overwrote the other");
}

#[tokio::test]
async fn close_reports_markers_that_could_not_be_stored() {
    within("close reports", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 2);
        let storage = Flaky::default();
        storage
            .fail_next
            .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        let client = stored(&emu, storage).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        take_acked(&mut s, 2).await;
        let e = client.close().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay, "{e}");
    })
    .await;
}

#[tokio::test]
async fn a_late_ack_from_an_earlier_subscription_never_commits_a_newer_event() {
    within("late ack", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 10);
        let (client, storage) = in_memory(&emu, CommitPolicy::Manual).await;
        let mut s = client.subscribe(CH).await.unwrap();
        let mut old = Vec::new();
        for _ in 0..4 {
            old.push(s.next().await.unwrap().unwrap());
        }
        for e in &old[..3] {
            e.ack();
        }
        wait_for_marker(&storage, 3).await;
        // Event 4 (the old subscription's fourth delivery) is still in the hands of a worker.
        drop(s);
        emu.wait_until(|st| st.unsubscribes == 1).await;
        // The new subscription starts after the stored marker: 4, 5, 6 are processed, 7 is not.
        let mut s = client.subscribe(CH).await.unwrap();
        assert_eq!(take_acked(&mut s, 3).await, vec![4, 5, 6]);
        let seven = s.next().await.unwrap().unwrap();
        assert_eq!(seven.replay_id(), Some(7));
        wait_for_marker(&storage, 6).await;
        // The old worker finishes late: its ack must not count for the new fourth delivery (7).
        old[3].ack();
        client.close().await.unwrap();
        let stored = storage.map().lock().unwrap()[CH].replay_id;
        assert_eq!(stored, 6, "event 7 was never processed");
    })
    .await;
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_at_the_old_temp_name_is_never_followed() {
    use sfstream::replay::ReplayStorage;
    let dir = unique_dir();
    let victim = dir.join("authorized_keys");
    std::fs::write(&victim, "ssh-ed25519 AAAA victim\n").unwrap();
    // Another user who can write to the directory plants the predictable temp name.
    std::os::unix::fs::symlink(&victim, dir.join(".replay.json.tmp")).unwrap();
    let storage = FileStorage::open(dir.join("replay.json")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(storage.set("/a", ReplayMarker::new(1, None)))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "ssh-ed25519 AAAA victim\n"
    );
    assert_eq!(FileStorage::read(dir.join("replay.json")).unwrap().len(), 1);
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && n != ".replay.json.tmp")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_as_the_lock_file_is_refused() {
    let dir = unique_dir();
    let victim = dir.join("victim");
    std::fs::write(&victim, "data").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(".replay.json.lock")).unwrap();
    let e = FileStorage::open(dir.join("replay.json")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replay, "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "data");
}

#[cfg(unix)]
#[test]
fn the_replay_file_is_private_and_keeps_a_mode_its_owner_chose() {
    use sfstream::replay::ReplayStorage;
    use std::os::unix::fs::PermissionsExt;
    let dir = unique_dir();
    let path = dir.join("replay.json");
    let storage = FileStorage::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    rt.block_on(storage.set("/a", ReplayMarker::new(1, None)))
        .unwrap();
    assert_eq!(mode(&path), 0o600, "a new replay file is private");
    assert_eq!(mode(&dir.join(".replay.json.lock")), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    rt.block_on(storage.set("/a", ReplayMarker::new(2, None)))
        .unwrap();
    assert_eq!(mode(&path), 0o400, "the owner's mode is kept");
    assert_eq!(FileStorage::read(&path).unwrap()["/a"].replay_id, 2);
}

#[tokio::test]
async fn receive_take_ten_three_times_stores_the_last_event_not_the_ninth_forever() {
    within("receive take", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 30);
        let storage = MappingStorage::new();
        let client = stored(&emu, storage.clone()).connect().await.unwrap();
        client.subscribe(CH).await.unwrap().detach();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut all = client.receive().unwrap().take(10);
            while let Some(event) = all.next().await {
                seen.push(event.unwrap().replay_id().unwrap());
            }
        }
        assert_eq!(seen, (1..=30).collect::<Vec<_>>());
        // Each dropped stream's last event was processed (the loop body ran for it).
        wait_for_marker(&storage, 30).await;
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn new_events_published_while_a_subscription_that_delivered_nothing_resubscribes_are_not_lost()
 {
    within("NewEvents before the first event", async {
        let emu = Emulator::builder().start().await.unwrap();
        let client = builder(&emu)
            .replay(ReplayOption::NewEvents)
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        emu.wait_until(|s| s.held_connects == 1).await;
        // The session ends before the channel delivered anything, and an event is published
        // before the client can resubscribe (nothing yields between the two calls).
        emu.forget_sessions();
        let between = emu.publish("/event/A__e", json!({"n": 1}));
        emu.wait_until(|s| s.handshakes == 2 && s.subscribes == 2)
            .await;
        let after = emu.publish("/event/A__e", json!({"n": 2}));
        assert_eq!(
            next_id(&mut sub).await,
            between,
            "the event published in between"
        );
        assert_eq!(next_id(&mut sub).await, after);
        // Once an event arrived, resubscribes continue after it (no second replay).
        let replays: Vec<serde_json::Value> = emu
            .received()
            .iter()
            .filter(|m| m.channel == "/meta/subscribe")
            .filter_map(|m| m.ext.as_ref()?.get("replay").cloned())
            .collect();
        assert_eq!(
            replays,
            vec![json!({"/event/A__e": -1}), json!({"/event/A__e": -2})]
        );
        emu.forget_sessions();
        emu.wait_until(|s| s.handshakes == 3 && s.subscribes == 3)
            .await;
        let last = emu.received();
        let third = last
            .iter()
            .filter(|m| m.channel == "/meta/subscribe")
            .nth(2)
            .and_then(|m| m.ext.clone())
            .unwrap();
        assert_eq!(third["replay"], json!({"/event/A__e": after}));
        let more = emu.publish("/event/A__e", json!({"n": 3}));
        assert_eq!(next_id(&mut sub).await, more);
    })
    .await;
}

#[test]
fn a_manual_event_dropped_without_ack_is_warned_about_and_shown_in_health() {
    // Current-thread runtime: the client, its task and the emulator all log into this.
    let (captured, _guard) = Captured::this_thread(tracing::Level::WARN);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(within("skipped manual ack", async {
        let emu = Emulator::start().await.unwrap();
        publish(&emu, 4);
        let (client, storage) = in_memory(&emu, CommitPolicy::Manual).await;
        let mut health = client.health_updates();
        let mut s = client.subscribe(CH).await.unwrap();
        let a = s.next().await.unwrap().unwrap();
        let b = s.next().await.unwrap().unwrap();
        let b_copy = b.clone();
        let c = s.next().await.unwrap().unwrap();
        a.ack();
        // A clone still alive: nothing is skipped yet.
        drop(b);
        c.ack();
        wait_for_marker(&storage, 1).await;
        assert_eq!(client.health().subscriptions[0].unacked, None);
        // The last copy of 2 goes without an ack: the marker can never pass it this session.
        drop(b_copy);
        let skipped = health
            .wait_for(|h| h.subscriptions.first().is_some_and(|s| s.unacked.is_some()))
            .await
            .unwrap()
            .subscriptions[0]
            .unacked;
        assert_eq!(skipped, Some(Some(2)));
        let log = captured.text();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("without ack()"))
            .collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains("WARN"), "{log}");
        assert!(
            warnings[0].contains(CH) && warnings[0].contains("replay_id=2"),
            "{log}"
        );
        // A second skipped event is not logged again; the oldest stays in health.
        drop(s.next().await.unwrap().unwrap());
        let log = captured.text();
        assert_eq!(
            log.lines().filter(|l| l.contains("without ack()")).count(),
            1
        );
        assert_eq!(client.health().subscriptions[0].unacked, Some(Some(2)));
        assert_eq!(storage.map().lock().unwrap()[CH].replay_id, 1);
        // A new subscription starts afresh (from the stored marker: 2 comes again).
        drop(s);
        let mut s = client.subscribe(CH).await.unwrap();
        let again = s.next().await.unwrap().unwrap();
        assert_eq!(again.replay_id(), Some(2));
        again.ack();
        assert_eq!(client.health().subscriptions[0].unacked, None);
        client.close().await.unwrap();
    }));
}
