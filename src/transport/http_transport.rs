//! The real transport: hyper 1 over rustls (ring), one cookie jar per client.

use super::connector::ProxyConnector;
use super::cookies::CookieJar;
use super::proxy::Proxy;
use super::settings::{HttpSettings, TlsOptions};
use super::{Request, Response, Transport};
use crate::bayeux::{batch_excerpt, parse_batch};
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Default cap on a response body. Salesforce batches can exceed 1 MiB (CometD's 1 MiB default
/// breaks on them, EMP-Connector #60); Salesforce itself sizes its buffer at 10 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("sfstream/", env!("CARGO_PKG_VERSION")));

pub(crate) use crate::url_policy::check_scheme;

/// The hyper client shared by the CometD transport and the OAuth flows: one connection pool,
/// rustls with the ring provider, an optional proxy, a response-size cap.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: HyperClient<HttpsConnector<ProxyConnector>, Full<Bytes>>,
    proxy: Option<Proxy>,
    max_response_bytes: usize,
}

/// A raw HTTP answer: status, headers and the whole body.
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl HttpClient {
    pub(crate) fn new(settings: &HttpSettings, max_response_bytes: usize) -> Result<Self> {
        let config = match &settings.tls {
            Some(config) => rustls::ClientConfig::clone(config),
            None => super::tls::client_config(&[])?,
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(30)));
        let proxied = ProxyConnector::new(http, settings.proxy.clone());
        let connector = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(proxied);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient {
            client,
            proxy: settings.proxy.clone(),
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
        // A forwarding proxy reads its credentials from each request; a tunnel got them in its
        // CONNECT and must not see them again inside TLS.
        if url.scheme() == "http"
            && let Some(auth) = self
                .proxy
                .as_ref()
                .and_then(|p| p.route(request.uri()))
                .and_then(|route| route.auth)
        {
            request.headers_mut().insert(PROXY_AUTHORIZATION, auth);
        }
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
                    // A proxy's 407 needs a person, not a retry: the status says so.
                    let error = match proxy_status(&e) {
                        Some(status) => error.with_status(status),
                        None => error,
                    };
                    let error = if certificate_refused(&e) {
                        error.certificate_refused()
                    } else {
                        error
                    };
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

/// The status of a proxy's refusal somewhere in `error`'s sources.
fn proxy_status(error: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(proxy) = e.downcast_ref::<super::proxy::ProxyError>() {
            return proxy.status;
        }
        source = e.source();
    }
    None
}

/// Whether TLS refused the server's certificate somewhere below `error`.
fn certificate_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        // io::Error::source() skips the error it wraps (tokio-rustls wraps rustls's that way,
        // and hyper-util wraps that io::Error in another), so step into it by hand.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// hyper's Display stops at the outermost error; the cause (connection refused...) is below.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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
            .field("proxy", &self.http.proxy)
            .finish_non_exhaustive()
    }
}

/// Options of an [`HttpTransport`].
#[derive(Default)]
#[must_use]
pub struct HttpTransportBuilder {
    tls: TlsOptions,
    proxy: Option<Proxy>,
    settings: Option<HttpSettings>,
    max_response_bytes: Option<usize>,
    endpoint: Option<Url>,
}

impl fmt::Debug for HttpTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransportBuilder")
            .field("tls", &self.tls)
            .field("proxy", &self.proxy)
            .field("max_response_bytes", &self.max_response_bytes)
            .field(
                "endpoint",
                &self.endpoint.as_ref().map(crate::url_policy::shown),
            )
            .finish_non_exhaustive()
    }
}

impl HttpTransportBuilder {
    /// Use your own rustls configuration (client certificates, pinned roots). The default
    /// trusts the webpki roots (and the platform's with feature `native-roots`) with the ring
    /// provider; to only add roots, use
    /// [`add_root_certificates_pem`](HttpTransportBuilder::add_root_certificates_pem).
    ///
    /// ```no_run
    /// # fn f(config: rustls::ClientConfig) -> sfstream::Result<()> {
    /// let t = sfstream::transport::HttpTransport::builder().tls_config(config).build()?;
    /// # Ok(()) }
    /// ```
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Trust the certificates in this PEM file too (a corporate or TLS-inspecting proxy's CA),
    /// besides the default roots. Read by [`build`](HttpTransportBuilder::build), which fails
    /// with [`ErrorKind::Client`] if the file holds no certificate.
    ///
    /// ```no_run
    /// # fn f() -> sfstream::Result<()> {
    /// let t = sfstream::transport::HttpTransport::builder()
    ///     .add_root_certificates_pem("/etc/ssl/corp-proxy-ca.pem")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn add_root_certificates_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.extra_roots.push(path.into());
        self
    }

    /// Connect through this proxy (see [`Proxy`]).
    ///
    /// ```no_run
    /// # fn f() -> sfstream::Result<()> {
    /// use sfstream::transport::{HttpTransport, Proxy};
    /// let t = HttpTransport::builder().proxy(Proxy::from_env()).build()?;
    /// # Ok(()) }
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Settings already resolved by the client builder; they replace the TLS and proxy options.
    pub(crate) fn settings(mut self, settings: HttpSettings) -> Self {
        self.settings = Some(settings);
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
        let settings = match self.settings {
            Some(settings) => settings,
            None => HttpSettings {
                tls: self.tls.resolve()?,
                proxy: self.proxy,
            },
        };
        Ok(HttpTransport {
            http: HttpClient::new(
                &settings,
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
