//! Running in production: stall detection, health, spans and metrics, end to end against the
//! in-process emulator.

mod common;

use common::mock::{client_builder, open_with, subscribe};
use common::{http_get, quick_emulator, serving_example, within, within_virtual};
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, Fault, Target};
use sfstream::{Client, ClientBuilder, ConnectionState, ErrorKind, Event, Health, Subscription};
use std::time::Duration;

fn builder(emu: &Emulator) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url)).api_version(emu.api_version())
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

/// Waits (no sleeping: health is pushed) until the client's health satisfies `pred`.
async fn wait_health(client: &Client, pred: impl Fn(&Health) -> bool) -> Health {
    let mut rx = client.health_updates();
    let seen = rx
        .wait_for(|h| pred(h))
        .await
        .expect("health updates go on");
    seen.clone()
}

#[tokio::test]
async fn health_reports_the_session_and_its_subscriptions() {
    within("health", async {
        let emu = quick_emulator().await;
        let client = builder(&emu).build().unwrap();
        let before = client.health();
        assert!(!before.healthy && !before.connected, "{before:?}");
        client.open().await.unwrap();
        let h = client.health();
        assert!(
            h.healthy && h.connected,
            "healthy once open() returns: {h:?}"
        );
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        let h = client.health();
        assert!(h.healthy && h.connected && h.since.is_some(), "{h:?}");
        assert_eq!(h.subscriptions.len(), 1);
        assert_eq!(h.subscriptions[0].channel, "/event/A__e");
        assert!(h.subscriptions[0].subscribed);
        assert_eq!(h.subscriptions[0].replay_id, None);
        emu.publish("/event/A__e", json!({}));
        let h = wait_health(&client, |h| h.subscriptions[0].replay_id == Some(1)).await;
        assert!(h.subscriptions[0].last_event.is_some());
        assert!(h.last_round_trip.is_some());
        // The event waits for its consumer: pending counts it (read live by health()).
        assert_eq!(client.health().pending, 1);
        sub.next().await.unwrap().unwrap();
        assert_eq!(client.health().pending, 0);
        client.close().await.unwrap();
        let h = client.health();
        assert!(
            !h.healthy && !h.connected && h.subscriptions.is_empty(),
            "{h:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn health_survives_a_failed_connect_and_turns_unhealthy_after_the_threshold() {
    within("health threshold", async {
        let emu = quick_emulator().await;
        let client = builder(&emu)
            .backoff(Duration::from_millis(50), Duration::from_millis(50))
            .unhealthy_after(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        let _sub = client.subscribe("/event/A__e").await.unwrap();
        // One failed connect: the state says Reconnecting, health stays healthy.
        let mut states = client.state_updates();
        emu.inject(Fault::on(Target::Connect).status(503, "busy"));
        loop {
            if let Some(ConnectionState::Reconnecting { failures, .. }) = states.next().await {
                assert_eq!(failures, 1);
                break;
            }
        }
        let h = client.health();
        assert!(h.healthy, "one failure is not unhealthy: {h:?}");
        wait_health(&client, |h| h.connected && h.failures == 0).await;
        // A long outage (faults for 40 connects, 50 ms apart) crosses the 300 ms threshold.
        for _ in 0..40 {
            emu.inject(Fault::on(Target::Connect).status(503, "busy"));
        }
        let h = wait_health(&client, |h| !h.healthy).await;
        assert!(!h.connected && h.failures >= 2, "{h:?}");
        // And recovers once the server answers again.
        let h = wait_health(&client, |h| h.healthy && h.connected).await;
        assert_eq!(h.failures, 0);
        client.close().await.unwrap();
    })
    .await;
}

/// One plain HTTP/1.1 GET over loopback: (status, body).
#[tokio::test]
async fn the_health_example_serves_kubernetes_probes() {
    within("health example", async {
        let (mut child, addr) = serving_example("health", 4).await;
        assert_eq!(http_get(&addr, "/livez").await, (200, "ok\n".to_owned()));
        assert_eq!(http_get(&addr, "/readyz").await, (200, "ok\n".to_owned()));
        let (status, body) = http_get(&addr, "/health").await;
        assert_eq!(status, 200);
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["healthy"], true);
        assert_eq!(
            health["subscriptions"][0]["channel"],
            "/event/Order_Placed__e"
        );
        assert_eq!(http_get(&addr, "/nope").await.0, 404);
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_subscription_held_back_by_backpressure_is_not_stalled_but_a_quiet_one_is() {
    within_virtual("stall and backpressure", async {
        let channel = "/event/A__e";
        let (builder, mut server) = client_builder();
        let client = builder
            .max_pending_count(1)
            .stall_timeout(Some(Duration::from_secs(60)))
            .build()
            .unwrap();
        open_with(&client, &mut server).await;
        let mut sub = subscribe(&client, &mut server, channel).await;
        // Two events nobody takes: the connect loop pauses.
        let event = |id: i64| json!({"channel": channel, "data": {"event": {"replayId": id}}});
        server
            .next_on("/meta/connect")
            .await
            .ok_with(vec![event(1), event(2)]);
        wait_health(&client, |h| h.paused.is_some()).await;
        // Ten quiet minutes explained by backpressure: no resubscribe.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!server.has_waiting("/meta/unsubscribe"));
        assert!(!server.has_waiting("/meta/subscribe"));
        // Taken: the loop goes on, its connect is held, and a minute of silence is a stall.
        for id in [1, 2] {
            assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(id));
        }
        let _held = server.next_on("/meta/connect").await;
        let resumed = tokio::time::Instant::now();
        server.next_on("/meta/unsubscribe").await.ok();
        assert_eq!(resumed.elapsed().as_secs(), 60);
        let resubscribe = server.next_on("/meta/subscribe").await;
        assert_eq!(
            resubscribe.message().ext_field("replay"),
            Some(&json!({ channel: 2 })),
            "resubscribed from the last delivered replay id"
        );
        resubscribe.ok();
        let notice = sub.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::Stalled, "{notice}");
    })
    .await;
}
