use crate::error::Error;

/// Where the connection stands. Watch it with
/// [`Client::state_updates`](crate::Client::state_updates) to log reconnects or alert.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Handshaking, for the first time or again after the session was lost.
    Handshaking,
    /// Connected: the long-poll loop is running.
    Connected,
    /// Backpressure: `pending` events wait for consumers, so the next `/meta/connect` is held
    /// back until one is taken.
    Paused {
        /// Events delivered but not yet taken.
        pending: usize,
    },
    /// The last request failed; the client retries after a backoff.
    Reconnecting {
        /// Consecutive failures so far.
        failures: u32,
        /// The last failure.
        error: Error,
    },
    /// Closed by [`Client::close`](crate::Client::close), or not opened yet.
    Closed,
}

impl ConnectionState {
    /// Whether the long-poll loop is up (connected or paused by backpressure).
    pub fn is_connected(&self) -> bool {
        matches!(
            self,
            ConnectionState::Connected | ConnectionState::Paused { .. }
        )
    }

    /// Equal for watchers: same variant and counters (errors are not compared).
    pub(crate) fn same_as(&self, other: &ConnectionState) -> bool {
        use ConnectionState::*;
        match (self, other) {
            (Handshaking, Handshaking) | (Connected, Connected) | (Closed, Closed) => true,
            (Paused { pending: a }, Paused { pending: b }) => a == b,
            (Reconnecting { failures: a, .. }, Reconnecting { failures: b, .. }) => a == b,
            _ => false,
        }
    }
}
