//! One constructor per OAuth flow, each returning a [`ClientBuilder`] with every option still
//! open. The authenticators themselves (in [`auth`](crate::auth)) have more settings: login URL,
//! timeout, TLS.

use super::{Client, ClientBuilder};
use crate::auth::{
    AccessToken, ClientCredentialsAuthenticator, LoginUrl, PasswordAuthenticator,
    RefreshTokenAuthenticator, Secret,
};
use url::Url;

impl Client {
    /// A client that logs in with the username-password flow: aiosfstream's
    /// `SalesforceStreamingClient(consumer_key, consumer_secret, username, password, sandbox)`.
    ///
    /// `password` is the user's password **followed by their security token** (unless the
    /// caller's IP is trusted). `sandbox` picks `https://test.salesforce.com` over
    /// `https://login.salesforce.com`; for a My Domain login URL use
    /// [`PasswordAuthenticator::login_url`] with [`Client::builder`].
    ///
    /// ```no_run
    /// # async fn f() -> sfstream::Result<()> {
    /// use futures::StreamExt;
    /// let client = sfstream::Client::password(
    ///     "3MVG9...",          // consumer key
    ///     "consumer-secret",
    ///     "ada@example.com",
    ///     "passwordSECURITYTOKEN",
    ///     false,               // sandbox
    /// )
    /// .max_pending_count(1000)
    /// .connect()
    /// .await?;
    /// let mut orders = client.subscribe("/event/Order_Placed__e").await?;
    /// while let Some(item) = orders.next().await {
    ///     match item {
    ///         Ok(event) => println!("{}", event.data()),
    ///         Err(e) => eprintln!("{e}"), // a notice (outage, replay gap...): the stream goes on
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "SalesforceStreamingClient")]
    pub fn password(
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<Secret>,
        username: impl Into<String>,
        password: impl Into<Secret>,
        sandbox: bool,
    ) -> ClientBuilder {
        let auth = PasswordAuthenticator::new(consumer_key, consumer_secret, username, password)
            .login_url(LoginUrl::for_sandbox(sandbox));
        Client::builder(auth)
    }

    /// A client that logs in with the refresh token flow. For a connected app that needs no
    /// consumer secret, or to read a rotated refresh token back, use
    /// [`RefreshTokenAuthenticator`] with [`Client::builder`].
    ///
    /// ```no_run
    /// # async fn f() -> sfstream::Result<()> {
    /// let client = sfstream::Client::refresh_token("3MVG9...", "consumer-secret", "5Aep861...", false)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn refresh_token(
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<Secret>,
        refresh_token: impl Into<Secret>,
        sandbox: bool,
    ) -> ClientBuilder {
        let auth = RefreshTokenAuthenticator::new(consumer_key, consumer_secret, refresh_token)
            .login_url(LoginUrl::for_sandbox(sandbox));
        Client::builder(auth)
    }

    /// A client that logs in with the JWT bearer flow (cargo feature `jwt`), signing with the
    /// RSA private key `private_key_pem`. Fails with [`ErrorKind::Client`](crate::ErrorKind::Client)
    /// if the key cannot sign.
    ///
    /// ```no_run
    /// # async fn f() -> sfstream::Result<()> {
    /// let key = std::fs::read("server.key").unwrap();
    /// let client = sfstream::Client::jwt_bearer("3MVG9...", "ada@example.com", key, false)?
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn jwt_bearer(
        consumer_key: impl Into<String>,
        username: impl Into<String>,
        private_key_pem: impl AsRef<[u8]>,
        sandbox: bool,
    ) -> crate::Result<ClientBuilder> {
        let auth =
            crate::auth::JwtBearerAuthenticator::new(consumer_key, username, private_key_pem)?
                .login_url(LoginUrl::for_sandbox(sandbox));
        Ok(Client::builder(auth))
    }

    /// A client that logs in with the client credentials flow at the org's My Domain URL
    /// (Salesforce does not serve this flow at `login.salesforce.com` or `test.salesforce.com`).
    ///
    /// ```no_run
    /// # async fn f() -> sfstream::Result<()> {
    /// let my_domain = "https://acme.my.salesforce.com".parse().unwrap();
    /// let client = sfstream::Client::client_credentials(my_domain, "3MVG9...", "consumer-secret")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn client_credentials(
        my_domain_url: Url,
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<Secret>,
    ) -> ClientBuilder {
        Client::builder(ClientCredentialsAuthenticator::new(
            my_domain_url,
            consumer_key,
            consumer_secret,
        ))
    }

    /// A client using a ready access token for `instance_url` (e.g. from
    /// `sf org display --json`). It cannot log in again: once the token is rejected, the client
    /// reports [`ErrorKind::Authentication`](crate::ErrorKind::Authentication).
    ///
    /// ```no_run
    /// # async fn f() -> sfstream::Result<()> {
    /// let client = sfstream::Client::access_token(
    ///     std::env::var("SF_ACCESS_TOKEN").unwrap(),
    ///     std::env::var("SF_INSTANCE_URL").unwrap().parse().unwrap(),
    /// )
    /// .connect()
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn access_token(access_token: impl Into<Secret>, instance_url: Url) -> ClientBuilder {
        Client::builder(AccessToken::new(access_token, instance_url))
    }
}
