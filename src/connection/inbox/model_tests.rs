//! Property-based model test of the inbox and its backpressure.
//!
//! Random sequences of what the connection task does (responses of events and error items for
//! the subscriptions, errors broadcast to every stream, unsubscribes, close) and what the
//! streams do (subscribe, poll a `Subscription`, poll `receive()` streams, detach, drop a
//! handle or a `receive()` stream), against a model of one FIFO queue per subscription. A
//! response arrives only while the connect loop runs, which it does while the inbox has room, as
//! in the task; otherwise the loop waits on [`Inbox::room`]. After every step:
//!
//! - every item a reader takes is the next one its queue holds in the model (in order, none
//!   duplicated), and `receive()` takes the oldest across the detached queues;
//! - with tracking, each poll returns as processed exactly the event its stream handed out
//!   before, and `detach` and dropping a `receive()` stream return the one in hand;
//! - `pending()` is the number of items queued, `holders()` names exactly the channels holding
//!   them, and pending never exceeds `max_pending - 1` plus one response;
//! - a parked `Subscription` or `receive()` reader that could now take something was woken
//!   (`detach` included), and a connect loop waiting for room was woken once there is room.
//!
//! At the end the client closes and every stream drains: everything delivered was taken once.

use super::*;
use crate::bayeux::Data;
use crate::error::ErrorKind;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Wake as StdWake;

/// Subscribed channel names; a subscription is made on `CHANNELS[i % len]`.
const CHANNELS: [&str; 3] = ["/event/A__e", "/event/B__e", "/data/AccountChangeEvent"];
const MAX_RESPONSE: usize = 6;

#[derive(Default)]
struct Flag(AtomicBool);

impl StdWake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe,
    /// A response: events (`true`) or error items (`false`) for subscriptions (indexes modulo
    /// the live ones), in order.
    Response(Vec<(usize, bool)>),
    /// An error for every stream (an outage report), while the connect loop runs.
    Broadcast,
    PollSub(usize),
    /// Poll one of two `receive()` streams.
    PollAny(usize),
    /// Drop one of the `receive()` streams (a new one takes its place).
    DropReceiver(usize),
    Detach(usize),
    /// The `Subscription` handle is dropped (or `unsubscribe` after a detach: queue ends).
    Drop(usize),
    /// Unsubscribed: the queue ends, what it holds is still yielded.
    Unsubscribe(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Subscribe),
        4 => proptest::collection::vec((any::<usize>(), prop::bool::weighted(0.85)), 1..MAX_RESPONSE)
            .prop_map(Op::Response),
        1 => Just(Op::Broadcast),
        4 => any::<usize>().prop_map(Op::PollSub),
        3 => (0..2usize).prop_map(Op::PollAny),
        1 => (0..2usize).prop_map(Op::DropReceiver),
        2 => any::<usize>().prop_map(Op::Detach),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Unsubscribe),
    ]
}

/// One queued item in the model: its label and whether it is an event.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Label {
    n: u64,
    event: bool,
}

struct Sub {
    id: SubId,
    channel: &'static str,
    detached: bool,
    ended: bool,
    queue: VecDeque<Label>,
    /// The handle's reader is parked with this waker.
    parked: Option<Arc<Flag>>,
    /// The event its `Subscription` handed out last (tracking).
    last: Option<u64>,
}

struct Receiver {
    id: u64,
    parked: Option<Arc<Flag>>,
    last: Option<u64>,
}

type Room<'a> = (Pin<Box<dyn Future<Output = ()> + 'a>>, Arc<Flag>);

struct Model<'a> {
    inbox: &'a Inbox,
    max_pending: usize,
    track: bool,
    subs: Vec<Sub>,
    receivers: [Receiver; 2],
    next_label: u64,
    /// The connect loop waiting for room.
    room: Option<Room<'a>>,
    /// The most items one response (or one broadcast error) added.
    largest_response: usize,
}

