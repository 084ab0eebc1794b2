//! The client's replay bookkeeping, shared by the replay layer (which ids go on the wire), the
//! connection task (what was delivered) and the streams (what was processed).

use super::unpositioned::Unpositioned;
use super::{CommitPolicy, ReplayMarker, ReplayOption, ReplayStorage};
use crate::bayeux::Data;
use crate::connection::{SubId, base_channel};
use crate::error::ReplayGap;
use crate::error::{Error, ErrorKind, Result, sanitized};
use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet, VecDeque};
use std::mem;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The marker key of an event that subscription `subscribed` received on `channel`: a
/// PushTopic filter's own name (its events may come on its topic's name, whose marker is the
/// unfiltered subscription's), else the event's channel (a wildcard's are stored per channel).
pub(crate) fn marker_key<'a>(subscribed: &'a str, channel: &'a str) -> &'a str {
    if base_channel(subscribed) != subscribed {
        subscribed
    } else {
        channel
    }
}

/// Receives errors that concern every stream (a failing storage).
pub(crate) type ErrorSink = Arc<dyn Fn(Error) + Send + Sync>;

pub(crate) struct ReplayState {
    storage: Option<Arc<dyn ReplayStorage>>,
    start: ReplayOption,
    fallback: Option<ReplayOption>,
    policy: CommitPolicy,
    inner: Mutex<Inner>,
    idle: Notify,
    /// Runs when the writer has just gone idle (tests of the writer's idle race).
    #[cfg(test)]
    idle_hook: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Cheap check on the hot path: is any gap waiting to be announced?
    has_gaps: AtomicBool,
    /// `NewEvents` channels that have not delivered their first event yet.
    unpositioned: Unpositioned,
}

#[derive(Default)]
struct Inner {
    /// `subscribe_from` ids, and fallbacks in effect, until the channel delivers an event.
    /// Keyed like `delivered`.
    overrides: HashMap<String, i64>,
    /// The last event delivered per channel: where a resubscribe continues from. Keyed by the
    /// full name, PushTopic filter included: two filters of one topic get different events, so
    /// one's position says nothing about the other's (nor does one's stored marker).
    delivered: HashMap<String, Data>,
    /// Markers waiting to be stored, newest per marker key (see [`ReplayState::start_id`]).
    dirty: HashMap<String, Commit>,
    /// The last marker stored (or read) per marker key.
    stored: HashMap<String, ReplayMarker>,
    /// The event last committed per marker key, from the commit until a marker at or after it
    /// is stored (the writer holds a marker in neither `dirty` nor `stored` while it writes
    /// it): a replay gap's restart marker must never be written over a position committed past
    /// the expired id, and a resubscribe starts after it, not from the older stored marker.
    committed: HashMap<String, Data>,
    /// A PushTopic filter's start (see [`ReplayState::keep_start`]) from when it is queued
    /// until a marker is stored under its key or the start is dropped: a retried subscribe
    /// must find it while the writer is writing it, when it is no longer in `dirty`.
    starts: HashMap<String, ReplayMarker>,
    /// Per marker key, the expired marker a replay gap's restart replaces, while the restart
    /// is queued or being written: an event committed then that is [`before`] it came before
    /// the gap, and its marker stored after the restart would bring the expired id, and its
    /// notice, back. (Once the restart is stored, markers go over it whatever their id.)
    rejected: HashMap<String, ReplayMarker>,
    writing: bool,
    /// The writer's task: one that ended without running (its runtime shut down before it
    /// was polled) leaves `writing` set (see [`Inner::writer_running`]).
    writer: Option<tokio::task::JoinHandle<()>>,
    failing: bool,
    /// The last storage failure, for `flush` to report.
    last_error: Option<Error>,
    sink: Option<ErrorSink>,
    /// Fallbacks not yet announced on their stream.
    gaps: HashMap<String, ReplayGap>,
    /// Deliveries handed to the streams and not yet processed, per channel, in delivery order.
    outstanding: HashMap<String, Outstanding>,
    /// Source of [`Outstanding::generation`]: never reused, so a ticket of a list that was
    /// dropped can never match its successor's.
    generations: u64,
    /// Whether writes carry a lease epoch (see `crate::replay::Lease`).
    fence: Fence,
    /// Told when a write was refused by fencing: the session's lease keeper.
    on_lease_lost: Option<tokio::sync::mpsc::UnboundedSender<Error>>,
    /// `Manual`: per channel, the generation and replay id of the oldest event dropped without
    /// an ack.
    skipped: HashMap<String, (u64, Option<i64>)>,
    skip_sink: Option<SkipSink>,
    /// Live PushTopic filter subscriptions and their marker key (the subscribed name): their
    /// deliveries are tracked and stored apart from the rest of the topic.
    filters: HashMap<SubId, Arc<str>>,
    /// How many live subscriptions each name has (a wildcard's counts under its pattern).
    names: HashMap<String, usize>,
    /// Filters that have started this session: they no longer fall back to the topic's marker
    /// (that is for a filter's first subscribe, see [`ReplayState::start_id`]).
    started: HashSet<String>,
    /// The marker keys of subscriptions that fell back, per base channel (the gap notice's
    /// channel), so that the notice moves the right stored markers off the expired id.
    fallen_back: HashMap<String, Vec<String>>,
}

/// The lease state marker writes depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Fence {
    /// No lease: plain writes.
    #[default]
    None,
    /// Writes carry this epoch.
    Held(u64),
    /// The lease is gone: nothing more is written (the new holder starts from what is stored).
    Lost,
}

/// What the writer stores for a channel.
#[derive(Clone)]
enum Commit {
    /// The marker of a processed event; never stored over a newer one.
    Event(Data),
    /// The stored id `rejected` expired and the subscription restarted from `fallback` (a
    /// [`ReplayOption::id`]) after the consumer was told: it replaces the stored marker, so a
    /// restart starts there instead of meeting the same expired id (and notice) again. Written
    /// only while nothing past `rejected` is stored or committed (see [`Inner::passed`]).
    Restart { fallback: i64, rejected: i64 },
    /// Where a PushTopic filter with no marker of its own started: stored unless a marker is
    /// stored already (never backwards), so that a crash before its first processed event
    /// resumes it there and not from its topic's marker, which other subscriptions move.
    Start(ReplayMarker),
}

/// Whether `marker` is at or before the expired id `rejected`. A fallback's negative id is not:
/// a restart from it makes progress.
fn expired(marker: &ReplayMarker, rejected: i64) -> bool {
    marker.replay_id >= 0 && marker.replay_id <= rejected
}

/// Whether `marker` is from before the gap whose expired marker is `rejected`: at or before its
/// id, and not dated after it. After a sandbox refresh the ids start again low, but the new
/// events' dates are after the expired marker's.
fn before(marker: &ReplayMarker, rejected: &ReplayMarker) -> bool {
    expired(marker, rejected.replay_id)
        && !matches!((marker.date, rejected.date), (Some(a), Some(b)) if a > b)
}

/// The deliveries of one channel between delivery and processing, since the channel's
/// tracking last started (a generation).
///
/// Each delivery of an event to a subscription has its own ticket, numbered consecutively
/// (the deliveries of one event are adjacent). A pending entry is one delivery; a processed
/// entry stands for a run of consecutive processed deliveries and keeps only the newest event
/// completed in it. A processed front is committed and removed at once, so the list holds at
/// most `2 * p` entries for `p` pending deliveries, whatever the order of acknowledgements.
struct Outstanding {
    generation: u64,
    next: u64,
    entries: VecDeque<Entry>,
    /// Subscriptions that took deliveries of this generation and are still live.
    subs: Vec<SubId>,
}

struct Entry {
    first: u64,
    last: u64,
    /// The subscription of a pending delivery.
    sub: SubId,
    /// The newest event of the entry that may be committed once the entry is at the front:
    /// `None` for a delivery followed by another delivery of the same event (fan-out), since
    /// only the last one of those completes the event.
    commit: Option<Data>,
    done: bool,
}

impl Inner {
    /// Whether `channel` has a position past the expired id `rejected`, stored or committed:
    /// then a gap's restart marker would move the stored marker backwards, and a restart would
    /// skip what came after that position.
    fn passed(&self, channel: &str, rejected: &ReplayMarker) -> bool {
        let past = |m: ReplayMarker| !before(&m, rejected);
        self.stored.get(channel).copied().is_some_and(past)
            || self
                .committed
                .get(channel)
                .and_then(ReplayMarker::of)
                .is_some_and(past)
    }

    /// `marker` is stored under `key`: a committed event it covers need not be kept.
    fn now_stored(&mut self, key: String, marker: ReplayMarker) {
        if (self.committed.get(&key))
            .and_then(ReplayMarker::of)
            .is_some_and(|c| !c.is_after(&marker))
        {
            self.committed.remove(&key);
        }
        if (self.starts.get(&key)).is_some_and(|s| !s.is_after(&marker)) {
            self.starts.remove(&key);
        }
        if (self.rejected.get(&key)).is_some_and(|r| marker.replay_id >= 0 && !before(&marker, r)) {
            self.rejected.remove(&key);
        }
        self.stored.insert(key, marker);
    }

    /// Whether a writer runs (or is about to). A writer task that never ran (dropped with its
    /// runtime, or refused by one shutting down) counts as idle, or no commit, `flush` or
    /// filter start would ever start another.
    fn writer_running(&mut self) -> bool {
        if self.writing && self.writer.as_ref().is_some_and(|t| t.is_finished()) {
            self.writing = false;
            self.writer = None;
        }
        self.writing
    }

    /// Whether `data` is at or before the expired id of a gap restart of `key` (see
    /// `rejected`). Cheap while no gap restarted anything.
    fn before_gap(&self, key: &str, data: &Data) -> bool {
        !self.rejected.is_empty()
            && self
                .rejected
                .get(key)
                .is_some_and(|r| ReplayMarker::of(data).is_some_and(|m| before(&m, r)))
    }

    /// `channel` is the full name (filter included), `stored` its topic's marker.
    fn lag(&self, channel: &str, stored: ReplayMarker) -> Option<i64> {
        let delivered = ReplayMarker::of(self.delivered.get(channel)?)?;
        Some(delivered.replay_id.saturating_sub(stored.replay_id).max(0))
    }
}

impl Outstanding {
    fn new(generation: u64) -> Self {
        Outstanding {
            generation,
            next: 0,
            entries: VecDeque::new(),
            subs: Vec::new(),
        }
    }

    fn push(&mut self, sub: SubId, data: Data) -> u64 {
        let number = self.next;
        self.next += 1;
        self.entries.push_back(Entry {
            first: number,
            last: number,
            sub,
            commit: Some(data),
            done: false,
        });
        if !self.subs.contains(&sub) {
            self.subs.push(sub);
        }
        number
    }

    /// Mark delivery `number` processed. Returns the newest delivery before which everything is
    /// now processed, if that moved.
    fn done(&mut self, number: u64) -> Option<Data> {
        let index = self.entries.partition_point(|e| e.first <= number);
        let index = index.checked_sub(1)?;
        let entry = &mut self.entries[index];
        if entry.done || entry.last < number {
            return None; // processed already, or committed and gone
        }
        entry.done = true;
        self.merge(index);
        self.pop_front()
    }

    /// Join the processed entry at `index` with processed neighbours into one run; returns
    /// where the run is.
    fn merge(&mut self, mut index: usize) -> usize {
        if self.entries.get(index + 1).is_some_and(|e| e.done)
            && let Some(next) = self.entries.remove(index + 1)
        {
            let entry = &mut self.entries[index];
            entry.last = next.last;
            if next.commit.is_some() {
                entry.commit = next.commit;
            }
        }
        if index > 0
            && self.entries[index - 1].done
            && let Some(entry) = self.entries.remove(index)
        {
            index -= 1;
            let prev = &mut self.entries[index];
            prev.last = entry.last;
            if entry.commit.is_some() {
                prev.commit = entry.commit;
            }
        }
        index
    }

    fn pop_front(&mut self) -> Option<Data> {
        let mut newest = None;
        while self.entries.front().is_some_and(|e| e.done) {
            if let Some(data) = self.entries.pop_front().and_then(|e| e.commit) {
                newest = Some(data);
            }
        }
        newest
    }

    /// Whether delivery `number` is still waiting to be processed.
    fn is_pending(&self, number: u64) -> bool {
        let index = self.entries.partition_point(|e| e.first <= number);
        index
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .is_some_and(|e| !e.done && number <= e.last)
    }

    /// `sub` is gone while others of this channel go on: what it was handed counts as
    /// processed, so that it does not hold the others' marker back for the rest of the session.
    fn withdraw(&mut self, sub: SubId) -> Option<Data> {
        self.subs.retain(|s| *s != sub);
        let mut index = 0;
        while index < self.entries.len() {
            let entry = &mut self.entries[index];
            if !entry.done && entry.sub == sub {
                entry.done = true;
                index = self.merge(index);
            }
            index += 1;
        }
        self.pop_front()
    }
}

