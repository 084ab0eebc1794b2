//! Tracing spans: one `session` span per client (instance host, API version, Bayeux client
//! id), one `round_trip` span per request, one `subscription` span per subscription. The
//! README's "Running in production" lists what each level shows.

use crate::bayeux::Message;
use crate::error::{Result, sanitized};
use crate::transport::{BoxTransport, Request, Response, Transport};
use futures::future::BoxFuture;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Span;
use tracing::field::Empty;

/// The spans of one client: `session` (a root: the code that happens to build the client is
/// not its parent) and, per handshake, `bayeux{client_id}` inside it. A new span per handshake
/// rather than recording the new id on the old one: formatting layers append recorded fields,
/// so a long-lived span would grow with every rehandshake.
#[derive(Debug, Clone)]
pub(crate) struct SessionSpans {
    client: Span,
    current: Arc<Mutex<Span>>,
}

impl SessionSpans {
    pub(crate) fn new(api_version: &str) -> Self {
        let client = tracing::info_span!(
            parent: None,
            "session",
            instance = Empty,
            api_version = %api_version
        );
        SessionSpans {
            current: Arc::new(Mutex::new(client.clone())),
            client,
        }
    }

    /// Spans that record nothing (the builder's placeholder until `build`).
    pub(crate) fn none() -> Self {
        SessionSpans {
            client: Span::none(),
            current: Arc::new(Mutex::new(Span::none())),
        }
    }

    pub(crate) fn client(&self) -> &Span {
        &self.client
    }

    /// A handshake gave the session this Bayeux client id.
    pub(crate) fn handshake(&self, client_id: &str) {
        let span =
            tracing::info_span!(parent: &self.client, "bayeux", client_id = %sanitized(client_id));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = span;
    }

    /// The current Bayeux session's span.
    pub(crate) fn current(&self) -> Span {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Run `task` inside the current Bayeux session's span (looked up at every poll).
    pub(crate) fn instrument(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        InCurrentSpan {
            task: Box::pin(task),
            current: self.current.clone(),
        }
    }
}

struct InCurrentSpan {
    task: Pin<Box<dyn Future<Output = ()> + Send>>,
    current: Arc<Mutex<Span>>,
}

impl Future for InCurrentSpan {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let span = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _entered = span.enter();
        self.task.as_mut().poll(cx)
    }
}

/// A subscription's span, inside the session's.
pub(crate) fn subscription_span(
    session: &SessionSpans,
    channel: &str,
    replay_start: Option<i64>,
) -> Span {
    tracing::info_span!(
        parent: session.client(),
        "subscription",
        channel = %sanitized(channel),
        replay_start = replay_start
    )
}

/// A request's span (debug): its channels and message ids; duration and outcome are recorded
/// by [`round_trip_done`].
pub(crate) fn round_trip_span(messages: &[Message]) -> Span {
    tracing::debug_span!(
        "round_trip",
        channels = %Channels(messages),
        ids = %Ids(messages),
        duration_ms = Empty,
        outcome = Empty
    )
}

/// Call inside the round trip's span.
pub(crate) fn round_trip_done(span: &Span, duration: Duration, result: &Result<Response>) {
    if span.is_disabled() {
        return;
    }
    let millis = duration.as_secs_f64() * 1000.0;
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    };
    span.record("duration_ms", millis);
    span.record("outcome", tracing::field::display(&outcome));
    tracing::debug!(duration_ms = millis, outcome = %outcome, "round trip");
    if let Ok(response) = result
        && tracing::enabled!(tracing::Level::TRACE)
    {
        let events = response
            .messages
            .iter()
            .filter(|m| m.data.is_some())
            .count();
        let bytes: usize = response
            .messages
            .iter()
            .filter_map(|m| m.data.as_ref())
            .map(|d| d.get().len())
            .sum();
        tracing::trace!(
            ids = %Ids(&response.messages),
            messages = response.messages.len(),
            events,
            event_bytes = bytes,
            malformed = response.malformed.len(),
            "response"
        );
    }
}

/// `/meta/connect,/event/A__e`: each channel once, in order.
struct Channels<'a>(&'a [Message]);

impl fmt::Display for Channels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if self.0[..i].iter().any(|p| p.channel == m.channel) {
                continue;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", sanitized(&m.channel))?;
        }
        Ok(())
    }
}

/// The message ids, comma-separated.
struct Ids<'a>(&'a [Message]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for id in self.0.iter().filter_map(|m| m.id.as_deref()) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}", sanitized(id))?;
        }
        Ok(())
    }
}

/// The innermost transport layer: records the instance host (from the URL the auth layer
/// set, never a header) on the session span when it changes.
pub(crate) struct InstanceRecorder {
    inner: BoxTransport,
    span: Span,
    host: Mutex<Option<String>>,
}

impl InstanceRecorder {
    pub(crate) fn new(inner: BoxTransport, span: Span) -> Self {
        InstanceRecorder {
            inner,
            span,
            host: Mutex::new(None),
        }
    }
}

impl Transport for InstanceRecorder {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        if !self.span.is_disabled()
            && let Some(host) = request.url.as_ref().and_then(|u| u.host_str())
        {
            let mut seen = self.host.lock().unwrap_or_else(|p| p.into_inner());
            if seen.as_deref() != Some(host) {
                self.span
                    .record("instance", tracing::field::display(sanitized(host)));
                *seen = Some(host.to_owned());
            }
        }
        self.inner.send(request)
    }

    fn reset(&self) {
        self.inner.reset()
    }
}
