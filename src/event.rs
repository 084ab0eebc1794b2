//! Layer 8: a typed view over an event.
//!
//! An [`Event`] is the `{channel, data}` message as received, with `data` kept as raw JSON. The
//! accessors read only what they need:
//!
//! ```
//! use sfstream::Event;
//! let ev = Event::from_json(r#"{"channel":"/event/Order__e","data":{"schema":"x",
//! "payload":{"CreatedDate":"2026-11-28T07:00:02.114Z","Amount__c":249.5},
//! "event":{"EventUuid":"8d2b","replayId":17}}}"#)?;
//! assert_eq!(ev.channel(), "/event/Order__e");
//! assert_eq!(ev.replay_id(), Some(17));
//! #[derive(serde::Deserialize)]
//! struct Order { #[serde(rename = "Amount__c")] amount: f64 }
//! assert_eq!(ev.deserialize::<Order>()?.amount, 249.5);
//! // The message as received, `data` byte for byte:
//! assert!(serde_json::to_string(&ev)?.starts_with(r#"{"channel":"/event/Order__e","data":{"schema":"x","#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::bayeux::{Data, Message};
use crate::error::{Error, ErrorKind, Result};
use crate::events::FromEvent;
use crate::events::decode;
use crate::replay::ReplayMarker;
use crate::replay::tracker::Ticket;
use serde::de::DeserializeOwned;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// One event delivered on a subscribed channel.
///
/// Cloning is cheap: the channel name and the raw JSON are shared.
#[derive(Clone)]
pub struct Event {
    channel: Arc<str>,
    data: Data,
    /// Which delivered event this is, when a replay storage tracks processing.
    ticket: Option<Ticket>,
    /// What the ack also releases (a hand-off's place among the events out); shared by clones.
    hold: Option<Arc<dyn Hold>>,
}

/// Something an event holds until it is acknowledged, besides its ticket: a
/// [`HandOff`](crate::HandOff)'s place. Released by the first `ack()` of any clone, or when the
/// last clone is dropped.
pub(crate) trait Hold: Send + Sync {
    fn acked(&self);
}

impl Event {
    pub(crate) fn new(channel: Arc<str>, data: Data) -> Self {
        Event {
            channel,
            data,
            ticket: None,
            hold: None,
        }
    }

    pub(crate) fn set_hold(&mut self, hold: Arc<dyn Hold>) {
        self.hold = Some(hold);
    }

    pub(crate) fn set_ticket(&mut self, ticket: Ticket) {
        self.ticket = Some(ticket);
    }

    /// Mark the event processed. With a replay storage, the stored marker then moves to the
    /// newest event of the channel before which every delivered event is processed, so events
    /// may be acknowledged in any order (concurrent workers, `buffer_unordered`) without
    /// skipping one that is still in progress.
    ///
    /// Under [`CommitPolicy::Manual`](crate::replay::CommitPolicy::Manual) this is the only way
    /// an event counts as processed; under `AfterProcessed` it says so early (before the stream
    /// is polled again, e.g. for the last event before you stop). Clones share the
    /// acknowledgement. Does nothing under `OnReceive` or without a storage, except for an
    /// event from a [`HandOff`](crate::HandOff), whose ack also frees its place (and, under
    /// `OnReceive`, is what stores its marker).
    ///
    /// ```no_run
    /// # async fn f(mut sub: sfstream::Subscription) -> sfstream::Result<()> {
    /// use futures::TryStreamExt;
    /// use sfstream::NoticeExt;
    /// // Notices (an outage, a replay gap) go to the callback; `?` ends only on real errors.
    /// let mut events = sub.on_notice(|notice| eprintln!("warning: {notice}"));
    /// while let Some(event) = events.try_next().await? {
    ///     // ... write it to the database ...
    ///     event.ack();
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ack(&self) {
        if let Some(ticket) = &self.ticket {
            ticket.done(&self.channel);
        }
        if let Some(hold) = &self.hold {
            hold.acked();
        }
    }

    /// The event's replay marker: `data.event.replayId` with the creation date (from
    /// `event.createdDate`, `payload.ChangeEventHeader.commitTimestamp` or
    /// `payload.CreatedDate`). `None` if the event has no replay id.
    pub fn replay_marker(&self) -> Option<ReplayMarker> {
        ReplayMarker::of(&self.data)
    }

    /// Read an event from its JSON form `{"channel": ..., "data": ...}` (tests, replays from a
    /// file).
    pub fn from_json(text: &str) -> Result<Self> {
        let batch = crate::bayeux::parse_batch(bytes::Bytes::from(format!("[{text}]")))?;
        let message = batch.messages.into_iter().next();
        match message {
            Some(Message {
                channel,
                data: Some(data),
                ..
            }) => Ok(Event::new(channel.into(), data)),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                "an event needs a channel and data",
            )),
        }
    }

    /// The channel the event arrived on, e.g. `/event/Order__e` or `/data/AccountChangeEvent`.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The raw `data` JSON.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The event's replay id (`data.event.replayId`), if present.
    pub fn replay_id(&self) -> Option<i64> {
        self.header().ok()?.event?.replay_id
    }

    /// `data.event.EventUuid` of platform events (API 52.0+), useful to de-duplicate.
    pub fn event_uuid(&self) -> Option<String> {
        self.header().ok()?.event?.event_uuid
    }

    /// The event read as one of the typed events of [`events`](crate::events), e.g.
    /// `event.decode::<ChangeEvent<Account>>()`. Fails with
    /// [`ErrorKind::Decode`] naming the field that did not fit.
    pub fn decode<T: FromEvent>(&self) -> Result<T> {
        T::from_event(self)
    }

    /// The payload deserialized into `T`: `data.sobject` for PushTopic events (`/topic/...`),
    /// `data.payload` for everything else (platform events, Change Data Capture, generic).
    /// Fails with [`ErrorKind::Decode`] naming the field that did not fit.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        let field = if self.channel.starts_with("/topic/") {
            "sobject"
        } else {
            "payload"
        };
        self.data_field(field)
    }

    /// The whole `data` deserialized into `T`.
    pub fn deserialize_data<T: DeserializeOwned>(&self) -> Result<T> {
        let mut de = serde_json::Deserializer::from_str(self.data.get());
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            Error::decode(self, decode::join("data", &e.path().to_string()), e.inner())
        })
    }

    /// One field of `data` deserialized into `T`.
    pub fn data_field<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let mut data = decode::data_object(self)?;
        decode::take(self, &mut data, name, "data")
    }

    /// The event as a `{channel, data}` message.
    pub fn into_message(self) -> Message {
        let mut m = Message::new(self.channel.as_ref());
        m.data = Some(self.data);
        m
    }

    fn header(&self) -> std::result::Result<Header, serde_json::Error> {
        self.data.deserialize()
    }
}

/// The parts of `data` every Salesforce event family shares; everything else is skipped.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    event: Option<EventHeader>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventHeader {
    #[serde(default)]
    replay_id: Option<i64>,
    #[serde(default, rename = "EventUuid")]
    event_uuid: Option<String>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("channel", &self.channel)
            .field("data", &self.data)
            .finish()
    }
}

/// `{"channel": ..., "data": ...}` with `data` exactly as received.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 2)?;
        st.serialize_field("channel", &*self.channel)?;
        st.serialize_field("data", &self.data)?;
        st.end()
    }
}
