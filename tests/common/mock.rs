//! A scripted CometD server behind the `Transport` trait: the test sees every request the
//! client sends and decides the answer. No sockets, no timers: fully deterministic.

use futures::future::BoxFuture;
use serde_json::Value;
use sfstream::bayeux::{Message, parse_batch};
use sfstream::transport::{Request, Response, Transport};
use sfstream::{Client, ClientBuilder, Error, Result, Subscription};
use std::collections::VecDeque;
use tokio::sync::{mpsc, oneshot};

pub struct Exchange {
    pub request: Request,
    reply: oneshot::Sender<Result<Response>>,
}

impl Exchange {
    pub fn message(&self) -> &Message {
        &self.request.messages[0]
    }

    pub fn channel(&self) -> &str {
        &self.message().channel
    }

    pub fn id(&self) -> String {
        self.message().id.clone().unwrap_or_default()
    }

    /// Answer with a JSON array (any `"id":"$id"` is replaced by the request's id).
    pub fn reply(self, body: Value) {
        let text = body
            .to_string()
            .replace("\"$id\"", &format!("\"{}\"", self.id()));
        let response = parse_batch(bytes::Bytes::from(text)).map(Response::from);
        let _ = self.reply.send(response);
    }

    /// Salesforce's answer for a session it no longer knows.
    pub fn unknown_client(self) {
        let channel = self.channel().to_owned();
        self.reply(
            serde_json::json!([{"channel": channel, "id": "$id", "successful": false,
            "error": "403::Unknown client", "advice": {"reconnect": "handshake", "interval": 0}}]),
        );
    }

    pub fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }

    /// A successful reply to whatever was asked, with `extra` messages before it.
    pub fn ok_with(self, extra: Vec<Value>) {
        let m = self.message().clone();
        let mut reply = serde_json::json!({
            "channel": m.channel, "id": "$id", "successful": true, "clientId": "cid-1",
        });
        if m.channel == "/meta/handshake" {
            reply["supportedConnectionTypes"] = serde_json::json!(["long-polling"]);
            reply["version"] = "1.0".into();
            reply["ext"] = serde_json::json!({"replay": true});
        }
        if let Some(s) = &m.subscription {
            reply["subscription"] = s.clone().into();
        }
        if m.channel == "/meta/connect" {
            reply["advice"] =
                serde_json::json!({"reconnect": "retry", "interval": 0, "timeout": 110000});
        }
        let mut all = extra;
        all.push(reply);
        self.reply(Value::Array(all));
    }

    pub fn ok(self) {
        self.ok_with(Vec::new())
    }
}

pub struct MockTransport {
    tx: mpsc::UnboundedSender<Exchange>,
}

impl Transport for MockTransport {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Exchange { request, reply });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(sfstream_error("the mock server dropped the request")))
        })
    }
}

fn sfstream_error(text: &str) -> Error {
    // Any public way to get an Error: a parse failure is a Protocol error.
    parse_batch(bytes::Bytes::from(text.to_owned())).unwrap_err()
}

pub struct MockServer {
    rx: mpsc::UnboundedReceiver<Exchange>,
    held: VecDeque<Exchange>,
}

pub fn mock() -> (MockTransport, MockServer) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        MockTransport { tx },
        MockServer {
            rx,
            held: VecDeque::new(),
        },
    )
}

impl MockServer {
    /// The next request on `channel`, keeping others for later.
    pub async fn next_on(&mut self, channel: &str) -> Exchange {
        if let Some(i) = self.held.iter().position(|e| e.channel() == channel) {
            return self.held.remove(i).unwrap();
        }
        loop {
            let e = self.rx.recv().await.expect("client gone");
            if e.channel() == channel {
                return e;
            }
            self.held.push_back(e);
        }
    }

    /// Handshake and first connect, answered successfully.
    pub async fn accept_open(&mut self) {
        self.next_on("/meta/handshake").await.ok();
        let c = self.next_on("/meta/connect").await;
        assert_eq!(
            c.message().advice.as_ref().and_then(|a| a.timeout),
            Some(0),
            "first connect must ask for an immediate answer"
        );
        c.ok();
    }

    /// Drop every request seen but not answered (a closed session's long poll).
    pub fn clear(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.held.push_back(e);
        }
        self.held.clear();
    }

    /// Whether a request on `channel` is already waiting (without waiting for one).
    pub fn has_waiting(&mut self, channel: &str) -> bool {
        while let Ok(e) = self.rx.try_recv() {
            self.held.push_back(e);
        }
        self.held.iter().any(|e| e.channel() == channel)
    }
}

/// A client builder whose transport is a scripted server, and that server.
pub fn client_builder() -> (ClientBuilder, MockServer) {
    let (transport, server) = mock();
    let builder =
        Client::builder(super::token_for("https://example.my.salesforce.com")).transport(transport);
    (builder, server)
}

/// A client on a scripted server with `max_pending_count(max_pending)`, not opened yet.
pub fn client(max_pending: usize) -> (Client, MockServer) {
    let (builder, server) = client_builder();
    (
        builder.max_pending_count(max_pending).build().unwrap(),
        server,
    )
}

/// [`client`], opened.
pub async fn open(max_pending: usize) -> (Client, MockServer) {
    let (client, mut server) = client(max_pending);
    open_with(&client, &mut server).await;
    (client, server)
}

/// Open `client`, the scripted server accepting the handshake and the first connect.
pub async fn open_with(client: &Client, server: &mut MockServer) {
    let c = client.clone();
    let opening = tokio::spawn(async move { c.open().await });
    server.accept_open().await;
    opening.await.unwrap().unwrap();
}

/// An event on `channel` with replay id `replay_id` (also its payload's `n`).
pub fn event(channel: &str, replay_id: i64) -> Value {
    serde_json::json!({"channel": channel,
        "data": {"event": {"replayId": replay_id}, "payload": {"n": replay_id}}})
}

/// Subscribe to `channel`, the server confirming it.
pub async fn subscribe(client: &Client, server: &mut MockServer, channel: &str) -> Subscription {
    subscribe_with(client, server, channel, Vec::new()).await
}

/// Subscribe to `channel`, the server confirming it with `backlog` events riding on the reply.
pub async fn subscribe_with(
    client: &Client,
    server: &mut MockServer,
    channel: &str,
    backlog: Vec<Value>,
) -> Subscription {
    let c = client.clone();
    let ch = channel.to_owned();
    let pending = tokio::spawn(async move { c.subscribe(ch).await });
    let s = server.next_on("/meta/subscribe").await;
    assert_eq!(s.message().subscription.as_deref(), Some(channel));
    s.ok_with(backlog);
    pending.await.unwrap().unwrap()
}
