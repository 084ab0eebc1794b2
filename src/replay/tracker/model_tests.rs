//! Property-based model test of the commit tracker.
//!
//! A server with two base channels (one of them reached through two PushTopic filters, so its
//! events fan out) publishes events with increasing replay ids and dates; a client subscribes
//! (from where [`ReplayState::start_id`] says), takes deliveries, acknowledges any ticket ever
//! issued (stale ones of ended subscriptions and closed clients included), unsubscribes,
//! resubscribes after a rehandshake, closes and starts a new client on the same storage, or
//! crashes (its runtime and unwritten markers gone). The reference model records which
//! deliveries were processed, following README "Delivery guarantees": an acknowledged delivery
//! is processed, and so is one withdrawn when its subscription ends while another subscription
//! of the channel goes on. After every step, on whatever the storage holds:
//!
//! - at-least-once: every event up to the stored marker was processed at least once;
//! - the stored marker never moves backwards (across clients and crashes too);
//! - the tracker's pending deliveries are exactly the model's unprocessed deliveries of live
//!   subscriptions, and its outstanding list holds at most two entries per pending delivery;
//! - a subscription never starts after an event that was not processed.
//!
//! At the end, once everything delivered is acknowledged, the stored marker is the last event.
//! Under `OnReceive` a delivery is processed when handed out, in order per subscription.

use super::*;
use crate::replay::MappingStorage;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

const BASES: [&str; 2] = ["/event/A__e", "/topic/T"];
/// Subscribed channel names and their base channel (index into `BASES`).
const NAMES: [(&str, usize); 3] = [
    ("/event/A__e", 0),
    ("/topic/T?Status__c=Open", 1),
    ("/topic/T?Status__c=Closed", 1),
];

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize),
    /// Unsubscribe, a dropped `Subscription` or a rejected resubscribe: the task forgets it.
    Forget(usize),
    /// The next events after the channel's position (published now if need be), to every
    /// live subscription of it.
    Deliver(usize, u8),
    /// Acknowledge one delivery not acknowledged yet (modulo their number), stale ones of ended
    /// subscriptions and closed clients included.
    Ack(usize),
    /// Acknowledge any delivery ever made, again perhaps.
    AckAny(usize),
    /// A rehandshake: every subscription of the channel subscribes again from `start_id`.
    Resubscribe(usize),
    /// Let the marker writer run.
    Settle,
    /// `Client::close`, then a new client on the same storage; old tickets stay ackable.
    Close,
    /// The process dies: its runtime (and writer) and unwritten markers are gone.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NAMES.len()).prop_map(Op::Subscribe),
        2 => (0..NAMES.len()).prop_map(Op::Forget),
        4 => (0..BASES.len(), 1..5u8).prop_map(|(b, n)| Op::Deliver(b, n)),
        6 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckAny),
        1 => (0..BASES.len()).prop_map(Op::Resubscribe),
        1 => Just(Op::Settle),
        1 => Just(Op::Close),
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

/// One delivery of one event to one subscription.
struct Rec {
    base: usize,
    id: i64,
    name: usize,
    sub: SubId,
    /// The deliver step; the deliveries of one event in one step are one fan-out.
    batch: u64,
    client: u64,
    /// `None` under `OnReceive`, or once the process that issued it crashed.
    ticket: Option<Ticket>,
    /// Acknowledged, or withdrawn.
    done: bool,
}

struct Model {
    policy: CommitPolicy,
    storage: MappingStorage,
    runtime: tokio::runtime::Runtime,
    state: Arc<ReplayState>,
    client: u64,
    next_sub: SubId,
    batch: u64,
    published: [i64; 2],
    /// The last event delivered per channel while it has live subscriptions.
    pos: [Option<i64>; 2],
    live: [Option<SubId>; 3],
    recs: Vec<Rec>,
    /// Events processed at least once, per channel.
    completed: [BTreeSet<i64>; 2],
    /// The highest stored marker seen per channel.
    high: [i64; 2],
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

impl Model {
    fn new(policy: CommitPolicy) -> Self {
        let storage = MappingStorage::new();
        Model {
            policy,
            state: Self::client(&storage, policy),
            storage,
            runtime: runtime(),
            client: 0,
            next_sub: 0,
            batch: 0,
            published: [0; 2],
            pos: [None; 2],
            live: [None; 3],
            recs: Vec::new(),
            completed: Default::default(),
            high: [0; 2],
        }
    }

    fn client(storage: &MappingStorage, policy: CommitPolicy) -> Arc<ReplayState> {
        Arc::new(ReplayState::new(
            Some(Arc::new(storage.clone())),
            ReplayOption::AllEvents,
            None,
            policy,
        ))
    }

    fn live_of(&self, base: usize) -> Vec<usize> {
        (0..NAMES.len())
            .filter(|n| NAMES[*n].1 == base && self.live[*n].is_some())
            .collect()
    }

