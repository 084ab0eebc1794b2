//! Health for readiness and liveness probes: [`Client::health`](crate::Client::health) is a
//! snapshot (one read of a `watch` value, no call into the connection task), and
//! [`Client::health_updates`](crate::Client::health_updates) a
//! [`watch::Receiver`](tokio::sync::watch::Receiver) that changes with it.
//!
//! `healthy` does not follow every blip: one failed connect leaves it `true`. It turns `false`
//! when the connection has been failing for
//! [`unhealthy_after`](crate::ClientBuilder::unhealthy_after) (default: the
//! `connection_timeout`, 10 s), when the client is closed, and before the first connect
//! succeeded. Wire liveness to `healthy` and readiness to `connected`.
//!
//! ```no_run
//! # async fn f(client: sfstream::Client) {
//! let health = client.health();
//! if !health.healthy {
//!     eprintln!("unhealthy since {:?} ({} failures)", health.since, health.failures);
//! }
//! for sub in &health.subscriptions {
//!     println!("{} last event {:?} replay id {:?}", sub.channel, sub.last_event, sub.replay_id);
//! }
//! # }
//! ```

use std::time::{Duration, SystemTime};

/// The client's health at one moment. Times are wall-clock times. The default is a client
/// never opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Connected, or failing for less than the `unhealthy_after` threshold. `false` when closed
    /// and before the first connect succeeded.
    pub healthy: bool,
    /// The long-poll loop is up (connected, or paused by backpressure).
    pub connected: bool,
    /// When `connected` last changed (`None` before the client was first opened).
    pub since: Option<SystemTime>,
    /// When the last `/meta/connect` round trip succeeded.
    pub last_round_trip: Option<SystemTime>,
    /// Consecutive failed requests (0 while connected).
    pub failures: u32,
    /// Items (events and errors) delivered to streams but not yet taken.
    pub pending: usize,
    /// Why the client does not ask the server for more, if it does not.
    pub paused: Option<Pause>,
    /// One entry per subscription of the open client, in channel order.
    pub subscriptions: Vec<SubscriptionHealth>,
}

/// The long-poll loop is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pause {
    /// Why.
    pub reason: PauseReason,
    /// Since when.
    pub since: SystemTime,
}

/// Why the long-poll loop is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PauseReason {
    /// `max_pending_count` events wait for consumers: the next connect waits until one is
    /// taken (a forgotten `Subscription` shows as one whose pending count does not fall).
    Backpressure,
}

/// One subscription's health.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionHealth {
    /// The channel.
    pub channel: String,
    /// The server confirmed the subscription (`false` while it is being (re)subscribed).
    pub subscribed: bool,
    /// When it last delivered an event (since it was created).
    pub last_event: Option<SystemTime>,
    /// The replay id of the last event delivered on its channel.
    pub replay_id: Option<i64>,
    /// Under [`CommitPolicy::Manual`](crate::replay::CommitPolicy::Manual): an event of this
    /// subscription was dropped without [`Event::ack`](crate::Event::ack), so the channel's
    /// stored replay marker stays before it until the subscription ends. `Some(replay id)` of
    /// the oldest such event (`Some(None)` if it had none); a warning is logged as well.
    pub unacked: Option<Option<i64>>,
}

/// The default `unhealthy_after` when `connection_timeout` is `None`.
pub(crate) const DEFAULT_UNHEALTHY_AFTER: Duration = Duration::from_secs(10);
