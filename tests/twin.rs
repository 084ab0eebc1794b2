//! The emulator as Salesforce's twin, seen by the client: each Salesforce behaviour the emulator
//! reproduces (sources in src/emulator's module docs and tests/data/salesforce-messages.json),
//! end to end through `sfstream::Client`.

mod common;

use common::{wait_state, within};
use futures::StreamExt;
use serde_json::json;
use sfstream::ConnectionState;
use sfstream::emulator::Emulator;
use std::time::Duration;

/// A client that retries within milliseconds, for tests that provoke failures.
fn quick(emu: &Emulator) -> sfstream::ClientBuilder {
    emu.client_builder()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

#[tokio::test]
async fn the_jar_takes_the_sfdc_stream_cookie_rotated_with_unknown_client() {
    within("cookie rotation", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().connect().await.unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        emu.wait_until(|s| s.held_connects == 1).await;
        emu.forget_sessions();
        emu.wait_until(|s| s.handshakes >= 2 && s.subscriptions.len() == 1)
            .await;
        let stats = emu.stats();
        assert!(stats.cookie_rotations >= 1, "{stats:?}");
        // The rehandshake carried the rotated cookie: no cookie error, no new cookie set.
        assert_eq!(
            (stats.cookie_failures, stats.cookies_issued),
            (0, 1),
            "{stats:?}"
        );
        emu.publish("/event/A__e", json!({"n": 1}));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(1));
        wait_state(&client, |s| matches!(s, ConnectionState::Connected)).await;
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_stalled_event_bus_ends_in_a_replay_error_the_stream_reports() {
    // Salesforce knowledge article 005321562, end to end: the client resubscribes from its last
    // delivered replay id, which has aged out.
    within("backlog", async {
        let emu = Emulator::start().await.unwrap();
        let client = quick(&emu).connect().await.unwrap();
        let mut sub = client.subscribe("/event/X__e").await.unwrap();
        emu.publish("/event/X__e", json!({}));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(1));
        emu.stall_channel("/event/X__e");
        emu.publish("/event/X__e", json!({}));
        emu.fail_stalled_channel("/event/X__e");
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), sfstream::ErrorKind::Replay, "{e}");
        assert!(e.to_string().contains("replayId {1}"), "{e}");
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_daily_limit_on_connect_is_retried_until_a_new_day() {
    within("daily limit", async {
        let emu = Emulator::builder()
            .daily_event_limit(Some(1))
            .start()
            .await
            .unwrap();
        let client = quick(&emu).connect().await.unwrap();
        let mut sub = client.subscribe("/event/X__e").await.unwrap();
        emu.publish("/event/X__e", json!({}));
        emu.publish("/event/X__e", json!({}));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(1));
        // The next connects get the limit error; the client keeps trying.
        let before = emu.stats().connects;
        emu.wait_until(|s| s.connects >= before + 2).await;
        emu.reset_daily_limit();
        let mut second = None;
        while second.is_none() {
            match sub.next().await.unwrap() {
                Ok(event) => second = event.replay_id(),
                Err(e) => assert!(e.to_string().contains("daily limit"), "{e}"),
            }
        }
        assert_eq!(second, Some(2));
        client.close().await.unwrap();
    })
    .await
}

/// Every Bayeux vector in tests/data/salesforce-messages.json, read by the client's own model:
/// no element is malformed, every error is a typed `ServerError` with Salesforce's code, every
/// event has its replay id.
#[test]
fn every_salesforce_vector_is_typed_by_the_client() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("data/salesforce-messages.json")).unwrap();
    for (key, vector) in vectors.as_object().unwrap() {
        let Some(elements) = vector.as_array() else {
            continue; // OAuth replies, REST results, notes: not Bayeux.
        };
        if key == "set_cookie_headers_seen" {
            continue;
        }
        let batch = sfstream::bayeux::parse_batch(bytes::Bytes::from(vector.to_string()))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(batch.malformed.is_empty(), "{key}: {:?}", batch.malformed);
        assert_eq!(batch.messages.len(), elements.len(), "{key}");
        for (message, element) in batch.messages.iter().zip(elements) {
            if let Some(error) = element["error"].as_str() {
                let parsed = message.server_error().expect("a typed server error");
                let code: u16 = error.split(':').next().unwrap().parse().unwrap();
                assert_eq!(parsed.code, Some(code), "{key}");
                assert!(!message.is_successful(), "{key}");
            }
            if element.get("data").is_some() {
                let event = sfstream::Event::from_json(&element.to_string())
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                assert_eq!(
                    event.replay_id(),
                    element["data"]["event"]["replayId"].as_i64(),
                    "{key}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_filtered_pushtopic_subscription_gets_only_matching_records() {
    within("filter", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().connect().await.unwrap();
        let mut open = client
            .subscribe("/topic/Invoices?Status__c=Open")
            .await
            .unwrap();
        emu.publish("/topic/Invoices", json!({"Status__c": "Closed"}));
        emu.publish("/topic/Invoices", json!({"Status__c": "Open"}));
        let event = open.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(2));
        assert_eq!(event.channel(), "/topic/Invoices?Status__c=Open");
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn the_concurrent_client_limit_refuses_open_with_a_typed_error() {
    within("client limit", async {
        let emu = Emulator::builder()
            .max_clients(Some(1))
            .start()
            .await
            .unwrap();
        let first = emu.client_builder().connect().await.unwrap();
        let e = emu.client_builder().connect().await.unwrap_err();
        assert_eq!(e.kind(), sfstream::ErrorKind::Server, "{e}");
        assert!(
            e.to_string().contains("concurrent user limit exceeded"),
            "{e}"
        );
        // Closing frees the slot (the client disconnects): the next client gets in.
        first.close().await.unwrap();
        let second = emu.client_builder().connect().await.unwrap();
        second.close().await.unwrap();
    })
    .await
}
