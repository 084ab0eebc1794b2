use super::session::Session;
use crate::connection::{Command, SubId};
use crate::error::Result;
use crate::event::Event;
use futures::Stream;
use futures::stream::FusedStream;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A live subscription: a [`Stream`] of the channel's events.
///
/// Items are `Result<Event, Error>`: besides events, a subscription yields errors that concern
/// it (a rejected resubscribe, a malformed message on its channel, a replay gap) and errors that
/// concern the whole connection (authentication failures, `connection_timeout` expiry). The
/// stream ends (`None`) when the client is closed or the subscription is gone for good.
///
/// Dropping it unsubscribes (in the background). While events wait in a subscription's queue the
/// connection task holds back the next `/meta/connect` once `max_pending` is reached, so a slow
/// consumer slows the stream rather than growing memory.
///
/// ```no_run
/// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
/// use futures::StreamExt;
/// let mut orders = client.subscribe("/event/Order_Placed__e").await?;
/// while let Some(item) = orders.next().await {
///     match item {
///         Ok(event) => println!("{}", serde_json::to_string(&event).unwrap()),
///         Err(e) if e.kind() == sfstream::ErrorKind::ReplayGap => eprintln!("possible loss: {e}"),
///         Err(e) => eprintln!("{e}"), // reported; the stream goes on
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    channel: String,
    sub: SubId,
    session: Arc<Session>,
    detached: bool,
    done: bool,
}

impl Subscription {
    pub(crate) fn new(channel: String, sub: SubId, session: Arc<Session>) -> Self {
        Subscription {
            channel,
            sub,
            session,
            detached: false,
            done: false,
        }
    }

    /// The subscribed channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Unsubscribe and wait for the server's confirmation.
    ///
    /// ```no_run
    /// # async fn f(sub: sfstream::Subscription) -> sfstream::Result<()> {
    /// sub.unsubscribe().await?;
    /// # Ok(()) }
    /// ```
    pub async fn unsubscribe(self) -> Result<()> {
        let (channel, sub) = (self.channel.clone(), Some(self.sub));
        let result = self
            .session
            .request(|reply| Command::Unsubscribe {
                channel,
                sub,
                reply,
            })
            .await;
        // Dropping `self` now frees its queue (and does nothing more on the server).
        result
    }

    /// Keep the subscription without this handle: its events are then taken through
    /// [`Client::receive`](crate::Client::receive), and
    /// [`Client::unsubscribe`](crate::Client::unsubscribe) ends it. This is the aiosfstream
    /// style of one loop over every channel. Under
    /// [`CommitPolicy::AfterProcessed`](crate::replay::CommitPolicy::AfterProcessed) the event
    /// this handle handed out last counts as processed once detached.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// use futures::TryStreamExt;
    /// use sfstream::NoticeExt;
    /// client.subscribe("/topic/InvoiceStatementUpdates").await?.detach();
    /// client.subscribe("/event/Order_Placed__e").await?.detach();
    /// let mut all = client.receive()?.on_notice(|n| eprintln!("warning: {n}"));
    /// while let Some(event) = all.try_next().await? {
    ///     println!("{}", event.channel());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn detach(mut self) {
        self.detached = true;
        // The subscription goes on without this handle: the event it handed out last counts
        // as processed (`AfterProcessed`), or it would hold the channel's marker back for good.
        if let Some(last) = self.session.shared.inbox.detach(self.sub) {
            last.ack();
        }
    }
}

impl Subscription {
    /// The next item, without counting the event handed out before it as processed: for the
    /// hand-off, whose events are processed when their worker acks them.
    pub(crate) fn poll_untracked(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        self.poll_item(cx, false)
    }

    /// The client's replay bookkeeping (the hand-off stores `OnReceive` markers on ack).
    pub(crate) fn replay(&self) -> &Arc<crate::replay::tracker::ReplayState> {
        &self.session.shared.replay
    }

    fn poll_item(&mut self, cx: &mut Context<'_>, track: bool) -> Poll<Option<Result<Event>>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Tokio's cooperative budget: a consumer draining a long queue yields now and then, so
        // the connection task (on the same thread of a current-thread runtime) still runs.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let shared = &self.session.shared;
        let polled = shared.settle(
            shared
                .inbox
                .poll_sub(self.sub, cx, track && shared.tracks_processing()),
            track,
            Some(&self.channel),
        );
        if polled.is_ready() {
            coop.made_progress();
        }
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }
}

impl Stream for Subscription {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_item(cx, true)
    }
}

impl FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.detached {
            // The task may be gone already (client closed): nothing left to undo then.
            let _ = self.session.commands.send(Command::Drop { sub: self.sub });
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("ended", &self.done)
            .finish()
    }
}
