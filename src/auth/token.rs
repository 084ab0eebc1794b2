use super::Secret;
use url::Url;

/// What a login yields: the access token and the org's instance URL.
#[derive(Debug, Clone)]
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
    /// A bearer token for `instance_url`.
    pub fn bearer(access_token: impl Into<Secret>, instance_url: Url) -> Self {
        Token {
            access_token: access_token.into(),
            token_type: "Bearer".to_owned(),
            instance_url,
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

    /// `<instance_url>/cometd/<api_version>`.
    pub(crate) fn cometd_endpoint(&self, api_version: &str) -> Result<Url, url::ParseError> {
        let base = self.instance_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/cometd/{api_version}"))
    }
}
