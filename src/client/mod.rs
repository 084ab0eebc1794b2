//! Layer 5: the public client.
//!
//! ```no_run
//! # async fn f() -> sfstream::Result<()> {
//! use futures::StreamExt;
//! use sfstream::{Client, auth::AccessToken};
//!
//! let auth = AccessToken::new(
//!     std::env::var("SF_ACCESS_TOKEN").unwrap(),
//!     std::env::var("SF_INSTANCE_URL").unwrap().parse().unwrap(),
//! );
//! let client = Client::builder(auth).connect().await?;
//! let mut changes = client.subscribe("/data/AccountChangeEvent").await?;
//! while let Some(item) = changes.next().await {
//!     match item {
//!         Ok(event) => println!("{} {:?}", event.channel(), event.replay_id()),
//!         // A report (outage, replay gap, malformed message); the stream goes on.
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! client.close().await?;
//! # Ok(()) }
//! ```

mod builder;
mod events;
mod flows;
mod hand_off;
mod lease;
mod session;
mod subscription;

pub use builder::ClientBuilder;
pub use events::Events;
pub use hand_off::{HandOff, Handed};
pub use subscription::Subscription;

use crate::auth::Authenticator;
use crate::bayeux::{Data, Message};
use crate::connection::{Command, ConnectionState, Settings, Shared, Status, spawn};
use crate::error::{Error, ErrorKind, Result};
use crate::replay::tracker::ReplayState;
use crate::transport::BoxTransport;
use futures::Stream;
use serde::Serialize;
use session::Session;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A Salesforce Streaming API client: a cheap, cloneable handle to one connection task.
///
/// Clones share the connection; use them from as many tasks as you like. The connection task
/// runs while the client is open; it ends after [`close`](Client::close), or when every handle
/// and every [`Subscription`] is dropped (it then sends `/meta/disconnect` itself). Call `close`
/// before your runtime shuts down so the server frees the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    transport: BoxTransport,
    settings: Settings,
    max_pending: usize,
    session: Mutex<Option<Arc<Session>>>,
    replay: Arc<ReplayState>,
    status: Arc<Status>,
    rest: crate::publish::RestClient,
    lease: Option<lease::LeaseConfig>,
}

impl Client {
    /// Options for a client that logs in with `authenticator`.
    pub fn builder(authenticator: impl Authenticator) -> ClientBuilder {
        ClientBuilder::new(Box::new(authenticator))
    }

    /// The REST side (publishing), sharing this client's login and HTTP client.
    pub(crate) fn rest(&self) -> &crate::publish::RestClient {
        &self.inner.rest
    }

    fn session(&self) -> Option<Arc<Session>> {
        self.inner
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn open_session(&self) -> Result<Arc<Session>> {
        self.session()
            .filter(|s| s.is_open())
            .ok_or_else(Error::closed)
    }

    /// Handshake and send the first connect. Fails with
    /// [`ErrorKind::InvalidOperation`] if the client is already open.
    ///
    /// With a [`lease`](crate::ClientBuilder::lease), first waits (as a standby, for as long
    /// as it takes) until this client holds the lease; subscriptions then start from the
    /// stored markers. Cancelling `open()` while it waits takes nothing.
    pub async fn open(&self) -> Result<()> {
        self.ensure_closed()?;
        let grant = match &self.inner.lease {
            Some(config) => Some(config.acquire().await),
            None => None,
        };
        let started = {
            let mut slot = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|s| s.is_open()) {
                Err(grant)
            } else {
                let shared = Arc::new(Shared::new(
                    self.inner.max_pending,
                    self.inner.replay.clone(),
                    self.inner.status.clone(),
                ));
                let weak = Arc::downgrade(&shared);
                self.inner.replay.set_error_sink(Arc::new(move |error| {
                    if let Some(shared) = weak.upgrade() {
                        shared.inbox.broadcast_error(error);
                    }
                }));
                let (commands, ready) = spawn(
                    self.inner.transport.clone(),
                    self.inner.settings.clone(),
                    shared.clone(),
                );
                // Weak: the sink must not keep the task alive once every handle is gone.
                let health = commands.downgrade();
                self.inner.replay.set_skip_sink(Arc::new(move || {
                    if let Some(commands) = health.upgrade() {
                        let _ = commands.send(Command::Health);
                    }
                }));
                let keeper = match (&self.inner.lease, grant) {
                    (Some(config), Some(grant)) => Some(config.keep(grant, &shared, &commands)),
                    _ => None,
                };
                let session = Arc::new(Session {
                    commands,
                    shared,
                    lease: tokio::sync::Mutex::new(keeper),
                });
                *slot = Some(session.clone());
                Ok((ready, session))
            }
        };
        let (ready, session) = match started {
            Ok(started) => started,
            Err(grant) => {
                if let (Some(config), Some(grant)) = (&self.inner.lease, grant) {
                    // Opened meanwhile by another call: give the extra grant back.
                    let _ = config.lease.release(&grant.owner, grant.epoch).await;
                }
                return Err(already_open());
            }
        };
        let opened = ready
            .await
            .map_err(|_| Error::new(ErrorKind::ConnectionClosed, "the connection task ended"))
            .and_then(|r| r);
        if opened.is_err()
            && let Some(keeper) = session.lease.lock().await.as_mut()
        {
            keeper.release().await;
        }
        opened
    }

