//! Layer 6: authentication. An [`Authenticator`] yields a [`Token`] (access token, token type
//! and instance URL) and can be asked for a fresh one; the [auth layer](crate::middleware::AuthLayer)
//! calls it before the first request and once more whenever the server rejects the token.
//!
//! The flows, each posting a form to `<login url>/services/oauth2/token` ([`LoginUrl`]:
//! production, sandbox or My Domain):
//!
//! | flow | type | refreshes by |
//! |---|---|---|
//! | username-password (`grant_type=password`) | [`PasswordAuthenticator`] | logging in again |
//! | refresh token (`grant_type=refresh_token`) | [`RefreshTokenAuthenticator`] | the refresh token (rotations followed) |
//! | JWT bearer (feature `jwt`) | `JwtBearerAuthenticator` | a new signed assertion |
//! | client credentials (My Domain only) | [`ClientCredentialsAuthenticator`] | logging in again |
//! | a ready access token + instance URL | [`AccessToken`] | cannot refresh |
//!
//! Failed logins are [`ErrorKind::Authentication`](crate::ErrorKind::Authentication) errors
//! carrying the OAuth pair ([`Error::oauth_error`](crate::Error::oauth_error)) and the HTTP status;
//! network failures are transport errors. Secrets (passwords, consumer secrets, refresh and access
//! tokens, private keys) are held as [`Secret`]s and appear in no `Debug` output, error or log
//! line.
//!
//! ```
//! use sfstream::auth::{AccessToken, Authenticator};
//! let auth = AccessToken::new("00Dxx!AR8AQ...", "https://example.my.salesforce.com".parse().unwrap());
//! assert!(!auth.can_refresh());
//! assert!(!format!("{auth:?}").contains("AR8AQ"));
//! ```

mod access_token;
mod client_credentials;
#[cfg(feature = "jwt")]
mod jwt;
mod login;
mod password;
mod refresh;
mod secret;
mod token;
mod token_endpoint;

pub use access_token::AccessToken;
pub use client_credentials::ClientCredentialsAuthenticator;
#[cfg(feature = "jwt")]
pub use jwt::JwtBearerAuthenticator;
pub use login::LoginUrl;
pub use password::PasswordAuthenticator;
pub use refresh::RefreshTokenAuthenticator;
pub use secret::Secret;
pub use token::Token;
#[cfg(feature = "fuzzing")]
pub(crate) use token_endpoint::parse_reply as parse_token_reply;

use crate::error::Result;
use crate::transport::HttpSettings;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Something that can log in to Salesforce.
///
/// Implement it to plug in your own token source (a vault, another OAuth library). The auth
/// layer calls [`authenticate`](Authenticator::authenticate) before the first request and
/// [`refresh`](Authenticator::refresh) once when the server rejects the token (HTTP 401 or a
/// Bayeux `401::` error); concurrent rejections share one refresh. It is implemented for
/// `Arc<A>` and `Box<A>` too, so one authenticator can serve several clients.
///
/// ```
/// use futures::future::BoxFuture;
/// use sfstream::auth::{Authenticator, Token};
///
/// /// Reads the token another process keeps fresh.
/// struct FromVault;
/// impl Authenticator for FromVault {
///     fn authenticate(&self) -> BoxFuture<'_, sfstream::Result<Token>> {
///         Box::pin(async {
///             let url = "https://acme.my.salesforce.com".parse().unwrap();
///             Ok(Token::bearer("00Dxx!from-the-vault", url))
///         })
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Log in and return a token.
    fn authenticate(&self) -> BoxFuture<'_, Result<Token>>;

    /// Return a new token after `rejected` was refused. The default logs in again.
    fn refresh<'a>(&'a self, rejected: &'a Token) -> BoxFuture<'a, Result<Token>> {
        let _ = rejected;
        self.authenticate()
    }

    /// Whether [`refresh`](Authenticator::refresh) can produce a different token. A ready access
    /// token cannot.
    fn can_refresh(&self) -> bool {
        true
    }

    /// Take the client's TLS and proxy settings:
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) calls it so that token requests go
    /// out the way CometD requests do. The built-in flows use each setting unless it was set on
    /// the authenticator itself (the latest client's settings win when one authenticator serves
    /// several); the default ignores them. Wrappers should forward it.
    fn inherit_http_settings(&self, settings: &HttpSettings) {
        let _ = settings;
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        (**self).authenticate()
    }

    fn refresh<'a>(&'a self, rejected: &'a Token) -> BoxFuture<'a, Result<Token>> {
        (**self).refresh(rejected)
    }

    fn can_refresh(&self) -> bool {
        (**self).can_refresh()
    }

    fn inherit_http_settings(&self, settings: &HttpSettings) {
        (**self).inherit_http_settings(settings)
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Box<A> {
    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        (**self).authenticate()
    }

    fn refresh<'a>(&'a self, rejected: &'a Token) -> BoxFuture<'a, Result<Token>> {
        (**self).refresh(rejected)
    }

    fn can_refresh(&self) -> bool {
        (**self).can_refresh()
    }

    fn inherit_http_settings(&self, settings: &HttpSettings) {
        (**self).inherit_http_settings(settings)
    }
}
