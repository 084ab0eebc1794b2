//! The connection task against a scripted server (see `common::mock`): exact wire behaviour,
//! deterministic, no sockets.

mod common;

use common::mock::{client, client_builder, event, open, open_with, subscribe};
use common::{within, within_virtual};
use futures::StreamExt;
use serde_json::json;
use sfstream::{ConnectionState, ErrorKind};
use std::time::Duration;

#[tokio::test]
async fn handshake_and_first_connect_match_salesforce() {
    within("open", async {
        let (client, mut server) = client(10);
        let c = client.clone();
        let opening = tokio::spawn(async move { c.open().await });
        let h = server.next_on("/meta/handshake").await;
        let m = h.message().clone();
        assert_eq!(m.version.as_deref(), Some("1.0"));
        assert_eq!(
            m.supported_connection_types,
            Some(vec!["long-polling".to_string()])
        );
        assert_eq!(
            h.request.url.as_ref().map(|u| u.as_str()),
            Some("https://example.my.salesforce.com/cometd/66.0")
        );
        let auth = h.request.headers.get("authorization").unwrap();
        assert_eq!(auth.to_str().unwrap(), "Bearer test-token");
        assert!(auth.is_sensitive());
        h.ok();
        let c1 = server.next_on("/meta/connect").await;
        let m = c1.message().clone();
        assert_eq!(m.client_id.as_deref(), Some("cid-1"));
        assert_eq!(m.connection_type.as_deref(), Some("long-polling"));
        assert_eq!(m.advice.as_ref().and_then(|a| a.timeout), Some(0));
        c1.ok();
        opening.await.unwrap().unwrap();
        assert!(!client.closed());
        assert_eq!(client.connection_type(), Some("long-polling"));
        // The long poll: no advice, waits advice.timeout (110 s) + network delay (15 s).
        let c2 = server.next_on("/meta/connect").await;
        assert!(c2.message().advice.is_none());
        assert_eq!(c2.request.timeout, Duration::from_secs(125));
    })
    .await;
}

#[tokio::test]
async fn connect_reply_anywhere_in_the_batch_and_numeric_ids() {
    within("batch order", async {
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/event/A__e").await;
        // Reply first, then events; the id comes back as a number.
        let c = server.next_on("/meta/connect").await;
        let id: u64 = c.id().parse().unwrap();
        c.reply(json!([
            {"channel": "/meta/connect", "id": id, "successful": true},
            event("/event/A__e", 1),
            event("/event/A__e", 2),
        ]));
        // Events, reply in the middle, events.
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([
            event("/event/A__e", 3),
            {"channel": "/meta/connect", "id": "$id", "successful": true},
            event("/event/A__e", 4),
        ]));
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(sub.next().await.unwrap().unwrap().replay_id().unwrap());
        }
        assert_eq!(got, vec![1, 2, 3, 4]);
        // A stale connect reply with another id is ignored: the loop goes on.
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([
            {"channel": "/meta/connect", "id": "999", "successful": false, "error": "403::Unknown client"},
            {"channel": "/meta/connect", "id": "$id", "successful": true},
        ]));
        server.next_on("/meta/connect").await;
        assert!(client.state().is_connected());
    })
    .await;
}

#[tokio::test]
async fn events_in_subscribe_and_publish_replies_are_delivered() {
    within("events in control replies", async {
        let (client, mut server) = open(0).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe("/topic/T").await });
        let s = server.next_on("/meta/subscribe").await;
        // A replay backlog riding on the subscribe response, before the reply itself.
        s.ok_with(vec![event("/topic/T", 10), event("/topic/T", 11)]);
        let mut sub = pending.await.unwrap().unwrap();
        let c = client.clone();
        let publishing = tokio::spawn(async move { c.publish("/u/Chan", &json!({"x": 1})).await });
        let p = server.next_on("/u/Chan").await;
        assert_eq!(p.message().data.as_ref().unwrap().get(), r#"{"x":1}"#);
        p.ok_with(vec![event("/topic/T", 12)]);
        let reply = publishing.await.unwrap().unwrap();
        assert!(reply.is_successful());
        for want in [10, 11, 12] {
            assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(want));
        }
    })
    .await;
}

