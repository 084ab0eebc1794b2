//! `custom_layer`: your own middleware between the client and the wire.
//!
//! ```text
//! cargo run --example custom_layer
//! ```
//!
//! A layer wraps the transport below it and is a transport itself (tower style, see
//! `sfstream::transport`). This one does two things to every request: it adds a custom `ext`
//! field naming the consumer (`ext.consumer`, as a proxy or a server-side extension might
//! want), and it counts round trips per Bayeux channel (`/meta/handshake`, `/meta/connect`,
//! ...) and how long they took. It runs on the built-in emulator (no account needed), reads
//! three events, closes, and prints the counts and what the emulator saw.
//!
//! Layers are added with `ClientBuilder::layer`; the first added is innermost, all sit above
//! the auth layer (so they see the bearer token's requests, never the token itself: headers
//! are the auth layer's business).

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sfstream::emulator::Emulator;
use sfstream::transport::{BoxTransport, Layer, Request, Response, Transport};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Round trips per channel of the request's first message, and their total duration.
#[derive(Default)]
struct RoundTrips(Mutex<BTreeMap<String, (u64, Duration)>>);

/// The layer: what `ClientBuilder::layer` takes. It builds one [`Tag`] over the transport.
struct TagLayer {
    consumer: String,
    counts: Arc<RoundTrips>,
}

/// The transport the layer builds: adds `ext.consumer`, counts, and passes the request on.
struct Tag<T> {
    inner: T,
    consumer: Value,
    counts: Arc<RoundTrips>,
}

impl Layer<BoxTransport> for TagLayer {
    type Transport = Tag<BoxTransport>;

    fn layer(&self, inner: BoxTransport) -> Tag<BoxTransport> {
        Tag {
            inner,
            consumer: json!(self.consumer),
            counts: self.counts.clone(),
        }
    }
}

impl<T: Transport> Transport for Tag<T> {
    fn send(&self, mut request: Request) -> BoxFuture<'_, sfstream::Result<Response>> {
        for message in &mut request.messages {
            message.set_ext_field("consumer", self.consumer.clone());
        }
        let channel = request
            .messages
            .first()
            .map(|m| m.channel.to_string())
            .unwrap_or_default();
        Box::pin(async move {
            let started = Instant::now();
            let response = self.inner.send(request).await;
            let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
            let entry = counts.entry(channel).or_default();
            entry.0 += 1;
            entry.1 += started.elapsed();
            response
        })
    }

    // A rehandshake resets the transport below (its cookies); pass it on.
    fn reset(&self) {
        self.inner.reset()
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::start().await?;
    let counts = Arc::new(RoundTrips::default());
    let client = emulator
        .client_builder()
        .layer(TagLayer {
            consumer: "billing-sync-1".into(),
            counts: counts.clone(),
        })
        .connect()
        .await?;
    let mut orders = client.subscribe("/event/Order_Placed__e").await?;
    for n in 1..=3 {
        emulator.publish("/event/Order_Placed__e", json!({"Order_Number__c": n}));
    }
    for _ in 0..3 {
        match orders.next().await {
            Some(Ok(event)) => println!("event {:?} on {}", event.replay_id(), event.channel()),
            Some(Err(e)) if e.is_transient() => eprintln!("custom_layer: notice: {e}"),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the stream ended".into()),
        }
    }
    drop(orders);
    client.close().await?;

    for (channel, (n, total)) in counts.0.lock().unwrap().iter() {
        println!("round trips {channel}: {n} ({total:?} in all)");
    }
    let tagged = emulator
        .received()
        .iter()
        .filter(|m| m.ext_field("consumer") == Some(&json!("billing-sync-1")))
        .count();
    println!("the server saw ext.consumer on {tagged} messages");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_layer: error: {e}");
            ExitCode::FAILURE
        }
    }
}
