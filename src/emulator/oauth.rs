//! The OAuth token endpoint, `POST /services/oauth2/token`, with Salesforce's reply and error
//! shapes. Each grant is one function and one arm of [`grant`]: password, refresh token (with
//! optional rotation), client credentials, and the JWT bearer grant (feature `jwt`).

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
    /// The `client_id` field (for the JWT bearer grant: the assertion's `iss`).
    pub client_id: Option<String>,
    /// The `username` field of the password flow (for the JWT bearer grant: the assertion's
    /// `sub`).
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
        Ok(f) if f.get("grant_type") == Some(JWT_BEARER) => {
            let (iss, sub) = jwt_parties(f);
            (JWT_BEARER.to_owned(), iss, sub)
        }
        Ok(f) => (
            f.get("grant_type").unwrap_or_default().to_owned(),
            f.get("client_id").map(str::to_owned),
            f.get("username").map(str::to_owned),
        ),
        Err(_) => (String::new(), None, None),
    };
    let result = form.and_then(|f| {
        let mut st = shared.lock();
        let refresh_token = grant(shared, &mut st, &f)?;
        let token = ids::access_token();
        st.access_tokens.insert(token.clone());
        Ok((token, refresh_token))
    });
    shared.record_token_request(TokenRequest {
        grant_type,
        client_id,
        username,
        outcome: result.as_ref().map(|_| ()).map_err(|e| e.code().to_owned()),
    });
    match result {
        Ok((token, refresh_token)) => {
            let mut reply = reply(shared, &token);
            reply.refresh_token = refresh_token.as_deref();
            (StatusCode::OK, to_bytes(&reply))
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            to_bytes(&json!({"error": e.code(), "error_description": e.description()})),
        ),
    }
}

