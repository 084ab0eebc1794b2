//! The crate's one error type.
//!
//! [`Error`] is cheap to clone (it is shared with every stream that sees it), `Send + Sync`, and
//! never holds a secret: no token, password, client secret or private key reaches an error
//! message. Match on [`Error::kind`]:
//!
//! ```
//! use sfstream::{Error, ErrorKind};
//! fn retryable(e: &Error) -> bool {
//!     matches!(e.kind(), ErrorKind::Transport | ErrorKind::TransportTimeout)
//! }
//! ```

use crate::Event;
use crate::bayeux::{Advice, ServerError};
use std::fmt;
use std::sync::Arc;

/// What went wrong, mirroring the exception hierarchy of aiosfstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Login failed, the token was rejected, or re-authentication failed
    /// (aiosfstream `AuthenticationError`).
    Authentication,
    /// Invalid configuration or a server offering nothing this client supports
    /// (aiosfstream `ClientError`).
    Client,
    /// The operation cannot run in the client's current state, e.g. the client is closed
    /// (aiosfstream `ClientInvalidOperation`/`TransportInvalidOperation`).
    InvalidOperation,
    /// Network failure or an HTTP status other than 200 (aiosfstream `TransportError`);
    /// [`Error::status`] holds the status.
    Transport,
    /// A request got no answer in time, or the connection could not be re-established within
    /// `connection_timeout` (aiosfstream `TransportTimeoutError`).
    TransportTimeout,
    /// The client was closed while the operation was pending, or the server closed the
    /// connection (aiosfstream `TransportConnectionClosed`).
    ConnectionClosed,
    /// The server's reply could not be understood: not JSON (an HTML error page), not an array,
    /// a field of the wrong type, a missing reply, or a body over the size cap.
    Protocol,
    /// The server rejected a request with a Bayeux error; see [`Error::server_error`] and
    /// [`Error::advice`] (aiosfstream `ServerError`).
    Server,
    /// Replay failed: the replay id was rejected and no fallback is configured, a replay
    /// marker could not be read or stored (aiosfstream `ReplayError`).
    Replay,
    /// Not an error but a notice that cannot be skipped: the stored replay id had left the
    /// retention window and the subscription restarted from the configured fallback, so events
    /// between the two may have been missed. The stream goes on. See [`Error::replay_gap_info`].
    ReplayGap,
    /// An event's payload does not match the type it was read into (a typed subscription,
    /// [`Event::decode`](crate::Event::decode), [`Event::deserialize`](crate::Event::deserialize)):
    /// the event is fine, the type is not. See [`Error::decode_failure`] for where, and
    /// [`Error::event`] for the event itself. A typed stream goes on after it.
    Decode,
    /// Not an error but a notice: the subscription delivered nothing for the client's
    /// [`stall_timeout`](crate::ClientBuilder::stall_timeout) while the connection was healthy,
    /// so the client subscribed its channel again from the last delivered replay id. Events the
    /// server still retains arrive after it, once each. The stream goes on.
    Stalled,
    /// Salesforce rejected events given to a [`Publisher`](crate::publish::Publisher) (a save
    /// result with `success: false`, such as `REQUIRED_FIELD_MISSING`); the events are kept for
    /// [`take_unpublished`](crate::publish::Publisher::take_unpublished).
    Rejected,
    /// This client no longer holds its [lease](crate::replay::Lease): a renewal failed or came
    /// too late, or the store rejected a marker write because another client took the lease
    /// over (fencing). The client stopped streaming; its streams yield this error and end.
    /// Another client streams now; [`Client::open`](crate::Client::open) again to stand by.
    LeaseLost,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Authentication => "authentication failed",
            ErrorKind::Client => "client error",
            ErrorKind::InvalidOperation => "invalid operation",
            ErrorKind::Transport => "transport error",
            ErrorKind::TransportTimeout => "timed out",
            ErrorKind::ConnectionClosed => "connection closed",
            ErrorKind::Protocol => "unexpected server reply",
            ErrorKind::Server => "server error",
            ErrorKind::Replay => "replay error",
            ErrorKind::ReplayGap => "replay gap",
            ErrorKind::Decode => "event does not match the expected type",
            ErrorKind::Stalled => "subscription stalled",
            ErrorKind::Rejected => "events rejected",
            ErrorKind::LeaseLost => "lease lost",
        }
    }
}

