//! `Publisher`, the `futures::Sink` over REST publishing, end to end against the emulator:
//! batching, per-event results in order, rejections, token refresh and failed requests.

mod common;

use common::within;
use futures::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use sfstream::ErrorKind;
use sfstream::emulator::{Emulator, Fault, Target};
use sfstream::publish::{Outcome, Publisher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn orders(range: std::ops::Range<i64>) -> impl futures::Stream<Item = sfstream::Result<Value>> {
    stream::iter(range.map(|n| Ok(json!({"Amount__c": n}))))
}

fn amount(v: &Value) -> i64 {
    v["Amount__c"].as_i64().unwrap()
}

/// The `Amount__c` of the next `count` events on `channel`, in delivery order.
async fn received(sub: &mut sfstream::Subscription, count: usize) -> Vec<i64> {
    let mut out = Vec::new();
    while out.len() < count {
        let event = sub.next().await.unwrap().unwrap();
        out.push(
            event.data().to_value()["payload"]["Amount__c"]
                .as_i64()
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn forwarding_1000_events_sends_batches_of_200_and_reports_each_result_in_order() {
    within("forward 1000", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().connect().await.unwrap();
        let mut sub = client.subscribe("/event/Order__e").await.unwrap();
        let (mut publisher, results) = client
            .publisher::<Value>("/event/Order__e")
            .unwrap()
            .with_results(16);
        let reader = tokio::spawn(results.collect::<Vec<_>>());
        let before = emu.stats().rest_requests;
        orders(0..1000).forward(&mut publisher).await.unwrap();
        assert_eq!(
            emu.stats().rest_requests - before,
            5,
            "what was ready went out 200 per request"
        );
        drop(publisher);
        let results = reader.await.unwrap();
        let sent: Vec<i64> = results.iter().map(|r| amount(&r.event)).collect();
        assert_eq!(
            sent,
            (0..1000).collect::<Vec<_>>(),
            "every result, in order"
        );
        assert!(results.iter().all(|r| r.outcome.is_success()));
        let delivered = received(&mut sub, 1000).await;
        assert_eq!(
            delivered,
            (0..1000).collect::<Vec<_>>(),
            "published in order"
        );
        assert_eq!(emu.stats().rest_events_published, 1000);
        // Each result carries the delivered event's UUID.
        let Outcome::Event(first) = &results[0].outcome else {
            panic!("a platform event result")
        };
        assert!(first.event_uuid().is_some());
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_rejected_event_fails_the_sink_and_is_kept_with_everything_after_it() {
    within("rejection fails", async {
        let emu = Emulator::start().await.unwrap();
        emu.require_fields("Order__e", &["Amount__c"]);
        let client = emu.client_builder().build().unwrap();
        let mut publisher = client
            .publisher::<Value>("Order__e")
            .unwrap()
            .batch_size(10);
        // Event 3 lacks the required field; 0..10 is one request, 10..20 the batch after it.
        let events = stream::iter((0..30).map(|n| {
            Ok(if n == 3 {
                json!({"Note__c": "no amount"})
            } else {
                json!({"Amount__c": n})
            })
        }));
        let e = events.forward(&mut publisher).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
        assert!(e.to_string().contains("REQUIRED_FIELD_MISSING"), "{e}");
        let kept = publisher.take_unpublished();
        assert_eq!(kept[0], json!({"Note__c": "no amount"}));
        let rest: Vec<i64> = kept[1..].iter().map(amount).collect();
        let published = emu.stats().rest_events_published as i64;
        // The other nine of the first request were published; everything taken after them is
        // kept, in order, and nothing was lost in between.
        assert_eq!(published, 9);
        assert_eq!(rest, (10..10 + rest.len() as i64).collect::<Vec<_>>());
        assert!(!rest.is_empty());
        assert!(publisher.take_unpublished().is_empty(), "taking clears");
        // The publisher is still usable: send the rest again.
        stream::iter(kept.into_iter().skip(1).map(Ok))
            .forward(&mut publisher)
            .await
            .unwrap();
        assert_eq!(
            emu.stats().rest_events_published as i64,
            9 + rest.len() as i64
        );
    })
    .await
}

#[tokio::test]
async fn with_results_rejections_are_reported_in_order_and_the_sink_goes_on() {
    within("rejections reported", async {
        let emu = Emulator::start().await.unwrap();
        emu.require_fields("Order__e", &["Amount__c"]);
        let client = emu.client_builder().build().unwrap();
        let (mut publisher, results) = client
            .publisher::<Value>("Order__e")
            .unwrap()
            .with_results(4);
        let reader = tokio::spawn(results.collect::<Vec<_>>());
        let events = stream::iter((0..450).map(|n| {
            Ok(if n % 7 == 0 {
                json!({"n": n})
            } else {
                json!({"n": n, "Amount__c": n})
            })
        }));
        events.forward(&mut publisher).await.unwrap();
        drop(publisher);
        let results = reader.await.unwrap();
        assert_eq!(results.len(), 450);
        for (n, r) in results.iter().enumerate() {
            assert_eq!(r.event["n"], n, "in order");
            assert_eq!(r.outcome.is_success(), n % 7 != 0, "event {n}");
            if let Outcome::Event(result) = &r.outcome
                && !result.success
            {
                let failure = result.failures().next().unwrap();
                assert_eq!(failure.status_code, "REQUIRED_FIELD_MISSING");
            }
        }
        assert_eq!(emu.stats().rest_events_published, 450 - 65);
    })
    .await
}

#[tokio::test]
async fn a_token_revoked_mid_stream_is_refreshed_and_every_event_published_once() {
    within("401 mid-stream", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().connect().await.unwrap();
        let mut sub = client.subscribe("/event/Order__e").await.unwrap();
        let mut publisher = client
            .publisher::<Value>("Order__e")
            .unwrap()
            .batch_size(50);
        let revoker = emu.clone();
        let logins = emu.stats().token_requests;
        let events = stream::iter(0..300).then(move |n| {
            let emu = revoker.clone();
            async move {
                if n == 120 {
                    emu.revoke_tokens();
                }
                // A stream that is not always ready: batches are what was ready.
                if n % 37 == 0 {
                    tokio::task::yield_now().await;
                }
                Ok(json!({"Amount__c": n}))
            }
        });
        events.forward(&mut publisher).await.unwrap();
        assert!(emu.stats().token_requests > logins, "logged in again");
        assert_eq!(emu.stats().rest_events_published, 300, "none twice");
        let delivered = received(&mut sub, 300).await;
        assert_eq!(delivered, (0..300).collect::<Vec<_>>());
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_server_error_fails_the_sink_and_keeps_the_batch_the_buffer_and_the_next_event() {
    within("503", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().build().unwrap();
        // Logged in and the first request done, so the fault hits a publish.
        client
            .publish_event("Order__e", &json!({"Amount__c": -1}))
            .await
            .unwrap();
        emu.inject(Fault::on(Target::Rest).status(503, "Service Unavailable"));
        let mut publisher = client
            .publisher::<Value>("Order__e")
            .unwrap()
            .batch_size(10);
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let events = orders(0..100).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let e = events.forward(&mut publisher).await.unwrap_err();
        assert_eq!(
            (e.kind(), e.status()),
            (ErrorKind::Transport, Some(503)),
            "{e}"
        );
        assert!(e.is_transient());
        let kept: Vec<i64> = publisher.take_unpublished().iter().map(amount).collect();
        // Every event taken from the stream is either published or kept: here none published.
        assert_eq!(emu.stats().rest_events_published, 1);
        assert_eq!(
            kept,
            (0..taken.load(Ordering::SeqCst) as i64).collect::<Vec<_>>()
        );
        assert!(
            kept.len() > 10,
            "the failed batch and what was buffered after it"
        );
        // Retried, in order.
        stream::iter(kept.iter().map(|n| Ok(json!({"Amount__c": n}))))
            .forward(&mut publisher)
            .await
            .unwrap();
        assert_eq!(emu.stats().rest_events_published, 1 + kept.len() as u64);
    })
    .await
}

#[tokio::test]
async fn a_generic_channel_publisher_pushes_batches_in_order() {
    within("generic", async {
        let emu = Emulator::start().await.unwrap();
        emu.create_streaming_channel("/u/Notifications");
        let client = emu.client_builder().connect().await.unwrap();
        let mut sub = client.subscribe("/u/Notifications").await.unwrap();
        let mut publisher: Publisher<String> = client.publisher("/u/Notifications").unwrap();
        let before = emu.stats().rest_requests;
        stream::iter((0..250).map(|n| Ok(format!("note {n}"))))
            .forward(&mut publisher)
            .await
            .unwrap();
        assert_eq!(
            emu.stats().rest_requests - before,
            3,
            "one query, two pushes"
        );
        for n in 0..250 {
            let e = sub.next().await.unwrap().unwrap();
            assert_eq!(
                e.data_field::<String>("payload").unwrap(),
                format!("note {n}")
            );
        }
        // `send` works too (poll_ready, start_send, flush).
        publisher.send("one more".to_owned()).await.unwrap();
        let e = sub.next().await.unwrap().unwrap();
        assert_eq!(e.data_field::<String>("payload").unwrap(), "one more");
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn an_unread_results_stream_holds_the_publisher_back_within_its_bound() {
    within("backpressure", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().build().unwrap();
        let (mut publisher, _results) = client
            .publisher::<Value>("Order__e")
            .unwrap()
            .batch_size(10)
            .with_results(1);
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let endless = stream::iter(0..)
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .map(|n| Ok(json!({"Amount__c": n})));
        // Never completes while nobody reads the results: that is the point.
        let forward = endless.forward(&mut publisher);
        tokio::pin!(forward);
        tokio::select! {
            _ = &mut forward => panic!("an endless forward ended"),
            () = emu.wait_until(|s| s.rest_events_published >= 10) => {}
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut forward)
                .await
                .is_err()
        );
        // One batch published, its results waiting, one batch buffered, one event in hand.
        assert_eq!(emu.stats().rest_events_published, 10);
        assert!(taken.load(Ordering::SeqCst) <= 21, "{taken:?}");
        assert!(publisher.pending() <= 20, "{publisher:?}");
    })
    .await
}

#[tokio::test]
async fn invalid_names_and_events_are_refused_before_any_request() {
    within("validation", async {
        let emu = Emulator::start().await.unwrap();
        let client = emu.client_builder().build().unwrap();
        for bad in ["Account", "/topic/X", "/u/a b"] {
            let e = client.publisher::<Value>(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidOperation, "{bad}");
        }
        let mut publisher = client.publisher::<Value>("Order__e").unwrap();
        let e = publisher.send(json!([1, 2])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOperation, "{e}");
        assert_eq!(publisher.take_unpublished(), [json!([1, 2])]);
        assert_eq!(emu.stats().rest_requests, 0);
    })
    .await
}
