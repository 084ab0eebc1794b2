//! PushTopic events: `/topic/<name>`.

use super::FromEvent;
use super::decode::{self, EventSection};
use crate::Event;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;
use std::time::SystemTime;

/// A PushTopic event: what happened to the record and the record's fields (those the topic's
/// query selects) as `T`.
///
/// ```
/// use sfstream::Event;
/// use sfstream::events::{PushTopicEvent, PushTopicEventType};
/// let event = Event::from_json(r#"{"channel":"/topic/InvoiceStatementUpdates","data":{
///   "event":{"createdDate":"2026-11-28T07:00:04.000Z","replayId":4202,"type":"created"},
///   "sobject":{"Id":"a00xx000000bJdSAAU","Name":"INV-0002"}}}"#)?;
/// let invoice: PushTopicEvent = event.decode()?;
/// assert_eq!(invoice.event_type, PushTopicEventType::Created);
/// assert_eq!(invoice.sobject["Name"], "INV-0002");
/// # Ok::<(), sfstream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PushTopicEvent<T = Map<String, Value>> {
    /// What happened to the record (`data.event.type`).
    pub event_type: PushTopicEventType,
    /// When the change happened (`data.event.createdDate`).
    pub created_date: SystemTime,
    /// The replay id (`data.event.replayId`).
    pub replay_id: Option<i64>,
    /// The record's fields (`data.sobject`), flat: `BillingCity`, not `BillingAddress.City`.
    pub sobject: T,
}

/// `data.event.type` of a PushTopic event. Values this crate does not know decode as
/// [`Other`](PushTopicEventType::Other).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PushTopicEventType {
    /// `created`.
    Created,
    /// `updated`.
    Updated,
    /// `deleted`.
    Deleted,
    /// `undeleted`.
    Undeleted,
    /// A value this version does not know, as sent.
    Other(String),
}

impl PushTopicEventType {
    /// The value as Salesforce spells it.
    pub fn as_str(&self) -> &str {
        match self {
            PushTopicEventType::Created => "created",
            PushTopicEventType::Updated => "updated",
            PushTopicEventType::Deleted => "deleted",
            PushTopicEventType::Undeleted => "undeleted",
            PushTopicEventType::Other(s) => s,
        }
    }
}

impl From<&str> for PushTopicEventType {
    fn from(s: &str) -> Self {
        match s {
            "created" => PushTopicEventType::Created,
            "updated" => PushTopicEventType::Updated,
            "deleted" => PushTopicEventType::Deleted,
            "undeleted" => PushTopicEventType::Undeleted,
            other => PushTopicEventType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for PushTopicEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: DeserializeOwned> FromEvent for PushTopicEvent<T> {
    fn from_event(event: &Event) -> Result<Self> {
        let mut data = decode::data_object(event)?;
        let section = EventSection::of(event, &mut data)?;
        let missing =
            |field: &str| Error::decode(event, format!("data.event.{field}"), "missing field");
        let event_type = section.event_type.ok_or_else(|| missing("type"))?;
        let created_date = section.created_date.ok_or_else(|| missing("createdDate"))?;
        let sobject = decode::take(event, &mut data, "sobject", "data")?;
        Ok(PushTopicEvent {
            event_type: PushTopicEventType::from(event_type.as_str()),
            created_date,
            replay_id: section.replay_id,
            sobject,
        })
    }
}
