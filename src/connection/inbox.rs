//! Where the connection task leaves events and where the streams take them from.
//!
//! One queue per subscription, under one lock. Every item carries a sequence number so that
//! [`Client::receive`](crate::Client::receive) can take events across queues in arrival order,
//! and an error broadcast to every queue shows up once there. `pending` counts the items queued
//! (events and errors alike, an error once per queue holding it): the connection task sends the
//! next `/meta/connect` only while it is below `max_pending` (backpressure by polling).

use crate::error::Error;
use crate::event::Event;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

pub(crate) type SubId = u64;

/// Subscription and receiver ids are small counters: hashing them is wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

pub(crate) struct Inbox {
    state: Mutex<State>,
    max_pending: usize,
    room: Notify,
}

#[derive(Default)]
struct State {
    queues: IdMap<Queue>,
    next_sub: SubId,
    pending: usize,
    seq: u64,
    closed: bool,
    receivers: IdMap<Waker>,
    next_receiver: u64,
    /// The event each `receive()` stream handed out last (for at-least-once commits).
    receiver_last: IdMap<Event>,
}

struct Queue {
    /// The subscribed channel: names who holds pending items (backpressure diagnosis), and
    /// tells `receive()` whose event it hands out (a PushTopic filter's event may come on its
    /// topic's name, yet its marker is the filter's).
    channel: Arc<str>,
    items: VecDeque<Item>,
    waker: Option<Waker>,
    ended: bool,
    /// No `Subscription` handle: only `receive()` takes from it, and it goes once ended and
    /// drained.
    detached: bool,
    /// The event this subscription's stream handed out last: processed once it polls again.
    last_taken: Option<Event>,
}

impl Queue {
    fn finished(&self) -> bool {
        self.detached && self.ended && self.items.is_empty()
    }
}

/// The result of a poll, plus the event the poll showed to be processed.
pub(crate) type Polled = (Poll<Option<Result<Event, Error>>>, Option<Event>);

struct Item {
    seq: u64,
    value: Result<Event, Error>,
}

/// Wakers collected under the lock, woken after it is released.
#[derive(Default)]
struct Wake(Vec<Waker>);

impl Wake {
    fn all(self) {
        for w in self.0 {
            w.wake();
        }
    }
}

impl State {
    fn take_wakers(&mut self, sub: SubId, wake: &mut Wake) {
        if let Some(w) = self.queues.get_mut(&sub).and_then(|q| q.waker.take()) {
            wake.0.push(w);
        }
    }

    fn take_receivers(&mut self, wake: &mut Wake) {
        if !self.receivers.is_empty() {
            wake.0.extend(self.receivers.drain().map(|(_, w)| w));
        }
    }
}

