//! The replay extension as a layer: `ext.replay` on handshake and subscribe, and the fallback
//! when the server rejects a replay id.

use crate::bayeux::{Message, channels};
use crate::connection::base_channel;
use crate::error::{Result, sanitized};
use crate::replay::tracker::ReplayState;
use crate::transport::{Layer, Request, Response, Transport};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Adds the replay extension to every request (see [`crate::replay`]).
pub(crate) struct ReplayLayer {
    state: Arc<ReplayState>,
}

pub(crate) struct Replay<T> {
    inner: T,
    state: Arc<ReplayState>,
    /// The last successful handshake reply announced `ext.replay: true`. Without it the server
    /// does not know the extension, so subscribes go without `ext.replay` (as EMP-Connector).
    supported: AtomicBool,
}

impl ReplayLayer {
    pub(crate) fn new(state: Arc<ReplayState>) -> Self {
        ReplayLayer { state }
    }
}

impl<T: Transport> Layer<T> for ReplayLayer {
    type Transport = Replay<T>;
    fn layer(&self, inner: T) -> Replay<T> {
        Replay {
            inner,
            state: self.state.clone(),
            supported: AtomicBool::new(false),
        }
    }
}

struct Sent {
    id: Option<String>,
    /// The subscribed name, PushTopic filter included.
    subscription: String,
    /// The same without the filter: the replay map's key.
    channel: String,
    replay_id: i64,
    message: Message,
}

impl<T: Transport> Replay<T> {
    async fn call(&self, mut request: Request) -> Result<Response> {
        let mut subscribes = Vec::new();
        for m in &mut request.messages {
            match m.channel.as_str() {
                channels::HANDSHAKE => m.set_ext_field("replay", Value::Bool(true)),
                channels::SUBSCRIBE if self.supported.load(Ordering::Acquire) => {
                    let Some(subscription) = m.subscription.clone() else {
                        continue;
                    };
                    // Where this subscription (filter included) is; the map is keyed by the
                    // channel without a PushTopic filter, as Salesforce expects.
                    let replay_id = self.state.start_id(&subscription).await?;
                    let channel = base_channel(&subscription).to_owned();
                    m.set_ext_field("replay", json!({ channel.as_str(): replay_id }));
                    tracing::debug!(channel = %sanitized(&channel), replay_id, "subscribe with replay id");
                    subscribes.push(Sent {
                        id: m.id.clone(),
                        subscription,
                        channel,
                        replay_id,
                        message: m.clone(),
                    });
                }
                _ => {}
            }
        }
        let timeout = request.timeout;
        let mut response = self.inner.send(request).await?;
        if let Some(reply) = response
            .messages
            .iter()
            .find(|m| m.channel == channels::HANDSHAKE && m.is_successful())
        {
            let announced = reply.ext_field("replay") == Some(&Value::Bool(true));
            if !announced {
                tracing::info!(
                    "the server does not announce replay support; subscribing without replay ids"
                );
            }
            self.supported.store(announced, Ordering::Release);
        }
        let Some(fallback) = self.state.fallback() else {
            return Ok(response);
        };
        for sent in subscribes {
            let Some(pos) = response.messages.iter().position(|r| {
                r.channel == channels::SUBSCRIBE && r.id == sent.id && !r.is_successful()
            }) else {
                continue;
            };
            let Some(error) = response.messages[pos].server_error() else {
                continue;
            };
            if !error.is_invalid_replay_id() {
                continue;
            }
            let rejected = error
                .replay_id()
                .or((sent.replay_id >= 0).then_some(sent.replay_id));
            tracing::warn!(channel = %sanitized(&sent.channel), ?rejected, fallback = fallback.id(),
                "replay id rejected (outside the retention window?); falling back");
            // Recorded before the retry: its events may overtake its reply on the long poll.
            self.state
                .fell_back(&sent.subscription, rejected, fallback.id());
            let mut retry = sent.message;
            retry.set_ext_field("replay", json!({ sent.channel.as_str(): fallback.id() }));
            let retried = self.inner.send(Request::new(vec![retry], timeout)).await?;
            response.messages.splice(pos..=pos, retried.messages);
            response.malformed.extend(retried.malformed);
        }
        Ok(response)
    }
}

impl<T: Transport> Transport for Replay<T> {
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        Box::pin(self.call(request))
    }

    fn reset(&self) {
        self.inner.reset()
    }
}