/// The JWT bearer grant type.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Check the grant's credentials; returns a new refresh token when one is issued. Adding a grant
/// is one arm here and one function below.
fn grant(shared: &Shared, st: &mut State, form: &Form) -> Result<Option<String>, OAuthError> {
    let config = &shared.config;
    match form.get("grant_type").unwrap_or_default() {
        "password" => password(config, form).map(|()| None),
        "refresh_token" => refresh_token(config, st, form),
        "client_credentials" => client_credentials(config, form).map(|()| None),
        #[cfg(feature = "jwt")]
        JWT_BEARER => jwt::bearer(shared, form).map(|()| None),
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

fn refresh_token(
    config: &Config,
    st: &mut State,
    form: &Form,
) -> Result<Option<String>, OAuthError> {
    check_client(config, form, false)?;
    match form.get("refresh_token") {
        Some(t) if st.refresh_tokens.contains(t) => {
            if !config.rotate_refresh_tokens {
                return Ok(None);
            }
            // Rotation: the old refresh token is spent, the reply carries its successor.
            st.refresh_tokens.remove(t);
            let next = ids::refresh_token();
            st.refresh_tokens.insert(next.clone());
            Ok(Some(next))
        }
        _ => Err(OAuthError::InvalidGrant("expired access/refresh token")),
    }
}

fn client_credentials(config: &Config, form: &Form) -> Result<(), OAuthError> {
    check_client(config, form, true)
}

/// `iss` and `sub` of a JWT bearer assertion, unverified, for the request log.
#[cfg(feature = "jwt")]
fn jwt_parties(form: &Form) -> (Option<String>, Option<String>) {
    jwt::parties(form)
}

#[cfg(not(feature = "jwt"))]
fn jwt_parties(_form: &Form) -> (Option<String>, Option<String>) {
    (None, None)
}

#[cfg(feature = "jwt")]
mod jwt {
    use super::{Form, OAuthError};
    use crate::emulator::state::Shared;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde::Deserialize;
    use serde_json::Value;
    use std::time::UNIX_EPOCH;

    /// How far ahead `exp` may be. Salesforce documents three minutes; a little slack for clocks.
    const MAX_AHEAD_SECS: u64 = 5 * 60;

    #[derive(Deserialize)]
    struct Claims {
        iss: Option<String>,
        sub: Option<String>,
        aud: Option<Value>,
        exp: Option<Value>,
    }

    fn validation(verify: bool) -> Validation {
        let mut v = Validation::new(Algorithm::RS256);
        // Checked by hand below, with Salesforce's error for each.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        if !verify {
            v.insecure_disable_signature_validation();
        }
        v
    }

    pub(super) fn parties(form: &Form) -> (Option<String>, Option<String>) {
        let key = DecodingKey::from_secret(&[]);
        form.get("assertion")
            .and_then(|a| jsonwebtoken::decode::<Claims>(a, &key, &validation(false)).ok())
            .map_or((None, None), |d| (d.claims.iss, d.claims.sub))
    }

    /// Parse the configured public key (PEM). `None` when unset.
    pub(crate) fn public_key(pem: Option<&str>) -> Result<Option<DecodingKey>, String> {
        pem.map(|pem| {
            DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| format!("the JWT public key is not an RSA public key in PEM: {e}"))
        })
        .transpose()
    }

    /// The RS256 signature against the configured public key, then `iss` (the consumer key),
    /// `aud` (this server's URL, or the production or sandbox login URL), `exp` (in the future,
    /// at most a few minutes ahead) and `sub` (the configured user).
    pub(super) fn bearer(shared: &Shared, form: &Form) -> Result<(), OAuthError> {
        let config = &shared.config;
        let assertion = form
            .get("assertion")
            .ok_or(OAuthError::InvalidRequest("assertion is missing"))?;
        let key = public_key(config.jwt_public_key.as_deref())
            .ok()
            .flatten()
            .ok_or(OAuthError::InvalidGrant("invalid assertion"))?;
        let claims = jsonwebtoken::decode::<Claims>(assertion, &key, &validation(true))
            .map_err(|_| OAuthError::InvalidGrant("invalid assertion"))?
            .claims;
        if claims.iss.as_deref() != Some(config.client_id.as_str()) {
            return Err(OAuthError::InvalidClientId);
        }
        let audiences = [
            shared.base_url.as_str(),
            crate::auth::LoginUrl::PRODUCTION_URL,
            crate::auth::LoginUrl::SANDBOX_URL,
        ];
        let accepted = |aud: &Value| {
            aud.as_str()
                .is_some_and(|a| audiences.contains(&a.trim_end_matches('/')))
        };
        let aud_ok = match &claims.aud {
            Some(Value::Array(all)) => all.iter().any(accepted),
            Some(aud) => accepted(aud),
            None => false,
        };
        if !aud_ok {
            return Err(OAuthError::InvalidGrant("audience is invalid"));
        }
        let now = shared
            .wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = claims
            .exp
            .as_ref()
            .and_then(|e| e.as_u64().or_else(|| e.as_f64().map(|f| f as u64)))
            .ok_or(OAuthError::InvalidGrant("invalid assertion"))?;
        if exp <= now {
            return Err(OAuthError::InvalidGrant("expired authorization code"));
        }
        if exp > now + MAX_AHEAD_SECS {
            return Err(OAuthError::InvalidGrant("invalid assertion"));
        }
        if claims.sub.as_deref() != Some(config.username.as_str()) {
            return Err(OAuthError::InvalidGrant(
                "user hasn't approved this consumer",
            ));
        }
        Ok(())
    }
}

#[cfg(feature = "jwt")]
pub(crate) use jwt::public_key as jwt_public_key;

#[derive(Serialize)]
struct TokenReply<'a> {
    access_token: &'a str,
    instance_url: &'a str,
    id: String,
    token_type: &'static str,
    issued_at: String,
    signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
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
        refresh_token: None,
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// A successful reply as the endpoint would send it, without registering the token (for faults).
pub(crate) fn synthetic_reply(shared: &Shared) -> Value {
    serde_json::to_value(reply(shared, &ids::access_token())).unwrap_or(Value::Null)
}
