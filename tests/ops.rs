//! Running in production: stall detection, health, spans and metrics, end to end against the
//! in-process emulator.

mod common;

use common::within;
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::{Client, ClientBuilder, ErrorKind, Event, Subscription};
use std::time::Duration;

fn builder(emu: &Emulator) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url)).api_version(emu.api_version())
}

/// An emulator that answers held connects every 100 ms, so "quiet" passes quickly.
async fn quick_emulator() -> Emulator {
    Emulator::builder()
        .advice_timeout(Duration::from_millis(100))
        .start()
        .await
        .unwrap()
}

/// The next event, counting the stall notices met on the way.
async fn next_event(sub: &mut Subscription, notices: &mut usize) -> Event {
    loop {
        match sub.next().await.expect("the stream goes on") {
            Ok(event) => return event,
            Err(e) if e.kind() == ErrorKind::Stalled => *notices += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

#[tokio::test]
async fn events_published_during_a_stall_arrive_exactly_once_after_recovery() {
    within("stall", async {
        let emu = quick_emulator().await;
        let channel = "/event/Order__e";
        let client = builder(&emu)
            .stall_timeout(Some(Duration::from_millis(400)))
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe(channel).await.unwrap();
        let mut notices = 0;
        emu.publish(channel, json!({"n": 1}));
        assert_eq!(
            next_event(&mut sub, &mut notices).await.replay_id(),
            Some(1)
        );

        // The event bus stalls: the session stays healthy, the subscription hears nothing.
        emu.stall_channel(channel);
        emu.publish(channel, json!({"n": 2}));
        emu.publish(channel, json!({"n": 3}));
        let notice = sub.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::Stalled, "{notice}");
        assert!(
            notice.to_string().contains("from replay id 1"),
            "the notice names where it resumes: {notice}"
        );
        // The backlog clears; the next resubscribe (if the first one met the stall) replays
        // what the stall held back.
        emu.end_stall(channel);
        let two = next_event(&mut sub, &mut notices).await;
        let three = next_event(&mut sub, &mut notices).await;
        assert_eq!((two.replay_id(), three.replay_id()), (Some(2), Some(3)));
        // Nothing twice: the next events are the new ones.
        emu.publish(channel, json!({"n": 4}));
        assert_eq!(
            next_event(&mut sub, &mut notices).await.replay_id(),
            Some(4)
        );
        emu.publish(channel, json!({"n": 5}));
        assert_eq!(
            next_event(&mut sub, &mut notices).await.replay_id(),
            Some(5)
        );
        let stats = emu.stats();
        assert!(
            stats.subscribes >= 2 && stats.unsubscribes >= 1,
            "{stats:?}"
        );
        assert_eq!(stats.sessions, 1, "recovered without a new session");
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_quiet_subscription_is_left_alone_without_a_stall_timeout() {
    within("quiet", async {
        let emu = quick_emulator().await;
        let client = builder(&emu).connect().await.unwrap();
        let mut sub = client.subscribe("/topic/Quiet").await.unwrap();
        // Ten held connects (a second of silence) later: still one subscribe, no notice.
        let connects = emu.stats().connects;
        emu.wait_until(|s| s.connects >= connects + 10).await;
        assert_eq!(emu.stats().subscribes, 1);
        emu.publish("/topic/Quiet", json!({"Id": "001"}));
        let event = sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(1));
        client.close().await.unwrap();
    })
    .await;
}
