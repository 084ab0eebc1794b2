//! Layer 6: authentication. An [`Authenticator`] yields a [`Token`] (access token + instance
//! URL) and can be asked for a fresh one; the [auth layer](crate::middleware::AuthLayer) calls it.
//!
//! ```
//! use sfstream::auth::{AccessToken, Authenticator};
//! let auth = AccessToken::new("00Dxx!AR8AQ...", "https://example.my.salesforce.com".parse().unwrap());
//! assert!(!auth.can_refresh());
//! assert!(!format!("{auth:?}").contains("AR8AQ"));
//! ```

mod access_token;
mod secret;
mod token;

pub use access_token::AccessToken;
pub use secret::Secret;
pub use token::Token;

use crate::error::Result;
use futures::future::BoxFuture;

/// Something that can log in to Salesforce.
///
/// Implement it to plug in your own token source (a vault, another OAuth library). The auth
/// layer calls [`authenticate`](Authenticator::authenticate) before the first request and
/// [`refresh`](Authenticator::refresh) once when the server rejects the token (HTTP 401 or a
/// Bayeux `401::` error); concurrent rejections share one refresh.
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
}
