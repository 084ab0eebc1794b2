//! [`Publisher`]: publishing to one channel as a [`futures::Sink`], so `stream.forward(publisher)`
//! works, with the events that are ready batched into one REST request.
//!
//! The sink buffers up to [`batch_size`](Publisher::batch_size) events (`poll_ready` is pending
//! while the buffer is full and a request is in flight: backpressure), and `poll_flush` sends
//! what is buffered as one sObject collections request (platform events) or one push request
//! (generic streaming). One request is in flight at a time, so events are published in the order
//! they were sent; the next batch fills while one is in flight.

use super::{PublishResult, PushResult, event_record, event_type, generic_channel};
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{Sink, Stream};
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// What Salesforce said about one event sent through a [`Publisher`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A platform event's save result (`success` false: rejected, see its `errors`).
    Event(PublishResult),
    /// A generic streaming push's result (a push is accepted or its whole request fails).
    Push(PushResult),
}

impl Outcome {
    /// Whether Salesforce accepted the event.
    pub fn is_success(&self) -> bool {
        match self {
            Outcome::Event(result) => result.success,
            Outcome::Push(_) => true,
        }
    }
}

/// One event sent through a [`Publisher`] with its [`Outcome`], on the
/// [`PublishResults`] stream, in the order the events were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published<T> {
    /// The event as it was given to the sink.
    pub event: T,
    /// Salesforce's answer for it.
    pub outcome: Outcome,
}

/// The results of a [`Publisher`] made by [`with_results`](Publisher::with_results): one
/// [`Published`] per event, in order. Ends when the publisher is closed or dropped.
pub struct PublishResults<T> {
    rx: mpsc::Receiver<Published<T>>,
}

impl<T> Stream for PublishResults<T> {
    type Item = Published<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl<T> fmt::Debug for PublishResults<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishResults").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Target {
    /// A platform event's API name (`Order__e`).
    Event(String),
    /// A generic streaming channel (`/u/Name`).
    Generic(String),
}

struct InFlight<T> {
    events: Vec<T>,
    request: BoxFuture<'static, Result<Vec<Outcome>>>,
}

/// A [`futures::Sink`] of events for one platform event type or generic streaming channel, made
/// by [`Client::publisher`].
///
/// Events are serialized when sent (`start_send`; a value that is not a JSON object is an
/// [`ErrorKind::InvalidOperation`] error for platform events; for a generic channel a string is
/// the payload and anything else its JSON text), buffered, and published in batches of up to
/// [`batch_size`](Publisher::batch_size) (default and maximum
/// [`MAX_COLLECTION_RECORDS`](super::MAX_COLLECTION_RECORDS)). With
/// `stream.forward(publisher)` a batch is every event the stream had ready, up to that size.
/// The publisher holds at most one batch in flight and one filling: that is its memory bound,
/// and a slow Salesforce slows the stream feeding it.
///
/// What happens to each event:
///
/// | | a rejected event (`success: false`) | a failed request (network, HTTP 5xx, a token refused after one refresh) |
/// |---|---|---|
/// | `client.publisher(..)` | the sink fails with [`ErrorKind::Rejected`] naming the first rejection and its count | the sink fails with that error |
/// | `.with_results(n)` | a [`Published`] with its [`Outcome`] on [`PublishResults`]; the sink goes on | the sink fails with that error |
///
/// Accepted events go to the results stream when there is one. After an error, the events not
/// known to be published (the rejected ones, the batch of a failed request, and the buffered ones
/// after them) are kept, in order, for [`take_unpublished`](Publisher::take_unpublished);
/// the publisher stays usable. A failed request may still have published some of its events
/// (a 5xx after Salesforce processed it), so publishing them again may duplicate them:
/// subscribers de-duplicate on `EventUuid` or a field of their own. An HTTP 401 is not a
/// failure: the token is refreshed and the request sent again once, as for every REST call.
///
/// Use `stream.forward(&mut publisher)` to keep the publisher (a `&mut` of a sink is a sink).
/// Runnable on the emulator (feature `emulator`; no account needed):
///
/// ```
/// use futures::{StreamExt, stream};
/// use sfstream::emulator::Emulator;
///
/// #[derive(serde::Serialize)]
/// struct Order {
///     #[serde(rename = "Amount__c")]
///     amount: f64,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sfstream::Result<()> {
/// let emu = Emulator::start().await.expect("emulator");
/// emu.require_fields("Order_Placed__e", &["Amount__c"]);
/// let client = emu.client_builder().build()?;
///
/// // Failures stop the stream; the events not published are kept for a retry.
/// let mut publisher = client.publisher::<Order>("/event/Order_Placed__e")?;
/// let orders = stream::iter((1..=1000).map(|n| Ok(Order { amount: n as f64 })));
/// if let Err(e) = orders.forward(&mut publisher).await {
///     let unpublished = publisher.take_unpublished();
///     eprintln!("{e}; {} orders to retry", unpublished.len());
/// }
/// assert_eq!(emu.stats().rest_events_published, 1000); // in 5 requests of 200
///
/// // Every event's result, in order; rejections do not stop the stream.
/// let (mut publisher, results) = client
///     .publisher::<serde_json::Value>("Order_Placed__e")?
///     .with_results(256);
/// let report = tokio::spawn(results.filter(|sent| std::future::ready(!sent.outcome.is_success())).count());
/// let events = [serde_json::json!({"Amount__c": 1}), serde_json::json!({"Note__c": "no amount"})];
/// stream::iter(events.map(Ok)).forward(&mut publisher).await?;
/// drop(publisher); // forward closed it; dropping it ends the results stream
/// assert_eq!(report.await.unwrap(), 1);
/// # Ok(()) }
/// ```
///
/// Events buffered but not flushed when the publisher is dropped are not sent: `flush` or
/// `close` it first (`forward` closes it).
pub struct Publisher<T> {
    client: Client,
    target: Target,
    batch_size: usize,
    /// Events accepted by `start_send`, with their serialized form.
    buffer: Vec<(T, Value)>,
    in_flight: Option<InFlight<T>>,
    /// Results waiting for room on the results channel.
    outbox: VecDeque<Published<T>>,
    results: Option<mpsc::Sender<Published<T>>>,
    /// Events not known to be published, after an error.
    unpublished: Vec<T>,
    /// An error found while `poll_ready` was asked for room, returned by the next `start_send`
    /// (which keeps its event) or flush, so a `forward` loses no event it took from its stream.
    error: Option<Error>,
}

