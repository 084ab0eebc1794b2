//! Change Data Capture: `/data/ChangeEvents`, `/data/<Object>ChangeEvent`.

use super::FromEvent;
use super::decode::{self, EventSection};
use crate::Event;
use crate::error::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::fmt;
use std::time::SystemTime;

/// A Change Data Capture event: the [`ChangeEventHeader`] and the record fields as `T`.
///
/// `T` receives the payload without its `ChangeEventHeader`: for `CREATE` the fields set, for
/// `UPDATE` the fields that changed (cleared ones as `null`, see [`Field`](super::Field)), for
/// `DELETE` and `UNDELETE` usually none. Gap and overflow events carry no fields: `fields` is
/// `None` for them and `Some` otherwise.
///
/// ```
/// # fn f(event: sfstream::Event) -> sfstream::Result<()> {
/// use sfstream::events::{ChangeEvent, Field};
/// #[derive(serde::Deserialize)]
/// struct Account {
///     #[serde(rename = "Name", default)]
///     name: Field<String>,
/// }
/// let change: ChangeEvent<Account> = event.decode()?;
/// if change.header.change_type.is_gap() {
///     // re-read change.header.record_ids from the REST API
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChangeEvent<T = Map<String, Value>> {
    /// What changed, where, when and by whom.
    pub header: ChangeEventHeader,
    /// The record fields; `None` for gap and overflow events.
    pub fields: Option<T>,
    /// The replay id (`data.event.replayId`).
    pub replay_id: Option<i64>,
    /// The schema id of the payload (`data.schema`).
    pub schema: Option<String>,
}

/// `payload.ChangeEventHeader` of a Change Data Capture event, every field Salesforce
/// documents.
///
/// The field lists are passed through as sent; see the [module docs](super) for compound
/// fields and bit-encoded lists. A list Salesforce leaves out reads as empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ChangeEventHeader {
    /// The API name of the object, e.g. `Account` (`entityName`).
    pub entity_name: String,
    /// The ids of the changed records: one, or several when one transaction made the same
    /// change to many (`recordIds`). An overflow event names no particular record (a
    /// placeholder id such as `000000000000000AAA`).
    #[serde(default)]
    pub record_ids: Vec<String>,
    /// The operation (`changeType`).
    pub change_type: ChangeType,
    /// Which client made the change, e.g. `com/salesforce/api/soap/58.0;client=Astro`; often
    /// empty (`changeOrigin`).
    #[serde(default)]
    pub change_origin: String,
    /// The transaction the change belongs to (`transactionKey`).
    #[serde(default)]
    pub transaction_key: String,
    /// The position of this change within its transaction, from 1 (`sequenceNumber`).
    #[serde(default)]
    pub sequence_number: i64,
    /// When the transaction was committed (`commitTimestamp`, epoch milliseconds).
    #[serde(deserialize_with = "decode::epoch_ms")]
    pub commit_timestamp: SystemTime,
    /// The system change number of the commit (`commitNumber`).
    #[serde(default)]
    pub commit_number: i64,
    /// The id of the user who committed the change (`commitUser`).
    #[serde(default)]
    pub commit_user: String,
    /// The fields the change set or changed (`changedFields`): names, `Parent.Part` for the
    /// parts of compound fields.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub changed_fields: Vec<String>,
    /// The fields whose value in this event is a diff, not the full text (`diffFields`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub diff_fields: Vec<String>,
    /// The fields the change set to null (`nulledFields`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub nulled_fields: Vec<String>,
}

impl ChangeEventHeader {
    /// Whether `changedFields` names `field`, or (for a compound field such as
    /// `BillingAddress`) one of its parts (`BillingAddress.City`).
    pub fn changed(&self, field: &str) -> bool {
        names(&self.changed_fields, field)
    }

    /// Whether `nulledFields` names `field` or one of its parts.
    pub fn nulled(&self, field: &str) -> bool {
        names(&self.nulled_fields, field)
    }

    /// Whether `diffFields` names `field` or one of its parts.
    pub fn diffed(&self, field: &str) -> bool {
        names(&self.diff_fields, field)
    }

