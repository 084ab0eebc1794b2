//! The emulator's shared state: configuration, sessions, channels, tokens, cookies, the virtual
//! clock and the counters. One `std::sync::Mutex` guards the mutable part; it is never held
//! across an `.await`, so every public method can be called from any thread or runtime.

use super::events;
use super::faults::Fault;
use super::filter::Filter;
use super::oauth::TokenRequest;
use super::retention::ChannelLog;
use super::stats::Stats;
use crate::bayeux::Message;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// How many received/published messages and token requests are kept (oldest dropped first).
pub(crate) const LOG_CAP: usize = 100_000;
/// Virtual time never moves further than this, so date arithmetic cannot overflow.
const MAX_CLOCK_OFFSET: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Expired sessions are swept at most this often (they are also checked on every access).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Everything the builder configures.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) api_version: String,
    pub(crate) advice_timeout: Duration,
    pub(crate) reconnect_window: Duration,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) retention_count: usize,
    pub(crate) retention_age: Duration,
    pub(crate) replay_id_start: i64,
    pub(crate) replay_id_step: i64,
    pub(crate) backlog_in_subscribe_reply: bool,
    pub(crate) connect_reply_first: bool,
    pub(crate) max_batch: Option<usize>,
    pub(crate) require_cookies: bool,
    pub(crate) port: u16,
    /// Whether a refresh token grant spends the refresh token and returns a new one.
    pub(crate) rotate_refresh_tokens: bool,
    /// The PEM public key that JWT bearer assertions must be signed for.
    #[cfg(feature = "jwt")]
    pub(crate) jwt_public_key: Option<String>,
    /// Events delivered per 24 h (virtual clock) before the daily limit error; `None`: no limit.
    pub(crate) daily_event_limit: Option<u64>,
    /// Live sessions before the concurrent-client error; `None`: no limit.
    pub(crate) max_clients: Option<usize>,
    /// Whether subscribing to a channel nobody created is refused.
    pub(crate) strict_channels: bool,
    /// Where retained events are kept across restarts.
    pub(crate) retention_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_version: crate::DEFAULT_API_VERSION.into(),
            advice_timeout: Duration::from_secs(110),
            reconnect_window: Duration::from_secs(40),
            client_id: "3MVG9sfstreamEmulatorConnectedAppConsumerKey".into(),
            client_secret: "emulator-consumer-secret".into(),
            username: "emulator@example.com".into(),
            password: "emulator-password".into(),
            retention_count: 100_000,
            retention_age: Duration::from_secs(24 * 3600),
            replay_id_start: 1,
            replay_id_step: 1,
            backlog_in_subscribe_reply: false,
            connect_reply_first: false,
            max_batch: None,
            require_cookies: true,
            port: 0,
            rotate_refresh_tokens: false,
            #[cfg(feature = "jwt")]
            jwt_public_key: None,
            daily_event_limit: None,
            max_clients: None,
            strict_channels: false,
            retention_file: None,
        }
    }
}

/// The cookies issued with a handshake, keyed by their `BAYEUX_BROWSER` value.
pub(crate) struct CookieSet {
    pub(crate) sfdc_stream: String,
    pub(crate) sfproxy_id: String,
}

/// Why a held connect was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Events were queued for the session.
    Events,
    /// A newer connect arrived for the same session.
    Superseded,
    /// The access tokens were revoked.
    Revoked,
    /// [`Emulator::disconnect_sessions`](super::Emulator::disconnect_sessions).
    ServerDisconnect,
    /// The session was dropped (forgotten or expired).
    Gone,
    /// The client sent `/meta/disconnect`.
    ClientDisconnect,
}

struct HeldSlot {
    seq: u64,
    wake: oneshot::Sender<Wake>,
}

/// An event waiting in a session's queue, or a run of generated ones; the channel lets
/// unsubscribe drop it.
pub(crate) struct Queued {
    pub(crate) channel: Arc<str>,
    pub(crate) item: Item,
}

