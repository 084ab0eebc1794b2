//! The client end to end over real HTTP against the in-process emulator.

mod common;

use common::{wait_state, within};
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::{Emulator, EmulatorBuilder, Fault, Target};
use sfstream::{Client, ClientBuilder, ConnectionState, ErrorKind, Subscription};
use std::time::Duration;

fn builder(emu: &Emulator) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url)).api_version(emu.api_version())
}

/// A client that retries within milliseconds, for tests that provoke failures.
fn quick(emu: &Emulator) -> ClientBuilder {
    builder(emu).backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// The error of the next failed request the client reports.
async fn next_failure(
    updates: &mut (impl futures::Stream<Item = ConnectionState> + Unpin),
) -> sfstream::Error {
    loop {
        if let Some(ConnectionState::Reconnecting { error, .. }) = updates.next().await {
            return error;
        }
    }
}

async fn emulator(b: EmulatorBuilder) -> Emulator {
    b.start().await.unwrap()
}

async fn next_id(sub: &mut Subscription) -> i64 {
    sub.next().await.unwrap().unwrap().replay_id().unwrap()
}

/// Makes the connect after the held one meet `fault`, and returns the failure the client
/// reports for it. The held connect is answered with event `id`; the client goes on and
/// delivers event `id + 1` after the failure.
async fn failure_of_the_next_connect(
    emu: &Emulator,
    client: &Client,
    sub: &mut Subscription,
    fault: Fault,
    id: i64,
) -> sfstream::Error {
    let mut updates = client.state_updates();
    emu.wait_until(|s| s.held_connects == 1).await;
    emu.inject(fault);
    // Wake the held connect so the next one meets the fault.
    emu.publish("/event/A__e", json!({}));
    assert_eq!(next_id(sub).await, id);
    let error = next_failure(&mut updates).await;
    // And the client keeps going.
    emu.publish("/event/A__e", json!({}));
    assert_eq!(next_id(sub).await, id + 1);
    error
}

#[tokio::test]
async fn every_operation_end_to_end() {
    within("operations", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).build().unwrap();
        assert!(client.closed());
        assert_eq!(client.connection_type(), None);
        client.open().await.unwrap();
        assert!(!client.closed());
        assert_eq!(client.connection_type(), Some("long-polling"));

        let channels = [
            "/topic/InvoiceStatementUpdates",
            "/event/Order_Placed__e",
            "/data/AccountChangeEvent",
            "/u/Notifications",
        ];
        let mut subs = Vec::new();
        for ch in channels {
            subs.push(client.subscribe(ch).await.unwrap());
        }
        assert_eq!(client.subscriptions().len(), 4);
        emu.wait_until(|s| s.subscriptions.len() == 4).await;

        emu.publish(channels[0], json!({"Name": "INV-1", "type": "updated"}));
        emu.publish(channels[1], json!({"Amount__c": 249.5}));
        emu.publish(channels[2], json!({"Phone": "(415) 555-1212"}));
        emu.publish(channels[3], json!("hello"));
        for (sub, ch) in subs.iter_mut().zip(channels) {
            let ev = sub.next().await.unwrap().unwrap();
            assert_eq!(ev.channel(), ch);
            assert_eq!(ev.replay_id(), Some(1));
        }

        // Push from the client to a generic channel we are subscribed to, over REST as
        // Salesforce requires (subscribing created the channel: dynamic channel creation).
        let pushed = client
            .push_generic("/u/Notifications", "from the client")
            .await
            .unwrap();
        assert_eq!(pushed.fanout_count, 1);
        let echoed = subs[3].next().await.unwrap().unwrap();
        assert_eq!(
            echoed.data_field::<String>("payload").unwrap(),
            "from the client"
        );
        assert_eq!(echoed.replay_id(), Some(2));
        assert_eq!(emu.stats().rest_events_published, 1);

        // Explicit unsubscribe ends that stream.
        client.unsubscribe("/u/Notifications").await.unwrap();
        assert!(subs[3].next().await.is_none());
        emu.wait_until(|s| !s.subscriptions.contains_key("/u/Notifications"))
            .await;
        assert_eq!(client.subscriptions().len(), 3);

        // Close sends /meta/disconnect and ends every stream.
        client.close().await.unwrap();
        assert_eq!(emu.stats().disconnects, 1);
        assert_eq!(emu.stats().sessions, 0);
        for sub in &mut subs {
            assert!(sub.next().await.is_none());
        }
        assert!(client.closed());
        assert_eq!(
            emu.stats().cookie_failures,
            0,
            "cookies must round-trip byte-exact"
        );
    })
    .await;
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_on_the_server() {
    within("drop", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).connect().await.unwrap();
        let sub = client.subscribe("/event/A__e").await.unwrap();
        emu.wait_until(|s| s.subscriptions.get("/event/A__e") == Some(&1))
            .await;
        drop(sub);
        emu.wait_until(|s| s.unsubscribes == 1 && s.subscriptions.is_empty())
            .await;
        assert!(client.subscriptions().is_empty());
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_disconnects() {
    within("drop all", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).connect().await.unwrap();
        let sub = client.subscribe("/event/A__e").await.unwrap();
        drop(client);
        emu.publish("/event/A__e", json!({}));
        let mut sub = sub;
        assert_eq!(
            next_id(&mut sub).await,
            1,
            "a subscription keeps the connection alive"
        );
        drop(sub);
        emu.wait_until(|s| s.disconnects == 1).await;
    })
    .await;
}

