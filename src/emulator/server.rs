//! HTTP: the accept loop, routing, the body limit, bearer tokens, cookies and fault injection.

use super::cometd;
use super::faults::{Action, MAINTENANCE_HTML, Target};
use super::ids;
use super::oauth;
use super::rest;
use super::state::{CookieSet, Shared, State};
use bytes::{Bytes, BytesMut};
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Salesforce rejects CometD bodies above 32 KiB with HTTP 413.
pub(crate) const MAX_BODY: usize = 32_768;
/// The token endpoint path.
pub(crate) const TOKEN_PATH: &str = "/services/oauth2/token";
const JSON: &str = "application/json;charset=UTF-8";

/// Returned by the service to make hyper drop the connection without a response.
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by an injected fault")
    }
}

impl std::error::Error for CloseConnection {}

type Reply = Result<Response<Full<Bytes>>, CloseConnection>;

/// Accept connections until `shutdown` changes or its sender is dropped, then abort every
/// connection (held connects included) and release the port.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Long-poll replies are small and latency-bound.
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| route(shared.clone(), req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!(error = %e, "emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    drop(listener);
    tracing::info!(url = %shared.base_url, "emulator stopped");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Cometd,
    Token,
    Rest,
    /// `/cometd` without a version Salesforce serves.
    BadVersion,
}

/// REST bodies (sObject collections of 200 events) may exceed the CometD cap.
const MAX_REST_BODY: usize = 4 * 1024 * 1024;

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Reply {
    shared.bump(|s| s.requests += 1);
    let path = req.uri().path();
    let endpoint = if path == TOKEN_PATH {
        Endpoint::Token
    } else if let Some(served) = cometd_version(&shared.config.api_version, path) {
        if served {
            Endpoint::Cometd
        } else {
            Endpoint::BadVersion
        }
    } else if rest::is_rest_path(path) {
        Endpoint::Rest
    } else {
        tracing::debug!(%path, "emulator: 404");
        return Ok(not_found(path));
    };
    if endpoint == Endpoint::Rest {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let (parts, body) = req.into_parts();
        let Some(body) = read_body(body, MAX_REST_BODY).await? else {
            return Ok(too_large());
        };
        let mut lose = false;
        if let Some(action) = take_fault(&shared, &[Target::Rest]) {
            match action {
                Action::Delay(d) => tokio::time::sleep(d).await,
                Action::LoseResponse => lose = true,
                other => {
                    let real = json!([{"message": "emulated", "errorCode": "UNKNOWN_EXCEPTION"}]);
                    let object = real[0].clone();
                    let mistyped = json!([{"message": 1, "errorCode": true}]);
                    return fault_response(other, real, object, mistyped).await;
                }
            }
        }
        let answer = rest::handle(
            &shared,
            &method,
            &path,
            query.as_deref(),
            &parts.headers,
            &body,
        );
        tracing::debug!(%method, %path, status = answer.status.as_u16(), "emulator: REST request");
        if lose {
            return Err(CloseConnection);
        }
        return Ok(bytes_response(answer.status, JSON, answer.body));
    }
    if req.method() != Method::POST {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain;charset=UTF-8",
            "Method Not Allowed",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let Some(body) = read_body(body, MAX_BODY).await? else {
        return Ok(too_large());
    };
    match endpoint {
        Endpoint::Token => token(shared, &parts.headers, body).await,
        Endpoint::BadVersion => Ok(bad_version(&shared, &body)),
        // REST requests were answered above.
        Endpoint::Cometd | Endpoint::Rest => cometd(shared, &parts.headers, body).await,
    }
}

/// Read a body of at most `limit` bytes; `None` if it is larger. The excess of a larger body
/// is read and discarded (up to a limit) so the 413 reaches the client instead of a reset.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Option<Bytes>, CloseConnection> {
    let drain_limit = limit.max(4 * 1024 * 1024);
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        // An error means the client went away mid-body.
        let frame = frame.map_err(|_| CloseConnection)?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > drain_limit {
                break;
            }
        }
    }
    Ok((total <= limit).then(|| buf.freeze()))
}

/// For a path under `/cometd`: whether its version is served. Salesforce serves every API
/// version up to the current one; the emulator serves 24.0 up to its own. `/cometd/62.0` may
/// go on with `/handshake`, `/connect`, ... as CometD Java sends.
fn cometd_version(served: &str, path: &str) -> Option<bool> {
    let rest = path.strip_prefix("/cometd")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let version = rest
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (major, minor) = v.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(major) && digits(minor))
            .then(|| Some((major.parse().ok()?, minor.parse().ok()?)))?
    };
    Some(match (parse(version), parse(served)) {
        (Some(v), Some(max)) => v >= (24, 0) && v <= max,
        (Some(_), None) => version == served,
        (None, _) => false,
    })
}