pub(crate) enum Item {
    Event(Bytes),
    /// Events built only when a connect takes them
    /// ([`Emulator::push_generated`](super::Emulator::push_generated)).
    Generated(Generated),
}

/// The rest of a generated run: `left` events from `next_id` on, `step` apart.
pub(crate) struct Generated {
    pub(crate) make: Arc<dyn Fn(i64) -> Bytes + Send + Sync>,
    pub(crate) next_id: i64,
    pub(crate) step: i64,
    pub(crate) left: usize,
}

/// One CometD session (a handshaken client id).
pub(crate) struct Session {
    /// Base channel (without PushTopic filter) to the subscriptions as the client gave them:
    /// several filters of one topic are separate subscriptions, each delivered on its own name.
    pub(crate) subscriptions: HashMap<String, Vec<String>>,
    pub(crate) queue: VecDeque<Queued>,
    held: Option<HeldSlot>,
    /// Whether a connect reply with advice went out (only the first one carries it).
    pub(crate) advised: bool,
    /// When the last response went out (or the last request came in); the reconnect window runs
    /// from here while no connect is held.
    pub(crate) last_active: Instant,
}

impl Session {
    fn new(now: Instant) -> Self {
        Session {
            subscriptions: HashMap::new(),
            queue: VecDeque::new(),
            held: None,
            advised: false,
            last_active: now,
        }
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.held.is_none() && now.saturating_duration_since(self.last_active) > window
    }

    /// Wake the held connect, if any. The window restarts now: the connect is about to answer.
    pub(crate) fn wake(&mut self, why: Wake, now: Instant) {
        if let Some(slot) = self.held.take() {
            self.last_active = now;
            // The receiver is gone only if the connect was dropped, which releases it anyway.
            let _ = slot.wake.send(why);
        }
    }

    /// Take up to `max` queued events, building generated ones now.
    pub(crate) fn drain(&mut self, max: Option<usize>) -> Vec<Bytes> {
        let mut room = max.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        while room > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            match &mut front.item {
                Item::Event(event) => {
                    out.push(std::mem::take(event));
                    self.queue.pop_front();
                    room -= 1;
                }
                Item::Generated(run) => {
                    let n = run.left.min(room);
                    for _ in 0..n {
                        out.push((run.make)(run.next_id));
                        run.next_id = run.next_id.saturating_add(run.step);
                    }
                    run.left -= n;
                    room -= n;
                    if run.left == 0 {
                        self.queue.pop_front();
                    }
                }
            }
        }
        out
    }
}

/// The mutable state behind the lock.
pub(crate) struct State {
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) channels: HashMap<String, ChannelLog>,
    pub(crate) access_tokens: HashSet<String>,
    pub(crate) refresh_tokens: HashSet<String>,
    pub(crate) cookies: HashMap<String, CookieSet>,
    pub(crate) faults: VecDeque<Fault>,
    /// Generic streaming channels (StreamingChannel records): name to record id.
    pub(crate) streaming_channels: HashMap<String, String>,
    /// Platform event API name to its required fields (REST publishing checks them).
    pub(crate) required_fields: HashMap<String, Vec<String>>,
    /// Events delivered in the current 24 h window, and when it started (virtual clock).
    delivered_today: u64,
    day_started: Instant,
    /// PushTopic channel to the fields its query selects (filters may use only those).
    pub(crate) push_topics: HashMap<String, Vec<String>>,
    /// Channels whose deliveries are held back (the event-bus backlog fault).
    pub(crate) stalled: HashSet<String>,
    next_sweep: Instant,
    next_held: u64,
}

/// The error of an exhausted daily delivery allocation (Salesforce's wording, tests/data
/// `daily_limit_exceeded`; the streaming guide's limits page).
pub(crate) const DAILY_LIMIT: &str = "403::Organization total events daily limit exceeded";
/// The error of too many concurrent CometD clients (streaming guide, limits; aiocometd#1).
pub(crate) const CLIENT_LIMIT: &str = "403::Organization concurrent user limit exceeded";

