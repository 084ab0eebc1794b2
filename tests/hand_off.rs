//! `Subscription::hand_off`: events handed to worker tasks keep their acks, so a crash
//! redelivers what the workers had not finished, under the default commit policy.

mod common;

use common::{all_events_client, fresh_dir, within};
use futures::StreamExt;
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::replay::{CommitPolicy, FileStorage, ReplayOption};
use sfstream::{Client, Handed};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CH: &str = "/event/Work__e";

async fn client(emu: &Emulator, path: &Path) -> Client {
    emu.client_builder()
        .replay(ReplayOption::AllEvents)
        .replay_storage(FileStorage::open(path).unwrap())
        .connect()
        .await
        .unwrap()
}

/// An emulator holding `count` events on [`CH`], replay ids 1 to `count`.
async fn emulator_with(count: i64) -> Emulator {
    let emu = Emulator::start().await.unwrap();
    for n in 0..count {
        emu.publish(CH, json!({"n": n}));
    }
    emu
}

/// Whether a worker "crashes" on this event: it never finishes it.
fn unfinished(id: i64) -> bool {
    id == 13 || id == 21 || id > 30
}

/// The replay ids a fresh client gets from the stored marker, through event 40.
async fn redelivered(emu: &Emulator, path: &Path) -> Vec<i64> {
    let client = client(emu, path).await;
    let mut sub = client.subscribe(CH).await.unwrap();
    let mut ids = Vec::new();
    while ids.last() != Some(&40) {
        ids.push(sub.next().await.unwrap().unwrap().replay_id().unwrap());
    }
    client.close().await.unwrap();
    ids
}

#[tokio::test]
async fn a_crash_mid_batch_redelivers_every_unacked_event_and_none_acked_before_them() {
    within("hand-off crash", async {
        let emu = emulator_with(40).await;
        let path = fresh_dir("crash").join("replay.json");
        let first = client(&emu, &path).await;
        // The default policy (AfterProcessed): the hand-off must not let it run ahead.
        let work = first.subscribe(CH).await.unwrap().hand_off(8);
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let held: Arc<Mutex<Vec<Handed>>> = Arc::default();
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (work, acked, held) = (work.clone(), acked.clone(), held.clone());
            workers.push(tokio::spawn(async move {
                while let Some(item) = work.recv().await {
                    let event = item.unwrap();
                    let id = event.replay_id().unwrap();
                    if unfinished(id) {
                        held.lock().unwrap().push(event); // in progress at the crash
                    } else {
                        tokio::task::yield_now().await; // workers finish out of order
                        event.ack();
                        acked.lock().unwrap().insert(id);
                    }
                }
            }));
        }
        // Wait for the workers to finish everything they will finish: 1..=30 but 13 and 21.
        let expected: BTreeSet<i64> = (1..=30).filter(|id| !unfinished(*id)).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while *acked.lock().unwrap() != expected {
            assert!(tokio::time::Instant::now() < deadline, "{acked:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(work.outstanding() <= 8, "{work:?}");
        // The crash: workers gone mid-batch, their events never acked.
        for worker in &workers {
            worker.abort();
        }
        for worker in workers {
            let _ = worker.await;
        }
        held.lock().unwrap().clear();
        drop(work);
        first.close().await.unwrap();

        let again = redelivered(&emu, &path).await;
        assert_eq!(again, (13..=40).collect::<Vec<_>>());
        // What that means: every unfinished event again, none acked before the oldest of them.
        assert!(again.contains(&13) && again.contains(&21));
        assert!(again.iter().all(|id| *id >= 13));
    })
    .await
}

#[tokio::test]
async fn an_mpsc_hand_off_under_after_processed_loses_the_unfinished_event() {
    // The hazard the hand-off exists for (README "Delivery guarantees"): a pump task that polls
    // the subscription and sends events on a channel counts each one processed when it polls
    // for the next, whatever the worker is doing.
    within("mpsc hand-off", async {
        let emu = emulator_with(40).await;
        let path = fresh_dir("mpsc").join("replay.json");
        let first = client(&emu, &path).await;
        let mut sub = first.subscribe(CH).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let pump = tokio::spawn(async move {
            while let Some(Ok(event)) = sub.next().await {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        });
        let mut held = Vec::new();
        for _ in 0..30 {
            let event = rx.recv().await.unwrap();
            if unfinished(event.replay_id().unwrap()) {
                held.push(event);
            } else {
                event.ack();
            }
        }
        pump.abort();
        let _ = pump.await;
        drop((rx, held));
        first.close().await.unwrap();
        let again = redelivered(&emu, &path).await;
        assert!(
            !again.contains(&13),
            "event 13 was never finished, yet the marker passed it: {again:?}"
        );
    })
    .await
}

#[tokio::test]
async fn recv_waits_while_capacity_events_are_out_and_an_ack_or_drop_frees_a_place() {
    within("capacity", async {
        let emu = emulator_with(10).await;
        let client = all_events_client(&emu).await;
        let work = client.subscribe(CH).await.unwrap().hand_off(3);
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(work.recv().await.unwrap().unwrap());
        }
        assert_eq!(work.outstanding(), 3);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), work.recv())
                .await
                .is_err(),
            "a fourth event while three are out"
        );
        out.remove(0).ack();
        let fourth = work.recv().await.unwrap().unwrap();
        assert_eq!(fourth.replay_id(), Some(4));
        drop(out.remove(0)); // dropped without ack: frees the place, stays unprocessed
        let fifth = work.recv().await.unwrap().unwrap();
        assert_eq!(fifth.replay_id(), Some(5));
        assert_eq!(work.outstanding(), 3);
        // Events come out once each, in order, across clones.
        let other = work.clone();
        drop((out, fourth));
        let sixth = other.recv().await.unwrap().unwrap();
        assert_eq!(sixth.replay_id(), Some(6));
        drop(sixth);
        client.close().await.unwrap();
        // What was queued still comes out, then the end.
        let mut rest = 0;
        while let Some(item) = other.recv().await {
            item.unwrap().ack();
            rest += 1;
        }
        assert!(rest <= 4, "{rest}");
    })
    .await
}