#[tokio::test]
async fn a_stalled_consumer_stops_the_connect_loop_until_it_polls() {
    within("backpressure", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).max_pending_count(5).connect().await.unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        for i in 0..8 {
            emu.publish("/event/A__e", json!({"n": i}));
        }
        wait_state(&client, |s| matches!(s, ConnectionState::Paused { .. })).await;
        let connects = emu.stats().connects;
        assert_eq!(
            emu.stats().held_connects,
            0,
            "no connect may be waiting at the server"
        );
        assert!(client.pending_count() >= 5);
        // The task still handles control traffic while paused.
        // (a CometD publish: rejected, as Salesforce does, but answered).
        let e = client
            .publish("/u/Other", &json!("ping"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Server, "{e}");
        let _second = client.subscribe("/event/B__e").await.unwrap();
        assert_eq!(
            emu.stats().connects,
            connects,
            "a connect went out while paused"
        );
        // Consuming resumes the loop; nothing was lost.
        let mut got = Vec::new();
        for _ in 0..8 {
            got.push(next_id(&mut sub).await);
        }
        assert_eq!(got, (1..=8).collect::<Vec<_>>());
        emu.wait_until(|s| s.connects > connects).await;
    })
    .await;
}

#[tokio::test]
async fn a_pause_longer_than_the_reconnect_window_ends_in_a_resubscribe() {
    within("long pause", async {
        let emu = emulator(Emulator::builder().reconnect_window(Duration::from_secs(40))).await;
        let client = builder(&emu).max_pending_count(2).connect().await.unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        for i in 0..3 {
            emu.publish("/event/A__e", json!({"n": i}));
        }
        wait_state(&client, |s| matches!(s, ConnectionState::Paused { .. })).await;
        // The consumer sleeps through the server's reconnect window.
        emu.advance_clock(Duration::from_secs(60));
        for want in 1..=3 {
            assert_eq!(next_id(&mut sub).await, want);
        }
        emu.wait_until(|s| s.handshakes == 2 && s.subscribes == 2)
            .await;
        emu.publish("/event/A__e", json!({"n": 3}));
        assert_eq!(next_id(&mut sub).await, 4);
        assert_eq!(emu.stats().unknown_client_replies, 1);
    })
    .await;
}

#[tokio::test]
async fn forgotten_session_rehandshakes_and_resubscribes_without_login() {
    within("unknown client", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).connect().await.unwrap();
        let mut a = client.subscribe("/event/A__e").await.unwrap();
        let mut b = client.subscribe("/topic/B").await.unwrap();
        emu.wait_until(|s| s.held_connects == 1).await;
        emu.forget_sessions();
        emu.wait_until(|s| s.handshakes == 2 && s.subscriptions.len() == 2)
            .await;
        emu.publish("/event/A__e", json!({}));
        emu.publish("/topic/B", json!({"Name": "x"}));
        assert_eq!(next_id(&mut a).await, 1);
        assert_eq!(next_id(&mut b).await, 1);
        assert_eq!(
            emu.stats().token_requests,
            0,
            "Unknown client must not log in again"
        );
        // Salesforce's EMP#15 shape: /meta/disconnect, then 403 with reconnect none.
        emu.wait_until(|s| s.held_connects == 1).await;
        emu.disconnect_sessions();
        emu.wait_until(|s| s.handshakes == 3 && s.subscriptions.len() == 2)
            .await;
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut a).await, 2);
    })
    .await;
}

