//! Counters the emulator keeps, readable at any time and awaitable with
//! [`Emulator::wait_until`](super::Emulator::wait_until).

use std::collections::BTreeMap;

/// A snapshot of the emulator's counters.
///
/// Message counters (`handshakes`, `connects`, ...) count every Bayeux message of that kind the
/// emulator processed, successful or not; requests swallowed by an injected [`Fault`](super::Fault)
/// are not processed and are only counted in `requests` and `faults_triggered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `/meta/handshake` messages received.
    pub handshakes: u64,
    /// `/meta/connect` messages received.
    pub connects: u64,
    /// Connects currently held open (long-polling) by the emulator.
    pub held_connects: u64,
    /// `/meta/subscribe` messages received.
    pub subscribes: u64,
    /// `/meta/unsubscribe` messages received.
    pub unsubscribes: u64,
    /// `/meta/disconnect` messages received.
    pub disconnects: u64,
    /// Messages clients published to non-meta channels over CometD (all rejected, as by
    /// Salesforce).
    pub publishes: u64,
    /// Live sessions (handshaken and neither disconnected, dropped nor expired).
    pub sessions: u64,
    /// Requests to the OAuth token endpoint that were processed.
    pub token_requests: u64,
    /// Events sent to clients, in connect and subscribe responses.
    pub events_delivered: u64,
    /// Replies carrying `403::Unknown client`.
    pub unknown_client_replies: u64,
    /// Requests rejected for a missing, unknown or altered cookie.
    pub cookie_failures: u64,
    /// Handshakes that set new cookies (a client whose jar kept them sets none).
    pub cookies_issued: u64,
    /// New `sfdc-stream` cookies sent with `403::Unknown client`.
    pub cookie_rotations: u64,
    /// Channel (without PushTopic filter) to the number of live sessions subscribed to it.
    pub subscriptions: BTreeMap<String, u64>,
    /// HTTP requests received, on any path.
    pub requests: u64,
    /// Events published on any channel (by the emulator's API or by clients).
    pub events_published: u64,
    /// Injected faults that fired.
    pub faults_triggered: u64,
    /// Bayeux messages rejected for a missing, unknown or revoked access token, including held
    /// connects answered by [`Emulator::revoke_tokens`](super::Emulator::revoke_tokens).
    pub auth_failures: u64,
    /// REST API requests processed (publishing, channel queries), successful or not.
    pub rest_requests: u64,
    /// Events published through the REST API (platform events and generic pushes).
    pub rest_events_published: u64,
}

impl Stats {
    pub(crate) fn subscribed(&mut self, channel: &str) {
        *self.subscriptions.entry(channel.to_owned()).or_default() += 1;
    }

    pub(crate) fn unsubscribed(&mut self, channel: &str) {
        if let Some(n) = self.subscriptions.get_mut(channel) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.subscriptions.remove(channel);
            }
        }
    }
}
