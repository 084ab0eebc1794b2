//! Strings the server chooses (channel names, the Bayeux client id, message ids) reach log
//! fields with their control characters replaced: a hostile server cannot forge log lines with
//! newlines or rewrite an operator's terminal with escape sequences. One test in its own
//! binary, like `tests/logging.rs`: tracing caches which callsites are enabled per process.

mod common;

use common::log::Captured;
use common::mock::mock;
use common::{token_for, within};
use serde_json::json;
use sfstream::Client;
use std::fmt;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Everything a hostile server can put into one string: a newline starting a forged log line,
/// a carriage return, an ANSI "clear screen", a C1 control (CSI) and DEL.
const HOSTILE: &str = "\n2026-12-07T00:00:00Z  INFO FORGED line\r\x1b[2J\u{9b}31m\x7f";

/// Every field value of every span and event, as the subscriber receives it (before any
/// formatting layer gets a chance to escape it).
#[derive(Clone, Default)]
struct RawFields(Arc<Mutex<Vec<(String, String)>>>);

impl Visit for RawFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive as a DisplayValue, whose Debug is the Display text.
        let text = format!("{value:?}");
        self.0.lock().unwrap().push((field.name().to_owned(), text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let text = value.to_owned();
        self.0.lock().unwrap().push((field.name().to_owned(), text));
    }
}

impl<S: tracing::Subscriber> Layer<S> for RawFields {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        attrs.record(&mut self.clone());
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        values.record(&mut self.clone());
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        event.record(&mut self.clone());
    }
}

/// A session whose server names itself, its events and a stray reply with [`HOSTILE`] text.
async fn hostile_session() {
    let (transport, mut server) = mock();
    let client = Client::builder(token_for("https://example.my.salesforce.com"))
        .transport(transport)
        .build()
        .unwrap();
    let c = client.clone();
    let opening = tokio::spawn(async move { c.open().await });
    server.next_on("/meta/handshake").await.reply(json!([{
        "channel": "/meta/handshake", "id": "$id", "successful": true,
        "clientId": format!("cid{HOSTILE}"), "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
    }]));
    server.next_on("/meta/connect").await.ok_with(vec![
        // An event nobody subscribed to ("event for no live subscription").
        json!({"channel": format!("/event/Evil{HOSTILE}__e"), "data": {"payload": {}}}),
        // A reply to nothing the client asked ("reply to no pending request").
        json!({"channel": format!("/meta/subscribe{HOSTILE}"), "id": format!("7{HOSTILE}"),
               "successful": true}),
    ]);
    opening.await.unwrap().unwrap();
    // The next long poll is sent only after the first response was dispatched.
    let _polling = server.next_on("/meta/connect").await;
    let c = client.clone();
    let closing = tokio::spawn(async move { c.close().await });
    server.next_on("/meta/disconnect").await.ok();
    closing.await.unwrap().unwrap();
}

#[test]
fn server_chosen_names_reach_the_log_without_control_characters() {
    let raw = RawFields::default();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(raw.clone())
        .with(tracing_subscriber::filter::LevelFilter::TRACE);
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(within("hostile session", hostile_session()));

    let fields = raw.0.lock().unwrap().clone();
    let log = captured.text();
    // The hostile strings were logged (so the check below looks at them), each in its field.
    for (field, message) in [
        ("channel", "event for no live subscription"),
        ("channel", "reply to no pending request"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(message) && l.contains(&format!("{field}=/"))),
            "no {message:?} line:\n{log}"
        );
    }
    let hostile: Vec<&(String, String)> = fields
        .iter()
        .filter(|(_, v)| v.contains("FORGED line"))
        .collect();
    let names: std::collections::BTreeSet<&str> = hostile.iter().map(|(f, _)| f.as_str()).collect();
    for field in ["channel", "client_id", "ids"] {
        assert!(
            names.contains(field),
            "the server's text reached no {field:?} field: {hostile:?}"
        );
    }
    for (field, value) in &fields {
        assert!(
            !value.chars().any(char::is_control),
            "{field} = {value:?} reached the subscriber with control characters"
        );
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("INFO FORGED") && !l.contains("sfstream::")),
        "a forged line in the log:\n{log}"
    );
}