/// Issue 11 review: under `OnReceive` the hand-off's polls stored each marker as the event was
/// handed to a worker, so a crash before the worker's ack lost the event. Now the acks store
/// the markers, in hand-out order.
#[tokio::test]
async fn under_on_receive_a_crash_before_the_hand_off_ack_does_not_lose_the_event() {
    within("on-receive hand-off", async {
        let emu = emulator_with(40).await;
        let path = fresh_dir("on-receive").join("replay.json");
        let on_receive = || async {
            emu.client_builder()
                .replay(ReplayOption::AllEvents)
                .replay_storage(FileStorage::open(&path).unwrap())
                .commit_policy(CommitPolicy::OnReceive)
                .connect()
                .await
                .unwrap()
        };
        let stored = || {
            FileStorage::read(&path)
                .unwrap()
                .get(CH)
                .map(|m| m.replay_id)
        };
        let first = on_receive().await;
        let work = first.subscribe(CH).await.unwrap().hand_off(4);
        let one = work.recv().await.unwrap().unwrap();
        let two = work.recv().await.unwrap().unwrap();
        let three = work.recv().await.unwrap().unwrap();
        assert_eq!(one.replay_id(), Some(1));
        three.ack();
        two.ack();
        // The crash: the worker on event 1 never finishes it.
        drop((one, work));
        first.close().await.unwrap();
        assert_eq!(stored(), None, "the marker passed event 1, never acked");
        assert_eq!(redelivered(&emu, &path).await[0], 1);

        // Acked in any order, the marker follows the acked front (that client stored 39).
        let second = on_receive().await;
        let work = second.subscribe(CH).await.unwrap().hand_off(4);
        let forty = work.recv().await.unwrap().unwrap();
        emu.publish(CH, json!({"n": 40}));
        let forty_one = work.recv().await.unwrap().unwrap();
        assert_eq!(forty_one.replay_id(), Some(41));
        forty_one.ack();
        forty.ack();
        drop(work);
        second.close().await.unwrap();
        assert_eq!(stored(), Some(41));
    })
    .await
}

/// Issue 11 review: `into_event` gave the place back at once, so events converted with it were
/// out at workers beyond `capacity`. The converted event keeps its place until acked (through
/// any clone) or dropped with every clone.
#[tokio::test]
async fn an_event_taken_out_with_into_event_keeps_its_place_until_acked_or_dropped() {
    within("into_event", async {
        use futures::FutureExt;
        let emu = emulator_with(10).await;
        let client = all_events_client(&emu).await;
        let work = client.subscribe(CH).await.unwrap().hand_off(2);
        let one = work.recv().await.unwrap().unwrap().into_event();
        let two = work.recv().await.unwrap().unwrap().into_event();
        assert_eq!(work.outstanding(), 2);
        assert!(
            work.recv().now_or_never().is_none(),
            "a third event while two are out"
        );
        // A clone keeps the place; an ack of any clone frees it.
        let one_copy = one.clone();
        drop(one);
        assert_eq!(work.outstanding(), 2);
        one_copy.ack();
        assert_eq!(work.outstanding(), 1);
        let three = work.recv().await.unwrap().unwrap();
        assert_eq!(three.replay_id(), Some(3));
        // Dropped with every clone, unacked: the place is free.
        drop(two);
        assert_eq!(work.outstanding(), 1);
        drop((three, one_copy));
        assert_eq!(work.outstanding(), 0);
        drop(work);
        client.close().await.unwrap();
    })
    .await
}
