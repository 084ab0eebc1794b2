use super::{Client, ClientInner};
use crate::DEFAULT_API_VERSION;
use crate::auth::Authenticator;
use crate::connection::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::middleware::AuthLayer;
use crate::middleware::replay::ReplayLayer;
use crate::publish::RestClient;
use crate::replay::lease::LeaseTiming;
use crate::replay::tracker::ReplayState;
use crate::replay::{CommitPolicy, Lease, ReplayOption, ReplayStorage};
use crate::transport::{
    BoxTransport, HttpClient, HttpSettings, HttpTransport, Layer, Proxy, TlsOptions, Transport,
};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Send + Sync so that the builder is too (C-SEND-SYNC): it may sit in a shared config.
type LayerFn = Box<dyn FnOnce(BoxTransport) -> BoxTransport + Send + Sync>;

/// Options of a [`Client`]. Defaults follow aiosfstream where it has the option
/// (`max_pending_count` 100, `connection_timeout` 10 s) and CometD/EMP-Connector elsewhere.
/// A duration longer than a century counts as a century, so `Duration::MAX` means "never".
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// use std::time::Duration;
/// use sfstream::{Client, auth::AccessToken};
/// let auth = AccessToken::new("00D...", "https://example.my.salesforce.com".parse().unwrap());
/// let client = Client::builder(auth)
///     .api_version("66.0")
///     .max_pending_count(1000)
///     .connection_timeout(Some(Duration::from_secs(30)))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ClientBuilder {
    authenticator: Box<dyn Authenticator>,
    api_version: String,
    max_pending: usize,
    settings: Settings,
    tls: TlsOptions,
    proxy: Option<Proxy>,
    max_response_bytes: Option<usize>,
    transport: Option<BoxTransport>,
    layers: Vec<LayerFn>,
    replay: ReplayOption,
    replay_storage: Option<Arc<dyn ReplayStorage>>,
    replay_fallback: Option<ReplayOption>,
    commit_policy: CommitPolicy,
    lease: Option<Arc<dyn Lease>>,
    lease_timing: LeaseTiming,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_version", &self.api_version)
            .field("max_pending_count", &self.max_pending)
            .field("settings", &self.settings)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("custom_transport", &self.transport.is_some())
            .field("layers", &self.layers.len())
            .field("replay", &self.replay)
            .field("replay_storage", &self.replay_storage.is_some())
            .field("replay_fallback", &self.replay_fallback)
            .field("commit_policy", &self.commit_policy)
            .field("lease", &self.lease.is_some())
            .field("lease_timing", &self.lease_timing)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(crate) fn new(authenticator: Box<dyn Authenticator>) -> Self {
        ClientBuilder {
            authenticator,
            api_version: DEFAULT_API_VERSION.to_owned(),
            max_pending: 100,
            settings: Settings {
                request_timeout: Duration::from_secs(30),
                max_network_delay: Duration::from_secs(15),
                connection_timeout: Some(Duration::from_secs(10)),
                backoff_step: Duration::from_secs(1),
                backoff_max: Duration::from_secs(30),
                advice_timeout: Duration::from_secs(110),
                stall_timeout: None,
                unhealthy_after: None,
                spans: crate::telemetry::SessionSpans::none(),
                can_refresh: true,
            },
            tls: TlsOptions::default(),
            proxy: None,
            max_response_bytes: None,
            transport: None,
            layers: Vec::new(),
            replay: ReplayOption::NewEvents,
            replay_storage: None,
            replay_fallback: None,
            commit_policy: CommitPolicy::default(),
            lease: None,
            lease_timing: LeaseTiming::default(),
        }
    }

    /// Where a subscription starts when nothing is stored for its channel (default
    /// [`ReplayOption::NewEvents`]). After a reconnect the client always continues from the
    /// last event it delivered, whatever this says. To start one channel after a specific
    /// replay id, use [`Client::subscribe_from`].
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.replay(sfstream::replay::ReplayOption::AllEvents); }
    /// ```
    pub fn replay(mut self, option: ReplayOption) -> Self {
        self.replay = option;
        self
    }

    /// Store replay markers here and start subscriptions from them (see
    /// [`crate::replay`] and [`CommitPolicy`] for when markers are stored).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) -> sfstream::Result<()> {
    /// let b = b.replay_storage(sfstream::replay::FileStorage::open("replay.json")?);
    /// # Ok(()) }
    /// ```
    pub fn replay_storage(mut self, storage: impl ReplayStorage) -> Self {
        self.replay_storage = Some(Arc::new(storage));
        self
    }

    /// What to do when the server rejects a replay id (outside the retention window): subscribe
    /// again from all retained events or new events only, and yield a
    /// [`ErrorKind::ReplayGap`](crate::ErrorKind::ReplayGap) notice first. Without a fallback
    /// such a subscribe fails with [`ErrorKind::Replay`](crate::ErrorKind::Replay). Applies to
    /// the automatic resubscribes after a reconnect too.
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.replay_fallback(sfstream::replay::ReplayOption::AllEvents); }
    /// ```
    pub fn replay_fallback(mut self, fallback: ReplayOption) -> Self {
        self.replay_fallback = Some(fallback);
        self
    }

    /// Active/standby: of the clients sharing `lease`, only the holder streams.
    /// [`open`](Client::open) (and so [`connect`](Self::connect)) waits until this client holds
    /// the lease; a standby waits there, asking every `renew_every`
    /// ([`lease_timing`](Self::lease_timing)), and takes the lease over at its next attempt
    /// after the holder released it ([`Client::close`]) or let it expire (a crash, a pause, a
    /// partition); its subscriptions start from the stored markers.
    ///
    /// Every marker write carries the lease's epoch and the
    /// [`replay_storage`](Self::replay_storage) refuses writes of an older epoch (fencing), so
    /// a former holder can never overwrite what its successor stored. A client that loses the
    /// lease (a renewal refused or too late, or a fenced write) stops streaming at once: each of
    /// its streams yields an [`ErrorKind::LeaseLost`](crate::ErrorKind::LeaseLost) error next
    /// (events still queued are dropped, not handed out: the new holder redelivers them) and
    /// ends, and the client is closed; `open()` it again to stand by (it acquires the lease
    /// under a newer epoch and resumes from the stored markers). Needs a storage that
    /// fences, paired with the lease (`build` fails with
    /// [`ErrorKind::Client`](crate::ErrorKind::Client) otherwise).
    ///
    /// The lease proves only that the holder reaches its database: a holder that reaches the
    /// database but not Salesforce keeps it, and the standby waits. Watch
    /// [`Client::health`] (and [`stall_timeout`](Self::stall_timeout) for a stream that goes
    /// silent) and [`close`](Client::close) a client that stays unhealthy for longer than you
    /// accept (a standby then takes over), or wire `healthy` to a liveness probe.
    ///
    /// ```no_run
    /// # async fn f(auth: sfstream::auth::AccessToken) -> sfstream::Result<()> {
    /// use sfstream::replay::PostgresStorage;
    /// let storage = PostgresStorage::connect("postgresql://sfstream@db/app", "orders").await?;
    /// let client = sfstream::Client::builder(auth)
    ///     .lease(storage.lease())
    ///     .replay_storage(storage)
    ///     .connect() // returns once this client holds the lease
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn lease(mut self, lease: impl Lease) -> Self {
        self.lease = Some(Arc::new(lease));
        self
    }

    /// How long a lease lasts without renewal and how often the holder renews it (default
    /// 15 s and 5 s). `renew_every` must be shorter than `duration`; a third of it lets two
    /// renewals in a row fail (a slow database, a lost packet) before the lease is lost.
    ///
    /// The trade-off: after the holder dies, a standby takes over within `duration` plus one
    /// `renew_every` (its polling interval), so a short lease means a short outage; but a
    /// holder that cannot renew within `duration` (a GC or VM pause, an overloaded database,
    /// a network blip) loses the lease, so a lease shorter than such hiccups means fail-overs
    /// that were not needed, each of which redelivers the events in flight.
    ///
    /// Clocks: expiry is decided by the store's clock (PostgreSQL's `now()`, Redis's key
    /// expiry), never by comparing clients' clocks, so the clients' wall clocks need not
    /// agree. The holder counts `duration` on its own monotonic clock from when it sent the
    /// renewal, which ends no later than the store's expiry as long as clocks run at about the
    /// same rate; it stops streaming when that count runs out without a renewal. Assumed: the
    /// store's clock is never stepped (slew it): a step forward expires the lease early, and
    /// the former holder may then stream for up to `renew_every` beside its successor (its
    /// marker writes are still refused). A client suspended for longer than the lease (a
    /// stopped process, a paused VM) is fenced: its writes are refused and its stream ends
    /// with `LeaseLost` when it runs again.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.lease_timing(Duration::from_secs(30), Duration::from_secs(10)); }
    /// ```
    pub fn lease_timing(mut self, duration: Duration, renew_every: Duration) -> Self {
        self.lease_timing = LeaseTiming {
            // A year is "never expires" enough, and fits every store's expiry arithmetic.
            duration: duration.min(Duration::from_secs(365 * 24 * 60 * 60)),
            renew_every,
        };
        self
    }

    /// When markers are stored (default [`CommitPolicy::AfterProcessed`]).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.commit_policy(sfstream::replay::CommitPolicy::Manual); }
    /// ```
    pub fn commit_policy(mut self, policy: CommitPolicy) -> Self {
        self.commit_policy = policy;
        self
    }

    /// Streaming API version, e.g. `"66.0"` (default [`DEFAULT_API_VERSION`]; replay needs
    /// 37.0+, Change Data Capture 44.0+).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.api_version("62.0"); }
    /// ```
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = version.into();
        self
    }

    /// How many events may wait for consumers before the client stops asking the server for
    /// more (default 100; 0 means no limit). The limit pauses the long-poll loop: memory stays
    /// bounded by the limit plus one response batch. A pause longer than the server's reconnect
    /// window (40 s at Salesforce) ends the session; the client then handshakes and
    /// resubscribes, which is expected and loses nothing the server still retains.
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.max_pending_count(10_000); }
    /// ```
    pub fn max_pending_count(mut self, count: usize) -> Self {
        self.max_pending = count;
        self
    }

    /// When the connection has been failing for this long, every stream yields one
    /// [`ErrorKind::TransportTimeout`](crate::ErrorKind::TransportTimeout) error; the client
    /// keeps retrying (default 10 s; `None` never reports).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.connection_timeout(None); }
    /// ```
    pub fn connection_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.connection_timeout = timeout;
        self
    }

    /// Stall detection (default off): when a subscription has delivered nothing for this long
    /// while the connection is healthy (connected, not paused by backpressure), the client
    /// unsubscribes and subscribes that channel again from the last replay id it delivered (a
    /// rehandshake follows if the server no longer knows the session), and the stream yields an
    /// [`ErrorKind::Stalled`](crate::ErrorKind::Stalled) notice first. It guards against the
    /// Salesforce event-bus backlog of knowledge article 005321562, where a subscriber receives
    /// nothing for hours while its session looks healthy; Salesforce's advice is to resubscribe
    /// after a quiet period.
    ///
    /// Leave it off for PushTopic (`/topic/`) and generic (`/u/`) channels, where silence is
    /// normal. For Change Data Capture (`/data/`) and platform events (`/event/`) that carry
    /// steady traffic, set it to a few times the longest quiet period you expect (for example
    /// 15 minutes): a resubscribe costs one unsubscribe and one subscribe, and loses nothing the
    /// server still retains (72 hours). It applies to every subscription of the client.
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.stall_timeout(Some(std::time::Duration::from_secs(15 * 60))); }
    /// ```
    pub fn stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.stall_timeout = timeout;
        self
    }

    /// How long the connection may fail before [`Client::health`] reports unhealthy (default:
    /// the [`connection_timeout`](Self::connection_timeout), or 10 s when that is `None`). A
    /// single failed connect never does: probes wired to health must not restart a pod on
    /// every blip.
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.unhealthy_after(std::time::Duration::from_secs(60)); }
    /// ```
    pub fn unhealthy_after(mut self, threshold: Duration) -> Self {
        self.settings.unhealthy_after = Some(threshold);
        self
    }

    /// Timeout of control requests: handshake, subscribe, unsubscribe, publish, disconnect
    /// (default 30 s).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.request_timeout(std::time::Duration::from_secs(10)); }
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Slack added to the server's long-poll timeout (advice, 110 s at Salesforce) before a
    /// connect that never answers counts as failed (default 15 s).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.max_network_delay(std::time::Duration::from_secs(5)); }
    /// ```
    pub fn max_network_delay(mut self, delay: Duration) -> Self {
        self.settings.max_network_delay = delay;
        self
    }

    /// Backoff after consecutive failures: `step` more per failure, at most `max` (default 1 s
    /// and 30 s, as CometD).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.backoff(Duration::from_millis(500), Duration::from_secs(10)); }
    /// ```
    pub fn backoff(mut self, step: Duration, max: Duration) -> Self {
        self.settings.backoff_step = step;
        self.settings.backoff_max = max;
        self
    }

    /// TLS configuration for the CometD endpoint and, unless the authenticator has its own,
    /// the token endpoint (client certificates, pinned roots). To only trust more roots, use
    /// [`add_root_certificates_pem`](ClientBuilder::add_root_certificates_pem).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder, config: rustls::ClientConfig) { let b = b.tls_config(config); }
    /// ```
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Trust the certificates in this PEM file besides the default roots (the webpki roots,
    /// plus the platform's with feature `native-roots`): a TLS-inspecting proxy's CA, say.
    /// Applies to the CometD and token endpoints; [`build`](ClientBuilder::build) reads the
    /// file and fails with [`ErrorKind::Client`](crate::ErrorKind::Client) if it holds no
    /// certificate, or if [`tls_config`](ClientBuilder::tls_config) is set too.
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.add_root_certificates_pem("/etc/ssl/corp-ca.pem"); }
    /// ```
    pub fn add_root_certificates_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.extra_roots.push(path.into());
        self
    }

    /// Connect through this HTTP proxy, for the CometD endpoint and, unless the authenticator
    /// has its own, the token requests. [`Proxy::from_env`] reads `HTTPS_PROXY`, `NO_PROXY`
    /// and the rest as curl does; without this call the environment is ignored.
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) -> sfstream::Result<()> {
    /// use sfstream::transport::Proxy;
    /// let b = b.proxy(Proxy::all("http://proxy.corp.example:3128")?.basic_auth("svc", "secret"));
    /// # Ok(()) }
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Largest response body accepted (default 32 MiB).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) { let b = b.max_response_bytes(64 << 20); }
    /// ```
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = Some(bytes);
        self
    }

    /// Replace the HTTP transport (the auth layer still wraps it).
    ///
    /// ```no_run
    /// # fn f(b: sfstream::ClientBuilder) -> sfstream::Result<()> {
    /// let http = sfstream::transport::HttpTransport::builder().build()?;
    /// let b = b.transport(http);
    /// # Ok(()) }
    /// ```
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Add your own middleware over the auth layer (the first added is innermost). See
    /// [`transport`](crate::transport) for an example layer.
    ///
    /// ```no_run
    /// # fn f<L>(b: sfstream::ClientBuilder, my_layer: L) where L: sfstream::transport::Layer<sfstream::transport::BoxTransport> + Send + Sync + 'static {
    /// let b = b.layer(my_layer);
    /// # }
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxTransport> + Send + Sync + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            Arc::new(layer.layer(inner)) as BoxTransport
        }));
        self
    }

    /// Build a closed client; [`Client::open`] connects it.
    pub fn build(self) -> Result<Client> {
        let lease = self.lease_config()?;
        let http_settings = HttpSettings {
            tls: self.tls.resolve()?,
            proxy: self.proxy,
        };
        self.authenticator.inherit_http_settings(&http_settings);
        // The REST publisher shares the HTTP transport's client (pool, TLS, proxy); with a
        // custom transport it gets its own, configured the same way.
        let (base, http_client): (BoxTransport, _) = match self.transport {
            Some(t) => (
                t,
                HttpClient::new(
                    &http_settings,
                    self.max_response_bytes
                        .unwrap_or(crate::transport::DEFAULT_MAX_RESPONSE_BYTES),
                )?,
            ),
            None => {
                let mut http = HttpTransport::builder().settings(http_settings);
                if let Some(n) = self.max_response_bytes {
                    http = http.max_response_bytes(n);
                }
                let http = http.build()?;
                let client = http.http_client();
                (Arc::new(http), client)
            }
        };
        let replay = Arc::new(ReplayState::new(
            self.replay_storage,
            self.replay,
            self.replay_fallback,
            self.commit_policy,
        ));
        crate::metrics::describe();
        let spans = crate::telemetry::SessionSpans::new(&self.api_version);
        let base: BoxTransport = Arc::new(crate::telemetry::InstanceRecorder::new(
            base,
            spans.client().clone(),
        ));
        let mut settings = self.settings.saturated();
        settings.spans = spans;
        settings.can_refresh = self.authenticator.can_refresh();
        let auth = AuthLayer::from_boxed(self.authenticator, self.api_version);
        let rest = RestClient::new(http_client, auth.clone(), settings.request_timeout);
        let mut transport: BoxTransport = Arc::new(auth.layer(base));
        transport = Arc::new(ReplayLayer::new(replay.clone()).layer(transport));
        for layer in self.layers {
            transport = layer(transport);
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                transport,
                settings,
                max_pending: self.max_pending,
                session: Mutex::new(None),
                replay,
                status: Arc::new(crate::connection::Status::new()),
                rest,
                lease,
            }),
        })
    }

    fn lease_config(&self) -> Result<Option<super::lease::LeaseConfig>> {
        let Some(lease) = self.lease.clone() else {
            return Ok(None);
        };
        let refuse = |why: &str| Err(Error::new(ErrorKind::Client, why));
        if !self
            .replay_storage
            .as_ref()
            .is_some_and(|s| s.supports_fencing())
        {
            return refuse(
                "a lease needs a replay storage that fences writes (PostgresStorage or RedisStorage, with the lease from its lease())",
            );
        }
        let LeaseTiming {
            duration,
            renew_every,
        } = self.lease_timing;
        if renew_every.is_zero() || renew_every >= duration {
            return refuse(
                "the lease renewal interval must be above zero and below the lease duration",
            );
        }
        Ok(Some(super::lease::LeaseConfig {
            lease,
            timing: self.lease_timing,
        }))
    }

    /// Build and open: handshake and first connect done when this returns.
    pub async fn connect(self) -> Result<Client> {
        let client = self.build()?;
        client.open().await?;
        Ok(client)
    }
}