    fn start_id(&self, base: usize) -> i64 {
        let id = self
            .runtime
            .block_on(self.state.start_id(BASES[base]))
            .unwrap();
        match id {
            -2 => 0,
            -1 => self.published[base],
            id => id,
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        // Acks and commits spawn the writer on the current client's runtime.
        let handle = self.runtime.handle().clone();
        let _enter = handle.enter();
        match op {
            Op::Subscribe(n) if self.live[n].is_none() => {
                let base = NAMES[n].1;
                if self.live_of(base).is_empty() {
                    let start = self.start_id(base);
                    prop_assert!(
                        !self.state.tracks()
                            || (1..=start).all(|id| self.completed[base].contains(&id)),
                        "{} starts after {start}, past an unprocessed event",
                        BASES[base]
                    );
                    self.pos[base] = Some(start);
                }
                // A second filter of a channel joins where the first one is.
                self.next_sub += 1;
                self.live[n] = Some(self.next_sub);
            }
            Op::Forget(n) => {
                if let Some(sub) = self.live[n].take() {
                    let base = NAMES[n].1;
                    if self.live_of(base).is_empty() {
                        self.pos[base] = None;
                    } else {
                        // Others go on: what it was handed counts as processed.
                        let client = self.client;
                        let recs = self.recs.iter_mut();
                        let ids: Vec<usize> = recs
                            .enumerate()
                            .filter(|(_, r)| r.sub == sub && r.client == client && !r.done)
                            .map(|(i, _)| i)
                            .collect();
                        for i in ids {
                            self.mark_done(i);
                        }
                    }
                    self.state.forget(sub, NAMES[n].0);
                }
            }
            Op::Deliver(base, count) => self.deliver(base, i64::from(count)),
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
                if let Some(pos) = self.pos[base] {
                    let start = self.start_id(base);
                    // Ahead of the stream only over events processed already (a marker
                    // written after a fresh subscribe started from an older one).
                    prop_assert!(
                        !self.state.tracks()
                            || (pos + 1..=start).all(|id| self.completed[base].contains(&id)),
                        "{} resubscribes from {start}, skipping unprocessed events after {pos}",
                        BASES[base]
                    );
                    self.pos[base] = Some(start);
                }
            }
            Op::Settle => self.settle(),
            Op::Close => {
                self.state.forget_all();
                self.runtime.block_on(self.state.flush()).unwrap();
                self.new_client();
            }
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
        self.state = Self::client(&self.storage, self.policy);
        self.live = [None; 3];
        self.pos = [None; 2];
    }

    fn settle(&self) {
        self.runtime.block_on(async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        });
    }

    fn deliver(&mut self, base: usize, count: i64) {
        let Some(pos) = self.pos[base] else { return };
        let last = pos + count;
        self.published[base] = self.published[base].max(last);
        self.batch += 1;
        let subs: Vec<usize> = self.live_of(base);
        let data: Vec<(i64, Data)> = (pos + 1..=last).map(|id| (id, event(id))).collect();
        let channel = BASES[base];
        self.state.delivered(data.iter().map(|(_, d)| (channel, d)));
        // Every delivery of one event adjacent, as the task routes them.
        let deliveries: Vec<(usize, usize)> = (0..data.len())
            .flat_map(|e| subs.iter().map(move |n| (e, *n)))
            .collect();
        let live = self.live;
        let mut tickets = if self.state.tracks() {
            self.state
                .issue(
                    deliveries
                        .iter()
                        .map(|(e, n)| (*e, live[*n].unwrap_or_default(), channel, &data[*e].1)),
                )
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None; deliveries.len()]
        }
        .into_iter();
        for (e, n) in deliveries {
            self.recs.push(Rec {
                base,
                id: data[e].0,
                name: n,
                sub: live[n].unwrap_or_default(),
                batch: self.batch,
                client: self.client,
                ticket: tickets.next().flatten(),
                done: false,
            });
        }
        self.pos[base] = Some(last);
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
                self.state.commit(BASES[r.base], &event(r.id));
                self.mark_done(j);
            }
        }
    }

    fn mark_done(&mut self, i: usize) {
        self.recs[i].done = true;
        let r = &self.recs[i];
        let (base, id, batch) = (r.base, r.id, r.batch);
        if !self.state.tracks()
            || self
                .recs
                .iter()
                .filter(|r| r.base == base && r.id == id && r.batch == batch)
                .all(|r| r.done)
        {
            self.completed[base].insert(id);
        }
    }

    fn stored(&self, base: usize) -> i64 {
        self.storage
            .map()
            .lock()
            .unwrap()
            .get(BASES[base])
            .map_or(0, |m| m.replay_id)
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for (base, channel) in BASES.iter().enumerate() {
            let stored = self.stored(base);
            prop_assert!(
                stored >= self.high[base],
                "the marker of {} moved back from {} to {stored}",
                channel,
                self.high[base]
            );
            self.high[base] = stored;
            if !self.state.tracks() {
                // At-most-once: handed out is all it takes.
                prop_assert!(stored <= self.completed[base].last().copied().unwrap_or(0));
                continue;
            }
            if let Some(id) = (1..=stored).find(|id| !self.completed[base].contains(id)) {
                prop_assert!(
                    false,
                    "the marker of {} is {stored}: it covers event {id}, which was never processed",
                    channel
                );
            }
            let model_pending = self
                .recs
                .iter()
                .filter(|r| {
                    r.base == base
                        && r.client == self.client
                        && !r.done
                        && self.live.contains(&Some(r.sub))
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

    /// Every channel with a subscription gets everything up to a new event, and everything
    /// delivered is acknowledged: each such channel's marker reaches that newest event.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        for base in 0..BASES.len() {
            if self.pos[base].is_none() {
                continue;
            }
            // Up to an event newer than any before.
            let behind = self.published[base] - self.pos[base].unwrap_or_default();
            self.deliver(base, behind + 1);
            self.check()?;
        }
        // In reverse, the worst order for the contiguous prefix.
        let client = self.client;
        for i in (0..self.recs.len()).rev() {
            let r = &self.recs[i];
            if r.client == client && !r.done && self.live.contains(&Some(r.sub)) {
                self.step(Op::AckAny(i))?;
            }
        }
        self.runtime.block_on(self.state.flush()).unwrap();
        self.check()?;
        for (base, channel) in BASES.iter().enumerate() {
            if let Some(pos) = self.pos[base] {
                prop_assert_eq!(
                    self.stored(base),
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
