mod health;
mod incoming;
mod pause;
mod stall;
mod subscriptions;

use super::Shared;
use super::backoff::Backoff;
use super::command::Command;
use super::inbox::SubId;
use super::router::Router;
use super::state::ConnectionState;
use crate::bayeux::{Advice, Data, Message, Reconnect, channels};
use crate::error::{Error, ErrorKind, Result, sanitized};
use crate::event::Event;
use crate::transport::{BoxTransport, Request, Response};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Timing knobs of the connection task.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Timeout of control requests (handshake, subscribe, publish, the first connect).
    pub(crate) request_timeout: Duration,
    /// Added to the advised long-poll timeout: a connect unanswered after both is dead.
    pub(crate) max_network_delay: Duration,
    /// Report `TransportTimeout` to the streams when reconnecting takes longer than this.
    pub(crate) connection_timeout: Option<Duration>,
    pub(crate) backoff_step: Duration,
    pub(crate) backoff_max: Duration,
    /// Long-poll timeout assumed until the server advises one (Salesforce: 110 s).
    pub(crate) advice_timeout: Duration,
    /// Resubscribe a subscription that delivered nothing for this long while connected.
    pub(crate) stall_timeout: Option<Duration>,
    /// Health turns unhealthy after failing this long (`None`: the connection timeout).
    pub(crate) unhealthy_after: Option<Duration>,
    /// The client's spans (see `crate::telemetry`).
    pub(crate) spans: crate::telemetry::SessionSpans,
    /// The authenticator can produce a new token; a ready token the server refused stays
    /// refused, so the task stops instead of retrying forever.
    pub(crate) can_refresh: bool,
}

impl Settings {
    /// Every duration capped at [`FAR_FUTURE`]: `Duration::MAX` means "practically never" and
    /// must not overflow `Instant + Duration` inside the task.
    pub(crate) fn saturated(mut self) -> Self {
        for d in [
            &mut self.request_timeout,
            &mut self.max_network_delay,
            &mut self.backoff_step,
            &mut self.backoff_max,
            &mut self.advice_timeout,
        ] {
            *d = (*d).min(FAR_FUTURE);
        }
        self.connection_timeout = self.connection_timeout.map(|d| d.min(FAR_FUTURE));
        self.stall_timeout = self.stall_timeout.map(|d| d.min(FAR_FUTURE));
        self.unhealthy_after = self.unhealthy_after.map(|d| d.min(FAR_FUTURE));
        self
    }
}

/// Start the task; the receiver resolves when the first connect succeeded (or failed).
pub(crate) fn spawn(
    transport: BoxTransport,
    settings: Settings,
    shared: Arc<Shared>,
) -> (
    mpsc::UnboundedSender<Command>,
    oneshot::Receiver<Result<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (open_tx, open_rx) = oneshot::channel();
    let backoff = Backoff::new(settings.backoff_step, settings.backoff_max);
    let settings_backoff = (settings.backoff_step, settings.backoff_max);
    let task = Task {
        transport,
        advice_timeout: settings.advice_timeout,
        settings,
        shared,
        commands: rx,
        client_id: None,
        session_gen: 0,
        next_id: 0,
        advice_interval: Duration::ZERO,
        backoff,
        outage: None,
        subs: HashMap::new(),
        router: Router::default(),
        pending: HashMap::new(),
        deferred: Vec::new(),
        control: FuturesUnordered::new(),
        handshake: None,
        connect: None,
        next: Next::Handshake { at: Instant::now() },
        open_reply: Some(open_tx),
        server_disconnected: false,
        replay_supported: false,
        unsubscribing: HashSet::new(),
        clock: health::Clock::new(),
        opened_at: Instant::now(),
        sub_backoff: Backoff::new(settings_backoff.0, settings_backoff.1),
        retry_subscribes_at: None,
        long_pause: pause::LongPause::default(),
    };
    let spans = task.settings.spans.clone();
    tokio::spawn(spans.instrument(task.run()));
    (tx, open_rx)
}

type Flight = BoxFuture<'static, Result<Response>>;

/// Upper bounds on advised values (Salesforce advises 110 s and 0).
const MAX_ADVICE_TIMEOUT_MS: u64 = 10 * 60 * 1000;
const MAX_ADVICE_INTERVAL_MS: u64 = 60 * 1000;