    fn ensure_closed(&self) -> Result<()> {
        match self.session() {
            Some(s) if s.is_open() => Err(already_open()),
            _ => Ok(()),
        }
    }

    /// Send `/meta/disconnect` and stop. Streams yield what they already hold, then end.
    /// Waits until the replay marker of every event marked processed is stored, and fails with
    /// [`ErrorKind::Replay`] if that did not work (the next run may then repeat events).
    /// Closing a closed client does nothing.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// client.close().await?;
    /// assert!(client.closed());
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) -> Result<()> {
        let Some(session) = self.session() else {
            return Ok(());
        };
        let (reply, done) = tokio::sync::oneshot::channel();
        let result = if session.commands.send(Command::Close { reply }).is_err() {
            Ok(()) // already closed
        } else {
            done.await.unwrap_or(Ok(()))
        };
        // After the last markers are stored: a standby takes over from them at once.
        if let Some(keeper) = session.lease.lock().await.as_mut() {
            keeper.release().await;
        }
        result
    }

    /// Subscribe to `channel` (`/topic/...`, `/event/...`, `/data/...`, `/u/...`) and return its
    /// stream. A PushTopic channel may carry a filter query
    /// (`/topic/T?Industry='Energy'&ShippingCity='San Francisco'`): it is sent as written, the
    /// replay id goes on the wire under the channel without the filter, its stored replay
    /// marker is kept under the full name (apart from the topic's and other filters'), and
    /// events arriving on either name reach the stream. Salesforce documents no wildcard channels (no `/event/*`); Bayeux wildcards
    /// (`/a/*`, `/a/**`) work only with servers that offer them, such as CometD or Faye. Fails with [`ErrorKind::InvalidOperation`] if the
    /// client is closed or the channel already has a subscription, and with
    /// [`ErrorKind::Server`] if the server rejects it.
    pub async fn subscribe(&self, channel: impl Into<String>) -> Result<Subscription> {
        self.subscribe_with(channel.into(), None).await
    }

    async fn subscribe_with(
        &self,
        channel: String,
        replay_from: Option<i64>,
    ) -> Result<Subscription> {
        validate_channel(&channel, true)?;
        let session = self.open_session()?;
        let sub = session.shared.inbox.register(&channel);
        // Built first so that a cancelled subscribe() still unsubscribes (via Drop).
        let subscription = Subscription::new(channel.clone(), sub, session.clone());
        session
            .request(|reply| Command::Subscribe {
                channel,
                sub,
                replay_from,
                reply,
            })
            .await?;
        Ok(subscription)
    }

    /// Subscribe to `channel` starting after the event with `replay_id` (or from
    /// [`ReplayOption::AllEvents`](crate::replay::ReplayOption::AllEvents)`.id()` = -2, or
    /// `NewEvents.id()` = -1), whatever the storage says. Later resubscribes continue from the
    /// last delivered event.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// // Everything after replay id 1234, e.g. the last id your database has:
    /// let sub = client.subscribe_from("/data/AccountChangeEvent", 1234).await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_from(
        &self,
        channel: impl Into<String>,
        replay_id: i64,
    ) -> Result<Subscription> {
        self.subscribe_with(channel.into(), Some(replay_id)).await
    }

    /// Unsubscribe from `channel` and wait for the server's confirmation; its stream ends after
    /// the events it already holds.
    pub async fn unsubscribe(&self, channel: &str) -> Result<()> {
        let session = self.open_session()?;
        let channel = channel.to_owned();
        session
            .request(|reply| Command::Unsubscribe {
                channel,
                sub: None,
                reply,
            })
            .await
    }

    /// Publish `data` to `channel` over CometD and return the server's reply, for standard
    /// Bayeux servers (CometD, Faye).
    ///
    /// Salesforce does not implement CometD publishing: it rejects every publish with a `403`
    /// error (an [`ErrorKind::Server`] error). Publish to Salesforce over REST with
    /// [`publish_event`](Client::publish_event), [`publish_events`](Client::publish_events) and
    /// [`push_generic`](Client::push_generic).
    pub async fn publish<T: Serialize + ?Sized>(&self, channel: &str, data: &T) -> Result<Message> {
        validate_channel(channel, false)?;
        let data = Data::from_serialize(data).map_err(|e| {
            Error::new(ErrorKind::Client, "cannot serialize the data to publish").with_source(e)
        })?;
        let session = self.open_session()?;
        let channel = channel.to_owned();
        session
            .request(|reply| Command::Publish {
                channel,
                data,
                reply,
            })
            .await
    }

    /// One stream of every event of the detached subscriptions, in arrival order
    /// (aiosfstream's `receive()`/`async for`): subscribe, [`detach`](Subscription::detach),
    /// then read this. See [`Events`].
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// use futures::StreamExt;
    /// for channel in ["/event/Order__e", "/data/AccountChangeEvent"] {
    ///     client.subscribe(channel).await?.detach();
    /// }
    /// let mut all = client.receive()?;
    /// while let Some(item) = all.next().await {
    ///     match item {
    ///         Ok(event) => println!("{}", event.channel()),
    ///         Err(e) => eprintln!("{e}"), // reported; the stream goes on
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn receive(&self) -> Result<Events> {
        let session = self.session().ok_or_else(Error::closed)?;
        Ok(Events::new(session))
    }

    /// Whether the client is closed (never opened, closed, or failed to open).
    pub fn closed(&self) -> bool {
        self.session().is_none_or(|s| !s.is_open())
    }

    /// The channels with a confirmed subscription.
    pub fn subscriptions(&self) -> BTreeSet<String> {
        self.session()
            .map(|s| {
                s.shared
                    .subscriptions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// `Some("long-polling")` while open (the only connection type Salesforce offers).
    pub fn connection_type(&self) -> Option<&'static str> {
        (!self.closed()).then_some(crate::bayeux::channels::LONG_POLLING)
    }

    /// Items delivered but not yet taken by a consumer: events, and errors reported on a stream
    /// (an error reported on several subscriptions counts once per subscription).
    pub fn pending_count(&self) -> usize {
        self.session().map_or(0, |s| s.shared.inbox.pending())
    }

    /// Whether any event waits for a consumer.
    pub fn has_pending_messages(&self) -> bool {
        self.pending_count() > 0
    }

    /// The connection's current state (`Closed` before `open`).
    ///
    /// ```no_run
    /// # fn f(client: sfstream::Client) {
    /// if client.state() == sfstream::ConnectionState::Connected { /* ... */ }
    /// # }
    /// ```
    pub fn state(&self) -> ConnectionState {
        self.inner.status.get()
    }

    /// The current state, then every change, across `close` and `open` (a stream taken before
    /// `open` sees the first handshake). Ends when the client and its subscriptions are gone.
    /// Useful to log reconnects or to wait for one in tests.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) {
    /// use futures::StreamExt;
    /// let mut updates = client.state_updates();
    /// while let Some(state) = updates.next().await {
    ///     tracing::info!(?state, "connection");
    /// }
    /// # }
    /// ```
    pub fn state_updates(&self) -> impl Stream<Item = ConnectionState> + Send + Unpin + 'static {
        self.inner.status.updates()
    }

    /// Health for probes (see [`crate::health`]): cheap, it reads a shared value and the
    /// pending count, and never waits for the connection task.
    ///
    /// ```no_run
    /// # fn f(client: sfstream::Client) {
    /// let ready = client.health().connected;
    /// # }
    /// ```
    pub fn health(&self) -> crate::Health {
        let mut health = self.inner.status.health();
        health.pending = self.pending_count();
        health
    }

    /// Health as a [`watch::Receiver`](tokio::sync::watch::Receiver): it changes with the
    /// connection state, each successful round trip, subscriptions and the health threshold.
    /// `pending` in it is as of the last change. Lives across `close` and `open`.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) {
    /// let mut health = client.health_updates();
    /// while health.changed().await.is_ok() {
    ///     println!("healthy: {}", health.borrow().healthy);
    /// }
    /// # }
    /// ```
    pub fn health_updates(&self) -> tokio::sync::watch::Receiver<crate::Health> {
        self.inner.status.health_updates()
    }

    /// The replay storage the client reads and writes markers in, if one was configured
    /// (aiosfstream's `replay_storage` property).
    pub fn replay_storage(&self) -> Option<Arc<dyn crate::replay::ReplayStorage>> {
        self.inner.replay.storage()
    }
}

fn already_open() -> Error {
    Error::new(ErrorKind::InvalidOperation, "the client is already open")
}

/// A channel name: `/` followed by a path without whitespace, not a `/meta/` channel. A
/// subscription may add a PushTopic filter query, sent as written (Salesforce's "Filtered
/// Subscriptions": `/topic/T?Industry='Energy'&ShippingCity='San Francisco'`, EMP-Connector's
/// `?Type=Technology Partner&Phone=(415) 555-1212`), so its values may hold spaces.
fn validate_channel(channel: &str, filter_allowed: bool) -> Result<()> {
    let (base, filter) = match channel.split_once('?') {
        Some((base, filter)) if filter_allowed => (base, filter),
        _ => (channel, ""),
    };
    let ok = base.len() > 1
        && base.starts_with('/')
        && !base.starts_with("/meta/")
        && !base.chars().any(char::is_whitespace)
        && !filter.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{channel:?} is not a channel name (e.g. /event/Order__e)"),
        ))
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.closed())
            .field("subscriptions", &self.subscriptions())
            .field("pending_count", &self.pending_count())
            .finish_non_exhaustive()
    }
}
