//! The fixed workload of the instruction-count guard (`benches/instructions/check.sh`, run by
//! `.ci/run`): a `Client` on a current-thread runtime consumes N events through one
//! `Subscription`, with default settings (`max_pending_count` 100), from a canned transport that
//! answers each `/meta/connect` with a batch of 1,000 events parsed by `parse_batch` from a
//! prepared body. Usage: `instructions_workload small|large N`.
//!
//! What it covers: parsing the response body, the middleware layers, routing, the inbox,
//! backpressure and the consumer's polls; not HTTP, sockets or the kernel, whose cost depends on
//! the machine. One thread and no network, so callgrind counts the same instructions on every
//! run; the script subtracts a short run from a long one to leave the cost per event.

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use sfstream::Client;
use sfstream::auth::AccessToken;
use sfstream::bayeux::{Message, channels, parse_batch};
use sfstream::transport::{Request, Response, Transport};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

const CHANNEL: &str = "/event/Bench__e";
const BATCH: u64 = 1000;

/// A body of `BATCH` events shaped like the side-by-side benchmark's (the interop server's
/// events: `seq`, `CreatedDate`, a `Text__c` of `pad` characters, a replay id).
fn body(pad: usize) -> Bytes {
    let events: Vec<String> = (0..BATCH)
        .map(|i| {
            format!(
                r#"{{"data":{{"schema":"interop","payload":{{"seq":{i},"CreatedDate":"2026-12-07T10:00:00.000Z","Text__c":"{}"}},"event":{{"replayId":{i}}}}},"channel":"{CHANNEL}"}}"#,
                "x".repeat(pad)
            )
        })
        .collect();
    Bytes::from(format!("[{}]", events.join(",")))
}

struct Canned {
    body: Bytes,
    /// Events still to serve.
    left: AtomicU64,
    total: u64,
    /// Long polls wait for the subscription, like the benchmark's server waits to publish.
    subscribed: tokio::sync::Notify,
}

fn reply_to(request: &Message) -> Message {
    let mut reply = Message::new(request.channel.clone());
    reply.id = request.id.clone();
    reply.successful = Some(true);
    if request.channel == channels::HANDSHAKE {
        reply.client_id = Some("bench-client".into());
        reply.version = Some("1.0".into());
        reply.supported_connection_types = Some(vec![channels::LONG_POLLING.into()]);
        reply.set_ext_field("replay", serde_json::Value::Bool(true));
    }
    if request.channel == channels::SUBSCRIBE {
        reply.subscription = request.subscription.clone();
    }
    reply
}

impl Transport for Canned {
    fn send(&self, request: Request) -> BoxFuture<'_, sfstream::Result<Response>> {
        Box::pin(async move {
            let long_poll = request
                .messages
                .iter()
                .any(|m| m.channel == channels::CONNECT && m.advice.is_none());
            if request.has_channel(channels::SUBSCRIBE) {
                self.subscribed.notify_one();
            }
            // The batch's own vector is passed on, as `HttpTransport` does: copying 1,000
            // messages into a new one cost this canned transport ~300 instructions per event.
            let mut messages = Vec::new();
            if long_poll {
                if self.left.load(Ordering::Relaxed) == self.total {
                    self.subscribed.notified().await;
                }
                if self.left.load(Ordering::Relaxed) == 0 {
                    // Nothing more to serve: hold the long poll, as a server does.
                    std::future::pending::<()>().await;
                }
                let mut batch = parse_batch(self.body.clone())?;
                let take = BATCH.min(self.left.load(Ordering::Relaxed));
                self.left.fetch_sub(take, Ordering::Relaxed);
                batch.messages.truncate(take as usize);
                messages = batch.messages;
            }
            messages.extend(request.messages.iter().map(reply_to));
            Ok(Response::new(messages))
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pad = match args.first().map(String::as_str) {
        Some("small") => 110,
        Some("large") => 1030,
        _ => {
            eprintln!("usage: instructions_workload small|large N");
            return ExitCode::FAILURE;
        }
    };
    let Some(n) = args.get(1).and_then(|n| n.parse::<u64>().ok()) else {
        eprintln!("usage: instructions_workload small|large N");
        return ExitCode::FAILURE;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let transport = Canned {
            body: body(pad),
            left: AtomicU64::new(n),
            total: n,
            subscribed: tokio::sync::Notify::new(),
        };
        let url = "http://127.0.0.1:9".parse().expect("a URL");
        let client = Client::builder(AccessToken::new("bench-token", url))
            .transport(transport)
            .connect()
            .await
            .expect("connect");
        let mut events = client.subscribe(CHANNEL).await.expect("subscribe");
        let mut count = 0;
        while count < n {
            match events.next().await {
                Some(Ok(_)) => count += 1,
                other => {
                    eprintln!("instructions_workload: after {count} events: {other:?}");
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("received {count}");
        ExitCode::SUCCESS
    })
}