#[tokio::test]
async fn malformed_connect_responses_are_survived() {
    within("malformed connect", async {
        let emu = emulator(Emulator::builder()).await;
        let client = quick(&emu).connect().await.unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        let connect = || Fault::on(Target::Connect);
        let cases = [
            (connect().html(), ErrorKind::Protocol),
            (connect().truncated(), ErrorKind::Protocol),
            (connect().object(), ErrorKind::Protocol),
            (connect().wrong_types(), ErrorKind::Protocol),
            (
                connect().status(503, "Service Unavailable"),
                ErrorKind::Transport,
            ),
            (connect().close(), ErrorKind::Transport),
        ];
        let mut id = 1;
        for (fault, kind) in cases {
            let error = failure_of_the_next_connect(&emu, &client, &mut sub, fault, id).await;
            assert_eq!(error.kind(), kind, "{error}");
            id += 2;
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_control_replies_are_typed_errors() {
    within("malformed control", async {
        let emu = emulator(Emulator::builder()).await;
        // No time to retry a subscribe (see `transient_startup_failures_are_retried`).
        let client = builder(&emu)
            .connection_timeout(Some(Duration::ZERO))
            .connect()
            .await
            .unwrap();
        emu.inject(Fault::on(Target::Subscribe).html());
        let e = client.subscribe("/event/A__e").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.to_string().contains("not JSON"), "{e}");
        emu.inject(Fault::on(Target::Publish).status(500, "oops"));
        let e = client.publish("/u/X", &1).await.unwrap_err();
        assert_eq!((e.kind(), e.status()), (ErrorKind::Transport, Some(500)));
        emu.inject(Fault::on(Target::Subscribe).object());
        let e = client.subscribe("/event/A__e").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        // No fault left: everything works again.
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut sub).await, 1);
    })
    .await;
}

#[tokio::test]
async fn an_oversized_response_is_a_protocol_error_not_a_crash() {
    within("size cap", async {
        let emu = emulator(Emulator::builder()).await;
        let client = quick(&emu)
            .max_response_bytes(16 * 1024)
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        let pad = "x".repeat(32 * 1024);
        let oversized = Fault::on(Target::Connect)
            .body(json!([{"channel": "/meta/connect", "successful": true, "ext": {"pad": pad}}]));
        let error = failure_of_the_next_connect(&emu, &client, &mut sub, oversized, 1).await;
        assert_eq!(error.kind(), ErrorKind::Protocol);
        assert!(error.to_string().contains("16384 byte cap"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn events_of_a_lost_connect_response_are_replayed() {
    within("lost response", async {
        let emu = emulator(Emulator::builder()).await;
        let client = quick(&emu).connect().await.unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut sub).await, 1);
        emu.wait_until(|s| s.held_connects == 1).await;
        emu.inject(Fault::on(Target::Connect).lose_response());
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut sub).await, 2);
        // The next connect takes events 3 and 4 from the server, then the response is lost.
        emu.wait_until(|s| s.held_connects == 1 && s.faults_triggered == 1)
            .await;
        emu.publish("/event/A__e", json!({}));
        emu.publish("/event/A__e", json!({}));
        // A resubscribe from the last delivered replay id (2) brings them back.
        assert_eq!(next_id(&mut sub).await, 3);
        assert_eq!(next_id(&mut sub).await, 4);
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut sub).await, 5, "no duplicates, nothing skipped");
        let stats = emu.stats();
        assert_eq!((stats.handshakes, stats.token_requests), (2, 0));
        let resubscribe = emu
            .received()
            .into_iter()
            .filter(|m| m.channel == "/meta/subscribe")
            .last()
            .unwrap();
        assert_eq!(
            resubscribe.ext_field("replay"),
            Some(&json!({"/event/A__e": 2}))
        );
    })
    .await;
}

