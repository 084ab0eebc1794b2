//! One-shot faults: what a proxy, a load balancer or a bad day at Salesforce does to a request.

use std::time::Duration;

/// Which request a [`Fault`] applies to.
///
/// A CometD request matches when any message in its batch is of that kind (`Publish` means a
/// message on a non-meta channel). `Token` is the OAuth token endpoint, `Rest` the REST API.
/// `Any` matches every request, including token and REST requests and bodies that are not
/// valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// A request carrying `/meta/handshake`.
    Handshake,
    /// A request carrying `/meta/connect`.
    Connect,
    /// A request carrying `/meta/subscribe`.
    Subscribe,
    /// A request carrying `/meta/unsubscribe`.
    Unsubscribe,
    /// A request publishing to a non-meta channel.
    Publish,
    /// A request carrying `/meta/disconnect`.
    Disconnect,
    /// A request to the OAuth token endpoint.
    Token,
    /// A request to the REST API (`/services/data/...`: publishing, channel queries).
    Rest,
    /// Any request.
    Any,
}

/// What happens instead of (or, for [`FaultBuilder::delay`], before) normal processing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Status(u16, String),
    Html,
    Truncated,
    Object,
    WrongTypes,
    Body(serde_json::Value),
    Hang,
    Close,
    Delay(Duration),
    LoseResponse,
}

/// A one-shot fault for the next request matching its [`Target`]; see
/// [`Emulator::inject`](super::Emulator::inject).
///
/// Except [`delay`](FaultBuilder::delay), a fault *replaces* processing, like a proxy error page:
/// the request never reaches the emulated server, so a faulted connect takes no event from the
/// session's queue, a faulted handshake creates no session and a faulted token request mints no
/// token. Faults queue up and each fires once, first injected first.
///
/// ```no_run
/// use sfstream::emulator::{Emulator, Fault, Target};
/// # async fn demo(emu: Emulator) {
/// emu.inject(Fault::on(Target::Connect).status(503, "Service Unavailable"));
/// emu.inject(Fault::on(Target::Handshake).html());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub(crate) target: Target,
    pub(crate) action: Action,
}

/// The first half of a [`Fault`]: the target is chosen, the action comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a fault needs an action, e.g. `.status(503, \"...\")`"]
pub struct FaultBuilder {
    target: Target,
}

impl Fault {
    /// Start a fault for the next request matching `target`.
    pub fn on(target: Target) -> FaultBuilder {
        FaultBuilder { target }
    }

    /// The request kind this fault applies to.
    pub fn target(&self) -> Target {
        self.target
    }

    pub(crate) fn matches(&self, targets: &[Target]) -> bool {
        self.target == Target::Any || targets.contains(&self.target)
    }
}

impl FaultBuilder {
    fn with(self, action: Action) -> Fault {
        Fault {
            target: self.target,
            action,
        }
    }

    /// Answer with this HTTP status and body (`application/json` when the body looks like JSON,
    /// `text/plain` otherwise).
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Connect).status(502, "Bad Gateway");
    /// ```
    pub fn status(self, status: u16, body: &str) -> Fault {
        self.with(Action::Status(status, body.to_owned()))
    }

    /// Answer 200 with a `text/html` maintenance page, as Salesforce does during maintenance.
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Any).html();
    /// ```
    pub fn html(self) -> Fault {
        self.with(Action::Html)
    }

    /// Answer 200 with a reply shaped like the real one, cut mid-way (valid HTTP, broken JSON).
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Connect).truncated();
    /// ```
    pub fn truncated(self) -> Fault {
        self.with(Action::Truncated)
    }

    /// Answer 200 with a single JSON object instead of an array (for the token endpoint, whose
    /// replies are objects: an array holding the object).
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Subscribe).object();
    /// ```
    pub fn object(self) -> Fault {
        self.with(Action::Object)
    }

    /// Answer 200 with a reply shaped like the real one but `"successful":"yes"` and the `id` as
    /// an object (token endpoint: `issued_at` as a number and `access_token` as an object).
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Handshake).wrong_types();
    /// ```
    pub fn wrong_types(self) -> Fault {
        self.with(Action::WrongTypes)
    }

    /// Answer 200 with this JSON as the body.
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Connect).body(serde_json::json!([{"channel": "/meta/connect"}]));
    /// ```
    pub fn body(self, body: serde_json::Value) -> Fault {
        self.with(Action::Body(body))
    }

    /// Never answer: the connection stays open until the client gives up (or the emulator stops).
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Connect).hang();
    /// ```
    pub fn hang(self) -> Fault {
        self.with(Action::Hang)
    }

    /// Drop the TCP connection without sending a response.
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Subscribe).close();
    /// ```
    pub fn close(self) -> Fault {
        self.with(Action::Close)
    }

    /// Process the request normally, after this delay.
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Token).delay(std::time::Duration::from_millis(300));
    /// ```
    pub fn delay(self, delay: std::time::Duration) -> Fault {
        self.with(Action::Delay(delay))
    }

    /// Process the request normally, then drop the connection instead of answering: the
    /// network failing mid-response. A connect hit by it has taken its events from the session's
    /// queue, so they are lost unless the client replays them.
    ///
    /// ```no_run
    /// # use sfstream::emulator::{Fault, Target};
    /// let f = Fault::on(Target::Connect).lose_response();
    /// ```
    pub fn lose_response(self) -> Fault {
        self.with(Action::LoseResponse)
    }
}

/// Salesforce's maintenance page, abridged.
pub(crate) const MAINTENANCE_HTML: &str = "<!DOCTYPE html>\n<html><head><title>Salesforce - Down For Maintenance</title></head>\n<body><h1>Down For Maintenance</h1><p>This site is down for maintenance. Please check back soon.</p></body></html>\n";
