use super::token_endpoint::{TokenEndpoint, endpoint_setters, sandbox_setter};
use super::{Authenticator, LoginUrl, Secret, Token};
use crate::error::Result;
use futures::future::BoxFuture;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The OAuth 2.0 refresh token flow (`grant_type=refresh_token`), aiosfstream's
/// `RefreshTokenAuthenticator`: trade a refresh token obtained once (web server flow, Salesforce
/// CLI, ...) for access tokens, as often as needed.
///
/// The consumer secret is optional: Salesforce asks for it only when the connected app requires
/// it for the refresh token flow. When Salesforce rotates refresh tokens (the reply carries a new
/// `refresh_token`), the new one is used from then on; clones share it, so keep a clone to read
/// [`current_refresh_token`](Self::current_refresh_token) and store it for the next run.
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// use sfstream::{Client, auth::RefreshTokenAuthenticator};
/// let auth = RefreshTokenAuthenticator::new("3MVG9...", "consumer-secret", "5Aep861...");
/// let client = Client::builder(auth.clone()).connect().await?;
/// // Later, e.g. before exiting:
/// let keep = auth.current_refresh_token();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RefreshTokenAuthenticator {
    client_id: String,
    client_secret: Option<Secret>,
    refresh_token: Arc<Mutex<Secret>>,
    endpoint: TokenEndpoint,
}

impl fmt::Debug for RefreshTokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenAuthenticator")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("refresh_token", &Secret::new(""))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl RefreshTokenAuthenticator {
    /// Refresh with `refresh_token` through the connected app `consumer_key`/`consumer_secret`,
    /// at `https://login.salesforce.com` unless [`sandbox`](Self::sandbox) or
    /// [`login_url`](Self::login_url) says otherwise.
    ///
    /// ```
    /// let auth = sfstream::auth::RefreshTokenAuthenticator::new("3MVG9...", "secret", "5Aep861...");
    /// assert!(!format!("{auth:?}").contains("5Aep861"));
    /// ```
    pub fn new(
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<Secret>,
        refresh_token: impl Into<Secret>,
    ) -> Self {
        Self::build(
            consumer_key.into(),
            Some(consumer_secret.into()),
            refresh_token.into(),
        )
    }

    /// Refresh without a consumer secret, for connected apps that do not require one for the
    /// refresh token flow.
    ///
    /// ```
    /// let auth = sfstream::auth::RefreshTokenAuthenticator::without_client_secret("3MVG9...", "5Aep861...");
    /// ```
    pub fn without_client_secret(
        consumer_key: impl Into<String>,
        refresh_token: impl Into<Secret>,
    ) -> Self {
        Self::build(consumer_key.into(), None, refresh_token.into())
    }

    fn build(client_id: String, client_secret: Option<Secret>, refresh_token: Secret) -> Self {
        RefreshTokenAuthenticator {
            client_id,
            client_secret,
            refresh_token: Arc::new(Mutex::new(refresh_token)),
            endpoint: TokenEndpoint::new(LoginUrl::Production),
        }
    }

    /// The connected app's consumer key (OAuth client id).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The refresh token in use: the one given, or the latest one Salesforce rotated to.
    ///
    /// ```
    /// let auth = sfstream::auth::RefreshTokenAuthenticator::new("3MVG9...", "secret", "5Aep861...");
    /// assert_eq!(auth.current_refresh_token().expose(), "5Aep861...");
    /// ```
    pub fn current_refresh_token(&self) -> Secret {
        self.refresh_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

sandbox_setter!(
    RefreshTokenAuthenticator,
    "RefreshTokenAuthenticator::new(\"3MVG9...\", \"secret\", \"5Aep861...\")"
);
endpoint_setters!(
    RefreshTokenAuthenticator,
    "RefreshTokenAuthenticator::new(\"3MVG9...\", \"secret\", \"5Aep861...\")"
);

impl Authenticator for RefreshTokenAuthenticator {
    fn inherit_http_settings(&self, settings: &crate::transport::HttpSettings) {
        self.endpoint.inherit(settings);
    }

    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        Box::pin(async move {
            let refresh_token = self.current_refresh_token();
            let mut fields = vec![
                ("client_id", self.client_id.as_str()),
                ("refresh_token", refresh_token.expose()),
                ("format", "json"),
            ];
            if let Some(secret) = &self.client_secret {
                fields.push(("client_secret", secret.expose()));
            }
            let reply = self.endpoint.request("refresh_token", &fields).await?;
            if let Some(rotated) = reply.refresh_token
                && rotated != refresh_token
            {
                tracing::info!("the refresh token was rotated; using the new one");
                *self
                    .refresh_token
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = rotated;
            }
            Ok(reply.token)
        })
    }
}