#[tokio::test]
async fn a_hanging_connect_is_abandoned_and_the_stream_reports_the_outage() {
    within("hang", async {
        let emu = emulator(Emulator::builder().advice_timeout(Duration::from_millis(200))).await;
        let client = builder(&emu)
            .max_network_delay(Duration::from_millis(200))
            .request_timeout(Duration::from_millis(400))
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .connection_timeout(Some(Duration::from_millis(300)))
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        for _ in 0..3 {
            emu.inject(Fault::on(Target::Connect).hang());
        }
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TransportTimeout, "{e}");
        emu.wait_until(|s| s.faults_triggered == 3 && s.held_connects == 1)
            .await;
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut sub).await, 1);
    })
    .await;
}

#[tokio::test]
async fn connect_reply_first_ordering_is_handled() {
    within("reply first", async {
        let emu = emulator(
            Emulator::builder()
                .connect_reply_first(true)
                .max_batch(Some(7)),
        )
        .await;
        let client = builder(&emu).connect().await.unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        for i in 0..50 {
            emu.publish("/event/A__e", json!({"n": i}));
        }
        for want in 1..=50 {
            assert_eq!(next_id(&mut sub).await, want);
        }
    })
    .await;
}

#[tokio::test]
async fn receive_yields_every_subscription() {
    within("receive", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).connect().await.unwrap();
        client.subscribe("/event/A__e").await.unwrap().detach();
        client.subscribe("/event/B__e").await.unwrap().detach();
        let mut all = client.receive().unwrap();
        emu.publish("/event/A__e", json!({}));
        emu.publish("/event/B__e", json!({}));
        emu.publish("/event/A__e", json!({}));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(all.next().await.unwrap().unwrap().channel().to_owned());
        }
        assert_eq!(got, ["/event/A__e", "/event/B__e", "/event/A__e"]);
        assert!(!client.has_pending_messages());
        client.close().await.unwrap();
        assert!(all.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn open_fails_cleanly_on_a_bad_token_and_unreachable_server() {
    within("bad open", async {
        let emu = emulator(Emulator::builder()).await;
        let url = emu.instance_url().parse().unwrap();
        let client = Client::builder(AccessToken::new("not-a-token", url))
            .api_version(emu.api_version())
            .build()
            .unwrap();
        let e = client.open().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(!e.to_string().contains("not-a-token"));
        assert!(client.closed());
        let port = emu.local_addr().port();
        emu.shutdown().await;
        let url = format!("http://127.0.0.1:{port}").parse().unwrap();
        // Refused connections pass by themselves: retried until `connection_timeout`.
        let e = Client::builder(AccessToken::new("t", url))
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connection_timeout(Some(Duration::from_millis(300)))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert!(e.to_string().contains("no connection within 300ms"), "{e}");
        // Plain http to a non-loopback host is refused before anything is sent.
        let url = "http://example.com".parse().unwrap();
        let e = Client::builder(AccessToken::new("t", url))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client, "{e}");
    })
    .await;
}

