use serde::{Deserialize, Deserializer, Serialize};

/// What the server wants the client to do next (Bayeux `advice`).
///
/// `interval` and `timeout` are milliseconds, as on the wire. Salesforce sends
/// `{"interval":0,"timeout":110000,"reconnect":"retry"}` on the first connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Advice {
    /// How to reconnect: retry the connect, handshake again, or stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// Milliseconds to wait before the next connect.
    #[serde(
        default,
        deserialize_with = "millis",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<u64>,
    /// Milliseconds the server may hold a long-poll connect.
    #[serde(
        default,
        deserialize_with = "millis",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u64>,
}

impl Advice {
    /// Advice carrying only a timeout, as sent on the first connect after a handshake
    /// (`{"timeout":0}` asks the server to answer at once).
    pub fn with_timeout(timeout_ms: u64) -> Self {
        Advice {
            timeout: Some(timeout_ms),
            ..Advice::default()
        }
    }
}

/// The `advice.reconnect` values of Bayeux 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Reconnect {
    /// Send the next `/meta/connect` with the same session.
    Retry,
    /// The session is gone: handshake again.
    Handshake,
    /// The server asks the client not to reconnect.
    None,
    /// A value this crate does not know; treated like `retry`.
    #[serde(other)]
    Unknown,
}

// Faye and some proxies send advice numbers as floats (45000.0); accept any non-negative number.
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n: Option<f64> = Option::deserialize(d)?;
    Ok(n.filter(|n| n.is_finite() && *n >= 0.0).map(|n| n as u64))
}