/// The long-poll timeout and connect interval after `advice`, given the current ones.
pub(crate) fn advised(
    advice: &Advice,
    timeout: Duration,
    interval: Duration,
) -> (Duration, Duration) {
    // Capped: a server's typo must not park the loop for days.
    (
        advice.timeout.map_or(timeout, |t| {
            Duration::from_millis(t.min(MAX_ADVICE_TIMEOUT_MS))
        }),
        advice.interval.map_or(interval, |i| {
            Duration::from_millis(i.min(MAX_ADVICE_INTERVAL_MS))
        }),
    )
}

enum Next {
    Handshake {
        at: Instant,
    },
    Connect {
        at: Instant,
        first: bool,
    },
    /// A request is in flight or the task is finishing.
    Idle,
}

struct Sub {
    channel: String,
    state: SubState,
    /// The caller of `subscribe()` waiting for the first reply.
    waiter: Option<oneshot::Sender<Result<()>>>,
    /// Since when it delivered nothing (confirmed, or its last event): stall detection.
    quiet_since: Instant,
    /// When it last delivered an event (health).
    last_event: Option<std::time::SystemTime>,
    /// Its `subscription` span: its subscribe round trips and what happens to it.
    span: tracing::Span,
    /// Since when its subscribes fail for reasons that pass (retried with backoff).
    failing_since: Option<Instant>,
}

#[derive(PartialEq, Eq)]
enum SubState {
    /// A subscribe must be sent once there is a session.
    Wanted,
    Subscribing,
    Active,
}

