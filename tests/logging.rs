//! What the client logs at each level, captured with a `tracing-subscriber` fmt layer. One
//! test in its own binary: tracing caches which callsites are enabled, so subscribers of
//! different levels on parallel test threads would see each other's cached answers.

mod common;

use common::log::Captured;
use common::{quick_emulator, within};
use futures::StreamExt;
use serde_json::json;
use sfstream::Client;
use sfstream::auth::AccessToken;

#[test]
fn spans_and_levels() {
    info_logs_show_the_session_and_subscriptions_but_nothing_per_event();
    debug_logs_add_round_trips_and_trace_adds_ids_and_sizes();
}

/// A scripted session (subscribe, 20 events, a lost session and its rehandshake, close)
/// logged at `level` on this thread; returns the log and the access token.
fn logged_session(level: tracing::Level) -> (String, String) {
    // Current-thread runtime: the client, its task and the emulator all log into this.
    let (captured, _guard) = Captured::this_thread(level);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = runtime.block_on(within("logged session", async {
        let emu = quick_emulator().await;
        let token = emu.issue_token();
        let url = emu.instance_url().parse().unwrap();
        let client = Client::builder(AccessToken::new(token.clone(), url))
            .api_version(emu.api_version())
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe("/event/A__e").await.unwrap();
        for n in 0..20 {
            emu.publish("/event/A__e", json!({ "n": n }));
        }
        for _ in 0..20 {
            sub.next().await.unwrap().unwrap();
        }
        let handshakes = emu.stats().handshakes;
        emu.forget_sessions();
        emu.wait_until(|s| s.handshakes > handshakes && s.subscribes >= 2)
            .await;
        emu.publish("/event/A__e", json!({ "n": 20 }));
        assert_eq!(sub.next().await.unwrap().unwrap().replay_id(), Some(21));
        client.close().await.unwrap();
        token
    }));
    (captured.text(), token)
}

/// The lines of the client's own spans (not the emulator's).
fn client_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("sfstream::") && !l.contains("sfstream::emulator"))
        .collect()
}

fn info_logs_show_the_session_and_subscriptions_but_nothing_per_event() {
    let (log, token) = logged_session(tracing::Level::INFO);
    let lines = client_lines(&log);
    assert!(!log.contains(&token), "the token is never logged");
    let session = lines
        .iter()
        .find(|l| l.contains("handshake successful"))
        .unwrap_or_else(|| panic!("no handshake line:\n{log}"));
    assert!(
        session.contains("session{api_version=66.0 instance=127.0.0.1}"),
        "{session}"
    );
    assert!(
        session.contains(":bayeux{client_id="),
        "the Bayeux session's span carries its client id: {session}"
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "session{api_version=66.0 instance=127.0.0.1}:subscription{channel=/event/A__e"
        ) && l.contains("subscribed")),
        "a subscription span inside the session span:\n{log}"
    );
    let ids: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("client_id=").nth(1))
        .filter_map(|rest| rest.split('}').next())
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "one client id per handshake, never appended: {ids:?}\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("session lost; handshaking again")),
        "the rehandshake shows at info:\n{log}"
    );
    assert!(!log.contains("round_trip"), "round trips are debug:\n{log}");
    // 21 events, and far fewer lines than events: nothing is logged per event.
    assert!(lines.len() < 15, "{} lines at info:\n{log}", lines.len());
}

fn debug_logs_add_round_trips_and_trace_adds_ids_and_sizes() {
    let (log, _) = logged_session(tracing::Level::DEBUG);
    let connect = client_lines(&log)
        .into_iter()
        .find(|l| l.contains("round_trip{channels=/meta/connect") && l.contains("round trip"))
        .unwrap_or_else(|| panic!("no connect round trip:\n{log}"));
    assert!(
        connect.contains("duration_ms=") && connect.contains("outcome=ok"),
        "{connect}"
    );
    assert!(
        client_lines(&log)
            .iter()
            .any(|l| l.contains("subscription{channel=/event/A__e")
                && l.contains("round_trip{channels=/meta/subscribe")),
        "the subscribe round trip is inside the subscription span:\n{log}"
    );
    assert!(!log.contains("event_bytes="), "sizes are trace:\n{log}");

    let (log, _) = logged_session(tracing::Level::TRACE);
    assert!(
        client_lines(&log)
            .iter()
            .any(|l| l.contains("response") && l.contains("events=") && l.contains("event_bytes=")),
        "trace shows ids and sizes:\n{log}"
    );
}