impl State {
    /// How many more events may be delivered today (`None`: unlimited). A new 24 h window
    /// starts a day after the last one started.
    pub(crate) fn allowance(&mut self, config: &Config, now: Instant) -> Option<usize> {
        let limit = config.daily_event_limit?;
        if now.saturating_duration_since(self.day_started) >= Duration::from_secs(24 * 3600) {
            self.day_started = now;
            self.delivered_today = 0;
        }
        Some(usize::try_from(limit.saturating_sub(self.delivered_today)).unwrap_or(usize::MAX))
    }

    /// Count deliveries against the daily allocation.
    pub(crate) fn count_delivered(&mut self, n: usize) {
        self.delivered_today = self.delivered_today.saturating_add(n as u64);
    }

    /// Start a new 24 h window now.
    pub(crate) fn reset_daily_limit(&mut self, now: Instant) {
        self.day_started = now;
        self.delivered_today = 0;
    }

    /// The StreamingChannel id of a generic channel, creating the record if needed.
    pub(crate) fn streaming_channel(&mut self, name: &str) -> String {
        self.streaming_channels
            .entry(name.to_owned())
            .or_insert_with(|| super::ids::record_id("0M6"))
            .clone()
    }

    /// The channel's log, created on first use.
    pub(crate) fn channel(&mut self, config: &Config, base: &str) -> &mut ChannelLog {
        if !self.channels.contains_key(base) {
            let log = ChannelLog::new(base, config.replay_id_start, config.replay_id_step);
            self.channels.insert(base.to_owned(), log);
        }
        // Inserted just above if it was missing.
        self.channels
            .get_mut(base)
            .unwrap_or_else(|| unreachable!("channel inserted above"))
    }
}

#[derive(Default)]
struct Log {
    received: VecDeque<Message>,
    published: VecDeque<Message>,
    token_requests: VecDeque<TokenRequest>,
}

fn push_capped<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() >= LOG_CAP {
        q.pop_front();
    }
    q.push_back(item);
}

/// The channel without a PushTopic filter: `/topic/Foo?Status__c=Open` -> `/topic/Foo`.
pub(crate) fn base_channel(channel: &str) -> &str {
    channel.split_once('?').map_or(channel, |(base, _)| base)
}

/// State shared by the handle, the accept loop and every request.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base_url: String,
    /// `/cometd/<api_version>`.
    pub(crate) cometd_path: String,
    /// The advice of every successful connect reply.
    pub(crate) connect_advice: Value,
    state: Mutex<State>,
    stats: watch::Sender<Stats>,
    /// The virtual clock's offset from real time.
    clock: watch::Sender<Duration>,
    log: Mutex<Log>,
    /// The retention file, when events are kept on disk.
    disk: std::sync::OnceLock<super::disk::RetentionFile>,
}

