//! The TCP layer under TLS: a direct connection, a `CONNECT` tunnel through a proxy
//! (hyper-util's [`Tunnel`]), or a connection to the proxy that forwards plain HTTP.

use super::proxy::{Proxy, ProxyError, Route};
use futures::future::BoxFuture;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects directly or through the [`Proxy`] the destination matches.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    http: HttpConnector,
    proxy: Option<Proxy>,
}

impl ProxyConnector {
    pub(crate) fn new(http: HttpConnector, proxy: Option<Proxy>) -> Self {
        ProxyConnector { http, proxy }
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<ProxyStream, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = self.proxy.as_ref().and_then(|p| p.route(&dst));
        let mut http = self.http.clone();
        Box::pin(async move {
            let Some(route) = route else {
                let io = http.call(dst).await?;
                return Ok(ProxyStream::new(io, false));
            };
            route.check()?;
            tracing::debug!(proxy = %route.proxy, "connecting through the proxy");
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(route.proxy.clone(), http);
                if let Some(auth) = route.auth.clone() {
                    tunnel = tunnel.with_auth(auth);
                }
                let io = tunnel
                    .call(dst.clone())
                    .await
                    .map_err(|e| tunnel_error(&route, &dst, e))?;
                Ok(ProxyStream::new(io, false))
            } else {
                let io = http
                    .call(route.proxy.clone())
                    .await
                    .map_err(|e| unreachable(&route, &e))?;
                Ok(ProxyStream::new(io, true))
            }
        })
    }
}

fn unreachable(route: &Route, source: &(dyn std::error::Error + 'static)) -> ProxyError {
    let detail = super::http_transport::chain(source);
    ProxyError::new(route, format!("is unreachable: {detail}"))
}

/// The tunnel's errors, reworded to name the proxy and the target (never the credentials).
/// hyper-util does not export its `TunnelError`: the variants are told apart by their source
/// and their (stable, lowercase) text, and anything else keeps that text.
fn tunnel_error(route: &Route, dst: &Uri, e: impl std::error::Error + 'static) -> ProxyError {
    let host = dst.host().unwrap_or("?");
    let target = format!("{host}:{}", dst.port_u16().unwrap_or(443));
    if let Some(source) = e.source() {
        return if source.downcast_ref::<io::Error>().is_some() {
            let detail = super::http_transport::chain(source);
            ProxyError::new(
                route,
                format!("failed while opening a tunnel to {target}: {detail}"),
            )
        } else {
            unreachable(route, source)
        };
    }
    let text = e.to_string();
    let what = match text.trim_start_matches("tunnel error: ") {
        "proxy authorization required" if route.auth.is_some() => format!(
            "rejected the credentials for a tunnel to {target} (HTTP 407 Proxy Authentication Required)"
        ),
        "proxy authorization required" => format!(
            "requires authentication for a tunnel to {target} (HTTP 407 Proxy Authentication \
             Required); set credentials with Proxy::basic_auth or in the proxy URL"
        ),
        // Also what tinyproxy's 401 to wrong credentials becomes.
        "unsuccessful" if route.auth.is_some() => format!(
            "refused the tunnel to {target} (answered CONNECT with an error status); check the \
             proxy credentials and the proxy's access rules"
        ),
        "unsuccessful" => {
            format!("refused the tunnel to {target} (answered CONNECT with an error status)")
        }
        "unexpected end of file" => {
            format!("closed the connection instead of opening a tunnel to {target}")
        }
        other => format!("could not open a tunnel to {target}: {other}"),
    };
    let needs_credentials = text.ends_with("proxy authorization required");
    let error = ProxyError::new(route, what);
    if needs_credentials {
        error.with_status(407)
    } else {
        error
    }
}

/// A TCP stream, marked as a proxy connection when hyper must send absolute-form requests.
pub(crate) struct ProxyStream {
    io: TokioIo<TcpStream>,
    forwarding: bool,
}

impl ProxyStream {
    fn new(io: TokioIo<TcpStream>, forwarding: bool) -> Self {
        ProxyStream { io, forwarding }
    }
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarding)
    }
}

impl Read for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