/// Which delivery an [`Event`](crate::Event) is, so that it can be marked processed.
#[derive(Clone)]
pub(crate) struct Ticket {
    state: Arc<ReplayState>,
    /// The marker key of a PushTopic filter's delivery (else the event's channel is).
    key: Option<Arc<str>>,
    generation: u64,
    number: u64,
    /// `Manual` only: shared by the event's clones, it notices the last one going unacked.
    watch: Option<Arc<DropWatch>>,
}

impl Ticket {
    /// The event is processed.
    pub(crate) fn done(&self, channel: &str) {
        if let Some(watch) = &self.watch {
            watch.acked.store(true, Ordering::Release);
        }
        let key = self.key.as_deref().unwrap_or_else(|| base_channel(channel));
        self.state.done(key, self.generation, self.number);
    }
}

/// Under `CommitPolicy::Manual` an event dropped without `ack()` holds its channel's stored
/// marker back for the rest of the subscription: say so instead of growing silently.
struct DropWatch {
    state: Arc<ReplayState>,
    channel: String,
    generation: u64,
    number: u64,
    data: Data,
    acked: AtomicBool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.acked.load(Ordering::Acquire) {
            self.state
                .dropped_unacked(&self.channel, self.generation, self.number, &self.data);
        }
    }
}

/// Told when an event was dropped without an ack (the client republishes its health).
pub(crate) type SkipSink = Arc<dyn Fn() + Send + Sync>;