/// Which stored replay id expired and where the subscription restarted instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayGap {
    /// The name of the subscription that fell back, as subscribed (a PushTopic filter's
    /// includes its query).
    pub channel: String,
    /// The replay id the server rejected (`None` when the server did not quote it).
    pub rejected_id: Option<i64>,
    /// The replay id used instead (-2 all retained events, -1 new events only).
    pub fallback_id: i64,
}

/// Where an event did not match the type it was read into ([`ErrorKind::Decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeFailure {
    /// The channel the event arrived on.
    pub channel: String,
    /// The event's replay id, if it has one.
    pub replay_id: Option<i64>,
    /// The path of the field that did not fit, from the message's `data`, e.g.
    /// `data.payload.Amount__c` or `data.payload.ChangeEventHeader.recordIds[0]`.
    pub path: String,
}

/// The error pair of a token request the OAuth server refused, e.g. HTTP 400
/// `{"error":"invalid_grant","error_description":"authentication failure"}`; see
/// [`Error::oauth_error`].
///
/// ```
/// # fn f(e: sfstream::Error) {
/// if let Some(oauth) = e.oauth_error() {
///     if oauth.error == "invalid_grant" {
///         eprintln!("wrong credentials: {}", oauth.error_description.as_deref().unwrap_or(""));
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OAuthError {
    /// The OAuth error code: `invalid_grant`, `invalid_client_id`, `invalid_client`,
    /// `unsupported_grant_type`, `invalid_request`, ...
    pub error: String,
    /// Salesforce's explanation, e.g. `authentication failure` or
    /// `user hasn't approved this consumer`.
    pub error_description: Option<String>,
}

impl OAuthError {
    /// Both strings come from the server: control characters are replaced (see [`sanitize`]).
    pub(crate) fn new(error: impl Into<String>, error_description: Option<String>) -> Self {
        OAuthError {
            error: sanitize(error.into()),
            error_description: error_description.map(sanitize),
        }
    }
}

/// `text` with every control character (C0, DEL, C1: terminal escape sequences, carriage
/// returns, newlines) replaced by a space, as `bayeux::batch::excerpt` does for response
/// bodies. Server-supplied text (OAuth `error_description`, Bayeux `error` strings) reaches
/// error messages that end up on an operator's terminal and in line-based logs; escapes there
/// could rewrite the screen or forge log lines. Allocates only when something is replaced.
pub(crate) fn sanitize(text: impl Into<String>) -> String {
    let text = text.into();
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// [`sanitize`] for a log field: displays `text` with the same replacements, without
/// allocating. Channel names, client ids and message ids come from the server too.
pub(crate) fn sanitized(text: &str) -> Sanitized<'_> {
    Sanitized(text)
}

/// See [`sanitized`].
pub(crate) struct Sanitized<'a>(&'a str);

impl fmt::Display for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in self.0.char_indices().filter(|(_, c)| c.is_control()) {
            f.write_str(&self.0[clean..i])?;
            f.write_str(" ")?;
            clean = i + c.len_utf8();
        }
        f.write_str(&self.0[clean..])
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        match &self.error_description {
            Some(d) if !d.is_empty() => write!(f, ": {d}"),
            _ => Ok(()),
        }
    }
}

