//! Layer 2: the transport. One POST of a JSON array of messages, answered by an array.
//!
//! [`Transport`] is the seam every upper layer builds on: [`HttpTransport`] is the real one
//! (hyper 1 + rustls), the [`middleware`](crate::middleware) layers (auth, replay, yours) wrap a
//! transport and are transports themselves, tower style:
//!
//! ```
//! use sfstream::transport::{BoxTransport, Layer, Request, Response, Transport};
//! use futures::future::BoxFuture;
//!
//! /// Counts requests; a layer you could add with `ClientBuilder::layer`.
//! struct Count<T> { inner: T, n: std::sync::atomic::AtomicU64 }
//! impl<T: Transport> Transport for Count<T> {
//!     fn send(&self, request: Request) -> BoxFuture<'_, sfstream::Result<Response>> {
//!         self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         self.inner.send(request)
//!     }
//! }
//! struct CountLayer;
//! impl Layer<BoxTransport> for CountLayer {
//!     type Transport = Count<BoxTransport>;
//!     fn layer(&self, inner: BoxTransport) -> Self::Transport { Count { inner, n: Default::default() } }
//! }
//! ```

mod connector;
mod cookies;
mod http_transport;
mod proxy;
mod settings;
pub(crate) mod tls;

pub use http_transport::{DEFAULT_MAX_RESPONSE_BYTES, HttpTransport, HttpTransportBuilder};
pub(crate) use http_transport::{HttpClient, check_scheme};
pub use proxy::Proxy;
pub use settings::HttpSettings;
pub(crate) use settings::TlsOptions;

use crate::bayeux::{Batch, MalformedMessage, Message};
use crate::error::Result;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// One request: the messages to POST, where, and how long to wait for the answer.
///
/// `Debug` shows the URL without user info and sensitive headers (`Authorization`) as such.
#[derive(Clone)]
#[non_exhaustive]
pub struct Request {
    /// The messages, sent as one JSON array.
    pub messages: Vec<Message>,
    /// The CometD endpoint (`<instance>/cometd/<version>`). The auth layer sets it from the
    /// token's instance URL; a transport may have a default.
    pub url: Option<Url>,
    /// Extra headers (the auth layer adds `Authorization` here, marked sensitive).
    pub headers: http::HeaderMap,
    /// How long to wait for the whole response. A long-poll connect waits the server's advice
    /// timeout plus a network delay; control messages are short.
    pub timeout: Duration,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("messages", &self.messages)
            .field("url", &self.url.as_ref().map(crate::url_policy::shown))
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Request {
    /// A request for `messages` with the given timeout.
    pub fn new(messages: Vec<Message>, timeout: Duration) -> Self {
        Request {
            messages,
            url: None,
            headers: http::HeaderMap::new(),
            timeout,
        }
    }

    /// Whether this request carries a message on `channel`.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.messages.iter().any(|m| m.channel == channel)
    }
}

/// The answer: the messages of the response body.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Response {
    /// Messages in body order (events, replies, server-sent meta messages).
    pub messages: Vec<Message>,
    /// Elements that could not be read as messages; the connection task reports each one.
    pub malformed: Vec<MalformedMessage>,
}

impl Response {
    /// A response holding `messages`.
    pub fn new(messages: Vec<Message>) -> Self {
        Response {
            messages,
            malformed: Vec::new(),
        }
    }

    /// The reply to the request message with `id` on `channel`.
    pub fn reply(&self, channel: &str, id: &str) -> Option<&Message> {
        self.messages
            .iter()
            .find(|m| m.channel == channel && m.id.as_deref() == Some(id))
    }
}

impl From<Batch> for Response {
    fn from(b: Batch) -> Self {
        Response {
            messages: b.messages,
            malformed: b.malformed,
        }
    }
}

/// Sends a batch of Bayeux messages and returns the server's answer.
///
/// Implementations must be cheap to call concurrently: the long-poll connect is in flight while
/// subscribe, publish and other control requests go out. Errors are [`crate::Error`]s; an HTTP
/// status other than 200 is [`ErrorKind::Transport`](crate::ErrorKind::Transport) with
/// [`Error::status`](crate::Error::status) set, so layers can react to a 401.
pub trait Transport: Send + Sync + 'static {
    /// Send one request.
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>>;

    /// The client was closed: forget session state such as cookies. Layers must forward it.
    fn reset(&self) {}
}

/// A shared, type-erased transport: what layers added with
/// [`ClientBuilder::layer`](crate::ClientBuilder::layer) receive and wrap.
pub type BoxTransport = Arc<dyn Transport>;

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        (**self).send(request)
    }
    fn reset(&self) {
        (**self).reset()
    }
}

/// Wraps a transport in another, like `tower::Layer`.
pub trait Layer<T> {
    /// The wrapping transport.
    type Transport: Transport;
    /// Wrap `inner`.
    fn layer(&self, inner: T) -> Self::Transport;
}
