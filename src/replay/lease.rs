use crate::error::Result;
use futures::future::BoxFuture;
use std::time::Duration;

/// A lease for active/standby consumers: of the clients sharing one, only the holder streams
/// (see [`ClientBuilder::lease`](crate::ClientBuilder::lease)).
///
/// A lease has one holder at a time, an expiry kept by the store's clock, and an **epoch**
/// that grows by at least one at every acquisition and never goes back. The epoch is the
/// fencing token: the holder passes it with every marker write
/// ([`ReplayStorage::set_fenced`](super::ReplayStorage::set_fenced)), and the store refuses a
/// write whose epoch is no longer the lease's, in the same atomic step as the write. A holder
/// that was paused past its expiry (a GC pause, `SIGSTOP`, a partition) can therefore never
/// overwrite what its successor stored.
///
/// Clock assumptions: expiry is judged by the store's clock alone, which must not be stepped
/// (a step forward expires a lease early); a holder counts the duration on its own
/// monotonic clock, so one suspended for longer than the lease is fenced when it runs again.
///
/// Implementations: `PostgresLease` (feature `postgres`, from `PostgresStorage::lease`) and
/// `RedisLease` (feature `redis`, from `RedisStorage::lease`). A lease and the storage it
/// fences must live in the same database under the same key; the storages' `lease()`
/// methods make that pairing.
///
/// # Contract
/// - `try_acquire(owner, duration)`: if the lease is free (never taken, released or expired by
///   the store's clock), make `owner` the holder until `duration` from now by the store's
///   clock, increase the epoch and return it; otherwise `None`. Atomic.
/// - `renew(owner, epoch, duration)`: if `owner` still holds the lease at `epoch` and it has
///   not expired, push the expiry to `duration` from now and return `true`; otherwise `false`
///   (and change nothing).
/// - `release(owner, epoch)`: if `owner` holds the lease at `epoch`, free it at once (the
///   epoch stays, the next acquisition increases it); otherwise do nothing.
/// - Errors (store unreachable) are reported as such, not as `None`/`false`: the client keeps
///   retrying a renewal until its own deadline, and keeps waiting to acquire.
pub trait Lease: Send + Sync + 'static {
    /// Take the lease if it is free or expired; the new epoch when taken.
    fn try_acquire<'a>(
        &'a self,
        owner: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Extend the lease `owner` holds at `epoch`; `false` if it no longer does.
    fn renew<'a>(
        &'a self,
        owner: &'a str,
        epoch: u64,
        duration: Duration,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Give the lease up, so that a standby takes over without waiting for the expiry.
    fn release<'a>(&'a self, owner: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>>;
}

/// Lease duration and renewal interval (see [`ClientBuilder::lease_timing`](crate::ClientBuilder::lease_timing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseTiming {
    pub(crate) duration: Duration,
    pub(crate) renew_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}
