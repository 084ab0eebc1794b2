use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;
use std::sync::Arc;

/// The raw JSON text of a message's `data`, copied out of the response body.
///
/// Cloning is cheap (a reference count). Nothing is parsed until you ask: [`Data::deserialize`]
/// reads it into your own type, [`Data::get`] gives the JSON text. It holds only its own text,
/// never the response it came in, so an event kept for a while costs its own size.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(Arc<str>);

impl Data {
    /// Serialize any value into a `Data` (for publishing).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|v| Data(v.into()))
    }

    /// Take JSON text, checking that it is one valid JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<&RawValue>(&text)?;
        Ok(Data(text.into()))
    }

    /// Copy a part of a response body that the parser already validated as one JSON value.
    pub(crate) fn from_validated(text: &str) -> Self {
        Data(text.into())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// The JSON text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Deserialize into any type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parse into a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        // Validated at construction, so this cannot fail; Null keeps the signature infallible.
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The text as a borrowed `RawValue`, for embedding in other serde output.
    pub fn as_raw(&self) -> &RawValue {
        // Validated at construction: cannot fail.
        serde_json::from_str(self.get()).unwrap_or_else(|_| null_raw())
    }
}

fn null_raw() -> &'static RawValue {
    serde_json::from_str("null").expect("null is JSON")
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_raw().serialize(s)
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 256;
        let text = self.get();
        if text.len() <= MAX {
            f.write_str(text)
        } else {
            let cut = (0..=MAX)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            write!(f, "{}... ({} bytes)", &text[..cut], text.len())
        }
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}
