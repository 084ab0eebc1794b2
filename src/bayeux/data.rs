use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

/// The raw JSON text of a message's `data`, shared with the response body it came from.
///
/// Cloning is cheap (a reference count). Nothing is parsed until you ask: [`Data::deserialize`]
/// reads it into your own type, [`Data::get`] gives the JSON text.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(Bytes);

impl Data {
    /// Serialize any value into a `Data` (for publishing).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Data(Bytes::from(v)))
    }

    /// Take JSON text, checking that it is one valid JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<&RawValue>(&text)?;
        Ok(Data(Bytes::from(text)))
    }

    /// Wrap a slice of a response body that the parser already validated as one JSON value.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Data(bytes)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        // Every constructor stores either a String or a slice that serde_json handed out as &str.
        debug_assert!(std::str::from_utf8(&self.0).is_ok());
        #[allow(unsafe_code)]
        // SAFETY: see above: the bytes are always the UTF-8 text of a `&str` or `String`.
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The JSON text as bytes (shares the response buffer).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Deserialize into any type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// Parse into a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        // Validated at construction, so this cannot fail; Null keeps the signature infallible.
        serde_json::from_slice(&self.0).unwrap_or_default()
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