#[tokio::test]
async fn duration_max_settings_saturate_instead_of_killing_the_task() {
    within("Duration::MAX settings", async {
        let emu = emulator(Emulator::builder()).await;
        // Every timing knob at its maximum, the backoff still short so the retry shows.
        let client = builder(&emu)
            .request_timeout(Duration::MAX)
            .max_network_delay(Duration::MAX)
            .connection_timeout(Some(Duration::MAX))
            .backoff(Duration::from_millis(10), Duration::MAX)
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        let unavailable = Fault::on(Target::Connect).status(503, "Service Unavailable");
        let error = failure_of_the_next_connect(&emu, &client, &mut sub, unavailable, 1).await;
        assert_eq!(error.status(), Some(503), "{error}");
        assert!(!client.closed());
        client.close().await.unwrap();

        // A backoff of `Duration::MAX` waits "forever" after a failure, without a panic.
        let client = builder(&emu)
            .backoff(Duration::MAX, Duration::MAX)
            .connect()
            .await
            .unwrap();
        let _sub = client.subscribe("/event/A__e").await.unwrap();
        let mut updates = client.state_updates();
        emu.wait_until(|s| s.held_connects == 1).await;
        emu.inject(Fault::on(Target::Connect).status(503, "Service Unavailable"));
        emu.publish("/event/A__e", json!({}));
        let error = next_failure(&mut updates).await;
        assert_eq!(error.status(), Some(503), "{error}");
        assert!(!client.closed());
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn transient_startup_failures_are_retried() {
    within("startup retries", async {
        let emu = emulator(Emulator::builder()).await;
        // A cut handshake response, a 503, a connection dropped on the first connect:
        // connect() rides them out instead of failing on the first blip.
        emu.inject(Fault::on(Target::Handshake).truncated());
        emu.inject(Fault::on(Target::Handshake).status(503, "Service Unavailable"));
        emu.inject(Fault::on(Target::Connect).close());
        let client = quick(&emu).connect().await.unwrap();
        assert_eq!(emu.stats().faults_triggered, 3);
        // A subscribe reply lost after the server took it: subscribe() sends it again
        // (idempotent), and the one server-side subscription has its stream.
        emu.inject(Fault::on(Target::Subscribe).lose_response());
        emu.inject(Fault::on(Target::Subscribe).status(503, "Service Unavailable"));
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        assert_eq!(emu.stats().faults_triggered, 5);
        emu.publish("/event/A__e", json!({}));
        assert_eq!(next_id(&mut sub).await, 1);
        assert_eq!(emu.stats().subscriptions.get("/event/A__e"), Some(&1));
        client.close().await.unwrap();

        // A handshake that never answers times out and is sent again.
        emu.inject(Fault::on(Target::Handshake).hang());
        let client = quick(&emu)
            .request_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        assert_eq!(emu.stats().faults_triggered, 6);
        client.close().await.unwrap();

        // Errors that need a person still fail at once: a refused token.
        let url = emu.instance_url().parse().unwrap();
        let e = Client::builder(AccessToken::new("not-a-token", url))
            .api_version(emu.api_version())
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
    })
    .await;
}

#[tokio::test]
async fn filtered_pushtopic_channels_are_subscribed_and_delivered() {
    within("filtered PushTopic", async {
        let emu = emulator(Emulator::builder()).await;
        let client = builder(&emu).connect().await.unwrap();
        // The forms of Salesforce's "Filtered Subscriptions" guide and EMP-Connector's README.
        let energy = "/topic/MyTopic?Industry='Energy'&ShippingCity='San Francisco'";
        let partners = "/topic/Partners?Type=Technology Partner&Phone=(415) 555-1212";
        let mut energy_sub = client.subscribe(energy).await.unwrap();
        let mut partner_sub = client.subscribe(partners).await.unwrap();
        let sent: Vec<_> = emu
            .received()
            .into_iter()
            .filter(|m| m.channel == "/meta/subscribe")
            .collect();
        // Sent as written; the replay id keyed by the channel without the filter.
        assert_eq!(sent[0].subscription.as_deref(), Some(energy));
        assert_eq!(
            sent[0].ext_field("replay"),
            Some(&json!({"/topic/MyTopic": -1}))
        );
        assert_eq!(sent[1].subscription.as_deref(), Some(partners));
        assert_eq!(
            sent[1].ext_field("replay"),
            Some(&json!({"/topic/Partners": -1}))
        );
        emu.publish(
            "/topic/MyTopic",
            json!({"Industry": "Retail", "ShippingCity": "Boston"}),
        );
        let id = emu.publish(
            "/topic/MyTopic",
            json!({"Industry": "Energy", "ShippingCity": "San Francisco"}),
        );
        let event = energy_sub.next().await.unwrap().unwrap();
        assert_eq!((event.channel(), event.replay_id()), (energy, Some(id)));
        let id = emu.publish(
            "/topic/Partners",
            json!({"Type": "Technology Partner", "Phone": "(415) 555-1212"}),
        );
        let event = partner_sub.next().await.unwrap().unwrap();
        assert_eq!((event.channel(), event.replay_id()), (partners, Some(id)));
        // Still refused: whitespace in the channel itself, meta channels.
        for bad in ["/topic/My Topic?A=b", "/meta/connect?x=1", "topic/T?A=b"] {
            let e = client.subscribe(bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidOperation, "{bad}: {e}");
        }
        client.close().await.unwrap();
    })
    .await;
}

/// Pauses the client with one unread event on `X`, then ends the session while no connect is
/// held and loses the `403::Unknown client` answer to a subscribe of `Y`, whose `Set-Cookie`
/// rotated `sfdc-stream`: the client is left with a session it thinks alive and a stale cookie.
/// Returns the paused subscription, the unread event's replay id and the pending `subscribe(Y)`.
async fn stale_cookie(
    emu: &Emulator,
    client: &Client,
    then: Option<Fault>,
) -> (
    Subscription,
    i64,
    tokio::task::JoinHandle<sfstream::Result<Subscription>>,
) {
    let x = client.subscribe("/event/X__e").await.unwrap();
    let first = emu.publish("/event/X__e", json!({"n": 0}));
    wait_state(client, |s| matches!(s, ConnectionState::Paused { .. })).await;
    assert_eq!(emu.stats().held_connects, 0);
    emu.forget_sessions();
    emu.inject(Fault::on(Target::Subscribe).lose_response());
    let second_fault = then.is_some();
    if let Some(f) = then {
        emu.inject(f);
    }
    let y = tokio::spawn({
        let client = client.clone();
        async move { client.subscribe("/event/Y__e").await }
    });
    emu.wait_until(|s| s.cookie_rotations == 1).await;
    if second_fault {
        // The retried subscribe took the second fault.
        emu.wait_until(|s| s.faults_triggered == 2).await;
    }
    (x, first, y)
}

/// The stale cookie was refused, and cost exactly one new handshake.
fn assert_one_handshake_for_the_stale_cookie(emu: &Emulator) {
    let stats = emu.stats();
    assert!(stats.cookie_failures >= 1, "{stats:?}");
    assert_eq!(stats.handshakes, 2, "{stats:?}");
}

/// A new event on each of `/event/X__e` and `/event/Y__e` reaches its subscription.
async fn both_stream_on(emu: &Emulator, x: &mut Subscription, y: &mut Subscription) {
    let (a, b) = (
        emu.publish("/event/X__e", json!({"n": 1})),
        emu.publish("/event/Y__e", json!({"n": 2})),
    );
    assert_eq!(next_id(x).await, a);
    assert_eq!(next_id(y).await, b);
}

#[tokio::test]
async fn a_subscribe_refused_for_a_stale_cookie_handshakes_again_with_a_cleared_jar() {
    within("stale cookie on subscribe", async {
        let emu = emulator(Emulator::builder()).await;
        let client = quick(&emu).max_pending_count(1).connect().await.unwrap();
        let (mut x, first, y) = stale_cookie(&emu, &client, None).await;
        // The retried subscribe carries the stale cookie: HTTP 400 `no BAYEUX_BROWSER cookie
        // present`, which only a new handshake (with new cookies) gets past.
        let mut y = y.await.unwrap().expect("subscribe after a stale cookie");
        assert_one_handshake_for_the_stale_cookie(&emu);
        assert_eq!(next_id(&mut x).await, first);
        both_stream_on(&emu, &mut x, &mut y).await;
    })
    .await;
}

#[tokio::test]
async fn a_connect_refused_for_a_stale_cookie_handshakes_again_with_a_cleared_jar() {
    within("stale cookie on connect", async {
        let emu = emulator(Emulator::builder()).await;
        // The retried subscribe hangs for longer than this test may last: only the connect can
        // run into the stale cookie.
        let client = quick(&emu)
            .max_pending_count(1)
            .request_timeout(Duration::from_secs(600))
            .connect()
            .await
            .unwrap();
        let hang = Fault::on(Target::Subscribe).hang();
        let (mut x, first, y) = stale_cookie(&emu, &client, Some(hang)).await;
        // Room again: the connect goes out with the stale cookie and gets HTTP 400.
        assert_eq!(next_id(&mut x).await, first);
        let mut y = y.await.unwrap().expect("subscribe after a stale cookie");
        assert_one_handshake_for_the_stale_cookie(&emu);
        both_stream_on(&emu, &mut x, &mut y).await;
    })
    .await;
}
