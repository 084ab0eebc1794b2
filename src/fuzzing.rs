//! Harnesses for the fuzz targets in `fuzz/` and for `tests/fuzz_corpora.rs`, which replays the
//! committed corpora on stable. Not part of the API: compiled only with the `fuzzing` feature.
//!
//! Each harness feeds untrusted bytes (a response body, a storage file, a token reply) through
//! the code that reads them and checks what must hold for any input. A panic is a bug.

use crate::bayeux::{Advice, ServerError, parse_batch};
use crate::event::Event;
use crate::replay::{ReplayMarker, format_date, parse_date};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A response body: the batch parser, then everything the connection task reads from each
/// message (error strings, advice, events and their replay markers).
pub fn batch(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(
            crate::bayeux::fast_scan_agrees(text),
            "the fast batch scan and the serde pass differ"
        );
    }
    let Ok(batch) = parse_batch(Bytes::copy_from_slice(data)) else {
        return;
    };
    for m in &batch.malformed {
        printable(&m.error);
    }
    let response = crate::transport::Response::from(batch);
    for message in &response.messages {
        let _ = message.is_successful();
        let _ = message.is_event();
        if let Some(error) = &message.error {
            server_error_str(error);
            printable(&crate::Error::from_reply("connect", message));
        }
        if let Some(advice) = &message.advice {
            apply_advice(advice);
        }
        if let Some(id) = &message.id {
            let _ = response.reply(&message.channel, id);
        }
        if let Some(data) = &message.data {
            let _ = data.get();
            let _ = data.to_value();
            event(Event::new(
                Arc::from(message.channel.as_str()),
                data.clone(),
            ));
        }
        let _ = serde_json::to_vec(message);
    }
}

/// Whether `bytes` are one JSON value, whitespace around it allowed, by exactly the validating
/// skip [`parse_batch`] runs on an event's `data` value (its nesting limit included; UTF-8 is
/// not checked, `parse_batch` checks the body first). For benches/validator_experiment, which
/// compares it with parser crates.
pub fn validate_json_value(bytes: &[u8]) -> bool {
    crate::bayeux::scan_data_value(bytes)
}

/// What a user may call on an event.
fn event(event: Event) {
    let _ = event.replay_id();
    let _ = event.event_uuid();
    let _ = serde_json::to_string(&event);
    let _ = format!("{event:?}");
    if let Some(marker) = event.replay_marker() {
        marker_consistency(&marker);
    }
    // The typed views, whatever the channel says.
    if let Ok(change) = event.decode::<crate::events::ChangeEvent>() {
        let header = &change.header;
        let _ = (header.has_bitmap_fields(), header.changed("Name.FirstName"));
        let _ = (
            header.nulled("BillingAddress"),
            header.diffed("Description"),
        );
        let _ = (
            header.change_type.is_gap(),
            header.change_type.is_overflow(),
        );
    }
    let _ = event.decode::<crate::events::PushTopicEvent>();
    let _ = event.decode::<crate::events::PlatformEvent>();
    let _ = event.decode::<crate::events::GenericEvent>();
    if let Err(e) = event.decode::<crate::events::ChangeEvent<AccountChange>>() {
        let _ = (e.to_string(), format!("{e:?}"));
    }
}

/// A record type with the compound and nullable fields the typed views support.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct AccountChange {
    #[serde(rename = "Name", default)]
    name: crate::events::Field<crate::events::PersonName>,
    #[serde(rename = "BillingAddress", default)]
    billing: crate::events::Field<crate::events::Address>,
    #[serde(rename = "Phone", default)]
    phone: crate::events::Field<String>,
}

/// A Bayeux error string `code:args:message`.
pub fn server_error(data: &[u8]) {
    server_error_str(&String::from_utf8_lossy(data));
}

fn server_error_str(text: &str) {
    let e = ServerError::parse(text);
    let _ = (
        e.is_unknown_client(),
        e.is_authentication_failure(),
        e.is_invalid_replay_id(),
        e.replay_id(),
    );
    // What we print parses back to the same error.
    assert_eq!(ServerError::parse(&e.to_string()), e, "{text:?}");
}

/// The `advice` object of a reply, read as the connection task reads it.
pub fn advice(data: &[u8]) {
    let Ok(advice) = serde_json::from_slice::<Advice>(data) else {
        return;
    };
    apply_advice(&advice);
    let text = serde_json::to_vec(&advice).expect("advice serializes");
    let again: Advice = serde_json::from_slice(&text).expect("serialized advice reads back");
    assert_eq!(again, advice);
}

fn apply_advice(advice: &Advice) {
    let (timeout, interval) = crate::connection::advised(advice, Duration::ZERO, Duration::ZERO);
    // The task adds these to `Instant::now()` together with its own delays.
    let _ = Instant::now() + timeout + interval + Duration::from_secs(3600);
}

/// An event's `data` (a JSON value) read for its replay marker, and a date string as it may
/// appear in an event or a storage file.
pub fn replay_marker(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(date) = parse_date(text) {
            let _ = format_date(date);
        }
        if let Ok(d) = crate::bayeux::Data::from_json(text) {
            event(Event::new(Arc::from("/event/Fuzz__e"), d));
        }
    }
}

fn marker_consistency(marker: &ReplayMarker) {
    if let Some(date) = marker.date {
        // A marker that was made can be stored.
        let _ = format_date(date);
    }
    assert!(!marker.is_after(marker));
}

/// A replay storage file, possibly corrupted: read, then written back as the storage does on
/// the next `set`.
pub fn file_storage(data: &[u8]) {
    // One scratch file per thread (the corpus replay test runs targets in parallel).
    let path = std::env::temp_dir().join(format!(
        "sfstream-fuzz-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, data).expect("write the fuzz input");
    let read = crate::replay::FileStorage::read(&path);
    let _ = std::fs::remove_file(&path);
    if let Ok(markers) = read {
        for marker in markers.values() {
            marker_consistency(marker);
        }
    }
}

/// An OAuth token endpoint reply. The first byte picks the HTTP status and content type.
pub fn token_reply(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let status = match pick % 4 {
        0 | 1 => http::StatusCode::OK,
        2 => http::StatusCode::BAD_REQUEST,
        _ => http::StatusCode::SERVICE_UNAVAILABLE,
    };
    let content_type = match pick / 4 % 3 {
        0 => Some("application/json;charset=UTF-8"),
        1 => Some("text/html"),
        _ => None,
    };
    let url =
        url::Url::parse("https://login.salesforce.com/services/oauth2/token").expect("a valid URL");
    match crate::auth::parse_token_reply(&url, status, content_type, body) {
        Ok(reply) => {
            let token = reply.token;
            // What the auth layer does with a token.
            let _ = http::HeaderValue::from_str(&token.authorization());
            let _ = token.cometd_endpoint(crate::DEFAULT_API_VERSION);
            let secret = token.access_token.expose();
            // The same token with another secret: if the secret shows up in that too, it is
            // part of another field or of the redaction text, not a leak.
            let mut other = token.clone();
            other.access_token = crate::auth::Secret::new("x");
            if secret.len() >= 8 && !format!("{other:?}").contains(secret) {
                assert!(
                    !format!("{token:?}").contains(secret),
                    "the access token leaked into Debug"
                );
            }
        }
        Err(e) => printable(&e),
    }
}

/// Server text reaches terminals and line-based logs through errors: no control characters.
fn printable(e: &crate::Error) {
    let shown = e.to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    let _ = format!("{e:?}");
}
