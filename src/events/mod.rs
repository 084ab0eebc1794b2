//! Typed Salesforce events: the four event families with their Salesforce field conventions
//! decoded once, here.
//!
//! | channel | type | record fields as |
//! |---|---|---|
//! | `/data/...ChangeEvent` (Change Data Capture) | [`ChangeEvent<T>`] | `T` (the changed fields) |
//! | `/topic/...` (PushTopic) | [`PushTopicEvent<T>`] | `T` (the `sobject`) |
//! | `/event/...__e` (platform events) | [`PlatformEvent<T>`] | `T` (the `payload`) |
//! | `/u/...` (generic streaming) | [`GenericEvent`] | a `String` |
//!
//! `T` is your own `serde::Deserialize` type, or (the default) a JSON map. Read one event with
//! [`Event::decode`](crate::Event::decode), or a whole subscription with
//! [`Subscription::typed`](crate::Subscription::typed) (a [`TypedStream`]). A payload that does not match `T` is an
//! [`ErrorKind::Decode`](crate::ErrorKind::Decode)
//! error naming the channel, the replay id and the path of the field that did not fit.
//!
//! ```
//! use sfstream::Event;
//! use sfstream::events::{ChangeEvent, ChangeType, Field};
//!
//! #[derive(serde::Deserialize)]
//! struct Account {
//!     #[serde(rename = "Phone", default)]
//!     phone: Field<String>,
//! }
//! let event = Event::from_json(r#"{"channel":"/data/AccountChangeEvent","data":{
//!   "payload":{"ChangeEventHeader":{"entityName":"Account","recordIds":["001xx000003DGb2AAG"],
//!     "changeType":"UPDATE","changeOrigin":"","transactionKey":"0002343d","sequenceNumber":1,
//!     "commitTimestamp":1795849202000,"commitNumber":10585193272713,"commitUser":"005xx000001X8Uz",
//!     "changedFields":["Phone"]},
//!   "Phone":null},"event":{"replayId":6}}}"#)?;
//! let change: ChangeEvent<Account> = event.decode()?;
//! assert_eq!(change.header.change_type, ChangeType::Update);
//! assert!(change.header.changed("Phone"));
//! // `null` (the field was cleared) is not the same as absent (the field did not change):
//! assert!(change.fields.unwrap().phone.is_null());
//! # Ok::<(), sfstream::Error>(())
//! ```
//!
//! # Salesforce's field conventions
//!
//! - **Only what changed.** A CDC `UPDATE` carries the changed fields only; a cleared field is
//!   sent as `null`. Declare record fields as [`Field<V>`] (with `#[serde(default)]`) to tell
//!   *absent* (unchanged) from *null* (cleared) from a value; `Option<V>` folds the first two.
//! - **Compound fields.** CDC sends a person's `Name` and addresses (`BillingAddress`,
//!   `MailingAddress`, ...) as nested objects holding only the changed parts: [`PersonName`]
//!   and [`Address`] decode them. `changedFields`/`nulledFields` then name the parts
//!   (`BillingAddress.City`); [`ChangeEventHeader::changed`] and
//!   [`nulled`](ChangeEventHeader::nulled) match a compound field by its name or any of its
//!   parts. PushTopic events send the flat fields instead (`BillingCity`).
//! - **Gap and overflow events** ([`ChangeType::is_gap`]) carry no field values: their
//!   [`ChangeEvent::fields`] is `None`, and you read the records named in the header from the
//!   REST API instead.
//! - **Field lists.** `changedFields`, `diffFields` and `nulledFields` are decoded as the field
//!   names the Streaming API sends. Where an event carries them bit-encoded (hex bitmaps such as
//!   `0x1A` or `3-0x04`, as the Pub/Sub API and some high-volume event shapes do), the entries
//!   are passed through verbatim: decoding them needs the field order of the event's Avro
//!   schema, which this crate does not fetch; [`ChangeEventHeader::has_bitmap_fields`] tells you
//!   that you have them. `diffFields` names fields whose value in the event is a diff of the
//!   text rather than the full text; the diff is passed through as it came.
//! - **Dates.** `createdDate`, `CreatedDate` (RFC 3339, also the `+0000` form of old API
//!   versions) and `commitTimestamp` (epoch milliseconds) are read as [`SystemTime`]s.
//!
//! Every struct and enum here is `#[non_exhaustive]`: Salesforce adds header fields and change
//! types, and an unknown change type or PushTopic event type decodes as an `Other(String)`
//! variant rather than failing.
//!
//! [`SystemTime`]: std::time::SystemTime

mod cdc;
pub(crate) mod decode;
mod fields;
mod generic;
mod platform;
mod push_topic;
mod stream;

pub use cdc::{ChangeEvent, ChangeEventHeader, ChangeType};
pub use fields::{Address, Field, PersonName};
pub use generic::GenericEvent;
pub use platform::PlatformEvent;
pub use push_topic::{PushTopicEvent, PushTopicEventType};
pub use stream::{TypedEvent, TypedStream};

use crate::Event;
use crate::error::Result;

/// A type that can be read from a delivered [`Event`]: the typed events of this module.
///
/// Implement it for your own event shapes to use them with
/// [`Event::decode`](crate::Event::decode) and typed subscriptions.
pub trait FromEvent: Sized {
    /// Read `event`. A payload that does not fit is an [`ErrorKind::Decode`] error.
    ///
    /// [`ErrorKind::Decode`]: crate::ErrorKind::Decode
    fn from_event(event: &Event) -> Result<Self>;
}

#[cfg(test)]
mod tests;