enum Pending {
    Subscribe {
        sub: SubId,
        session: u64,
    },
    Unsubscribe {
        channel: String,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Publish {
        channel: String,
        data: Data,
        reply: oneshot::Sender<Result<Message>>,
        session: u64,
        retried: bool,
    },
}

struct Outage {
    since: Instant,
    timeout_reported: bool,
    error_reported: bool,
}

struct Task {
    transport: BoxTransport,
    settings: Settings,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    client_id: Option<String>,
    /// Incremented per successful handshake; replies from older sessions are stale.
    session_gen: u64,
    next_id: u64,
    advice_timeout: Duration,
    advice_interval: Duration,
    backoff: Backoff,
    outage: Option<Outage>,
    subs: HashMap<SubId, Sub>,
    router: Router,
    pending: HashMap<String, Pending>,
    /// Publishes waiting for a session.
    deferred: Vec<(String, Data, oneshot::Sender<Result<Message>>, bool)>,
    control: FuturesUnordered<BoxFuture<'static, (Vec<String>, Result<Response>)>>,
    handshake: Option<(String, Flight)>,
    connect: Option<(String, Flight)>,
    next: Next,
    open_reply: Option<oneshot::Sender<Result<()>>>,
    server_disconnected: bool,
    /// The handshake reply said `ext.replay: true`: a resubscribe can recover lost events.
    replay_supported: bool,
    /// Channels with an unsubscribe in flight.
    unsubscribing: HashSet<String>,
    clock: health::Clock,
    /// When `open()` started: transient failures are retried until `connection_timeout`.
    opened_at: Instant,
    /// Backoff of subscribes that failed for a reason that passes (network, org limits).
    sub_backoff: Backoff,
    /// When to send the subscribes waiting in `SubState::Wanted` again.
    retry_subscribes_at: Option<Instant>,
    long_pause: pause::LongPause,
}

async fn in_flight(f: &mut Option<(String, Flight)>) -> Result<Response> {
    match f {
        Some((_, fut)) => fut.await,
        None => std::future::pending().await,
    }
}

impl Task {
    async fn run(mut self) {
        let _guard = CloseOnDrop(self.shared.clone());
        loop {
            let mut deadline = None;
            let mut wait_for_room = false;
            let now = Instant::now();
            match self.next {
                Next::Handshake { at } if self.handshake.is_none() => {
                    if at <= now {
                        self.start_handshake();
                    } else {
                        deadline = Some(at);
                    }
                }
                Next::Connect { at, first } if self.connect.is_none() => {
                    if at > now {
                        deadline = Some(at);
                    } else if first || self.shared.inbox.has_room() {
                        self.start_connect(first);
                    } else {
                        wait_for_room = true;
                        let pending = self.shared.inbox.pending();
                        self.note_pause(pending);
                        let state = self.paused_state(pending);
                        self.set_state(state);
                    }
                }
                _ => {}
            }
            for t in [
                self.outage_deadline(),
                self.stall_deadline(),
                self.health_deadline(),
                self.retry_subscribes_at,
                self.startup_deadline(),
                self.long_pause_deadline(),
            ]
            .into_iter()
            .flatten()
            {
                deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
            }

            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Close { reply }) => {
                        let result = self.shutdown().await;
                        let _ = reply.send(result);
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        // Every handle is gone: disconnect politely.
                        let _ = self.shutdown().await;
                        return;
                    }
                },
                result = in_flight(&mut self.handshake) => {
                    let id = self.handshake.take().map(|(id, _)| id).unwrap_or_default();
                    if !self.on_handshake(&id, result).await {
                        return;
                    }
                }
                result = in_flight(&mut self.connect) => {
                    let id = self.connect.take().map(|(id, _)| id).unwrap_or_default();
                    if !self.on_connect(&id, result).await {
                        return;
                    }
                }
                Some((ids, result)) = self.control.next(), if !self.control.is_empty() => {
                    self.on_control(ids, result);
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    if self.startup_expired().await {
                        return;
                    }
                    self.check_outage();
                    self.check_stalls();
                    self.check_health();
                    self.retry_subscribes();
                    self.check_long_pause();
                }
                () = self.shared.inbox.room(), if wait_for_room => {}
            }
        }
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.shared.status.set(state) {
            self.publish_health();
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// A request with a watchdog: whatever the transport does, no answer within `timeout` is
    /// a failure (a dead long poll with the TCP connection still ESTABLISHED, restforce #318).
    fn flight(&self, messages: Vec<Message>, timeout: Duration) -> Flight {
        let transport = self.transport.clone();
        let span = crate::telemetry::round_trip_span(&messages);
        let connect = messages
            .first()
            .is_some_and(|m| m.channel == channels::CONNECT);
        let inner = span.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let started = Instant::now();
                let request = transport.send(Request::new(messages, timeout));
                let result = tokio::time::timeout(timeout, request)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorKind::TransportTimeout,
                            format!("no answer within {timeout:?}"),
                        ))
                    });
                let elapsed = started.elapsed();
                if connect {
                    crate::metrics::connect(elapsed, result.is_ok());
                }
                crate::telemetry::round_trip_done(&inner, elapsed, &result);
                result
            },
            span,
        ))
    }

    fn send_control(&mut self, message: Message, pending: Pending) {
        let id = message.id.clone().unwrap_or_default();
        self.pending.insert(id.clone(), pending);
        let flight = self.flight(vec![message], self.settings.request_timeout);
        self.control
            .push(Box::pin(async move { (vec![id], flight.await) }));
    }

    // ---- handshake ----------------------------------------------------------------------

    fn start_handshake(&mut self) {
        let id = self.id();
        let mut m = Message::new(channels::HANDSHAKE);
        m.id = Some(id.clone());
        m.version = Some("1.0".into());
        m.minimum_version = Some("1.0".into());
        m.supported_connection_types = Some(vec![channels::LONG_POLLING.into()]);
        tracing::debug!("handshake");
        self.set_state(ConnectionState::Handshaking);
        let flight = self.flight(vec![m], self.settings.request_timeout);
        self.handshake = Some((id, flight));
        self.next = Next::Idle;
    }

    /// Returns false when the task must end.
    async fn on_handshake(&mut self, id: &str, result: Result<Response>) -> bool {
        let response = match result {
            Ok(r) => r,
            Err(e) => return self.handshake_failed(e).await,
        };
        let reply = reply_to(&response, channels::HANDSHAKE, id);
        let malformed = self.dispatch(response);
        let reply = match reply {
            Some(r) if r.is_successful() => r,
            Some(r) => {
                return self
                    .handshake_failed(Error::from_reply("handshake", &r))
                    .await;
            }
            None => {
                let e = malformed.unwrap_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        "the handshake response has no /meta/handshake reply",
                    )
                });
                return self.handshake_failed(e).await;
            }
        };
        if let Some(types) = &reply.supported_connection_types
            && !types.iter().any(|t| t == channels::LONG_POLLING)
        {
            let e = Error::new(
                ErrorKind::Client,
                format!(
                    "the server offers none of the supported connection types (long-polling); it offers {types:?}"
                ),
            );
            return self.handshake_failed(e).await;
        }
        let Some(client_id) = reply.client_id.clone() else {
            let e = Error::new(ErrorKind::Protocol, "the handshake reply has no clientId");
            return self.handshake_failed(e).await;
        };
        self.settings.spans.handshake(&client_id);
        tracing::info!(parent: &self.settings.spans.current(), "handshake successful");
        self.client_id = Some(client_id);
        self.session_gen += 1;
        self.replay_supported = reply.ext_field("replay") == Some(&serde_json::Value::Bool(true));
        self.server_disconnected = false;
        self.apply_advice(reply.advice.as_ref());
        self.resubscribe();
        for (channel, data, reply, retried) in std::mem::take(&mut self.deferred) {
            self.publish(channel, data, reply, retried);
        }
        self.next = Next::Connect {
            at: Instant::now(),
            first: true,
        };
        true
    }

    async fn handshake_failed(&mut self, error: Error) -> bool {
        if error.kind() == ErrorKind::Authentication && !self.settings.can_refresh {
            // A ready token the server refused stays refused (advice `none` says as much):
            // end the streams with the reason instead of handshaking every 30 s forever.
            let error = Error::new(
                ErrorKind::Authentication,
                format!(
                    "the server refused the access token and it cannot be refreshed; the client stopped ({})",
                    error.message()
                ),
            );
            tracing::warn!(%error);
            match self.open_reply.take() {
                Some(open) => {
                    let _ = open.send(Err(error));
                }
                None => self.shared.inbox.broadcast_error(error),
            }
            self.finish();
            self.reject_queued();
            return false;
        }
        if self.open_reply.is_some() && !self.startup_retry(&error) {
            if let Some(open) = self.open_reply.take() {
                let _ = open.send(Err(error));
            }
            self.finish();
            self.reject_queued();
            return false;
        }
        let delay = self.failure(&error, true);
        tracing::info!(error = %error, ?delay, "handshake failed; retrying");
        self.next = Next::Handshake { at: later(delay) };
        true
    }

    /// Drop the session and handshake again; every subscription is sent again afterwards.
    fn rehandshake(&mut self, delay: Duration) {
        tracing::info!(?delay, "session lost; handshaking again");
        crate::metrics::rehandshake();
        self.lose_session();
        self.connect = None;
        for sub in self.subs.values_mut() {
            sub.state = SubState::Wanted;
        }
        self.next = Next::Handshake { at: later(delay) };
        self.set_state(ConnectionState::Handshaking);
    }

    // ---- connect ------------------------------------------------------------------------

    fn start_connect(&mut self, first: bool) {
        let Some(client_id) = self.client_id.clone() else {
            self.next = Next::Handshake { at: Instant::now() };
            return;
        };
        let id = self.id();
        let mut m = Message::new(channels::CONNECT);
        m.id = Some(id.clone());
        m.client_id = Some(client_id);
        m.connection_type = Some(channels::LONG_POLLING.into());
        let timeout = if first {
            // Ask the server to answer at once instead of holding the first connect.
            m.advice = Some(Advice::with_timeout(0));
            self.settings.request_timeout
        } else {
            self.advice_timeout
                .saturating_add(self.settings.max_network_delay)
        };
        self.note_resume();
        self.pause_ended();
        let flight = self.flight(vec![m], timeout);
        self.connect = Some((id, flight));
        self.next = Next::Idle;
        if !first && self.outage.is_none() {
            self.set_state(ConnectionState::Connected);
        }
    }

    async fn on_connect(&mut self, id: &str, result: Result<Response>) -> bool {
        let response = match result {
            Ok(r) => r,
            Err(e) => return self.connect_failed(e, None, true).await,
        };
        let reply = reply_to(&response, channels::CONNECT, id);
        let malformed = self.dispatch(response);
        match reply {
            Some(r) if r.is_successful() => {
                self.apply_advice(r.advice.as_ref());
                if self.outage.is_some() {
                    tracing::info!(failures = self.backoff.failures(), "reconnected");
                }
                self.backoff.reset();
                self.outage = None;
                self.clock.round_trip();
                // Health says healthy before open() returns.
                let open = self.open_reply.take();
                self.set_state(ConnectionState::Connected);
                self.publish_health();
                if let Some(open) = open {
                    tracing::info!("connected");
                    let _ = open.send(Ok(()));
                }
                // Retry subscribes that failed on the network.
                self.resubscribe();
                if matches!(
                    r.advice.as_ref().and_then(|a| a.reconnect),
                    Some(Reconnect::Handshake)
                ) {
                    self.rehandshake(self.advice_interval);
                } else {
                    self.next = Next::Connect {
                        at: later(self.advice_interval),
                        first: false,
                    };
                }
                true
            }
            Some(r) => {
                let error = Error::from_reply("connect", &r);
                self.connect_failed(error, Some(&r), false).await
            }
            None => {
                let e = malformed.unwrap_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        "the connect response has no /meta/connect reply",
                    )
                });
                self.connect_failed(e, None, false).await
            }
        }
    }

    /// `unread`: the response body never arrived whole, so events it carried are gone.
    async fn connect_failed(
        &mut self,
        error: Error,
        reply: Option<&Message>,
        unread: bool,
    ) -> bool {
        if self.open_reply.is_some() && !self.startup_retry(&error) {
            if let Some(open) = self.open_reply.take() {
                let _ = open.send(Err(error));
            }
            let _ = self.shutdown().await;
            return false;
        }
        let advice = reply.and_then(|r| r.advice.clone());
        if let Some(a) = &advice {
            self.apply_advice(Some(a));
        }
        let server = error.server_error();
        let unknown_client = server.is_some_and(|s| s.is_unknown_client());
        let reconnect = advice.as_ref().and_then(|a| a.reconnect);
        // Salesforce answers `none` after revoking a token, after its own /meta/disconnect, or
        // when the session's user changed: a new handshake recovers from each.
        // A connect that failed after it was sent may have carried events nobody will see; a
        // resubscribe from the last delivered replay id gets them again.
        // (Not when the server answered with an error status: such a body carries no events.)
        let events_at_risk = unread
            && !error.is_connect_failure()
            && error.status().is_none()
            && !self.subs.is_empty();
        let maybe_lost = self.replay_supported && events_at_risk;
        if events_at_risk && !self.replay_supported && error.kind() != ErrorKind::TransportTimeout {
            // Nothing can bring them back: say so rather than lose them silently.
            let lost = Error::new(
                error.kind(),
                format!(
                    "{}; events in that response, if any, are lost (the server offers no replay)",
                    error.message()
                ),
            );
            self.shared.inbox.broadcast_error(lost);
        }
        let stale_cookies = cookies_refused(&error);
        if stale_cookies {
            self.cookies_refused();
        }
        let must_handshake = unknown_client
            || stale_cookies
            || maybe_lost
            || self.server_disconnected
            || error.kind() == ErrorKind::Authentication
            || matches!(reconnect, Some(Reconnect::Handshake | Reconnect::None));
        if maybe_lost && !unknown_client {
            tracing::info!(error = %error, "connect lost; resubscribing from the last delivered events");
            self.abandon_session();
        }
        if must_handshake {
            let delay = if unknown_client && self.backoff.failures() == 0 {
                self.backoff.failure();
                self.advice_interval
            } else {
                self.failure(&error, !unknown_client)
            };
            self.rehandshake(delay);
        } else {
            let delay = self.failure(&error, true);
            tracing::info!(error = %error, ?delay, "connect failed; retrying");
            self.next = Next::Connect {
                at: later(delay.saturating_add(self.advice_interval)),
                // Until `open()` returns, a connect is answered at once.
                first: self.open_reply.is_some(),
            };
        }
        true
    }

    /// The server refused the session's cookies (a `Set-Cookie` that rotated `sfdc-stream` was
    /// lost with a cut response): they never become valid again, so the jar is cleared and the
    /// next handshake gets new ones. The old session's queued events come back through the
    /// resubscribe from the last delivered replay ids.
    fn cookies_refused(&mut self) {
        tracing::info!("the server refused the session's cookies; handshaking again with none");
        self.transport.reset();
        if !self.replay_supported && !self.subs.is_empty() {
            self.shared.inbox.broadcast_error(Error::new(
                ErrorKind::Transport,
                "the server refused the session's cookies; events queued for that session, if any, are lost (the server offers no replay)",
            ));
        }
    }

    fn apply_advice(&mut self, advice: Option<&Advice>) {
        if let Some(a) = advice {
            (self.advice_timeout, self.advice_interval) =
                advised(a, self.advice_timeout, self.advice_interval);
        }
    }

    /// Count a failure: backoff, outage bookkeeping, and telling the streams about errors that
    /// need a human (authentication, server rejections, configuration).
    fn failure(&mut self, error: &Error, report: bool) -> Duration {
        let delay = self.backoff.failure();
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: Instant::now(),
            timeout_reported: false,
            error_reported: false,
        });
        let serious = matches!(
            error.kind(),
            ErrorKind::Authentication | ErrorKind::Server | ErrorKind::Client
        );
        if report && serious && !outage.error_reported {
            outage.error_reported = true;
            self.shared.inbox.broadcast_error(error.clone());
        }
        self.set_state(ConnectionState::Reconnecting {
            failures: self.backoff.failures(),
            error: error.clone(),
        });
        delay
    }

    /// During `open()`: whether `error` is worth another try (it passes by itself, and
    /// `connection_timeout` has not run out). Errors that need a person fail `open()` at once.
    fn startup_retry(&self, error: &Error) -> bool {
        transient(error)
            && self
                .startup_deadline()
                .is_none_or(|deadline| Instant::now() < deadline)
    }

    /// Set once `open()` has failed at least once (a first attempt may take `request_timeout`).
    fn startup_deadline(&self) -> Option<Instant> {
        self.open_reply.as_ref()?;
        self.outage.as_ref()?;
        let timeout = self.settings.connection_timeout?;
        Some(saturating_add(self.opened_at, timeout))
    }

    /// `open()` has been retrying for `connection_timeout`: it fails with the last error.
    /// Returns true when the task ended.
    async fn startup_expired(&mut self) -> bool {
        let Some(deadline) = self.startup_deadline() else {
            return false;
        };
        if Instant::now() < deadline {
            return false;
        }
        let timeout = self.settings.connection_timeout.unwrap_or_default();
        let error = match &self.shared.status.get() {
            ConnectionState::Reconnecting { error, .. } => Error::new(
                error.kind(),
                format!(
                    "no connection within {timeout:?}; last error: {}",
                    error.message()
                ),
            ),
            _ => Error::new(
                ErrorKind::TransportTimeout,
                format!("no connection within {timeout:?}"),
            ),
        };
        if let Some(open) = self.open_reply.take() {
            let _ = open.send(Err(error));
        }
        let _ = self.shutdown().await;
        true
    }

    fn outage_deadline(&self) -> Option<Instant> {
        let timeout = self.settings.connection_timeout?;
        let outage = self.outage.as_ref()?;
        (!outage.timeout_reported).then(|| saturating_add(outage.since, timeout))
    }

    fn check_outage(&mut self) {
        let Some(deadline) = self.outage_deadline() else {
            return;
        };
        if Instant::now() < deadline {
            return;
        }
        let timeout = self.settings.connection_timeout.unwrap_or_default();
        let last = match &self.shared.status.get() {
            ConnectionState::Reconnecting { error, .. } => format!(": last error: {error}"),
            _ => String::new(),
        };
        let error = Error::new(
            ErrorKind::TransportTimeout,
            format!(
                "the connection was not re-established within {timeout:?}{last}; still retrying"
            ),
        );
        tracing::warn!(%error);
        self.shared.inbox.broadcast_error(error);
        if let Some(o) = &mut self.outage {
            o.timeout_reported = true;
        }
    }

    // ---- closing ------------------------------------------------------------------------

    /// Disconnect and stop; `Err` if some replay marker could not be stored.
    async fn shutdown(&mut self) -> Result<()> {
        self.connect = None;
        self.handshake = None;
        if let Some(client_id) = self.client_id.take() {
            let mut m = Message::new(channels::DISCONNECT);
            m.id = Some(self.id());
            m.client_id = Some(client_id);
            let timeout = self.settings.request_timeout.min(Duration::from_secs(10));
            match self.flight(vec![m], timeout).await {
                Ok(_) => tracing::info!("disconnected"),
                Err(e) => tracing::info!(error = %e, "disconnect failed; closing anyway"),
            }
        }
        self.finish();
        // Wait until the marker of every processed event is stored (bounded: a storage that
        // never answers must not hang close()).
        let flush = self.shared.replay.flush();
        let timeout = self.settings.request_timeout;
        let stored = tokio::time::timeout(timeout, flush)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Replay,
                    format!("replay markers were not stored within {timeout:?}"),
                ))
            });
        if let Err(e) = &stored {
            tracing::warn!(error = %e, "closed without every replay marker stored");
        }
        self.reject_queued();
        stored
    }

    /// End everything: pending requests fail, streams end once drained.
    fn finish(&mut self) {
        self.transport.reset();
        self.control = FuturesUnordered::new();
        for (_, p) in std::mem::take(&mut self.pending) {
            self.fail_pending(
                p,
                Error::new(ErrorKind::ConnectionClosed, "the client was closed"),
            );
        }
        for (_, _, reply, _) in self.deferred.drain(..) {
            let _ = reply.send(Err(Error::closed()));
        }
        for (_, s) in self.subs.drain() {
            if let Some(w) = s.waiter {
                let _ = w.send(Err(Error::closed()));
            }
        }
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.shared.replay.forget_all();
        self.shared.inbox.close();
        self.set_state(ConnectionState::Closed);
        self.commands.close();
    }

    /// Answer whatever was still queued (after a close has fully finished).
    fn reject_queued(&mut self) {
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            reject(cmd);
        }
    }
}

