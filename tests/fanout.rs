//! Fan-out end to end: two PushTopic filters on one topic (they share the base channel, its
//! replay ids and its stored marker) and a platform-event channel on one connection, through
//! lost connect responses, 503s, cut bodies and forgotten sessions. Resume positions are per
//! filter: one filter's position says nothing about the events another has seen.

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

fn builder(emu: &Emulator, storage: &MappingStorage) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .replay(ReplayOption::AllEvents)
        .replay_storage(storage.clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
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
        let emu = Emulator::builder()
            .advice_timeout(Duration::from_secs(2))
            .start()
            .await
            .unwrap();
        emu.define_push_topic(TOPIC, &["Status", "Region"]);
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

        // `open` processed every order, but the marker of the shared topic must not pass the
        // first order `eu` did not process.
        let topic_marker = marker(&storage, TOPIC).expect("a topic marker");
        assert!(
            want_eu[half - 1] <= topic_marker && topic_marker < want_eu[half],
            "topic marker {topic_marker}: eu processed up to {} and not {}",
            want_eu[half - 1],
            want_eu[half]
        );
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
    let emu = Emulator::builder()
        .advice_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    emu.define_push_topic(TOPIC, &["Region"]);
    let url = emu.instance_url().parse().unwrap();
    let client = Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .replay(ReplayOption::AllEvents)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    (emu, client)
}

fn order(emu: &Emulator, region: &str) -> i64 {
    emu.publish(TOPIC, json!({ "Region": region }))
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
        let sentinel = order(&emu, "EU");
        // Without the fix the first event `EU` gets is the sentinel.
        assert_eq!(
            take(&mut eu, 1).await,
            vec![eu_order],
            "the EU order was skipped"
        );
        assert_eq!(take(&mut eu, 1).await, vec![sentinel]);
        client.close().await.unwrap();
        emu.shutdown().await;
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
        let sentinel = order(&emu, "EU");
        assert_eq!(
            take(&mut eu, 1).await,
            vec![held],
            "the held EU order was skipped"
        );
        assert_eq!(take(&mut eu, 1).await, vec![sentinel]);
        client.close().await.unwrap();
        emu.shutdown().await;
    })
    .await;
}
