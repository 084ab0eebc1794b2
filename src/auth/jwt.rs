use super::token_endpoint::{TokenEndpoint, endpoint_setters, sandbox_setter};
use super::{Authenticator, LoginUrl, Secret, Token};
use crate::error::{Error, ErrorKind, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an assertion is valid unless [`JwtBearerAuthenticator::assertion_lifetime`] says
/// otherwise. Salesforce wants `exp` within a few minutes of its clock.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(120);

/// The OAuth 2.0 JWT bearer flow (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
/// cargo feature `jwt`): log in as `username` with an RS256 assertion signed by the private key
/// whose certificate is uploaded to the connected app. No password or consumer secret is sent.
///
/// Each login signs a fresh assertion with `iss` = consumer key, `sub` = username, `aud` = the
/// login URL (override with [`audience`](Self::audience)) and `exp` two minutes ahead. The user
/// must be pre-authorized for the connected app, else Salesforce answers `invalid_grant` /
/// `user hasn't approved this consumer`.
///
/// Signing is RS256 (RSASSA-PKCS1-v1_5 with SHA-256) by ring, the crypto backend rustls uses
/// here; the PEM is read by rustls' PEM parser. The key is parsed and checked when the
/// authenticator is built; `Debug` never shows it.
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// use sfstream::{Client, auth::JwtBearerAuthenticator};
/// let auth = JwtBearerAuthenticator::from_key_file("3MVG9...", "ada@example.com", "server.key")?;
/// let client = Client::builder(auth).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub struct JwtBearerAuthenticator {
    client_id: String,
    username: String,
    key: Arc<RsaKeyPair>,
    audience: Option<String>,
    lifetime: Duration,
    endpoint: TokenEndpoint,
}

impl fmt::Debug for JwtBearerAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBearerAuthenticator")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("private_key", &Secret::new(""))
            .field("audience", &self.audience_value())
            .field("assertion_lifetime", &self.lifetime)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

fn key_error() -> Error {
    // Deliberately says nothing about the key's content.
    Error::new(
        ErrorKind::Client,
        "the private key is not a usable RSA private key (expected PEM: PKCS#1 \
         `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`)",
    )
}

impl JwtBearerAuthenticator {
    /// Log in as `username` through the connected app `consumer_key`, signing with the RSA
    /// private key `private_key_pem` (PKCS#1 or PKCS#8 PEM). Fails with [`ErrorKind::Client`]
    /// if the key cannot sign.
    ///
    /// ```no_run
    /// # fn f(pem: String) -> sfstream::Result<()> {
    /// let auth = sfstream::auth::JwtBearerAuthenticator::new("3MVG9...", "ada@example.com", pem)?;
    /// # Ok(()) }
    /// ```
    pub fn new(
        consumer_key: impl Into<String>,
        username: impl Into<String>,
        private_key_pem: impl AsRef<[u8]>,
    ) -> Result<Self> {
        let key = rsa_key(private_key_pem.as_ref()).ok_or_else(key_error)?;
        let auth = JwtBearerAuthenticator {
            client_id: consumer_key.into(),
            username: username.into(),
            key: Arc::new(key),
            audience: None,
            lifetime: DEFAULT_LIFETIME,
            endpoint: TokenEndpoint::new(LoginUrl::Production),
        };
        // Sign once now, so a key that cannot sign fails here and not at the first login.
        auth.assertion()?;
        Ok(auth)
    }

