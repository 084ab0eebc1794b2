//! `metrics`: the client's metrics in the Prometheus text format at `/metrics`.
//!
//! ```text
//! cargo run --example metrics --features metrics,emulator -- [--port PORT] [--requests N]
//! ```
//!
//! Installs metrics-exporter-prometheus' recorder (its HTTP listener and push gateway features
//! are off: no second HTTP stack, no TLS backend), starts the built-in emulator and a client
//! subscribed to a platform-event channel, publishes a few events, and serves `handle.render()`
//! on `127.0.0.1:PORT` (default: any free port, printed on the first line) with hyper's server,
//! already in the tree with the `emulator` feature. `--requests N` stops after N requests (the
//! tests use it); otherwise it serves until Ctrl-C. The metric names are listed in
//! `sfstream::metrics` and the README.

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sfstream::emulator::Emulator;
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const CHANNEL: &str = "/event/Order_Placed__e";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, requests) = args()?;
    let handle = PrometheusBuilder::new().install_recorder()?;
    // Without the exporter's own listener, histograms are drained by whoever renders; the
    // upkeep keeps memory flat between scrapes.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let emulator = Emulator::start().await?;
    let client = emulator.client_builder().connect().await?;
    let mut orders = client.subscribe(CHANNEL).await?;
    for amount in [10, 20, 30] {
        emulator.publish(CHANNEL, json!({ "Amount__c": amount }));
    }
    for _ in 0..3 {
        orders.next().await.transpose()?;
    }
    tokio::spawn(async move { while orders.next().await.is_some() {} });

    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut connections = JoinSet::new();
    let mut answered = 0;
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    while requests.is_none_or(|n| answered < n) {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut shutdown => break,
        };
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |req| scrape(handle.clone(), req));
        connections.spawn(
            hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service),
        );
        answered += 1;
    }
    while let Some(done) = connections.join_next().await {
        if let Ok(Err(e)) = done {
            eprintln!("connection failed: {e}");
        }
    }
    client.close().await?;
    Ok(())
}

async fn scrape(
    handle: PrometheusHandle,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, handle.render()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

fn args() -> Result<(u16, Option<usize>), String> {
    let mut port = 0;
    let mut requests = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--port" => port = value.parse().map_err(|e| format!("--port: {e}"))?,
            "--requests" => requests = Some(value.parse().map_err(|e| format!("--requests: {e}"))?),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok((port, requests))
}
