use super::Lease;
use super::postgres::{Inner, PostgresStorage, pg_error};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Expiry by the database's clock (`now()`: the start of the statement, which is after the
// client sent it, so the client's own count of the duration ends first). A lease row is taken
// over only once expired or released, and every takeover increases the epoch.
const ACQUIRE: &str = "INSERT INTO sfstream_leases AS l (name, owner, epoch, expires_at)
    VALUES ($1::text, $2::text, 1, now() + $3::bigint * interval '1 millisecond')
    ON CONFLICT (name) DO UPDATE
    SET owner = EXCLUDED.owner, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= now()
    RETURNING epoch";

const RENEW: &str = "UPDATE sfstream_leases
    SET expires_at = now() + $4::bigint * interval '1 millisecond'
    WHERE name = $1::text AND owner = $2::text AND epoch = $3::bigint AND expires_at > now()";

const RELEASE: &str = "UPDATE sfstream_leases SET owner = NULL, expires_at = '-infinity'
    WHERE name = $1::text AND owner = $2::text AND epoch = $3::bigint";

/// The lease of a [`PostgresStorage`]'s key, for active/standby clients
/// ([`ClientBuilder::lease`](crate::ClientBuilder::lease)); get it with
/// [`PostgresStorage::lease`].
///
/// A row of `sfstream_leases` per key holds the owner, an expiry (`timestamptz`, set from the
/// database's `now()`) and an epoch that every acquisition increases. The storage's fenced
/// upsert reads that row `FOR SHARE` in the same statement as the write and writes only if
/// the epoch is the writer's, so a takeover (an `UPDATE` of the row) and a former holder's
/// write are serialised by PostgreSQL's row lock: the write lands before the takeover, or
/// sees the new epoch and is refused.
///
/// Why a row and not an advisory lock (`pg_try_advisory_lock`): an advisory lock is tied to
/// a session, so it is lost silently when the connection drops (and kept by a connection
/// that a paused process still holds open); it has no expiry of its own and no number that
/// grows with each holder, so it can neither time out a paused holder nor fence its writes.
/// The row gives both, by the database's clock, and survives reconnects and restarts.
///
/// Each lease has its own connection, so a renewal never waits behind a marker write.
#[derive(Clone)]
pub struct PostgresLease {
    inner: Arc<Inner>,
}

impl fmt::Debug for PostgresLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLease")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// The lease that fences this storage's writes: same database, same key (its table was
    /// created by [`connect`](Self::connect)). Pass it to
    /// [`ClientBuilder::lease`](crate::ClientBuilder::lease) with this storage as the replay
    /// storage.
    pub fn lease(&self) -> PostgresLease {
        PostgresLease {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                tls: self.inner.tls.clone(),
                key: self.inner.key.clone(),
                client: Mutex::new(None),
            }),
        }
    }
}

/// The error of a write refused by fencing.
pub(super) fn fenced(epoch: u64, current: Option<i64>) -> Error {
    let now = match current {
        Some(e) => format!("the lease is at epoch {e}"),
        None => "the lease does not exist".to_owned(),
    };
    Error::new(
        ErrorKind::LeaseLost,
        format!("marker write of lease epoch {epoch} refused: {now} (another client took over)"),
    )
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresLease {
    /// One attempt on the connection (reconnecting if it was lost); the client retries.
    async fn run<T>(
        &self,
        what: &str,
        op: impl AsyncFnOnce(&tokio_postgres::Client) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let client = self.inner.client().await?;
        op(&client).await.map_err(|e| {
            if client.is_closed() {
                self.inner.forget(&client);
            }
            pg_error(what, e)
        })
    }
}

impl Lease for PostgresLease {
    fn try_acquire<'a>(
        &'a self,
        owner: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let key = self.inner.key.as_str();
            let ms = millis(duration);
            let row = self
                .run("cannot acquire the lease", async |c| {
                    c.query_opt(ACQUIRE, &[&key, &owner, &ms]).await
                })
                .await?;
            Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
        })
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        epoch: u64,
        duration: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let key = self.inner.key.as_str();
            let ms = millis(duration);
            let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
            let rows = self
                .run("cannot renew the lease", async |c| {
                    c.execute(RENEW, &[&key, &owner, &epoch, &ms]).await
                })
                .await?;
            Ok(rows == 1)
        })
    }

    fn release<'a>(&'a self, owner: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = self.inner.key.as_str();
            let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
            self.run("cannot release the lease", async |c| {
                c.execute(RELEASE, &[&key, &owner, &epoch]).await
            })
            .await
            .map(drop)
        })
    }
}
