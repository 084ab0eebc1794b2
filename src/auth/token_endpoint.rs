//! The one place that talks to `<login url>/services/oauth2/token`: POST a form, turn the reply
//! into a [`Token`] or an [`Error`]. Every flow goes through [`TokenEndpoint::request`].

use super::{LoginUrl, Secret, Token};
use crate::error::{Error, ErrorKind, OAuthError, Result};
use crate::transport::{HttpClient, HttpSettings, Proxy};
use crate::url_policy::{check_instance_url, shown};
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// Default timeout of a token request.
pub(crate) const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// A token reply is a few hundred bytes; anything near this is not one.
const MAX_TOKEN_REPLY_BYTES: usize = 1024 * 1024;

/// A successful token reply.
pub(crate) struct TokenReply {
    pub(crate) token: Token,
    /// A (rotated) refresh token, when the server sent one.
    pub(crate) refresh_token: Option<Secret>,
}

/// The token endpoint of one login URL, with its own HTTP client (built on first use, again
/// after the settings change).
pub(crate) struct TokenEndpoint {
    pub(crate) login: LoginUrl,
    pub(crate) timeout: Duration,
    /// Set on the authenticator itself: wins over the client's.
    own: HttpSettings,
    http: Mutex<Http>,
}

/// The client's settings and the HTTP client built from them.
#[derive(Default)]
struct Http {
    inherited: HttpSettings,
    client: Option<HttpClient>,
}

impl Clone for TokenEndpoint {
    fn clone(&self) -> Self {
        let inherited = self.lock().inherited.clone();
        TokenEndpoint {
            login: self.login.clone(),
            timeout: self.timeout,
            own: self.own.clone(),
            http: Mutex::new(Http {
                inherited,
                client: None,
            }),
        }
    }
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("login_url", &self.login.to_string())
            .field("timeout", &self.timeout)
            .field("http", &self.own.or(&self.lock().inherited))
            .finish()
    }
}

