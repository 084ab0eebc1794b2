use super::{Advice, Channel, Data};
use serde::Serialize;
use serde_json::{Map, Value};

/// Well-known Bayeux channel names.
pub mod channels {
    /// `/meta/handshake`
    pub const HANDSHAKE: &str = "/meta/handshake";
    /// `/meta/connect`
    pub const CONNECT: &str = "/meta/connect";
    /// `/meta/subscribe`
    pub const SUBSCRIBE: &str = "/meta/subscribe";
    /// `/meta/unsubscribe`
    pub const UNSUBSCRIBE: &str = "/meta/unsubscribe";
    /// `/meta/disconnect`
    pub const DISCONNECT: &str = "/meta/disconnect";
    /// The only connection type Salesforce offers.
    pub const LONG_POLLING: &str = "long-polling";
}

/// One Bayeux message, in either direction.
///
/// Fields follow the wire names (`clientId`, `supportedConnectionTypes`, ...). `id` is accepted
/// as a string or a number and always held as text. `data` stays raw JSON. Unknown fields of
/// incoming messages are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Message {
    /// The channel, e.g. `/meta/connect` or `/event/Order__e` (shared: see [`Channel`]). Empty
    /// on a reply the server sent without one (see [`Message::is_unaddressed_reply`]).
    pub channel: Channel,
    /// Request id, echoed by the server in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The session id from the handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Whether a meta request succeeded (replies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successful: Option<bool>,
    /// The error string of a failed reply, `code:args:message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Reconnect advice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    /// Extension fields (`ext.replay`, `ext.sfdc`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext: Option<Map<String, Value>>,
    /// The channel of a subscribe/unsubscribe request or reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// The payload of an event or publish, kept as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    /// Handshake: protocol version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Handshake: minimum protocol version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<String>,
    /// Handshake: connection types offered or accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<String>>,
    /// Connect: the connection type in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<String>,
}

impl Message {
    /// A message on `channel` with every other field empty.
    pub fn new(channel: impl Into<Channel>) -> Self {
        Message {
            channel: channel.into(),
            ..Message::default()
        }
    }

    /// Whether this is a `/meta/...` message.
    pub fn is_meta(&self) -> bool {
        self.channel.starts_with("/meta/")
    }

    /// Whether this is an event delivered to subscribers: not meta, and carrying `data`.
    pub fn is_event(&self) -> bool {
        !self.is_meta() && self.data.is_some()
    }

    /// A reply with neither channel nor id: the server refused the whole request before
    /// Bayeux processing, e.g. `[{"error":"401::Request requires authentication",
    /// "successful":false}]` (restforce#103). It answers every message of its request.
    pub fn is_unaddressed_reply(&self) -> bool {
        self.channel.is_empty() && self.id.is_none() && self.successful.is_some()
    }

    /// `successful == Some(true)`.
    pub fn is_successful(&self) -> bool {
        self.successful == Some(true)
    }

    /// A field of `ext`, if present.
    pub fn ext_field(&self, name: &str) -> Option<&Value> {
        self.ext.as_ref()?.get(name)
    }

    /// Set a field of `ext`, creating `ext` if needed.
    pub fn set_ext_field(&mut self, name: impl Into<String>, value: Value) {
        self.ext
            .get_or_insert_with(Map::new)
            .insert(name.into(), value);
    }

    /// The parsed error string of a failed reply.
    pub fn server_error(&self) -> Option<super::ServerError> {
        self.error.as_deref().map(super::ServerError::parse)
    }

    /// Salesforce's `ext.sfdc.failureReason` on a denied handshake (`401::Authentication invalid`).
    pub fn failure_reason(&self) -> Option<&str> {
        self.ext_field("sfdc")?.get("failureReason")?.as_str()
    }
}
