use crate::bayeux::Data;
use serde::Deserialize;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where a channel got to: an event's replay id and creation date.
///
/// Markers are ordered by date when both have one (real timestamps, never strings), then by
/// replay id; a stored marker never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayMarker {
    /// When the event was created, if the event said.
    pub date: Option<SystemTime>,
    /// The event's replay id (opaque and not contiguous; can exceed 2^32).
    pub replay_id: i64,
}

impl ReplayMarker {
    /// A marker for `replay_id` created at `date`.
    pub fn new(replay_id: i64, date: Option<SystemTime>) -> Self {
        ReplayMarker { date, replay_id }
    }

    /// Whether `self` is past `other`.
    pub fn is_after(&self, other: &ReplayMarker) -> bool {
        match (self.date, other.date) {
            (Some(a), Some(b)) if a != b => a > b,
            _ => self.replay_id > other.replay_id,
        }
    }

    /// Read the marker of an event's `data`: `event.replayId`, and the date from
    /// `event.createdDate`, else `payload.ChangeEventHeader.commitTimestamp` (epoch ms), else
    /// `payload.CreatedDate`. `None` without a replay id.
    pub(crate) fn of(data: &Data) -> Option<ReplayMarker> {
        let wire: Wire = data.deserialize().ok()?;
        let event = wire.event?;
        let replay_id = event.replay_id?;
        let payload = wire.payload;
        let date = event
            .created_date
            .as_deref()
            .and_then(parse_date)
            .or_else(|| {
                let ms = payload
                    .as_ref()?
                    .change_event_header
                    .as_ref()?
                    .commit_timestamp?;
                storable(SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))?)
            })
            .or_else(|| {
                payload
                    .as_ref()?
                    .created_date
                    .as_deref()
                    .and_then(parse_date)
            });
        Some(ReplayMarker { date, replay_id })
    }
}

/// RFC 3339 (`2026-11-28T07:00:01.000Z`), and the `+0000` offsets of API versions before 37.
pub(crate) fn parse_date(text: &str) -> Option<SystemTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return storable(t.into());
    }
    // 2016-03-29T16:40:08.208+0000: insert the colon RFC 3339 wants. Server data: the split
    // point may fall inside a multibyte character.
    let split = text.len().checked_sub(2)?;
    let (head, tail) = (text.get(..split)?, text.get(split..)?);
    let fixed = format!("{head}:{tail}");
    storable(OffsetDateTime::parse(&fixed, &Rfc3339).ok()?.into())
}

/// The date if it can be written back as RFC 3339 in UTC (years 0 to 9999); a date that
/// cannot be stored must not make a marker.
fn storable(date: SystemTime) -> Option<SystemTime> {
    utc(date)
        .filter(|t| (0..=9999).contains(&t.year()))
        .map(|_| date)
}

/// `OffsetDateTime::from(SystemTime)` without its panic on dates out of `time`'s range.
fn utc(date: SystemTime) -> Option<OffsetDateTime> {
    match date.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => OffsetDateTime::UNIX_EPOCH.checked_add(after.try_into().ok()?),
        Err(e) => OffsetDateTime::UNIX_EPOCH.checked_sub(e.duration().try_into().ok()?),
    }
}

/// RFC 3339 in UTC; empty for a date no RFC 3339 text can hold (only a marker built by hand
/// with [`ReplayMarker::new`] can have one).
pub(crate) fn format_date(date: SystemTime) -> String {
    utc(date)
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    event: Option<WireEvent>,
    // A generic event's payload is a string: not an object, so no date in it.
    #[serde(default, deserialize_with = "object_or_none")]
    payload: Option<WirePayload>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    #[serde(default)]
    replay_id: Option<i64>,
    #[serde(default)]
    created_date: Option<String>,
}