// No field is ever pinned (the request is boxed), so `&mut Publisher` is a sink too.
impl<T> Unpin for Publisher<T> {}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("target", &self.target)
            .field("batch_size", &self.batch_size)
            .field("buffered", &self.buffer.len())
            .field(
                "in_flight",
                &self.in_flight.as_ref().map(|f| f.events.len()),
            )
            .field("unpublished", &self.unpublished.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A [`Publisher`], the [`futures::Sink`] for `channel`: a platform event (`Order__e` or
    /// `/event/Order__e`) or a generic streaming channel (`/u/Name`). An invalid name is an
    /// [`ErrorKind::InvalidOperation`] error, before any request.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// let publisher = client.publisher::<serde_json::Value>("/u/Notifications")?;
    /// # Ok(()) }
    /// ```
    pub fn publisher<T: Serialize>(&self, channel: &str) -> Result<Publisher<T>> {
        let target = if channel.starts_with("/u/") {
            Target::Generic(generic_channel(channel)?.to_owned())
        } else {
            Target::Event(event_type(channel)?.to_owned())
        };
        Ok(Publisher {
            client: self.clone(),
            target,
            batch_size: super::MAX_COLLECTION_RECORDS,
            buffer: Vec::new(),
            in_flight: None,
            outbox: VecDeque::new(),
            results: None,
            unpublished: Vec::new(),
            error: None,
        })
    }
}

impl<T: Serialize + Send + 'static> Publisher<T> {
    /// At most `size` events per request (clamped to 1..=200, Salesforce's limit of an sObject
    /// collections request; the same limit is kept for generic pushes).
    ///
    /// ```no_run
    /// # fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// let publisher = client.publisher::<serde_json::Value>("Order__e")?.batch_size(50);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.clamp(1, super::MAX_COLLECTION_RECORDS);
        self
    }

    /// Report every event's [`Outcome`] on the returned stream, in order, and let rejected
    /// events go there instead of failing the sink. The stream holds up to `capacity` results
    /// (at least 1); when it is full the publisher waits, so read it concurrently (another task,
    /// `select`). If it is dropped, the publisher fails on rejections again.
    ///
    /// ```no_run
    /// # fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// let (publisher, results) = client.publisher::<serde_json::Value>("Order__e")?.with_results(64);
    /// # Ok(()) }
    /// ```
    pub fn with_results(mut self, capacity: usize) -> (Self, PublishResults<T>) {
        // futures' channel holds `buffer + senders` items.
        let (tx, rx) = mpsc::channel(capacity.max(1) - 1);
        self.results = Some(tx);
        (self, PublishResults { rx })
    }

    /// The events not known to be published, in the order they were sent: after an error, the
    /// rejected events (without a results stream), the batch of a failed request, every event
    /// buffered after them, and the event offered to `start_send` when the error was reported
    /// (so `forward` loses none it took from its stream). An event that does not serialize is
    /// kept here too. Taking them clears them; events buffered while no error occurred are not
    /// included (the next flush sends them).
    pub fn take_unpublished(&mut self) -> Vec<T> {
        std::mem::take(&mut self.unpublished)
    }

    /// How many events are buffered, in flight or waiting for the results stream.
    pub fn pending(&self) -> usize {
        self.buffer.len()
            + self.in_flight.as_ref().map_or(0, |f| f.events.len())
            + self.outbox.len()
    }

    fn serialize(&self, event: &T) -> Result<Value> {
        match &self.target {
            Target::Event(name) => event_record(name, event),
            Target::Generic(_) => match serde_json::to_value(event) {
                Ok(Value::String(s)) => Ok(Value::String(s)),
                Ok(other) => Ok(Value::String(other.to_string())),
                Err(e) => {
                    Err(Error::new(ErrorKind::Client, "cannot serialize the event").with_source(e))
                }
            },
        }
    }

    /// Send the buffer as one request.
    fn start_request(&mut self) {
        let (events, records): (Vec<T>, Vec<Value>) = self.buffer.drain(..).unzip();
        let client = self.client.clone();
        let request: BoxFuture<'static, Result<Vec<Outcome>>> = match self.target.clone() {
            Target::Event(_) => Box::pin(async move {
                let results = client.publish_records(&records).await?;
                Ok(results.into_iter().map(Outcome::Event).collect())
            }),
            Target::Generic(channel) => Box::pin(async move {
                let payloads: Vec<String> = records
                    .into_iter()
                    .map(|r| match r {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect();
                let results = client.push_generic_many(&channel, &payloads).await?;
                Ok(results.into_iter().map(Outcome::Push).collect())
            }),
        };
        self.in_flight = Some(InFlight { events, request });
    }

    /// After a failure: everything not published, in order, kept for `take_unpublished`.
    fn keep_unpublished(&mut self, events: impl IntoIterator<Item = T>) {
        self.unpublished.extend(events);
        self.unpublished
            .extend(self.buffer.drain(..).map(|(event, _)| event));
    }

    /// Drive the request in flight to its end; `Ready(Ok)` when none is in flight.
    fn poll_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let answer = ready!(in_flight.request.as_mut().poll(cx));
        let Some(InFlight { events, .. }) = self.in_flight.take() else {
            return Poll::Ready(Ok(()));
        };
        let outcomes = match answer {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.keep_unpublished(events);
                return Poll::Ready(Err(e));
            }
        };
        let report = self.results.as_ref().is_some_and(|tx| !tx.is_closed());
        let mut rejected = Vec::new();
        for (event, outcome) in events.into_iter().zip(outcomes) {
            if report {
                self.outbox.push_back(Published { event, outcome });
            } else if !outcome.is_success() {
                rejected.push((event, outcome));
            }
        }
        if rejected.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let count = rejected.len();
        let first = describe(&rejected[0].1);
        self.keep_unpublished(rejected.into_iter().map(|(event, _)| event));
        Poll::Ready(Err(Error::new(
            ErrorKind::Rejected,
            format!("Salesforce rejected {count} event(s); the first: {first}"),
        )))
    }

    /// Hand waiting results to the results stream; `Ready` when none waits.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.outbox.is_empty() {
            let Some(tx) = self.results.as_mut() else {
                self.outbox.clear();
                break;
            };
            match tx.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    if let Some(item) = self.outbox.pop_front() {
                        let _ = tx.start_send(item);
                    }
                }
                // The reader is gone: nobody to report to (rejections fail the sink from now on).
                Poll::Ready(Err(_)) => {
                    self.outbox.clear();
                    self.results = None;
                }
            }
        }
        Poll::Ready(())
    }

    /// Results out, request in flight finished: `Ready(Ok)` when nothing is in flight or waiting.
    fn poll_settled(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            ready!(self.poll_outbox(cx));
            if self.in_flight.is_none() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_in_flight(cx))?;
        }
    }
}

