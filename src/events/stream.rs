//! Typed subscriptions: a stream adapter that decodes each event and leaves acknowledgement and
//! replay tracking to the stream it wraps.

use super::FromEvent;
use crate::error::Result;
use crate::{Event, Events, Subscription};
use futures::Stream;
use futures::stream::FusedStream;
use pin_project::pin_project;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// A stream of typed events over a stream of [`Event`]s: `subscription.typed::<T>()`.
///
/// Every item of the inner stream comes through in order, one for one: an event as
/// `Ok(`[`TypedEvent<T>`]`)`, an event that does not decode as an
/// [`ErrorKind::Decode`](crate::ErrorKind::Decode) error (with the channel, replay id, field
/// path and the event itself), any other error as it was. The stream goes on after either.
/// Acknowledgement and replay tracking are the inner stream's: polling this stream polls it,
/// and [`TypedEvent::ack`] acknowledges the underlying event.
///
/// ```no_run
/// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
/// use futures::StreamExt;
/// use sfstream::events::{ChangeEvent, Field};
///
/// #[derive(serde::Deserialize)]
/// struct Account {
///     #[serde(rename = "Name", default)]
///     name: Field<String>,
/// }
/// let mut accounts = client
///     .subscribe("/data/AccountChangeEvent")
///     .await?
///     .typed::<ChangeEvent<Account>>();
/// while let Some(item) = accounts.next().await {
///     match item {
///         Ok(change) => {
///             if let Some(name) = change.fields.as_ref().and_then(|f| f.name.value()) {
///                 println!("{:?} renamed to {name}", change.header.record_ids);
///             }
///             change.ack();
///         }
///         // A payload that does not fit, an outage, a replay gap: reported, the stream goes on.
///         Err(e) => eprintln!("{e}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct TypedStream<S, T> {
    #[pin]
    inner: S,
    // `fn() -> T`: the stream produces `T`s but holds none, so it is Send/Sync whatever `T` is.
    _type: PhantomData<fn() -> T>,
}

impl<S, T> TypedStream<S, T>
where
    S: Stream<Item = Result<Event>>,
    T: FromEvent,
{
    /// Decode the events of any stream of events: a [`Subscription`], [`Events`], or a merge
    /// of several (`futures::stream::select_all`).
    pub fn new(inner: S) -> Self {
        TypedStream {
            inner,
            _type: PhantomData,
        }
    }
}

impl<S, T> TypedStream<S, T> {
    /// The inner stream, e.g. for [`Subscription::channel`].
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner stream back, e.g. for [`Subscription::unsubscribe`].
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, T> Stream for TypedStream<S, T>
where
    S: Stream<Item = Result<Event>>,
    T: FromEvent,
{
    type Item = Result<TypedEvent<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(self.project().inner.poll_next(cx));
        Poll::Ready(item.map(|item| {
            let event = item?;
            let value = T::from_event(&event)?;
            Ok(TypedEvent { value, event })
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<S, T> FusedStream for TypedStream<S, T>
where
    S: FusedStream<Item = Result<Event>>,
    T: FromEvent,
{
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

impl<S: fmt::Debug, T> fmt::Debug for TypedStream<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedStream")
            .field("inner", &self.inner)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

/// A decoded event and the [`Event`] it came from: dereferences to the `T`, and
/// [`ack`](TypedEvent::ack)s like the event.
#[derive(Debug, Clone)]
pub struct TypedEvent<T> {
    value: T,
    event: Event,
}

impl<T> TypedEvent<T> {
    /// Mark the event processed: the same as [`Event::ack`] on the underlying event.
    pub fn ack(&self) {
        self.event.ack();
    }

    /// The event as received (channel, replay id, raw JSON).
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The decoded value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The decoded value, dropping the event (acknowledge it first if your policy needs it).
    pub fn into_value(self) -> T {
        self.value
    }

    /// The decoded value and the event.
    pub fn into_parts(self) -> (T, Event) {
        (self.value, self.event)
    }
}

impl<T> Deref for TypedEvent<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl Subscription {
    /// The subscription as a stream of typed events, e.g.
    /// `subscription.typed::<ChangeEvent<Account>>()`: see [`TypedStream`]. Acknowledgement and
    /// replay tracking work exactly as on the subscription; [`TypedStream::into_inner`] gives
    /// it back.
    pub fn typed<T: FromEvent>(self) -> TypedStream<Self, T> {
        TypedStream::new(self)
    }
}

impl Events {
    /// The stream as a stream of typed events: see [`Subscription::typed`]. For several event
    /// families on one stream, decode each [`Event`] with [`Event::decode`] by its channel.
    pub fn typed<T: FromEvent>(self) -> TypedStream<Self, T> {
        TypedStream::new(self)
    }
}