#[derive(Deserialize)]
struct WirePayload {
    #[serde(default, rename = "ChangeEventHeader")]
    change_event_header: Option<WireHeader>,
    #[serde(default, rename = "CreatedDate")]
    created_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireHeader {
    #[serde(default)]
    commit_timestamp: Option<u64>,
}

fn object_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<WirePayload>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Object(_) => serde_json::from_value(v).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/data/salesforce-messages.json")).unwrap()
    }

    fn marker(v: &Value) -> Option<ReplayMarker> {
        ReplayMarker::of(&Data::from_json(v["data"].to_string()).unwrap())
    }

    fn at(text: &str) -> SystemTime {
        parse_date(text).unwrap()
    }

    #[test]
    fn every_event_family() {
        let v = vectors();
        let batch = v["connect_with_events_numeric_ids"].as_array().unwrap();
        // PushTopic: event.createdDate
        assert_eq!(
            marker(&batch[0]),
            Some(ReplayMarker::new(
                4201,
                Some(at("2026-11-28T07:00:01.000Z"))
            ))
        );
        // Platform event: payload.CreatedDate
        assert_eq!(
            marker(&batch[1]),
            Some(ReplayMarker::new(17, Some(at("2026-11-28T07:00:02.114Z"))))
        );
        // CDC: ChangeEventHeader.commitTimestamp (epoch ms)
        let cdc = SystemTime::UNIX_EPOCH + Duration::from_millis(1795849202000);
        assert_eq!(marker(&batch[2]), Some(ReplayMarker::new(6, Some(cdc))));
        // Generic: event.createdDate, string payload
        assert_eq!(
            marker(&batch[3]),
            Some(ReplayMarker::new(2, Some(at("2026-11-28T07:00:03.000Z"))))
        );
        // Legacy schema-inside-event platform event
        let legacy = &v["legacy_platform_event_schema_inside_event"][0];
        assert_eq!(
            marker(legacy),
            Some(ReplayMarker::new(3, Some(at("2017-04-09T18:31:40Z"))))
        );
    }

    #[test]
    fn missing_pieces() {
        let m = |d: Value| ReplayMarker::of(&Data::from_json(d.to_string()).unwrap());
        assert_eq!(m(serde_json::json!({"payload": {}})), None);
        assert_eq!(m(serde_json::json!({"event": {}})), None);
        assert_eq!(
            m(serde_json::json!({"event": {"replayId": 5}})),
            Some(ReplayMarker::new(5, None))
        );
        assert_eq!(m(serde_json::json!("just text")), None);
        assert_eq!(
            m(
                serde_json::json!({"event": {"replayId": 5_000_000_000_i64, "createdDate": "garbage"}})
            ),
            Some(ReplayMarker::new(5_000_000_000, None))
        );
    }

    #[test]
    fn multibyte_character_at_the_end_of_a_date_is_no_date() {
        for text in ["2026-11-28€", "€", "2016-03-29T16:40:08.208+00Ō"] {
            assert_eq!(parse_date(text), None, "{text}");
        }
        assert_eq!(
            marker(
                &serde_json::json!({"data": {"event": {"replayId": 7, "createdDate": "2026-11-28€"}}})
            ),
            Some(ReplayMarker::new(7, None))
        );
    }

    #[test]
    fn dates_that_cannot_be_stored_make_no_marker_date() {
        // Past year 9999 in UTC: RFC 3339 cannot write them back.
        assert_eq!(parse_date("9999-12-31T23:59:59-23:59"), None);
        assert_eq!(parse_date("0000-01-01T00:00:00+23:59"), None);
        let far = serde_json::json!({"data": {"event": {"replayId": 8},
            "payload": {"ChangeEventHeader": {"commitTimestamp": u64::MAX}}}});
        assert_eq!(marker(&far), Some(ReplayMarker::new(8, None)));
        // A hand-made marker out of range formats as nothing instead of panicking.
        let huge = SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(format_date(huge), "");
        assert_eq!(
            parse_date(&format_date(at("9999-12-31T23:59:59Z"))),
            Some(at("9999-12-31T23:59:59Z"))
        );
    }

    #[test]
    fn dates_compare_as_time_not_text() {
        // As strings "2026-11-28T07:00:01+01:00" > "2026-11-28T06:30:00Z"; as time it is earlier.
        let a = ReplayMarker::new(10, Some(at("2026-11-28T07:00:01+01:00")));
        let b = ReplayMarker::new(9, Some(at("2026-11-28T06:30:00Z")));
        assert!(b.is_after(&a));
        assert!(!a.is_after(&b));
        // Legacy +0000 offsets.
        assert_eq!(
            at("2016-03-29T16:40:08.208+0000"),
            at("2016-03-29T16:40:08.208Z")
        );
        // Same date: the replay id decides; no date: the replay id decides.
        let c = ReplayMarker::new(11, a.date);
        assert!(c.is_after(&a));
        assert!(ReplayMarker::new(12, None).is_after(&a));
        assert!(!a.is_after(&a));
    }
}
