//! Property-based model test of the commit tracker.
//!
//! A server with two base channels (one of them a PushTopic reached through two filters and
//! unfiltered) publishes events with increasing replay ids and dates; a client subscribes each
//! name (from where [`ReplayState::start_id`] says, or from an earlier id with
//! `subscribe_from`, so that a filter works through a backlog that lies before what the rest
//! of its topic has processed), takes deliveries, acknowledges any ticket ever issued (stale
//! ones of ended subscriptions and closed clients included), unsubscribes, resubscribes after
//! a rehandshake, closes and starts a new client on the same storage, closes and reopens the
//! same client (its replay state kept), or crashes (its runtime and unwritten markers gone).
//! Every storage call yields first, so the marker writer runs between and during a subscribe's
//! reads, and the storage's writes fail for a while at random (a failed filter start fails its
//! subscribe). Each subscribed name has its own position and its own stored
//! marker (README "Delivery guarantees"). The reference model records which deliveries were
//! processed: an acknowledged delivery is processed. After every step, on whatever the storage
//! holds:
//!
//! - at-least-once: every event delivered to a name up to its stored marker was processed by
//!   it, and no (re)subscribe starts after an event delivered to it and not processed;
//! - a stored marker never moves backwards (across clients and crashes too);
//! - the tracker's pending deliveries are exactly the model's unprocessed deliveries of live
//!   subscriptions, and its outstanding list holds at most two entries per pending delivery.
//!
//! At the end, once everything delivered is acknowledged, each name's marker is its last event.
//! Under `OnReceive` a delivery is processed when handed out, in order per subscription.

use super::*;
use crate::replay::MappingStorage;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// Subscribed names, each its own marker key, and their base channel (its replay ids).
const NAMES: [(&str, usize); 4] = [
    ("/event/A__e", 0),
    ("/topic/T?Status__c=Open", 1),
    ("/topic/T?Status__c=Closed", 1),
    ("/topic/T", 1),
];
const BASES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize),
    /// `subscribe_from` an id (modulo the ids published) from the name's own stored marker to
    /// before its first unprocessed delivery: a late filter's backlog before what the rest of
    /// its topic processed.
    SubscribeFrom(usize, u16),
    /// A subscribe cancelled after some polls (a timeout, a rehandshake), or one whose request
    /// then failed: the task forgets it. A filter's start may be queued, being written or
    /// stored. With `true` it is retried at once (the task's retry of a failed subscribe).
    Cancel(usize, u8, bool),
    /// Unsubscribe, a dropped `Subscription` or a rejected resubscribe: the task forgets it.
    Forget(usize),
    /// The next events after the name's position (published now if need be).
    Deliver(usize, u8),
    /// Acknowledge one delivery not acknowledged yet (modulo their number), stale ones of ended
    /// subscriptions and closed clients included.
    Ack(usize),
    /// Acknowledge any delivery ever made, again perhaps.
    AckAny(usize),
    /// A rehandshake: every subscription of the base channel subscribes again from `start_id`.
    Resubscribe(usize),
    /// Let the marker writer run.
    Settle,
    /// `Client::close`, then a new client on the same storage; old tickets stay ackable.
    Close,
    /// `Client::close` and `open` again: the same client, its replay state kept.
    Reopen,
    /// The storage's writes start (or stop) failing.
    Fail(bool),
    /// The process dies: its runtime (and writer) and unwritten markers are gone.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NAMES.len()).prop_map(Op::Subscribe),
        1 => (0..NAMES.len(), any::<u16>()).prop_map(|(n, k)| Op::SubscribeFrom(n, k)),
        2 => (0..NAMES.len(), 0..12u8, any::<bool>()).prop_map(|(n, p, r)| Op::Cancel(n, p, r)),
        2 => (0..NAMES.len()).prop_map(Op::Forget),
        4 => (0..NAMES.len(), 1..5u8).prop_map(|(n, c)| Op::Deliver(n, c)),
        6 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckAny),
        1 => (0..BASES).prop_map(Op::Resubscribe),
        1 => Just(Op::Settle),
        1 => Just(Op::Close),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(Op::Fail),
        1 => Just(Op::Crash),
    ]
}

fn policy() -> impl Strategy<Value = CommitPolicy> {
    prop_oneof![
        Just(CommitPolicy::AfterProcessed),
        Just(CommitPolicy::Manual),
        Just(CommitPolicy::OnReceive),
    ]
}

fn event(id: i64) -> Data {
    // Dates increase with the id; markers compare by date first.
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + id as u64);
    let date = crate::replay::format_date(date);
    Data::from_json(
        serde_json::json!({"event": {"replayId": id, "createdDate": date}, "payload": {}})
            .to_string(),
    )
    .unwrap()
}

