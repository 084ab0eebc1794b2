use super::Lease;
use super::redis::{Inner, RedisStorage, redis_error};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

// KEYS[1] the lease ("<owner> <epoch>", expiring by the server's clock), KEYS[2] the epoch
// counter (never expires). Each script runs atomically.
static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch
"#,
    )
});

static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#,
    )
});

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#,
    )
});

/// The lease of a [`RedisStorage`]'s key, for active/standby clients
/// ([`ClientBuilder::lease`](crate::ClientBuilder::lease)); get it with
/// [`RedisStorage::lease`].
///
/// The lease is the key `sfstream:lease:<key>`, set with `NX` semantics and a `PX` expiry
/// (the server's clock) to `"<owner> <epoch>"`; the epoch comes from `INCR` on the counter
/// `sfstream:lease:<key>:epoch`, which never expires. Acquisition, renewal (owner and epoch
/// checked, then `PEXPIRE`) and release each run as one server-side script. The storage's
/// fenced write compares the counter with the writer's epoch inside its own script, so a
/// former holder's write either runs before a takeover or is refused.
///
/// The epoch lives in the server's memory and persistence: run Redis with `appendonly yes`
/// so that a restart cannot reset the counter (a reset counter would hand out epochs again;
/// a former holder whose epoch is reached again would pass the fence). For the same reason
/// the counter must never be evicted: use `maxmemory-policy noeviction` (or a `volatile-*`
/// policy, which evicts only keys with an expiry; it may evict the lease key itself early,
/// an early fail-over that fencing keeps safe), never an `allkeys-*` policy.
///
/// Each lease has its own connection, so a renewal never waits behind a marker write.
#[derive(Clone)]
pub struct RedisLease {
    inner: Arc<Inner>,
    key: String,
    epoch_key: String,
}

impl fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The lease key of the markers in `hash` (`sfstream:replay:<key>`).
fn lease_key(hash: &str) -> String {
    let key = hash.strip_prefix("sfstream:replay:").unwrap_or(hash);
    format!("sfstream:lease:{key}")
}

/// The epoch counter of the lease of the markers in `hash`.
pub(super) fn epoch_key(hash: &str) -> String {
    format!("{}:epoch", lease_key(hash))
}

/// The error of a write refused by fencing.
pub(super) fn fenced(epoch: u64) -> Error {
    Error::new(
        ErrorKind::LeaseLost,
        format!(
            "marker write of lease epoch {epoch} refused: the lease moved on (another client took over)"
        ),
    )
}

impl RedisStorage {
    /// The lease that fences this storage's writes: same server, same key. Pass it to
    /// [`ClientBuilder::lease`](crate::ClientBuilder::lease) with this storage as the replay
    /// storage.
    pub fn lease(&self) -> RedisLease {
        RedisLease {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                tls: self.inner.tls.clone(),
                hash: self.inner.hash.clone(),
                script: ACQUIRE.clone(),
                connection: Mutex::new(None),
            }),
            key: lease_key(&self.inner.hash),
            epoch_key: epoch_key(&self.inner.hash),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisLease {
    /// One attempt (reconnecting if the last one failed); the client retries.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &redis::Script,
        args: &[&str],
    ) -> Result<T> {
        let mut c = self.inner.connection().await?;
        let mut invocation = script.key(&self.key);
        invocation.key(&self.epoch_key);
        for a in args {
            invocation.arg(*a);
        }
        invocation.invoke_async(&mut c).await.map_err(|e| {
            *self.inner.lock() = None;
            redis_error(what, e)
        })
    }
}

impl Lease for RedisLease {
    fn try_acquire<'a>(
        &'a self,
        owner: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let ms = millis(duration).to_string();
            let epoch: u64 = self
                .run("cannot acquire the lease", &ACQUIRE, &[owner, &ms])
                .await?;
            Ok((epoch > 0).then_some(epoch))
        })
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        epoch: u64,
        duration: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (epoch, ms) = (epoch.to_string(), millis(duration).to_string());
            let renewed: i64 = self
                .run("cannot renew the lease", &RENEW, &[owner, &epoch, &ms])
                .await?;
            Ok(renewed == 1)
        })
    }

    fn release<'a>(&'a self, owner: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let epoch = epoch.to_string();
            self.run::<i64>("cannot release the lease", &RELEASE, &[owner, &epoch])
                .await
                .map(drop)
        })
    }
}
