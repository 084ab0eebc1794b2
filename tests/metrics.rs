//! The `metrics` feature: a scripted session against the emulator, read back through
//! metrics-util's debugging recorder. Its own binary: the recorder is process-wide.
#![cfg(feature = "metrics")]

mod common;

use common::{http_get, quick_emulator, serving_example, within};
use futures::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use sfstream::metrics as m;
use sfstream::replay::{MappingStorage, ReplayOption};
use sfstream::{ErrorKind, Subscription};
use std::collections::HashMap;

async fn take(sub: &mut Subscription, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        match sub.next().await.expect("the stream goes on") {
            Ok(event) => ids.push(event.replay_id().unwrap()),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    ids
}

type Values = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn counter(values: &Values, name: &str, labels: &[(&str, &str)]) -> u64 {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    match values.get(&key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?} in {values:#?}"),
    }
}

fn histogram_len(values: &Values, name: &str) -> usize {
    match values.get(&(name.to_owned(), Vec::new())) {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn a_scripted_session_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = ("/event/A__e", "/event/B__e");
    runtime.block_on(within("metrics", async {
        let emu = quick_emulator().await;
        let client = emu
            .client_builder()
            .replay_storage(MappingStorage::new())
            .replay_fallback(ReplayOption::AllEvents)
            .max_pending_count(2)
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe(a).await.unwrap();
        // Five events against a limit of two: the loop pauses until they are taken.
        for n in 0..5 {
            emu.publish(a, json!({ "n": n }));
        }
        assert_eq!(take(&mut sub, 5).await, vec![1, 2, 3, 4, 5]);
        // A lost session, then a revoked token: a rehandshake and a re-login.
        let handshakes = emu.stats().handshakes;
        emu.forget_sessions();
        emu.wait_until(|s| s.handshakes > handshakes).await;
        emu.revoke_tokens();
        emu.publish(a, json!({ "n": 5 }));
        assert_eq!(take(&mut sub, 1).await, vec![6]);
        // An expired replay id on another channel: a gap.
        for n in 0..4 {
            emu.publish(b, json!({ "n": n }));
        }
        emu.expire_events(b, 2);
        let mut gap = client.subscribe_from(b, 1).await.unwrap();
        let notice = gap.next().await.unwrap().unwrap_err();
        assert_eq!(notice.kind(), ErrorKind::ReplayGap, "{notice}");
        assert_eq!(take(&mut gap, 2).await, vec![3, 4]);
        drop(gap);
        // close() waits for the markers of processed events to be stored.
        drop(sub);
        client.close().await.unwrap();
    }));

    let values: Values = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            ((key.name().to_owned(), labels), value)
        })
        .collect();
    assert_eq!(counter(&values, m::EVENTS_DELIVERED, &[("channel", a)]), 6);
    assert_eq!(counter(&values, m::EVENTS_DELIVERED, &[("channel", b)]), 2);
    assert!(counter(&values, m::EVENT_BYTES_RECEIVED, &[("channel", a)]) > 6 * 10);
    assert!(counter(&values, m::CONNECT_ROUND_TRIPS, &[("outcome", "ok")]) >= 3);
    assert!(histogram_len(&values, m::CONNECT_DURATION) >= 3);
    assert!(counter(&values, m::REHANDSHAKES, &[]) >= 1);
    assert_eq!(counter(&values, m::RELOGINS, &[]), 1);
    assert_eq!(counter(&values, m::REPLAY_GAPS, &[("channel", b)]), 1);
    assert!(counter(&values, m::MARKER_WRITES, &[("outcome", "ok")]) >= 1);
    assert!(histogram_len(&values, m::MARKER_WRITE_DURATION) >= 1);
    assert!(histogram_len(&values, m::BACKPRESSURE_PAUSE_DURATION) >= 1);
    match values.get(&(m::MARKER_LAG.to_owned(), vec![("channel".into(), a.into())])) {
        Some(DebugValue::Gauge(lag)) => assert!(lag.0 >= 0.0),
        other => panic!("marker lag: {other:?}"),
    }
    assert!(values.contains_key(&(m::PENDING_EVENTS.to_owned(), Vec::new())));
}

#[test]
fn the_metrics_example_serves_prometheus_text() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(within("metrics example", async {
        let (mut child, addr) = serving_example("metrics", 1).await;
        let (status, response) = http_get(&addr, "/metrics").await;
        assert_eq!(status, 200, "{response}");
        assert!(
            response
                .contains("sfstream_events_delivered_total{channel=\"/event/Order_Placed__e\"} 3"),
            "{response}"
        );
        assert!(
            response.contains("# TYPE sfstream_connect_duration_seconds"),
            "{response}"
        );
        assert!(child.wait().await.unwrap().success());
    }));
}
