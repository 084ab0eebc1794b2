//! Typed subscriptions end to end against the emulator: decoding, items that do not fit, and
//! acknowledgement and replay tracking exactly as on the untyped stream.

mod common;

use common::within;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::events::{ChangeEvent, ChangeType, Field, PlatformEvent};
use sfstream::replay::{CommitPolicy, MappingStorage, ReplayOption};
use sfstream::{Client, ClientBuilder, ErrorKind};
use std::time::Duration;

const CH: &str = "/event/Order__e";

#[derive(Debug, Deserialize)]
struct Order {
    #[serde(rename = "Amount__c")]
    amount: f64,
}

fn builder(emu: &Emulator) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .replay(ReplayOption::AllEvents)
}

async fn wait_for_marker(storage: &MappingStorage, id: i64) {
    // The marker is written by a background task; poll its map until it lands (the test's
    // `within` bounds the wait).
    loop {
        if storage.map().lock().unwrap().get(CH).map(|m| m.replay_id) == Some(id) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn typed_subscription_reports_a_payload_that_does_not_fit_and_goes_on() {
    within("typed decode", async {
        let emu = Emulator::start().await.unwrap();
        emu.publish(CH, json!({"Amount__c": 1.5}));
        emu.publish(CH, json!({"Amount__c": "not a number"}));
        emu.publish(CH, json!({"Amount__c": 3.0}));
        let client = builder(&emu).connect().await.unwrap();
        let mut orders = client
            .subscribe(CH)
            .await
            .unwrap()
            .typed::<PlatformEvent<Order>>();
        assert_eq!(orders.get_ref().channel(), CH);

        let first = orders.next().await.unwrap().unwrap();
        assert_eq!(first.payload.amount, 1.5);
        assert_eq!(first.replay_id, Some(1));
        assert_eq!(first.created_by_id, "005xx000001X8UzAAK");
        assert!(first.event_uuid.is_some());
        assert_eq!(first.event().replay_id(), Some(1));

        let e = orders.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
        let failure = e.decode_failure().unwrap();
        assert_eq!(failure.channel, CH);
        assert_eq!(failure.replay_id, Some(2));
        assert_eq!(failure.path, "data.payload.Amount__c");
        assert_eq!(e.event().unwrap().replay_id(), Some(2));

        let third = orders.next().await.unwrap().unwrap();
        assert_eq!(third.payload.amount, 3.0, "the stream goes on");
        orders.into_inner().unsubscribe().await.unwrap();
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn typed_acks_move_the_stored_marker_as_untyped_acks_do() {
    within("typed acks", async {
        let emu = Emulator::start().await.unwrap();
        emu.publish(CH, json!({"Amount__c": 1.0}));
        emu.publish(CH, json!({"Amount__c": 2.0}));
        emu.publish(CH, json!({"Amount__c": "bad"}));
        emu.publish(CH, json!({"Amount__c": 4.0}));
        let storage = MappingStorage::new();
        let client = builder(&emu)
            .replay_storage(storage.clone())
            .commit_policy(CommitPolicy::Manual)
            .connect()
            .await
            .unwrap();
        let mut orders = client
            .subscribe(CH)
            .await
            .unwrap()
            .typed::<PlatformEvent<Order>>();
        let a = orders.next().await.unwrap().unwrap();
        let b = orders.next().await.unwrap().unwrap();
        let bad = orders.next().await.unwrap().unwrap_err();
        let d = orders.next().await.unwrap().unwrap();
        // Out of order: 2 is done, 1 is not, so nothing may be stored.
        b.ack();
        tokio::task::yield_now().await;
        assert!(storage.map().lock().unwrap().get(CH).is_none());
        a.ack();
        wait_for_marker(&storage, 2).await;
        // The event that did not fit is acknowledged through the error (dead-lettered).
        d.ack();
        bad.event().unwrap().ack();
        wait_for_marker(&storage, 4).await;
        drop(orders);
        client.close().await.unwrap();

        // AfterProcessed (the default): polling again marks the previous event processed.
        let storage = MappingStorage::new();
        let client = builder(&emu)
            .replay_storage(storage.clone())
            .connect()
            .await
            .unwrap();
        let mut orders = client
            .subscribe(CH)
            .await
            .unwrap()
            .typed::<PlatformEvent<Order>>();
        assert!(orders.next().await.unwrap().is_ok());
        assert!(orders.next().await.unwrap().is_ok());
        wait_for_marker(&storage, 1).await;
        client.close().await.unwrap();
        assert_eq!(
            storage.map().lock().unwrap()[CH].replay_id,
            1,
            "2 is in hand"
        );
    })
    .await;
}

#[tokio::test]
async fn typed_change_events_from_the_emulator_including_gap_and_overflow() {
    within("typed cdc", async {
        #[derive(Debug, Deserialize)]
        struct Account {
            #[serde(rename = "Phone", default)]
            phone: Field<String>,
        }
        let emu = Emulator::start().await.unwrap();
        let channel = "/data/AccountChangeEvent";
        emu.publish(channel, json!({"Phone": "(415) 555-1212"}));
        emu.publish_gap(channel, "GAP_UPDATE", &["001xx000003DGb2AAG"]);
        emu.publish_gap(channel, "GAP_OVERFLOW", &[]);
        let client = builder(&emu).connect().await.unwrap();
        let mut accounts = client
            .subscribe(channel)
            .await
            .unwrap()
            .typed::<ChangeEvent<Account>>();
        let update = accounts.next().await.unwrap().unwrap();
        assert_eq!(update.header.entity_name, "Account");
        assert_eq!(update.header.change_type, ChangeType::Update);
        assert!(update.header.changed("Phone"));
        let fields = update.fields.as_ref().unwrap();
        assert_eq!(
            fields.phone.value().map(String::as_str),
            Some("(415) 555-1212")
        );
        let gap = accounts.next().await.unwrap().unwrap();
        assert_eq!(gap.header.change_type, ChangeType::GapUpdate);
        assert_eq!(gap.header.record_ids, vec!["001xx000003DGb2AAG".to_owned()]);
        assert!(gap.fields.is_none());
        let overflow = accounts.next().await.unwrap().unwrap();
        assert!(overflow.header.change_type.is_overflow());
        assert!(overflow.fields.is_none());
        client.close().await.unwrap();
    })
    .await;
}
