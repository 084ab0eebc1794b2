//! The emulator as Salesforce's twin, seen by the client: each Salesforce behaviour the emulator
//! reproduces (sources in src/emulator's module docs and tests/data/salesforce-messages.json),
//! end to end through `sfstream::Client`.

mod common;

use common::within;
use futures::StreamExt;
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::{Client, ConnectionState};

/// Waits until the client reports `pred` (state changes are pushed, no sleeping).
async fn wait_state(client: &Client, pred: impl Fn(&ConnectionState) -> bool) {
    let mut updates = client.state_updates();
    while let Some(s) = updates.next().await {
        if pred(&s) {
            return;
        }
    }
    panic!("client closed before reaching the state");
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
