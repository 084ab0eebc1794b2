//! Salesforce-shaped event payloads, one builder per channel family, serialized once into the
//! `{"data":..,"channel":..}` bytes every session queue and the retention log share.

use super::ids;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// The user id Salesforce-shaped events are created by.
pub(crate) const USER_ID: &str = "005xx000001X8UzAAK";
/// The org id used in tokens and identity URLs.
pub(crate) const ORG_ID: &str = "00Dxx0000001gPLEAY";

const CREATED_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Milliseconds since the Unix epoch.
pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `2026-11-28T07:00:01.000Z`, the form of `event.createdDate`.
pub(crate) fn created_date(t: SystemTime) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms(t)) * 1_000_000)
        .ok()
        .and_then(|d| d.format(CREATED_DATE).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Which Salesforce event shape a channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Family {
    PushTopic,
    PlatformEvent,
    /// `/data/...`, with the entity named by the channel, if it names one.
    ChangeEvent(Option<String>),
    Generic,
    Other,
}

fn family(channel: &str) -> Family {
    if channel.starts_with("/topic/") {
        Family::PushTopic
    } else if channel.starts_with("/event/") {
        Family::PlatformEvent
    } else if let Some(name) = channel.strip_prefix("/data/") {
        // AccountChangeEvent -> Account, Foo__ChangeEvent -> Foo__c; ChangeEvents and custom
        // channels (Foo__chn) carry several entities.
        let entity = name
            .strip_suffix("ChangeEvent")
            .filter(|e| !e.is_empty())
            .map(|e| match e.strip_suffix("__") {
                Some(custom) => format!("{custom}__c"),
                None => e.to_owned(),
            });
        Family::ChangeEvent(entity)
    } else if channel.starts_with("/u/") {
        Family::Generic
    } else {
        Family::Other
    }
}

/// The multi-entity change channel; every change event is also delivered there.
pub(crate) const ALL_CHANGES: &str = "/data/ChangeEvents";

/// For a change event published on `channel`: its per-entity channel (`/data/<Entity>ChangeEvent`,
/// `/data/<Name>__ChangeEvent` for custom objects). On `/data/ChangeEvents` the entity is
/// `fields["entityName"]` (default `Account`). `None` for other channels (custom `__chn`).
pub(crate) fn entity_channel(channel: &str, fields: &Value) -> Option<String> {
    if channel == ALL_CHANGES {
        let entity = fields["entityName"].as_str().unwrap_or("Account");
        return Some(match entity.strip_suffix("__c") {
            Some(custom) => format!("/data/{custom}__ChangeEvent"),
            None => format!("/data/{entity}ChangeEvent"),
        });
    }
    match family(channel) {
        Family::ChangeEvent(Some(_)) => Some(channel.to_owned()),
        _ => None,
    }
}

/// A gap event (`GAP_CREATE`, `GAP_UPDATE`, `GAP_DELETE`, `GAP_UNDELETE`) or an overflow event
/// (`GAP_OVERFLOW`): header only, no record fields, `sequenceNumber` 1, no changed fields (Change
/// Data Capture developer guide, "Gap Events" and "Overflow Events"). An overflow event names no
/// record: its `recordIds` holds the placeholder `000000000000000AAA` (not verified).
pub(crate) fn gap_data(
    channel: &str,
    change_type: &str,
    record_ids: &[&str],
    replay_id: i64,
    now: SystemTime,
) -> Value {
    let entity = match family(channel) {
        Family::ChangeEvent(Some(e)) => e,
        _ => "Account".to_owned(),
    };
    let ids: Vec<&str> = if record_ids.is_empty() && change_type == "GAP_OVERFLOW" {
        vec!["000000000000000AAA"]
    } else {
        record_ids.to_vec()
    };
    json!({
        "schema": ids::schema_id(channel),
        "payload": {"ChangeEventHeader": {
            "entityName": entity,
            "recordIds": ids,
            "changeType": change_type,
            "changeOrigin": "",
            "transactionKey": ids::uuid(),
            "sequenceNumber": 1,
            "commitTimestamp": epoch_ms(now),
            "commitNumber": 10_585_193_000_000u64 + ids::sequence(),
            "commitUser": USER_ID,
            "changedFields": [],
        }},
        "event": {"replayId": replay_id},
    })
}

/// The `data` of an event published with [`Emulator::publish`](super::Emulator::publish).
pub(crate) fn salesforce_data(
    channel: &str,
    fields: Value,
    replay_id: i64,
    now: SystemTime,
) -> Value {
    match (family(channel), fields) {
        (Family::Generic, fields) => generic(fields, replay_id, now),
        (Family::PushTopic, Value::Object(map)) => push_topic(map, replay_id, now),
        (Family::PlatformEvent, Value::Object(map)) => platform_event(channel, map, replay_id, now),
        (Family::ChangeEvent(entity), Value::Object(map)) => {
            change_event(channel, entity, map, replay_id, now)
        }
        // Other channels, and typed families given something other than an object of fields.
        (_, other) => custom_data(other, replay_id, now),
    }
}

fn push_topic(mut fields: Map<String, Value>, replay_id: i64, now: SystemTime) -> Value {
    let kind = fields
        .remove("type")
        .unwrap_or_else(|| Value::String("created".into()));
    let mut sobject = Map::new();
    let id = fields
        .remove("Id")
        .unwrap_or_else(|| Value::String(ids::record_id("a00")));
    sobject.insert("Id".into(), id);
    sobject.extend(fields);
    json!({
        "event": {"createdDate": created_date(now), "replayId": replay_id, "type": kind},
        "sobject": sobject,
    })
}

fn platform_event(
    channel: &str,
    fields: Map<String, Value>,
    replay_id: i64,
    now: SystemTime,
) -> Value {
    let mut payload = Map::new();
    payload.insert("CreatedDate".into(), created_date(now).into());
    payload.insert("CreatedById".into(), USER_ID.into());
    payload.extend(fields);
    json!({
        "schema": ids::schema_id(channel),
        "payload": payload,
        "event": {"EventUuid": ids::uuid(), "replayId": replay_id},
    })
}

fn change_event(
    channel: &str,
    entity: Option<String>,
    mut fields: Map<String, Value>,
    replay_id: i64,
    now: SystemTime,
) -> Value {
    let change_type = fields
        .remove("changeType")
        .unwrap_or_else(|| Value::String("UPDATE".into()));
    let entity = match fields.remove("entityName") {
        Some(Value::String(e)) => e,
        _ => entity.unwrap_or_else(|| "Account".to_owned()),
    };
    // A change event names its record in the header, not as a payload field.
    let record_id = fields.remove("Id").unwrap_or_else(|| {
        let prefix = if entity == "Account" { "001" } else { "a00" };
        Value::String(ids::record_id(prefix))
    });
    let changed: Vec<Value> = fields.keys().map(|k| Value::String(k.clone())).collect();
    let header = json!({
        "entityName": entity,
        "recordIds": [record_id],
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/62.0;client=emulator",
        "transactionKey": ids::uuid(),
        "sequenceNumber": 1,
        "commitTimestamp": epoch_ms(now),
        "commitNumber": 10_585_193_000_000u64 + ids::sequence(),
        "commitUser": USER_ID,
        "changedFields": changed,
    });
    let mut payload = Map::new();
    payload.insert("ChangeEventHeader".into(), header);
    payload.extend(fields);
    json!({
        "schema": ids::schema_id(channel),
        "payload": payload,
        "event": {"replayId": replay_id},
    })
}

fn generic(fields: Value, replay_id: i64, now: SystemTime) -> Value {
    let payload = match fields {
        Value::String(s) => s,
        other => other.to_string(),
    };
    json!({
        "event": {"createdDate": created_date(now), "replayId": replay_id},
        "payload": payload,
    })
}

/// Data used as given, with `event.replayId` and `event.createdDate` set; non-object data is
/// wrapped as `{"event":{..},"payload":data}`.
pub(crate) fn custom_data(data: Value, replay_id: i64, now: SystemTime) -> Value {
    match data {
        Value::Object(mut map) => {
            let event = map
                .entry("event")
                .or_insert_with(|| Value::Object(Map::new()));
            if !event.is_object() {
                *event = Value::Object(Map::new());
            }
            if let Value::Object(event) = event {
                event.insert("createdDate".into(), created_date(now).into());
                event.insert("replayId".into(), replay_id.into());
            }
            Value::Object(map)
        }
        other => json!({
            "event": {"createdDate": created_date(now), "replayId": replay_id},
            "payload": other,
        }),
    }
}

/// The full message bytes, `{"data":<data>,"channel":"<channel>"}`, serialized once.
pub(crate) fn frame(channel: &str, data: &Value) -> Bytes {
    // Serializing a Value into a Vec cannot fail; fall back to null data rather than panic.
    let data = serde_json::to_vec(data).unwrap_or_else(|_| b"null".to_vec());
    let channel = serde_json::to_vec(channel).unwrap_or_else(|_| b"\"\"".to_vec());
    let mut out = Vec::with_capacity(data.len() + channel.len() + 20);
    out.extend_from_slice(b"{\"data\":");
    out.extend_from_slice(&data);
    out.extend_from_slice(b",\"channel\":");
    out.extend_from_slice(&channel);
    out.push(b'}');
    Bytes::from(out)
}

/// Events serialized ahead of time by [`Emulator::prepare`](super::Emulator::prepare), delivered
/// by [`Emulator::push_prepared`](super::Emulator::push_prepared).
///
/// Cloning is cheap (reference counts); pushing the same batch again delivers the same bytes, so
/// its replay ids repeat.
#[derive(Clone)]
pub struct PreparedBatch {
    pub(crate) channel: Arc<str>,
    pub(crate) events: Arc<[(i64, Bytes)]>,
}

impl PreparedBatch {
    /// The number of events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The channel the events go to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The replay ids assigned to the events, in order.
    pub fn replay_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.events.iter().map(|(id, _)| *id)
    }

    /// The serialized size of all events, in bytes.
    pub fn byte_len(&self) -> usize {
        self.events.iter().map(|(_, b)| b.len()).sum()
    }

    /// The body of a connect response carrying this batch, byte for byte as the emulator
    /// serves it: the events, then a successful `/meta/connect` reply. For parser benchmarks.
    pub fn connect_response(&self) -> Bytes {
        let reply = br#"{"channel":"/meta/connect","id":"2","clientId":"emulator","successful":true,"advice":{"interval":0,"timeout":110000,"reconnect":"retry"}}"#;
        let mut out = Vec::with_capacity(self.byte_len() + self.events.len() + reply.len() + 2);
        out.push(b'[');
        for (_, event) in self.events.iter() {
            out.extend_from_slice(event);
            out.push(b',');
        }
        out.extend_from_slice(reply);
        out.push(b']');
        Bytes::from(out)
    }
}