/// The model's storage: every call yields to the runtime first, so that the marker writer runs
/// between (and during) a subscribe's reads, a write one to three times (so that a subscribe
/// can read while a write is in flight); its writes fail while `failing` is set.
struct Flaky {
    map: MappingStorage,
    failing: Arc<AtomicBool>,
    writes: std::sync::atomic::AtomicUsize,
}

impl ReplayStorage for Flaky {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.map.get(key).await
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        marker: ReplayMarker,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for _ in 0..=self.writes.fetch_add(1, Ordering::Relaxed) % 3 {
                tokio::task::yield_now().await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorKind::Replay, "the model's storage fails"));
            }
            self.map.set(key, marker).await
        })
    }
}

/// One delivery of one event to one subscription.
struct Rec {
    id: i64,
    name: usize,
    sub: SubId,
    client: u64,
    /// `None` under `OnReceive`, or once the process that issued it crashed.
    ticket: Option<Ticket>,
    /// Acknowledged.
    done: bool,
}

struct Model {
    policy: CommitPolicy,
    storage: MappingStorage,
    failing: Arc<AtomicBool>,
    runtime: tokio::runtime::Runtime,
    state: Arc<ReplayState>,
    client: u64,
    next_sub: SubId,
    published: [i64; BASES],
    /// The last event delivered per live name.
    pos: [Option<i64>; 4],
    live: [Option<SubId>; 4],
    recs: Vec<Rec>,
    /// Events processed at least once, per name.
    completed: [BTreeSet<i64>; 4],
    /// The highest stored marker seen per name.
    high: [i64; 4],
    /// The latest start per name (a start is stored where the name has no marker of its own).
    starts: [i64; 4],
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

impl Model {
    fn new(policy: CommitPolicy) -> Self {
        let storage = MappingStorage::new();
        let failing = Arc::new(AtomicBool::new(false));
        Model {
            policy,
            state: Self::client(&storage, &failing, policy),
            storage,
            failing,
            runtime: runtime(),
            client: 0,
            next_sub: 0,
            published: [0; BASES],
            pos: [None; 4],
            live: [None; 4],
            recs: Vec::new(),
            completed: Default::default(),
            high: [0; 4],
            starts: [0; 4],
        }
    }

    fn client(
        storage: &MappingStorage,
        failing: &Arc<AtomicBool>,
        policy: CommitPolicy,
    ) -> Arc<ReplayState> {
        let storage = Flaky {
            map: storage.clone(),
            failing: failing.clone(),
            writes: Default::default(),
        };
        Arc::new(ReplayState::new(
            Some(Arc::new(storage)),
            ReplayOption::AllEvents,
            None,
            policy,
        ))
    }

    /// `None` where the subscribe fails (a filter's start could not be stored).
    fn start_id(&self, name: usize) -> Option<i64> {
        let id = self
            .runtime
            .block_on(self.state.start_id(NAMES[name].0))
            .ok()?;
        Some(match id {
            -2 => 0,
            -1 => self.published[NAMES[name].1],
            id => id,
        })
    }

    /// The oldest event delivered to `name` (by any client) and not processed by it.
    fn first_unprocessed(&self, name: usize) -> Option<i64> {
        self.recs
            .iter()
            .filter(|r| r.name == name && !self.completed[name].contains(&r.id))
            .map(|r| r.id)
            .min()
    }

    /// Starting at `start` skips no event delivered to `name` and not processed by it (with
    /// processing tracked; `OnReceive` is at-most-once).
    fn check_start(&self, name: usize, start: i64) -> Result<(), TestCaseError> {
        if let Some(id) = self.first_unprocessed(name) {
            prop_assert!(
                !self.state.tracks() || start < id,
                "{} starts after {start}, past event {id} delivered to it and not processed",
                NAMES[name].0
            );
        }
        Ok(())
    }