/// The reply to a CometD request without a served version: HTTP 400 and, per message, its
/// channel and Salesforce's error, without id (reply captured in a public client's test
/// fixture: `[{"channel":"/meta/handshake","error":"400::API version in the URI is mandatory.
/// URI format: '/cometd/65.0'","successful":false}]`). Salesforce's answer to a version above
/// the current one is not documented; the emulator gives the same.
fn bad_version(shared: &Shared, body: &Bytes) -> Response<Full<Bytes>> {
    let error = format!(
        "400::API version in the URI is mandatory. URI format: '/cometd/{}'",
        shared.config.api_version
    );
    let channels: Vec<String> = crate::bayeux::parse_batch(body.clone())
        .map(|b| b.messages.into_iter().map(|m| m.channel.into()).collect())
        .unwrap_or_default();
    let channels = if channels.is_empty() {
        vec![crate::bayeux::channels::HANDSHAKE.to_owned()]
    } else {
        channels
    };
    let replies: Vec<Value> = channels
        .into_iter()
        .map(|channel| json!({"channel": channel, "error": error, "successful": false}))
        .collect();
    bytes_response(
        StatusCode::BAD_REQUEST,
        JSON,
        Bytes::from(serde_json::to_vec(&replies).unwrap_or_default()),
    )
}

async fn token(shared: Arc<Shared>, headers: &HeaderMap, body: Bytes) -> Reply {
    if let Some(action) = take_fault(&shared, &[Target::Token]) {
        match action {
            Action::Delay(d) => tokio::time::sleep(d).await,
            Action::LoseResponse => {
                let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
                let _ = oauth::handle(&shared, content_type, &body);
                return Err(CloseConnection);
            }
            other => {
                let real = oauth::synthetic_reply(&shared);
                let mut mistyped = real.clone();
                mistyped["issued_at"] = real["issued_at"]
                    .as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .into();
                mistyped["access_token"] = json!({"value": real["access_token"]});
                let object = Value::Array(vec![real.clone()]);
                return fault_response(other, real, object, mistyped).await;
            }
        }
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let (status, body) = oauth::handle(&shared, content_type, &body);
    tracing::debug!(status = status.as_u16(), "emulator: token request");
    Ok(bytes_response(status, JSON, body))
}

async fn cometd(shared: Arc<Shared>, headers: &HeaderMap, body: Bytes) -> Reply {
    let request = cometd::parse(body);
    let targets = request.as_ref().map(|r| r.targets()).unwrap_or_default();
    let mut lose = false;
    if let Some(action) = take_fault(&shared, &targets) {
        match action {
            Action::Delay(d) => tokio::time::sleep(d).await,
            Action::LoseResponse => lose = true,
            other => {
                let real = match &request {
                    Ok(r) => Value::Array(r.synthetic_replies(&shared)),
                    Err(e) => {
                        serde_json::from_slice(&cometd::invalid_body(e)).unwrap_or(Value::Null)
                    }
                };
                let object = real.get(0).cloned().unwrap_or_else(|| json!({}));
                let mut mistyped = real.clone();
                if let Value::Array(replies) = &mut mistyped {
                    for r in replies {
                        r["successful"] = "yes".into();
                        r["id"] = json!({"id": r["id"].take()});
                    }
                }
                return fault_response(other, real, object, mistyped).await;
            }
        }
    }
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            return Ok(bytes_response(
                StatusCode::BAD_REQUEST,
                JSON,
                cometd::invalid_body(e),
            ));
        }
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        let channels: Vec<&str> = request
            .messages
            .iter()
            .map(|m| m.channel.as_str())
            .collect();
        tracing::debug!(?channels, "emulator: cometd request");
    }
    let answer = cometd::handle(shared, headers, request).await;
    if lose {
        return Err(CloseConnection);
    }
    let mut resp = bytes_response(answer.status, JSON, answer.body);
    for cookie in answer.cookies {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(SET_COOKIE, v);
        }
    }
    Ok(resp)
}

/// Take the first injected fault matching the request, counting it.
fn take_fault(shared: &Shared, targets: &[Target]) -> Option<Action> {
    let mut st = shared.lock();
    let position = st.faults.iter().position(|f| f.matches(targets))?;
    let fault = st.faults.remove(position)?;
    drop(st);
    shared.bump(|s| s.faults_triggered += 1);
    tracing::debug!(?fault, "emulator: fault injected");
    Some(fault.action)
}

