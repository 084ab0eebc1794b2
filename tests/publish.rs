//! Publishing over the REST API, end to end against the emulator: platform events by sObject
//! create and sObject collections, generic streaming by the StreamingChannel push resource,
//! with the client's own login and token refresh.

mod common;

use common::within;
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::{Client, ErrorKind};

fn token_client(emu: &Emulator) -> Client {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .build()
        .unwrap()
}

/// Publishes one `A__e` event over REST; whether Salesforce accepted it.
async fn accepted(client: &Client) -> bool {
    client
        .publish_event("A__e", &json!({}))
        .await
        .unwrap()
        .success
}

#[tokio::test]
async fn a_platform_event_published_over_rest_reaches_subscribers_with_its_replay_id() {
    within("publish_event", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().connect().await.unwrap();
        let mut orders = client.subscribe("/event/Order_Placed__e").await.unwrap();
        let result = client
            .publish_event("Order_Placed__e", &json!({"Amount__c": 249.5}))
            .await
            .unwrap();
        assert!(result.success, "{result:?}");
        assert!(result.id.as_deref().unwrap().starts_with("e01"));
        assert_eq!(result.failures().count(), 0);
        let uuid = result
            .event_uuid()
            .expect("OPERATION_ENQUEUED carries the uuid");
        let event = orders.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(1));
        assert_eq!(event.event_uuid().as_deref(), Some(uuid));
        assert_eq!(event.data().to_value()["payload"]["Amount__c"], 249.5);
        // The channel form of the name works too.
        let again = client
            .publish_event("/event/Order_Placed__e", &json!({"Amount__c": 1}))
            .await
            .unwrap();
        assert!(again.success);
        assert_eq!(orders.next().await.unwrap().unwrap().replay_id(), Some(2));
        assert_eq!(emu.stats().rest_events_published, 2);
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_rejected_event_is_a_failed_result_not_an_error() {
    within("rejected event", async {
        let emu = Emulator::start().await.unwrap();
        emu.require_fields("Order__e", &["Amount__c"]);
        let client = token_client(&emu);
        let result = client
            .publish_event("Order__e", &json!({"Note__c": "no amount"}))
            .await
            .unwrap();
        assert!(!result.success);
        assert_eq!(result.id, None);
        let failure = result.failures().next().unwrap();
        assert_eq!(failure.status_code, "REQUIRED_FIELD_MISSING");
        assert_eq!(failure.fields, ["Amount__c"]);
        assert_eq!(emu.stats().rest_events_published, 0);
    })
    .await
}

#[tokio::test]
async fn a_batch_gets_one_result_per_event_in_requests_of_200() {
    within("publish_events", async {
        let emu = Emulator::start().await.unwrap();
        emu.require_fields("Order__e", &["Amount__c"]);
        let client = emu.client_builder().connect().await.unwrap();
        let mut orders = client.subscribe("/event/Order__e").await.unwrap();
        let batch = [
            json!({"Amount__c": 1}),
            json!({"Note__c": "missing the amount"}),
            json!({"Amount__c": 3}),
        ];
        let results = client.publish_events("Order__e", &batch).await.unwrap();
        assert_eq!(results.len(), 3);
        assert!(results[0].success && results[2].success);
        assert!(!results[1].success);
        assert_eq!(
            results[1].failures().next().unwrap().status_code,
            "REQUIRED_FIELD_MISSING"
        );
        let first = orders.next().await.unwrap().unwrap();
        let second = orders.next().await.unwrap().unwrap();
        assert_eq!(first.data().to_value()["payload"]["Amount__c"], 1);
        assert_eq!(second.data().to_value()["payload"]["Amount__c"], 3);
        assert_eq!(first.event_uuid().as_deref(), results[0].event_uuid());

        let requests = emu.stats().rest_requests;
        let many: Vec<_> = (0..250).map(|n| json!({"Amount__c": n})).collect();
        let results = client.publish_events("Order__e", &many).await.unwrap();
        assert_eq!(results.len(), 250);
        assert!(results.iter().all(|r| r.success));
        assert_eq!(emu.stats().rest_requests - requests, 2, "200 per request");
        assert!(
            client
                .publish_events::<serde_json::Value>("Order__e", &[])
                .await
                .unwrap()
                .is_empty()
        );
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_generic_push_looks_the_channel_up_once_and_reaches_subscribers() {
    within("push_generic", async {
        let emu = Emulator::start().await.unwrap();
        let id = emu.create_streaming_channel("/u/Notifications");
        assert!(id.starts_with("0M6"));
        let client = emu.client_builder().connect().await.unwrap();
        let mut notes = client.subscribe("/u/Notifications").await.unwrap();
        let before = emu.stats().rest_requests;
        let pushed = client
            .push_generic("/u/Notifications", "one")
            .await
            .unwrap();
        assert_eq!(pushed.fanout_count, 1);
        client
            .push_generic("/u/Notifications", "two")
            .await
            .unwrap();
        assert_eq!(
            emu.stats().rest_requests - before,
            3,
            "one query, two pushes"
        );
        for (want, replay) in [("one", 1), ("two", 2)] {
            let e = notes.next().await.unwrap().unwrap();
            assert_eq!(e.data_field::<String>("payload").unwrap(), want);
            assert_eq!(e.replay_id(), Some(replay));
        }
        // Targeted at another user: nobody online, nothing delivered.
        let other = client
            .push_generic_to("/u/Notifications", "elsewhere", &["005xx000000OTHER"])
            .await
            .unwrap();
        assert_eq!(other.fanout_count, 0);
        assert!(!other.user_online_status["005xx000000OTHER"]);
        let e = client.push_generic("/u/Nope", "x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOperation, "{e}");
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn rest_publishing_logs_in_again_after_a_revoked_token() {
    within("refresh", async {
        let emu = Emulator::start().await.unwrap();
        // Never opened: publishing needs no streaming connection.
        let client = emu.client_builder().build().unwrap();
        assert!(accepted(&client).await);
        assert_eq!(emu.stats().token_requests, 1);
        emu.revoke_tokens();
        assert!(accepted(&client).await);
        assert_eq!(emu.stats().token_requests, 2);

        // A ready token cannot be refreshed: the second 401 is an authentication error.
        let fixed = token_client(&emu);
        emu.revoke_tokens();
        let e = fixed.publish_event("A__e", &json!({})).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
    })
    .await
}

#[tokio::test]
async fn bad_names_and_fields_are_refused_before_any_request() {
    within("validation", async {
        let emu = Emulator::start().await.unwrap();
        let client = token_client(&emu);
        for bad in ["Account", "/topic/X", "Order__e'"] {
            let e = client.publish_event(bad, &json!({})).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidOperation, "{bad}: {e}");
        }
        let e = client.publish_event("A__e", &json!([1])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        let e = client.push_generic("/u/a'b", "x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        assert_eq!(emu.stats().rest_requests, 0);
    })
    .await
}

#[tokio::test]
async fn rest_failures_are_typed_and_a_401_is_refreshed_once() {
    within("rest faults", async {
        use sfstream::emulator::{Fault, Target};
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().build().unwrap();
        emu.inject(Fault::on(Target::Rest).status(503, "Service Unavailable"));
        let e = client.publish_event("A__e", &json!({})).await.unwrap_err();
        assert_eq!(
            (e.kind(), e.status()),
            (ErrorKind::Transport, Some(503)),
            "{e}"
        );
        emu.inject(Fault::on(Target::Rest).html());
        let e = client.publish_event("A__e", &json!({})).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        // A 401 from the REST API: one refresh, then the retry goes through.
        let logins = emu.stats().token_requests;
        emu.inject(Fault::on(Target::Rest).status(
            401,
            r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
        ));
        assert!(accepted(&client).await);
        assert_eq!(emu.stats().token_requests, logins + 1);
    })
    .await
}