#[tokio::test]
async fn backpressure_holds_the_connect_but_never_the_replies() {
    within("backpressure", async {
        let (client, mut server) = open(3).await;
        let mut sub = subscribe(&client, &mut server, "/event/A__e").await;
        let mut states = client.state_updates();
        // One response with more events than the limit.
        let c = server.next_on("/meta/connect").await;
        c.ok_with((1..=5).map(|i| event("/event/A__e", i)).collect());
        loop {
            if let Some(ConnectionState::Paused { pending }) = states.next().await {
                assert_eq!(pending, 5);
                break;
            }
        }
        assert_eq!(client.pending_count(), 5);
        assert!(client.has_pending_messages());
        // Paused: control requests still go out and their replies are handled.
        let c2 = client.clone();
        let sub2 = tokio::spawn(async move { c2.subscribe("/event/B__e").await });
        server
            .next_on("/meta/subscribe")
            .await
            .ok_with(vec![event("/event/B__e", 1)]);
        let _sub2 = sub2.await.unwrap().unwrap();
        assert!(
            !server.has_waiting("/meta/connect"),
            "connect sent while over the limit"
        );
        // Taking events: 6 pending (5 + 1 on B); the connect resumes only below 3.
        for want in 1..=3 {
            assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(want));
            assert!(!server.has_waiting("/meta/connect"));
        }
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(4));
        // pending is now 2 (< 3): the next connect goes out.
        server.next_on("/meta/connect").await;
        assert_eq!(client.pending_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn unknown_client_rehandshakes_and_resubscribes_with_the_same_token() {
    within("unknown client", async {
        let (client, mut server) = open(0).await;
        let mut a = subscribe(&client, &mut server, "/event/A__e").await;
        let _b = subscribe(&client, &mut server, "/topic/B").await;
        for error in [
            "403::Unknown client",
            "402::Unknown client",
            "401:cid-1:Unknown client",
        ] {
            let c = server.next_on("/meta/connect").await;
            c.reply(
                json!([{"channel": "/meta/connect", "id": "$id", "successful": false,
                "error": error, "advice": {"reconnect": "handshake", "interval": 0}}]),
            );
            let h = server.next_on("/meta/handshake").await;
            assert_eq!(
                h.request
                    .headers
                    .get("authorization")
                    .unwrap()
                    .to_str()
                    .unwrap(),
                "Bearer test-token"
            );
            h.ok();
            let mut resubscribed = vec![
                server.next_on("/meta/subscribe").await,
                server.next_on("/meta/subscribe").await,
            ];
            resubscribed.sort_by_key(|e| e.message().subscription.clone());
            let channels: Vec<_> = resubscribed
                .iter()
                .map(|e| e.message().subscription.clone().unwrap())
                .collect();
            assert_eq!(channels, vec!["/event/A__e", "/topic/B"], "after {error}");
            for s in resubscribed {
                s.ok();
            }
            let first = server.next_on("/meta/connect").await;
            assert_eq!(
                first.message().advice.as_ref().and_then(|a| a.timeout),
                Some(0)
            );
            first.ok_with(vec![event("/event/A__e", 7)]);
            assert_eq!(a.next().await.unwrap().unwrap().replay_id(), Some(7));
        }
    })
    .await;
}

#[tokio::test]
async fn server_disconnect_then_reconnect_none_rehandshakes() {
    within("server disconnect", async {
        let (client, mut server) = open(0).await;
        let _a = subscribe(&client, &mut server, "/event/A__e").await;
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([{"channel": "/meta/disconnect"},
            {"channel": "/meta/connect", "id": "$id", "successful": false,
             "error": "403::Unknown client", "advice": {"reconnect": "none"}}]));
        server.next_on("/meta/handshake").await.ok();
        server.next_on("/meta/subscribe").await.ok();
        server.next_on("/meta/connect").await.ok();
        assert!(!client.closed());
    })
    .await;
}

#[tokio::test]
async fn malformed_replies_are_typed_errors_and_the_client_keeps_going() {
    within("malformed", async {
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/event/A__e").await;
        // A wrong field type on one event: that element becomes an error on its subscription,
        // the rest of the batch is delivered.
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([
            event("/event/A__e", 1),
            {"channel": "/event/A__e", "data": {}, "successful": "yes"},
            event("/event/A__e", 2),
            {"channel": "/meta/connect", "id": "$id", "successful": true},
        ]));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(1));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(2));
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        // A publish whose reply is an HTML page: a typed error for that call.
        let c = client.clone();
        let publishing = tokio::spawn(async move { c.publish("/u/X", &1).await });
        let p = server.next_on("/u/X").await;
        let html = sfstream::bayeux::parse_batch(bytes::Bytes::from_static(b"<html>down</html>"))
            .unwrap_err();
        p.fail(html);
        let e = publishing.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        // A connect whose reply has a wrong type: the loop retries and events keep flowing.
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([{"channel": "/meta/connect", "id": "$id", "successful": "true"}]));
        let c = server.next_on("/meta/connect").await;
        c.ok_with(vec![event("/event/A__e", 3)]);
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(3));
    })
    .await;
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_and_close_disconnects() {
    within("drop and close", async {
        let (client, mut server) = open(0).await;
        let sub = subscribe(&client, &mut server, "/event/A__e").await;
        assert_eq!(
            client.subscriptions().into_iter().collect::<Vec<_>>(),
            vec!["/event/A__e"]
        );
        drop(sub);
        let u = server.next_on("/meta/unsubscribe").await;
        assert_eq!(u.message().subscription.as_deref(), Some("/event/A__e"));
        u.ok();
        assert!(client.subscriptions().is_empty());
        // The same channel can be subscribed again right away.
        let sub = subscribe(&client, &mut server, "/event/A__e").await;
        let c = client.clone();
        let closing = tokio::spawn(async move { c.close().await });
        let d = server.next_on("/meta/disconnect").await;
        assert_eq!(d.message().client_id.as_deref(), Some("cid-1"));
        d.ok();
        closing.await.unwrap().unwrap();
        assert!(client.closed());
        assert!(matches!(client.state(), ConnectionState::Closed));
        let mut sub = sub;
        assert!(sub.next().await.is_none(), "streams end on close");
        let e = client.subscribe("/event/B__e").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        // Reopen works.
        server.clear();
        open_with(&client, &mut server).await;
        assert!(!client.closed());
    })
    .await;
}

