use super::token_endpoint::{TokenEndpoint, endpoint_setters};
use super::{Authenticator, LoginUrl, Secret, Token};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use std::fmt;

/// The OAuth 2.0 client credentials flow (`grant_type=client_credentials`): the connected app
/// logs in as the "run as" user configured on it, with only its consumer key and secret.
///
/// Salesforce serves this flow only at the org's **My Domain** URL (e.g.
/// `https://acme.my.salesforce.com`), never at `login.salesforce.com` or
/// `test.salesforce.com`; logging in there fails at once with [`ErrorKind::Client`].
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// use sfstream::{Client, auth::ClientCredentialsAuthenticator};
/// let my_domain: url::Url = "https://acme.my.salesforce.com".parse().unwrap();
/// let auth = ClientCredentialsAuthenticator::new(my_domain, "3MVG9...", "consumer-secret");
/// let client = Client::builder(auth).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientCredentialsAuthenticator {
    client_id: String,
    client_secret: Secret,
    endpoint: TokenEndpoint,
}

impl fmt::Debug for ClientCredentialsAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsAuthenticator")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl ClientCredentialsAuthenticator {
    /// Log in at `my_domain` (a [`url::Url`] or a [`LoginUrl`]) as the connected app
    /// `consumer_key`/`consumer_secret`.
    ///
    /// ```
    /// use sfstream::auth::ClientCredentialsAuthenticator;
    /// let my_domain: url::Url = "https://acme.my.salesforce.com".parse().unwrap();
    /// let auth = ClientCredentialsAuthenticator::new(my_domain, "3MVG9...", "secret");
    /// assert_eq!(auth.client_id(), "3MVG9...");
    /// ```
    pub fn new(
        my_domain: impl Into<LoginUrl>,
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<Secret>,
    ) -> Self {
        ClientCredentialsAuthenticator {
            client_id: consumer_key.into(),
            client_secret: consumer_secret.into(),
            endpoint: TokenEndpoint::new(my_domain.into()),
        }
    }

    /// The connected app's consumer key (OAuth client id).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

endpoint_setters!(
    ClientCredentialsAuthenticator,
    "ClientCredentialsAuthenticator::new(\"https://acme.my.salesforce.com\".parse::<url::Url>().unwrap(), \"3MVG9...\", \"secret\")"
);

impl Authenticator for ClientCredentialsAuthenticator {
    fn inherit_http_settings(&self, settings: &crate::transport::HttpSettings) {
        self.endpoint.inherit(settings);
    }

    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        Box::pin(async move {
            if !self.endpoint.login.is_my_domain() {
                return Err(Error::new(
                    ErrorKind::Client,
                    format!(
                        "the client credentials flow needs your org's My Domain login URL \
                         (e.g. https://acme.my.salesforce.com); Salesforce does not serve it at {}",
                        self.endpoint.login
                    ),
                ));
            }
            let reply = self
                .endpoint
                .request(
                    "client_credentials",
                    &[
                        ("client_id", &self.client_id),
                        ("client_secret", self.client_secret.expose()),
                    ],
                )
                .await?;
            Ok(reply.token)
        })
    }
}
