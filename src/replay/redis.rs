use super::backoff::retry_with_backoff;
use super::database_tls::tls_hint;
use super::{DatabaseTls, ReplayMarker, ReplayStorage};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

// Runs atomically on the server, so two writers can never move a marker backwards. Values are
// "<replay id> <date in µs since the epoch>" (the date may be missing); numbers compare as
// decimal text of any width (Lua numbers are doubles and would round ids past 2^53).
macro_rules! set_script {
    () => {
        r#"
local function gt(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then return nb end
  if na then return gt(b:sub(2), a:sub(2)) end
  if #a ~= #b then return #a > #b end
  return a > b
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local cid, cdate = string.match(cur, '^(%S+) ?(%S*)$')
  local id, date = ARGV[2], ARGV[3]
  local newer
  if cid == nil or id:sub(1, 1) == '-' then
    -- a negative id is a restart point after an expired id: it replaces what is stored
    newer = true
  elseif date ~= '' and cdate ~= '' and date ~= cdate then
    newer = gt(date, cdate)
  else
    newer = gt(id, cid)
  end
  if not newer then return 0 end
end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
end
return 1
"#
    };
}

const SET: &str = set_script!();

// Fencing: the write happens only if the lease's epoch counter (KEYS[2]) is still the
// writer's (ARGV[4]), checked in the same script, so atomically with the write.
const FENCED_SET: &str = concat!(
    "if redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end\n",
    set_script!()
);

/// Markers in Redis (cargo feature `redis`), shared by every process that uses the same server
/// and key.
///
/// One hash per key, `sfstream:replay:<key>`, with one field per channel whose value is
/// `"<replay id> <date in microseconds since the epoch>"` (the date is left out when the event
/// had none). Writes run a server-side Lua script that compares with the stored value (newer
/// date, or the same or no date and a higher replay id), so a marker never moves backwards,
/// even with two writers on the same key. A failed read or write is retried with exponential
/// backoff, reconnecting, for up to [`retry_for`](Self::retry_for); the stream goes on
/// meanwhile and the client coalesces the markers committed in the meantime into the next
/// write. [`Client::close`](crate::Client::close) waits for the last write.
///
/// Its [`lease`](Self::lease) for active/standby is the key `sfstream:lease:<key>` (holder and
/// epoch, expiring by the server's clock) and the counter `sfstream:lease:<key>:epoch`.
///
/// Durability is the server's: with `appendonly yes` and `appendfsync always` an acknowledged
/// write survives a server crash; with snapshots only, the last seconds may be lost (which
/// means redelivery, never loss).
///
/// A `rediss://` URL connects over TLS, verifying the server's certificate against the roots
/// of a [`DatabaseTls`] (by default those the client trusts for Salesforce; see
/// [`connect_with_tls`](Self::connect_with_tls)). `rediss://...#insecure` is refused: there is
/// no way to skip verification.
///
/// ```no_run
/// # async fn f(auth: sfstream::auth::AccessToken) -> sfstream::Result<()> {
/// use sfstream::replay::RedisStorage;
/// let storage = RedisStorage::connect("redis://127.0.0.1:6379/0", "orders-consumer").await?;
/// let client = sfstream::Client::builder(auth).replay_storage(storage).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStorage {
    pub(super) inner: Arc<Inner>,
    retry_for: Duration,
}

pub(super) struct Inner {
    pub(super) client: redis::Client,
    /// For `rediss://`: the connection is made here, not by the `redis` crate.
    pub(super) tls: Option<Tls>,
    pub(super) hash: String,
    pub(super) script: redis::Script,
    /// `None` after a failure: the next attempt reconnects.
    pub(super) connection: Mutex<Option<MultiplexedConnection>>,
}

#[derive(Clone)]
pub(super) struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    host: String,
    port: u16,
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage")
            .field("hash", &self.inner.hash)
            .field("retry_for", &self.retry_for)
            .finish_non_exhaustive()
    }
}