fn label_of(item: &Result<Event, Error>) -> Label {
    match item {
        Ok(event) => Label {
            n: event.data().get().parse().unwrap(),
            event: true,
        },
        Err(e) => Label {
            n: e.message().trim_start_matches("item ").parse().unwrap(),
            event: false,
        },
    }
}

fn event_label(event: &Option<Event>) -> Option<u64> {
    event.as_ref().map(|e| e.data().get().parse().unwrap())
}

fn poll_with(flag: &Arc<Flag>, f: impl FnOnce(&mut Context<'_>) -> Polled) -> Polled {
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    f(&mut cx)
}

impl<'a> Model<'a> {
    fn new(inbox: &'a Inbox, max_pending: usize, track: bool) -> Self {
        let receiver = || Receiver {
            id: inbox.new_receiver(),
            parked: None,
            last: None,
        };
        Model {
            inbox,
            max_pending,
            track,
            subs: Vec::new(),
            receivers: [receiver(), receiver()],
            next_label: 0,
            room: None,
            largest_response: 0,
        }
    }

    fn label(&mut self, event: bool) -> Label {
        self.next_label += 1;
        Label {
            n: self.next_label,
            event,
        }
    }

    /// Index of a live subscription, if any.
    fn pick(&self, i: usize) -> Option<usize> {
        (!self.subs.is_empty()).then(|| i % self.subs.len())
    }

    fn connect_loop_runs(&self) -> bool {
        self.max_pending == 0 || self.inbox.pending() < self.max_pending
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Subscribe => {
                let channel = CHANNELS[self.subs.len() % CHANNELS.len()];
                self.subs.push(Sub {
                    id: self.inbox.register(channel),
                    channel,
                    detached: false,
                    ended: false,
                    queue: VecDeque::new(),
                    parked: None,
                    last: None,
                });
            }
            Op::Response(items) if self.connect_loop_runs() && !self.subs.is_empty() => {
                let before = self.inbox.pending();
                // Events and error items in arrival order; the task hands a response's events
                // over in one call and its malformed items one by one.
                let mut events = Vec::new();
                for (i, is_event) in items {
                    let i = i % self.subs.len();
                    let label = self.label(is_event);
                    if !self.subs[i].ended {
                        self.subs[i].queue.push_back(label);
                    }
                    let id = self.subs[i].id;
                    if is_event {
                        let data = Data::from_validated(&label.n.to_string());
                        events.push((id, Event::new(Arc::from(self.subs[i].channel), data)));
                    } else {
                        self.inbox.deliver(std::mem::take(&mut events));
                        let error = Error::new(ErrorKind::Protocol, format!("item {}", label.n));
                        self.inbox.push_error(id, error);
                    }
                }
                self.inbox.deliver(events);
                self.largest_response = self.largest_response.max(self.inbox.pending() - before);
            }
            Op::Broadcast if self.connect_loop_runs() => {
                let before = self.inbox.pending();
                let label = self.label(false);
                for s in self.subs.iter_mut().filter(|s| !s.ended) {
                    s.queue.push_back(label);
                }
                let error = Error::new(ErrorKind::Protocol, format!("item {}", label.n));
                self.inbox.broadcast_error(error);
                self.largest_response = self.largest_response.max(self.inbox.pending() - before);
            }
            Op::PollSub(i) => {
                if let Some(i) = self.pick(i).filter(|i| !self.subs[*i].detached) {
                    self.poll_sub(i)?;
                }
            }
            Op::PollAny(r) => self.poll_any(r)?,
            Op::DropReceiver(r) => {
                let done = self.inbox.drop_receiver(self.receivers[r].id);
                prop_assert_eq!(event_label(&done), self.receivers[r].last.take());
                self.receivers[r] = Receiver {
                    id: self.inbox.new_receiver(),
                    parked: None,
                    last: None,
                };
            }
            Op::Detach(i) => {
                if let Some(i) = self.pick(i).filter(|i| !self.subs[*i].detached) {
                    let s = &mut self.subs[i];
                    s.detached = true;
                    s.parked = None;
                    let done = self.inbox.detach(s.id);
                    prop_assert_eq!(
                        event_label(&done),
                        s.last.take(),
                        "detach: the event in hand"
                    );
                }
            }
            Op::Drop(i) => {
                if let Some(i) = self.pick(i) {
                    let s = self.subs.remove(i);
                    if s.detached {
                        // No handle: `unsubscribe` ends it, and `receive()` drains it.
                        self.inbox.end(s.id);
                        let mut s = s;
                        s.ended = true;
                        self.subs.insert(i, s);
                    } else {
                        self.inbox.remove(s.id);
                    }
                }
            }
            Op::Unsubscribe(i) => {
                if let Some(i) = self.pick(i) {
                    self.subs[i].ended = true;
                    self.inbox.end(self.subs[i].id);
                }
            }
            _ => {}
        }
        // A detached queue that ended and drained is gone from the inbox.
        self.subs
            .retain(|s| !(s.detached && s.ended && s.queue.is_empty()));
        self.check()
    }

    fn poll_sub(&mut self, i: usize) -> Result<(), TestCaseError> {
        let flag = Arc::new(Flag::default());
        let (id, track) = (self.subs[i].id, self.track);
        let (poll, done) = poll_with(&flag, |cx| self.inbox.poll_sub(id, cx, track));
        let s = &mut self.subs[i];
        prop_assert_eq!(
            event_label(&done),
            s.last.take(),
            "poll: the event handed out before"
        );
        s.parked = None;
        match poll {
            Poll::Ready(Some(item)) => {
                let label = label_of(&item);
                prop_assert_eq!(
                    Some(label),
                    s.queue.pop_front(),
                    "out of order, lost or twice"
                );
                if track && label.event {
                    s.last = Some(label.n);
                }
            }
            Poll::Ready(None) => {
                prop_assert!(s.ended && s.queue.is_empty(), "a stream ended early");
            }
            Poll::Pending => {
                prop_assert!(
                    s.queue.is_empty() && !s.ended,
                    "nothing taken from {:?}",
                    s.queue
                );
                s.parked = Some(flag);
            }
        }
        Ok(())
    }

    fn poll_any(&mut self, r: usize) -> Result<(), TestCaseError> {
        let flag = Arc::new(Flag::default());
        let (id, track) = (self.receivers[r].id, self.track);
        let (poll, done) = poll_with(&flag, |cx| self.inbox.poll_any(id, cx, track).0);
        let receiver = &mut self.receivers[r];
        prop_assert_eq!(
            event_label(&done),
            receiver.last.take(),
            "receive: the one before"
        );
        receiver.parked = None;
        // The oldest item across the detached queues.
        let oldest = self
            .subs
            .iter()
            .filter(|s| s.detached)
            .filter_map(|s| s.queue.front())
            .min_by_key(|l| l.n)
            .copied();
        match poll {
            Poll::Ready(Some(item)) => {
                let label = label_of(&item);
                prop_assert_eq!(Some(label), oldest, "receive() took the wrong item");
                // A broadcast error shows up once.
                for s in self.subs.iter_mut().filter(|s| s.detached) {
                    if s.queue.front() == Some(&label) {
                        s.queue.pop_front();
                    }
                }
                if track && label.event {
                    self.receivers[r].last = Some(label.n);
                }
            }
            Poll::Ready(None) => prop_assert!(false, "receive() ended while the client is open"),
            Poll::Pending => {
                prop_assert_eq!(oldest, None, "receive() missed a queued item");
                receiver.parked = Some(flag);
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let queued: usize = self.subs.iter().map(|s| s.queue.len()).sum();
        prop_assert_eq!(
            self.inbox.pending(),
            queued,
            "pending_count() is not what is queued"
        );
        if self.max_pending > 0 {
            prop_assert!(
                queued < self.max_pending + self.largest_response,
                "{queued} pending: more than the limit plus one response"
            );
        }
        let mut by_channel: BTreeMap<&str, usize> = BTreeMap::new();
        for s in self.subs.iter().filter(|s| !s.queue.is_empty()) {
            *by_channel.entry(s.channel).or_default() += s.queue.len();
        }
        let mut holders = self.inbox.holders();
        holders.sort();
        let expected: Vec<(String, usize)> = by_channel
            .into_iter()
            .map(|(c, n)| (c.to_owned(), n))
            .collect();
        prop_assert_eq!(holders, expected, "holders() (the long-pause report)");
        for s in &self.subs {
            if let Some(flag) = &s.parked {
                prop_assert!(
                    flag.woken() || (s.queue.is_empty() && !s.ended),
                    "a parked Subscription reader missed a wake-up"
                );
            }
        }
        let detached_items = self.subs.iter().any(|s| s.detached && !s.queue.is_empty());
        for r in &self.receivers {
            if let Some(flag) = &r.parked {
                prop_assert!(
                    flag.woken() || !detached_items,
                    "a parked receive() reader missed a wake-up"
                );
            }
        }
        // The connect loop: waits for room when there is none; once there is, it was woken.
        if let Some((fut, flag)) = &mut self.room {
            if self.inbox.has_room() {
                prop_assert!(
                    flag.woken(),
                    "room appeared but the connect loop was not woken"
                );
                let waker = Waker::from(flag.clone());
                prop_assert!(
                    fut.as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .is_ready(),
                    "the connect loop was woken but finds no room"
                );
                self.room = None;
            }
        } else if !self.inbox.has_room() {
            let flag = Arc::new(Flag::default());
            let mut fut: Pin<Box<dyn Future<Output = ()> + 'a>> = Box::pin(self.inbox.room());
            let waker = Waker::from(flag.clone());
            prop_assert!(
                fut.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending(),
                "room() resolved without room"
            );
            self.room = Some((fut, flag));
        }
        Ok(())
    }

    /// The client closes: every stream yields what it holds, then ends.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.inbox.close();
        for s in &mut self.subs {
            s.ended = true;
        }
        self.check()?;
        for i in 0..self.subs.len() {
            while !self.subs[i].detached {
                self.poll_sub(i)?;
                if self.subs[i].queue.is_empty() {
                    self.poll_sub(i)?; // now `None`
                    break;
                }
            }
        }
        loop {
            let flag = Arc::new(Flag::default());
            let id = self.receivers[0].id;
            let (poll, _) = poll_with(&flag, |cx| self.inbox.poll_any(id, cx, false).0);
            match poll {
                Poll::Ready(Some(item)) => {
                    let label = label_of(&item);
                    let mut found = false;
                    for s in self.subs.iter_mut().filter(|s| s.detached) {
                        if s.queue.front() == Some(&label) {
                            s.queue.pop_front();
                            found = true;
                        }
                    }
                    prop_assert!(found, "receive() yielded {label:?}, which nobody holds");
                }
                Poll::Ready(None) => break,
                Poll::Pending => prop_assert!(false, "receive() waits on a closed client"),
            }
        }
        for s in &self.subs {
            prop_assert!(s.queue.is_empty(), "{:?} never taken", s.queue);
        }
        prop_assert_eq!(self.inbox.pending(), 0);
        Ok(())
    }
}

proptest! {
    // PROPTEST_CASES overrides the default of 256.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn every_item_is_taken_once_in_order_and_no_reader_or_connect_loop_misses_a_wake_up(
        max_pending in prop_oneof![1 => Just(0usize), 5 => 1..8usize],
        track in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        let inbox = Inbox::new(max_pending);
        let mut model = Model::new(&inbox, max_pending, track);
        for op in ops {
            model.step(op)?;
        }
        model.finish()?;
    }
}
