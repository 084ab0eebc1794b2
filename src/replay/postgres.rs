use super::backoff::retry_with_backoff;
use super::database_tls::tls_hint;
use super::{DatabaseTls, ReplayMarker, ReplayStorage};
use crate::error::{Error, ErrorKind, Result, sanitized};
use futures::future::BoxFuture;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The table every `PostgresStorage` uses.
pub const POSTGRES_TABLE: &str = "sfstream_replay_markers";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS sfstream_replay_markers (
    key        text        NOT NULL,
    channel    text        NOT NULL,
    replay_id  text        NOT NULL,
    date       timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, channel)
);
CREATE TABLE IF NOT EXISTS sfstream_leases (
    name       text        PRIMARY KEY,
    owner      text,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
)";

// The comparison mirrors `ReplayMarker::is_after` (dates first when both have one, then replay
// ids as numbers; a negative id, the restart point after an expired one, always replaces) and runs in SQL under the row lock of ON CONFLICT, so two writers with the
// same key can never move a marker backwards.
macro_rules! upsert_on_conflict {
    () => {
        "ON CONFLICT (key, channel) DO UPDATE
    SET replay_id = EXCLUDED.replay_id, date = EXCLUDED.date, updated_at = now()
    WHERE CASE
        WHEN EXCLUDED.replay_id::numeric < 0 THEN true
        WHEN EXCLUDED.date IS NOT NULL AND m.date IS NOT NULL AND EXCLUDED.date <> m.date
            THEN EXCLUDED.date > m.date
        ELSE EXCLUDED.replay_id::numeric > m.replay_id::numeric
    END"
    };
}

const UPSERT: &str = concat!(
    "INSERT INTO sfstream_replay_markers AS m (key, channel, replay_id, date)
    VALUES ($1::text, $2::text, $3::text, $4::timestamptz)
    ",
    upsert_on_conflict!()
);

// Fencing: the lease row of the key is read FOR SHARE, so an acquisition (an UPDATE of that
// row) and this write are serialised: a write either commits before the epoch moves on, or
// waits, sees the new epoch and writes nothing. Returns the lease's current epoch.
const FENCED_UPSERT: &str = concat!(
    "WITH fence AS (
    SELECT epoch FROM sfstream_leases WHERE name = $1::text FOR SHARE
), up AS (
    INSERT INTO sfstream_replay_markers AS m (key, channel, replay_id, date)
    SELECT $1::text, $2::text, $3::text, $4::timestamptz FROM fence WHERE fence.epoch = $5::bigint
    ",
    upsert_on_conflict!(),
    "
    RETURNING 1
)
SELECT (SELECT epoch FROM fence)"
);

const SELECT: &str = "SELECT replay_id, date FROM sfstream_replay_markers
    WHERE key = $1::text AND channel = $2::text";

/// Markers in a PostgreSQL table (cargo feature `postgres`), shared by every process that uses
/// the same database and key.
///
/// `connect` creates the table if it is missing:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS sfstream_replay_markers (
///     key        text        NOT NULL, -- the key given to `connect` (one consumer)
///     channel    text        NOT NULL, -- the subscription, e.g. /data/AccountChangeEvent
///     replay_id  text        NOT NULL, -- decimal text: byte-exact, any width
///     date       timestamptz,          -- the event's creation date (microseconds), if known
///     updated_at timestamptz NOT NULL DEFAULT now(),
///     PRIMARY KEY (key, channel)
/// )
/// ```
///
/// Its [`lease`](Self::lease) for active/standby lives in a second table, created with it:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS sfstream_leases (
///     name       text        PRIMARY KEY, -- the key
///     owner      text,                    -- the holder; NULL once released
///     epoch      bigint      NOT NULL,    -- +1 at every acquisition
///     expires_at timestamptz NOT NULL     -- by the database's clock
/// )
/// ```
///
/// One row per key and channel. Writes are an upsert whose `WHERE` clause compares in SQL
/// (newer date, or the same or no date and a higher replay id), so a marker never moves
/// backwards, even with two writers on the same key. A write that fails (connection lost,
/// server restarting) is retried with exponential backoff, reconnecting, for up to
/// [`retry_for`](Self::retry_for); the stream goes on meanwhile and the client coalesces the
/// markers committed in the meantime into the next write. [`Client::close`](crate::Client::close)
/// waits for the last write.
///
/// TLS follows the URL's `sslmode`, as in libpq: `prefer` (the default) uses TLS when the
/// server offers it, `require` refuses a server that does not, `disable` never uses it. With
/// TLS the server's certificate is always verified, against the roots of a [`DatabaseTls`]
/// (by default those the client trusts for Salesforce; see
/// [`connect_with_tls`](Self::connect_with_tls)), so `require` here is libpq's `verify-full`.
/// The password in the URL never appears in `Debug` output or errors.
///
/// ```no_run
/// # async fn f(auth: sfstream::auth::AccessToken) -> sfstream::Result<()> {
/// use sfstream::replay::PostgresStorage;
/// let storage =
///     PostgresStorage::connect("postgresql://sfstream@127.0.0.1/app", "orders-consumer").await?;
/// let client = sfstream::Client::builder(auth).replay_storage(storage).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStorage {
    pub(super) inner: Arc<Inner>,
    retry_for: Duration,
}

pub(super) struct Inner {
    pub(super) config: Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) key: String,
    /// `None` after a connection was lost: the next attempt reconnects.
    pub(super) client: Mutex<Option<Arc<Client>>>,
}