/// Ends the streams even if the task stops abnormally (a panic, a runtime shutting down).
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if !self.0.inbox.is_closed() {
            self.0.inbox.close();
            self.0.status.set(ConnectionState::Closed);
        }
    }
}

fn reject(cmd: Command) {
    match cmd {
        Command::Subscribe { reply, .. } | Command::Unsubscribe { reply, .. } => {
            let _ = reply.send(Err(Error::closed()));
        }
        Command::Publish { reply, .. } => {
            let _ = reply.send(Err(Error::closed()));
        }
        Command::Close { reply } => {
            let _ = reply.send(Ok(()));
        }
        Command::Drop { .. } | Command::Health => {}
    }
}

/// The reply to request `id` on `channel`; a reply with neither channel nor id answers every
/// request of its response (the server refused the request as a whole).
fn reply_to(response: &Response, channel: &str, id: &str) -> Option<Message> {
    if let Some(r) = response.reply(channel, id) {
        return Some(r.clone());
    }
    let mut r = response
        .messages
        .iter()
        .find(|m| m.is_unaddressed_reply())?
        .clone();
    r.channel = channel.into();
    r.id = Some(id.to_owned());
    Some(r)
}

/// A failure that passes by itself: the network, a timeout, a cut or garbled response, an HTTP
/// 5xx. Authentication, server rejections, HTTP 4xx and configuration errors need a person.
pub(super) fn transient(error: &Error) -> bool {
    match error.kind() {
        ErrorKind::Transport => {
            error.status().is_none_or(|s| s >= 500) && !error.is_certificate_refused()
        }
        ErrorKind::TransportTimeout | ErrorKind::Protocol => true,
        _ => false,
    }
}

/// `400::Client … has established a session, but no BAYEUX_BROWSER cookie present`, or any HTTP
/// 400 to a request of an established session (the status Salesforce sends with that error is
/// unverified; the emulator's is 400, and nothing else after a handshake answers HTTP 400).
pub(super) fn cookies_refused(error: &Error) -> bool {
    error.status() == Some(400)
        || error
            .server_error()
            .is_some_and(|s| s.code == Some(400) && s.message.contains("BAYEUX_BROWSER"))
}

/// Far enough to mean "never" and small enough that adding it to any instant cannot overflow.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `at + d`, saturating at [`FAR_FUTURE`] from `at` (settings of `Duration::MAX` must not panic).
fn saturating_add(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| at + FAR_FUTURE.min(d))
}

fn later(d: Duration) -> Instant {
    saturating_add(Instant::now(), d)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
