//! `health`: serve a client's health over HTTP for Kubernetes-style probes.
//!
//! ```text
//! cargo run --example health --features emulator -- [--port PORT] [--requests N]
//! ```
//!
//! Starts the built-in emulator, a client subscribed to a platform-event channel, and an HTTP
//! server on `127.0.0.1:PORT` (default: any free port, printed on the first line):
//!
//! - `GET /livez`: 200 while the client is healthy (connected, or failing for less than
//!   `unhealthy_after`), else 503: wire the liveness probe here;
//! - `GET /readyz`: 200 while the long-poll loop is up, else 503: the readiness probe;
//! - `GET /health`: the whole snapshot as JSON, for people and dashboards.
//!
//! `--requests N` stops after answering N requests (the tests use it); otherwise it serves
//! until Ctrl-C. The server is hyper's, already in the tree with the `emulator` feature.
//!
//! ```yaml
//! livenessProbe:  { httpGet: { path: /livez,  port: 8080 }, initialDelaySeconds: 30, periodSeconds: 10 }
//! readinessProbe: { httpGet: { path: /readyz, port: 8080 }, periodSeconds: 5 }
//! ```

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sfstream::emulator::Emulator;
use sfstream::{Client, Health};
use std::convert::Infallible;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const CHANNEL: &str = "/event/Order_Placed__e";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, requests) = args()?;
    let emulator = Emulator::start().await?;
    let client = emulator
        .client_builder()
        .unhealthy_after(Duration::from_secs(30))
        .connect()
        .await?;
    let mut orders = client.subscribe(CHANNEL).await?;
    tokio::spawn(async move { while orders.next().await.is_some() {} });
    emulator.publish(CHANNEL, json!({"Amount__c": 10}));

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
        let client = client.clone();
        let service = hyper::service::service_fn(move |req| probe(client.clone(), req));
        // One request per connection: what probes do, and what makes `--requests` exact.
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

async fn probe(
    client: Client,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let health = client.health();
    let (status, body) = match req.uri().path() {
        "/livez" => (ok_if(health.healthy), "ok\n".to_owned()),
        "/readyz" => (ok_if(health.connected), "ok\n".to_owned()),
        "/health" => (ok_if(health.healthy), format!("{}\n", to_json(&health))),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let body = if status == StatusCode::SERVICE_UNAVAILABLE && body == "ok\n" {
        "unavailable\n".to_owned()
    } else {
        body
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

fn ok_if(up: bool) -> StatusCode {
    if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Seconds since the Unix epoch (a probe's consumer rarely has a date parser).
fn unix(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn to_json(h: &Health) -> Value {
    json!({
        "healthy": h.healthy,
        "connected": h.connected,
        "since": unix(h.since),
        "last_round_trip": unix(h.last_round_trip),
        "failures": h.failures,
        "pending": h.pending,
        "paused": h.paused.as_ref().map(|p| json!({
            "reason": format!("{:?}", p.reason).to_lowercase(),
            "since": unix(Some(p.since)),
        })),
        "subscriptions": h.subscriptions.iter().map(|s| json!({
            "channel": s.channel,
            "subscribed": s.subscribed,
            "last_event": unix(s.last_event),
            "replay_id": s.replay_id,
        })).collect::<Vec<_>>(),
    })
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