    /// As [`new`](Self::new), reading the PEM from `path` (e.g. the `server.key` made for the
    /// connected app's certificate).
    ///
    /// ```no_run
    /// # fn f() -> sfstream::Result<()> {
    /// let auth = sfstream::auth::JwtBearerAuthenticator::from_key_file("3MVG9...", "ada@example.com", "server.key")?;
    /// # Ok(()) }
    /// ```
    pub fn from_key_file(
        consumer_key: impl Into<String>,
        username: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::Client,
                format!("cannot read the private key file {}", path.display()),
            )
            .with_source(e)
        })?;
        Self::new(consumer_key, username, pem)
    }

    /// The `aud` claim (default: the login URL, e.g. `https://login.salesforce.com`, or
    /// `https://test.salesforce.com` after [`sandbox`](Self::sandbox)). Salesforce may expect
    /// `https://login.salesforce.com` even when you log in at a My Domain URL.
    ///
    /// ```no_run
    /// # fn f(auth: sfstream::auth::JwtBearerAuthenticator) {
    /// let auth = auth.audience("https://login.salesforce.com");
    /// # }
    /// ```
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How far ahead `exp` is set (default 2 minutes; Salesforce refuses assertions valid for
    /// longer than a few minutes).
    ///
    /// ```no_run
    /// # fn f(auth: sfstream::auth::JwtBearerAuthenticator) {
    /// let auth = auth.assertion_lifetime(std::time::Duration::from_secs(60));
    /// # }
    /// ```
    #[must_use]
    pub fn assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The connected app's consumer key (OAuth client id), the assertion's `iss`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The Salesforce username, the assertion's `sub`.
    pub fn username(&self) -> &str {
        &self.username
    }

    fn audience_value(&self) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| self.endpoint.login.to_string())
    }

    /// A freshly signed assertion.
    fn assertion(&self) -> Result<Secret> {
        let exp = SystemTime::now()
            .checked_add(self.lifetime)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let audience = self.audience_value();
        let claims = Claims {
            iss: &self.client_id,
            sub: &self.username,
            aud: &audience,
            exp,
        };
        sign(&self.key, &claims)
            .map(Secret::new)
            .ok_or_else(key_error)
    }
}

/// An RSA key pair from a PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`) PEM.
fn rsa_key(pem: &[u8]) -> Option<RsaKeyPair> {
    match PrivateKeyDer::from_pem_slice(pem).ok()? {
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()).ok(),
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).ok(),
        _ => None,
    }
}

/// A compact JWS (RFC 7515): `base64url(header).base64url(claims).base64url(RS256 signature)`.
fn sign(key: &RsaKeyPair, claims: &Claims<'_>) -> Option<String> {
    let claims = serde_json::to_vec(claims).ok()?;
    let mut jws = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        jws.as_bytes(),
        &mut signature,
    )
    .ok()?;
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
    Some(jws)
}

sandbox_setter!(
    JwtBearerAuthenticator,
    "JwtBearerAuthenticator::from_key_file(\"3MVG9...\", \"ada@example.com\", \"server.key\")?"
);
endpoint_setters!(
    JwtBearerAuthenticator,
    "JwtBearerAuthenticator::from_key_file(\"3MVG9...\", \"ada@example.com\", \"server.key\")?"
);

impl Authenticator for JwtBearerAuthenticator {
    fn inherit_http_settings(&self, settings: &crate::transport::HttpSettings) {
        self.endpoint.inherit(settings);
    }

    fn authenticate(&self) -> BoxFuture<'_, Result<Token>> {
        Box::pin(async move {
            let assertion = self.assertion()?;
            let reply = self
                .endpoint
                .request(
                    "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    &[("assertion", assertion.expose())],
                )
                .await?;
            Ok(reply.token)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const KEY: &str = include_str!("../../tests/data/test-only-jwt-key.pem");
    const KEY_PKCS1: &str = include_str!("../../tests/data/test-only-jwt-key.pkcs1.pem");

    /// Decoded parts of a compact JWS.
    fn parts(jws: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, &str) {
        let (input, signature) = jws.rsplit_once('.').unwrap();
        let (header, claims) = input.split_once('.').unwrap();
        let json = |part: &str| {
            serde_json::from_slice::<serde_json::Value>(&URL_SAFE_NO_PAD.decode(part).unwrap())
                .unwrap()
        };
        (
            json(header),
            json(claims),
            URL_SAFE_NO_PAD.decode(signature).unwrap(),
            input,
        )
    }

    #[test]
    fn assertions_are_rs256_jws_that_verify_with_the_public_key() {
        for pem in [KEY, KEY_PKCS1] {
            let auth = JwtBearerAuthenticator::new("3MVG9-key", "ada@example.com", pem)
                .unwrap()
                .audience("https://login.salesforce.com");
            let jws = auth.assertion().unwrap();
            let (header, claims, signature, input) = parts(jws.expose());
            assert_eq!(header["alg"], "RS256");
            assert_eq!(claims["iss"], "3MVG9-key");
            assert_eq!(claims["sub"], "ada@example.com");
            assert_eq!(claims["aud"], "https://login.salesforce.com");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let exp = claims["exp"].as_u64().unwrap();
            assert!(exp > now && exp <= now + 121, "{exp} vs {now}");
            let public = auth.key.public().as_ref().to_vec();
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(input.as_bytes(), &signature)
                .expect("the signature verifies");
            let mut tampered = input.to_owned();
            tampered.push('x');
            assert!(
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                    .verify(tampered.as_bytes(), &signature)
                    .is_err()
            );
        }
    }
}