    /// Subscribe `name` as the connection task does (`subscribing`, then the replay layer's
    /// `start_id`); a failed subscribe is forgotten.
    fn subscribe(&mut self, name: usize) -> Option<i64> {
        self.next_sub += 1;
        let sub = self.next_sub;
        self.state.subscribing(sub, NAMES[name].0);
        let Some(start) = self.start_id(name) else {
            self.state.forget(sub, NAMES[name].0);
            return None;
        };
        self.live[name] = Some(sub);
        self.pos[name] = Some(start);
        self.starts[name] = self.starts[name].max(start);
        Some(start)
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        // Acks and commits spawn the writer on the current client's runtime.
        let handle = self.runtime.handle().clone();
        let _enter = handle.enter();
        match op {
            Op::Subscribe(n) if self.live[n].is_none() => {
                if let Some(start) = self.subscribe(n) {
                    self.check_start(n, start)?;
                }
            }
            Op::SubscribeFrom(n, k) if self.live[n].is_none() => {
                // Not before its own stored marker: that re-reads events, and the marker stays
                // (never backwards), as it does for any channel (README).
                let published = self.published[NAMES[n].1];
                let mut from = (i64::from(k) % (published + 1)).max(self.stored(n));
                if let Some(id) = self.first_unprocessed(n) {
                    from = from.min(id - 1);
                }
                self.state.start_from(NAMES[n].0, from);
                if let Some(start) = self.subscribe(n) {
                    prop_assert_eq!(start, from, "subscribe_from is where it starts");
                }
            }
            Op::Cancel(n, polls, retry) if self.live[n].is_none() => {
                self.next_sub += 1;
                let sub = self.next_sub;
                self.state.subscribing(sub, NAMES[n].0);
                let state = self.state.clone();
                self.runtime.block_on(async {
                    let mut start = pin!(state.start_id(NAMES[n].0));
                    for _ in 0..polls {
                        let poll = |cx: &mut std::task::Context<'_>| {
                            std::task::Poll::Ready(
                                std::future::Future::poll(start.as_mut(), cx).is_ready(),
                            )
                        };
                        if std::future::poll_fn(poll).await {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                });
                self.state.forget(sub, NAMES[n].0);
                // At most once: a start it stored is at most what was published.
                self.starts[n] = self.starts[n].max(self.published[NAMES[n].1]);
                if retry && let Some(start) = self.subscribe(n) {
                    self.check_start(n, start)?;
                }
            }
            Op::Forget(n) => {
                if let Some(sub) = self.live[n].take() {
                    self.pos[n] = None;
                    self.state.forget(sub, NAMES[n].0);
                }
            }
            Op::Deliver(n, count) => self.deliver(n, i64::from(count)),
            Op::Ack(i) => {
                let open: Vec<usize> = (0..self.recs.len())
                    .filter(|j| !self.recs[*j].done)
                    .collect();
                if !open.is_empty() {
                    self.ack(open[i % open.len()]);
                }
            }
            Op::AckAny(i) if !self.recs.is_empty() => self.ack(i % self.recs.len()),
            Op::Resubscribe(base) => {
                for n in (0..NAMES.len()).filter(|n| NAMES[*n].1 == base) {
                    let Some(pos) = self.pos[n] else { continue };
                    // A failed resubscribe is retried later, from where it is then.
                    let Some(start) = self.start_id(n) else {
                        continue;
                    };
                    // Ahead of the stream only over events it processed already.
                    prop_assert!(
                        !self.state.tracks()
                            || (pos + 1..=start).all(|id| self.completed[n].contains(&id)),
                        "{} resubscribes from {start}, skipping unprocessed events after {pos}",
                        NAMES[n].0
                    );
                    self.pos[n] = Some(start);
                }
            }
            Op::Settle => self.settle(),
            Op::Close => {
                self.state.forget_all();
                let _ = self.runtime.block_on(self.state.flush());
                self.new_client();
            }
            Op::Reopen => {
                self.state.forget_all();
                let _ = self.runtime.block_on(self.state.flush());
                self.client += 1;
                self.live = [None; 4];
                self.pos = [None; 4];
            }
            Op::Fail(on) => self.failing.store(on, Ordering::SeqCst),
            Op::Crash => {
                let client = self.client;
                for r in self.recs.iter_mut().filter(|r| r.client == client) {
                    r.ticket = None; // gone with the process
                }
                self.runtime = runtime();
                self.new_client();
            }
            _ => {}
        }
        self.check()
    }

    fn new_client(&mut self) {
        self.client += 1;
        self.state = Self::client(&self.storage, &self.failing, self.policy);
        self.live = [None; 4];
        self.pos = [None; 4];
    }

    fn settle(&self) {
        self.runtime.block_on(async {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        });
    }

    fn deliver(&mut self, n: usize, count: i64) {
        let (Some(pos), Some(sub)) = (self.pos[n], self.live[n]) else {
            return;
        };
        let last = pos + count;
        let base = NAMES[n].1;
        self.published[base] = self.published[base].max(last);
        let data: Vec<(i64, Data)> = (pos + 1..=last).map(|id| (id, event(id))).collect();
        // A filter's events come on its own name.
        let channel = NAMES[n].0;
        self.state.delivered(data.iter().map(|(_, d)| (channel, d)));
        let mut tickets = if self.state.tracks() {
            self.state
                .issue(
                    data.iter()
                        .enumerate()
                        .map(|(e, (_, d))| (e, sub, channel, d)),
                )
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None; data.len()]
        }
        .into_iter();
        for (id, _) in &data {
            self.recs.push(Rec {
                id: *id,
                name: n,
                sub,
                client: self.client,
                ticket: tickets.next().flatten(),
                done: false,
            });
        }
        self.pos[n] = Some(last);
    }

