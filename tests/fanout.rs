//! Fan-out end to end: two PushTopic filters on one topic (they share the base channel and its
//! replay ids) and a platform-event channel on one connection, through lost connect responses,
//! 503s, cut bodies and forgotten sessions. Resume positions and stored markers are per
//! filter: one filter's position says nothing about the events another has seen, so a crash
//! never resumes a filter from where another one has got to.

mod common;

use common::within;
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, Fault, Target};
use sfstream::replay::{MappingStorage, ReplayOption};
use sfstream::{Client, ClientBuilder, Subscription};
use std::time::Duration;

const TOPIC: &str = "/topic/Orders";
const OPEN: &str = "/topic/Orders?Status='open'";
const EU: &str = "/topic/Orders?Region='EU'";
const US: &str = "/topic/Orders?Region='US'";
const EVENTS: &str = "/event/Fan__e";
const ROUNDS: usize = 30;

/// An emulator with the PushTopic [`TOPIC`] on `fields`.
async fn emulator(fields: &[&str]) -> Emulator {
    let emu = Emulator::builder()
        .advice_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    emu.define_push_topic(TOPIC, fields);
    emu
}

/// A client starting from `AllEvents`, retrying quickly, without replay storage.
fn builder_without_storage(emu: &Emulator) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .replay(ReplayOption::AllEvents)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

fn builder(emu: &Emulator, storage: &MappingStorage) -> ClientBuilder {
    builder_without_storage(emu).replay_storage(storage.clone())
}

/// Take `n` events; taking the next one marks the previous processed (the default policy), and
/// the last is acked, so all `n` are processed.
async fn take(sub: &mut Subscription, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let event = sub.next().await.expect("stream ended").expect("an event");
        if i + 1 == n {
            event.ack();
        }
        ids.push(event.replay_id().unwrap());
    }
    ids
}

fn marker(storage: &MappingStorage, channel: &str) -> Option<i64> {
    storage
        .map()
        .lock()
        .unwrap()
        .get(channel)
        .map(|m| m.replay_id)
}

#[tokio::test]
async fn fan_out_to_two_filters_and_a_channel_is_at_least_once_for_each_under_faults() {
    within("fan-out under faults", async {
        let emu = emulator(&["Status", "Region"]).await;
        let storage = MappingStorage::new();
        let client = builder(&emu, &storage).connect().await.unwrap();
        let mut open = client.subscribe(OPEN).await.unwrap();
        let mut eu = client.subscribe(EU).await.unwrap();
        let mut events = client.subscribe(EVENTS).await.unwrap();

        // Each round: an order both filters match, one only `open` matches or one only `eu`
        // matches, and a platform event; every few rounds the network or the server fails.
        let (mut want_open, mut want_eu, mut want_events) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let (status, region) = match round % 3 {
                0 => ("open", "EU"),
                1 => ("open", "US"),
                _ => ("closed", "EU"),
            };
            let id = emu.publish(TOPIC, json!({"Status": status, "Region": region}));
            if status == "open" {
                want_open.push(id);
            }
            if region == "EU" {
                want_eu.push(id);
            }
            want_events.push(emu.publish(EVENTS, json!({"round": round})));
            match round % 6 {
                1 => emu.inject(Fault::on(Target::Connect).lose_response()),
                2 => emu.inject(Fault::on(Target::Connect).status(503, "Service Unavailable")),
                3 => emu.inject(Fault::on(Target::Connect).truncated()),
                4 => emu.forget_sessions(),
                _ => {}
            }
            // Spread the events over many connects, so the faults hit some carrying events.
            if round % 2 == 0 {
                let connects = emu.stats().connects;
                emu.wait_until(|s| s.connects > connects).await;
            }
        }
        assert!(emu.stats().faults_triggered >= 10, "{:?}", emu.stats());

        // `open` and the platform events are consumed in full; `eu` processes only half.
        let got_open = take(&mut open, want_open.len()).await;
        let got_events = take(&mut events, want_events.len()).await;
        let half = want_eu.len() / 2;
        let got_eu = take(&mut eu, half).await;
        // Exactly once and in order within the session, whatever failed.
        assert_eq!(got_open, want_open);
        assert_eq!(got_events, want_events);
        assert_eq!(got_eu, want_eu[..half]);
        client.close().await.unwrap();

        // Each filter's marker is its own (the topic's is the unfiltered subscription's, and
        // there is none): `open` processed every order, `eu` stops before the first order it
        // did not process.
        assert_eq!(marker(&storage, OPEN), want_open.last().copied());
        let eu_marker = marker(&storage, EU).expect("a marker of the EU filter");
        assert!(
            want_eu[half - 1] <= eu_marker && eu_marker < want_eu[half],
            "EU marker {eu_marker}: eu processed up to {} and not {}",
            want_eu[half - 1],
            want_eu[half]
        );
        assert_eq!(marker(&storage, TOPIC), None);
        assert_eq!(marker(&storage, EVENTS), want_events.last().copied());

        // After a restart the lagging filter gets every order it did not process (at least
        // once); the fully processed channel gets nothing again.
        let client = builder(&emu, &storage).connect().await.unwrap();
        let mut eu = client.subscribe(EU).await.unwrap();
        let mut events = client.subscribe(EVENTS).await.unwrap();
        let sentinel = emu.publish(EVENTS, json!({"sentinel": true}));
        let rest = want_eu.len() - half;
        let again = take(&mut eu, rest).await;
        assert_eq!(again, want_eu[half..]);
        assert_eq!(take(&mut events, 1).await, vec![sentinel]);
        client.close().await.unwrap();
        emu.shutdown().await;
    })
    .await;
}

