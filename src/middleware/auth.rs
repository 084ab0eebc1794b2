//! Re-authentication as a layer.
//!
//! ```
//! use sfstream::middleware::AuthLayer;
//! use sfstream::transport::{HttpTransport, Layer};
//! use sfstream::auth::AccessToken;
//! # fn f() -> sfstream::Result<()> {
//! let auth = AccessToken::new("token", "https://example.my.salesforce.com".parse().unwrap());
//! let transport = AuthLayer::new(auth, "66.0").layer(HttpTransport::builder().build()?);
//! # Ok(()) }
//! ```

use crate::auth::{Authenticator, Token};
use crate::bayeux::Message;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Layer, Request, Response, Transport};
use futures::future::BoxFuture;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Mutex;
use url::Url;

/// Adds `Authorization` and the CometD endpoint of the current token to every request, and
/// re-authenticates once when the server rejects the token.
///
/// A rejection is HTTP 401, a Bayeux error `401::...` (but not the spec's
/// `401:<id>:Unknown client`), or `403::Handshake denied` whose `ext.sfdc.failureReason` is a
/// 401. `403::Unknown client` is *not* a rejection: it means the session is gone, and the
/// connection task rehandshakes with the same token (logging in again on every 403 locks users
/// out, EMP-Connector #95). Concurrent rejections of the same token cause one refresh, and
/// requests waiting on a login that fails share its error instead of each trying again; the next
/// request after that tries again.
///
/// A request is retried at most once: if the server also rejects the fresh token, the request
/// fails with [`ErrorKind::Authentication`]. The token never appears in a log line or an error.
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<State>,
}

/// The transport produced by [`AuthLayer`].
pub struct Auth<T> {
    inner: T,
    state: Arc<State>,
}

struct State {
    authenticator: Box<dyn Authenticator>,
    api_version: String,
    current: Mutex<Current>,
    /// `Current::generation`, readable without waiting for the lock.
    generation: AtomicU64,
}

/// The outcome of the latest login. `generation` counts finished login attempts, successful or
/// not; a session is tagged with the generation that produced it.
#[derive(Default)]
struct Current {
    generation: u64,
    session: Option<Session>,
    failure: Option<Error>,
}

#[derive(Clone)]
struct Session {
    token: Token,
    endpoint: Url,
    authorization: HeaderValue,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("api_version", &self.state.api_version)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Auth<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("api_version", &self.state.api_version)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// Authenticate with `authenticator` and talk to `/cometd/<api_version>` of the token's
    /// instance.
    pub fn new(authenticator: impl Authenticator, api_version: impl Into<String>) -> Self {
        Self::from_boxed(Box::new(authenticator), api_version.into())
    }

    pub(crate) fn from_boxed(authenticator: Box<dyn Authenticator>, api_version: String) -> Self {
        AuthLayer {
            state: Arc::new(State {
                authenticator,
                api_version,
                current: Mutex::new(Current::default()),
                generation: AtomicU64::new(0),
            }),
        }
    }
}

impl AuthLayer {
    /// The current token (logging in first if needed) and its generation, for the REST
    /// publisher, which shares this layer's login and refresh.
    pub(crate) async fn token(&self) -> Result<(u64, Token)> {
        self.state.session().await.map(|(g, s)| (g, s.token))
    }

    /// A fresh token after the one of `generation` was rejected (HTTP 401), shared with every
    /// request rejected together.
    pub(crate) async fn refreshed_token(&self, generation: u64) -> Result<(u64, Token)> {
        self.state
            .refresh(generation)
            .await
            .map(|(g, s)| (g, s.token))
    }

    /// The API version of the endpoints.
    pub(crate) fn api_version(&self) -> &str {
        &self.state.api_version
    }
}

impl<T: Transport> Layer<T> for AuthLayer {
    type Transport = Auth<T>;
    fn layer(&self, inner: T) -> Auth<T> {
        Auth {
            inner,
            state: self.state.clone(),
        }
    }
}

impl State {
    fn session_from(&self, token: Token) -> Result<Session> {
        let endpoint = token.cometd_endpoint(&self.api_version).map_err(|e| {
            Error::new(
                ErrorKind::Authentication,
                format!(
                    "the token's instance URL {} is not usable",
                    crate::url_policy::shown(&token.instance_url)
                ),
            )
            .with_source(e)
        })?;
        crate::transport::check_scheme(&endpoint)?;
        let authorization = token.authorization_header()?;
        Ok(Session {
            token,
            endpoint,
            authorization,
        })
    }