impl fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("key", &self.inner.key)
            .field("table", &POSTGRES_TABLE)
            .field("retry_for", &self.retry_for)
            .finish_non_exhaustive()
    }
}

pub(super) fn pg_error(what: &str, e: tokio_postgres::Error) -> Error {
    // tokio-postgres' Display is the kind alone ("db error", "error performing TLS
    // handshake"): what the server said, or why the certificate was refused, is in its sources.
    let mut text = format!("{what}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text.push_str(tls_hint(&e));
    Error::new(ErrorKind::Replay, text).with_source(e)
}

impl PostgresStorage {
    /// Connect to the database at `url` (`postgresql://user:password@host:port/db` or
    /// `host=... user=...`), create the table if it is missing, and keep markers under `key`
    /// (one key per consumer: two clients that must not share markers need two keys).
    /// TLS, as the URL's `sslmode` asks, trusts the default roots ([`DatabaseTls::new`]).
    pub async fn connect(url: &str, key: impl Into<String>) -> Result<Self> {
        Self::connect_with_tls(url, key, DatabaseTls::new()).await
    }

    /// [`connect`](Self::connect), trusting the roots of `tls` (a private CA, say).
    pub async fn connect_with_tls(
        url: &str,
        key: impl Into<String>,
        tls: DatabaseTls,
    ) -> Result<Self> {
        // The URL may hold a password: never echo it.
        let config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            Error::new(
                ErrorKind::Replay,
                "the PostgreSQL connection string is not valid",
            )
            .with_source(e)
        })?;
        let tls = MakeRustlsConnect::new(Arc::unwrap_or_clone(tls.resolve()?));
        let storage = PostgresStorage {
            inner: Arc::new(Inner {
                config,
                tls,
                key: key.into(),
                client: Mutex::new(None),
            }),
            retry_for: Duration::from_secs(10),
        };
        let client = storage.inner.client().await?;
        if let Err(e) = client.batch_execute(CREATE).await {
            // Two processes creating the table at once: one loses the race on the catalog.
            let raced = e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION);
            if !raced {
                return Err(pg_error("cannot create the replay marker table", e));
            }
        }
        Ok(storage)
    }

    /// How long a failing read or write is retried (with backoff from 50 ms to 2 s, reconnecting)
    /// before it is reported; 10 s by default. The client retries a failed write again with
    /// the next commit.
    pub fn retry_for(mut self, duration: Duration) -> Self {
        self.retry_for = duration;
        self
    }

    /// The key this storage keeps markers under.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Run `op` on a connection, reconnecting and backing off on failure until `retry_for`.
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let (inner, op) = (&self.inner, &op);
        retry_with_backoff(self.retry_for, move || async move {
            let client = inner.client().await?;
            op(client.clone()).await.map_err(|e| {
                if client.is_closed() {
                    inner.forget(&client);
                }
                pg_error(what, e)
            })
        })
        .await
    }
}

impl Inner {
    /// The open connection, or a new one.
    pub(super) async fn client(&self) -> Result<Arc<Client>> {
        if let Some(c) = self.lock().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| pg_error("cannot connect to PostgreSQL", e))?;
        // Ends by itself when the client is dropped or the server goes away.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %sanitized(&e.to_string()), "replay storage: PostgreSQL connection ended");
            }
        });
        let client = Arc::new(client);
        *self.lock() = Some(client.clone());
        Ok(client)
    }

    pub(super) fn forget(&self, client: &Arc<Client>) {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *slot = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Client>>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReplayStorage for PostgresStorage {
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        Box::pin(async move {
            let key = self.inner.key.as_str();
            let row = self
                .retrying("cannot read the replay marker", |c| async move {
                    c.query_opt(SELECT, &[&key, &subscription]).await
                })
                .await?;
            let Some(row) = row else { return Ok(None) };
            let id: String = row.get(0);
            let date: Option<SystemTime> = row.get(1);
            let replay_id = id.parse().map_err(|e| {
                Error::new(
                    ErrorKind::Replay,
                    format!("stored replay id {id:?} of {subscription} is not a number"),
                )
                .with_source(e)
            })?;
            Ok(Some(ReplayMarker::new(replay_id, date)))
        })
    }

    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = self.inner.key.as_str();
            let id = marker.replay_id.to_string();
            let id = id.as_str();
            self.retrying("cannot store the replay marker", |c| async move {
                c.execute(UPSERT, &[&key, &subscription, &id, &marker.date])
                    .await
            })
            .await
            .map(drop)
        })
    }

    fn supports_fencing(&self) -> bool {
        true
    }

    fn set_fenced<'a>(
        &'a self,
        subscription: &'a str,
        marker: ReplayMarker,
        epoch: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = self.inner.key.as_str();
            let id = marker.replay_id.to_string();
            let id = id.as_str();
            let theirs = i64::try_from(epoch).unwrap_or(i64::MAX);
            let current: Option<i64> = self
                .retrying("cannot store the replay marker", |c| async move {
                    c.query_one(
                        FENCED_UPSERT,
                        &[&key, &subscription, &id, &marker.date, &theirs],
                    )
                    .await
                })
                .await?
                .get(0);
            if current == Some(theirs) {
                return Ok(());
            }
            Err(super::postgres_lease::fenced(epoch, current))
        })
    }
}