pub(super) fn redis_error(what: &str, e: redis::RedisError) -> Error {
    // The error text never holds the URL (and so no password).
    Error::new(ErrorKind::Replay, format!("{what}: {e}")).with_source(e)
}

fn connect_error(e: std::io::Error) -> Error {
    let hint = tls_hint(&e);
    Error::new(
        ErrorKind::Replay,
        format!("cannot connect to Redis: {e}{hint}"),
    )
    .with_source(e)
}

fn bad_url(detail: &str) -> Error {
    Error::new(
        ErrorKind::Replay,
        format!("the Redis URL is not valid: {detail}"),
    )
}

/// The `redis` crate's client for `url` and, for `rediss://`, how to make the TLS connection
/// it is handed (its own TLS features would build a second rustls configuration).
fn parse_url(url: &str, tls: &DatabaseTls) -> Result<(redis::Client, Option<Tls>)> {
    // The URL may hold a password: never echo it.
    let invalid = |e: redis::RedisError| {
        Error::new(ErrorKind::Replay, "the Redis URL is not valid").with_source(e)
    };
    let mut parsed = url::Url::parse(url).map_err(|_| bad_url("not a URL"))?;
    if !matches!(parsed.scheme(), "rediss" | "valkeys") {
        return Ok((redis::Client::open(url).map_err(invalid)?, None));
    }
    if parsed.fragment().is_some() {
        return Err(bad_url(
            "a fragment (#insecure) is not supported: the certificate is always verified",
        ));
    }
    // The same URL without TLS describes the rest (database, user, password, protocol).
    parsed
        .set_scheme("redis")
        .map_err(|()| bad_url("unexpected scheme"))?;
    let client = redis::Client::open(parsed.as_str()).map_err(invalid)?;
    let redis::ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr.clone() else {
        return Err(bad_url("rediss:// needs a host"));
    };
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| bad_url("the host is not a valid TLS server name"))?;
    let tls = Tls {
        connector: tokio_rustls::TlsConnector::from(tls.resolve()?),
        server_name,
        host,
        port,
    };
    Ok((client, Some(tls)))
}

impl RedisStorage {
    /// Connect to the server at `url` (`redis://[user:password@]host:port/db`) and keep markers
    /// under `key` (one key per consumer). `rediss://` uses TLS, trusting the default roots
    /// ([`DatabaseTls::new`]).
    pub async fn connect(url: &str, key: impl AsRef<str>) -> Result<Self> {
        Self::connect_with_tls(url, key, DatabaseTls::new()).await
    }

    /// [`connect`](Self::connect), trusting the roots of `tls` for a `rediss://` URL (a
    /// private CA, say); ignored for `redis://`.
    pub async fn connect_with_tls(
        url: &str,
        key: impl AsRef<str>,
        tls: DatabaseTls,
    ) -> Result<Self> {
        let (client, tls) = parse_url(url, &tls)?;
        let storage = RedisStorage {
            inner: Arc::new(Inner {
                client,
                tls,
                hash: format!("sfstream:replay:{}", key.as_ref()),
                script: redis::Script::new(SET),
                connection: Mutex::new(None),
            }),
            retry_for: Duration::from_secs(10),
        };
        storage.inner.connection().await?;
        Ok(storage)
    }

    /// How long a failing read or write is retried (with backoff from 50 ms to 2 s, reconnecting)
    /// before it is reported; 10 s by default.
    pub fn retry_for(mut self, duration: Duration) -> Self {
        self.retry_for = duration;
        self
    }

    /// The Redis hash this storage keeps markers in.
    pub fn hash(&self) -> &str {
        &self.inner.hash
    }

    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (inner, op) = (&self.inner, &op);
        retry_with_backoff(self.retry_for, move || async move {
            let c = inner.connection().await?;
            op(c).await.map_err(|e| {
                *inner.lock() = None;
                redis_error(what, e)
            })
        })
        .await
    }
}