impl ReplayState {
    pub(crate) fn new(
        storage: Option<Arc<dyn ReplayStorage>>,
        start: ReplayOption,
        fallback: Option<ReplayOption>,
        policy: CommitPolicy,
    ) -> Self {
        ReplayState {
            storage,
            start,
            fallback,
            policy,
            inner: Mutex::new(Inner::default()),
            idle: Notify::new(),
            #[cfg(test)]
            idle_hook: Mutex::new(None),
            has_gaps: AtomicBool::new(false),
            unpositioned: Unpositioned::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn storage(&self) -> Option<Arc<dyn ReplayStorage>> {
        self.storage.clone()
    }

    pub(crate) fn policy(&self) -> CommitPolicy {
        self.policy
    }

    /// Whether delivered events get tickets: processing is tracked per event (stores, and
    /// stores after processing).
    pub(crate) fn tracks(&self) -> bool {
        self.storage.is_some() && self.policy != CommitPolicy::OnReceive
    }

    /// Tickets for deliveries about to be made, in order: one per event and subscription, so
    /// that an event fanned out to two subscriptions is processed only when both are done.
    /// `deliveries` are (event index, subscription, channel, data), the deliveries of one
    /// event adjacent.
    pub(crate) fn issue<'a>(
        self: &Arc<Self>,
        deliveries: impl Iterator<Item = (usize, SubId, &'a str, &'a Data)>,
    ) -> Vec<Ticket> {
        let mut inner = self.lock();
        let Inner {
            outstanding,
            generations,
            filters,
            ..
        } = &mut *inner;
        let mut tickets = Vec::new();
        let mut current: Option<(&str, &mut Outstanding)> = None;
        // The last event issued to the current list, and to the others of this call: an
        // event's deliveries to one list may be apart (the topic, a filter of it, then a
        // wildcard sharing the topic's marker), and only the last one completes it.
        let mut previous = None;
        let mut others: Vec<(&str, usize)> = Vec::new();
        for (event, sub, channel, data) in deliveries {
            // A filter's deliveries are tracked under its own name, the rest per channel.
            let key = if filters.is_empty() {
                None
            } else {
                filters.get(&sub)
            };
            let channel = key.map_or_else(|| base_channel(channel), |k| &**k);
            let out = match current.take() {
                Some((c, out)) if c == channel => out,
                switched => {
                    if let (Some((c, _)), Some(e)) = (switched, previous) {
                        match others.iter_mut().find(|(o, _)| *o == c) {
                            Some(slot) => slot.1 = e,
                            None => others.push((c, e)),
                        }
                    }
                    previous = others.iter().find(|(o, _)| *o == channel).map(|o| o.1);
                    outstanding.entry(channel.to_owned()).or_insert_with(|| {
                        *generations += 1;
                        Outstanding::new(*generations)
                    })
                }
            };
            if previous == Some(event)
                && let Some(entry) = out.entries.back_mut()
            {
                entry.commit = None;
            }
            previous = Some(event);
            let number = out.push(sub, data.clone());
            let watch = (self.policy == CommitPolicy::Manual).then(|| {
                Arc::new(DropWatch {
                    state: self.clone(),
                    channel: channel.to_owned(),
                    generation: out.generation,
                    number,
                    data: data.clone(),
                    acked: AtomicBool::new(false),
                })
            });
            tickets.push(Ticket {
                state: self.clone(),
                key: key.cloned(),
                generation: out.generation,
                number,
                watch,
            });
            current = Some((channel, out));
        }
        tickets
    }

    /// Delivery `number` of generation `generation` of marker key `channel` is processed:
    /// store the marker of the newest event before which every delivery is processed
    /// (at-least-once, whatever the order of processing). A ticket of an earlier generation
    /// never counts.
    fn done(self: &Arc<Self>, channel: &str, generation: u64, number: u64) {
        let mut inner = self.lock();
        let Some(out) = inner.outstanding.get_mut(channel) else {
            return; // the subscription is gone; its successor starts from the storage
        };
        if out.generation != generation {
            return; // a late ack from an earlier subscription
        }
        if let Some(data) = out.done(number) {
            self.store_locked(&mut inner, channel, data);
        }
    }

    /// The last copy of a `Manual` event went without an ack. If it is still unprocessed in the
    /// current subscription (not one that ended, which forgets its events anyway), the
    /// channel's stored marker cannot pass it this session: warn once per subscription, and
    /// remember the oldest for [`Self::skipped_ack`].
    fn dropped_unacked(&self, channel: &str, generation: u64, number: u64, data: &Data) {
        let replay_id = ReplayMarker::of(data).map(|m| m.replay_id);
        let (first, sink) = {
            let mut inner = self.lock();
            let pending = inner
                .outstanding
                .get(channel)
                .is_some_and(|out| out.generation == generation && out.is_pending(number));
            if !pending {
                return;
            }
            let first = match inner.skipped.get(channel) {
                Some((g, _)) if *g == generation => false,
                _ => {
                    inner
                        .skipped
                        .insert(channel.to_owned(), (generation, replay_id));
                    true
                }
            };
            (first, inner.skip_sink.clone())
        };
        if first {
            tracing::warn!(%channel, replay_id,
                "an event was dropped without ack() under CommitPolicy::Manual: the channel's stored replay marker stays before it until the subscription ends, and it is delivered again after a restart (later ones on this subscription are not logged)");
            if let Some(sink) = sink {
                sink();
            }
        }
    }

    /// `Manual`: the replay id of the oldest event of `channel`'s current subscription that was
    /// dropped without an ack (`Some(None)` for one without a replay id).
    pub(crate) fn skipped_ack(&self, channel: &str) -> Option<Option<i64>> {
        // A subscribed name is its own marker key, filter included.
        let inner = self.lock();
        let (generation, replay_id) = inner.skipped.get(channel)?;
        let current = inner.outstanding.get(channel)?.generation;
        (current == *generation).then_some(*replay_id)
    }

    pub(crate) fn set_skip_sink(&self, sink: SkipSink) {
        self.lock().skip_sink = Some(sink);
    }

    pub(crate) fn fallback(&self) -> Option<ReplayOption> {
        self.fallback
    }

    /// A session's streams: its first storage failure is reported to them, whatever an
    /// earlier session's streak was.
    pub(crate) fn set_error_sink(&self, sink: ErrorSink) {
        let mut inner = self.lock();
        inner.sink = Some(sink);
        inner.failing = false;
    }

    /// The next subscribe of `channel` (filter included) starts after `replay_id`.
    pub(crate) fn start_from(&self, channel: &str, replay_id: i64) {
        self.unpositioned.clear(channel);
        let mut inner = self.lock();
        inner.delivered.remove(channel);
        inner.overrides.insert(channel.to_owned(), replay_id);
        // A filter's start queued by an earlier subscribe that never went out (cancelled, or
        // failed) is no position: stored, it would cover what this start delivers first. The
        // writer skips one it took but has not begun to write; one whose write has begun is
        // stored, and is the filter's position from then on.
        if inner.starts.remove(channel).is_some()
            && matches!(inner.dirty.get(channel), Some(Commit::Start(_)))
        {
            inner.dirty.remove(channel);
        }
    }

    /// Subscription `sub` of `channel` is gone. Where it was the channel's only consumer, what
    /// it was handed but did not process is forgotten (neither processed nor stored): a new
    /// subscription of the channel starts from the stored marker, so it gets those events
    /// again. Where others go on, its deliveries count as processed instead, so that they do not
    /// hold the others' marker back.
    pub(crate) fn forget(self: &Arc<Self>, sub: SubId, channel: &str) {
        self.unpositioned.clear(channel);
        let mut inner = self.lock();
        inner.delivered.remove(channel);
        inner.overrides.remove(channel);
        inner.skipped.remove(channel);
        inner.filters.remove(&sub);
        if let Some(count) = inner.names.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                inner.names.remove(channel);
            }
        }
        // A gap notice is its own subscription's (a filter's is not its topic's).
        inner.gaps.remove(channel);
        inner.fallen_back.remove(channel);
        let channel = base_channel(channel);
        // A filter's events may come on the base channel, where they are recorded; unless the
        // base channel is subscribed itself, whose position that is.
        if !inner.names.contains_key(channel) {
            inner.delivered.remove(channel);
            inner.overrides.remove(channel);
        }
        inner.skipped.remove(channel);
        // A wildcard subscription has deliveries on channels other than its own name.
        let mut commits = Vec::new();
        inner.outstanding.retain(|c, out| {
            if !out.subs.contains(&sub) {
                return true;
            }
            if out.subs.len() == 1 {
                return false;
            }
            if let Some(data) = out.withdraw(sub) {
                commits.push((c.clone(), data));
            }
            true
        });
        for (c, data) in commits {
            self.store_locked(&mut inner, &c, data);
        }
    }

    /// The client closed: nothing of this session says where the next one starts.
    pub(crate) fn forget_all(&self) {
        self.unpositioned.clear_all();
        let mut inner = self.lock();
        inner.delivered.clear();
        inner.overrides.clear();
        inner.gaps.clear();
        inner.outstanding.clear();
        inner.skipped.clear();
        inner.filters.clear();
        inner.names.clear();
        inner.started.clear();
        inner.fallen_back.clear();
        self.has_gaps.store(false, Ordering::Release);
    }

    /// The subscription fell back: until an event arrives, resubscribes use the fallback too,
    /// and the stream announces the gap before anything the fallback brings.
    /// `channel` is the subscription's full name (filter included).
    pub(crate) fn fell_back(&self, channel: &str, rejected_id: Option<i64>, fallback_id: i64) {
        self.start_from(channel, fallback_id);
        // Keyed by the subscribed name, PushTopic filter included: the notice goes to the
        // subscription that fell back, and two of one topic falling back get one each.
        let key = channel.to_owned();
        let gap = ReplayGap {
            channel: key.clone(),
            rejected_id,
            fallback_id,
        };
        let mut inner = self.lock();
        let keys = inner.fallen_back.entry(key.clone()).or_default();
        if !keys.contains(&key) {
            keys.push(key.clone());
        }
        inner.gaps.insert(key, gap);
        self.has_gaps.store(true, Ordering::Release);
    }

    /// The consumer was handed the notice of `gap`. If the stored marker is the expired id (or
    /// older), it is replaced by the fallback, so that a restart starts where this run
    /// restarted instead of meeting the same expired id, and the same notice, forever (a
    /// consumer that stops on the notice would otherwise never get past it). Later events
    /// store their markers over it as usual.
    pub(crate) fn gap_handed_out(self: &Arc<Self>, gap: &ReplayGap) {
        let Some(rejected) = gap.rejected_id else {
            return;
        };
        if self.storage.is_none() {
            return;
        }
        let mut inner = self.lock();
        // The markers of the subscriptions that fell back: a PushTopic filter's is its own.
        let keys = inner
            .fallen_back
            .remove(&gap.channel)
            .unwrap_or_else(|| vec![gap.channel.clone()]);
        for key in keys {
            let stored = match inner.dirty.get(&key) {
                Some(Commit::Start(m)) => Some(*m), // a filter's start, not written yet
                _ => inner.stored.get(&key).copied(),
            };
            let Some(stored) = stored.filter(|m| expired(m, rejected)) else {
                continue; // nothing stored, or a marker this gap did not reject
            };
            // The expired marker: the rejected id, dated as stored where that is it.
            let expired_marker = ReplayMarker {
                replay_id: rejected,
                date: stored.date.filter(|_| stored.replay_id == rejected),
            };
            if inner.passed(&key, &expired_marker) {
                continue; // a newer event is committed: it is stored, being stored, or waiting
            }
            inner.rejected.insert(key.clone(), expired_marker);
            inner.dirty.insert(
                key,
                Commit::Restart {
                    fallback: gap.fallback_id,
                    rejected,
                },
            );
        }
        if !inner.writer_running() && !inner.dirty.is_empty() {
            self.spawn_writer(&mut inner);
        }
    }

    /// Whether some gap waits to be announced (the hot path asks only this).
    pub(crate) fn gaps_waiting(&self) -> bool {
        self.has_gaps.load(Ordering::Acquire)
    }

    /// The gap to announce before the next event of `channel`, once.
    pub(crate) fn take_gap(&self, channel: &str) -> Option<ReplayGap> {
        if !self.has_gaps.load(Ordering::Acquire) {
            return None;
        }
        let mut inner = self.lock();
        let gap = inner.gaps.remove(channel);
        if inner.gaps.is_empty() {
            self.has_gaps.store(false, Ordering::Release);
        }
        gap
    }

    /// Events handed to the streams, in order.
    pub(crate) fn delivered<'a>(&self, events: impl Iterator<Item = (&'a str, &'a Data)>) {
        let mut inner = self.lock();
        let mut events = events.peekable();
        while let Some((channel, data)) = events.next() {
            // Only the last of a run of same-channel events matters.
            if events.peek().is_some_and(|(next, _)| *next == channel) {
                continue;
            }
            match inner.delivered.get_mut(channel) {
                Some(slot) => *slot = data.clone(),
                None => {
                    inner.overrides.remove(channel);
                    inner.delivered.insert(channel.to_owned(), data.clone());
                    // The first event: from now on this name resumes after it.
                    self.unpositioned.clear(channel);
                }
            }
        }
    }

    /// Newest delivered replay id minus newest stored on `channel` (metrics).
    pub(crate) fn marker_lag(&self, channel: &str) -> Option<i64> {
        let inner = self.lock();
        let stored = *inner.stored.get(channel)?;
        inner.lag(channel, stored)
    }

    /// The replay id of the last event delivered on `channel` (stall notices, health).
    pub(crate) fn last_delivered_id(&self, channel: &str) -> Option<i64> {
        let inner = self.lock();
        let data = inner.delivered.get(channel)?;
        ReplayMarker::of(data).map(|m| m.replay_id)
    }

    /// The replay id for a subscribe of `subscription` now: after its last delivered event,
    /// else an explicit start or fallback, else its stored marker, else the configured option.
    ///
    /// Markers are stored per subscribed name: a channel's under its name, a PushTopic
    /// filter's under its full name as subscribed (`/topic/T?Region='EU'`), apart from its
    /// topic's (`/topic/T`, the unfiltered subscription's). A topic-wide marker could not keep
    /// at-least-once for every filter: a filter that starts late from an earlier position
    /// (`subscribe_from`, or `AllEvents` before anything was stored) works through events that
    /// lie before what the topic's other subscriptions have processed and stored, and since a
    /// stored marker never moves backwards, a crash in that backlog would resume it after the
    /// rest. With a marker of its own a filter's position depends on its own processing only.
    ///
    /// A filter with no marker of its own (its first subscribe, or one stored by a version
    /// that kept filters under the topic) starts from its topic's stored marker, once per
    /// session, and its start is stored under its own name at once (`-1` excepted: there is
    /// no position before the first event), so that a crash before its first processed event
    /// resumes it there and not from where the topic's other subscriptions have got to.
    pub(crate) async fn start_id(self: &Arc<Self>, subscription: &str) -> Result<i64> {
        let (delivered, forced, kept) = {
            let inner = self.lock();
            (
                inner.delivered.get(subscription).cloned(),
                inner.overrides.get(subscription).copied(),
                inner.starts.get(subscription).copied(),
            )
        };
        if let Some(data) = delivered {
            if let Some(marker) = ReplayMarker::of(&data) {
                return Ok(marker.replay_id);
            }
            tracing::warn!(channel = %sanitized(subscription), "the last event has no replay id; resubscribing from the start option");
        }
        let channel = base_channel(subscription);
        let filter = channel != subscription;
        if let Some(id) = forced
            && !filter
        {
            return Ok(id);
        }
        if let Some(id) = forced.or(kept.map(|start| start.replay_id)) {
            if let Some(start) = kept {
                // Queued by an earlier subscribe (one cancelled, say): stored before this one
                // goes out all the same, or a crash right after it loses the start.
                self.wait_start_stored(subscription, start).await?;
            } else if self.stored_marker(subscription).await?.is_none() {
                self.keep_start(subscription, ReplayMarker::new(id, None))
                    .await?;
            }
            return Ok(id);
        }
        // An acked event whose marker is not written yet is where the subscription is: the
        // storage still holds an older marker, and a filter that skipped events with
        // `subscribe_from` would go back before them. Read first: the writer forgets it only
        // once its marker is stored, so the read below sees it then.
        let committed = (self.lock().committed.get(subscription)).and_then(ReplayMarker::of);
        let stored = self.stored_marker(subscription).await?;
        let first = filter && self.lock().started.insert(subscription.to_owned());
        if let Some(marker) = committed
            && stored.is_none_or(|s| marker.is_after(&s))
        {
            return Ok(marker.replay_id);
        }
        if let Some(marker) = stored {
            return Ok(marker.replay_id);
        }
        if first && let Some(marker) = self.stored_marker(channel).await? {
            self.keep_start(subscription, marker).await?;
            return Ok(marker.replay_id);
        }
        if self.start == ReplayOption::NewEvents {
            return Ok(self.unpositioned.start_id(subscription));
        }
        let id = self.start.id();
        if filter {
            self.keep_start(subscription, ReplayMarker::new(id, None))
                .await?;
        }
        Ok(id)
    }

    /// The stored marker under `key`, remembered for the writer's never-backwards check.
    async fn stored_marker(&self, key: &str) -> Result<Option<ReplayMarker>> {
        let Some(storage) = &self.storage else {
            return Ok(None);
        };
        let stored = storage.get(key).await.map_err(|e| {
            Error::new(
                ErrorKind::Replay,
                format!("cannot read the replay marker of {}: {e}", sanitized(key)),
            )
            .with_source(e)
        })?;
        if let Some(marker) = stored {
            self.lock().stored.entry(key.to_owned()).or_insert(marker);
        }
        Ok(stored)
    }

    /// Store `start` as the marker of filter `key`, which has none (unless a marker of its
    /// own is already on its way: a commit, or an earlier start), and wait until it is stored:
    /// the subscribe goes out only then, so no crash can come between its first events and
    /// its start being stored. A failed write fails the subscribe, as a failed read does.
    async fn keep_start(self: &Arc<Self>, key: &str, start: ReplayMarker) -> Result<()> {
        if self.storage.is_none() || start.replay_id == ReplayOption::NewEvents.id() {
            return Ok(()); // nothing stored; or "after the last event", which is no position
        }
        {
            let mut inner = self.lock();
            if inner.fence == Fence::Lost
                || inner.stored.contains_key(key)
                || inner.dirty.contains_key(key)
            {
                return Ok(());
            }
            inner.dirty.insert(key.to_owned(), Commit::Start(start));
            inner.starts.insert(key.to_owned(), start);
        }
        self.wait_start_stored(key, start).await
    }

    /// Wait until the start `start` queued for filter `key` is stored (starting the writer if
    /// it is idle); `Err` if the writer stopped without storing it, which is then dropped.
    async fn wait_start_stored(self: &Arc<Self>, key: &str, start: ReplayMarker) -> Result<()> {
        {
            let mut inner = self.lock();
            if !inner.writer_running() && inner.dirty.contains_key(key) {
                self.spawn_writer(&mut inner);
            }
        }
        let mut retried = false;
        loop {
            let mut idle = pin!(self.idle.notified());
            idle.as_mut().enable();
            {
                let mut inner = self.lock();
                let running = inner.writer_running();
                if inner.starts.get(key) != Some(&start) {
                    // No longer waiting to be stored: stored (or a newer marker is), or
                    // dropped with a lost lease; else dropped by a `start_from`, or by another
                    // subscribe of the filter that waited for it and failed.
                    if inner.stored.contains_key(key) || inner.fence == Fence::Lost {
                        return Ok(());
                    }
                    return Err(Self::start_failed(&inner, key));
                }
                if !running {
                    if inner.dirty.contains_key(key) && !retried {
                        // The writer stopped on another channel's failure (a marker it could
                        // not read, say) before it took this start: one more round.
                        retried = true;
                        self.spawn_writer(&mut inner);
                    }
                    if !inner.writing {
                        // The subscribe fails: its start is no position, and stored later it
                        // could cover what a later subscribe from an earlier id delivers. A
                        // retry is a first subscribe again (it starts from the topic's marker).
                        if matches!(inner.dirty.get(key), Some(Commit::Start(s)) if *s == start) {
                            inner.dirty.remove(key);
                        }
                        inner.starts.remove(key);
                        inner.started.remove(key);
                        return Err(Self::start_failed(&inner, key));
                    }
                }
            }
            idle.await;
        }
    }

    fn start_failed(inner: &Inner, key: &str) -> Error {
        inner.last_error.clone().unwrap_or_else(|| {
            Error::new(
                ErrorKind::Replay,
                format!("the start of {} could not be stored", sanitized(key)),
            )
        })
    }

    /// Subscription `sub` of `channel` is being made: a PushTopic filter's deliveries are
    /// tracked and stored under its own name (see [`Self::start_id`]).
    pub(crate) fn subscribing(&self, sub: SubId, channel: &str) {
        let mut inner = self.lock();
        let count = inner.names.entry(channel.to_owned()).or_default();
        *count += 1;
        if *count == 1 {
            // Not its position: with no live subscription of this name, what was delivered on
            // it were a PushTopic filter's events on its topic's name (or a wildcard's).
            inner.delivered.remove(channel);
        }
        if base_channel(channel) != channel {
            inner.filters.insert(sub, Arc::from(channel));
        }
    }

    /// Whether an event is for the subscription of name `subscribed`: false for one that its
    /// resubscribe before its first event replayed although it is older than the subscribe
    /// (see [`super::unpositioned`]). Asked per subscription: a PushTopic filter's replayed
    /// events may come on its topic's name, and the topic's cut-off is not the filter's.
    pub(crate) fn admit(&self, subscribed: &str, data: &Data) -> bool {
        self.unpositioned.admit(subscribed, data)
    }

    /// Whether [`Self::admit`] may refuse anything now (the hot path asks only this).
    pub(crate) fn filtering(&self) -> bool {
        self.unpositioned.filtering()
    }

    /// Store this event's marker in the background (`OnReceive`: it was handed out).
    pub(crate) fn commit(self: &Arc<Self>, channel: &str, data: &Data) {
        if self.storage.is_none() {
            return;
        }
        // An event on a filtered name is a filter's, stored under its name (see `start_id`).
        let mut inner = self.lock();
        self.store_locked(&mut inner, channel, data.clone());
    }

    fn store_locked(self: &Arc<Self>, inner: &mut Inner, channel: &str, data: Data) {
        if inner.fence == Fence::Lost || inner.before_gap(channel, &data) {
            return;
        }
        match inner.committed.get_mut(channel) {
            Some(slot) => *slot = data.clone(),
            None => {
                inner.committed.insert(channel.to_owned(), data.clone());
            }
        }
        match inner.dirty.get_mut(channel) {
            // A queued gap restart stays unless the event is past the gap (one from before it
            // returned above): an expired marker stored over it brings back the same notice.
            Some(Commit::Restart { .. }) if ReplayMarker::of(&data).is_none() => {}
            Some(slot) => *slot = Commit::Event(data),
            None => {
                inner.dirty.insert(channel.to_owned(), Commit::Event(data));
            }
        }
        if !inner.writer_running() {
            self.spawn_writer(inner);
        }
    }

    fn spawn_writer(self: &Arc<Self>, inner: &mut Inner) {
        // Outside a runtime the markers wait for the next commit or `flush`.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            inner.writing = true;
            inner.writer = Some(handle.spawn(self.clone().write_loop()));
            // A runtime that is gone or shutting down refuses the task: still idle.
            inner.writer_running();
        }
    }

    async fn write_loop(self: Arc<Self>) {
        // However this ends (even a panicking storage), the writer is marked idle and what it
        // had not stored yet waits for the next try.
        let Some(storage) = self.storage.clone() else {
            self.lock().writing = false;
            self.idle.notify_waiters();
            return;
        };
        let mut writer = Writer {
            state: &self,
            batch: Vec::new(),
            unread: Vec::new(),
            running: true,
        };
        let mut read_error = None;
        loop {
            {
                let mut inner = self.lock();
                if inner.dirty.is_empty() {
                    // Idle in the same critical section that found nothing to write: a commit
                    // landing after it starts a new writer.
                    inner.writing = false;
                    writer.running = false;
                    drop(inner);
                    self.idle.notify_waiters();
                    #[cfg(test)]
                    if let Some(hook) = self.idle_hook.lock().unwrap().as_ref() {
                        hook();
                    }
                    return;
                }
                writer.batch = mem::take(&mut inner.dirty).into_iter().collect();
            }
            // Each marker leaves the batch only once it is stored (or needs no storing).
            while let Some((channel, commit)) = writer.batch.last().cloned() {
                let is_start = matches!(commit, Commit::Start(_));
                let marker = match commit {
                    Commit::Event(data) => ReplayMarker::of(&data),
                    Commit::Start(marker) => {
                        if self.lock().starts.get(&channel) != Some(&marker) {
                            writer.batch.pop(); // dropped since (see `start_from`)
                            continue;
                        }
                        Some(marker)
                    }
                    Commit::Restart { fallback, rejected } => {
                        // Checked again at the last moment, under the lock: an event committed
                        // after the gap, or a newer marker the writer stored since, wins. (A
                        // commit landing during the write below is written after it, unless it
                        // is at or before the expired id: see `Inner::rejected`.)
                        {
                            let mut inner = self.lock();
                            let expired_marker = (inner.rejected.get(&channel).copied())
                                .unwrap_or(ReplayMarker::new(rejected, None));
                            if inner.passed(&channel, &expired_marker) {
                                inner.rejected.remove(&channel);
                                writer.batch.pop();
                                continue;
                            }
                            // What is committed is at or before the expired id: a resubscribe
                            // must not start there again.
                            inner.committed.remove(&channel);
                        }
                        let key = channel.clone();
                        if writer
                            .store(&*storage, channel, ReplayMarker::new(fallback, None))
                            .await
                        {
                            // Stored: from now on an event's marker goes over it as usual,
                            // whatever its id (after a sandbox refresh, ids start again low).
                            self.lock().rejected.remove(&key);
                            continue;
                        }
                        return;
                    }
                };
                let Some(marker) = marker else {
                    tracing::warn!(channel = %sanitized(&channel), "event without a replay id: delivered, but no marker can be stored");
                    writer.batch.pop();
                    continue;
                };
                let (mut previous, gap) = {
                    let inner = self.lock();
                    let gap = inner.rejected.get(&channel).copied();
                    (inner.stored.get(&channel).copied(), gap)
                };
                if gap.is_some_and(|r| before(&marker, &r)) {
                    writer.batch.pop(); // from before a replay gap (see `Inner::rejected`)
                    continue;
                }
                if previous.is_none() {
                    // Not read yet (a subscribe_from skips the storage): never go backwards
                    // past what the storage holds either. A failed read is no "nothing
                    // stored": the marker waits for the next try, like a failed write, while
                    // the other channels' markers are written.
                    match storage.get(&channel).await {
                        Ok(stored) => previous = stored,
                        Err(e) => {
                            tracing::warn!(error = %e, channel = %sanitized(&channel), "reading the stored replay marker failed");
                            let entry = writer.batch.pop();
                            writer.unread.extend(entry);
                            read_error = Some(
                                Error::new(
                                    ErrorKind::Replay,
                                    format!("reading replay markers failed: {e}"),
                                )
                                .with_source(e),
                            );
                            continue;
                        }
                    }
                }
                if previous.is_some_and(|p| !marker.is_after(&p)) {
                    if let Some(p) = previous {
                        self.lock().now_stored(channel, p);
                    }
                    writer.batch.pop();
                    continue; // never backwards
                }
                // Checked again after the read above: a `start_from` meanwhile drops it.
                if is_start && self.lock().starts.get(&channel) != Some(&marker) {
                    writer.batch.pop();
                    continue;
                }
                if !writer.store(&*storage, channel, marker).await {
                    return;
                }
            }
            if let Some(error) = read_error.take() {
                // The others are stored: report the failed reads and leave their markers
                // for the next try.
                writer.stop(error);
                return;
            }
            // A whole round stored: a failure streak (see `Writer::stop`) is over.
            {
                let mut inner = self.lock();
                inner.failing = false;
                inner.last_error = None;
            }
        }
    }

    /// The session holds the lease at `epoch`: writes carry it from now on, and a refused
    /// write is reported to `on_lost`.
    pub(crate) fn hold_lease(
        &self,
        epoch: u64,
        on_lost: tokio::sync::mpsc::UnboundedSender<Error>,
    ) {
        let mut inner = self.lock();
        inner.fence = Fence::Held(epoch);
        inner.on_lease_lost = Some(on_lost);
        // A new session: its first storage failure is reported (none was, after a lost lease).
        inner.failing = false;
        inner.last_error = None;
    }

    /// The lease held at `epoch` is gone: drop what waits to be written and write nothing
    /// more. `Some(error)` (a refused write) is passed on to the keeper. Returns whether the
    /// lease was held at `epoch`: a late call about an earlier session's lease (a keeper
    /// releasing late, a write refused after the client was re-opened) changes nothing.
    pub(crate) fn lose_lease(&self, epoch: u64, error: Option<Error>) -> bool {
        let mut inner = self.lock();
        if inner.fence != Fence::Held(epoch) {
            return false;
        }
        inner.fence = Fence::Lost;
        inner.dirty.clear();
        inner.starts.clear();
        // What this session knew of the storage: the next holder writes on from what it
        // reads, so a later session of this client must read again.
        inner.rejected.clear();
        inner.stored.clear();
        inner.committed.clear();
        if let (Some(error), Some(tx)) = (error, inner.on_lease_lost.take()) {
            let _ = tx.send(error);
        }
        true
    }

    /// Wait until every marker committed so far is stored (one retry of a failing storage);
    /// `Err` with the storage's error if some could not be.
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<()> {
        if self.storage.is_none() {
            return Ok(());
        }
        let mut retried = false;
        loop {
            let mut idle = pin!(self.idle.notified());
            idle.as_mut().enable();
            {
                let mut inner = self.lock();
                let running = inner.writer_running();
                if inner.dirty.is_empty() && !running {
                    return Ok(());
                }
                if !running {
                    if retried {
                        let e = inner.last_error.clone().unwrap_or_else(|| {
                            Error::new(ErrorKind::Replay, "replay markers could not be stored")
                        });
                        return Err(e);
                    }
                    retried = true;
                    self.spawn_writer(&mut inner);
                    if !inner.writing {
                        return Err(Error::new(
                            ErrorKind::Replay,
                            "replay markers cannot be stored outside a Tokio runtime",
                        ));
                    }
                }
            }
            idle.await;
        }
    }
}

