use crate::error::Error;
use crate::health::Health;
use futures::{Stream, StreamExt};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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
        /// Items (events and errors) delivered but not yet taken.
        pending: usize,
    },
    /// Backpressure has held the connect loop for longer than `connection_timeout` (40 s without
    /// one): a consumer has stopped taking events, and every channel of the client waits for it.
    /// Logged as a warning once per pause; the loop goes on as soon as an item is taken.
    PausedLong {
        /// Items (events and errors) delivered but not yet taken.
        pending: usize,
        /// How long the loop had been paused when this was published.
        paused_for: Duration,
        /// The channels whose queues hold the pending items, with how many each, most first.
        /// A subscription detached from its handle is read through `Client::receive`.
        channels: Vec<(String, usize)>,
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
            ConnectionState::Connected
                | ConnectionState::Paused { .. }
                | ConnectionState::PausedLong { .. }
        )
    }
}

/// Equal when the variant and its counters are: the error of `Reconnecting` and the duration of
/// `PausedLong` are not compared.
impl PartialEq for ConnectionState {
    fn eq(&self, other: &Self) -> bool {
        use ConnectionState::*;
        match (self, other) {
            (Handshaking, Handshaking) | (Connected, Connected) | (Closed, Closed) => true,
            (Paused { pending: a }, Paused { pending: b }) => a == b,
            (
                PausedLong {
                    pending: a,
                    channels: ca,
                    ..
                },
                PausedLong {
                    pending: b,
                    channels: cb,
                    ..
                },
            ) => a == b && ca == cb,
            (Reconnecting { failures: a, .. }, Reconnecting { failures: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// The state of one client across its open/close cycles, and every change to it.
pub(crate) struct Status {
    state: watch::Sender<ConnectionState>,
    /// Every change, for `state_updates()` (a watch alone would skip intermediate states).
    changes: broadcast::Sender<ConnectionState>,
    /// Kept by the connection task; see [`crate::health`].
    health: watch::Sender<Health>,
}

impl Status {
    pub(crate) fn new() -> Self {
        Status {
            state: watch::Sender::new(ConnectionState::Closed),
            changes: broadcast::Sender::new(256),
            health: watch::Sender::new(Health::default()),
        }
    }

    pub(crate) fn get(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// Returns whether the state changed.
    pub(crate) fn set(&self, state: ConnectionState) -> bool {
        let changes = &self.changes;
        let closed = state == ConnectionState::Closed;
        let changed = self.state.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            let _ = changes.send(state.clone());
            *current = state;
            true
        });
        if closed && changed {
            // Whoever closed it (the task, or the guard of a task that died), health follows.
            self.health.send_modify(|h| {
                let since = h.since.filter(|_| !h.connected);
                *h = Health {
                    since: since.or(Some(std::time::SystemTime::now())),
                    last_round_trip: h.last_round_trip,
                    ..Health::default()
                };
            });
        }
        changed
    }

    pub(crate) fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    pub(crate) fn set_health(&self, health: Health) {
        self.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
    }

    pub(crate) fn health_updates(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// The current state, then every change (a slow reader skips what it missed); ends when the
    /// client is gone.
    pub(crate) fn updates(&self) -> impl Stream<Item = ConnectionState> + Send + Unpin + 'static {
        // Subscribe before reading the current state so that no change falls in between.
        let rx = self.changes.subscribe();
        let current = self.get();
        let changes = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(state) => return Some((state, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        futures::stream::once(std::future::ready(current))
            .chain(changes)
            .boxed()
    }
}