#[tokio::test]
async fn open_twice_duplicate_subscribe_and_bad_channels_are_invalid_operations() {
    within("invalid operations", async {
        let (client, mut server) = open(0).await;
        assert_eq!(
            client.open().await.unwrap_err().kind(),
            ErrorKind::InvalidOperation
        );
        let _a = subscribe(&client, &mut server, "/event/A__e").await;
        assert_eq!(
            client.subscribe("/event/A__e").await.unwrap_err().kind(),
            ErrorKind::InvalidOperation
        );
        for bad in ["", "event", "/meta/connect", "/event/A B"] {
            assert_eq!(
                client.subscribe(bad).await.unwrap_err().kind(),
                ErrorKind::InvalidOperation,
                "{bad}"
            );
        }
        assert_eq!(
            client.unsubscribe("/event/Nope").await.unwrap_err().kind(),
            ErrorKind::InvalidOperation
        );
    })
    .await;
}

#[tokio::test]
async fn a_rejected_subscribe_is_a_server_error_with_advice() {
    within("rejected subscribe", async {
        let (client, mut server) = open(0).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe("/event/Nope__e").await });
        let s = server.next_on("/meta/subscribe").await;
        s.reply(json!([{"channel": "/meta/subscribe", "id": "$id", "successful": false,
            "error": "400::The channel you requested to subscribe to does not exist {/event/Nope__e}",
            "advice": {"reconnect": "none"}}]));
        let e = pending.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Server);
        assert_eq!(e.server_error().unwrap().code, Some(400));
        assert!(e.advice().is_some());
        assert!(client.subscriptions().is_empty());
    })
    .await;
}

