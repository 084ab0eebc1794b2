//! The client's replay bookkeeping, shared by the replay layer (which ids go on the wire), the
//! connection task (what was delivered) and the streams (what was processed).

use super::{CommitPolicy, ReplayMarker, ReplayOption, ReplayStorage};
use crate::bayeux::Data;
use crate::connection::base_channel;
use crate::error::ReplayGap;
use crate::error::{Error, ErrorKind, Result};
use std::collections::{HashMap, VecDeque};
use std::mem;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Receives errors that concern every stream (a failing storage).
pub(crate) type ErrorSink = Arc<dyn Fn(Error) + Send + Sync>;

pub(crate) struct ReplayState {
    storage: Option<Arc<dyn ReplayStorage>>,
    start: ReplayOption,
    fallback: Option<ReplayOption>,
    policy: CommitPolicy,
    inner: Mutex<Inner>,
    idle: Notify,
    /// Cheap check on the hot path: is any gap waiting to be announced?
    has_gaps: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// `subscribe_from` ids, and fallbacks in effect, until the channel delivers an event.
    overrides: HashMap<String, i64>,
    /// The last event delivered per channel: where a resubscribe continues from.
    delivered: HashMap<String, Data>,
    /// Processed events whose markers wait to be stored, newest per channel.
    dirty: HashMap<String, Data>,
    /// The last marker stored (or read) per channel.
    stored: HashMap<String, ReplayMarker>,
    writing: bool,
    failing: bool,
    /// The last storage failure, for `flush` to report.
    last_error: Option<Error>,
    sink: Option<ErrorSink>,
    /// Fallbacks not yet announced on their stream.
    gaps: HashMap<String, ReplayGap>,
    /// Events handed to the streams and not yet processed, per channel, in delivery order.
    outstanding: HashMap<String, Outstanding>,
}

/// The events of one channel between delivery and processing. Tickets are consecutive from
/// the front, so finding one is an index computation.
#[derive(Default)]
struct Outstanding {
    next: u64,
    entries: VecDeque<(Data, bool)>,
}

impl Outstanding {
    fn front_ticket(&self) -> u64 {
        self.next - self.entries.len() as u64
    }
}

/// Which outstanding event an [`Event`](crate::Event) is, so that it can be marked processed.
#[derive(Clone)]
pub(crate) struct Ticket {
    state: Arc<ReplayState>,
    number: u64,
}