impl Inner {
    pub(super) async fn connection(&self) -> Result<MultiplexedConnection> {
        if let Some(c) = self.lock().clone() {
            return Ok(c);
        }
        let c = match &self.tls {
            None => self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| redis_error("cannot connect to Redis", e))?,
            Some(tls) => self.connect_tls(tls).await?,
        };
        *self.lock() = Some(c.clone());
        Ok(c)
    }

    async fn connect_tls(&self, tls: &Tls) -> Result<MultiplexedConnection> {
        let tcp = tokio::net::TcpStream::connect((tls.host.as_str(), tls.port))
            .await
            .map_err(connect_error)?;
        // Marker writes are small requests waiting for their reply.
        let _ = tcp.set_nodelay(true);
        let stream = tls
            .connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(connect_error)?;
        let (c, driver) = MultiplexedConnection::new_with_config(
            &self.client.get_connection_info().redis,
            stream,
            redis::AsyncConnectionConfig::new(),
        )
        .await
        .map_err(|e| redis_error("cannot connect to Redis", e))?;
        // Ends when the last handle to the connection is dropped or the server goes away.
        tokio::spawn(driver);
        Ok(c)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The replay id and the date in µs (empty when there is none), as the scripts take them.
fn script_args(marker: &ReplayMarker) -> (String, String) {
    let date = marker.date.map(|d| micros(d).to_string());
    (marker.replay_id.to_string(), date.unwrap_or_default())
}

fn micros(date: SystemTime) -> i128 {
    match date.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    }
}

fn from_micros(us: i64) -> Option<SystemTime> {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
}

fn parse(subscription: &str, value: &str) -> Result<ReplayMarker> {
    let bad = || {
        Error::new(
            ErrorKind::Replay,
            format!("stored replay marker {value:?} of {subscription} is not valid"),
        )
    };
    let mut parts = value.split(' ');
    let id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let date = match parts.next() {
        None | Some("") => None,
        Some(d) => Some(d.parse().ok().and_then(from_micros).ok_or_else(bad)?),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(ReplayMarker::new(id, date))
}

impl ReplayStorage for RedisStorage {
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        Box::pin(async move {
            let hash = self.inner.hash.as_str();
            let value: Option<String> = self
                .retrying("cannot read the replay marker", |mut c| async move {
                    redis::cmd("HGET")
                        .arg(hash)
                        .arg(subscription)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            value.map(|v| parse(subscription, &v)).transpose()
        })
    }

    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (id, date) = script_args(&marker);
            let (id, date) = (id.as_str(), date.as_str());
            let inner = &self.inner;
            self.retrying("cannot store the replay marker", |mut c| async move {
                inner
                    .script
                    .key(&inner.hash)
                    .arg(subscription)
                    .arg(id)
                    .arg(date)
                    .invoke_async::<i64>(&mut c)
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
            let (id, date) = script_args(&marker);
            let (id, date) = (id.as_str(), date.as_str());
            let epoch_key = super::redis_lease::epoch_key(&self.inner.hash);
            let epoch_key = epoch_key.as_str();
            static SCRIPT: std::sync::LazyLock<redis::Script> =
                std::sync::LazyLock::new(|| redis::Script::new(FENCED_SET));
            let script = &*SCRIPT;
            let inner = &self.inner;
            let written = self
                .retrying("cannot store the replay marker", |mut c| async move {
                    script
                        .key(&inner.hash)
                        .key(epoch_key)
                        .arg(subscription)
                        .arg(id)
                        .arg(date)
                        .arg(epoch)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await?;
            if written < 0 {
                return Err(super::redis_lease::fenced(epoch));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip_and_bad_ones_are_typed_errors() {
        let date = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_316_801_123);
        let v = format!("{} {}", 1_u64 << 40, micros(date));
        assert_eq!(
            parse("/c", &v).unwrap(),
            ReplayMarker::new(1 << 40, Some(date))
        );
        assert_eq!(parse("/c", "7").unwrap(), ReplayMarker::new(7, None));
        for bad in ["", "x", "1 y", "1 2 3", "99999999999999999999"] {
            assert_eq!(parse("/c", bad).unwrap_err().kind(), ErrorKind::Replay);
        }
    }
}
