//! One authenticated REST call: the client's hyper client and TLS, the auth layer's token, one
//! retry with a refreshed token after HTTP 401 (the same rule as the CometD requests).

use crate::auth::Token;
use crate::error::{Error, ErrorKind, Result};
use crate::middleware::AuthLayer;
use crate::transport::HttpClient;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use url::Url;

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("sfstream/", env!("CARGO_PKG_VERSION")));

/// The REST side of a client: shared by every clone, lives as long as the client.
pub(crate) struct RestClient {
    http: HttpClient,
    auth: AuthLayer,
    timeout: Duration,
    /// Generic streaming channel name to its StreamingChannel id, looked up once.
    channel_ids: Mutex<HashMap<String, String>>,
}

/// A REST answer: status and body.
pub(crate) struct RestReply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// The URL called, for error messages (never carries the token).
    pub(crate) url: Url,
}

/// One entry of Salesforce's REST error array, `[{"message":..,"errorCode":..,"fields":[..]}]`.
#[derive(Deserialize)]
pub(crate) struct RestError {
    #[serde(default)]
    pub(crate) message: String,
    #[serde(rename = "errorCode", default)]
    pub(crate) error_code: String,
    #[serde(default)]
    pub(crate) fields: Vec<String>,
}

impl RestReply {
    pub(crate) fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body as Salesforce's error array, if it is one.
    pub(crate) fn errors(&self) -> Option<Vec<RestError>> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A typed error for a status this call does not expect, quoting Salesforce's error codes.
    pub(crate) fn into_error(self) -> Error {
        let detail = match self.errors() {
            Some(errors) if !errors.is_empty() => errors
                .iter()
                .map(|e| format!("{}: {}", e.error_code, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            _ => crate::bayeux::batch_excerpt(&self.body),
        };
        let kind = if self.status == StatusCode::UNAUTHORIZED {
            ErrorKind::Authentication
        } else {
            ErrorKind::Transport
        };
        Error::new(
            kind,
            format!("HTTP {} from {}: {detail}", self.status.as_u16(), self.url),
        )
        .with_status(self.status.as_u16())
    }

    /// The body as `T`, or a protocol error naming what was expected.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!(
                    "unexpected {what} from {}: {}",
                    self.url,
                    crate::bayeux::batch_excerpt(&self.body)
                ),
            )
            .with_source(e)
        })
    }
}

impl RestClient {
    pub(crate) fn new(http: HttpClient, auth: AuthLayer, timeout: Duration) -> Self {
        RestClient {
            http,
            auth,
            timeout,
            channel_ids: Mutex::new(HashMap::new()),
        }
    }

    /// `<instance>/services/data/v<version>/<path>`, with `query` pairs.
    fn url(&self, token: &Token, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let base = token.instance_url.as_str().trim_end_matches('/');
        let text = format!(
            "{base}/services/data/v{}/{path}",
            self.auth.api_version().trim_start_matches('v')
        );
        let mut url = Url::parse(&text).map_err(|e| {
            Error::new(ErrorKind::Client, format!("invalid REST URL {text}")).with_source(e)
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn send_once(
        &self,
        method: &Method,
        token: &Token,
        path: &str,
        query: &[(&str, &str)],
        body: &Option<Bytes>,
    ) -> Result<RestReply> {
        let url = self.url(token, path, query)?;
        let mut headers = HeaderMap::new();
        let authorization = token.authorization_header()?;
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, USER_AGENT_VALUE.clone());
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let raw = self
            .http
            .send(
                method.clone(),
                &url,
                headers,
                body.clone().unwrap_or_default(),
                self.timeout,
            )
            .await?;
        Ok(RestReply {
            status: raw.status,
            body: raw.body,
            url,
        })
    }

    /// Call `path` (relative to `/services/data/vXX.X/`) with the current token; after HTTP 401,
    /// once more with a refreshed one. A second 401 is an `Authentication` error.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<RestReply> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| {
                Error::new(ErrorKind::Client, "cannot serialize the request").with_source(e)
            })?;
        let (generation, token) = self.auth.token().await?;
        let first = self.send_once(&method, &token, path, query, &body).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        tracing::info!("the REST API rejected the access token; refreshing it");
        let (_, token) = self.auth.refreshed_token(generation).await?;
        let second = self.send_once(&method, &token, path, query, &body).await?;
        if second.status == StatusCode::UNAUTHORIZED {
            return Err(second.into_error());
        }
        Ok(second)
    }

    pub(crate) fn cached_channel_id(&self, channel: &str) -> Option<String> {
        self.lock_ids().get(channel).cloned()
    }

    pub(crate) fn cache_channel_id(&self, channel: &str, id: &str) {
        self.lock_ids().insert(channel.to_owned(), id.to_owned());
    }

    pub(crate) fn forget_channel_id(&self, channel: &str) {
        self.lock_ids().remove(channel);
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.channel_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
