//! Notices out of band: an event-only view of a stream, with the reports the client recovers
//! from by itself passed to a callback.
//!
//! A subscription yields `Result<Event, Error>` and goes on after an error, because most of its
//! errors are notices: an outage that is being retried, a replay gap, a recovered stall. A
//! `try_`-style pipeline (`try_next()?`, `try_for_each`, `?` on each item) stops at the first
//! `Err`, so it would end on a ten-second outage. [`NoticeExt::on_notice`] keeps such a pipeline
//! running: it hands every [transient](crate::Error::is_transient) error to your callback and
//! yields only events and the errors that need a person.
//!
//! The shape follows async-nats (connection events go to an `event_callback`, subscriptions
//! yield messages only) and rdkafka (client-level errors go to `ClientContext::error`, the
//! stream yields messages and fatal errors); like reqwest-eventsource's stream, the
//! subscription itself still yields everything for those who want to match on each item.

use crate::error::{Error, Result};
use futures::Stream;
use futures::stream::FusedStream;
use pin_project::pin_project;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// How many recent notices are remembered to drop the copies of a connection-wide notice that
/// every merged subscription carries.
const RECENT: usize = 16;

/// [`on_notice`](NoticeExt::on_notice) for every stream of `Result<_, sfstream::Error>`: a
/// [`Subscription`](crate::Subscription), [`Events`](crate::Events), a
/// [`TypedStream`](crate::events::TypedStream), or a merge of them.
pub trait NoticeExt<T>: Stream<Item = Result<T>> + Sized {
    /// Pass the [transient](Error::is_transient) errors (outages being retried, replay gaps,
    /// recovered stalls, unreadable messages) to `on_notice` and yield only events and the
    /// errors that need a person (authentication, a server rejection, an event that does not
    /// fit your type...). Apply it after merging streams: a connection-wide notice that reaches
    /// every merged subscription is passed on once.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// use futures::TryStreamExt;
    /// use sfstream::NoticeExt;
    ///
    /// let orders = client.subscribe("/event/Order_Placed__e").await?;
    /// let invoices = client.subscribe("/topic/InvoiceStatementUpdates").await?;
    /// let mut events = futures::stream::select(orders, invoices)
    ///     .on_notice(|notice| eprintln!("warning: {notice}"));
    /// // Ends on errors that need a person, not on an outage or a replay gap.
    /// while let Some(event) = events.try_next().await? {
    ///     println!("{}", event.channel());
    ///     event.ack();
    /// }
    /// # Ok(()) }
    /// ```
    fn on_notice<F: FnMut(Error)>(self, on_notice: F) -> OnNotice<Self, F> {
        OnNotice {
            inner: self,
            on_notice,
            recent: VecDeque::with_capacity(RECENT),
        }
    }
}

impl<T, S: Stream<Item = Result<T>>> NoticeExt<T> for S {}

/// The stream of [`NoticeExt::on_notice`].
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct OnNotice<S, F> {
    #[pin]
    inner: S,
    on_notice: F,
    recent: VecDeque<Error>,
}

impl<S, F> OnNotice<S, F> {
    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner stream back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<T, S, F> Stream for OnNotice<S, F>
where
    S: Stream<Item = Result<T>>,
    F: FnMut(Error),
{
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Err(e)) if e.is_transient() => {
                    if this.recent.iter().any(|seen| seen.same_report(&e)) {
                        continue;
                    }
                    if this.recent.len() == RECENT {
                        this.recent.pop_front();
                    }
                    this.recent.push_back(e.clone());
                    (this.on_notice)(e);
                    // Loop: the inner stream may have the next item ready. A long run of
                    // notices is bounded by what the inner stream holds.
                }
                other => return Poll::Ready(other),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.inner.size_hint().1)
    }
}

impl<T, S, F> FusedStream for OnNotice<S, F>
where
    S: FusedStream<Item = Result<T>>,
    F: FnMut(Error),
{
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

impl<S: fmt::Debug, F> fmt::Debug for OnNotice<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnNotice")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use futures::{StreamExt, TryStreamExt, stream};

    #[tokio::test]
    async fn notices_go_to_the_callback_once_and_a_try_pipeline_goes_on() {
        let outage = Error::new(
            ErrorKind::TransportTimeout,
            "not re-established; still retrying",
        );
        let gap = Error::new(ErrorKind::ReplayGap, "replay id 5 expired");
        let auth = Error::new(ErrorKind::Authentication, "token revoked");
        // Two merged subscriptions both carry the connection-wide outage (clones of one report).
        let items: Vec<Result<u32>> = vec![
            Ok(1),
            Err(outage.clone()),
            Err(gap.clone()),
            Err(outage.clone()),
            Ok(2),
            Err(auth.clone()),
            Ok(3),
        ];
        let mut notices = Vec::new();
        let mut s = stream::iter(items).on_notice(|n| notices.push(n.kind()));
        let mut seen = Vec::new();
        let end = loop {
            match s.try_next().await {
                Ok(Some(v)) => seen.push(v),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert_eq!(
            seen,
            vec![1, 2],
            "the pipeline ran past the outage and the gap"
        );
        assert_eq!(
            end.unwrap().kind(),
            ErrorKind::Authentication,
            "needs a person: ends it"
        );
        assert_eq!(
            s.next().await.unwrap().unwrap(),
            3,
            "the stream itself goes on"
        );
        drop(s);
        assert_eq!(
            notices,
            vec![ErrorKind::TransportTimeout, ErrorKind::ReplayGap],
            "the copy on the second subscription is dropped"
        );
    }
}