impl std::fmt::Debug for PreparedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBatch")
            .field("channel", &self.channel)
            .field("len", &self.events.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_849_201_000)
    }

    #[test]
    fn families() {
        assert_eq!(family("/topic/X"), Family::PushTopic);
        assert_eq!(family("/event/X__e"), Family::PlatformEvent);
        assert_eq!(family("/event/X__chn"), Family::PlatformEvent);
        assert_eq!(
            family("/data/AccountChangeEvent"),
            Family::ChangeEvent(Some("Account".into()))
        );
        assert_eq!(
            family("/data/Foo__ChangeEvent"),
            Family::ChangeEvent(Some("Foo__c".into()))
        );
        assert_eq!(family("/data/ChangeEvents"), Family::ChangeEvent(None));
        assert_eq!(family("/u/N"), Family::Generic);
        assert_eq!(family("/x/y"), Family::Other);
    }

    #[test]
    fn created_date_shape() {
        assert_eq!(created_date(at()), "2026-11-28T07:00:01.000Z");
    }

    #[test]
    fn custom_data_keeps_fields() {
        let d = custom_data(json!({"a": 1, "event": {"x": true}}), 7, at());
        assert_eq!(d["a"], 1);
        assert_eq!(d["event"]["x"], true);
        assert_eq!(d["event"]["replayId"], 7);
        let d = custom_data(json!([1]), 8, at());
        assert_eq!(d["payload"], json!([1]));
    }

    #[test]
    fn frame_is_a_message() {
        let b = frame("/u/N", &json!({"x": "é"}));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, json!({"channel": "/u/N", "data": {"x": "é"}}));
    }
}
