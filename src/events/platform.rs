//! Platform events: `/event/<Name>__e`.

use super::FromEvent;
use super::decode::{self, EventSection};
use crate::Event;
use crate::error::Result;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::time::SystemTime;

/// A platform event: its payload as `T`, plus the standard fields every platform event has.
///
/// `T` receives the whole payload, `CreatedDate` and `CreatedById` included (declare them in
/// `T` if you like; they are also read into the fields below).
///
/// ```
/// use sfstream::Event;
/// use sfstream::events::PlatformEvent;
/// #[derive(serde::Deserialize)]
/// struct Order {
///     #[serde(rename = "Amount__c")]
///     amount: f64,
/// }
/// let event = Event::from_json(r#"{"channel":"/event/Order__e","data":{"schema":"x",
///   "payload":{"CreatedDate":"2026-11-28T07:00:02.114Z","CreatedById":"005xx000001X8Uz",
///     "Amount__c":249.5},"event":{"EventUuid":"8d2b","replayId":17}}}"#)?;
/// let order: PlatformEvent<Order> = event.decode()?;
/// assert_eq!(order.payload.amount, 249.5);
/// assert_eq!(order.event_uuid.as_deref(), Some("8d2b"));
/// # Ok::<(), sfstream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlatformEvent<T = Map<String, Value>> {
    /// The event's fields (`data.payload`).
    pub payload: T,
    /// When the event was published (`payload.CreatedDate`).
    pub created_date: SystemTime,
    /// Who published it (`payload.CreatedById`).
    pub created_by_id: String,
    /// The event's UUID (`data.event.EventUuid`, API 52.0 and later), to de-duplicate.
    pub event_uuid: Option<String>,
    /// The replay id (`data.event.replayId`).
    pub replay_id: Option<i64>,
    /// The schema id of the payload (`data.schema`, or `data.event.schema` before API 37.0).
    pub schema: Option<String>,
}

#[derive(Deserialize)]
struct Standard {
    #[serde(rename = "CreatedDate", deserialize_with = "decode::date")]
    created_date: SystemTime,
    #[serde(rename = "CreatedById")]
    created_by_id: String,
}

impl<T: DeserializeOwned> FromEvent for PlatformEvent<T> {
    fn from_event(event: &Event) -> Result<Self> {
        let mut data = decode::data_object(event)?;
        let mut section = EventSection::of(event, &mut data)?;
        let schema = decode::schema(event, &mut data, &mut section)?;
        let payload: Value = decode::take(event, &mut data, "payload", "data")?;
        let standard: Standard = decode::value(event, payload.clone(), "data.payload")?;
        Ok(PlatformEvent {
            payload: decode::value(event, payload, "data.payload")?,
            created_date: standard.created_date,
            created_by_id: standard.created_by_id,
            event_uuid: section.event_uuid,
            replay_id: section.replay_id,
            schema,
        })
    }
}
