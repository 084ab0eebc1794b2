//! Startup round trips: a subscribe issued while `open()` runs goes out right after the
//! handshake, beside the first connect, instead of after it (README, "Startup").

mod common;

use common::within;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::bayeux::channels;
use sfstream::emulator::Emulator;
use sfstream::transport::{BoxTransport, Layer, Request, Response, Transport};
use sfstream::{Client, ClientBuilder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Records whether the first connect (the one sent with `advice.timeout: 0`) had been answered
/// when the subscribe went out.
#[derive(Clone, Default)]
struct Order {
    first_connect_answered: Arc<AtomicBool>,
    subscribe_after_first_connect: Arc<Mutex<Option<bool>>>,
}

struct Watch {
    inner: BoxTransport,
    order: Order,
}

impl Transport for Watch {
    fn send(&self, request: Request) -> BoxFuture<'_, sfstream::Result<Response>> {
        if request.has_channel(channels::SUBSCRIBE) {
            let answered = self.order.first_connect_answered.load(Ordering::SeqCst);
            *self.order.subscribe_after_first_connect.lock().unwrap() = Some(answered);
        }
        let first_connect = request
            .messages
            .iter()
            .any(|m| m.channel == channels::CONNECT && m.advice.is_some());
        Box::pin(async move {
            let response = self.inner.send(request).await;
            if first_connect {
                self.order
                    .first_connect_answered
                    .store(true, Ordering::SeqCst);
            }
            response
        })
    }
    fn reset(&self) {
        self.inner.reset()
    }
}

impl Layer<BoxTransport> for Order {
    type Transport = Watch;
    fn layer(&self, inner: BoxTransport) -> Watch {
        Watch {
            inner,
            order: self.clone(),
        }
    }
}

fn builder(emu: &Emulator, order: &Order) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .layer(order.clone())
}

const CHANNEL: &str = "/event/Order_Placed__e";

#[tokio::test]
async fn a_subscribe_issued_while_open_runs_goes_out_beside_the_first_connect() {
    within("startup", async {
        let emu = Emulator::builder().start().await.unwrap();
        let order = Order::default();
        let client = builder(&emu, &order).build().unwrap();
        // open() first: it starts the session that subscribe() joins.
        let (opened, sub) = tokio::join!(client.open(), client.subscribe(CHANNEL));
        opened.unwrap();
        let mut sub = sub.unwrap();
        assert_eq!(
            *order.subscribe_after_first_connect.lock().unwrap(),
            Some(false),
            "the subscribe waited for the first connect's answer: one round trip more"
        );
        let id = emu.publish(CHANNEL, json!({"n": 1}));
        let event = sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(id));
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_subscribe_after_open_returned_comes_after_the_first_connect() {
    // The contrast that shows the check above can fail.
    within("startup", async {
        let emu = Emulator::builder().start().await.unwrap();
        let order = Order::default();
        let client = builder(&emu, &order).connect().await.unwrap();
        let _sub = client.subscribe(CHANNEL).await.unwrap();
        assert_eq!(
            *order.subscribe_after_first_connect.lock().unwrap(),
            Some(true)
        );
        client.close().await.unwrap();
    })
    .await;
}