impl Ticket {
    /// The event is processed.
    pub(crate) fn done(&self, channel: &str) {
        self.state.done(channel, self.number);
    }
}

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
            has_gaps: AtomicBool::new(false),
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

    /// Tickets for events about to be delivered, in order (`channel` runs share one lookup).
    pub(crate) fn issue<'a>(
        self: &Arc<Self>,
        events: impl Iterator<Item = (&'a str, &'a Data)>,
    ) -> Vec<Ticket> {
        let mut inner = self.lock();
        let mut tickets = Vec::new();
        let mut current: Option<(&str, &mut Outstanding)> = None;
        for (channel, data) in events {
            let channel = base_channel(channel);
            let out = match current.take() {
                Some((c, out)) if c == channel => out,
                _ => inner.outstanding.entry(channel.to_owned()).or_default(),
            };
            tickets.push(Ticket {
                state: self.clone(),
                number: out.next,
            });
            out.next += 1;
            out.entries.push_back((data.clone(), false));
            current = Some((channel, out));
        }
        tickets
    }

    /// Event `number` of `channel` is processed: store the marker of the newest event before
    /// which everything is processed (at-least-once, whatever the order of processing).
    fn done(self: &Arc<Self>, channel: &str, number: u64) {
        let channel = base_channel(channel);
        let mut inner = self.lock();
        let Some(out) = inner.outstanding.get_mut(channel) else {
            return; // the subscription is gone; its successor starts from the storage
        };
        let Some(index) = number.checked_sub(out.front_ticket()) else {
            return; // already stored
        };
        let Some(entry) = out.entries.get_mut(index as usize) else {
            return;
        };
        entry.1 = true;
        let mut newest = None;
        while out.entries.front().is_some_and(|(_, done)| *done) {
            newest = out.entries.pop_front().map(|(data, _)| data);
        }
        if let Some(data) = newest {
            self.store_locked(&mut inner, channel, data);
        }
    }

    pub(crate) fn fallback(&self) -> Option<ReplayOption> {
        self.fallback
    }

    pub(crate) fn set_error_sink(&self, sink: ErrorSink) {
        self.lock().sink = Some(sink);
    }

    /// The next subscribe of `channel` starts after `replay_id`.
    pub(crate) fn start_from(&self, channel: &str, replay_id: i64) {
        let channel = base_channel(channel);
        let mut inner = self.lock();
        inner.delivered.remove(channel);
        inner.overrides.insert(channel.to_owned(), replay_id);
    }

    /// A subscription of `channel` is gone: what it delivered but nobody took was not
    /// processed, so a new subscription must not continue after it.
    pub(crate) fn forget(&self, channel: &str) {
        let channel = base_channel(channel);
        let mut inner = self.lock();
        inner.delivered.remove(channel);
        inner.overrides.remove(channel);
        inner.gaps.remove(channel);
        inner.outstanding.remove(channel);
    }

    /// The client closed: nothing of this session says where the next one starts.
    pub(crate) fn forget_all(&self) {
        let mut inner = self.lock();
        inner.delivered.clear();
        inner.overrides.clear();
        inner.gaps.clear();
        inner.outstanding.clear();
        self.has_gaps.store(false, Ordering::Release);
    }

    /// The subscription fell back: until an event arrives, resubscribes use the fallback too,
    /// and the stream announces the gap before anything the fallback brings.
    pub(crate) fn fell_back(&self, channel: &str, rejected_id: Option<i64>, fallback_id: i64) {
        self.start_from(channel, fallback_id);
        let channel = base_channel(channel).to_owned();
        let gap = ReplayGap {
            channel: channel.clone(),
            rejected_id,
            fallback_id,
        };
        self.lock().gaps.insert(channel, gap);
        self.has_gaps.store(true, Ordering::Release);
    }

    /// The gap to announce before the next event of `channel`, once.
    pub(crate) fn take_gap(&self, channel: &str) -> Option<ReplayGap> {
        if !self.has_gaps.load(Ordering::Acquire) {
            return None;
        }
        let mut inner = self.lock();
        let gap = inner.gaps.remove(base_channel(channel));
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
            let channel = base_channel(channel);
            match inner.delivered.get_mut(channel) {
                Some(slot) => *slot = data.clone(),
                None => {
                    inner.overrides.remove(channel);
                    inner.delivered.insert(channel.to_owned(), data.clone());
                }
            }
        }
    }

    /// The replay id of the last event delivered on `channel` (stall notices, health).
    pub(crate) fn last_delivered_id(&self, channel: &str) -> Option<i64> {
        let inner = self.lock();
        let data = inner.delivered.get(base_channel(channel))?;
        ReplayMarker::of(data).map(|m| m.replay_id)
    }

    /// The replay id for a subscribe of `channel` now: after the last delivered event, else an
    /// explicit start or fallback, else the stored marker, else the configured option.
    pub(crate) async fn start_id(&self, channel: &str) -> Result<i64> {
        let (delivered, forced) = {
            let inner = self.lock();
            (
                inner.delivered.get(channel).cloned(),
                inner.overrides.get(channel).copied(),
            )
        };
        if let Some(data) = delivered {
            if let Some(marker) = ReplayMarker::of(&data) {
                return Ok(marker.replay_id);
            }
            tracing::warn!(%channel, "the last event has no replay id; resubscribing from the start option");
        }
        if let Some(id) = forced {
            return Ok(id);
        }
        if let Some(storage) = &self.storage {
            let stored = storage.get(channel).await.map_err(|e| {
                Error::new(
                    ErrorKind::Replay,
                    format!("cannot read the replay marker of {channel}: {e}"),
                )
                .with_source(e)
            })?;
            if let Some(marker) = stored {
                self.lock()
                    .stored
                    .entry(channel.to_owned())
                    .or_insert(marker);
                return Ok(marker.replay_id);
            }
        }
        Ok(self.start.id())
    }

    /// Store this event's marker in the background (`OnReceive`: it was handed out).
    pub(crate) fn commit(self: &Arc<Self>, channel: &str, data: &Data) {
        if self.storage.is_none() {
            return;
        }
        let channel = base_channel(channel);
        let mut inner = self.lock();
        self.store_locked(&mut inner, channel, data.clone());
    }

    fn store_locked(self: &Arc<Self>, inner: &mut Inner, channel: &str, data: Data) {
        match inner.dirty.get_mut(channel) {
            Some(slot) => *slot = data,
            None => {
                inner.dirty.insert(channel.to_owned(), data);
            }
        }
        if !inner.writing {
            self.spawn_writer(inner);
        }
    }

    fn spawn_writer(self: &Arc<Self>, inner: &mut Inner) {
        // Outside a runtime the markers wait for the next commit or `flush`.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            inner.writing = true;
            handle.spawn(self.clone().write_loop());
        }
    }

    async fn write_loop(self: Arc<Self>) {
        // However this ends (even a panicking storage), the writer is marked idle.
        let _idle = WriterIdle(&self);
        let Some(storage) = self.storage.clone() else {
            return;
        };
        loop {
            let batch = {
                let mut inner = self.lock();
                if inner.dirty.is_empty() {
                    return;
                }
                mem::take(&mut inner.dirty)
            };
            let mut batch = batch.into_iter();
            while let Some((channel, data)) = batch.next() {
                let Some(marker) = ReplayMarker::of(&data) else {
                    tracing::warn!(%channel, "event without a replay id: delivered, but no marker can be stored");
                    continue;
                };
                let mut previous = self.lock().stored.get(&channel).copied();
                if previous.is_none() {
                    // Not read yet (a subscribe_from skips the storage): never go backwards
                    // past what the storage holds either.
                    previous = storage.get(&channel).await.ok().flatten();
                }
                if previous.is_some_and(|p| !marker.is_after(&p)) {
                    if let Some(p) = previous {
                        self.lock().stored.insert(channel, p);
                    }
                    continue; // never backwards
                }
                match storage.set(&channel, marker).await {
                    Ok(()) => {
                        let mut inner = self.lock();
                        inner.stored.insert(channel, marker);
                        inner.failing = false;
                        inner.last_error = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %channel, "storing the replay marker failed");
                        let sink = {
                            let mut inner = self.lock();
                            // Kept for the next attempt, with the rest of the batch, unless
                            // newer commits arrived meanwhile.
                            inner.dirty.entry(channel).or_insert(data);
                            for (c, d) in batch {
                                inner.dirty.entry(c).or_insert(d);
                            }
                            inner.last_error = Some(e.clone());
                            let first = !mem::replace(&mut inner.failing, true);
                            first.then(|| inner.sink.clone()).flatten()
                        };
                        if let Some(sink) = sink {
                            sink(
                                Error::new(
                                    ErrorKind::Replay,
                                    format!("storing replay markers failed: {e}"),
                                )
                                .with_source(e),
                            );
                        }
                        // Do not spin on a broken storage: the next commit or flush retries.
                        return;
                    }
                }
            }
        }
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
                if inner.dirty.is_empty() && !inner.writing {
                    return Ok(());
                }
                if !inner.writing {
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

/// Marks the writer idle and wakes `flush` when the writer ends, normally or not.
struct WriterIdle<'a>(&'a ReplayState);

impl Drop for WriterIdle<'_> {
    fn drop(&mut self) {
        self.0.lock().writing = false;
        self.0.idle.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::MappingStorage;

    fn state(
        storage: MappingStorage,
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
        let tickets = s.issue(data.iter().map(|d| ("/a", d)));
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
        s.forget("/a");
        tickets[4].done("/a");
        s.flush().await.unwrap();
        assert_eq!(stored(), Some(5));
    }
}
