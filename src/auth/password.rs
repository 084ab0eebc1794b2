use super::token_endpoint::{TokenEndpoint, endpoint_setters, sandbox_setter};
use super::{Authenticator, LoginUrl, Secret, Token};
use crate::error::Result;
use futures::future::BoxFuture;
use std::fmt;

/// The OAuth 2.0 username-password flow (`grant_type=password`), aiosfstream's
/// `PasswordAuthenticator`.
///
/// **The security token goes at the end of the password**: unless the connected app relaxes IP
/// restrictions or the caller's IP range is trusted, Salesforce expects `password` to be the
/// user's password immediately followed by their security token (Settings → Reset My Security
/// Token). This flow returns no refresh token, so a rejected token is replaced by logging in
/// again. Salesforce is retiring the flow for new connected apps; prefer the JWT bearer or the
/// client credentials flow for unattended integrations.
///
/// The password and the consumer secret are kept as [`Secret`]s: `Debug` shows neither.
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// use sfstream::{Client, auth::PasswordAuthenticator};
/// let password = format!("{}{}", "my-password", "SECURITYTOKEN"); // password + security token
/// let auth = PasswordAuthenticator::new("3MVG9...", "consumer-secret", "ada@example.com", password)
///     .sandbox();
/// let client = Client::builder(auth).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PasswordAuthenticator {
    client_id: String,
    client_secret: Secret,
    username: String,
    password: Secret,
    endpoint: TokenEndpoint,
}

impl fmt::Debug for PasswordAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordAuthenticator")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl PasswordAuthenticator {
    /// Log in as `username` through the connected app `consumer_key`/`consumer_secret`, at
    /// `https://login.salesforce.com` unless [`sandbox`](Self::sandbox) or
    /// [`login_url`](Self::login_url) says otherwise. `password` is the password followed by the
    /// user's security token.
    ///
    /// ```
    /// let auth = sfstream::auth::PasswordAuthenticator::new("3MVG9...", "secret", "ada@example.com", "pwTOKEN");
    /// assert_eq!(auth.username(), "ada@example.com");
    /// ```
    pub fn new(
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<Secret>,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        PasswordAuthenticator {
            client_id: consumer_key.into(),
            client_secret: consumer_secret.into(),
            username: username.into(),
            password: password.into(),
            endpoint: TokenEndpoint::new(LoginUrl::Production),
        }
    }

    /// The connected app's consumer key (OAuth client id).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The Salesforce username.
    pub fn username(&self) -> &str {
        &self.username
    }
}

sandbox_setter!(
    PasswordAuthenticator,
    "PasswordAuthenticator::new(\"3MVG9...\", \"secret\", \"ada@example.com\", \"pwTOKEN\")"
);
endpoint_setters!(
    PasswordAuthenticator,
    "PasswordAuthenticator::new(\"3MVG9...\", \"secret\", \"ada@example.com\", \"pwTOKEN\")"
);

impl Authenticator for PasswordAuthenticator {
    fn inherit_http_settings(&self, settings: &crate::transport::HttpSettings) {
        self.endpoint.inherit(settings);
    }

    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        Box::pin(async move {
            let reply = self
                .endpoint
                .request(
                    "password",
                    &[
                        ("client_id", &self.client_id),
                        ("client_secret", self.client_secret.expose()),
                        ("username", &self.username),
                        ("password", self.password.expose()),
                    ],
                )
                .await?;
            Ok(reply.token)
        })
    }
}
