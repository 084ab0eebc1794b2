//! The real transport: hyper 1 over rustls (ring), one cookie jar per client.

use super::cookies::CookieJar;
use super::{Request, Response, Transport};
use crate::bayeux::{batch_excerpt, parse_batch};
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Default cap on a response body. Salesforce batches can exceed 1 MiB (CometD's 1 MiB default
/// breaks on them, EMP-Connector #60); Salesforce itself sizes its buffer at 10 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("sfstream/", env!("CARGO_PKG_VERSION")));

pub(crate) use crate::url_policy::check_scheme;

/// The hyper client shared by the CometD transport and the OAuth flows: one connection pool,
/// rustls with the ring provider, a response-size cap.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    max_response_bytes: usize,
}

/// A raw HTTP answer: status, headers and the whole body.
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl HttpClient {
    pub(crate) fn new(
        tls: Option<rustls::ClientConfig>,
        max_response_bytes: usize,
    ) -> Result<Self> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match tls {
            Some(config) => builder.with_tls_config(config),
            None => builder
                .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Client,
                        "cannot set up TLS with the ring provider",
                    )
                    .with_source(e)
                })?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(30)));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient {
            client,
            max_response_bytes,
        })
    }

    /// POST `body` and read the whole answer (up to the cap) within `timeout`.
    pub(crate) async fn post(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<RawResponse> {
        self.send(http::Method::POST, url, headers, body, timeout)
            .await
    }

    /// Send a request with any method (the REST publisher also GETs) and read the whole answer
    /// (up to the cap) within `timeout`.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<RawResponse> {
        check_scheme(url)?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(body))
            .map_err(|e| {
                Error::new(ErrorKind::Client, format!("invalid URL {url}")).with_source(e)
            })?;
        *request.headers_mut() = headers;
        let work =
            async {
                let response = self.client.request(request).await.map_err(|e| {
                    let connect = e.is_connect();
                    // The message names every cause (what logs and `{e}` show), so the
                    // causes are not chained again as `source()`: a chain walk names each once.
                    let error = Error::new(
                        ErrorKind::Transport,
                        format!("request to {url} failed: {}", chain(&e)),
                    );
                    if connect {
                        error.connect_failure()
                    } else {
                        error
                    }
                })?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "response from {url} exceeds the {} byte cap (max_response_bytes)",
                                self.max_response_bytes
                            ),
                        )
                    } else {
                        Error::new(
                            ErrorKind::Transport,
                            format!("reading the response from {url} failed: {e}"),
                        )
                    }
                })?
                .to_bytes();
                Ok(RawResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            Error::new(
                ErrorKind::TransportTimeout,
                format!("no response from {url} within {timeout:?}"),
            )
        })?
    }
}

/// hyper's Display stops at the outermost error; the cause (connection refused...) is below.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The CometD transport over HTTP: POSTs a JSON array to the endpoint and parses the array that
/// comes back.
///
/// ```
/// # async fn f() -> sfstream::Result<()> {
/// use sfstream::transport::HttpTransport;
/// let transport = HttpTransport::builder()
///     .max_response_bytes(64 * 1024 * 1024)
///     .build()?;
/// # Ok(()) }
/// ```
pub struct HttpTransport {
    http: HttpClient,
    cookies: CookieJar,
    endpoint: Option<Url>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field(
                "endpoint",
                &self.endpoint.as_ref().map(crate::url_policy::shown),
            )
            .field("max_response_bytes", &self.http.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Options of an [`HttpTransport`].
#[derive(Default)]
#[must_use]
pub struct HttpTransportBuilder {
    tls: Option<rustls::ClientConfig>,
    max_response_bytes: Option<usize>,
    endpoint: Option<Url>,
}

impl fmt::Debug for HttpTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransportBuilder")
            .field("custom_tls", &self.tls.is_some())
            .field("max_response_bytes", &self.max_response_bytes)
            .field(
                "endpoint",
                &self.endpoint.as_ref().map(crate::url_policy::shown),
            )
            .finish()
    }
}

impl HttpTransportBuilder {
    /// Use your own rustls configuration (extra root certificates, a corporate proxy CA). The
    /// default trusts the webpki roots with the ring provider.
    ///
    /// ```no_run
    /// # fn f(config: rustls::ClientConfig) -> sfstream::Result<()> {
    /// let t = sfstream::transport::HttpTransport::builder().tls_config(config).build()?;
    /// # Ok(()) }
    /// ```
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Largest response body accepted (default 32 MiB); larger ones fail with
    /// [`ErrorKind::Protocol`].
    ///
    /// ```no_run
    /// let t = sfstream::transport::HttpTransport::builder().max_response_bytes(64 << 20);
    /// ```
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = Some(bytes);
        self
    }

    /// The endpoint used when a request names none (normally the auth layer sets it per request).
    ///
    /// ```no_run
    /// let t = sfstream::transport::HttpTransport::builder()
    ///     .endpoint("http://127.0.0.1:8080/cometd/62.0".parse().unwrap());
    /// ```
    pub fn endpoint(mut self, url: Url) -> Self {
        self.endpoint = Some(url);
        self
    }

    /// Build the transport.
    pub fn build(self) -> Result<HttpTransport> {
        if let Some(url) = &self.endpoint {
            check_scheme(url)?;
        }
        Ok(HttpTransport {
            http: HttpClient::new(
                self.tls,
                self.max_response_bytes
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            )?,
            cookies: CookieJar::default(),
            endpoint: self.endpoint,
        })
    }
}

impl HttpTransport {
    /// Options for a transport.
    pub fn builder() -> HttpTransportBuilder {
        HttpTransportBuilder::default()
    }

    /// The hyper client (pool, TLS, proxy) behind this transport, for the REST publisher.
    pub(crate) fn http_client(&self) -> HttpClient {
        self.http.clone()
    }

    async fn round_trip(&self, request: Request) -> Result<Response> {
        let url = request
            .url
            .or_else(|| self.endpoint.clone())
            .ok_or_else(|| Error::new(ErrorKind::Client, "no CometD endpoint configured"))?;
        let body = serde_json::to_vec(&request.messages).map_err(|e| {
            Error::new(ErrorKind::Client, "cannot serialize the request").with_source(e)
        })?;
        let mut headers = request.headers;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, USER_AGENT_VALUE.clone());
        if let Some(cookie) = self.cookies.header_for(&url) {
            headers.insert(COOKIE, cookie);
        }
        let raw = self
            .http
            .post(&url, headers, Bytes::from(body), request.timeout)
            .await?;
        self.cookies.store_from(&url, &raw.headers);
        match raw.status {
            StatusCode::OK => parse_batch(raw.body).map(Response::from),
            StatusCode::NO_CONTENT => Ok(Response::default()),
            status => Err(Error::new(
                ErrorKind::Transport,
                format!(
                    "HTTP {} from {url}: {}",
                    status.as_u16(),
                    batch_excerpt(&raw.body)
                ),
            )
            .with_status(status.as_u16())),
        }
    }
}

impl Transport for HttpTransport {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        Box::pin(self.round_trip(request))
    }

    fn reset(&self) {
        self.cookies.clear();
    }
}