impl Shared {
    pub(crate) fn new(config: Config, base_url: String) -> Self {
        let advice_ms = u64::try_from(config.advice_timeout.as_millis()).unwrap_or(u64::MAX);
        Shared {
            cometd_path: format!("/cometd/{}", config.api_version),
            connect_advice: json!({"interval": 0, "timeout": advice_ms, "reconnect": "retry"}),
            config,
            base_url,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                channels: HashMap::new(),
                access_tokens: HashSet::new(),
                refresh_tokens: HashSet::new(),
                cookies: HashMap::new(),
                faults: VecDeque::new(),
                streaming_channels: HashMap::new(),
                required_fields: HashMap::new(),
                delivered_today: 0,
                day_started: Instant::now(),
                stalled: HashSet::new(),
                push_topics: HashMap::new(),
                next_sweep: Instant::now(),
                next_held: 0,
            }),
            stats: watch::Sender::new(Stats::default()),
            clock: watch::Sender::new(Duration::ZERO),
            log: Mutex::new(Log::default()),
            disk: std::sync::OnceLock::new(),
        }
    }

    // ---- clock -------------------------------------------------------------------------------

    /// Virtual monotonic time.
    pub(crate) fn now(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(*self.clock.borrow()).unwrap_or(now)
    }

    /// Virtual wall-clock time (for `createdDate` and `commitTimestamp`).
    pub(crate) fn wall(&self) -> SystemTime {
        let now = SystemTime::now();
        now.checked_add(*self.clock.borrow()).unwrap_or(now)
    }

    /// A receiver that sees every clock change, for held connects whose deadline is virtual.
    pub(crate) fn clock_changes(&self) -> watch::Receiver<Duration> {
        self.clock.subscribe()
    }

    pub(crate) fn advance_clock(&self, by: Duration) {
        self.clock
            .send_modify(|offset| *offset = offset.saturating_add(by).min(MAX_CLOCK_OFFSET));
        let mut st = self.state();
        let now = self.now();
        self.sweep(&mut st, now);
    }

    // ---- locking and counters ----------------------------------------------------------------

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lock the state, first dropping sessions whose reconnect window has passed.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.state();
        let now = self.now();
        if now >= st.next_sweep {
            st.next_sweep = now + SWEEP_EVERY;
            self.sweep(&mut st, now);
        }
        st
    }

    /// Update the counters; wakes every [`Emulator::wait_until`](super::Emulator::wait_until).
    pub(crate) fn bump(&self, f: impl FnOnce(&mut Stats)) {
        self.stats.send_modify(f);
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    pub(crate) fn stats_changes(&self) -> watch::Receiver<Stats> {
        self.stats.subscribe()
    }

    // ---- sessions ----------------------------------------------------------------------------

    pub(crate) fn create_session(&self, st: &mut State, client_id: String) {
        st.sessions.insert(client_id, Session::new(self.now()));
        self.bump(|s| s.sessions += 1);
    }

    /// The live session, or `None` if unknown or expired (an expired one is dropped here).
    pub(crate) fn session<'a>(
        &self,
        st: &'a mut State,
        client_id: &str,
    ) -> Option<&'a mut Session> {
        let now = self.now();
        let expired = st
            .sessions
            .get(client_id)
            .is_some_and(|s| s.expired(now, self.config.reconnect_window));
        if expired {
            self.remove_session(st, client_id, Wake::Gone);
            return None;
        }
        let session = st.sessions.get_mut(client_id)?;
        session.last_active = now;
        Some(session)
    }

    /// Drop a session, its subscriptions and its queue; a held connect is woken with `why`.
    pub(crate) fn remove_session(&self, st: &mut State, client_id: &str, why: Wake) {
        let Some(mut session) = st.sessions.remove(client_id) else {
            return;
        };
        for base in session.subscriptions.keys() {
            if let Some(ch) = st.channels.get_mut(base) {
                ch.subscribers.remove(client_id);
            }
        }
        session.wake(why, self.now());
        self.bump(|s| {
            s.sessions = s.sessions.saturating_sub(1);
            for base in session.subscriptions.keys() {
                s.unsubscribed(base);
            }
        });
    }

    /// Invalidate every access token and drop every session under one lock: held connects are
    /// answered as revoked, and no request can slip in between with an old session.
    pub(crate) fn revoke_sessions(&self) {
        let mut st = self.lock();
        st.access_tokens.clear();
        let ids: Vec<String> = st.sessions.keys().cloned().collect();
        for id in ids {
            self.remove_session(&mut st, &id, Wake::Revoked);
        }
    }

    /// Drop every session, waking held connects with `why`.
    pub(crate) fn remove_all_sessions(&self, why: Wake) {
        let mut st = self.lock();
        let ids: Vec<String> = st.sessions.keys().cloned().collect();
        for id in ids {
            self.remove_session(&mut st, &id, why);
        }
    }

    fn sweep(&self, st: &mut State, now: Instant) {
        let window = self.config.reconnect_window;
        let expired: Vec<String> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(now, window))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_session(st, &id, Wake::Gone);
        }
    }

    /// Register a held connect for the session; returns its sequence number and wake-up.
    pub(crate) fn hold(
        &self,
        st: &mut State,
        client_id: &str,
    ) -> Option<(u64, oneshot::Receiver<Wake>)> {
        let seq = st.next_held;
        let session = st.sessions.get_mut(client_id)?;
        let (tx, rx) = oneshot::channel();
        session.held = Some(HeldSlot { seq, wake: tx });
        st.next_held += 1;
        self.bump(|s| s.held_connects += 1);
        Some((seq, rx))
    }

    /// The held connect `seq` is answering (or was dropped): unregister it if still registered.
    pub(crate) fn release_held(&self, st: &mut State, client_id: &str, seq: u64) {
        let now = self.now();
        if let Some(session) = st.sessions.get_mut(client_id) {
            if session.held.as_ref().is_some_and(|h| h.seq == seq) {
                session.held = None;
            }
            session.last_active = now;
        }
        self.bump(|s| s.held_connects = s.held_connects.saturating_sub(1));
    }

    /// Wake every held connect with `why`.
    pub(crate) fn wake_all(&self, why: Wake) {
        let mut st = self.lock();
        let now = self.now();
        for session in st.sessions.values_mut() {
            session.wake(why, now);
        }
    }

    // ---- events ------------------------------------------------------------------------------

    /// Build one event with the next replay id of `channel`, retain and deliver it.
    pub(crate) fn publish_with(
        &self,
        channel: &str,
        build: impl FnOnce(i64, SystemTime) -> Value,
    ) -> i64 {
        let base = base_channel(channel);
        let wall = self.wall();
        let mut st = self.lock();
        let id = st.channel(&self.config, base).assign_id();
        let event = events::frame(base, &build(id, wall));
        self.deliver(&mut st, base, &[(id, event)]);
        id
    }

    /// Publish a change event on its entity channel and on `/data/ChangeEvents`, with one
    /// replay id from the space all change channels share (the multi-entity channel's).
    pub(crate) fn publish_change(
        &self,
        entity_channel: &str,
        build: impl FnOnce(i64, SystemTime) -> Value,
    ) -> i64 {
        let wall = self.wall();
        let mut st = self.lock();
        let id = st.channel(&self.config, events::ALL_CHANGES).assign_id();
        let data = build(id, wall);
        let on_entity = events::frame(entity_channel, &data);
        let on_all = events::frame(events::ALL_CHANGES, &data);
        self.deliver_quietly(&mut st, entity_channel, &[(id, on_entity)]);
        self.deliver(&mut st, events::ALL_CHANGES, &[(id, on_all)]);
        id
    }

    /// Load the events a retention file holds, then keep every new retained event in it.
    pub(crate) fn restore(
        &self,
        file: super::disk::RetentionFile,
        records: Vec<super::disk::Record>,
    ) {
        let now = self.now();
        let mut st = self.lock();
        for record in records {
            st.channel(&self.config, &record.channel).restore(
                record.replay_id,
                now,
                Bytes::from(record.event),
                self.config.retention_count,
            );
        }
        drop(st);
        let _ = self.disk.set(file);
    }

    /// Retain events on `base` and queue them for every subscribed session.
    pub(crate) fn deliver(&self, st: &mut State, base: &str, batch: &[(i64, Bytes)]) {
        self.deliver_quietly(st, base, batch);
        let n = batch.len() as u64;
        self.bump(|s| s.events_published += n);
    }

    /// Queue a run of `count` events on `base` for every session subscribed to it, built by
    /// `make` from their replay ids only when a connect takes them; nothing is retained.
    pub(crate) fn deliver_generated(
        &self,
        base: &str,
        count: usize,
        make: Arc<dyn Fn(i64) -> Bytes + Send + Sync>,
    ) {
        let now = self.now();
        let mut st = self.lock();
        st.channel(&self.config, base);
        let State {
            channels,
            sessions,
            stalled,
            ..
        } = &mut *st;
        let Some(ch) = channels.get_mut(base) else {
            return;
        };
        let first = ch.reserve(count);
        if count > 0 && !stalled.contains(base) {
            for client_id in &ch.subscribers {
                if let Some(session) = sessions.get_mut(client_id) {
                    session.queue.push_back(Queued {
                        channel: ch.name.clone(),
                        item: Item::Generated(Generated {
                            make: make.clone(),
                            next_id: first,
                            step: ch.step(),
                            left: count,
                        }),
                    });
                    session.wake(Wake::Events, now);
                }
            }
        }
        drop(st);
        let n = count as u64;
        self.bump(|s| s.events_published += n);
    }

    /// [`deliver`](Shared::deliver) without counting the events as published (a copy of
    /// events counted elsewhere).
    fn deliver_quietly(&self, st: &mut State, base: &str, batch: &[(i64, Bytes)]) {
        let now = self.now();
        let config = &self.config;
        st.channel(config, base);
        let State {
            channels,
            sessions,
            stalled,
            ..
        } = st;
        let Some(ch) = channels.get_mut(base) else {
            return;
        };
        ch.trim(now, config.retention_age);
        for (id, event) in batch {
            ch.retain(*id, now, event.clone(), config.retention_count);
            if let Some(disk) = self.disk.get() {
                disk.append(base, *id, event);
            }
        }
        // A stalled channel retains but delivers nothing (the event-bus backlog fault).
        let subscribers = if stalled.contains(base) {
            None
        } else {
            Some(&ch.subscribers)
        };
        for client_id in subscribers.into_iter().flatten() {
            if let Some(session) = sessions.get_mut(client_id) {
                let names: Vec<(Option<Filter>, String)> = session
                    .subscriptions
                    .get(base)
                    .into_iter()
                    .flatten()
                    .map(|s| (Filter::of(s), s.clone()))
                    .collect();
                let before = session.queue.len();
                for (_, event) in batch {
                    for (filter, subscription) in &names {
                        let event = match filter {
                            Some(filter) => filter.apply(subscription, event),
                            None => Some(event.clone()),
                        };
                        session.queue.extend(event.map(|event| Queued {
                            channel: ch.name.clone(),
                            item: Item::Event(event),
                        }));
                    }
                }
                if session.queue.len() > before {
                    session.wake(Wake::Events, now);
                }
            }
        }
    }

    // ---- logs --------------------------------------------------------------------------------

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a request's messages and count them by kind.
    pub(crate) fn record_received(&self, messages: &[Message]) {
        use crate::bayeux::channels;
        let mut log = self.log();
        let (mut hs, mut co, mut su, mut un, mut di, mut pu) = (0, 0, 0, 0, 0, 0);
        for m in messages {
            match m.channel.as_str() {
                channels::HANDSHAKE => hs += 1,
                channels::CONNECT => co += 1,
                channels::SUBSCRIBE => su += 1,
                channels::UNSUBSCRIBE => un += 1,
                channels::DISCONNECT => di += 1,
                _ if !m.is_meta() => {
                    pu += 1;
                    push_capped(&mut log.published, m.clone());
                }
                _ => {}
            }
            push_capped(&mut log.received, m.clone());
        }
        drop(log);
        self.bump(|s| {
            s.handshakes += hs;
            s.connects += co;
            s.subscribes += su;
            s.unsubscribes += un;
            s.disconnects += di;
            s.publishes += pu;
        });
    }

    pub(crate) fn record_token_request(&self, request: TokenRequest) {
        push_capped(&mut self.log().token_requests, request);
        self.bump(|s| s.token_requests += 1);
    }

    pub(crate) fn received(&self) -> Vec<Message> {
        self.log().received.iter().cloned().collect()
    }

    pub(crate) fn published(&self) -> Vec<Message> {
        self.log().published.iter().cloned().collect()
    }

    pub(crate) fn token_requests(&self) -> Vec<TokenRequest> {
        self.log().token_requests.iter().cloned().collect()
    }
}
