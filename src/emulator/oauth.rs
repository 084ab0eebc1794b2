//! The OAuth token endpoint, `POST /services/oauth2/token`, with Salesforce's reply and error
//! shapes. Each grant is one function and one arm of [`grant`].

use super::events::{ORG_ID, USER_ID, epoch_ms};
use super::ids;
use super::state::{Config, Shared, State};
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

/// One request to the token endpoint, as the emulator recorded it. Secrets (passwords, client
/// secrets, refresh tokens, assertions) are never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequest {
    /// The `grant_type` field (empty if absent).
    pub grant_type: String,
    /// The `client_id` field.
    pub client_id: Option<String>,
    /// The `username` field (password flow).
    pub username: Option<String>,
    /// `Ok` if a token was issued, else the OAuth error code (`invalid_grant`, ...).
    pub outcome: Result<(), String>,
}

/// A failed grant, with Salesforce's error code and description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OAuthError {
    InvalidRequest(&'static str),
    InvalidClientId,
    InvalidClient,
    InvalidGrant(&'static str),
    UnsupportedGrantType,
}

impl OAuthError {
    fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClientId => "invalid_client_id",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
        }
    }

    fn description(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(d) | OAuthError::InvalidGrant(d) => d,
            OAuthError::InvalidClientId => "client identifier invalid",
            OAuthError::InvalidClient => "invalid client credentials",
            OAuthError::UnsupportedGrantType => "grant type not supported",
        }
    }
}

/// The decoded form fields; the first occurrence of a name wins.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_form(content_type: Option<&str>, body: &[u8]) -> Result<Form, OAuthError> {
    let form_type = content_type.is_none_or(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form_type {
        return Err(OAuthError::InvalidRequest(
            "the request body must be application/x-www-form-urlencoded",
        ));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(OAuthError::InvalidRequest(
            "the request body is not valid UTF-8",
        ));
    }
    Ok(Form(
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

/// Handle one token request; returns the status and the JSON body.
pub(crate) fn handle(
    shared: &Shared,
    content_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Bytes) {
    let form = parse_form(content_type, body);
    let (grant_type, client_id, username) = match &form {
        Ok(f) => (
            f.get("grant_type").unwrap_or_default().to_owned(),
            f.get("client_id").map(str::to_owned),
            f.get("username").map(str::to_owned),
        ),
        Err(_) => (String::new(), None, None),
    };
    let result = form.and_then(|f| {
        let mut st = shared.lock();
        grant(&shared.config, &mut st, &f)?;
        let token = ids::access_token();
        st.access_tokens.insert(token.clone());
        Ok(token)
    });
    shared.record_token_request(TokenRequest {
        grant_type,
        client_id,
        username,
        outcome: result.as_ref().map(|_| ()).map_err(|e| e.code().to_owned()),
    });
    match result {
        Ok(token) => (StatusCode::OK, to_bytes(&reply(shared, &token))),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            to_bytes(&json!({"error": e.code(), "error_description": e.description()})),
        ),
    }
}

/// Check the grant's credentials. Adding a grant (e.g. the JWT bearer flow) is one arm here and
/// one function below.
fn grant(config: &Config, st: &mut State, form: &Form) -> Result<(), OAuthError> {
    match form.get("grant_type").unwrap_or_default() {
        "password" => password(config, form),
        "refresh_token" => refresh_token(config, st, form),
        "client_credentials" => client_credentials(config, form),
        _ => Err(OAuthError::UnsupportedGrantType),
    }
}

fn check_client(config: &Config, form: &Form, secret_required: bool) -> Result<(), OAuthError> {
    if form.get("client_id") != Some(config.client_id.as_str()) {
        return Err(OAuthError::InvalidClientId);
    }
    match form.get("client_secret") {
        Some(secret) if secret == config.client_secret => Ok(()),
        None if !secret_required => Ok(()),
        _ => Err(OAuthError::InvalidClient),
    }
}

fn password(config: &Config, form: &Form) -> Result<(), OAuthError> {
    check_client(config, form, true)?;
    if form.get("username") == Some(config.username.as_str())
        && form.get("password") == Some(config.password.as_str())
    {
        Ok(())
    } else {
        Err(OAuthError::InvalidGrant("authentication failure"))
    }
}

fn refresh_token(config: &Config, st: &State, form: &Form) -> Result<(), OAuthError> {
    check_client(config, form, false)?;
    match form.get("refresh_token") {
        Some(t) if st.refresh_tokens.contains(t) => Ok(()),
        _ => Err(OAuthError::InvalidGrant("expired access/refresh token")),
    }
}

fn client_credentials(config: &Config, form: &Form) -> Result<(), OAuthError> {
    check_client(config, form, true)
}

#[derive(Serialize)]
struct TokenReply<'a> {
    access_token: &'a str,
    instance_url: &'a str,
    id: String,
    token_type: &'static str,
    issued_at: String,
    signature: String,
}

fn reply<'a>(shared: &'a Shared, token: &'a str) -> TokenReply<'a> {
    let issued_at = epoch_ms(shared.wall()).to_string();
    let id = format!("{}/id/{ORG_ID}/{USER_ID}", shared.base_url);
    // Salesforce signs id + issued_at with the client secret (HMAC-SHA256); clients never check
    // it, so random bytes of the same length do.
    let mut sig = [0u8; 32];
    for chunk in sig.chunks_mut(8) {
        chunk.copy_from_slice(&ids::random_u64().to_le_bytes());
    }
    TokenReply {
        access_token: token,
        instance_url: &shared.base_url,
        id,
        token_type: "Bearer",
        issued_at,
        signature: ids::base64(&sig),
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// A successful reply as the endpoint would send it, without registering the token (for faults).
pub(crate) fn synthetic_reply(shared: &Shared) -> Value {
    serde_json::to_value(reply(shared, &ids::access_token())).unwrap_or(Value::Null)
}
