//! Layer 7: replay. Salesforce keeps events for 24 h (72 h for high-volume platform events and
//! Change Data Capture) and replays them when a subscribe names a replay id; this module decides
//! which id that is and remembers how far each channel got.
//!
//! - Where a **fresh** subscription starts: [`ReplayOption`] (`NewEvents` by default, or
//!   `AllEvents`), a stored marker in a [`ReplayStorage`], or an explicit id with
//!   [`Client::subscribe_from`](crate::Client::subscribe_from).
//! - After a reconnect the client **always** resubscribes from the last event it delivered on
//!   that channel (kept in memory even with no storage), so a reconnect loses nothing the server
//!   still retains. Before a channel's first event under `NewEvents` there is no such event:
//!   see [`ReplayOption::NewEvents`].
//! - What is **stored** and when: [`CommitPolicy`]. The default stores an event's marker only
//!   after the consumer is done with it (at-least-once across restarts).
//! - When the stored id has left the retention window, [`replay_fallback`] restarts the
//!   subscription from all retained or new events and the stream yields a
//!   [`ErrorKind::ReplayGap`](crate::ErrorKind::ReplayGap) notice first. Once the notice is
//!   handed out, the stored marker becomes the fallback, so a restart does not meet the same
//!   expired id (and notice) again.
//!
//! [`replay_fallback`]: crate::ClientBuilder::replay_fallback
//!
//! ```no_run
//! # async fn f(auth: sfstream::auth::AccessToken) -> sfstream::Result<()> {
//! use futures::StreamExt;
//! use sfstream::replay::{FileStorage, ReplayOption};
//! use sfstream::{Client, ErrorKind};
//!
//! let client = Client::builder(auth)
//!     .replay(ReplayOption::AllEvents)          // first run: everything retained
//!     .replay_storage(FileStorage::open("replay.json")?) // later runs: resume
//!     .replay_fallback(ReplayOption::AllEvents) // stored id expired: all retained, and tell me
//!     .connect()
//!     .await?;
//! let mut changes = client.subscribe("/data/AccountChangeEvent").await?;
//! while let Some(item) = changes.next().await {
//!     match item {
//!         Ok(event) => { /* process; its marker is stored once you ask for the next one */ }
//!         Err(e) if e.kind() == ErrorKind::ReplayGap => eprintln!("possible loss: {e}"),
//!         Err(e) if e.is_transient() => eprintln!("warning: {e}"), // the stream goes on
//!         Err(e) => return Err(e),
//!     }
//! }
//! # Ok(()) }
//! ```

#[cfg(any(feature = "postgres", feature = "redis"))]
mod backoff;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod database_tls;
mod file;
pub(crate) mod lease;
mod mapping;
mod marker;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_lease;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_lease;
mod storage;
pub(crate) mod tracker;
mod unpositioned;

#[cfg(any(feature = "postgres", feature = "redis"))]
pub use database_tls::DatabaseTls;
pub use file::FileStorage;
pub use lease::Lease;
pub use mapping::{ConstantReplayId, DefaultMappingStorage, MappingStorage, MarkerMap};
pub use marker::ReplayMarker;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use marker::format_date;
pub(crate) use marker::parse_date;
#[cfg(feature = "postgres")]
pub use postgres::{POSTGRES_TABLE, PostgresStorage};
#[cfg(feature = "postgres")]
pub use postgres_lease::PostgresLease;
#[cfg(feature = "redis")]
pub use redis::RedisStorage;
#[cfg(feature = "redis")]
pub use redis_lease::RedisLease;
pub use storage::ReplayStorage;

/// The replay ids Salesforce gives a meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayOption {
    /// `-2`: every event still retained (24 h, or 72 h for high-volume events), then new ones.
    AllEvents,
    /// `-1`: only events published after the subscribe.
    ///
    /// Salesforce does not say where "now" is, so until the channel delivers its first event
    /// there is no replay id to resume from. If the session is lost in that window (expiry,
    /// `403::Unknown client`, a cut connect), the resubscribe asks for every retained event
    /// (`-2`) and skips those dated more than 5 minutes (an allowance for clock skew) before the
    /// first subscribe went out: nothing published after the subscribe is lost, at the cost of
    /// one replay of the channel's retained events, and events from up to 5 minutes before the
    /// subscribe may come too. A clock more than 5 minutes ahead of Salesforce's can still lose
    /// events in that window. After the first event, resubscribes continue after the last
    /// delivered event as for any option.
    NewEvents,
}

impl ReplayOption {
    /// The wire value: -2 or -1.
    pub fn id(self) -> i64 {
        match self {
            ReplayOption::AllEvents => -2,
            ReplayOption::NewEvents => -1,
        }
    }
}

/// When an event counts as processed, and so when its replay marker may be stored in the
/// [`ReplayStorage`].
///
/// Every delivered event is tracked until it is processed. The stored marker is the newest
/// event of its channel before which every delivered event is processed, so events may finish
/// in any order without the marker skipping one still in progress; it never moves backwards.
/// Writes are coalesced in the background: a slow storage (an fsync, a database round trip)
/// never slows the stream, it just stores the newest marker less often.
/// [`Client::close`](crate::Client::close) waits until every processed event's marker is
/// written (and reports a failure), but marks nothing processed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CommitPolicy {
    /// At-least-once (default). An event counts as processed when its stream is polled for the
    /// next item, or when you call [`Event::ack`](crate::Event::ack) (do that for the last
    /// event before a clean stop). Dropping a stream, unsubscribing or closing the client does
    /// not mark the event in hand processed, so after a restart it is delivered again. With
    /// read-ahead combinators (`buffered`, `chunks`, `ready_chunks`) the stream is polled before
    /// earlier items are done: use `Manual` there. Handing events to another task (an mpsc
    /// channel, `tokio::spawn`) is read-ahead too: use
    /// [`Subscription::hand_off`](crate::Subscription::hand_off), whose events count as
    /// processed only when acked, or `Manual`.
    #[default]
    AfterProcessed,
    /// Only [`Event::ack`](crate::Event::ack) marks an event processed, in any order: for
    /// concurrent workers and `buffer_unordered` pipelines. An event whose last copy is
    /// dropped without an ack holds its channel's stored marker back until the subscription
    /// ends: that is logged as a warning naming the channel and replay id, and shown in
    /// [`SubscriptionHealth::unacked`](crate::health::SubscriptionHealth::unacked).
    Manual,
    /// aiosfstream's `AUTOMATIC`: stored when the stream hands the event out, before the
    /// consumer has processed it (at-most-once across a crash). Events of a
    /// [`HandOff`](crate::HandOff) are the exception: their acks store the markers.
    OnReceive,
}
