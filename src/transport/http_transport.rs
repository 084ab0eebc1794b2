//! The real transport: hyper 1 over rustls (ring), one cookie jar per client.

use super::connector::ProxyConnector;
use super::cookies::CookieJar;
use super::proxy::Proxy;
use super::settings::{HttpSettings, TlsOptions};
use super::{Request, Response, Transport};
use crate::bayeux::{batch_excerpt, parse_body};
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
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
        let mut read = Vec::new();
        let (status, headers, whole) = self
            .exchange(method, url, headers, body, timeout, &mut read)
            .await?;
        Ok(RawResponse {
            status,
            headers,
            body: whole.unwrap_or_else(|| Bytes::from(read)),
        })
    }

    /// Send a request and read the answer within `timeout`: a body that came in one chunk
    /// (hyper reads up to about 400 KiB at a time) is returned as it is, a longer one is left in
    /// `read` (cleared first).
    ///
    /// A longer body is copied into `read` chunk by chunk as it arrives, so hyper's read buffer
    /// is free again for the next chunk and no second, joined copy of the body is made. A
    /// caller that keeps `read` for the next request (the CometD transport) allocates no new
    /// body buffer per response: a fresh multi-MB buffer per response, freed again after
    /// parsing, left holes in the heap that the events parsed meanwhile split up, so the heap
    /// kept growing (see the README's Backpressure section).
    async fn exchange(
        &self,
        method: http::Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        read: &mut Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap, Option<Bytes>)> {
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
        read.clear();
        let work = async {
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
            let whole = self.read_body(body, url, read).await?;
            Ok((parts.status, parts.headers, whole))
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            Error::new(
                ErrorKind::TransportTimeout,
                format!("no response from {url} within {timeout:?}"),
            )
        })?
    }

    /// Read a response body, refusing one over the cap: a body that came in one chunk is
    /// returned as it is (no copy); a longer one is appended to `read` and `None` returned.
    async fn read_body(
        &self,
        body: hyper::body::Incoming,
        url: &Url,
        read: &mut Vec<u8>,
    ) -> Result<Option<Bytes>> {
        let too_large = || {
            Error::new(
                ErrorKind::Protocol,
                format!(
                    "response from {url} exceeds the {} byte cap (max_response_bytes)",
                    self.max_response_bytes
                ),
            )
        };
        let declared = hyper::body::Body::size_hint(&body)
            .exact()
            .map(|len| usize::try_from(len).unwrap_or(usize::MAX));
        if declared.is_some_and(|len| len > self.max_response_bytes) {
            return Err(too_large());
        }
        let mut body = body;
        let mut first: Option<Bytes> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Error::new(
                    ErrorKind::Transport,
                    format!("reading the response from {url} failed: {e}"),
                )
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let held = first.as_ref().map_or(0, Bytes::len) + read.len();
            if chunk.len() > self.max_response_bytes - held {
                return Err(too_large());
            }
            if read.is_empty() && first.is_none() {
                first = Some(chunk);
                continue;
            }
            if let Some(first) = first.take() {
                // A declared length is reserved at once, with 1/16 more so that a kept buffer
                // need not grow again for a next response a few bytes longer.
                if let Some(len) = declared.filter(|len| *len > read.capacity()) {
                    read.reserve_exact(len.saturating_add(len / 16).min(self.max_response_bytes));
                }
                read.extend_from_slice(&first);
            }
            read.extend_from_slice(&chunk);
        }
        Ok(if read.is_empty() {
            Some(first.unwrap_or_default())
        } else {
            None
        })
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
    /// The body buffer kept between responses (see [`HttpTransport::round_trip`]).
    spare: Mutex<Vec<u8>>,
}

/// A kept body buffer above this size is let go after a response that used less than a quarter
/// of it, so one large backlog does not cost its size for the rest of the session.
const KEEP_READ_BUFFER: usize = 1 << 20;

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
            spare: Mutex::new(Vec::new()),
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
        // One body buffer serves response after response: parsing copies every event's data
        // out of it, so it is free again once parsed. A request made while another is being
        // read (a subscribe beside the long-poll) reads into a buffer of its own.
        let mut read = std::mem::take(&mut *self.spare_buffer());
        let answer = self
            .http
            .exchange(
                http::Method::POST,
                &url,
                headers,
                Bytes::from(body),
                request.timeout,
                &mut read,
            )
            .await;
        let result = answer.and_then(|(status, headers, whole)| {
            self.cookies.store_from(&url, &headers);
            let body = whole.as_deref().unwrap_or(&read);
            match status {
                StatusCode::OK => parse_body(body).map(Response::from),
                StatusCode::NO_CONTENT => Ok(Response::default()),
                status => Err(Error::new(
                    ErrorKind::Transport,
                    format!(
                        "HTTP {} from {url}: {}",
                        status.as_u16(),
                        batch_excerpt(body)
                    ),
                )
                .with_status(status.as_u16())),
            }
        });
        self.keep_buffer(read);
        result
    }

    fn spare_buffer(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // The buffer holds no invariant a panic elsewhere could break.
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep `read` for the next response, unless a larger one is kept already or it is large
    /// and was mostly unused this time.
    fn keep_buffer(&self, mut read: Vec<u8>) {
        if read.capacity() > KEEP_READ_BUFFER && read.len() < read.capacity() / 4 {
            return;
        }
        read.clear();
        let mut spare = self.spare_buffer();
        if read.capacity() > spare.capacity() {
            *spare = read;
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
