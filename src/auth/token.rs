use super::Secret;
use crate::error::{Error, ErrorKind, Result};
use crate::url_policy::{shown, without_userinfo};
use http::HeaderValue;
use std::fmt;
use url::Url;

/// What a login yields: the access token and the org's instance URL.
///
/// `Debug` redacts the access token and shows the instance URL without user info.
#[derive(Clone)]
#[non_exhaustive]
pub struct Token {
    /// The access token (redacted in `Debug`).
    pub access_token: Secret,
    /// `Bearer` for Salesforce.
    pub token_type: String,
    /// The org's instance URL, e.g. `https://yourInstance.my.salesforce.com`.
    pub instance_url: Url,
    /// The identity URL (`id` of the token response), if known.
    pub id: Option<String>,
    /// When the token was issued, milliseconds since the epoch, if known.
    pub issued_at: Option<u64>,
}

impl Token {
    /// A bearer token for `instance_url` (user info in the URL is dropped: it is never sent).
    pub fn bearer(access_token: impl Into<Secret>, instance_url: Url) -> Self {
        Token {
            access_token: access_token.into(),
            token_type: "Bearer".to_owned(),
            instance_url: without_userinfo(instance_url),
            id: None,
            issued_at: None,
        }
    }

    /// The `Authorization` header value.
    pub(crate) fn authorization(&self) -> String {
        let kind = if self.token_type.is_empty() {
            "Bearer"
        } else {
            &self.token_type
        };
        format!("{kind} {}", self.access_token.expose())
    }

    /// [`authorization`](Self::authorization) as a header value marked sensitive (kept out of
    /// hyper's and http's `Debug`); an access token that cannot be a header value is an
    /// `Authentication` error that does not show it.
    pub(crate) fn authorization_header(&self) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&self.authorization()).map_err(|_| {
            Error::new(
                ErrorKind::Authentication,
                "the access token contains characters not allowed in a header",
            )
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// `<instance_url>/cometd/<api_version>`, without user info (the field is public, so a
    /// custom authenticator may have put some there).
    pub(crate) fn cometd_endpoint(&self, api_version: &str) -> Result<Url, url::ParseError> {
        let instance = shown(&self.instance_url).to_string();
        let base = instance.trim_end_matches('/');
        Url::parse(&format!("{base}/cometd/{api_version}"))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("instance_url", &shown(&self.instance_url))
            .field("id", &self.id)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(access: &str) -> Token {
        Token::bearer(access, "https://acme.my.salesforce.com".parse().unwrap())
    }

    #[test]
    fn the_authorization_header_is_sensitive() {
        let value = token("00Dxx!AR-token").authorization_header().unwrap();
        assert_eq!(value, "Bearer 00Dxx!AR-token");
        assert!(value.is_sensitive());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_an_authentication_error_without_the_token() {
        let e = token("00Dxx!AR-SECRET\r\nX-Evil: 1")
            .authorization_header()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(!format!("{e} {e:?}").contains("SECRET"), "{e:?}");
    }
}
