//! Decoding helpers shared by the event families: a field path on every failure, and
//! Salesforce's two date forms.

use crate::Event;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

/// The event's `data` as a JSON object.
pub(crate) fn data_object(event: &Event) -> Result<Map<String, Value>> {
    let mut de = serde_json::Deserializer::from_str(event.data().get());
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Error::decode(event, join("data", &e.path().to_string()), e.inner()))
}

/// Decode `value`, found at `at` in the event, into `T`.
pub(crate) fn value<T: DeserializeOwned>(event: &Event, value: Value, at: &str) -> Result<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| Error::decode(event, join(at, &e.path().to_string()), e.inner()))
}

/// Remove `key` from `map` (found at `at`) and decode it; a missing key is a decode error.
pub(crate) fn take<T: DeserializeOwned>(
    event: &Event,
    map: &mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<T> {
    let path = join(at, key);
    match map.remove(key) {
        Some(v) => value(event, v, &path),
        None => Err(Error::decode(event, path, "missing field")),
    }
}

/// `at` followed by the path serde_path_to_error reports inside it (`.` when at the top).
pub(crate) fn join(at: &str, inner: &str) -> String {
    match inner {
        "" | "." => at.to_owned(),
        _ if at.is_empty() => inner.to_owned(),
        _ if inner.starts_with('[') => format!("{at}{inner}"),
        _ => format!("{at}.{inner}"),
    }
}

/// The `data.event` object common to every family: replay id, date, UUID, type.
#[derive(Deserialize, Default)]
pub(crate) struct EventSection {
    #[serde(default, rename = "replayId")]
    pub(crate) replay_id: Option<i64>,
    #[serde(default, rename = "createdDate", deserialize_with = "optional_date")]
    pub(crate) created_date: Option<SystemTime>,
    #[serde(default, rename = "EventUuid")]
    pub(crate) event_uuid: Option<String>,
    #[serde(default, rename = "type")]
    pub(crate) event_type: Option<String>,
    /// Before API 37.0 platform events carried the schema id here.
    #[serde(default)]
    pub(crate) schema: Option<String>,
}

impl EventSection {
    pub(crate) fn of(event: &Event, data: &mut Map<String, Value>) -> Result<Self> {
        match data.remove("event") {
            Some(v) => value(event, v, "data.event"),
            None => Ok(EventSection::default()),
        }
    }
}

/// `data.schema`, or the legacy `data.event.schema`.
pub(crate) fn schema(
    event: &Event,
    data: &mut Map<String, Value>,
    section: &mut EventSection,
) -> Result<Option<String>> {
    let top: Option<String> = match data.remove("schema") {
        Some(v) => value(event, v, "data.schema")?,
        None => None,
    };
    Ok(top.or_else(|| section.schema.take()))
}

/// An RFC 3339 date (`2026-11-28T07:00:01.000Z`, or `+0000` before API 37.0).
pub(crate) fn date<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    crate::replay::parse_date(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 date: {text:?}")))
}

pub(crate) fn optional_date<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SystemTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => crate::replay::parse_date(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 date: {text:?}"))),
    }
}

/// Epoch milliseconds, as in `commitTimestamp`.
pub(crate) fn epoch_ms<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let ms = u64::deserialize(d)?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn paths_join_like_field_accessors() {
        assert_eq!(join("data.payload", "."), "data.payload");
        assert_eq!(join("data.payload", "Amount__c"), "data.payload.Amount__c");
        assert_eq!(join("data.payload", "[2]"), "data.payload[2]");
        assert_eq!(join("", "a.b"), "a.b");
    }
}
