//! [`HandOff`]: a subscription's events handed to worker tasks without breaking durability.
//!
//! Moving events to other tasks (an mpsc channel, `tokio::spawn`) is read-ahead: under
//! `AfterProcessed` the subscription counts an event processed as soon as it is polled for the
//! next one, while a worker may still be on it. The hand-off polls the subscription without that
//! rule, so an event counts as processed only when its worker calls [`Handed::ack`], whatever
//! the commit policy (under `OnReceive` too: the ack, not the hand-out, stores its marker), and
//! it bounds how many events are out at workers and not yet acked.

mod order;

use super::subscription::Subscription;
use crate::error::Result;
use crate::event::{Event, Hold};
use crate::replay::CommitPolicy;
use crate::replay::tracker::marker_key;
use order::Order;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// A subscription shared by worker tasks: a bounded channel of events whose acks count, made by
/// [`Subscription::hand_off`]. Cheap to clone; each clone takes from the same subscription, each
/// event goes to one worker. The subscription ends (unsubscribes) when the last clone is dropped.
///
/// At most `capacity` events are out at workers and not yet acked (or dropped): [`recv`]
/// waits for an ack before it hands out more, so a slow worker pool slows the subscription, and
/// a crash redelivers at most the events from the oldest unacked one on.
///
/// An event counts as processed when its worker calls [`Handed::ack`], under every commit
/// policy (under `OnReceive` the ack stores its marker, not the hand-out); dropping a
/// [`Handed`] (and every clone of its event) without acking frees its place but leaves it
/// unprocessed (the replay marker stays before it until a restart redelivers it; a warning is
/// logged once, by the tracker under `Manual`). Notices (`Err` items: an outage, a replay gap)
/// go to the worker whose `recv` meets them.
///
/// ```no_run
/// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
/// let orders = client.subscribe("/event/Order_Placed__e").await?.hand_off(16);
/// let mut workers = Vec::new();
/// for _ in 0..4 {
///     let orders = orders.clone();
///     workers.push(tokio::spawn(async move {
///         while let Some(item) = orders.recv().await {
///             match item {
///                 Ok(event) => {
///                     println!("{:?}", event.replay_id()); // the work
///                     event.ack(); // processed: the replay marker may pass it
///                 }
///                 Err(notice) => eprintln!("{notice}"),
///             }
///         }
///     }));
/// }
/// drop(orders);
/// # Ok(()) }
/// ```
///
/// [`recv`]: HandOff::recv
#[derive(Clone)]
pub struct HandOff {
    inner: Arc<Inner>,
}

struct Inner {
    /// One worker polls the subscription at a time (it has one waker per queue); the others
    /// queue on the lock, first come first served.
    sub: Mutex<Subscription>,
    out: Arc<Semaphore>,
    capacity: usize,
    channel: String,
    /// `OnReceive` with a storage: the subscription stores nothing for the hand-off's polls,
    /// the acks store the markers in hand-out order.
    order: Option<Arc<Order>>,
    /// Whether the hand-off warns about an event dropped unacked: not where the tracker does
    /// (`Manual` with a storage), or the warning would be logged twice.
    warn: bool,
}

impl Subscription {
    /// Hand this subscription's events to worker tasks: see [`HandOff`]. `capacity` (at least
    /// 1) bounds the events out at workers and not yet acked.
    ///
    /// ```no_run
    /// # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
    /// let orders = client.subscribe("/event/Order_Placed__e").await?.hand_off(16);
    /// # Ok(()) }
    /// ```
    pub fn hand_off(self, capacity: usize) -> HandOff {
        let capacity = capacity.max(1);
        let replay = self.replay().clone();
        let stores = replay.storage().is_some();
        let order = (stores && replay.policy() == CommitPolicy::OnReceive)
            .then(|| Arc::new(Order::new(replay.clone())));
        HandOff {
            inner: Arc::new(Inner {
                channel: self.channel().to_owned(),
                sub: Mutex::new(self),
                out: Arc::new(Semaphore::new(capacity)),
                capacity,
                order,
                warn: !(stores && replay.policy() == CommitPolicy::Manual),
            }),
        }
    }
}

impl HandOff {
    /// The next event for this worker, once fewer than `capacity` are out; `None` when the
    /// subscription has ended (client closed). An `Err` is a notice or a failure of the
    /// subscription, as on [`Subscription`]'s stream.
    pub async fn recv(&self) -> Option<Result<Handed>> {
        // Never closed, so acquiring only fails if it were: treat that as the end.
        let permit = self.inner.out.clone().acquire_owned().await.ok()?;
        let mut sub = self.inner.sub.lock().await;
        let item = std::future::poll_fn(|cx| sub.poll_untracked(cx)).await?;
        Some(item.map(|mut event| {
            // Numbered under the subscription's lock: in hand-out order.
            let order = self.inner.order.as_ref().map(|order| {
                let key = marker_key(&self.inner.channel, event.channel());
                let number = order.push(key, event.data());
                (order.clone(), number)
            });
            let unacked = self.inner.warn.then(|| event.clone());
            event.set_hold(Arc::new(Place {
                permit: std::sync::Mutex::new(Some(permit)),
                order,
                unacked,
            }));
            Handed { event }
        }))
    }

    /// The subscribed channel.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// How many places of `capacity` are taken: events out at workers and not yet acked or
    /// dropped, plus workers waiting in [`recv`](HandOff::recv) for an event.
    pub fn outstanding(&self) -> usize {
        self.inner.capacity - self.inner.out.available_permits()
    }
}

impl fmt::Debug for HandOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOff")
            .field("channel", &self.inner.channel)
            .field("capacity", &self.inner.capacity)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

/// An event handed out by a [`HandOff`]: the [`Event`] (it dereferences to it), which holds its
/// place among the `capacity` events out until it is acked, or until it and every clone of it
/// are dropped. [`ack`](Handed::ack) it when done.
pub struct Handed {
    event: Event,
}

impl Handed {
    /// Processed: the replay marker may pass this event, and the hand-off may hand out one more.
    pub fn ack(self) {
        self.event.ack();
    }

    /// The event. It keeps its place among the `capacity` events out: [`Event::ack`] on it (or
    /// any clone) marks it processed and frees the place, and so does dropping it and every
    /// clone (then it stays unprocessed, as a dropped [`Handed`] does).
    pub fn into_event(self) -> Event {
        self.event
    }
}

impl Deref for Handed {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// A handed-out event's place among the `capacity` out, shared by the event's clones.
struct Place {
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// Under `OnReceive` with a storage: the event's number in the hand-off's order.
    order: Option<(Arc<Order>, u64)>,
    /// The event to warn about if it goes unacked (`None` where the tracker warns), without
    /// its place (that would be a cycle).
    unacked: Option<Event>,
}

impl Hold for Place {
    fn acked(&self) {
        let permit = self.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
        if permit.is_some()
            && let Some((order, number)) = &self.order
        {
            order.done(*number);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let unacked = self
            .permit
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if unacked && let Some(event) = &self.unacked {
            tracing::warn!(
                channel = %crate::error::sanitized(event.channel()),
                replay_id = event.replay_id(),
                "an event handed off was dropped without ack(): it stays unprocessed, so the \
                 stored replay marker stays before it until a restart delivers it again"
            );
        }
    }
}

impl fmt::Debug for Handed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handed")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}
