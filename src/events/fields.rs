//! Record-field conventions: null versus absent, and the compound fields of CDC.

use serde::{Deserialize, Deserializer};

/// A record field of an event that tells *absent* from *null*.
///
/// A Change Data Capture `UPDATE` carries only the fields that changed, and a field that was
/// cleared as `null`; `Option<V>` cannot tell the two apart. Use `Field<V>` with
/// `#[serde(default)]` (absent is the default):
///
/// ```
/// use sfstream::events::Field;
/// #[derive(serde::Deserialize)]
/// struct Contact {
///     #[serde(rename = "Phone", default)]
///     phone: Field<String>,
/// }
/// let unchanged: Contact = serde_json::from_str("{}")?;
/// let cleared: Contact = serde_json::from_str(r#"{"Phone":null}"#)?;
/// let set: Contact = serde_json::from_str(r#"{"Phone":"(415) 555-1212"}"#)?;
/// assert!(unchanged.phone.is_absent());
/// assert!(cleared.phone.is_null());
/// assert_eq!(set.phone.value().map(String::as_str), Some("(415) 555-1212"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Field<V> {
    /// Not in the event (for CDC: unchanged).
    #[default]
    Absent,
    /// Sent as `null` (for CDC: cleared; also listed in `nulledFields`).
    Null,
    /// Sent with a value.
    Value(V),
}

impl<V> Field<V> {
    /// The value, if one was sent.
    pub fn value(&self) -> Option<&V> {
        match self {
            Field::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The value, if one was sent.
    pub fn into_value(self) -> Option<V> {
        match self {
            Field::Value(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the field was not in the event.
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    /// Whether the field was sent as `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Field<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Called only when the key is present: absence comes from `#[serde(default)]`.
        Ok(match Option::<V>::deserialize(d)? {
            None => Field::Null,
            Some(v) => Field::Value(v),
        })
    }
}

/// A compound address field as CDC sends it (`BillingAddress`, `ShippingAddress`,
/// `MailingAddress`, `Address`, ...): a nested object with the parts that changed.
///
/// PushTopic events and platform events send the flat fields (`BillingCity`) instead.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Address {
    /// `Street`.
    #[serde(default)]
    pub street: Field<String>,
    /// `City`.
    #[serde(default)]
    pub city: Field<String>,
    /// `State`.
    #[serde(default)]
    pub state: Field<String>,
    /// `StateCode` (with state and country picklists).
    #[serde(default)]
    pub state_code: Field<String>,
    /// `PostalCode`.
    #[serde(default)]
    pub postal_code: Field<String>,
    /// `Country`.
    #[serde(default)]
    pub country: Field<String>,
    /// `CountryCode` (with state and country picklists).
    #[serde(default)]
    pub country_code: Field<String>,
    /// `Latitude`.
    #[serde(default)]
    pub latitude: Field<f64>,
    /// `Longitude`.
    #[serde(default)]
    pub longitude: Field<f64>,
    /// `GeocodeAccuracy`.
    #[serde(default)]
    pub geocode_accuracy: Field<String>,
}

/// The compound `Name` of a person (Contact, Lead, User, person accounts) as CDC sends it: a
/// nested object with the parts that changed. Other objects' `Name` is a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct PersonName {
    /// `Salutation`.
    #[serde(default)]
    pub salutation: Field<String>,
    /// `FirstName`.
    #[serde(default)]
    pub first_name: Field<String>,
    /// `MiddleName` (when enabled in the org).
    #[serde(default)]
    pub middle_name: Field<String>,
    /// `LastName`.
    #[serde(default)]
    pub last_name: Field<String>,
    /// `Suffix` (when enabled in the org).
    #[serde(default)]
    pub suffix: Field<String>,
}
