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
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    use serde::Deserialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;
    use std::time::UNIX_EPOCH;

    /// How far ahead `exp` may be. Salesforce documents three minutes; a little slack for clocks.
    const MAX_AHEAD_SECS: u64 = 5 * 60;

    #[derive(Deserialize)]
    struct Header {
        alg: Option<String>,
    }

    #[derive(Deserialize)]
    struct Claims {
        iss: Option<String>,
        sub: Option<String>,
        aud: Option<Value>,
        exp: Option<Value>,
    }

    /// A compact JWS split into its signing input, decoded header and claims, and signature.
    struct Jws<'a> {
        input: &'a str,
        header: Header,
        claims: Claims,
        signature: Vec<u8>,
    }

    fn json<T: DeserializeOwned>(part: &str) -> Option<T> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    }

    fn split(assertion: &str) -> Option<Jws<'_>> {
        let (input, signature) = assertion.rsplit_once('.')?;
        let (header, claims) = input.split_once('.')?;
        Some(Jws {
            input,
            header: json(header)?,
            claims: json(claims)?,
            signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
        })
    }

    pub(super) fn parties(form: &Form) -> (Option<String>, Option<String>) {
        form.get("assertion")
            .and_then(split)
            .map_or((None, None), |jws| (jws.claims.iss, jws.claims.sub))
    }

    /// The PKCS#1 `RSAPublicKey` DER that ring verifies with, from a PEM `BEGIN PUBLIC KEY`
    /// (SubjectPublicKeyInfo) or `BEGIN RSA PUBLIC KEY` (PKCS#1). `None` when unset.
    pub(crate) fn public_key(pem: Option<&str>) -> Result<Option<Vec<u8>>, String> {
        let Some(pem) = pem else { return Ok(None) };
        let der = if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
            rsa_public_key(spki.as_ref())
        } else {
            pkcs1_pem(pem)
        };
        der.map(Some)
            .ok_or_else(|| "the JWT public key is not an RSA public key in PEM".to_owned())
    }

    /// The body of a `BEGIN RSA PUBLIC KEY` PEM (rustls' PEM parser knows no such section).
    fn pkcs1_pem(pem: &str) -> Option<Vec<u8>> {
        let (_, rest) = pem.split_once("-----BEGIN RSA PUBLIC KEY-----")?;
        let (body, _) = rest.split_once("-----END RSA PUBLIC KEY-----")?;
        let body: String = body.split_whitespace().collect();
        STANDARD.decode(body).ok().filter(|der| !der.is_empty())
    }

    /// One DER element with `tag`: its content and what follows.
    fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if t != tag {
            return None;
        }
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    /// The `RSAPublicKey` inside a SubjectPublicKeyInfo whose algorithm is rsaEncryption.
    fn rsa_public_key(spki: &[u8]) -> Option<Vec<u8>> {
        const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let (info, _) = der(spki, 0x30)?;
        let (algorithm, rest) = der(info, 0x30)?;
        let (oid, _) = der(algorithm, 0x06)?;
        if oid != RSA_ENCRYPTION {
            return None;
        }
        let (bits, _) = der(rest, 0x03)?;
        let (&unused, key) = bits.split_first()?;
        (unused == 0 && !key.is_empty()).then(|| key.to_vec())
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
        let jws = split(assertion).ok_or(OAuthError::InvalidGrant("invalid assertion"))?;
        // Only RS256: never `none`, never an HMAC keyed with the public key.
        if jws.header.alg.as_deref() != Some("RS256") {
            return Err(OAuthError::InvalidGrant("invalid assertion"));
        }
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key)
            .verify(jws.input.as_bytes(), &jws.signature)
            .map_err(|_| OAuthError::InvalidGrant("invalid assertion"))?;
        let claims = jws.claims;
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

    #[cfg(test)]
    mod tests {
        use super::*;

        const PUBLIC_KEY: &str = include_str!("../../tests/data/test-only-jwt-key.pub.pem");

        #[test]
        fn public_keys_in_both_pem_forms_and_nothing_else() {
            let from_spki = public_key(Some(PUBLIC_KEY)).unwrap().unwrap();
            let pkcs1 = format!(
                "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
                STANDARD.encode(&from_spki)
            );
            assert_eq!(public_key(Some(&pkcs1)).unwrap().unwrap(), from_spki);
            assert_eq!(public_key(None), Ok(None));
            for bad in [
                "",
                "not a key",
                include_str!("../../tests/data/test-only-jwt-key.pem"),
            ] {
                assert!(public_key(Some(bad)).is_err(), "{bad}");
            }
        }

        #[test]
        fn unsigned_or_malformed_assertions_do_not_split() {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
            let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"a","sub":"b"}"#);
            let unsigned = format!("{header}.{claims}.");
            let jws = split(&unsigned).unwrap();
            assert_eq!(jws.header.alg.as_deref(), Some("none"));
            assert!(jws.signature.is_empty());
            for bad in ["", "a.b", "!.!.!", "a.b.c.d"] {
                assert!(split(bad).is_none(), "{bad}");
            }
        }
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