    fn ack(&mut self, i: usize) {
        if self.policy != CommitPolicy::OnReceive {
            if let Some(ticket) = &self.recs[i].ticket {
                ticket.done(NAMES[self.recs[i].name].0);
            }
            // Processed by the user, even where the tracker must ignore it (a stale ticket).
            self.mark_done(i);
            return;
        }
        // The stream hands out its queue in order, up to this delivery.
        let (sub, client) = (self.recs[i].sub, self.recs[i].client);
        if client != self.client || self.live.iter().all(|l| *l != Some(sub)) {
            return;
        }
        for j in 0..=i {
            let r = &self.recs[j];
            if r.sub == sub && r.client == client && !r.done {
                self.state.commit(NAMES[r.name].0, &event(r.id));
                self.mark_done(j);
            }
        }
    }

    fn mark_done(&mut self, i: usize) {
        self.recs[i].done = true;
        let r = &self.recs[i];
        self.completed[r.name].insert(r.id);
    }

    fn stored(&self, name: usize) -> i64 {
        self.storage
            .map()
            .lock()
            .unwrap()
            .get(NAMES[name].0)
            .map_or(0, |m| m.replay_id.max(0))
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for (n, (channel, _)) in NAMES.iter().enumerate() {
            let stored = self.stored(n);
            prop_assert!(
                stored >= self.high[n],
                "the marker of {} moved back from {} to {stored}",
                channel,
                self.high[n]
            );
            self.high[n] = stored;
            if !self.state.tracks() {
                // At-most-once: handed out is all it takes (or a start).
                let handed = self.completed[n].last().copied().unwrap_or(0);
                prop_assert!(stored <= handed.max(self.starts[n]));
                continue;
            }
            if let Some(id) = self.first_unprocessed(n) {
                prop_assert!(
                    stored < id,
                    "the marker of {} is {stored}: it covers event {id}, delivered to it and never processed",
                    channel
                );
            }
            let model_pending = self
                .recs
                .iter()
                .filter(|r| {
                    r.name == n && r.client == self.client && !r.done && self.live[n] == Some(r.sub)
                })
                .count();
            let inner = self.state.lock();
            let (entries, pending) = inner.outstanding.get(*channel).map_or((0, 0), |o| {
                (
                    o.entries.len(),
                    o.entries.iter().filter(|e| !e.done).count(),
                )
            });
            prop_assert_eq!(
                pending,
                model_pending,
                "{}: the tracker's pending deliveries are not the unprocessed ones",
                channel
            );
            prop_assert!(
                entries <= 2 * pending,
                "{}: {entries} outstanding entries for {pending} pending deliveries",
                channel
            );
        }
        Ok(())
    }

    /// Every live name gets everything up to a new event, and everything delivered is
    /// acknowledged: each such name's marker reaches its newest event.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.failing.store(false, Ordering::SeqCst);
        for (n, (_, base)) in NAMES.iter().enumerate() {
            let Some(pos) = self.pos[n] else { continue };
            // Up to an event newer than any before.
            let behind = self.published[*base] - pos;
            self.deliver(n, behind + 1);
            self.check()?;
        }
        // In reverse, the worst order for the contiguous prefix.
        let client = self.client;
        for i in (0..self.recs.len()).rev() {
            let r = &self.recs[i];
            if r.client == client && !r.done && self.live[r.name] == Some(r.sub) {
                self.step(Op::AckAny(i))?;
            }
        }
        self.runtime.block_on(self.state.flush()).unwrap();
        self.check()?;
        for (n, (channel, _)) in NAMES.iter().enumerate() {
            if let Some(pos) = self.pos[n] {
                prop_assert_eq!(
                    self.stored(n),
                    pos,
                    "{}: everything was processed but the marker is not the last event",
                    channel
                );
            }
        }
        Ok(())
    }
}

proptest! {
    // PROPTEST_CASES overrides the default of 256.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn the_stored_marker_never_passes_an_unprocessed_event(
        policy in policy(),
        ops in proptest::collection::vec(op(), 1..160),
    ) {
        let mut model = Model::new(policy);
        for op in ops {
            model.step(op)?;
        }
        model.finish()?;
    }
}