impl TokenEndpoint {
    pub(crate) fn new(login: LoginUrl) -> Self {
        TokenEndpoint {
            login,
            timeout: DEFAULT_TOKEN_TIMEOUT,
            own: HttpSettings::default(),
            http: Mutex::new(Http::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Http> {
        // The guarded data stays consistent even if a holder panicked.
        self.http.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_tls(&mut self, config: rustls::ClientConfig) {
        self.own.tls = Some(Arc::new(config));
        self.lock().client = None;
    }

    pub(crate) fn set_proxy(&mut self, proxy: Proxy) {
        self.own.proxy = Some(proxy);
        self.lock().client = None;
    }

    /// The client's settings, for what was not set here.
    pub(crate) fn inherit(&self, settings: &HttpSettings) {
        let mut http = self.lock();
        http.inherited = settings.clone();
        http.client = None;
    }

    fn http(&self) -> Result<HttpClient> {
        let mut http = self.lock();
        if let Some(client) = &http.client {
            return Ok(client.clone());
        }
        let client = HttpClient::new(&self.own.or(&http.inherited), MAX_TOKEN_REPLY_BYTES)?;
        http.client = Some(client.clone());
        Ok(client)
    }

    /// POST `grant_type` and `fields` as a form and read the reply. Field values never reach a
    /// log line or an error.
    pub(crate) async fn request(
        &self,
        grant_type: &str,
        fields: &[(&str, &str)],
    ) -> Result<TokenReply> {
        let url = self.login.token_url();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", grant_type)
            .extend_pairs(fields)
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("sfstream/", env!("CARGO_PKG_VERSION"))),
        );
        tracing::debug!(grant_type, url = %shown(&url), "requesting an access token");
        let raw = self
            .http()?
            .post(&url, headers, Bytes::from(body), self.timeout)
            .await
            .inspect_err(|e| tracing::debug!(grant_type, error = %e, "token request failed"))?;
        let content_type = raw
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reply = parse_reply(&url, raw.status, content_type.as_deref(), &raw.body);
        match &reply {
            Ok(r) => tracing::info!(
                grant_type,
                instance_url = %shown(&r.token.instance_url),
                "logged in"
            ),
            Err(e) => tracing::info!(grant_type, error = %e, "login refused"),
        }
        reply
    }
}

fn auth_error(url: &Url, status: StatusCode, what: String) -> Error {
    Error::new(
        ErrorKind::Authentication,
        format!("token request to {} {what}", shown(url)),
    )
    .with_status(status.as_u16())
}

/// A short, secret-free description of a body that is not a JSON object.
fn describe_body(content_type: Option<&str>, body: &[u8]) -> String {
    let kind = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .filter(|ct| !ct.is_empty() && ct.len() <= 64)
        .unwrap_or("no content type");
    if body.is_empty() {
        format!("an empty body ({kind})")
    } else {
        format!(
            "a body that is not a JSON object ({kind}, {} bytes)",
            body.len()
        )
    }
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Turn a token endpoint reply into a token or an error. Never copies the body into an error:
/// only the OAuth `error`/`error_description` pair and field names.
pub(crate) fn parse_reply(
    url: &Url,
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenReply> {
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(auth_error(
                url,
                status,
                format!(
                    "answered HTTP {} with {}",
                    status.as_u16(),
                    describe_body(content_type, body)
                ),
            ));
        }
    };
    if let Some(code) = text(&map, "error") {
        let oauth = OAuthError::new(code, text(&map, "error_description").map(str::to_owned));
        return Err(auth_error(
            url,
            status,
            format!("was refused: {oauth} (HTTP {})", status.as_u16()),
        )
        .with_oauth(oauth));
    }
    if status != StatusCode::OK {
        return Err(auth_error(
            url,
            status,
            format!("answered HTTP {} without an OAuth error", status.as_u16()),
        ));
    }
    let (Some(access_token), Some(instance_url)) =
        (text(&map, "access_token"), text(&map, "instance_url"))
    else {
        return Err(auth_error(
            url,
            status,
            "answered without a string access_token and instance_url".to_owned(),
        ));
    };
    let instance_url = Url::parse(instance_url).map_err(|e| {
        auth_error(
            url,
            status,
            format!(
                "answered with an instance_url that is not a URL: {}",
                crate::bayeux::batch_excerpt(instance_url.as_bytes())
            ),
        )
        .with_source(e)
    })?;
    check_instance_url(&instance_url, url).map_err(|e| e.with_status(status.as_u16()))?;
    let mut token = Token::bearer(access_token, instance_url);
    if let Some(kind) = text(&map, "token_type") {
        kind.clone_into(&mut token.token_type);
    }
    token.id = text(&map, "id").map(str::to_owned);
    token.issued_at = match map.get("issued_at") {
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    Ok(TokenReply {
        token,
        refresh_token: text(&map, "refresh_token").map(Secret::new),
    })
}

/// Setters every flow shares: login URL, timeout, TLS, proxy. `$example` builds a value of `$ty`.
macro_rules! endpoint_setters {
    ($ty:ident, $example:literal) => {
        impl $ty {
            /// Log in at this URL: [`LoginUrl::Production`] (the default),
            /// [`LoginUrl::Sandbox`], or your My Domain URL (a [`url::Url`] converts).
            ///
            /// ```no_run
            /// # use sfstream::auth::*;
            /// # fn demo() -> sfstream::Result<()> {
            /// let url: url::Url = "https://acme.my.salesforce.com".parse().unwrap();
            #[doc = concat!("let auth = ", $example, ".login_url(url);")]
            /// # Ok(()) }
            /// ```
            #[must_use]
            pub fn login_url(mut self, url: impl Into<LoginUrl>) -> Self {
                self.endpoint.login = url.into();
                self
            }

            /// How long a token request may take (default 30 s); a slower one fails with
            /// [`ErrorKind::TransportTimeout`](crate::ErrorKind::TransportTimeout).
            ///
            /// ```no_run
            /// # use sfstream::auth::*;
            /// # fn demo() -> sfstream::Result<()> {
            #[doc = concat!("let auth = ", $example, ".timeout(std::time::Duration::from_secs(10));")]
            /// # Ok(()) }
            /// ```
            #[must_use]
            pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
                self.endpoint.timeout = timeout;
                self
            }

            /// TLS configuration for the token endpoint (extra root certificates, a proxy CA).
            /// Without it the authenticator uses the client's
            /// ([`ClientBuilder::tls_config`](crate::ClientBuilder::tls_config)), else the
            /// default: the webpki roots with the ring provider.
            ///
            /// ```no_run
            /// # use sfstream::auth::*;
            /// # fn demo(config: rustls::ClientConfig) -> sfstream::Result<()> {
            #[doc = concat!("let auth = ", $example, ".tls_config(config);")]
            /// # Ok(()) }
            /// ```
            #[must_use]
            pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
                self.endpoint.set_tls(config);
                self
            }

            /// Send token requests through this proxy (see
            /// [`Proxy`](crate::transport::Proxy)). Without it the authenticator uses the
            /// client's ([`ClientBuilder::proxy`](crate::ClientBuilder::proxy)).
            ///
            /// ```no_run
            /// # use sfstream::auth::*;
            /// # fn demo() -> sfstream::Result<()> {
            /// let proxy = sfstream::transport::Proxy::all("http://proxy.corp.example:3128")?;
            #[doc = concat!("let auth = ", $example, ".proxy(proxy);")]
            /// # Ok(()) }
            /// ```
            #[must_use]
            pub fn proxy(mut self, proxy: crate::transport::Proxy) -> Self {
                self.endpoint.set_proxy(proxy);
                self
            }
        }
    };
}

/// `.sandbox()` for the flows that work at the shared login hosts.
macro_rules! sandbox_setter {
    ($ty:ident, $example:literal) => {
        impl $ty {
            /// Log in at `https://test.salesforce.com`, for a sandbox org (aiosfstream's
            /// `sandbox=True`).
            ///
            /// ```no_run
            /// # use sfstream::auth::*;
            /// # fn demo() -> sfstream::Result<()> {
            #[doc = concat!("let auth = ", $example, ".sandbox();")]
            /// # Ok(()) }
            /// ```
            #[must_use]
            pub fn sandbox(mut self) -> Self {
                self.endpoint.login = LoginUrl::Sandbox;
                self
            }
        }
    };
}

pub(crate) use {endpoint_setters, sandbox_setter};

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        LoginUrl::Production.token_url()
    }

    #[test]
    fn salesforce_reply_becomes_a_token() {
        let body = br#"{"access_token":"00Dxx!AR8AQ.secret","instance_url":"https://yourInstance.my.salesforce.com","id":"https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001X8UzAAK","token_type":"Bearer","issued_at":"1795849201000","signature":"0CmxinZir53Yex7nE0TD+zMpvIWYGb/bdJh6XfOH6EQ="}"#;
        let r = parse_reply(&url(), StatusCode::OK, Some("application/json"), body).unwrap();
        assert_eq!(r.token.access_token.expose(), "00Dxx!AR8AQ.secret");
        assert_eq!(
            r.token.instance_url.as_str(),
            "https://yourinstance.my.salesforce.com/"
        );
        assert_eq!(r.token.token_type, "Bearer");
        assert_eq!(r.token.issued_at, Some(1_795_849_201_000));
        assert!(r.token.id.unwrap().ends_with("/005xx000001X8UzAAK"));
        assert!(r.refresh_token.is_none());
        let rotated = br#"{"access_token":"a","instance_url":"https://x.my.salesforce.com","refresh_token":"5Aep-new","issued_at":17}"#;
        let r = parse_reply(&url(), StatusCode::OK, None, rotated).unwrap();
        assert_eq!(r.refresh_token.unwrap().expose(), "5Aep-new");
        assert_eq!(r.token.issued_at, Some(17));
    }

    #[test]
    fn oauth_errors_keep_the_pair_and_the_status() {
        let body = br#"{"error":"invalid_grant","error_description":"authentication failure"}"#;
        let e = parse_reply(&url(), StatusCode::BAD_REQUEST, None, body)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert_eq!(e.status(), Some(400));
        let oauth = e.oauth_error().unwrap();
        assert_eq!(oauth.error, "invalid_grant");
        assert_eq!(
            oauth.error_description.as_deref(),
            Some("authentication failure")
        );
        assert!(
            e.to_string()
                .contains("invalid_grant: authentication failure"),
            "{e}"
        );
    }

    #[test]
    fn an_https_login_cannot_send_the_token_to_plain_http_loopback() {
        let body = br#"{"access_token":"00Dxx!tok","instance_url":"http://127.0.0.1:8080"}"#;
        let e = parse_reply(&url(), StatusCode::OK, None, body)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(!format!("{e} {e:?}").contains("00Dxx!tok"));
        // The emulator: logged in on loopback, so its loopback instance is fine.
        let emulator: Url = "http://127.0.0.1:4000/services/oauth2/token"
            .parse()
            .unwrap();
        let r = parse_reply(&emulator, StatusCode::OK, None, body).unwrap();
        assert_eq!(r.token.instance_url.as_str(), "http://127.0.0.1:8080/");
        for bad in [
            r#"{"access_token":"t","instance_url":"http://acme.my.salesforce.com"}"#,
            r#"{"access_token":"t","instance_url":"http://localhost:8080"}"#,
            r#"{"access_token":"t","instance_url":"https://me:pw-secret@acme.my.salesforce.com"}"#,
            r#"{"access_token":"t","instance_url":"data:text/plain,x"}"#,
        ] {
            let e = parse_reply(&url(), StatusCode::OK, None, bad.as_bytes())
                .err()
                .unwrap();
            assert_eq!(e.kind(), ErrorKind::Authentication, "{bad}");
            assert!(!format!("{e} {e:?}").contains("pw-secret"), "{e:?}");
        }
    }

    #[test]
    fn server_text_in_errors_has_no_control_characters() {
        let body = r#"{"error":"invalid_grant\u001b[2J","error_description":"authentication\u001b]0;pwned\u0007 failure\r\nFAKE LOG LINE\u009b31m"}"#;
        let e = parse_reply(&url(), StatusCode::BAD_REQUEST, None, body.as_bytes())
            .err()
            .unwrap();
        let oauth = e.oauth_error().unwrap();
        for text in [
            e.to_string(),
            e.message().to_owned(),
            oauth.to_string(),
            oauth.error.clone(),
            oauth.error_description.clone().unwrap(),
        ] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        assert!(e.to_string().contains("FAKE LOG LINE"), "{e}");
        let bad = r#"{"access_token":"t","instance_url":"\u001b[31mnot a url"}"#;
        let e = parse_reply(&url(), StatusCode::OK, None, bad.as_bytes())
            .err()
            .unwrap();
        assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
    }

    #[test]
    fn bodies_that_are_not_replies_never_leak_into_the_error() {
        let cases: [(StatusCode, Option<&str>, &[u8]); 5] = [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("text/html; charset=UTF-8"),
                b"<html>maintenance secret-page</html>",
            ),
            (StatusCode::OK, Some("text/plain"), b"secret-page"),
            (StatusCode::BAD_GATEWAY, None, b""),
            (
                StatusCode::OK,
                Some("application/json"),
                br#"{"access_token":{"v":"secret-page"},"instance_url":"x"}"#,
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("application/json"),
                br#"{"message":"secret-page"}"#,
            ),
        ];
        for (status, ct, body) in cases {
            let e = parse_reply(&url(), status, ct, body).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::Authentication);
            assert_eq!(e.status(), Some(status.as_u16()));
            assert!(e.oauth_error().is_none());
            let text = format!("{e} {e:?}");
            assert!(!text.contains("secret-page"), "{text}");
            assert!(text.contains(&status.as_u16().to_string()), "{text}");
        }
    }
}