impl Inbox {
    /// `max_pending == 0` means no limit.
    pub(crate) fn new(max_pending: usize) -> Self {
        Inbox {
            state: Mutex::new(State::default()),
            max_pending,
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (no multi-step invariants span
        // an unwind point), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, channel: &str) -> SubId {
        let mut s = self.lock();
        s.next_sub += 1;
        let id = s.next_sub;
        let ended = s.closed;
        s.queues.insert(
            id,
            Queue {
                channel: Arc::from(channel),
                items: VecDeque::new(),
                waker: None,
                ended,
                detached: false,
                last_taken: None,
            },
        );
        id
    }

    /// Deliver events, in order, each to its subscription.
    pub(crate) fn deliver(&self, events: impl IntoIterator<Item = (SubId, Event)>) {
        let mut wake = Wake::default();
        let mut s = self.lock();
        let mut any = false;
        {
            let State {
                queues,
                seq,
                pending,
                ..
            } = &mut *s;
            // Events come in runs for one subscription: its queue is looked up once per run.
            let mut current: Option<(SubId, Option<&mut Queue>)> = None;
            for (sub, event) in events {
                if current.as_ref().is_none_or(|(c, _)| *c != sub) {
                    current = Some((sub, queues.get_mut(&sub).filter(|q| !q.ended)));
                }
                let Some((_, Some(q))) = &mut current else {
                    continue;
                };
                q.items.push_back(Item {
                    seq: *seq,
                    value: Ok(event),
                });
                *seq += 1;
                *pending += 1;
                if let Some(w) = q.waker.take() {
                    wake.0.push(w);
                }
                any = true;
            }
        }
        if any {
            s.take_receivers(&mut wake);
        }
        drop(s);
        wake.all();
    }

    /// Put an error into one subscription's stream.
    pub(crate) fn push_error(&self, sub: SubId, error: Error) {
        self.push_errors(&[sub], error);
    }

    /// Put one error into every live subscription's stream; `receive()` sees it once.
    pub(crate) fn broadcast_error(&self, error: Error) {
        let subs: Vec<SubId> = self.lock().queues.keys().copied().collect();
        self.push_errors(&subs, error);
    }

    fn push_errors(&self, subs: &[SubId], error: Error) {
        let mut wake = Wake::default();
        let mut s = self.lock();
        let seq = s.seq;
        s.seq += 1;
        for sub in subs {
            if let Some(q) = s.queues.get_mut(sub).filter(|q| !q.ended) {
                q.items.push_back(Item {
                    seq,
                    value: Err(error.clone()),
                });
                // Errors take room like events: a server sending nothing but bad messages to a
                // stalled consumer must not grow its queue without bound.
                s.pending += 1;
                s.take_wakers(*sub, &mut wake);
            }
        }
        s.take_receivers(&mut wake);
        drop(s);
        wake.all();
    }

    /// Close at once: what is queued is dropped (never yielded), every live stream yields
    /// `error` next and then ends. For a lost lease: the new holder redelivers the dropped
    /// events, so yielding them here would only make duplicates.
    pub(crate) fn abort(&self, error: Error) {
        let mut wake = Wake::default();
        let mut s = self.lock();
        s.closed = true;
        let seq = s.seq;
        s.seq += 1;
        let mut dropped = 0;
        let mut errors = 0;
        for q in s.queues.values_mut().filter(|q| !q.ended) {
            dropped += q.items.len();
            q.items.clear();
            q.items.push_back(Item {
                seq,
                value: Err(error.clone()),
            });
            errors += 1;
            q.ended = true;
            if let Some(w) = q.waker.take() {
                wake.0.push(w);
            }
        }
        s.pending += errors;
        s.take_receivers(&mut wake);
        self.release(s, dropped);
        wake.all();
    }

    /// No more items for `sub`; what is queued is still yielded.
    pub(crate) fn end(&self, sub: SubId) {
        let mut wake = Wake::default();
        let mut s = self.lock();
        if let Some(q) = s.queues.get_mut(&sub) {
            q.ended = true;
            if q.finished() {
                s.queues.remove(&sub);
            }
        }
        s.take_wakers(sub, &mut wake);
        s.take_receivers(&mut wake);
        drop(s);
        wake.all();
    }

    /// The handle of `sub` is gone but the subscription stays (`Subscription::detach`).
    ///
    /// What the queue holds becomes visible to `receive()` readers, which may already be waiting:
    /// they are woken, or a full queue would pause the connect loop with nobody to drain it.
    /// Returns the event the handle took last, for the caller to count as processed.
    pub(crate) fn detach(&self, sub: SubId) -> Option<Event> {
        let mut wake = Wake::default();
        let mut s = self.lock();
        let mut last = None;
        if let Some(q) = s.queues.get_mut(&sub) {
            q.detached = true;
            last = q.last_taken.take();
            let visible = !q.items.is_empty() || q.ended;
            if q.finished() {
                s.queues.remove(&sub);
            }
            if visible {
                s.take_receivers(&mut wake);
            }
        }
        drop(s);
        wake.all();
        last
    }

    /// Forget `sub` and whatever it still held (its handle was dropped).
    pub(crate) fn remove(&self, sub: SubId) {
        let mut s = self.lock();
        let items = s.queues.remove(&sub).map_or(0, |q| q.items.len());
        self.release(s, items);
    }

    /// The client is closed: every stream ends once drained.
    pub(crate) fn close(&self) {
        let mut wake = Wake::default();
        let mut s = self.lock();
        s.closed = true;
        let subs: Vec<SubId> = s.queues.keys().copied().collect();
        for sub in subs {
            if let Some(q) = s.queues.get_mut(&sub) {
                q.ended = true;
            }
            s.take_wakers(sub, &mut wake);
        }
        s.take_receivers(&mut wake);
        drop(s);
        wake.all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// `items` were taken or dropped: unlock, and wake the connection task if that made room.
    fn release(&self, mut s: MutexGuard<'_, State>, items: usize) {
        let before = s.pending;
        s.pending -= items;
        let after = s.pending;
        drop(s);
        if self.max_pending > 0 && before >= self.max_pending && after < self.max_pending {
            self.room.notify_one();
        }
    }

    /// Take the next item of `sub`. With `track`, the event taken last time is returned as
    /// processed and the one taken now is remembered.
    pub(crate) fn poll_sub(&self, sub: SubId, cx: &mut Context<'_>, track: bool) -> Polled {
        let mut s = self.lock();
        let Some(q) = s.queues.get_mut(&sub) else {
            return (Poll::Ready(None), None);
        };
        let done = q.last_taken.take();
        match q.items.pop_front() {
            Some(item) => {
                if track && let Ok(event) = &item.value {
                    q.last_taken = Some(event.clone());
                }
                self.release(s, 1);
                (Poll::Ready(Some(item.value)), done)
            }
            None if q.ended => (Poll::Ready(None), done),
            None => {
                if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    q.waker = Some(cx.waker().clone());
                }
                (Poll::Pending, done)
            }
        }
    }

    pub(crate) fn new_receiver(&self) -> u64 {
        let mut s = self.lock();
        s.next_receiver += 1;
        s.next_receiver
    }

    /// Returns the event the receiver took last, for the caller to count as processed.
    pub(crate) fn drop_receiver(&self, id: u64) -> Option<Event> {
        let mut s = self.lock();
        s.receivers.remove(&id);
        s.receiver_last.remove(&id)
    }

    /// Take the oldest item across every subscription (`track` as in [`Inbox::poll_sub`]), with
    /// the subscribed channel of the queue an event came from.
    pub(crate) fn poll_any(
        &self,
        receiver: u64,
        cx: &mut Context<'_>,
        track: bool,
    ) -> (Polled, Option<Arc<str>>) {
        let mut s = self.lock();
        let done = s.receiver_last.remove(&receiver);
        // Only subscriptions without a handle: a queue has exactly one consumer.
        let oldest = s
            .queues
            .iter()
            .filter(|(_, q)| q.detached)
            .filter_map(|(id, q)| q.items.front().map(|i| (i.seq, *id)))
            .min();
        let Some((seq, sub)) = oldest else {
            if s.closed {
                return ((Poll::Ready(None), done), None);
            }
            s.receivers.insert(receiver, cx.waker().clone());
            return ((Poll::Pending, done), None);
        };
        let Some(q) = s.queues.get_mut(&sub) else {
            return ((Poll::Pending, done), None); // unreachable: the front was just seen
        };
        let subscribed = q.channel.clone();
        let Some(item) = q.items.pop_front() else {
            return ((Poll::Pending, done), None); // unreachable: the front was just seen
        };
        if q.finished() {
            s.queues.remove(&sub);
        }
        let mut taken = 1;
        match &item.value {
            Ok(event) if track => {
                s.receiver_last.insert(receiver, event.clone());
            }
            Ok(_) => {}
            Err(_) => {
                // A broadcast error sits at the front of every detached queue that got it.
                for q in s.queues.values_mut().filter(|q| q.detached) {
                    if q.items.front().is_some_and(|i| i.seq == seq) {
                        q.items.pop_front();
                        taken += 1;
                    }
                }
                s.queues.retain(|_, q| !q.finished());
            }
        }
        self.release(s, taken);
        ((Poll::Ready(Some(item.value)), done), Some(subscribed))
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().pending
    }

    /// The channels whose queues hold items, with how many each, most first.
    pub(crate) fn holders(&self) -> Vec<(String, usize)> {
        let s = self.lock();
        let mut by_channel: std::collections::BTreeMap<&str, usize> = Default::default();
        for q in s.queues.values().filter(|q| !q.items.is_empty()) {
            *by_channel.entry(&*q.channel).or_default() += q.items.len();
        }
        let mut holders: Vec<(String, usize)> = by_channel
            .into_iter()
            .map(|(c, n)| (c.to_owned(), n))
            .collect();
        holders.sort_by_key(|h| std::cmp::Reverse(h.1));
        holders
    }

    pub(crate) fn has_room(&self) -> bool {
        self.max_pending == 0 || self.lock().pending < self.max_pending
    }

    /// Resolves once `pending` is below the limit.
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod model_tests;