/// The response of a fault that replaces processing. `real` is a reply shaped like the real one,
/// `object` the same in the other JSON container, `mistyped` with wrong field types.
async fn fault_response(action: Action, real: Value, object: Value, mistyped: Value) -> Reply {
    let json_bytes = |v: &Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    Ok(match action {
        Action::Close => return Err(CloseConnection),
        // Never answers; the connection task ends when the client hangs up or on shutdown.
        Action::Hang => return std::future::pending().await,
        Action::Status(status, body) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let trimmed = body.trim_start();
            let ct = if trimmed.starts_with('[') || trimmed.starts_with('{') {
                JSON
            } else {
                "text/plain;charset=UTF-8"
            };
            text(status, ct, &body)
        }
        Action::Html => text(StatusCode::OK, "text/html;charset=UTF-8", MAINTENANCE_HTML),
        Action::Truncated => {
            let full = json_bytes(&real);
            bytes_response(StatusCode::OK, JSON, full.slice(..full.len() / 2))
        }
        Action::Object => bytes_response(StatusCode::OK, JSON, json_bytes(&object)),
        Action::WrongTypes => bytes_response(StatusCode::OK, JSON, json_bytes(&mistyped)),
        Action::Body(v) => bytes_response(StatusCode::OK, JSON, json_bytes(&v)),
        // Handled by the caller before processing.
        Action::Delay(_) | Action::LoseResponse => {
            bytes_response(StatusCode::OK, JSON, json_bytes(&real))
        }
    })
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, content_type: &'static str, body: &str) -> Response<Full<Bytes>> {
    bytes_response(
        status,
        content_type,
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn not_found(path: &str) -> Response<Full<Bytes>> {
    let escaped: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/._-".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    let body = format!(
        "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><p>The requested URL {escaped} was not found on this server.</p></body></html>\n"
    );
    bytes_response(
        StatusCode::NOT_FOUND,
        "text/html;charset=UTF-8",
        Bytes::from(body),
    )
}

fn too_large() -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "text/html;charset=UTF-8",
        "<html><body><h1>413 Request Entity Too Large</h1></body></html>\n",
    )
}

/// The token of `Authorization: Bearer <t>` (or jsforce's `OAuth <t>`). `None` when the header
/// is missing; an unusable header gives an empty token, which is never valid.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(AUTHORIZATION)?
        .to_str()
        .unwrap_or_default()
        .trim();
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth") =>
        {
            Some(token.trim())
        }
        _ => Some(""),
    }
}

/// Whether a request carries the cookies of some handshake, byte-exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieCheck {
    Valid,
    Missing,
    Mismatch,
}

/// A cookie's value from the `Cookie` headers, by hand: split on `;`, then on the first `=`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn check_cookies(st: &State, headers: &HeaderMap) -> CookieCheck {
    let Some(browser) = cookie(headers, "BAYEUX_BROWSER") else {
        return CookieCheck::Missing;
    };
    match st.cookies.get(browser) {
        Some(set)
            if cookie(headers, "sfdc-stream") == Some(set.sfdc_stream.as_str())
                && cookie(headers, "sfproxy-id") == Some(set.sfproxy_id.as_str()) =>
        {
            CookieCheck::Valid
        }
        _ => CookieCheck::Mismatch,
    }
}

/// A new `sfdc-stream` value for the request's cookie set, as the `Set-Cookie` header; `None`
/// when the request carries no known `BAYEUX_BROWSER`.
pub(crate) fn rotate_sfdc_stream(st: &mut State, headers: &HeaderMap) -> Option<String> {
    let browser = cookie(headers, "BAYEUX_BROWSER")?;
    let set = st.cookies.get_mut(browser)?;
    set.sfdc_stream = ids::sfdc_stream();
    Some(format!("sfdc-stream={}; Path=/", set.sfdc_stream))
}

/// Mint the three cookies of a handshake reply, shaped like Salesforce's minus `Secure`.
pub(crate) fn issue_cookies(st: &mut State) -> [String; 3] {
    let browser = ids::bayeux_browser();
    let set = CookieSet {
        sfdc_stream: ids::sfdc_stream(),
        sfproxy_id: ids::sfproxy_id(),
    };
    let headers = [
        format!("BAYEUX_BROWSER={browser}; Path=/cometd/; HttpOnly"),
        format!("sfdc-stream={}; Path=/", set.sfdc_stream),
        // No Path: the client must apply RFC 6265's default-path.
        format!("sfproxy-id={}; Max-Age=3600", set.sfproxy_id),
    ];
    st.cookies.insert(browser, set);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(cometd_version("62.0", "/cometd/62.0"), Some(true));
        assert_eq!(cometd_version("62.0", "/cometd/62.0/connect"), Some(true));
        assert_eq!(cometd_version("62.0", "/cometd/61.0"), Some(true));
        assert_eq!(cometd_version("62.0", "/cometd/62.01"), Some(false));
        assert_eq!(cometd_version("62.0", "/cometd/63.0"), Some(false));
        assert_eq!(cometd_version("62.0", "/cometd/23.0"), Some(false));
        assert_eq!(cometd_version("62.0", "/cometd"), Some(false));
        assert_eq!(cometd_version("62.0", "/cometd/replay/38.0"), Some(false));
        assert_eq!(cometd_version("62.0", "/cometdx"), None);
        assert_eq!(cometd_version("62.0", "/other"), None);
    }

    #[test]
    fn bearer_and_cookies() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("OAuth abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), Some(""));
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; sfdc-stream=!x/y+z==; b"),
        );
        assert_eq!(cookie(&h, "sfdc-stream"), Some("!x/y+z=="));
        assert_eq!(cookie(&h, "b"), None);
    }
}