/// The running marker writer and the markers it took but has not stored yet.
struct Writer<'a> {
    state: &'a ReplayState,
    batch: Vec<(String, Commit)>,
    /// Markers of the batch set aside because the stored marker could not be read.
    unread: Vec<(String, Commit)>,
    running: bool,
}

impl Writer<'_> {
    /// Store `marker`, the last of the batch; `false` once the storage failed (the writer has
    /// stopped and reported it).
    async fn store(
        &mut self,
        storage: &dyn ReplayStorage,
        channel: String,
        marker: ReplayMarker,
    ) -> bool {
        let fence = self.state.lock().fence;
        let started = std::time::Instant::now();
        let written = match fence {
            Fence::None => storage.set(&channel, marker).await,
            Fence::Held(epoch) => storage.set_fenced(&channel, marker, epoch).await,
            Fence::Lost => {
                self.batch.clear();
                return true;
            }
        };
        crate::metrics::marker_write(started.elapsed(), written.is_ok());
        match written {
            Ok(()) => {
                self.batch.pop();
                let mut inner = self.state.lock();
                if let Some(lag) = inner.lag(&channel, marker) {
                    crate::metrics::marker_lag(&channel, lag);
                }
                inner.now_stored(channel, marker);
                // A filter's first subscribe waits for its start to be stored, not for the
                // writer to go idle, which a steadily committing channel may never let happen.
                drop(inner);
                self.state.idle.notify_waiters();
                true
            }
            Err(e) if e.kind() == ErrorKind::LeaseLost => {
                // Fenced off: another client holds the lease and wrote on from what it read;
                // nothing taken under this epoch may be written any more. The session that
                // loses is the one that wrote under it, not one opened since.
                self.batch.clear();
                if let Fence::Held(epoch) = fence {
                    self.state.lose_lease(epoch, Some(e));
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, channel = %sanitized(&channel), "storing the replay marker failed");
                let error = Error::new(
                    ErrorKind::Replay,
                    format!("storing replay markers failed: {e}"),
                )
                .with_source(e);
                // Do not spin on a broken storage: the next commit or flush retries.
                self.stop(error);
                false
            }
        }
    }

    /// Give the unstored markers back (unless newer commits arrived meanwhile, or the lease
    /// is lost), go idle and report `error`: to `flush`, and once per failure streak to every
    /// stream.
    fn stop(&mut self, error: Error) {
        let sink = {
            let mut inner = self.state.lock();
            let unstored = self.batch.drain(..).chain(self.unread.drain(..));
            let unstored: Vec<_> = if inner.fence == Fence::Lost {
                Vec::new() // nothing taken under the lost lease may be written any more
            } else {
                unstored.collect()
            };
            for (channel, commit) in unstored {
                let gap = inner.rejected.get(&channel).copied();
                if let Commit::Start(start) = &commit
                    && inner.starts.get(&channel) != Some(start)
                {
                    continue; // dropped since (see `start_from`)
                }
                match inner.dirty.entry(channel) {
                    Slot::Vacant(slot) => {
                        slot.insert(commit);
                    }
                    // A newer commit arrived meanwhile and wins, except a gap's restart over
                    // an event past the expired id: that event was committed first, and the
                    // restart would move the marker back before it.
                    Slot::Occupied(mut slot) => {
                        if let (&Commit::Restart { rejected, .. }, Commit::Event(data)) =
                            (slot.get(), &commit)
                            && ReplayMarker::of(data).is_some_and(|m| {
                                !before(&m, &gap.unwrap_or(ReplayMarker::new(rejected, None)))
                            })
                        {
                            slot.insert(commit);
                        }
                    }
                }
            }
            inner.writing = false;
            inner.last_error = Some(error.clone());
            let first = !mem::replace(&mut inner.failing, true);
            // After a lost lease the keeper reports the loss; storage errors say nothing more.
            (first && inner.fence != Fence::Lost)
                .then(|| inner.sink.clone())
                .flatten()
        };
        self.running = false;
        self.state.idle.notify_waiters();
        if let Some(sink) = sink {
            sink(error);
        }
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if self.running {
            // A panicking storage, or the runtime shutting down mid-write.
            self.stop(Error::new(
                ErrorKind::Replay,
                "the replay storage panicked or stopped while storing a marker",
            ));
        }
    }
}

