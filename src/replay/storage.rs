use super::ReplayMarker;
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;

/// Where replay markers live between runs: a file ([`FileStorage`](super::FileStorage)), a map
/// ([`MappingStorage`](super::MappingStorage)), or your database.
///
/// # Contract
/// - `get` returns the marker last `set` for the subscription, or `None` (or a default of your
///   choosing) if there is none. It is called before every subscribe, including the automatic
///   resubscribes after a reconnect that has not yet delivered an event on that channel.
/// - `set` is called with markers that only move forward for a subscription, never concurrently
///   for the same subscription, and never on the hot path (writes are coalesced in the
///   background). One exception: a marker with a negative replay id (`-2` or `-1`, a
///   [`ReplayOption::id`](super::ReplayOption::id), no date) replaces whatever is stored. It is
///   written after the stored id was rejected as expired and the consumer was handed the
///   [`ReplayGap`](crate::ErrorKind::ReplayGap) notice, so that the next run starts from the
///   fallback instead of the same expired id; any event's marker is after it. A storage that
///   refuses to move backwards by itself must let it through. When `set` returns `Ok`, the marker must survive a crash of this process if
///   the storage claims durability.
/// - Subscriptions are subscribed names: a channel (`/event/Order__e`, `/topic/T`), or a
///   PushTopic channel with its filter as subscribed (`/topic/T?Status__c='Open'`, quotes,
///   spaces and `&` included), whose marker is kept apart from its topic's. A filter with no
///   marker of its own reads its topic's once (where earlier versions stored it) and has its
///   start `set` before its first event; that start may be `-2` (every retained event), written
///   only where nothing is stored for the filter.
/// - Errors are reported on the subscription's stream as
///   [`ErrorKind::Replay`](crate::ErrorKind::Replay); a failed `set` is retried with the next
///   marker, a failed `get` fails that subscribe.
///
/// ```
/// use futures::future::BoxFuture;
/// use sfstream::replay::{ReplayMarker, ReplayStorage};
///
/// /// Keeps markers in a database table (sketch).
/// struct Table;
/// impl ReplayStorage for Table {
///     fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, sfstream::Result<Option<ReplayMarker>>> {
///         Box::pin(async move { /* SELECT replay_id, date WHERE channel = ? */ Ok(None) })
///     }
///     fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, sfstream::Result<()>> {
///         Box::pin(async move { /* UPSERT ... */ Ok(()) })
///     }
/// }
/// ```
pub trait ReplayStorage: Send + Sync + 'static {
    /// The stored marker for `subscription`.
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>>;

    /// Store `marker` for `subscription`.
    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>>;

    /// Whether [`set_fenced`](Self::set_fenced) is implemented, so that the storage can serve
    /// a client with a [`Lease`](super::Lease) (checked when the client is built).
    fn supports_fencing(&self) -> bool {
        false
    }

    /// Store `marker` like [`set`](Self::set), but only if `epoch` is still the epoch of the
    /// lease this storage is paired with, checked in the same atomic step as the write (a
    /// transaction, a server-side script). A write from an older epoch fails with
    /// [`ErrorKind::LeaseLost`] and changes nothing. The default refuses every write.
    fn set_fenced<'a>(
        &'a self,
        subscription: &'a str,
        marker: ReplayMarker,
        epoch: u64,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (subscription, marker, epoch);
        Box::pin(async {
            Err(Error::new(
                ErrorKind::Client,
                "this replay storage cannot fence writes, so it cannot serve a client with a lease",
            ))
        })
    }
}
