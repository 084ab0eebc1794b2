//! The inbox and backpressure through the public API, against the scripted server of
//! `common::mock`: wake-ups, cooperative scheduling, what counts as pending.

mod common;

use common::mock::{client_builder, event, open, open_with, subscribe_with};
use common::{within, within_virtual};
use futures::StreamExt;
use serde_json::json;
use sfstream::{ConnectionState, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Let every other task of this current-thread runtime run until it waits.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn detach_wakes_a_receive_reader_already_waiting() {
    within("a reader waiting before detach", async {
        let (client, mut server) = open(3).await;
        let backlog = (1..=5).map(|i| event("/event/A__e", i)).collect();
        let sub = subscribe_with(&client, &mut server, "/event/A__e", backlog).await;
        let mut all = client.receive().unwrap();
        let reader = tokio::spawn(async move {
            let mut ids = Vec::new();
            while ids.len() < 5 {
                ids.push(all.next().await.unwrap().unwrap().replay_id().unwrap());
            }
            ids
        });
        settle().await; // the reader is parked: nothing detached yet
        assert!(!reader.is_finished());
        sub.detach();
        assert_eq!(reader.await.unwrap(), vec![1, 2, 3, 4, 5]);
        // Below the limit again: the connect loop runs.
        server.next_on("/meta/connect").await;
        assert_eq!(client.pending_count(), 0);
    })
    .await;
}

/// Drain `n` queued items in a loop that never waits (every item is already there), noting
/// whether another task of the runtime got to run before the queue was empty.
async fn drain_noting_others<S>(mut stream: S, n: usize, other_ran: &AtomicBool) -> bool
where
    S: futures::Stream<Item = sfstream::Result<sfstream::Event>> + Unpin,
{
    let mut ran_midway = false;
    for i in 0..n {
        stream.next().await.unwrap().unwrap();
        if i + 1 < n && other_ran.load(Ordering::SeqCst) {
            ran_midway = true;
        }
    }
    ran_midway
}

#[tokio::test(flavor = "current_thread")]
async fn draining_a_long_queue_lets_other_tasks_run() {
    within("draining", async {
        const N: usize = 2000;
        let (client, mut server) = open(0).await;
        let backlog = |ch: &str| (1..=N as i64).map(|i| event(ch, i)).collect();
        let sub = subscribe_with(&client, &mut server, "/event/A__e", backlog("/event/A__e")).await;
        let detached =
            subscribe_with(&client, &mut server, "/event/B__e", backlog("/event/B__e")).await;
        detached.detach();
        assert_eq!(client.pending_count(), 2 * N);

        // Through a `Subscription`.
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        assert!(
            drain_noting_others(sub, N, &other_ran).await,
            "a Subscription drained {N} queued events without letting another task run"
        );

        // Through `receive()`.
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        assert!(
            drain_noting_others(client.receive().unwrap(), N, &other_ran).await,
            "receive() drained {N} queued events without letting another task run"
        );
    })
    .await;
}

#[tokio::test]
async fn malformed_messages_count_against_max_pending() {
    within("malformed messages and backpressure", async {
        let (client, mut server) = open(2).await;
        let mut sub = subscribe_with(&client, &mut server, "/event/A__e", Vec::new()).await;
        let mut states = client.state_updates();
        let bad = json!({"channel": "/event/A__e", "successful": "yes", "data": {}});
        let c = server.next_on("/meta/connect").await;
        c.ok_with(vec![bad.clone(), bad]);
        while states.next().await != Some(ConnectionState::Paused { pending: 2 }) {}
        assert_eq!(client.pending_count(), 2);
        assert!(
            !server.has_waiting("/meta/connect"),
            "connect sent over the limit"
        );
        for _ in 0..2 {
            let e = sub.next().await.unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
        }
        server.next_on("/meta/connect").await;
        assert_eq!(client.pending_count(), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_long_backpressure_pause_names_the_channels_holding_events() {
    within_virtual("a long pause", async {
        let (builder, mut server) = client_builder();
        let client = builder
            .max_pending_count(3)
            .connection_timeout(Some(Duration::from_secs(30)))
            .build()
            .unwrap();
        open_with(&client, &mut server).await;
        let backlog = |ch: &str| (1..=2).map(|i| event(ch, i)).collect();
        // A handle held but never polled, and a detached subscription nobody receives from.
        let mut held =
            subscribe_with(&client, &mut server, "/event/A__e", backlog("/event/A__e")).await;
        subscribe_with(&client, &mut server, "/event/B__e", backlog("/event/B__e"))
            .await
            .detach();
        let mut states = client.state_updates();
        server.next_on("/meta/connect").await.ok();
        let started = tokio::time::Instant::now();
        let (pending, paused_for, channels) = loop {
            match states.next().await.unwrap() {
                ConnectionState::PausedLong {
                    pending,
                    paused_for,
                    channels,
                } => break (pending, paused_for, channels),
                other => assert!(
                    matches!(
                        other,
                        ConnectionState::Connected | ConnectionState::Paused { pending: 4 }
                    ),
                    "{other:?}"
                ),
            }
        };
        assert_eq!(pending, 4);
        assert!(paused_for >= Duration::from_secs(30), "{paused_for:?}");
        assert!(started.elapsed() >= Duration::from_secs(30));
        let names: Vec<(&str, usize)> = channels.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        assert_eq!(names, vec![("/event/A__e", 2), ("/event/B__e", 2)]);
        assert!(client.state().is_connected());
        // Taking events below the limit resumes the loop, and the state says so.
        for _ in 0..2 {
            held.next().await.unwrap().unwrap();
        }
        server.next_on("/meta/connect").await;
        while !matches!(states.next().await.unwrap(), ConnectionState::Connected) {}
    })
    .await;
}