impl<T: Serialize + Send + 'static> Publisher<T> {
    /// Room for one more event: `Ready(Ok)` once the buffer has room, sending a full buffer
    /// when the batch before it is done.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Progress on the request in flight even while there is room, so results flow.
        if self.in_flight.is_some()
            && let Poll::Ready(result) = self.poll_in_flight(cx)
        {
            result?;
        }
        let _ = self.poll_outbox(cx);
        if self.buffer.len() < self.batch_size {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_settled(cx))?;
        self.start_request();
        // Polled once so the request starts now and its waker is registered.
        if let Poll::Ready(result) = self.poll_in_flight(cx) {
            result?;
        }
        Poll::Ready(Ok(()))
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Event(result) => result
            .failures()
            .map(|e| format!("{}: {}", e.status_code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Outcome::Push(result) => format!("{result:?}"),
    }
}

impl<T: Serialize + Send + 'static> Sink<T> for Publisher<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.error.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Err(e) = ready!(this.poll_room(cx)) {
            // The buffer is now empty (kept as unpublished): room for the event `start_send`
            // keeps too before it reports the error.
            this.error = Some(e);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, event: T) -> Result<()> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            this.unpublished.push(event);
            return Err(e);
        }
        let record = match this.serialize(&event) {
            Ok(record) => record,
            Err(e) => {
                this.unpublished.push(event);
                return Err(e);
            }
        };
        this.buffer.push((event, record));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        loop {
            ready!(this.poll_settled(cx))?;
            if this.buffer.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.start_request();
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut *this).poll_flush(cx))?;
        // Ends the results stream.
        this.results = None;
        Poll::Ready(Ok(()))
    }
}
