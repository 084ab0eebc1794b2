use super::{Authenticator, Secret, Token};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use url::Url;

/// A ready access token and instance URL (from the Salesforce CLI, another OAuth library, or the
/// emulator). It cannot be refreshed: once the server rejects it, requests fail with
/// [`ErrorKind::Authentication`].
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// let token = std::env::var("SF_ACCESS_TOKEN").unwrap();
/// let url = std::env::var("SF_INSTANCE_URL").unwrap().parse().unwrap();
/// let client = sfstream::Client::builder(sfstream::auth::AccessToken::new(token, url))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AccessToken {
    token: Token,
}

impl AccessToken {
    /// A bearer token for `instance_url`.
    pub fn new(access_token: impl Into<Secret>, instance_url: Url) -> Self {
        AccessToken {
            token: Token::bearer(access_token, instance_url),
        }
    }
}

impl Authenticator for AccessToken {
    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        Box::pin(async move { Ok(self.token.clone()) })
    }

    fn refresh<'a>(&'a self, _rejected: &'a Token) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            Err(Error::new(
                ErrorKind::Authentication,
                "the access token was rejected and a ready token cannot be refreshed; use an OAuth flow to log in again",
            ))
        })
    }

    fn can_refresh(&self) -> bool {
        false
    }
}
