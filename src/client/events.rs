use super::session::Session;
use crate::error::Result;
use crate::event::Event;
use futures::Stream;
use futures::stream::FusedStream;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Every event of every detached subscription of a client, in arrival order
/// ([`Client::receive`](crate::Client::receive)).
///
/// Subscriptions with a live [`Subscription`](crate::Subscription) handle are consumed through
/// it, never here: each queue has exactly one consumer. An error broadcast to every
/// subscription appears here once. Ends when the client is closed and everything queued was
/// taken.
///
/// Under [`CommitPolicy::AfterProcessed`](crate::replay::CommitPolicy::AfterProcessed),
/// dropping the stream counts the event it handed out last as processed (the subscriptions go
/// on and cannot deliver it again): finish it before you drop the stream.
pub struct Events {
    session: Arc<Session>,
    id: u64,
    done: bool,
}

impl Events {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        let id = session.shared.inbox.new_receiver();
        Events {
            session,
            id,
            done: false,
        }
    }
}

impl Stream for Events {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Tokio's cooperative budget: a consumer draining a long queue yields now and then, so
        // the connection task (on the same thread of a current-thread runtime) still runs.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let shared = &self.session.shared;
        let (polled, subscribed) = shared
            .inbox
            .poll_any(self.id, cx, shared.tracks_processing());
        let polled = shared.settle(polled, true, subscribed.as_deref());
        if polled.is_ready() {
            coop.made_progress();
        }
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }
}

impl FusedStream for Events {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // The subscriptions go on and cannot deliver the event in hand again this session:
        // it counts as processed, or it would hold the channel's marker back for good.
        if let Some(last) = self.session.shared.inbox.drop_receiver(self.id) {
            last.ack();
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("ended", &self.done).finish()
    }
}
