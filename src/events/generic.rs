//! Generic streaming: `/u/<channel>`.

use super::FromEvent;
use super::decode::{self, EventSection};
use crate::Event;
use crate::error::Result;
use std::time::SystemTime;

/// A generic streaming event: its payload is a string, whatever the publisher sent.
///
/// ```
/// use sfstream::Event;
/// use sfstream::events::GenericEvent;
/// let event = Event::from_json(r#"{"channel":"/u/Notifications","data":{
///   "event":{"createdDate":"2026-11-28T07:00:03.000Z","replayId":2},"payload":"hello"}}"#)?;
/// assert_eq!(event.decode::<GenericEvent>()?.payload, "hello");
/// # Ok::<(), sfstream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenericEvent {
    /// The payload (`data.payload`).
    pub payload: String,
    /// When the event was published (`data.event.createdDate`).
    pub created_date: Option<SystemTime>,
    /// The replay id (`data.event.replayId`).
    pub replay_id: Option<i64>,
}

impl FromEvent for GenericEvent {
    fn from_event(event: &Event) -> Result<Self> {
        let mut data = decode::data_object(event)?;
        let section = EventSection::of(event, &mut data)?;
        Ok(GenericEvent {
            payload: decode::take(event, &mut data, "payload", "data")?,
            created_date: section.created_date,
            replay_id: section.replay_id,
        })
    }
}