#[cfg(test)]
mod gap_tests;
#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::MappingStorage;

    fn state(
        storage: impl ReplayStorage + 'static,
        start: ReplayOption,
        policy: CommitPolicy,
    ) -> Arc<ReplayState> {
        Arc::new(ReplayState::new(
            Some(Arc::new(storage)),
            start,
            None,
            policy,
        ))
    }

    fn ev(id: i64, date: &str) -> Data {
        Data::from_json(
            serde_json::json!({"event": {"replayId": id, "createdDate": date}}).to_string(),
        )
        .unwrap()
    }

    #[test]
    fn a_topic_s_replay_gap_notice_is_not_taken_by_a_filter_of_that_topic() {
        const TOPIC: &str = "/topic/T";
        const EU: &str = "/topic/T?Region='EU'";
        const US: &str = "/topic/T?Region='US'";
        let s = Arc::new(ReplayState::new(
            Some(Arc::new(MappingStorage::new())),
            ReplayOption::AllEvents,
            Some(ReplayOption::AllEvents),
            CommitPolicy::AfterProcessed,
        ));
        s.subscribing(1, TOPIC);
        s.subscribing(2, EU);
        s.subscribing(3, US);
        s.fell_back(TOPIC, Some(50), -2);
        s.fell_back(US, Some(40), -2);
        assert!(s.take_gap(EU).is_none(), "a filter took its topic's notice");
        // Each subscription that fell back gets its own notice, under its own name.
        let us = s.take_gap(US).expect("US's notice was overwritten");
        assert_eq!((us.channel.as_str(), us.rejected_id), (US, Some(40)));
        let topic = s.take_gap(TOPIC).expect("the topic's notice");
        assert_eq!(
            (topic.channel.as_str(), topic.rejected_id),
            (TOPIC, Some(50))
        );
        // Forgetting a filter leaves its topic's notice alone.
        s.fell_back(TOPIC, Some(60), -2);
        s.forget(2, EU);
        assert!(s.take_gap(TOPIC).is_some());
    }

    #[tokio::test]
    async fn a_filter_s_first_event_does_not_end_another_filter_s_resubscribe_replay() {
        const TOPIC: &str = "/topic/T";
        const EU: &str = "/topic/T?Region='EU'";
        const US: &str = "/topic/T?Region='US'";
        let s = Arc::new(ReplayState::new(
            None,
            ReplayOption::NewEvents,
            None,
            CommitPolicy::AfterProcessed,
        ));
        s.subscribing(1, EU);
        s.subscribing(2, US);
        s.subscribing(3, TOPIC);
        for name in [EU, US, TOPIC] {
            assert_eq!(s.start_id(name).await.unwrap(), -1, "{name}");
        }
        s.delivered([(EU, &ev(7, "2099-01-01T00:00:00Z"))].into_iter());
        // EU resumes after its event; US and the topic have none, so a resubscribe after a
        // session loss replays (-2) instead of skipping what was published meanwhile.
        assert_eq!(s.start_id(EU).await.unwrap(), 7);
        assert_eq!(s.start_id(US).await.unwrap(), -2, "US would skip events");
        s.forget(1, EU);
        assert_eq!(
            s.start_id(TOPIC).await.unwrap(),
            -2,
            "the topic would skip events"
        );
    }

    #[tokio::test]
    async fn start_id_precedence() {
        let storage = MappingStorage::new();
        storage
            .map()
            .lock()
            .unwrap()
            .insert("/a".into(), ReplayMarker::new(40, None));
        let s = state(
            storage,
            ReplayOption::NewEvents,
            CommitPolicy::AfterProcessed,
        );
        assert_eq!(s.start_id("/a").await.unwrap(), 40, "stored marker");
        assert_eq!(s.start_id("/b").await.unwrap(), -1, "start option");
        s.start_from("/a", 7);
        assert_eq!(s.start_id("/a").await.unwrap(), 7, "explicit start");
        let e = ev(50, "2026-11-28T07:00:00Z");
        s.delivered([("/a", &e)].into_iter());
        assert_eq!(s.start_id("/a").await.unwrap(), 50, "last delivered wins");
    }

    #[tokio::test]
    async fn a_topic_subscribed_while_a_filter_of_it_is_live_starts_from_its_own_marker_not_the_filter_s_last_event()
     {
        const TOPIC: &str = "/topic/T";
        const EU: &str = "/topic/T?Region='EU'";
        let storage = MappingStorage::new();
        storage
            .set(TOPIC, ReplayMarker::new(50, None))
            .await
            .unwrap();
        let s = state(
            storage,
            ReplayOption::AllEvents,
            CommitPolicy::AfterProcessed,
        );
        s.subscribing(1, EU);
        assert_eq!(s.start_id(EU).await.unwrap(), 50, "from its topic's marker");
        // The filter's event comes on the bare topic name, before the topic is subscribed.
        s.delivered([(TOPIC, &ev(60, "2026-11-28T07:01:00Z"))].into_iter());
        s.subscribing(2, TOPIC);
        assert_eq!(
            s.start_id(TOPIC).await.unwrap(),
            50,
            "the topic would skip its events 51 to 59, which the filter did not match"
        );
    }

    #[tokio::test]
    async fn forgetting_a_filter_keeps_the_live_unfiltered_subscription_s_position() {
        let s = state(
            MappingStorage::new(),
            ReplayOption::AllEvents,
            CommitPolicy::AfterProcessed,
        );
        s.subscribing(1, "/topic/T");
        s.subscribing(2, "/topic/T?Region='EU'");
        let e = ev(50, "2026-11-28T07:00:00Z");
        s.delivered([("/topic/T", &e)].into_iter());
        s.forget(2, "/topic/T?Region='EU'");
        assert_eq!(s.start_id("/topic/T").await.unwrap(), 50);
        // With the topic itself gone too, a filter's events on the bare name say nothing.
        s.subscribing(3, "/topic/T?Region='US'");
        s.forget(1, "/topic/T");
        s.delivered([("/topic/T", &e)].into_iter());
        s.forget(3, "/topic/T?Region='US'");
        assert_eq!(s.start_id("/topic/T").await.unwrap(), -2);
    }

    #[tokio::test]
    async fn a_resubscribe_right_after_an_ack_starts_after_the_acked_event_not_the_older_stored_marker()
     {
        const CLOSED: &str = "/topic/T?Status__c='Closed'";
        let storage = MappingStorage::new();
        storage
            .set(CLOSED, ReplayMarker::new(-2, None))
            .await
            .unwrap();
        storage
            .set("/event/A__e", ReplayMarker::new(5, None))
            .await
            .unwrap();
        let s = state(
            storage,
            ReplayOption::AllEvents,
            CommitPolicy::AfterProcessed,
        );
        // The filter starts late, after event 1 (which is not its to process), and processes 2.
        s.start_from(CLOSED, 1);
        s.subscribing(1, CLOSED);
        assert_eq!(s.start_id(CLOSED).await.unwrap(), 1);
        s.subscribing(2, "/event/A__e");
        assert_eq!(s.start_id("/event/A__e").await.unwrap(), 5);
        let (two, seven) = (ev(2, "2026-11-28T07:00:02Z"), ev(7, "2026-11-28T07:00:07Z"));
        for (sub, name, data) in [(1, CLOSED, &two), (2, "/event/A__e", &seven)] {
            s.delivered([(name, data)].into_iter());
            let tickets = s.issue([(0, sub, name, data)].into_iter());
            tickets[0].done(name);
            // Unsubscribed and subscribed again before the writer ran: the storage still
            // holds the older marker, but the acked event is where the subscription is.
            s.forget(sub, name);
            s.subscribing(sub + 10, name);
        }
        assert_eq!(
            s.start_id(CLOSED).await.unwrap(),
            2,
            "the filter went back to before event 1, which it had skipped"
        );
        assert_eq!(s.start_id("/event/A__e").await.unwrap(), 7);
        s.flush().await.unwrap();
        assert_eq!(s.start_id(CLOSED).await.unwrap(), 2);
        // Once written, the committed event is no longer kept (the stored marker says it all).
        assert!(s.lock().committed.is_empty());
    }

    #[tokio::test]
    async fn commits_coalesce_and_never_go_backwards() {
        let storage = MappingStorage::new();
        let map = storage.map().clone();
        let s = state(
            storage,
            ReplayOption::AllEvents,
            CommitPolicy::AfterProcessed,
        );
        s.commit("/a", &ev(5, "2026-11-28T07:00:05Z"));
        s.flush().await.unwrap();
        assert_eq!(map.lock().unwrap()["/a"].replay_id, 5);
        // An older event (replayed) does not move it back, whatever its id.
        s.commit("/a", &ev(9, "2026-11-28T07:00:01Z"));
        s.flush().await.unwrap();
        assert_eq!(map.lock().unwrap()["/a"].replay_id, 5);
        for i in 6..100 {
            s.commit("/a", &ev(i, &format!("2026-11-28T07:01:{:02}Z", i % 60)));
        }
        s.commit("/a", &ev(100, "2026-11-28T08:00:00Z"));
        s.flush().await.unwrap();
        assert_eq!(map.lock().unwrap()["/a"].replay_id, 100);
    }

    #[tokio::test]
    async fn only_the_processed_prefix_is_stored() {
        let storage = MappingStorage::new();
        let map = storage.map().clone();
        let s = state(storage, ReplayOption::AllEvents, CommitPolicy::Manual);
        let data: Vec<Data> = (1..=5)
            .map(|i| ev(i, &format!("2026-11-28T07:00:0{i}Z")))
            .collect();
        let tickets = s.issue(data.iter().enumerate().map(|(i, d)| (i, 1, "/a", d)));
        let stored = || map.lock().unwrap().get("/a").map(|m| m.replay_id);
        // 2, 4 and 5 finish first: 1 is still in progress, so nothing may be stored.
        for i in [1, 3, 4] {
            tickets[i].done("/a");
        }
        s.flush().await.unwrap();
        assert_eq!(stored(), None);
        tickets[0].done("/a"); // 1 and 2 are done; 3 is not
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(2));
        tickets[2].done("/a"); // everything is done
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(5));
        // Acknowledging again, or a forgotten channel, changes nothing.
        tickets[0].done("/a");
        s.forget(1, "/a");
        tickets[4].done("/a");
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(5));
    }

    #[tokio::test]
    async fn an_event_on_a_topic_fanned_out_to_the_topic_a_filter_and_a_wildcard_is_stored_only_once_the_wildcard_processed_it()
     {
        const TOPIC: &str = "/topic/T";
        let storage = MappingStorage::new();
        let map = storage.map().clone();
        let s = state(storage, ReplayOption::AllEvents, CommitPolicy::Manual);
        // The router's order for an event on the topic's name: its exact subscribers (the
        // topic, then the filter), then the wildcard, which shares the topic's marker.
        s.subscribing(1, TOPIC);
        s.subscribing(2, "/topic/T?Region='EU'");
        s.subscribing(3, "/topic/*");
        let e = ev(1, "2026-11-28T07:00:01Z");
        let tickets =
            s.issue([(0, 1, TOPIC, &e), (0, 2, TOPIC, &e), (0, 3, TOPIC, &e)].into_iter());
        tickets[0].done(TOPIC);
        tickets[1].done(TOPIC);
        s.flush().await.unwrap();
        let stored = || map.lock().unwrap().get(TOPIC).map(|m| m.replay_id);
        assert_eq!(stored(), None, "the wildcard has not processed event 1");
        tickets[2].done(TOPIC);
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(1));
    }

    #[tokio::test]
    async fn an_event_fanned_out_to_two_subscriptions_is_stored_only_when_both_processed_it() {
        let storage = MappingStorage::new();
        let map = storage.map().clone();
        let s = state(storage, ReplayOption::AllEvents, CommitPolicy::Manual);
        let data: Vec<Data> = (1..=2)
            .map(|i| ev(i, &format!("2026-11-28T07:00:0{i}Z")))
            .collect();
        // Each event of a base channel routed to two PushTopic filters (subscriptions 1 and 2).
        let deliveries = [(0, 1), (0, 2), (1, 1), (1, 2)];
        let tickets = s.issue(
            deliveries
                .iter()
                .map(|(i, sub)| (*i, *sub, "/topic/T", &data[*i])),
        );
        let stored = || map.lock().unwrap().get("/topic/T").map(|m| m.replay_id);
        tickets[0].done("/topic/T");
        tickets[2].done("/topic/T");
        s.flush().await.unwrap();
        assert_eq!(stored(), None, "subscription 2 has not processed event 1");
        tickets[1].done("/topic/T");
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(1));
        tickets[3].done("/topic/T");
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_while_the_writer_goes_idle_is_still_written() {
        let storage = MappingStorage::new();
        let map = storage.map().clone();
        let s = state(storage, ReplayOption::AllEvents, CommitPolicy::OnReceive);
        // A commit that lands just as the writer, having found nothing more to write, goes
        // idle (the hook runs once, at that moment).
        let late = s.clone();
        let once = std::sync::atomic::AtomicBool::new(false);
        *s.idle_hook.lock().unwrap() = Some(Box::new(move || {
            if !once.swap(true, Ordering::SeqCst) {
                late.commit("/a", &ev(2, "2026-11-28T07:00:02Z"));
            }
        }));
        s.commit("/a", &ev(1, "2026-11-28T07:00:01Z"));
        // No flush: on a quiet channel nothing else would start a writer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if map.lock().unwrap().get("/a").map(|m| m.replay_id) == Some(2) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the newest marker was left unwritten"
            );
            tokio::task::yield_now().await;
        }
    }

    /// A `MappingStorage` whose writes fail while `failing` is set.
    struct Failing {
        map: MappingStorage,
        failing: AtomicBool,
    }

    impl ReplayStorage for Failing {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            self.map.get(key)
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            if self.failing.load(Ordering::SeqCst) {
                return Box::pin(async { Err(Error::new(ErrorKind::Replay, "the test fails")) });
            }
            self.map.set(key, marker)
        }
    }

    #[tokio::test]
    async fn a_filter_s_start_left_by_a_failed_subscribe_is_not_stored_over_a_later_subscribe_s_unprocessed_events()
     {
        const CLOSED: &str = "/topic/T?Status__c='Closed'";
        let storage = Arc::new(Failing {
            map: MappingStorage::new(),
            failing: AtomicBool::new(true),
        });
        let s = Arc::new(ReplayState::new(
            Some(storage.clone()),
            ReplayOption::AllEvents,
            None,
            CommitPolicy::AfterProcessed,
        ));
        // subscribe_from(5) fails: its start cannot be stored.
        s.start_from(CLOSED, 5);
        s.subscribing(1, CLOSED);
        assert!(s.start_id(CLOSED).await.is_err());
        s.forget(1, CLOSED);
        // The storage is back; subscribe_from(0) works through events 1 to 5.
        storage.failing.store(false, Ordering::SeqCst);
        s.start_from(CLOSED, 0);
        s.subscribing(2, CLOSED);
        assert_eq!(s.start_id(CLOSED).await.unwrap(), 0);
        let data: Vec<Data> = (1..=5)
            .map(|i| ev(i, &format!("2026-11-28T07:00:0{i}Z")))
            .collect();
        s.delivered(data.iter().map(|d| (CLOSED, d)));
        let _tickets = s.issue(data.iter().enumerate().map(|(i, d)| (i, 2, CLOSED, d)));
        s.flush().await.unwrap();
        let stored = storage
            .map
            .map()
            .lock()
            .unwrap()
            .get(CLOSED)
            .map(|m| m.replay_id);
        assert!(
            stored.is_none_or(|id| id < 1),
            "stored {stored:?}: the failed subscribe's start covers events 1 to 5, delivered and not processed"
        );
    }

    /// Every `set` of `key` reports its id on `entered` and waits for one `release`.
    struct Busy {
        map: MappingStorage,
        key: &'static str,
        entered: tokio::sync::mpsc::UnboundedSender<i64>,
        release: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    }

    impl ReplayStorage for Busy {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            self.map.get(key)
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                if key == self.key {
                    let _ = self.entered.send(marker.replay_id);
                    let _ = self.release.lock().await.recv().await;
                }
                self.map.set(key, marker).await
            })
        }
    }

    const B: &str = "/event/B__e";
    const FILTER: &str = "/topic/T?Region='EU'";

    /// `/topic/T` stored at 50, and a [`Busy`] storage whose writes of `B` wait for `release`;
    /// `entered` says which id the writer is inside.
    fn busy_b() -> (
        MappingStorage,
        tokio::sync::mpsc::UnboundedReceiver<i64>,
        tokio::sync::mpsc::UnboundedSender<()>,
        Arc<ReplayState>,
    ) {
        busy(B, ReplayOption::AllEvents)
    }

    /// As [`busy_b`], with the writes of `key` waiting, and `start` the configured option.
    fn busy(
        key: &'static str,
        start: ReplayOption,
    ) -> (
        MappingStorage,
        tokio::sync::mpsc::UnboundedReceiver<i64>,
        tokio::sync::mpsc::UnboundedSender<()>,
        Arc<ReplayState>,
    ) {
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = tokio::sync::mpsc::unbounded_channel();
        let storage = Arc::new(Busy {
            map: map.clone(),
            key,
            entered: entered_tx,
            release: tokio::sync::Mutex::new(release_rx),
        });
        let state = Arc::new(ReplayState::new(
            Some(storage),
            start,
            None,
            CommitPolicy::OnReceive,
        ));
        (map, entered, release, state)
    }

    /// Another channel streams steadily (one commit per storage round trip) while a filter
    /// subscribes for the first time: its start is stored in the writer's next round, and the
    /// subscribe must return then, not once the writer goes idle, which it never does while
    /// the other channel streams.
    #[tokio::test]
    async fn a_filter_s_first_subscribe_returns_once_its_start_is_stored_although_the_writer_stays_busy()
     {
        let (map, mut entered, release, state) = busy_b();
        let ev = |id: i64| ev(id, "2026-11-28T07:00:00Z");
        state.commit(B, &ev(1));
        assert_eq!(entered.recv().await, Some(1)); // the writer is inside set(B, 1)
        let st = state.clone();
        let subscribing = tokio::spawn(async move { st.start_id(FILTER).await });
        for _ in 0..1000 {
            if state.lock().dirty.contains_key(FILTER) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            state.lock().dirty.contains_key(FILTER),
            "the start is queued"
        );
        for id in 2..=5 {
            state.commit(B, &ev(id));
            release.send(()).unwrap();
            assert_eq!(entered.recv().await, Some(id));
        }
        assert_eq!(
            map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id),
            Some(50),
            "the filter's start has been stored"
        );
        // The writer is inside set(B, 5) now: busy.
        for _ in 0..1000 {
            if subscribing.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let finished = subscribing.is_finished();
        drop(release); // let the writer go
        assert!(
            finished,
            "start_id still waits for the writer to go idle although the start is stored"
        );
        assert_eq!(subscribing.await.unwrap().unwrap(), 50);
    }

    /// A `MappingStorage` whose reads fail while `failing` is set (writes work).
    struct FailingGet {
        map: MappingStorage,
        failing: AtomicBool,
    }

    impl ReplayStorage for FailingGet {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            if self.failing.load(Ordering::SeqCst) {
                return Box::pin(async { Err(Error::new(ErrorKind::Replay, "the test fails")) });
            }
            self.map.get(key)
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            self.map.set(key, marker)
        }
    }

    /// Stored: 100, never read this session (a `subscribe_from` skips the read). The writer's
    /// never-backwards read of it fails: the older 40 must not be written as if nothing were
    /// stored; it waits, flush reports the error, and once reads work it is dropped.
    #[tokio::test]
    async fn a_failed_read_of_the_stored_marker_does_not_let_an_older_marker_be_written_over_it() {
        const CH: &str = "/event/A__e";
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(100, None));
        let storage = Arc::new(FailingGet {
            map: map.clone(),
            failing: AtomicBool::new(true),
        });
        let s = Arc::new(ReplayState::new(
            Some(storage.clone()),
            ReplayOption::AllEvents,
            None,
            CommitPolicy::OnReceive,
        ));
        s.commit(CH, &ev(40, "2026-11-28T07:00:40Z"));
        let flushed = s.flush().await;
        let stored = map.map().lock().unwrap()[CH].replay_id;
        assert_eq!(
            stored, 100,
            "written backwards over the newer stored marker"
        );
        assert!(flushed.is_err(), "flush hid the failed read");
        storage.failing.store(false, Ordering::SeqCst);
        s.flush().await.unwrap();
        assert_eq!(map.map().lock().unwrap()[CH].replay_id, 100);
    }

    /// A filter's first subscribe queued its start and was cancelled (a timeout, say) while the
    /// writer was busy with another channel; the retry finds the start queued and must still
    /// wait until it is stored, or a crash right after the subscribe loses it and the filter
    /// resumes from its topic's marker, skipping its backlog.
    #[tokio::test]
    async fn a_retried_filter_subscribe_waits_for_its_queued_start_to_be_stored() {
        let (map, mut entered, release, state) = busy_b();
        state.commit(B, &ev(1, "2026-11-28T07:00:00Z"));
        assert_eq!(entered.recv().await, Some(1)); // the writer is inside set(B, 1)
        let st = state.clone();
        let first = tokio::spawn(async move { st.start_id(FILTER).await });
        for _ in 0..1000 {
            if state.lock().dirty.contains_key(FILTER) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            state.lock().dirty.contains_key(FILTER),
            "the start is queued"
        );
        first.abort();
        let st = state.clone();
        let retry = tokio::spawn(async move { st.start_id(FILTER).await });
        for _ in 0..1000 {
            if retry.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let early = retry.is_finished();
        release.send(()).unwrap(); // let the writer store B, then the start
        assert!(!early, "the retry returned before its start was stored");
        assert_eq!(retry.await.unwrap().unwrap(), 50);
        assert_eq!(
            map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id),
            Some(50)
        );
    }

    /// Wait (bounded) until `done` holds, yielding to the writer meanwhile.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("timed out waiting until {what}");
    }

    /// A filter's first subscribe queued its start (50, the topic's marker) and was cancelled;
    /// the user then asks `subscribe_from(filter, 10)`. The stale start is no position: stored,
    /// it would cover events 11 to 50, which this subscribe delivers first (a crash among them
    /// would resume after 50).
    #[tokio::test]
    async fn a_subscribe_from_an_earlier_id_drops_the_start_a_cancelled_subscribe_queued() {
        let (map, mut entered, release, state) = busy_b();
        state.commit(B, &ev(1, "2026-11-28T07:00:00Z"));
        assert_eq!(entered.recv().await, Some(1)); // the writer is inside set(B, 1)
        let st = state.clone();
        let first = tokio::spawn(async move { st.start_id(FILTER).await });
        until("the start is queued", || {
            state.lock().dirty.contains_key(FILTER)
        })
        .await;
        first.abort();
        state.start_from(FILTER, 10);
        let st = state.clone();
        let retry = tokio::spawn(async move { st.start_id(FILTER).await });
        release.send(()).unwrap();
        assert_eq!(retry.await.unwrap().unwrap(), 10);
        assert_eq!(
            map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id),
            Some(10),
            "the cancelled subscribe's start was stored over the explicit earlier one"
        );
    }

    /// A filter's first subscribe is cancelled while its start (its topic's 50) is being
    /// written; the retry must start there too, once it is stored (`AllEvents`: not from -2,
    /// under a stored 50 that then covers events the filter has not processed).
    #[tokio::test]
    async fn a_filter_subscribe_retried_while_its_start_is_written_starts_there_once_stored() {
        let (map, mut entered, release, state) = busy(FILTER, ReplayOption::AllEvents);
        let st = state.clone();
        let first = tokio::spawn(async move { st.start_id(FILTER).await });
        assert_eq!(entered.recv().await, Some(50)); // the writer is inside set(FILTER, 50)
        first.abort();
        let st = state.clone();
        let retry = tokio::spawn(async move { st.start_id(FILTER).await });
        release.send(()).unwrap();
        assert_eq!(retry.await.unwrap().unwrap(), 50);
        assert_eq!(
            map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id),
            Some(50)
        );
    }

    /// As above under `NewEvents`: the retry must not go out (from `-1`) before the start it
    /// follows is stored.
    #[tokio::test]
    async fn under_new_events_a_filter_subscribe_retried_while_its_start_is_written_waits_for_it() {
        let (_map, mut entered, release, state) = busy(FILTER, ReplayOption::NewEvents);
        let st = state.clone();
        let first = tokio::spawn(async move { st.start_id(FILTER).await });
        assert_eq!(entered.recv().await, Some(50));
        first.abort();
        let st = state.clone();
        let retry = tokio::spawn(async move { st.start_id(FILTER).await });
        for _ in 0..1000 {
            if retry.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let early = retry.is_finished();
        release.send(()).unwrap();
        let id = retry.await.unwrap().unwrap();
        assert!(
            !early,
            "the retry returned {id} before its start was stored"
        );
        assert_eq!(id, 50);
    }

    /// The stored 50 expired and its gap's restart (-2) is being written when an older event
    /// (40, also expired) is acked: stored after the restart, it would bring the expired id and
    /// its notice back on the next run. A newer event (60) is stored as usual.
    #[tokio::test]
    async fn an_expired_ack_while_the_gap_restart_is_written_is_not_stored_after_it() {
        const CH: &str = "/event/A__e";
        let (map, mut entered, release, s) = busy(CH, ReplayOption::AllEvents);
        map.map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(50, None));
        s.lock()
            .stored
            .insert(CH.into(), ReplayMarker::new(50, None));
        s.gap_handed_out(&ReplayGap {
            channel: CH.into(),
            rejected_id: Some(50),
            fallback_id: -2,
        });
        assert_eq!(entered.recv().await, Some(-2)); // inside set(CH, -2)
        s.commit(CH, &ev(40, "2026-11-28T07:00:40Z"));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        s.flush().await.unwrap();
        assert_eq!(
            map.map().lock().unwrap()[CH].replay_id,
            -2,
            "the expired id was stored after the restart"
        );
        s.commit(CH, &ev(60, "2026-11-28T07:01:00Z"));
        s.flush().await.unwrap();
        assert_eq!(map.map().lock().unwrap()[CH].replay_id, 60);
    }

    /// A `MappingStorage` whose reads of `key` always fail.
    struct Unreadable {
        map: MappingStorage,
        key: &'static str,
    }

    impl ReplayStorage for Unreadable {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            if key == self.key {
                return Box::pin(async { Err(Error::new(ErrorKind::Replay, "corrupt value")) });
            }
            self.map.get(key)
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            self.map.set(key, marker)
        }
    }

    /// One channel's stored marker cannot be read (a corrupt value): its marker waits and the
    /// failure is reported, but the writer still stores every other channel's.
    #[tokio::test]
    async fn a_stored_marker_that_cannot_be_read_does_not_hold_back_other_channels() {
        const BAD: &str = "/event/Bad__e";
        let map = MappingStorage::new();
        let s = state(
            Unreadable {
                map: map.clone(),
                key: BAD,
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let others: Vec<String> = (0..20).map(|i| format!("/event/C{i}__e")).collect();
        {
            let mut inner = s.lock();
            s.store_locked(&mut inner, BAD, ev(40, "2026-11-28T07:00:40Z"));
            for ch in &others {
                s.store_locked(&mut inner, ch, ev(7, "2026-11-28T07:00:07Z"));
            }
        }
        assert!(s.flush().await.is_err(), "flush hid the failed read");
        let stored = map.map().lock().unwrap().clone();
        let missing: Vec<_> = others.iter().filter(|c| !stored.contains_key(*c)).collect();
        assert!(missing.is_empty(), "not stored: {missing:?}");
        assert!(!stored.contains_key(BAD));
        assert!(
            s.lock().dirty.contains_key(BAD),
            "its marker waits for the next try"
        );
    }

    /// Reads of `key` wait for `release` and then fail; writes are fenced writes that work.
    struct FailingGate {
        map: MappingStorage,
        key: &'static str,
        entered: tokio::sync::mpsc::UnboundedSender<()>,
        release: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    }

    impl ReplayStorage for FailingGate {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            Box::pin(async move {
                if key == self.key {
                    let _ = self.entered.send(());
                    let _ = self.release.lock().await.recv().await;
                    return Err(Error::new(ErrorKind::Replay, "the test fails"));
                }
                self.map.get(key).await
            })
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            self.map.set(key, marker)
        }
        fn set_fenced<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
            _epoch: u64,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            self.map.set(key, marker)
        }
    }

    /// The channel of [`lease_lost_during_a_failing_read`].
    const LEASED: &str = "/event/A__e";

    /// Under lease 1, `LEASED` commits 40; the lease is lost while the writer is inside the
    /// never-backwards read of its stored marker, and that read then fails. Returns the state
    /// once its writer is idle, what was reported to the streams, and the reads' gate (every
    /// later read of `LEASED` waits for a `release` and fails too).
    async fn lease_lost_during_a_failing_read() -> (
        Arc<ReplayState>,
        Arc<Mutex<Vec<String>>>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ) {
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = state(
            FailingGate {
                map: MappingStorage::new(),
                key: LEASED,
                entered: entered_tx,
                release: tokio::sync::Mutex::new(release_rx),
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        s.set_error_sink(Arc::new(move |e| seen.lock().unwrap().push(e.to_string())));
        let (lost_tx, _lost) = tokio::sync::mpsc::unbounded_channel();
        s.hold_lease(1, lost_tx);
        s.commit(LEASED, &ev(40, "2026-11-28T07:00:40Z"));
        assert_eq!(entered.recv().await, Some(())); // the writer is inside get(LEASED)
        assert!(s.lose_lease(1, None));
        release.send(()).unwrap();
        until("the writer is idle", || !s.lock().writing).await;
        (s, errors, entered, release)
    }

    /// The lease is lost while the writer reads a stored marker, and that read fails: what the
    /// writer took under the lost lease is dropped, not given back to be written later, and
    /// the streams hear of the loss only (no storage error).
    #[tokio::test]
    async fn a_read_failing_after_the_lease_is_lost_gives_nothing_back_to_write() {
        let (s, errors, _entered, _release) = lease_lost_during_a_failing_read().await;
        assert!(
            s.lock().dirty.is_empty(),
            "the batch taken under the lost lease was given back"
        );
        assert!(
            errors.lock().unwrap().is_empty(),
            "storage errors after the lease loss: {:?}",
            errors.lock().unwrap()
        );
    }

    /// The stored 50 expired; its gap's restart is queued. An older event acked now (40, also
    /// expired) must not replace it, or 40 is stored and a restart meets the expired id and its
    /// notice again. A newer event (60) does replace it.
    #[test]
    fn an_expired_ack_does_not_replace_a_queued_gap_restart() {
        const CH: &str = "/event/A__e";
        let storage = MappingStorage::new();
        storage
            .map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(50, None));
        let s = state(
            storage.clone(),
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        // No runtime: nothing is written until the flush below.
        s.lock()
            .stored
            .insert(CH.into(), ReplayMarker::new(50, None));
        s.gap_handed_out(&ReplayGap {
            channel: CH.into(),
            rejected_id: Some(50),
            fallback_id: -2,
        });
        s.commit(CH, &ev(40, "2026-11-28T07:00:40Z"));
        assert!(
            matches!(
                s.lock().dirty.get(CH),
                Some(Commit::Restart { rejected: 50, .. })
            ),
            "the expired ack replaced the gap's restart"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.flush()).unwrap();
        assert_eq!(storage.map().lock().unwrap()[CH].replay_id, -2);
        s.commit(CH, &ev(60, "2026-11-28T07:01:00Z"));
        rt.block_on(s.flush()).unwrap();
        assert_eq!(storage.map().lock().unwrap()[CH].replay_id, 60);
    }

    /// Every `set` of `key` reports its id on `entered`, waits for one `release`, and the
    /// first one fails (the others are stored).
    struct FailFirstSet {
        map: MappingStorage,
        key: &'static str,
        failed: AtomicBool,
        entered: tokio::sync::mpsc::UnboundedSender<i64>,
        release: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    }

    impl ReplayStorage for FailFirstSet {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            self.map.get(key)
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                if key == self.key {
                    let _ = self.entered.send(marker.replay_id);
                    let _ = self.release.lock().await.recv().await;
                    if !self.failed.swap(true, Ordering::SeqCst) {
                        return Err(Error::new(ErrorKind::Replay, "the test fails"));
                    }
                }
                self.map.set(key, marker).await
            })
        }
    }

    /// A filter's first subscribe queues its start (the topic's 50) and is cancelled while the
    /// writer is inside set(FILTER, 50); the user then asks `subscribe_from(FILTER, 10)`, which
    /// drops that start. The write of 50 fails: `Writer::stop` must not give the dropped start
    /// back, or the subscribe_from's own start sees "a marker on its way", is not stored, and
    /// a crash before its first processed event resumes the filter from the topic's 50,
    /// skipping events 11..=50.
    #[tokio::test]
    async fn a_start_whose_write_failed_after_subscribe_from_dropped_it_is_not_given_back() {
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = state(
            FailFirstSet {
                map: map.clone(),
                key: FILTER,
                failed: AtomicBool::new(false),
                entered: entered_tx,
                release: tokio::sync::Mutex::new(release_rx),
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let st = s.clone();
        let first = tokio::spawn(async move { st.start_id(FILTER).await });
        assert_eq!(entered.recv().await, Some(50)); // the writer is inside set(FILTER, 50)
        first.abort();
        s.start_from(FILTER, 10);
        for _ in 0..5 {
            release.send(()).unwrap(); // the first set fails, later ones go through
        }
        until("the writer stopped on the failed write", || {
            !s.lock().writing
        })
        .await;
        assert!(
            !s.lock().dirty.contains_key(FILTER),
            "Writer::stop gave the dropped start back"
        );
        assert_eq!(s.start_id(FILTER).await.unwrap(), 10);
        let at_subscribe = map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id);
        let _ = s.flush().await;
        let after_flush = map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id);
        assert_eq!(
            (at_subscribe, after_flush),
            (Some(10), Some(10)),
            "subscribe_from(10) went out with its start not stored (a crash resumes from the topic's 50)"
        );
    }

    /// One channel's stored marker cannot be read while another channel streams: every write
    /// round stores the other channel and stops on the failed read. The error goes to the
    /// streams once per failure streak, not once per round.
    #[tokio::test]
    async fn an_unreadable_marker_is_reported_to_the_streams_once_not_every_write_round() {
        const BAD: &str = "/event/Bad__e";
        const OK: &str = "/event/Ok__e";
        let map = MappingStorage::new();
        let s = state(
            Unreadable {
                map: map.clone(),
                key: BAD,
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let reports = Arc::new(Mutex::new(0usize));
        let seen = reports.clone();
        s.set_error_sink(Arc::new(move |_| *seen.lock().unwrap() += 1));
        s.commit(BAD, &ev(40, "2026-11-28T07:00:40Z"));
        for id in 1..=5 {
            s.commit(OK, &ev(id, "2026-11-28T07:00:00Z"));
            assert!(s.flush().await.is_err());
        }
        assert_eq!(map.map().lock().unwrap()[OK].replay_id, 5);
        assert_eq!(
            *reports.lock().unwrap(),
            1,
            "one unreadable marker was reported to every stream once per write round"
        );
    }

    /// The stored 5000 is rejected (`400::The replayId {5000} you provided was invalid`: a
    /// fresh emulator without its events file, a refreshed sandbox) and the fallback is
    /// `NewEvents`: the restart stores -1. The events after it are numbered from 1, all at or
    /// below the expired id; once the restart is stored their markers must be stored as
    /// usual, or the marker stays -1 and a crash restarts "new events only", losing the event
    /// in progress.
    #[tokio::test]
    async fn events_after_a_gap_numbered_below_the_expired_id_store_their_markers() {
        const CH: &str = "/event/A__e";
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(5000, None));
        let s = state(
            map.clone(),
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        assert_eq!(s.start_id(CH).await.unwrap(), 5000);
        s.fell_back(CH, Some(5000), -1);
        let gap = s.take_gap(CH).unwrap();
        s.gap_handed_out(&gap);
        s.flush().await.unwrap();
        assert_eq!(map.map().lock().unwrap()[CH].replay_id, -1);
        for id in 1..=3 {
            s.commit(CH, &ev(id, "2026-11-28T07:00:00Z"));
        }
        s.flush().await.unwrap();
        assert_eq!(
            map.map().lock().unwrap()[CH].replay_id,
            3,
            "processed events after the gap stored nothing: a crash resumes from -1 (new events only)"
        );
    }

    /// The lease is lost while the writer reads a stored marker and the read fails: nothing is
    /// reported. The client is reopened under a new lease, and its first storage failure (the
    /// same read failing again) must be reported to its streams.
    #[tokio::test]
    async fn after_a_lost_lease_the_next_session_s_first_storage_failure_is_reported() {
        let (s, errors, mut entered, release) = lease_lost_during_a_failing_read().await;
        assert!(errors.lock().unwrap().is_empty());
        // Closed and reopened: a new session under a new lease.
        s.forget_all();
        let (lost_tx, _lost2) = tokio::sync::mpsc::unbounded_channel();
        s.hold_lease(2, lost_tx);
        s.commit(LEASED, &ev(41, "2026-11-28T07:00:41Z"));
        assert_eq!(entered.recv().await, Some(()));
        release.send(()).unwrap();
        until("the writer is idle", || !s.lock().writing).await;
        assert_eq!(
            errors.lock().unwrap().len(),
            1,
            "the new session's storage failure was not reported to its streams"
        );
    }

    /// Reads of `key` work, except the second one, which reports on `entered` and waits for
    /// `release` (the writer's never-backwards read of a filter's start).
    struct SecondGetWaits {
        map: MappingStorage,
        key: &'static str,
        gets: std::sync::atomic::AtomicUsize,
        entered: tokio::sync::mpsc::UnboundedSender<()>,
        release: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    }

    impl ReplayStorage for SecondGetWaits {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<ReplayMarker>>> {
            Box::pin(async move {
                if key == self.key && self.gets.fetch_add(1, Ordering::SeqCst) == 1 {
                    let _ = self.entered.send(());
                    let _ = self.release.lock().await.recv().await;
                }
                self.map.get(key).await
            })
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            marker: ReplayMarker,
        ) -> futures::future::BoxFuture<'a, Result<()>> {
            self.map.set(key, marker)
        }
    }

    /// A filter's first subscribe queues its start (the topic's 50) and is cancelled; the
    /// writer has taken it and is in the never-backwards read of the filter's stored marker
    /// (nothing written yet) when `subscribe_from(FILTER, 10)` drops it and queues its own
    /// start. The writer must not store the dropped 50 after the read: the subscribe would go
    /// out from 10 under a stored 50, and a crash among events 11..=50 resume after 50.
    #[tokio::test]
    async fn a_subscribe_from_during_the_cancelled_start_s_read_is_not_covered_by_it() {
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = state(
            SecondGetWaits {
                map: map.clone(),
                key: FILTER,
                gets: std::sync::atomic::AtomicUsize::new(0),
                entered: entered_tx,
                release: tokio::sync::Mutex::new(release_rx),
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let st = s.clone();
        let first = tokio::spawn(async move { st.start_id(FILTER).await });
        assert_eq!(entered.recv().await, Some(())); // the writer reads FILTER before set(50)
        first.abort();
        s.start_from(FILTER, 10);
        let st = s.clone();
        let retry = tokio::spawn(async move { st.start_id(FILTER).await });
        until("the subscribe_from's start is queued", || {
            s.lock().dirty.contains_key(FILTER)
        })
        .await;
        release.send(()).unwrap();
        assert_eq!(retry.await.unwrap().unwrap(), 10);
        let stored = map.map().lock().unwrap().get(FILTER).map(|m| m.replay_id);
        assert!(
            stored.is_none_or(|id| id <= 10),
            "subscribe_from(10) went out under a stored {stored:?}: it covers events 11..=50"
        );
    }

    /// Sandbox refresh (stored 5000 rejected, fallback `NewEvents`): the restart (-1) is being
    /// written when the first events after the gap (numbered from 1, below the expired id,
    /// dated after it) are processed. They are not from before the gap: their markers must be
    /// stored, or the storage says -1 although events 1 and 2 are processed and the next run
    /// starts from "new events only", losing everything published while it was down.
    #[tokio::test]
    async fn events_after_a_gap_acked_while_its_restart_is_written_store_their_markers() {
        const CH: &str = "/event/A__e";
        let (map, mut entered, release, s) = busy(CH, ReplayOption::AllEvents);
        // An event's marker, dated before the refresh.
        let expired = ReplayMarker::of(&ev(5000, "2026-11-20T07:00:00Z")).unwrap();
        map.map().lock().unwrap().insert(CH.into(), expired);
        assert_eq!(s.start_id(CH).await.unwrap(), 5000);
        s.fell_back(CH, Some(5000), -1);
        let gap = s.take_gap(CH).unwrap();
        s.gap_handed_out(&gap);
        assert_eq!(entered.recv().await, Some(-1)); // inside set(CH, -1)
        // The events the fallback brings after the notice, processed.
        s.commit(CH, &ev(1, "2026-11-28T07:00:01Z"));
        s.commit(CH, &ev(2, "2026-11-28T07:00:02Z"));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        s.flush().await.unwrap();
        assert_eq!(
            map.map().lock().unwrap()[CH].replay_id,
            2,
            "events processed after the gap stored nothing: the next run starts from -1 (new events only)"
        );
    }

    /// A client closed after a storage failure streak (close returned the error) is opened
    /// again, without a lease: the new session's streams must hear of the storage failing,
    /// although the old session's streak was never ended by a round that stored everything.
    #[tokio::test]
    async fn a_reopened_client_s_first_storage_failure_is_reported() {
        const CH: &str = "/event/A__e";
        let storage = Arc::new(Failing {
            map: MappingStorage::new(),
            failing: AtomicBool::new(true),
        });
        let s = Arc::new(ReplayState::new(
            Some(storage.clone()),
            ReplayOption::AllEvents,
            None,
            CommitPolicy::OnReceive,
        ));
        let first = Arc::new(Mutex::new(0usize));
        let seen = first.clone();
        s.set_error_sink(Arc::new(move |_| *seen.lock().unwrap() += 1));
        s.commit(CH, &ev(1, "2026-11-28T07:00:01Z"));
        assert!(s.flush().await.is_err()); // close() reports it
        assert_eq!(*first.lock().unwrap(), 1);
        s.forget_all();
        // Client::open: a new session with its own error sink.
        let second = Arc::new(Mutex::new(0usize));
        let seen = second.clone();
        s.set_error_sink(Arc::new(move |_| *seen.lock().unwrap() += 1));
        s.commit(CH, &ev(2, "2026-11-28T07:00:02Z"));
        assert!(s.flush().await.is_err());
        assert_eq!(
            *second.lock().unwrap(),
            1,
            "the reopened session's streams never heard that its markers are not stored"
        );
    }

    /// Under `NewEvents`, a filter's first subscribe starts from its topic's stored 50; its
    /// start cannot be stored (a transient write failure), so the subscribe fails. The retry
    /// must start from the topic's 50 too, not from -1, which skips events 51.. that the
    /// filter has never processed.
    #[tokio::test]
    async fn a_filter_subscribe_retried_after_its_start_failed_starts_from_its_topic_s_marker() {
        let storage = Arc::new(Failing {
            map: MappingStorage::new(),
            failing: AtomicBool::new(true),
        });
        storage
            .map
            .map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let s = Arc::new(ReplayState::new(
            Some(storage.clone()),
            ReplayOption::NewEvents,
            None,
            CommitPolicy::AfterProcessed,
        ));
        s.subscribing(1, FILTER);
        assert!(
            s.start_id(FILTER).await.is_err(),
            "the start was not stored"
        );
        s.forget(1, FILTER);
        storage.failing.store(false, Ordering::SeqCst);
        s.subscribing(2, FILTER);
        assert_eq!(
            s.start_id(FILTER).await.unwrap(),
            50,
            "the retried subscribe skips the events after its topic's marker"
        );
    }

    /// Another channel's stored marker cannot be read (the writer is inside that read) when a
    /// filter's first subscribe queues its start. The writer stops on the failed read before
    /// it takes the start; the subscribe must not fail for another channel's marker (README:
    /// "holds back that channel's writes only").
    #[tokio::test]
    async fn another_channel_s_unreadable_marker_does_not_fail_a_filter_s_subscribe() {
        const BAD: &str = "/event/Bad__e";
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = state(
            FailingGate {
                map: map.clone(),
                key: BAD,
                entered: entered_tx,
                release: tokio::sync::Mutex::new(release_rx),
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        s.commit(BAD, &ev(40, "2026-11-28T07:00:40Z"));
        assert_eq!(entered.recv().await, Some(())); // the writer is inside get(BAD)
        let st = s.clone();
        let subscribing = tokio::spawn(async move { st.start_id(FILTER).await });
        until("the filter's start is queued", || {
            s.lock().dirty.contains_key(FILTER)
        })
        .await;
        // The read of BAD fails; so does its read in the writer's next round.
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        let result = subscribing.await.unwrap();
        assert!(
            result.is_ok(),
            "the filter's subscribe failed for another channel's unreadable marker: {result:?}"
        );
    }

    /// The lease is lost while a gap's restart (-1, rejected 5000) is queued. The client is
    /// reopened under a new lease; the storage holds -1 (the other holder restarted there and
    /// released). This session's events (ids from 1, after a sandbox refresh) must store their
    /// markers: neither the lost session's gap rule nor its cached stored 5000 may drop them.
    #[test]
    fn a_gap_rule_left_by_a_lost_lease_does_not_drop_the_next_session_s_markers() {
        const CH: &str = "/event/A__e";
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(5000, None));
        // A storage that fences writes (as a lease needs); no read waits.
        let (entered_tx, _entered) = tokio::sync::mpsc::unbounded_channel();
        let (_release, release_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = state(
            FailingGate {
                map: map.clone(),
                key: "/never/read",
                entered: entered_tx,
                release: tokio::sync::Mutex::new(release_rx),
            },
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let (lost_tx, _lost) = tokio::sync::mpsc::unbounded_channel();
        s.hold_lease(1, lost_tx);
        // No runtime: the restart stays queued.
        s.lock()
            .stored
            .insert(CH.into(), ReplayMarker::new(5000, None));
        s.gap_handed_out(&ReplayGap {
            channel: CH.into(),
            rejected_id: Some(5000),
            fallback_id: -1,
        });
        assert!(s.lose_lease(1, None));
        s.forget_all();
        // The new holder stored its restart and released the lease.
        map.map()
            .lock()
            .unwrap()
            .insert(CH.into(), ReplayMarker::new(-1, None));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (lost_tx, _lost2) = tokio::sync::mpsc::unbounded_channel();
        s.hold_lease(2, lost_tx);
        rt.block_on(async {
            // The new session starts from what is stored.
            assert_eq!(s.start_id(CH).await.unwrap(), -1);
            s.commit(CH, &ev(1, "2026-11-28T07:00:01Z"));
            s.commit(CH, &ev(2, "2026-11-28T07:00:02Z"));
            s.flush().await.unwrap();
        });
        assert_eq!(
            map.map().lock().unwrap()[CH].replay_id,
            2,
            "the new session's processed events stored nothing (the lost session's gap rule)"
        );
    }

    /// A commit spawns the writer on a runtime that is dropped before the writer task is ever
    /// polled (a sync wrapper with a runtime per call; the client reopened on another
    /// runtime). The writer must be marked idle, or no later commit starts one and `flush`
    /// (close) waits for ever.
    #[test]
    fn a_writer_dropped_before_it_first_ran_does_not_hang_flush() {
        const CH: &str = "/event/A__e";
        let map = MappingStorage::new();
        let s = state(
            map.clone(),
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let first = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Spawned on `first`, which never runs it.
        first.block_on(async { s.commit(CH, &ev(1, "2026-11-28T07:00:01Z")) });
        drop(first);
        // Paused: the timeout below fires as soon as flush waits with nothing else to run.
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let flushed = second.block_on(async {
            s.commit(CH, &ev(2, "2026-11-28T07:00:02Z"));
            tokio::time::timeout(std::time::Duration::from_secs(5), s.flush()).await
        });
        assert!(
            flushed.is_ok(),
            "flush waits for ever: the writer dropped unpolled left `writing` set"
        );
        assert_eq!(map.map().lock().unwrap()[CH].replay_id, 2);
    }

    /// A commit during a runtime's shutdown (a `Subscription` or an event dropped with the
    /// runtime's tasks, whose `forget`/ack commits): Tokio drops a future spawned on a closed
    /// runtime inside `spawn`, while `spawn_writer`'s caller holds the tracker's lock; nothing
    /// may lock it again there (a deadlock).
    #[test]
    fn a_commit_while_the_runtime_shuts_down_does_not_deadlock() {
        const CH: &str = "/event/A__e";
        struct CommitOnDrop(Arc<ReplayState>);
        impl Drop for CommitOnDrop {
            fn drop(&mut self) {
                self.0.commit(CH, &ev(1, "2026-11-28T07:00:01Z"));
            }
        }
        let s = state(
            MappingStorage::new(),
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let st = s.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let guard = CommitOnDrop(st);
            // A task that never ends, holding what commits when it is dropped.
            rt.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            rt.block_on(tokio::task::yield_now());
            drop(rt); // drops the task, in the runtime's context, with spawning closed
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok(),
            "the runtime's shutdown deadlocked in the writer's spawn"
        );
    }

    /// The same without a shutting-down runtime's tasks: a commit under a `Handle` of a
    /// runtime that is gone (a sync wrapper keeping a handle; `Handle::try_current` succeeds).
    #[test]
    fn a_commit_under_a_handle_of_a_dropped_runtime_does_not_deadlock() {
        const CH: &str = "/event/A__e";
        let s = state(
            MappingStorage::new(),
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        drop(rt);
        let (tx, rx) = std::sync::mpsc::channel();
        let st = s.clone();
        std::thread::spawn(move || {
            let _entered = handle.enter();
            st.commit(CH, &ev(1, "2026-11-28T07:00:01Z"));
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok(),
            "commit deadlocked in the writer's spawn"
        );
    }

    /// Two subscribes of one PushTopic filter at once (two `subscribe` calls of the same
    /// name): one queues the filter's start (the topic's 50) and waits; the other finds it
    /// queued (`starts`) and waits for it too. The storage fails every round: both must fail.
    /// One returning Ok would go out from 50 with no marker of its own stored, so a crash
    /// before its first processed event would resume it from its topic's marker, which the
    /// topic's own subscription moves past events the filter never processed.
    #[tokio::test]
    async fn a_concurrent_subscribe_of_a_filter_does_not_succeed_when_its_start_failed() {
        let storage = Arc::new(Failing {
            map: MappingStorage::new(),
            failing: AtomicBool::new(true),
        });
        storage
            .map
            .map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let s = Arc::new(ReplayState::new(
            Some(storage.clone()),
            ReplayOption::NewEvents,
            None,
            CommitPolicy::AfterProcessed,
        ));
        s.subscribing(1, FILTER);
        s.subscribing(2, FILTER);
        let (first, second) = tokio::join!(s.start_id(FILTER), s.start_id(FILTER));
        // The storage failed every write: neither subscribe's start is stored.
        let stored = storage.map.map().lock().unwrap().get(FILTER).copied();
        assert!(stored.is_none());
        assert!(
            first.is_err() && second.is_err(),
            "a subscribe went out with no start of its own stored: first {first:?}, second {second:?}"
        );
    }

    /// A filter's first subscribe polled outside a Tokio runtime (no writer can be spawned):
    /// its start cannot be stored, so it must fail, not wait for an idle notice that no writer
    /// will ever send.
    #[test]
    fn a_filter_subscribe_outside_a_runtime_fails_instead_of_hanging() {
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let s = state(map, ReplayOption::NewEvents, CommitPolicy::AfterProcessed);
        s.subscribing(1, FILTER);
        let mut subscribe = std::pin::pin!(s.start_id(FILTER));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut result = None;
        // Nothing outside the future can make progress: every poll sees the same state.
        for _ in 0..100 {
            if let std::task::Poll::Ready(r) = subscribe.as_mut().poll(&mut cx) {
                result = Some(r);
                break;
            }
        }
        assert!(
            result.is_some(),
            "the subscribe waits for ever for a writer that was never spawned"
        );
    }

    /// Polls `fut` with a no-op waker, at most 100 times: `Some` once it is ready. Nothing
    /// outside the future can make progress here, so every poll sees the same state.
    fn poll_ready<F: std::future::Future>(fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..100 {
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                return Some(r);
            }
        }
        None
    }

    /// `flush` (what `close` runs) under a `Handle` of a runtime that is gone (the sync
    /// wrapper of `a_commit_under_a_handle_of_a_dropped_runtime_does_not_deadlock`, or a
    /// `spawn_blocking` thread flushing while its runtime shuts down): `Handle::spawn` hands
    /// back a task that is already cancelled: `flush` must not take it for a running writer
    /// and wait for an idle notice no writer will ever send.
    #[test]
    fn flush_under_a_handle_of_a_dropped_runtime_does_not_hang() {
        const CH: &str = "/event/A__e";
        let s = state(
            MappingStorage::new(),
            ReplayOption::AllEvents,
            CommitPolicy::OnReceive,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        drop(rt);
        let _entered = handle.enter();
        s.commit(CH, &ev(1, "2026-11-28T07:00:01Z"));
        let result = poll_ready(s.flush());
        assert!(
            result.as_ref().is_some_and(|r| r.is_err()),
            "flush waits for ever for a writer whose task was refused: {result:?}"
        );
    }

    /// The same for a filter's first subscribe (`wait_start_stored`'s extra writer round).
    #[test]
    fn filter_subscribe_under_a_handle_of_a_dropped_runtime_does_not_hang() {
        let map = MappingStorage::new();
        map.map()
            .lock()
            .unwrap()
            .insert("/topic/T".into(), ReplayMarker::new(50, None));
        let s = state(map, ReplayOption::NewEvents, CommitPolicy::AfterProcessed);
        s.subscribing(1, FILTER);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        drop(rt);
        let _entered = handle.enter();
        let result = poll_ready(s.start_id(FILTER));
        assert!(
            result.is_some(),
            "the subscribe waits for ever for a writer whose task was refused"
        );
    }
}
