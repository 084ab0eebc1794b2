use super::Secret;
use crate::url_policy::{shown, without_userinfo};
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