    /// Whether a field list holds bit-encoded entries (`0x1A`, `3-0x04`) rather than names:
    /// those are passed through undecoded (see the [module docs](super)).
    pub fn has_bitmap_fields(&self) -> bool {
        [&self.changed_fields, &self.diff_fields, &self.nulled_fields]
            .iter()
            .any(|list| list.iter().any(|f| is_bitmap(f)))
    }
}

fn names(list: &[String], field: &str) -> bool {
    list.iter().any(|f| {
        f == field
            || f.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// `0x...`, or `<n>-0x...` for the parts of a compound field.
fn is_bitmap(entry: &str) -> bool {
    let hex = match entry.split_once('-') {
        Some((index, rest)) if index.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => entry,
    };
    hex.strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// `changeType`: the operation of a change event. Values this crate does not know decode as
/// [`Other`](ChangeType::Other).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeType {
    /// `CREATE`.
    Create,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `UNDELETE`.
    Undelete,
    /// `GAP_CREATE`: a create whose details Salesforce could not capture; read the record.
    GapCreate,
    /// `GAP_UPDATE`: an update whose details Salesforce could not capture; read the record.
    GapUpdate,
    /// `GAP_DELETE`: a delete whose details Salesforce could not capture.
    GapDelete,
    /// `GAP_UNDELETE`: an undelete whose details Salesforce could not capture; read the record.
    GapUndelete,
    /// `GAP_OVERFLOW`: a transaction changed more records than change events are sent for
    /// (over 100,000); one overflow event stands for the rest of the entity's changes in it.
    GapOverflow,
    /// A value this version does not know, as sent.
    Other(String),
}

impl ChangeType {
    /// The value as Salesforce spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ChangeType::Create => "CREATE",
            ChangeType::Update => "UPDATE",
            ChangeType::Delete => "DELETE",
            ChangeType::Undelete => "UNDELETE",
            ChangeType::GapCreate => "GAP_CREATE",
            ChangeType::GapUpdate => "GAP_UPDATE",
            ChangeType::GapDelete => "GAP_DELETE",
            ChangeType::GapUndelete => "GAP_UNDELETE",
            ChangeType::GapOverflow => "GAP_OVERFLOW",
            ChangeType::Other(s) => s,
        }
    }

    /// Whether this is a gap or overflow event (`GAP_*`): no field values, only the header.
    pub fn is_gap(&self) -> bool {
        self.as_str().starts_with("GAP_")
    }

    /// Whether this is the overflow event of a transaction too large to send in full.
    pub fn is_overflow(&self) -> bool {
        self.as_str().ends_with("OVERFLOW")
    }
}

impl From<&str> for ChangeType {
    fn from(s: &str) -> Self {
        match s {
            "CREATE" => ChangeType::Create,
            "UPDATE" => ChangeType::Update,
            "DELETE" => ChangeType::Delete,
            "UNDELETE" => ChangeType::Undelete,
            "GAP_CREATE" => ChangeType::GapCreate,
            "GAP_UPDATE" => ChangeType::GapUpdate,
            "GAP_DELETE" => ChangeType::GapDelete,
            "GAP_UNDELETE" => ChangeType::GapUndelete,
            "GAP_OVERFLOW" => ChangeType::GapOverflow,
            other => ChangeType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChangeType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ChangeType::from(String::deserialize(d)?.as_str()))
    }
}

impl<T: DeserializeOwned> FromEvent for ChangeEvent<T> {
    fn from_event(event: &Event) -> Result<Self> {
        let mut data = decode::data_object(event)?;
        let mut section = EventSection::of(event, &mut data)?;
        let schema = decode::schema(event, &mut data, &mut section)?;
        let mut payload: Map<String, Value> = decode::take(event, &mut data, "payload", "data")?;
        let header: ChangeEventHeader =
            decode::take(event, &mut payload, "ChangeEventHeader", "data.payload")?;
        let fields = if header.change_type.is_gap() {
            None
        } else {
            Some(decode::value(
                event,
                Value::Object(payload),
                "data.payload",
            )?)
        };
        Ok(ChangeEvent {
            header,
            fields,
            replay_id: section.replay_id,
            schema,
        })
    }
}