/// The error type of every fallible operation in this crate.
///
/// `Display` is the kind and the message. An underlying cause is named once: either in the
/// message (a transport error names the network cause, so `{e}` and logs show it) or as
/// [`source()`](std::error::Error::source) (an I/O error of the replay file), never both, so a
/// report that walks the chain (`{:#}` with `anyhow`) names each cause once.
#[derive(Clone, thiserror::Error)]
#[error(transparent)]
pub struct Error(Arc<Inner>);

#[derive(thiserror::Error)]
#[error("{}: {}{}", .kind.describe(), .message, status_suffix(*.status, .message))]
struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    server: Option<ServerError>,
    advice: Option<Advice>,
    failure_reason: Option<String>,
    replay_gap: Option<ReplayGap>,
    oauth: Option<OAuthError>,
    decode: Option<DecodeFailure>,
    event: Option<Event>,
    /// The request never left: no connection could be made.
    connect_failure: bool,
    /// The server's certificate was refused.
    certificate_refused: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// ` (HTTP 502)` unless the message already names the status.
fn status_suffix(status: Option<u16>, message: &str) -> String {
    match status {
        Some(status) if !message.contains(&status.to_string()) => format!(" (HTTP {status})"),
        _ => String::new(),
    }
}

/// Result alias with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Messages often quote server text, so every one is [`sanitize`]d.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Arc::new(Inner {
            kind,
            message: sanitize(message),
            status: None,
            server: None,
            advice: None,
            failure_reason: None,
            replay_gap: None,
            oauth: None,
            decode: None,
            event: None,
            connect_failure: false,
            certificate_refused: false,
            source: None,
        }))
    }

    fn map_inner(self, f: impl FnOnce(&mut Inner)) -> Self {
        // Builders run before the error is shared, so this never copies.
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                f(&mut inner);
                Error(Arc::new(inner))
            }
            Err(shared) => Error(shared),
        }
    }

    pub(crate) fn with_source(
        self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.map_inner(|i| i.source = Some(Box::new(source)))
    }

    pub(crate) fn with_status(self, status: u16) -> Self {
        self.map_inner(|i| i.status = Some(status))
    }

    pub(crate) fn with_oauth(self, oauth: OAuthError) -> Self {
        self.map_inner(|i| i.oauth = Some(oauth))
    }

    /// Mark a transport error that happened before the request was sent.
    pub(crate) fn connect_failure(self) -> Self {
        self.map_inner(|i| i.connect_failure = true)
    }

    pub(crate) fn is_connect_failure(&self) -> bool {
        self.0.connect_failure
    }

    /// Mark a transport error caused by a refused server certificate (untrusted issuer, wrong
    /// name, expired): trying again cannot help until someone changes the trust settings or
    /// the server, so it is not transient.
    pub(crate) fn certificate_refused(self) -> Self {
        self.map_inner(|i| i.certificate_refused = true)
    }

    pub(crate) fn is_certificate_refused(&self) -> bool {
        self.0.certificate_refused
    }

    pub(crate) fn with_kind(self, kind: ErrorKind) -> Self {
        self.map_inner(|i| i.kind = kind)
    }

    /// An error from a failed Bayeux reply. A 401 becomes [`ErrorKind::Authentication`].
    pub(crate) fn from_reply(what: &str, reply: &crate::bayeux::Message) -> Self {
        let text = reply
            .error
            .as_deref()
            .unwrap_or("request failed without an error string");
        let server = ServerError::parse(text);
        let failure_reason = reply.failure_reason().map(str::to_owned);
        let auth = server.is_authentication_failure()
            || failure_reason
                .as_deref()
                .is_some_and(|r| ServerError::parse(r).is_authentication_failure());
        let kind = if auth {
            ErrorKind::Authentication
        } else if server.is_invalid_replay_id() {
            ErrorKind::Replay
        } else {
            ErrorKind::Server
        };
        let mut message = format!("{what} rejected: {text}");
        if let Some(reason) = &failure_reason {
            message.push_str(&format!(" ({reason})"));
        }
        let advice = reply.advice.clone();
        Error::new(kind, message).map_inner(|i| {
            i.server = Some(server);
            i.advice = advice;
            i.failure_reason = failure_reason;
        })
    }

    pub(crate) fn replay_gap(gap: ReplayGap) -> Self {
        let message = match gap.rejected_id {
            Some(id) => format!(
                "replay id {id} on {} is outside the retention window; resumed from {} (events in between may be missed)",
                gap.channel, gap.fallback_id
            ),
            None => format!(
                "replay id on {} was rejected; resumed from {} (events in between may be missed)",
                gap.channel, gap.fallback_id
            ),
        };
        Error::new(ErrorKind::ReplayGap, message).map_inner(|i| i.replay_gap = Some(gap))
    }

    /// `event` does not fit the type asked for: at `path`, because of `detail` (serde's words,
    /// which never quote a secret: events carry none).
    pub(crate) fn decode(
        event: &Event,
        path: impl Into<String>,
        detail: impl fmt::Display,
    ) -> Self {
        let failure = DecodeFailure {
            channel: event.channel().to_owned(),
            replay_id: event.replay_id(),
            path: path.into(),
        };
        let replay = match failure.replay_id {
            Some(id) => format!(" (replay id {id})"),
            None => String::new(),
        };
        let message = format!(
            "the event on {}{replay} does not fit at {}: {detail}",
            failure.channel, failure.path
        );
        let event = event.clone();
        Error::new(ErrorKind::Decode, message).map_inner(|i| {
            i.decode = Some(failure);
            i.event = Some(event);
        })
    }

    pub(crate) fn closed() -> Self {
        Error::new(ErrorKind::InvalidOperation, "the client is closed")
    }

    /// Whether the client gets past this by itself, so a pipeline should log it and go on
    /// rather than stop: retrying the operation, or polling the stream again, can succeed with
    /// nothing changed on your side.
    ///
    /// True for network failures ([`Transport`](ErrorKind::Transport) without an HTTP status,
    /// or with 408, 429 or a 5xx), timeouts and outage reports
    /// ([`TransportTimeout`](ErrorKind::TransportTimeout), "...; still retrying"), replies or
    /// messages that could not be read ([`Protocol`](ErrorKind::Protocol)), and the notices of a
    /// stream that has already recovered ([`ReplayGap`](ErrorKind::ReplayGap),
    /// [`Stalled`](ErrorKind::Stalled)). False for what needs a person: credentials, a server
    /// rejection, configuration, a refused server certificate, a closed client, a replay storage
    /// that fails, an event that does not fit your type. [`NoticeExt::on_notice`](crate::NoticeExt::on_notice) takes the
    /// transient errors out of a stream on this test.
    ///
    /// ```
    /// # fn f(e: sfstream::Error) -> sfstream::Result<()> {
    /// if e.is_transient() {
    ///     eprintln!("warning: {e}");
    /// } else {
    ///     return Err(e);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_transient(&self) -> bool {
        match self.0.kind {
            ErrorKind::Transport => {
                self.0
                    .status
                    .is_none_or(|s| s == 408 || s == 429 || s >= 500)
                    && !self.is_certificate_refused()
            }
            ErrorKind::TransportTimeout
            | ErrorKind::Protocol
            | ErrorKind::ReplayGap
            | ErrorKind::Stalled => true,
            _ => false,
        }
    }

    /// Whether `self` and `other` are the same report (clones of one error): a connection-wide
    /// notice reaches every subscription as clones of one error.
    pub(crate) fn same_report(&self, other: &Error) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The HTTP status, for errors caused by an HTTP reply other than 200.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The parsed Bayeux error string, for errors caused by a failed reply.
    pub fn server_error(&self) -> Option<&ServerError> {
        self.0.server.as_ref()
    }

    /// The advice that came with a failed reply.
    pub fn advice(&self) -> Option<&Advice> {
        self.0.advice.as_ref()
    }

    /// Salesforce's `ext.sfdc.failureReason` of a denied handshake.
    pub fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }

    /// For [`ErrorKind::ReplayGap`]: which replay id expired and the fallback used.
    pub fn replay_gap_info(&self) -> Option<&ReplayGap> {
        self.0.replay_gap.as_ref()
    }

    /// For a refused token request: the OAuth `error` and `error_description` of the reply
    /// (the kind is then [`ErrorKind::Authentication`] and [`status`](Error::status) the HTTP
    /// status).
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        self.0.oauth.as_ref()
    }

    /// For [`ErrorKind::Decode`]: the channel, replay id and field path of the event that did
    /// not fit.
    pub fn decode_failure(&self) -> Option<&DecodeFailure> {
        self.0.decode.as_ref()
    }

    /// For [`ErrorKind::Decode`]: the event that did not fit, to set aside (a dead-letter
    /// queue) and, under [`CommitPolicy::Manual`](crate::replay::CommitPolicy::Manual),
    /// to [`ack`](Event::ack) so the stored replay marker can move past it.
    pub fn event(&self) -> Option<&Event> {
        self.0.event.as_ref()
    }

    /// The error message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Written by hand: every field that could hold a secret is left out or already redacted.
impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = self.status {
            d.field("status", &s);
        }
        if let Some(s) = &self.server {
            d.field("server", s);
        }
        if let Some(a) = &self.advice {
            d.field("advice", a);
        }
        if let Some(r) = &self.failure_reason {
            d.field("failure_reason", r);
        }
        if let Some(g) = &self.replay_gap {
            d.field("replay_gap", g);
        }
        if let Some(o) = &self.oauth {
            d.field("oauth", o);
        }
        if let Some(x) = &self.decode {
            d.field("decode", x);
        }
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn is_send_sync_and_clone() {
        assert_send_sync::<Error>();
        let e = Error::new(ErrorKind::Transport, "boom").with_status(502);
        let c = e.clone();
        assert_eq!(c.status(), Some(502));
        assert_eq!(c.to_string(), "transport error: boom (HTTP 502)");
    }

    #[test]
    fn reply_401_is_authentication() {
        let mut m = crate::bayeux::Message::new("/meta/connect");
        m.error = Some("401::Authentication invalid".into());
        assert_eq!(
            Error::from_reply("connect", &m).kind(),
            ErrorKind::Authentication
        );
        m.error = Some("403::Handshake denied".into());
        m.set_ext_field(
            "sfdc",
            serde_json::json!({"failureReason": "401::Authentication invalid"}),
        );
        let e = Error::from_reply("handshake", &m);
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert_eq!(e.failure_reason(), Some("401::Authentication invalid"));
        m.error = Some("403::Unknown client".into());
        m.ext = None;
        assert_eq!(Error::from_reply("connect", &m).kind(), ErrorKind::Server);
    }

    #[test]
    fn bayeux_error_strings_reach_messages_without_control_characters() {
        let mut m = crate::bayeux::Message::new("/meta/subscribe");
        m.error = Some("403:/topic/x:denied\u{1b}[2J\u{1b}]0;owned\u{7}\r\nINFO forged".into());
        m.set_ext_field(
            "sfdc",
            serde_json::json!({"failureReason": "\u{1b}[31mred\u{9b}1m"}),
        );
        let e = Error::from_reply("subscribe", &m);
        for text in [e.to_string(), e.message().to_owned()] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert!(
                text.contains("INFO forged") && text.contains("red"),
                "{text:?}"
            );
        }
        assert_eq!(sanitize("plain text"), "plain text");
    }

    #[test]
    fn sanitized_log_fields_replace_what_sanitize_replaces() {
        for text in [
            "",
            "plain",
            "a\nb\r\u{1b}[2J\u{9b}\u{7f}é\t",
            "\n",
            "ü\u{85}",
        ] {
            assert_eq!(sanitized(text).to_string(), sanitize(text), "{text:?}");
        }
    }
}
