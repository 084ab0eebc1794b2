//! Layer 1: Bayeux 1.0 messages as Salesforce sends and expects them.
//!
//! A [`Message`] keeps its `data` as raw JSON ([`Data`]) copied out of the response body, so an
//! event the user never looks into is never fully parsed. [`parse_batch`] reads a response body
//! (a JSON array) in one pass, events by a direct scan, and falls back to per-message parsing only when some element is
//! malformed, so one bad element never takes the rest of the batch down with it.
//!
//! ```
//! use sfstream::bayeux::{parse_batch, ServerError};
//!
//! let body = br#"[{"channel":"/meta/connect","id":7,"successful":false,
//!                  "error":"403::Unknown client","advice":{"reconnect":"handshake","interval":0}}]"#;
//! let batch = parse_batch(bytes::Bytes::from_static(body))?;
//! let reply = &batch.messages[0];
//! assert_eq!(reply.id.as_deref(), Some("7")); // numeric ids are accepted
//! let err = ServerError::parse(reply.error.as_deref().unwrap());
//! assert_eq!(err.code, Some(403));
//! assert!(err.is_unknown_client());
//! # Ok::<(), sfstream::Error>(())
//! ```

mod advice;
mod batch;
mod channel;
mod data;
mod message;
mod scan;
#[cfg(feature = "fuzzing")]
pub(crate) use scan::agrees as fast_scan_agrees;
#[cfg(feature = "fuzzing")]
pub(crate) use scan::data_value as scan_data_value;
mod server_error;

pub use advice::{Advice, Reconnect};
pub use batch::{Batch, MalformedMessage, parse_batch};
pub(crate) use batch::{excerpt as batch_excerpt, parse_body};
pub use channel::Channel;
pub use data::Data;
pub use message::{Message, channels};
pub use server_error::ServerError;