// ---- resume positions per filter ----

/// A client without replay storage: a subscription starts from `AllEvents` until it has a
/// position of its own.
async fn start_without_storage() -> (Emulator, Client) {
    let emu = emulator(&["Region"]).await;
    let client = builder_without_storage(&emu).connect().await.unwrap();
    (emu, client)
}

fn order(emu: &Emulator, region: &str) -> i64 {
    emu.publish(TOPIC, json!({ "Region": region }))
}

/// Publishes an EU order as a sentinel; `eu` must deliver `next` (else it fails saying
/// `skipped`) and then the sentinel. Closes the client and the emulator.
async fn next_then_sentinel(
    emu: Emulator,
    client: Client,
    eu: &mut Subscription,
    next: i64,
    skipped: &str,
) {
    let sentinel = order(&emu, "EU");
    assert_eq!(take(eu, 1).await, vec![next], "{skipped}");
    assert_eq!(take(eu, 1).await, vec![sentinel]);
    client.close().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn a_filter_subscribed_after_another_filter_of_its_topic_delivered_starts_from_its_own_replay_option()
 {
    within("late filter", async {
        let (emu, client) = start_without_storage().await;
        let mut us = client.subscribe(US).await.unwrap();
        let eu_order = order(&emu, "EU");
        let us_order = order(&emu, "US");
        assert_eq!(take(&mut us, 1).await, vec![us_order]);

        // `US` has delivered an event newer than the EU order; `EU` asks for all retained events.
        let mut eu = client.subscribe(EU).await.unwrap();
        // Without the fix the first event `EU` gets is the sentinel.
        next_then_sentinel(emu, client, &mut eu, eu_order, "the EU order was skipped").await;
    })
    .await;
}

#[tokio::test]
async fn after_a_session_loss_each_filter_resubscribes_from_its_own_last_event() {
    within("resubscribe per filter", async {
        let (emu, client) = start_without_storage().await;
        let mut eu = client.subscribe(EU).await.unwrap();
        let mut us = client.subscribe(US).await.unwrap();
        let first_eu = order(&emu, "EU");
        let first_us = order(&emu, "US");
        assert_eq!(take(&mut eu, 1).await, vec![first_eu]);
        assert_eq!(take(&mut us, 1).await, vec![first_us]);

        // An EU order the event bus holds back, then a US order delivered past it.
        emu.stall_channel(TOPIC);
        let held = order(&emu, "EU");
        emu.end_stall(TOPIC);
        let later_us = order(&emu, "US");
        assert_eq!(take(&mut us, 1).await, vec![later_us]);

        // The resubscribe of `EU` must replay the held order, not start after `US`'s last.
        emu.forget_sessions();
        next_then_sentinel(emu, client, &mut eu, held, "the held EU order was skipped").await;
    })
    .await;
}

// ---- a late filter's backlog across a crash ----

/// What survives a crash of the process: the markers written so far, in a storage of its own,
/// so that nothing the dead client does afterwards (its streams dropped, no close) can write
/// to it.
fn crash(storage: &MappingStorage) -> MappingStorage {
    let written = MappingStorage::new();
    written
        .map()
        .lock()
        .unwrap()
        .extend(storage.map().lock().unwrap().clone());
    written
}

/// Wait (bounded by `within`) until some stored marker is `id`: the storage holds the progress
/// of the filter that processed it, whatever key it is under.
async fn wait_stored(storage: &MappingStorage, id: i64) {
    while !storage
        .map()
        .lock()
        .unwrap()
        .values()
        .any(|m| m.replay_id == id)
    {
        tokio::task::yield_now().await;
    }
}

/// A filter subscribed late from an earlier position works through a backlog that lies before
/// what another filter of its topic has processed; the process crashes in the middle of it.
/// After the restart the late filter must get the rest of its backlog: the stored position it
/// resumes from must not be the other filter's.
async fn late_filter_backlog_survives_a_crash(from_an_earlier_id: bool) {
    let emu = emulator(&["Region"]).await;
    let storage = MappingStorage::new();
    let client = builder(&emu, &storage).connect().await.unwrap();
    let mut us = client.subscribe(US).await.unwrap();
    let first_us = order(&emu, "US");
    let backlog: Vec<i64> = (0..3).map(|_| order(&emu, "EU")).collect();
    let later_us = order(&emu, "US");
    assert_eq!(take(&mut us, 1).await, vec![first_us]);
    let mut eu = if from_an_earlier_id {
        // `US` has processed past the backlog and its marker is written; `EU` asks for the
        // events after `US`'s first order.
        assert_eq!(take(&mut us, 1).await, vec![later_us]);
        wait_stored(&storage, later_us).await;
        client.subscribe_from(EU, first_us).await.unwrap()
    } else {
        // `US` holds its newest order unprocessed, so nothing is stored past its first and
        // `EU` starts from all retained events; then `US` finishes and its marker is written.
        let held = us.next().await.unwrap().unwrap();
        assert_eq!(held.replay_id(), Some(later_us));
        let eu = client.subscribe(EU).await.unwrap();
        held.ack();
        wait_stored(&storage, later_us).await;
        eu
    };
    // `EU` processes the first order of its backlog; the second is in hand at the crash.
    assert_eq!(take(&mut eu, 1).await, backlog[..1]);
    let in_hand = eu.next().await.unwrap().unwrap();
    assert_eq!(in_hand.replay_id(), Some(backlog[1]));
    let storage = crash(&storage);
    drop((us, eu, in_hand, client));

    let client = builder(&emu, &storage).connect().await.unwrap();
    let mut eu = client.subscribe(EU).await.unwrap();
    let sentinel = order(&emu, "EU");
    let mut got = Vec::new();
    while got.last() != Some(&sentinel) {
        let event = eu.next().await.expect("stream ended").expect("an event");
        got.push(event.replay_id().unwrap());
    }
    // At least once: the first order of the backlog may come again (its marker may not have
    // been written before the crash). Without the fix only the sentinel comes: the rest of the
    // backlog is lost.
    let rest = [backlog[1], backlog[2], sentinel];
    assert!(
        got.ends_with(&rest) && got.len() <= 4 && (got.len() == 3 || got[0] == backlog[0]),
        "after the crash the late filter got {got:?}, not its unprocessed backlog {rest:?}"
    );
    client.close().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn a_late_filter_subscribed_from_an_earlier_id_keeps_its_backlog_across_a_crash() {
    within("late filter from an earlier id, crash", async {
        late_filter_backlog_survives_a_crash(true).await;
    })
    .await;
}

#[tokio::test]
async fn a_late_filter_starting_from_all_events_keeps_its_backlog_across_a_crash() {
    within("late filter from all events, crash", async {
        late_filter_backlog_survives_a_crash(false).await;
    })
    .await;
}

/// Storage written by a version that kept a filter's marker under its topic: the filter starts
/// from it once, and once the id has expired and the notice was handed out, its restart point
/// is stored under the filter's own name (the topic's marker is left to the topic's own
/// subscription), so the next run makes progress.
#[tokio::test]
async fn a_filter_resumes_from_its_topic_s_marker_of_an_older_version_and_falls_back_under_its_own_name()
 {
    within("filter migration and gap", async {
        use futures::TryStreamExt;
        let emu = emulator(&["Region"]).await;
        let orders: Vec<i64> = (0..20).map(|_| order(&emu, "EU")).collect();
        emu.expire_events(TOPIC, orders[9]);
        let storage = MappingStorage::new();
        storage.map().lock().unwrap().insert(
            TOPIC.into(),
            sfstream::replay::ReplayMarker::new(orders[4], None),
        );
        let run = || async {
            let client = builder(&emu, &storage)
                .replay_fallback(ReplayOption::AllEvents)
                .connect()
                .await
                .unwrap();
            let mut eu = client.subscribe(EU).await.unwrap();
            let mut seen = Vec::new();
            let result: sfstream::Result<()> = async {
                while seen.len() < 3 {
                    let event = eu.try_next().await?.expect("the stream goes on");
                    event.ack();
                    seen.push(event.replay_id().unwrap());
                }
                Ok(())
            }
            .await;
            drop(eu);
            client.close().await.unwrap();
            (result.map_err(|e| e.kind()), seen)
        };
        // The topic's (expired) marker is where the filter starts: the notice...
        assert_eq!(run().await, (Err(sfstream::ErrorKind::ReplayGap), vec![]));
        assert_eq!(marker(&storage, EU), Some(-2));
        assert_eq!(marker(&storage, TOPIC), Some(orders[4]));
        // ...then progress under the filter's own name.
        assert_eq!(run().await, (Ok(()), orders[10..13].to_vec()));
        assert_eq!(run().await, (Ok(()), orders[13..16].to_vec()));
        assert_eq!(marker(&storage, EU), Some(orders[15]));
        emu.shutdown().await;
    })
    .await;
}