    /// The current session, logging in first if there is none. Callers that waited for a
    /// login that failed get its error.
    async fn session(self: &Arc<Self>) -> Result<(u64, Session)> {
        let state = self.clone();
        to_completion(async move { state.session_now().await }).await
    }

    /// A fresh session after the one of `generation` was rejected (see [`State::refresh_now`]).
    async fn refresh(self: &Arc<Self>, generation: u64) -> Result<(u64, Session)> {
        let state = self.clone();
        to_completion(async move { state.refresh_now(generation).await }).await
    }

    async fn session_now(&self) -> Result<(u64, Session)> {
        let seen = self.generation.load(Ordering::Acquire);
        let mut current = self.current.lock().await;
        if let Some(s) = &current.session {
            return Ok((current.generation, s.clone()));
        }
        if current.generation > seen
            && let Some(e) = &current.failure
        {
            return Err(e.clone());
        }
        tracing::info!("logging in");
        self.login(&mut current, None).await
    }

    /// A fresh session after the one of `generation` was rejected. Callers rejected together
    /// share the first caller's refresh, and its error if it failed.
    async fn refresh_now(&self, generation: u64) -> Result<(u64, Session)> {
        let mut current = self.current.lock().await;
        if current.generation != generation {
            // Someone logged in after the rejected token was issued.
            if let Some(s) = &current.session {
                return Ok((current.generation, s.clone()));
            }
            if let Some(e) = &current.failure {
                return Err(e.clone());
            }
        }
        let rejected = current.session.take().map(|s| s.token);
        if rejected.is_some() {
            tracing::info!("the server rejected the access token; refreshing it");
            crate::metrics::relogin();
        }
        self.login(&mut current, rejected).await
    }

    async fn login(
        &self,
        current: &mut Current,
        rejected: Option<Token>,
    ) -> Result<(u64, Session)> {
        let result = match &rejected {
            Some(token) => self.authenticator.refresh(token).await,
            None => self.authenticator.authenticate().await,
        }
        .and_then(|token| self.session_from(token));
        current.generation += 1;
        self.generation.store(current.generation, Ordering::Release);
        match result {
            Ok(session) => {
                current.session = Some(session.clone());
                current.failure = None;
                Ok((current.generation, session))
            }
            Err(e) => {
                tracing::warn!(error = %e, "login failed");
                current.session = None;
                current.failure = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// Run a login on its own task: once started it finishes and stores its result, whoever stops
/// waiting (a rehandshake or a request timeout dropping the request). A refresh the server
/// answered with a rotated refresh token must never be cut off, or the new token is lost and
/// the next login fails.
async fn to_completion<F>(login: F) -> Result<(u64, Session)>
where
    F: std::future::Future<Output = Result<(u64, Session)>> + Send + 'static,
{
    tokio::spawn(login).await.unwrap_or_else(|e| {
        Err(Error::new(
            ErrorKind::Authentication,
            format!("the login task failed: {e}"),
        ))
    })
}

fn is_token_rejection(m: &Message) -> bool {
    let Some(err) = m.server_error() else {
        return false;
    };
    if err.is_unknown_client() {
        return false;
    }
    err.is_authentication_failure()
        || m.failure_reason()
            .is_some_and(|r| crate::bayeux::ServerError::parse(r).is_authentication_failure())
}

fn rejected(result: &Result<Response>) -> bool {
    match result {
        Ok(r) => r.messages.iter().any(is_token_rejection),
        Err(e) => e.status() == Some(401),
    }
}

fn authorize(mut request: Request, session: &Session) -> Request {
    request.url = Some(session.endpoint.clone());
    request
        .headers
        .insert(AUTHORIZATION, session.authorization.clone());
    request
}

impl<T: Transport> Auth<T> {
    async fn call(&self, request: Request) -> Result<Response> {
        let (generation, session) = self.state.session().await?;
        let first = self.inner.send(authorize(request.clone(), &session)).await;
        if !rejected(&first) {
            return first;
        }
        let (_, session) = self.state.refresh(generation).await?;
        let second = self.inner.send(authorize(request, &session)).await;
        match second {
            Err(e) if e.status() == Some(401) => Err(e.with_kind(ErrorKind::Authentication)),
            other => other,
        }
    }
}

impl<T: Transport> Transport for Auth<T> {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        Box::pin(self.call(request))
    }

    fn reset(&self) {
        self.inner.reset()
    }
}