#[tokio::test]
async fn receive_merges_every_subscription_in_arrival_order() {
    within("receive", async {
        let (client, mut server) = open(0).await;
        subscribe(&client, &mut server, "/event/A__e")
            .await
            .detach();
        subscribe(&client, &mut server, "/event/B__e")
            .await
            .detach();
        let mut all = client.receive().unwrap();
        let c = server.next_on("/meta/connect").await;
        c.ok_with(vec![
            event("/event/B__e", 1),
            event("/event/A__e", 2),
            event("/event/B__e", 3),
        ]);
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = all.next().await.unwrap().unwrap();
            got.push((e.channel().to_owned(), e.replay_id().unwrap()));
        }
        assert_eq!(
            got,
            vec![
                ("/event/B__e".into(), 1),
                ("/event/A__e".into(), 2),
                ("/event/B__e".into(), 3)
            ]
        );
        // Detached subscriptions end through the client.
        let c = client.clone();
        let unsub = tokio::spawn(async move { c.unsubscribe("/event/A__e").await });
        server.next_on("/meta/unsubscribe").await.ok();
        unsub.await.unwrap().unwrap();
        assert_eq!(client.subscriptions().len(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_linearly_and_report_a_timeout() {
    within_virtual("backoff", async {
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/event/A__e").await;
        let mut gaps = Vec::new();
        let mut last = tokio::time::Instant::now();
        for _ in 0..4 {
            let c = server.next_on("/meta/connect").await;
            let now = tokio::time::Instant::now();
            gaps.push((now - last).as_secs());
            last = now;
            c.reply(
                json!([{"channel": "/meta/connect", "id": "$id", "successful": false,
                "error": "500::Internal error", "advice": {"reconnect": "retry", "interval": 0}}]),
            );
        }
        assert_eq!(gaps, vec![0, 1, 2, 3]);
        // 10 s (connection_timeout) into the outage every stream hears about it once.
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::Server,
            "the first server rejection is reported"
        );
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TransportTimeout);
        // Recovery resets the backoff.
        server.next_on("/meta/connect").await.ok();
        let before = tokio::time::Instant::now();
        server.next_on("/meta/connect").await;
        assert_eq!((tokio::time::Instant::now() - before).as_secs(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_failed_open_leaves_the_client_closed() {
    within("failed open", async {
        let (client, mut server) = client(0);
        let c = client.clone();
        let opening = tokio::spawn(async move { c.open().await });
        let h = server.next_on("/meta/handshake").await;
        h.reply(
            json!([{"channel": "/meta/handshake", "id": "$id", "successful": false,
            "error": "403::Handshake denied", "advice": {"reconnect": "none"},
            "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}}}]),
        );
        // The auth layer tries once more after "refreshing"; a ready token cannot refresh.
        let e = opening.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(client.closed());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_connect_that_never_answers_is_abandoned_by_the_watchdog() {
    within_virtual("watchdog", async {
        let (client, mut server) = open(0).await;
        let _sub = subscribe(&client, &mut server, "/event/A__e").await;
        let silent = server.next_on("/meta/connect").await;
        let started = tokio::time::Instant::now();
        // Never answered: after advice timeout (110 s) + network delay (15 s) the client gives
        // up on it and, after one backoff step, handshakes again (the server announced replay,
        // so a resubscribe brings back whatever the lost response carried).
        let next = server.next_on("/meta/handshake").await;
        let waited = tokio::time::Instant::now() - started;
        assert_eq!(waited.as_secs(), 125 + 1, "{waited:?}");
        drop(silent);
        next.ok();
        assert!(!client.closed());
    })
    .await;
}

#[tokio::test]
async fn a_missing_replay_map_entry_is_a_replay_error_or_falls_back() {
    within("replay map", async {
        let missing = "400::The replayId for channel {/data/ChangeEvents} wasn't found using the provided replay ID map {{}}.";
        // Without a fallback: a typed Replay error.
        let (client, mut server) = open(0).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe("/data/ChangeEvents").await });
        let s = server.next_on("/meta/subscribe").await;
        assert_eq!(s.message().ext_field("replay"), Some(&json!({"/data/ChangeEvents": -1})));
        s.reply(json!([{"channel": "/meta/subscribe", "id": "$id", "successful": false, "error": missing}]));
        let e = pending.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay, "{e}");

        // With a fallback: subscribed again with it, and the stream says so first.
        let (builder, mut server) = client_builder();
        let client = builder
            .replay_fallback(sfstream::replay::ReplayOption::AllEvents)
            .build()
            .unwrap();
        open_with(&client, &mut server).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe_from("/data/ChangeEvents", 42).await });
        let s = server.next_on("/meta/subscribe").await;
        assert_eq!(s.message().ext_field("replay"), Some(&json!({"/data/ChangeEvents": 42})));
        s.reply(json!([{"channel": "/meta/subscribe", "id": "$id", "successful": false, "error": missing}]));
        let retry = server.next_on("/meta/subscribe").await;
        assert_eq!(retry.message().ext_field("replay"), Some(&json!({"/data/ChangeEvents": -2})));
        retry.ok_with(vec![event("/data/ChangeEvents", 50)]);
        let mut sub = pending.await.unwrap().unwrap();
        let notice = sub.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::ReplayGap);
        assert_eq!(notice.replay_gap_info().unwrap().rejected_id, Some(42));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(50));
    })
    .await;
}

#[tokio::test]
async fn events_without_replay_ids_are_delivered_not_lost() {
    within("no replay id", async {
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/u/Custom").await;
        let c = server.next_on("/meta/connect").await;
        c.ok_with(vec![
            json!({"channel": "/u/Custom", "data": {"anything": true}}),
            json!({"channel": "/u/Custom", "data": "text"}),
        ]);
        let a = sub.next().await.unwrap().unwrap();
        assert_eq!(a.replay_id(), None);
        assert_eq!(sub.next().await.unwrap().unwrap().data().get(), "\"text\"");
    })
    .await;
}

#[tokio::test]
async fn an_event_echoing_a_pending_request_id_is_still_an_event() {
    within("echoed id", async {
        // Faye delivers a published message with the publisher's id; ids of different clients
        // collide too. Only `successful` marks a reply.
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/u/Chat").await;
        let c = client.clone();
        let publishing = tokio::spawn(async move { c.publish("/u/Chat", &json!("hi")).await });
        let p = server.next_on("/u/Chat").await;
        let id = p.id();
        let connect = server.next_on("/meta/connect").await;
        connect.ok_with(vec![json!({"channel": "/u/Chat", "id": id, "data": "hi"})]);
        let echoed = sub.next().await.unwrap().unwrap();
        assert_eq!(echoed.data().get(), "\"hi\"");
        p.ok();
        assert!(publishing.await.unwrap().unwrap().is_successful());
    })
    .await;
}

#[tokio::test]
async fn an_unsubscribed_queue_no_longer_holds_back_the_connect() {
    within("unsubscribe frees the queue", async {
        let (client, mut server) = open(2).await;
        let sub = subscribe(&client, &mut server, "/event/A__e").await;
        let c = server.next_on("/meta/connect").await;
        c.ok_with(vec![event("/event/A__e", 1), event("/event/A__e", 2)]);
        let c = client.clone();
        let unsubscribing = tokio::spawn(async move { sub.unsubscribe().await });
        server.next_on("/meta/unsubscribe").await.ok();
        unsubscribing.await.unwrap().unwrap();
        // The two untaken events went with the subscription: the long poll resumes.
        server.next_on("/meta/connect").await;
        assert_eq!(c.pending_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_subscribe_reply_from_a_lost_session_does_not_skip_the_resubscribe() {
    within("stale subscribe reply", async {
        let (client, mut server) = open(0).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe("/event/A__e").await });
        let old_subscribe = server.next_on("/meta/subscribe").await;
        // The session is lost while the subscribe is in flight...
        let connect = server.next_on("/meta/connect").await;
        connect.unknown_client();
        let handshake = server.next_on("/meta/handshake").await;
        // ...and its reply arrives before the new handshake is done.
        old_subscribe.ok();
        handshake.ok();
        let again = server.next_on("/meta/subscribe").await;
        assert_eq!(again.message().subscription.as_deref(), Some("/event/A__e"));
        again.ok();
        pending.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_publish_rejected_by_a_lost_session_is_sent_again() {
    within("stale publish reply", async {
        let (client, mut server) = open(0).await;
        let _s = subscribe(&client, &mut server, "/event/A__e").await;
        let c = client.clone();
        let publishing = tokio::spawn(async move { c.publish("/u/X", &1).await });
        let old_publish = server.next_on("/u/X").await;
        let connect = server.next_on("/meta/connect").await;
        connect.unknown_client();
        server.next_on("/meta/handshake").await.ok();
        server.next_on("/meta/subscribe").await.ok();
        // The old session's answer to the publish comes in the new session.
        old_publish.reply(json!([{"channel": "/u/X", "id": "$id", "successful": false,
            "error": "403::Unknown client"}]));
        let resent = server.next_on("/u/X").await;
        resent.ok();
        assert!(publishing.await.unwrap().unwrap().is_successful());
    })
    .await;
}

#[tokio::test]
async fn a_dropped_subscribe_does_not_unsubscribe_its_successor() {
    within("drop while subscribing", async {
        let (client, mut server) = open(0).await;
        let c = client.clone();
        let first = tokio::spawn(async move { c.subscribe("/event/A__e").await });
        let first_subscribe = server.next_on("/meta/subscribe").await;
        first.abort(); // the subscribe() future is dropped while the request is in flight
        let _ = first.await;
        let c = client.clone();
        let second = tokio::spawn(async move { c.subscribe("/event/A__e").await });
        let second_subscribe = server.next_on("/meta/subscribe").await;
        first_subscribe.ok();
        second_subscribe.ok();
        let _sub = second.await.unwrap().unwrap();
        assert!(
            !server.has_waiting("/meta/unsubscribe"),
            "the live subscription was undone"
        );
        assert_eq!(client.subscriptions().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_then_subscribe_reach_the_server_in_that_order() {
    within("unsubscribe then subscribe", async {
        let (client, mut server) = open(0).await;
        let sub = subscribe(&client, &mut server, "/event/A__e").await;
        drop(sub);
        let c = client.clone();
        let again = tokio::spawn(async move { c.subscribe("/event/A__e").await });
        let unsubscribe = server.next_on("/meta/unsubscribe").await;
        // The new subscribe waits for the unsubscribe's answer.
        tokio::task::yield_now().await;
        assert!(!server.has_waiting("/meta/subscribe"));
        unsubscribe.ok();
        server.next_on("/meta/subscribe").await.ok();
        again.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn org_limits_are_reported_and_retried_with_backoff() {
    within_virtual("org limits", async {
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/event/A__e").await;
        // The daily delivery allocation is used up: no advice, the connect is refused.
        let c = server.next_on("/meta/connect").await;
        c.reply(
            json!([{"channel": "/meta/connect", "id": "$id", "successful": false,
            "error": "403::Organization total events daily limit exceeded"}]),
        );
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Server);
        assert!(e.to_string().contains("daily limit"), "{e}");
        // Retried after a backoff, not in a tight loop.
        let before = tokio::time::Instant::now();
        let c = server.next_on("/meta/connect").await;
        assert!(tokio::time::Instant::now() - before >= Duration::from_secs(1));
        // A handshake storm would hit the concurrent-client limit: the rehandshake after a
        // lost session backs off too, and the session recovers once the limit clears.
        c.unknown_client();
        let h = server.next_on("/meta/handshake").await;
        h.reply(
            json!([{"channel": "/meta/handshake", "id": "$id", "successful": false,
            "error": "403::Organization concurrent user limit exceeded"}]),
        );
        let before = tokio::time::Instant::now();
        let h = server.next_on("/meta/handshake").await;
        assert!(tokio::time::Instant::now() - before >= Duration::from_secs(1));
        h.ok();
        server.next_on("/meta/subscribe").await.ok();
        server
            .next_on("/meta/connect")
            .await
            .ok_with(vec![event("/event/A__e", 9)]);
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(9));
    })
    .await;
}

#[tokio::test]
async fn a_session_of_another_user_is_replaced_by_a_fresh_handshake() {
    within("user id mismatch", async {
        let (client, mut server) = open(0).await;
        let _sub = subscribe(&client, &mut server, "/event/A__e").await;
        let c = server.next_on("/meta/connect").await;
        c.reply(
            json!([{"channel": "/meta/connect", "id": "$id", "successful": false,
            "error": "400::Authenticated user id does not match the session's user id",
            "advice": {"reconnect": "none"}}]),
        );
        server.next_on("/meta/handshake").await.ok();
        server.next_on("/meta/subscribe").await.ok();
        server.next_on("/meta/connect").await.ok();
        assert!(!client.closed());
    })
    .await;
}

#[tokio::test]
async fn state_updates_start_before_open_and_survive_a_reopen() {
    within("state updates", async {
        let (client, mut server) = client(0);
        let mut updates = client.state_updates();
        assert_eq!(updates.next().await, Some(ConnectionState::Closed));
        open_with(&client, &mut server).await;
        assert_eq!(updates.next().await, Some(ConnectionState::Handshaking));
        assert_eq!(updates.next().await, Some(ConnectionState::Connected));
        let c = client.clone();
        let closing = tokio::spawn(async move { c.close().await });
        server.next_on("/meta/disconnect").await.ok();
        closing.await.unwrap().unwrap();
        assert_eq!(updates.next().await, Some(ConnectionState::Closed));
        server.clear();
        open_with(&client, &mut server).await;
        assert_eq!(updates.next().await, Some(ConnectionState::Handshaking));
        assert_eq!(updates.next().await, Some(ConnectionState::Connected));
    })
    .await;
}

#[tokio::test]
async fn receive_takes_only_detached_subscriptions() {
    within("receive vs subscription", async {
        let (client, mut server) = open(0).await;
        let mut kept = subscribe(&client, &mut server, "/event/A__e").await;
        subscribe(&client, &mut server, "/event/B__e")
            .await
            .detach();
        let mut all = client.receive().unwrap();
        let c = server.next_on("/meta/connect").await;
        c.ok_with(vec![
            event("/event/A__e", 1),
            event("/event/B__e", 2),
            event("/event/A__e", 3),
        ]);
        let e = all.next().await.unwrap().unwrap();
        assert_eq!((e.channel(), e.replay_id()), ("/event/B__e", Some(2)));
        assert_eq!(kept.next().await.unwrap().unwrap().replay_id(), Some(1));
        assert_eq!(kept.next().await.unwrap().unwrap().replay_id(), Some(3));
    })
    .await;
}

#[tokio::test]
async fn ext_replay_on_subscribe_only_when_the_handshake_announced_it() {
    within("replay only when announced", async {
        let (client, mut server) = client(10);
        let c = client.clone();
        let opening = tokio::spawn(async move { c.open().await });
        let h = server.next_on("/meta/handshake").await;
        assert_eq!(h.message().ext_field("replay"), Some(&json!(true)));
        // A plain Bayeux handshake reply: no `ext.replay`.
        h.reply(
            json!([{"channel": "/meta/handshake", "id": "$id", "successful": true,
            "clientId": "cid-1", "supportedConnectionTypes": ["long-polling"], "version": "1.0"}]),
        );
        server.next_on("/meta/connect").await.ok();
        opening.await.unwrap().unwrap();
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe("/event/A__e").await });
        let s = server.next_on("/meta/subscribe").await;
        assert_eq!(s.message().ext_field("replay"), None);
        s.ok();
        let _sub = pending.await.unwrap().unwrap();
        // After a handshake that announces replay (as Salesforce does), subscribes carry it.
        server.next_on("/meta/connect").await.unknown_client();
        server.next_on("/meta/handshake").await.ok();
        let s = server.next_on("/meta/subscribe").await;
        assert_eq!(
            s.message().ext_field("replay"),
            Some(&json!({"/event/A__e": -1}))
        );
        s.ok();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_org_limit_on_an_automatic_resubscribe_is_retried_and_reported() {
    within_virtual("org limit on resubscribe", async {
        let (client, mut server) = open(0).await;
        let mut sub = subscribe(&client, &mut server, "/event/A__e").await;
        let limit = json!([{"channel": "/meta/subscribe", "id": "$id", "successful": false,
            "subscription": "/event/A__e",
            "error": "403::Organization total events daily limit exceeded"}]);
        // A routine rehandshake; the automatic resubscribe meets the org limit twice.
        server.next_on("/meta/connect").await.unknown_client();
        server.next_on("/meta/handshake").await.ok();
        server.next_on("/meta/subscribe").await.reply(limit.clone());
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Server, "{e}");
        assert!(e.to_string().contains("daily limit exceeded"), "{e}");
        let started = tokio::time::Instant::now();
        server.next_on("/meta/subscribe").await.reply(limit);
        let s = server.next_on("/meta/subscribe").await;
        // The capped backoff: 1 s, then 2 s.
        assert_eq!(
            tokio::time::Instant::now() - started,
            Duration::from_secs(3)
        );
        s.ok();
        // The stream goes on: no second report, the next event arrives.
        server
            .next_on("/meta/connect")
            .await
            .ok_with(vec![event("/event/A__e", 7)]);
        let ev = sub.next().await.unwrap().unwrap();
        assert_eq!(ev.replay_id(), Some(7));
        assert!(!client.closed());
    })
    .await;
}

#[tokio::test]
async fn filtered_subscription_events_on_the_filtered_and_the_bare_name_reach_the_stream() {
    within("filtered routing", async {
        let (client, mut server) = open(0).await;
        let filtered = "/topic/MyTopic?Industry='Energy'&ShippingCity='San Francisco'";
        let mut sub = subscribe(&client, &mut server, filtered).await;
        server.next_on("/meta/connect").await.ok_with(vec![
            event(filtered, 1),
            event("/topic/MyTopic", 2),
            event("/topic/Other", 3),
        ]);
        for id in [1, 2] {
            let ev = sub.next().await.unwrap().unwrap();
            assert_eq!(ev.replay_id(), Some(id));
        }
        server
            .next_on("/meta/connect")
            .await
            .ok_with(vec![event(filtered, 4)]);
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(4));
    })
    .await;
}

/// Salesforce may deliver a PushTopic filter's event on the topic's name (the router accepts
/// both). Under `OnReceive` its marker must be stored under the filter's name: stored under the
/// topic's it would move the unfiltered subscription's marker past events it never processed.
#[tokio::test]
async fn under_on_receive_a_filter_s_event_on_the_base_channel_is_stored_under_the_filter_s_name() {
    use sfstream::replay::{CommitPolicy, MappingStorage, ReplayOption};
    const TOPIC: &str = "/topic/T";
    const FILTER: &str = "/topic/T?Region='EU'";
    within("filter marker", async {
        let storage = MappingStorage::new();
        let (builder, mut server) = client_builder();
        let client = builder
            .replay(ReplayOption::AllEvents)
            .replay_storage(storage.clone())
            .commit_policy(CommitPolicy::OnReceive)
            .build()
            .unwrap();
        open_with(&client, &mut server).await;
        let mut sub = subscribe(&client, &mut server, FILTER).await;
        let connect = server.next_on("/meta/connect").await;
        connect.ok_with(vec![json!({"channel": TOPIC,
            "data": {"event": {"replayId": 7}, "payload": {"n": 7}}})]);
        let event = sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(7));
        let closing = {
            let c = client.clone();
            tokio::spawn(async move { c.close().await })
        };
        // Answer the close's disconnect, if it sends one.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            server.next_on("/meta/disconnect").await.ok()
        })
        .await;
        closing.await.unwrap().unwrap();
        let stored = |k: &str| storage.map().lock().unwrap().get(k).map(|m| m.replay_id);
        assert_eq!(
            stored(TOPIC),
            None,
            "the topic's marker moved with a filter's event"
        );
        assert_eq!(stored(FILTER), Some(7), "the filter's own marker");
    })
    .await;
}

/// Close `client`, answering the close's disconnect if it sends one.
async fn close_answering(client: &sfstream::Client, server: &mut common::mock::MockServer) {
    let closing = {
        let c = client.clone();
        tokio::spawn(async move { c.close().await })
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        server.next_on("/meta/disconnect").await.ok()
    })
    .await;
    closing.await.unwrap().unwrap();
}

/// A client on a scripted server storing markers in the returned map under `policy`, with a
/// detached subscription of `FILTER` whose event 7 came on its topic's name.
async fn detached_filter_event_on_the_topic_name(
    policy: sfstream::replay::CommitPolicy,
) -> (
    sfstream::Client,
    common::mock::MockServer,
    sfstream::replay::MappingStorage,
) {
    use sfstream::replay::{MappingStorage, ReplayOption};
    let storage = MappingStorage::new();
    let (builder, mut server) = client_builder();
    let client = builder
        .replay(ReplayOption::AllEvents)
        .replay_storage(storage.clone())
        .commit_policy(policy)
        .build()
        .unwrap();
    open_with(&client, &mut server).await;
    subscribe(&client, &mut server, "/topic/T?Region='EU'")
        .await
        .detach();
    server
        .next_on("/meta/connect")
        .await
        .ok_with(vec![event("/topic/T", 7)]);
    (client, server, storage)
}

fn stored(storage: &sfstream::replay::MappingStorage, key: &str) -> Option<i64> {
    storage.map().lock().unwrap().get(key).map(|m| m.replay_id)
}

/// `receive()` reads every detached subscription: under `OnReceive`, a PushTopic filter's event
/// that came on its topic's name must be stored under the filter's name, as on the filter's own
/// stream; under the topic's it would move the unfiltered subscription past events it never
/// processed.
#[tokio::test]
async fn a_detached_filter_read_through_receive_stores_its_marker_under_the_filter_name_on_receive()
{
    use sfstream::replay::CommitPolicy;
    within("detached filter marker", async {
        let (client, mut server, storage) =
            detached_filter_event_on_the_topic_name(CommitPolicy::OnReceive).await;
        let mut all = client.receive().unwrap();
        let event = all.next().await.unwrap().unwrap();
        assert_eq!((event.channel(), event.replay_id()), ("/topic/T", Some(7)));
        close_answering(&client, &mut server).await;
        assert_eq!(
            stored(&storage, "/topic/T"),
            None,
            "the topic's marker moved with a filter's event"
        );
        assert_eq!(stored(&storage, "/topic/T?Region='EU'"), Some(7));
    })
    .await;
}

/// The same through `receive()` when processing is tracked: the ack (explicit under `Manual`,
/// dropping the stream under `AfterProcessed`) stores the marker under the filter's name.
#[tokio::test]
async fn a_detached_filter_read_through_receive_stores_its_acked_marker_under_the_filter_name() {
    use sfstream::replay::CommitPolicy;
    for policy in [CommitPolicy::Manual, CommitPolicy::AfterProcessed] {
        within("detached filter ack", async {
            let (client, mut server, storage) =
                detached_filter_event_on_the_topic_name(policy).await;
            let mut all = client.receive().unwrap();
            let event = all.next().await.unwrap().unwrap();
            assert_eq!(event.replay_id(), Some(7));
            if policy == CommitPolicy::Manual {
                event.ack();
            }
            drop(all);
            close_answering(&client, &mut server).await;
            assert_eq!(stored(&storage, "/topic/T"), None, "{policy:?}");
            assert_eq!(
                stored(&storage, "/topic/T?Region='EU'"),
                Some(7),
                "{policy:?}"
            );
        })
        .await;
    }
}

/// A hand-off stores `OnReceive` markers on ack, not the subscription's stream: a PushTopic
/// filter's event that came on its topic's name must be stored there under the filter's name
/// too, not under the topic's (the unfiltered subscription's marker).
#[tokio::test]
async fn a_filter_s_event_on_the_topic_name_handed_off_is_stored_under_the_filter_name_on_receive()
{
    use sfstream::replay::{CommitPolicy, MappingStorage, ReplayOption};
    within("hand-off filter marker", async {
        let storage = MappingStorage::new();
        let (builder, mut server) = client_builder();
        let client = builder
            .replay(ReplayOption::AllEvents)
            .replay_storage(storage.clone())
            .commit_policy(CommitPolicy::OnReceive)
            .build()
            .unwrap();
        open_with(&client, &mut server).await;
        let work = subscribe(&client, &mut server, "/topic/T?Region='EU'")
            .await
            .hand_off(4);
        server
            .next_on("/meta/connect")
            .await
            .ok_with(vec![event("/topic/T", 7)]);
        let handed = work.recv().await.unwrap().unwrap();
        assert_eq!(
            (handed.channel(), handed.replay_id()),
            ("/topic/T", Some(7))
        );
        handed.ack();
        close_answering(&client, &mut server).await;
        assert_eq!(
            stored(&storage, "/topic/T"),
            None,
            "the topic's marker moved with a filter's event"
        );
        assert_eq!(stored(&storage, "/topic/T?Region='EU'"), Some(7));
    })
    .await;
}

/// `NewEvents`: a topic resubscribed before its first event replays (-2) and drops what is
/// older than its subscribe. A PushTopic filter of it resubscribes from its own marker, and its
/// replayed events may come on the topic's name: they must reach the filter, not be dropped by
/// the topic's cut-off (the filter would never get them, and its marker would pass them).
#[tokio::test]
async fn a_filter_s_replayed_event_on_the_topic_name_is_not_dropped_by_the_topic_s_new_events_cutoff()
 {
    use sfstream::replay::{MappingStorage, ReplayMarker};
    const TOPIC: &str = "/topic/T";
    const FILTER: &str = "/topic/T?Region='EU'";
    within("filter replay past the topic's cut-off", async {
        let storage = MappingStorage::new();
        (storage.map().lock().unwrap()).insert(FILTER.into(), ReplayMarker::new(40, None));
        let (builder, mut server) = client_builder();
        let client = builder.replay_storage(storage.clone()).build().unwrap();
        open_with(&client, &mut server).await;
        let _topic = subscribe(&client, &mut server, TOPIC).await;
        let mut filter = subscribe(&client, &mut server, FILTER).await;
        // The session is lost before the topic's first event.
        server.next_on("/meta/connect").await.unknown_client();
        server.next_on("/meta/handshake").await.ok();
        let mut starts = Vec::new();
        for _ in 0..2 {
            let s = server.next_on("/meta/subscribe").await;
            let name = s.message().subscription.clone().unwrap();
            starts.push((name, s.message().ext_field("replay").cloned()));
            s.ok();
        }
        starts.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            starts,
            [
                (TOPIC.to_owned(), Some(json!({TOPIC: -2}))),
                (FILTER.to_owned(), Some(json!({TOPIC: 40}))),
            ]
        );
        // The filter's replay: an event from long before the topic's subscribe, then one
        // without a date (never dropped).
        server.next_on("/meta/connect").await.ok_with(vec![
            json!({"channel": TOPIC,
                "data": {"event": {"replayId": 41, "createdDate": "2020-01-01T00:00:00.000Z"},
                    "payload": {"n": 41}}}),
            event(TOPIC, 42),
        ]);
        let first = filter.next().await.unwrap().unwrap();
        assert_eq!(
            first.replay_id(),
            Some(41),
            "the filter's replayed event was dropped"
        );
    })
    .await;
}

/// A topic's replay id expired and it fell back while a PushTopic filter of it is live. The
/// fallback's events on the topic's name reach both, but the gap notice is the topic's alone:
/// handed out on the filter's stream it would move the topic's stored marker off the expired id
/// before the topic's consumer was told (a crash then, and the notice is never seen).
#[tokio::test]
async fn a_topic_s_replay_gap_notice_is_not_announced_to_a_filter_of_it_on_the_topic_s_name() {
    const TOPIC: &str = "/topic/T";
    const FILTER: &str = "/topic/T?Region='EU'";
    within("topic's gap notice", async {
        let missing = "400::The replayId for channel {/topic/T} wasn't found using the provided replay ID map {{}}.";
        let (builder, mut server) = client_builder();
        let client = builder
            .replay_fallback(sfstream::replay::ReplayOption::AllEvents)
            .build()
            .unwrap();
        open_with(&client, &mut server).await;
        let mut filter = subscribe(&client, &mut server, FILTER).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.subscribe_from(TOPIC, 42).await });
        let s = server.next_on("/meta/subscribe").await;
        s.reply(json!([{"channel": "/meta/subscribe", "id": "$id", "successful": false, "error": missing}]));
        let retry = server.next_on("/meta/subscribe").await;
        assert_eq!(retry.message().ext_field("replay"), Some(&json!({TOPIC: -2})));
        retry.ok_with(vec![event(TOPIC, 50)]);
        let mut topic = pending.await.unwrap().unwrap();
        let notice = topic.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::ReplayGap);
        assert_eq!(topic.next().await.unwrap().unwrap().replay_id(), Some(50));
        let first = filter.next().await.unwrap();
        assert_eq!(
            first.map(|e| e.replay_id()).map_err(|e| e.kind()),
            Ok(Some(50)),
            "the filter was handed its topic's gap notice"
        );
    })
    .await;
}
