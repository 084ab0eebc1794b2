//! Active/standby with leases and fencing, against real servers: PostgreSQL at
//! `SFSTREAM_TEST_POSTGRES_URL` (feature `postgres`) and Redis at `SFSTREAM_TEST_REDIS_URL`
//! (feature `redis`); `.ci/run` starts both. Each test runs the same scenario on both stores.
#![cfg(any(feature = "postgres", feature = "redis"))]

mod common;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::replay::{Lease, ReplayMarker, ReplayOption, ReplayStorage};
use sfstream::{Client, ClientBuilder, ErrorKind, Subscription};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const CH: &str = "/event/Order__e";

/// Every scenario ends by itself; fail-overs wait for lease expiries, so the bound is wider
/// than `common::within`'s.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The URL in `var`, or `None` (with a hint) when there is none; in CI a missing server is a
/// failure.
fn server(var: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but {var} is not: .ci/run starts the server")
        }
        _ => {
            eprintln!("skipping: set {var}={example} to run these tests (.ci/run starts a server)");
            None
        }
    }
}

/// A key no other test (or earlier run) uses.
fn key(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("lease-{name}-{}-{nanos}", std::process::id())
}

/// A storage of either kind behind one type. A copy made by [`AnyStorage::gated`] writes to
/// the same store, its fenced writes passing a [`Gate`] first.
#[derive(Clone)]
struct AnyStorage {
    inner: Arc<dyn ReplayStorage>,
    gate: Option<Arc<Gate>>,
}

impl AnyStorage {
    fn new(inner: impl ReplayStorage) -> Self {
        AnyStorage {
            inner: Arc::new(inner),
            gate: None,
        }
    }

    /// This storage behind a new gate: once armed, it holds the next fenced write until the
    /// test lets it go; then that write fails as an unreachable store would (`fail`), or goes
    /// on to the store.
    fn gated(&self, fail: bool) -> (AnyStorage, Arc<Gate>) {
        let gate = Arc::new(Gate {
            armed: AtomicBool::new(false),
            fail,
            holding: AtomicBool::new(false),
            open: tokio::sync::Semaphore::new(0),
        });
        let gated = AnyStorage {
            inner: self.inner.clone(),
            gate: Some(gate.clone()),
        };
        (gated, gate)
    }
}

impl ReplayStorage for AnyStorage {
    fn get<'a>(&'a self, s: &'a str) -> BoxFuture<'a, sfstream::Result<Option<ReplayMarker>>> {
        self.inner.get(s)
    }
    fn set<'a>(&'a self, s: &'a str, m: ReplayMarker) -> BoxFuture<'a, sfstream::Result<()>> {
        self.inner.set(s, m)
    }
    fn supports_fencing(&self) -> bool {
        self.inner.supports_fencing()
    }
    fn set_fenced<'a>(
        &'a self,
        s: &'a str,
        m: ReplayMarker,
        epoch: u64,
    ) -> BoxFuture<'a, sfstream::Result<()>> {
        Box::pin(async move {
            if let Some(gate) = &self.gate {
                gate.pass().await?;
            }
            self.inner.set_fenced(s, m, epoch).await
        })
    }
}

/// See [`AnyStorage::gated`].
struct Gate {
    armed: AtomicBool,
    fail: bool,
    /// The held write has arrived and waits.
    holding: AtomicBool,
    open: tokio::sync::Semaphore,
}

impl Gate {
    async fn pass(&self) -> sfstream::Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.holding.store(true, Ordering::SeqCst);
            let _let_go = self.open.acquire().await.unwrap();
            if self.fail {
                // Any plain storage error will do: borrow one from a bad file.
                return Err(sfstream::replay::FileStorage::open("/dev/null/nope").unwrap_err());
            }
        }
        Ok(())
    }
}

const NORMAL: u8 = 0;
/// Renewals never answer: a holder cut off from the store.
const HANG: u8 = 1;
/// Renewals report success without reaching the store: a holder that wrongly believes it
/// still holds the lease (what a pause between a renewal and the next write amounts to).
const LIE: u8 = 2;

/// A lease whose renewals a test can break, counting acquisition attempts.
#[derive(Clone)]
struct Controlled {
    inner: Arc<dyn Lease>,
    mode: Arc<AtomicU8>,
    attempts: Arc<AtomicUsize>,
    /// Renewals that succeeded, and that failed with an error (store unreachable).
    renewed: Arc<AtomicUsize>,
    unreachable: Arc<AtomicUsize>,
    /// Every acquisition that succeeded: owner and epoch.
    acquired: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    /// The epochs releases were asked for.
    released: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Controlled {
    fn new(inner: Arc<dyn Lease>) -> Self {
        Controlled {
            inner,
            mode: Arc::new(AtomicU8::new(NORMAL)),
            attempts: Arc::new(AtomicUsize::new(0)),
            renewed: Arc::new(AtomicUsize::new(0)),
            unreachable: Arc::new(AtomicUsize::new(0)),
            acquired: Arc::default(),
            released: Arc::default(),
        }
    }
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
    fn acquired(&self) -> Vec<(String, u64)> {
        self.acquired.lock().unwrap().clone()
    }
}

impl Lease for Controlled {
    fn try_acquire<'a>(
        &'a self,
        owner: &'a str,
        d: Duration,
    ) -> BoxFuture<'a, sfstream::Result<Option<u64>>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let acquired = self.inner.try_acquire(owner, d).await;
            if let Ok(Some(epoch)) = acquired {
                self.acquired
                    .lock()
                    .unwrap()
                    .push((owner.to_owned(), epoch));
            }
            acquired
        })
    }
    fn renew<'a>(
        &'a self,
        owner: &'a str,
        epoch: u64,
        d: Duration,
    ) -> BoxFuture<'a, sfstream::Result<bool>> {
        match self.mode.load(Ordering::SeqCst) {
            HANG => Box::pin(std::future::pending()),
            LIE => Box::pin(async { Ok(true) }),
            _ => Box::pin(async move {
                let renewed = self.inner.renew(owner, epoch, d).await;
                match renewed {
                    Ok(true) => self.renewed.fetch_add(1, Ordering::SeqCst),
                    Ok(false) => 0,
                    Err(_) => self.unreachable.fetch_add(1, Ordering::SeqCst),
                };
                renewed
            }),
        }
    }
    fn release<'a>(&'a self, owner: &'a str, epoch: u64) -> BoxFuture<'a, sfstream::Result<()>> {
        self.released.lock().unwrap().push(epoch);
        self.inner.release(owner, epoch)
    }
}

/// Where the store is: opens a storage and its lease under one key.
#[derive(Clone, Copy, Debug)]
enum Store {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "redis")]
    Redis,
}

impl Store {
    fn url(self) -> Option<String> {
        match self {
            #[cfg(feature = "postgres")]
            Store::Postgres => server(
                "SFSTREAM_TEST_POSTGRES_URL",
                "postgresql://user@127.0.0.1:PORT/db",
            ),
            #[cfg(feature = "redis")]
            Store::Redis => server("SFSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:PORT/0"),
        }
    }

    async fn open(self, url: &str, key: &str) -> (AnyStorage, Arc<dyn Lease>) {
        // The two storages share the API but no trait for `connect` and `lease`.
        macro_rules! open {
            ($storage:ty) => {{
                let s = <$storage>::connect(url, key).await.unwrap();
                let lease: Arc<dyn Lease> = Arc::new(s.lease());
                (AnyStorage::new(s), lease)
            }};
        }
        match self {
            #[cfg(feature = "postgres")]
            Store::Postgres => open!(sfstream::replay::PostgresStorage),
            #[cfg(feature = "redis")]
            Store::Redis => open!(sfstream::replay::RedisStorage),
        }
    }
}

/// One consumer: a client with its own connection to the store.
struct Consumer {
    storage: AnyStorage,
    lease: Controlled,
}

impl Consumer {
    async fn new(store: Store, url: &str, key: &str) -> Consumer {
        let (storage, lease) = store.open(url, key).await;
        Consumer {
            storage,
            lease: Controlled::new(lease),
        }
    }

    fn builder(&self, emu: &Emulator, duration: Duration, renew: Duration) -> ClientBuilder {
        self.builder_on(self.storage.clone(), emu, duration, renew)
    }

    /// [`Consumer::builder`] with the markers in `storage` (a wrapper of this one's).
    fn builder_on(
        &self,
        storage: impl ReplayStorage,
        emu: &Emulator,
        duration: Duration,
        renew: Duration,
    ) -> ClientBuilder {
        let url = emu.instance_url().parse().unwrap();
        let auth = sfstream::auth::AccessToken::new(emu.issue_token(), url);
        self.builder_with(storage, auth, &emu.api_version())
            .lease_timing(duration, renew)
    }

    /// A client of this consumer's lease, with its markers in `storage`, logging in with
    /// `auth` (the child processes have no emulator of their own).
    fn builder_with(
        &self,
        storage: impl ReplayStorage,
        auth: sfstream::auth::AccessToken,
        api_version: &str,
    ) -> ClientBuilder {
        Client::builder(auth)
            .api_version(api_version)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .replay(ReplayOption::AllEvents)
            .replay_storage(storage)
            .lease(self.lease.clone())
    }
}

/// Two consumers sharing one key (markers and lease), each with its own connections.
async fn two_consumers(store: Store, url: &str, name: &str) -> (Consumer, Consumer) {
    let k = key(name);
    (
        Consumer::new(store, url, &k).await,
        Consumer::new(store, url, &k).await,
    )
}

/// Open `client` in the background: it stands by until it holds the lease; when it did.
fn stand_by(client: &Client) -> tokio::task::JoinHandle<sfstream::Result<Instant>> {
    let client = client.clone();
    tokio::spawn(async move { client.open().await.map(|()| Instant::now()) })
}

fn marker(id: i64) -> ReplayMarker {
    ReplayMarker::new(id, None)
}

/// Poll `cond` every few milliseconds until it holds (bounded by the caller's `within`).
async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Read `stream` until it ends; the replay ids it yielded and the kinds of its errors.
async fn drain(
    stream: &mut (impl futures::Stream<Item = sfstream::Result<sfstream::Event>> + Unpin),
) -> (Vec<i64>, Vec<ErrorKind>) {
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => ids.push(e.replay_id().unwrap()),
            Err(e) => errors.push(e.kind()),
        }
    }
    (ids, errors)
}

/// Wait until `storage` holds the marker `id` for [`CH`] (written in the background).
async fn stored_reaches(storage: &AnyStorage, id: i64) {
    while storage.get(CH).await.unwrap().map(|m| m.replay_id) != Some(id) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Take (and acknowledge) events up to the one with replay id `last`; their ids.
async fn take_until(sub: &mut Subscription, last: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        let event = sub.next().await.unwrap().unwrap();
        ids.push(event.replay_id().unwrap());
        event.ack();
    }
    ids
}

// ---- the scenarios -----------------------------------------------------------------------------

/// The `Lease` contract: one holder, renewals only by the holder at its epoch, release and
/// expiry free it, every acquisition increases the epoch.
async fn lease_contract(store: Store) {
    let Some(url) = store.url() else { return };
    within("lease contract", async {
        let k = key("contract");
        let (_, a) = store.open(&url, &k).await;
        let (_, b) = store.open(&url, &k).await;
        let long = Duration::from_secs(30);
        let e1 = a.try_acquire("a", long).await.unwrap().expect("free lease");
        assert_eq!(b.try_acquire("b", long).await.unwrap(), None, "held");
        assert!(a.renew("a", e1, long).await.unwrap());
        assert!(!b.renew("b", e1, long).await.unwrap(), "not the owner");
        assert!(!a.renew("a", e1 + 1, long).await.unwrap(), "not the epoch");
        b.release("b", e1).await.unwrap(); // not the owner: no effect
        assert_eq!(b.try_acquire("b", long).await.unwrap(), None);
        a.release("a", e1).await.unwrap();
        let e2 = b.try_acquire("b", long).await.unwrap().expect("released");
        assert!(e2 > e1, "epochs grow: {e1} then {e2}");
        assert!(!a.renew("a", e1, long).await.unwrap(), "taken over");
        // Expiry by the store's clock.
        b.release("b", e2).await.unwrap();
        let short = Duration::from_millis(300);
        let e3 = b.try_acquire("b", short).await.unwrap().expect("released");
        let e4 = loop {
            if let Some(e) = a.try_acquire("a", long).await.unwrap() {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(e4 > e3 && e3 > e2);
        assert!(!b.renew("b", e3, long).await.unwrap(), "expired and taken");
    })
    .await;
}

/// A write of an older epoch is refused with `LeaseLost` and changes nothing, even when its
/// marker is newer; the holder's writes go through.
async fn fenced_writes(store: Store) {
    let Some(url) = store.url() else { return };
    within("fencing", async {
        let k = key("fence");
        let (storage, lease) = store.open(&url, &k).await;
        assert!(storage.supports_fencing());
        let long = Duration::from_secs(30);
        let old = lease.try_acquire("old", long).await.unwrap().unwrap();
        storage.set_fenced(CH, marker(5), old).await.unwrap();
        assert_eq!(storage.get(CH).await.unwrap(), Some(marker(5)));
        lease.release("old", old).await.unwrap();
        let new = lease.try_acquire("new", long).await.unwrap().unwrap();
        let refused = storage.set_fenced(CH, marker(9), old).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::LeaseLost, "{refused}");
        assert_eq!(storage.get(CH).await.unwrap(), Some(marker(5)), "unchanged");
        storage.set_fenced(CH, marker(7), new).await.unwrap();
        assert_eq!(storage.get(CH).await.unwrap(), Some(marker(7)));
        // A channel the old holder never wrote is fenced too.
        let refused = storage.set_fenced("/event/B__e", marker(1), old).await;
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::LeaseLost);
        assert_eq!(storage.get("/event/B__e").await.unwrap(), None);
    })
    .await;
}

/// The lease timing of most scenarios: short, so that expiries come quickly, but long enough
/// that a holder on a loaded machine (2 cores, a dozen builds) does not lose its lease before
/// the scenario cuts it off (at 1.5 s one did, once, and waited for a marker it never wrote).
const LEASE: Duration = Duration::from_millis(3000);
const RENEW: Duration = Duration::from_millis(200);

/// What a scenario starts from: an emulator and two consumers sharing one key.
struct Pair {
    emu: Emulator,
    a: Consumer,
    b: Consumer,
}

impl Pair {
    /// Publish `count` events on [`CH`]; their replay ids.
    fn publish(&self, count: usize) -> Vec<i64> {
        (0..count)
            .map(|n| self.emu.publish(CH, json!({ "n": n })))
            .collect()
    }

    /// A client of `who` with the short lease timing.
    fn client(&self, who: &Consumer) -> ClientBuilder {
        who.builder(&self.emu, LEASE, RENEW)
    }

    /// `a` holds a lease of `duration` and is subscribed to [`CH`]; `b` stands by in the
    /// background (see [`stand_by`]).
    async fn holder_and_standby(&self, duration: Duration) -> (Client, Subscription, Standby) {
        let holder = self.a.builder(&self.emu, duration, RENEW);
        let holder = holder.connect().await.unwrap();
        let standby = self.b.builder(&self.emu, duration, RENEW).build().unwrap();
        let waiting = stand_by(&standby);
        let sub = holder.subscribe(CH).await.unwrap();
        (holder, sub, Standby { standby, waiting })
    }
}

/// A client opening in the background: it holds the lease once `waiting` is done.
struct Standby {
    standby: Client,
    waiting: tokio::task::JoinHandle<sfstream::Result<Instant>>,
}

/// Run `scenario` against `store` within the time bound (skipped when the store is not
/// configured).
async fn on_pair(store: Store, name: &str, scenario: impl AsyncFnOnce(Pair)) {
    let Some(url) = store.url() else { return };
    within(name, async {
        let emu = Emulator::start().await.unwrap();
        let (a, b) = two_consumers(store, &url, name).await;
        scenario(Pair { emu, a, b }).await;
    })
    .await;
}

/// Only the holder streams; `close()` releases the lease and the standby takes over at its
/// next attempt (well before the lease would expire), resuming after the last processed
/// event: no loss and, after a clean close, no duplicate.
async fn standby_takes_over_after_close(store: Store) {
    on_pair(store, "close", async |p| {
        let duration = Duration::from_secs(10);
        let first = p.publish(10);
        let (holder, mut sub, Standby { standby, waiting }) = p.holder_and_standby(duration).await;
        assert_eq!(take_until(&mut sub, first[9]).await, first);
        // The standby has asked several times and was refused each time.
        until(|| p.b.lease.attempts.load(Ordering::SeqCst) >= 3).await;
        assert!(
            !waiting.is_finished(),
            "the standby must wait for the lease"
        );
        assert!(standby.closed());
        let closed_at = Instant::now();
        holder.close().await.unwrap();
        waiting.await.unwrap().unwrap();
        let takeover = closed_at.elapsed();
        assert!(takeover < duration, "took over after {takeover:?}");
        let second = p.publish(5);
        let mut sub = standby.subscribe(CH).await.unwrap();
        let resumed = take_until(&mut sub, second[4]).await;
        assert_eq!(resumed, second, "resumes after the last processed");
        standby.close().await.unwrap();
        let stored = p.b.storage.get(CH).await.unwrap().map(|m| m.replay_id);
        assert_eq!(stored, Some(second[4]), "close() stored the last marker");
        eprintln!("{store:?}: standby streaming {takeover:?} after close");
    })
    .await;
}

/// A holder that cannot reach the store stops streaming when its own count of the lease runs
/// out (its stream yields `LeaseLost` and ends), which is before the store lets the standby
/// in; the standby resumes from the holder's last stored marker, so nothing is lost.
async fn cut_off_holder_stops_before_the_standby_starts(store: Store) {
    on_pair(store, "cutoff", async |p| {
        let mut published = p.publish(10);
        let (holder, mut sub, Standby { standby, waiting }) = p.holder_and_standby(LEASE).await;
        take_until(&mut sub, published[4]).await;
        // The acknowledged markers are stored before the holder is cut off.
        stored_reaches(&p.a.storage, published[4]).await;
        p.a.lease.set(HANG);
        // Reading on marks what was read processed (AfterProcessed), until the lease is lost.
        let (rest, errors) = drain(&mut sub).await;
        let stopped_at = Instant::now();
        assert_eq!(
            errors,
            vec![ErrorKind::LeaseLost],
            "the stream ends with LeaseLost"
        );
        assert!(holder.closed(), "a client that lost its lease is closed");
        let started_at = waiting.await.unwrap().unwrap();
        assert!(
            stopped_at <= started_at,
            "the holder stopped {:?} after the standby started",
            stopped_at - started_at
        );
        let stored = p.b.storage.get(CH).await.unwrap().unwrap().replay_id;
        assert!(stored >= published[4], "{stored} regressed");
        published.extend(p.publish(3));
        let mut sub = standby.subscribe(CH).await.unwrap();
        let resumed = take_until(&mut sub, *published.last().unwrap()).await;
        let expected: Vec<i64> = published.into_iter().filter(|id| *id > stored).collect();
        assert_eq!(
            resumed, expected,
            "resumes after the stored marker {stored}"
        );
        // Duplicates: what the old holder read after its last stored marker.
        let duplicates = rest.iter().filter(|id| **id > stored).count();
        standby.close().await.unwrap();
        eprintln!(
            "{store:?}: holder stopped {:?} before the standby started; {duplicates} redelivered",
            started_at - stopped_at,
        );
    })
    .await;
}

/// A holder that wrongly believes it still holds the lease (as after a pause) keeps streaming
/// while the standby has taken over; its first marker write is refused by the store, its
/// stream ends with `LeaseLost`, and the stored marker stays the new holder's even though the
/// old one had processed further.
async fn stale_holder_is_fenced(store: Store) {
    on_pair(store, "stale", async |p| {
        let stale = p.client(&p.a).connect().await.unwrap();
        let mut old_sub = stale.subscribe(CH).await.unwrap();
        p.a.lease.set(LIE);
        // The store lets the lease expire; the standby takes it.
        let standby = p.client(&p.b).connect().await.unwrap();
        assert!(
            !stale.closed(),
            "the stale holder still believes it holds the lease"
        );
        let mut new_sub = standby.subscribe(CH).await.unwrap();
        let published = p.publish(10);
        // The new holder processes 3; the stale one everything it gets.
        assert_eq!(take_until(&mut new_sub, published[2]).await, published[..3]);
        stored_reaches(&p.b.storage, published[2]).await;
        let mut errors = Vec::new();
        while let Some(item) = old_sub.next().await {
            match item {
                Ok(event) => event.ack(),
                Err(e) => errors.push(e.kind()),
            }
        }
        assert_eq!(errors, vec![ErrorKind::LeaseLost], "fenced, then ended");
        assert!(stale.closed());
        assert_eq!(
            p.a.storage.get(CH).await.unwrap().map(|m| m.replay_id),
            Some(published[2]),
            "the stale holder's writes were refused"
        );
        // The new holder goes on.
        let event = new_sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(published[3]));
        standby.close().await.unwrap();
    })
    .await;
}

/// The first session of a client is still storing its last marker (the write hangs) when the
/// store lets its lease go (as an expiry does) and the client is opened again under a newer
/// epoch. Then the old write ends: `fail` as an unreachable store (the old keeper's release
/// finishes late), else at the store, which refuses it (fenced). Neither may touch the new
/// session: it streams, stores its markers and releases its lease on close.
async fn reopened_while_the_old_session_stores(store: Store, fail: bool) {
    on_pair(store, "late", async |p| {
        let (gated, gate) = p.a.storage.gated(fail);
        // Renewals far apart: the first keeper renews nothing during the test, so it surely
        // ends through its release.
        let (duration, renew) = (Duration::from_secs(50), Duration::from_secs(25));
        let client =
            p.a.builder_on(gated, &p.emu, duration, renew)
                .build()
                .unwrap();
        let first = p.publish(1);
        client.open().await.unwrap();
        let (owner, old_epoch) = p.a.lease.acquired()[0].clone();
        let mut sub = client.subscribe(CH).await.unwrap();
        gate.armed.store(true, Ordering::SeqCst);
        take_until(&mut sub, first[0]).await;
        until(|| gate.holding.load(Ordering::SeqCst)).await;
        drop(sub);
        let closing = tokio::spawn({
            let client = client.clone();
            async move { client.close().await }
        });
        until(|| client.closed()).await;
        p.a.lease.inner.release(&owner, old_epoch).await.unwrap();
        client.open().await.unwrap();
        let new_epoch = p.a.lease.acquired()[1].1;
        assert!(new_epoch > old_epoch);
        gate.open.add_permits(1);
        let _ = closing.await.unwrap(); // the old session's keeper has released
        assert!(!client.closed(), "the re-opened session was torn down");
        let second = p.publish(1);
        let mut sub = client.subscribe(CH).await.unwrap();
        take_until(&mut sub, second[0]).await;
        client.close().await.unwrap();
        assert_eq!(
            p.a.storage.get(CH).await.unwrap().map(|m| m.replay_id),
            Some(second[0]),
            "the re-opened session stores its markers"
        );
        let next = p.b.lease.try_acquire("next", duration).await.unwrap();
        assert!(next.is_some(), "the re-opened session released its lease");
        assert!(p.a.lease.released.lock().unwrap().contains(&new_epoch));
    })
    .await;
}

async fn late_release_after_reopen(store: Store) {
    reopened_while_the_old_session_stores(store, true).await;
}

async fn late_refusal_after_reopen(store: Store) {
    reopened_while_the_old_session_stores(store, false).await;
}

/// Events queued when the lease is lost are not handed out: the next item is `LeaseLost`,
/// then the stream ends (the new holder redelivers them).
async fn queued_events_after_lease_lost(store: Store) {
    on_pair(store, "queued", async |p| {
        let published = p.publish(10);
        let holder = p.client(&p.a).connect().await.unwrap();
        let mut sub = holder.subscribe(CH).await.unwrap();
        let event = sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(published[0]));
        until(|| holder.pending_count() == published.len() - 1).await;
        p.a.lease.set(HANG);
        until(|| holder.closed()).await;
        let (ids, errors) = drain(&mut sub).await;
        assert_eq!(ids, Vec::<i64>::new(), "events handed out after the loss");
        assert_eq!(errors, vec![ErrorKind::LeaseLost]);
        assert_eq!(holder.pending_count(), 0);
    })
    .await;
}

/// A client that lost its lease is opened again: it stands by until the lease is free,
/// acquires it under a newer epoch, and resumes from the stored markers (what the other
/// holder processed meanwhile), not from where it had been.
async fn reopen_after_lease_lost(store: Store) {
    on_pair(store, "reopen", async |p| {
        let mut published = p.publish(6);
        let (client, mut sub, Standby { standby, waiting }) = p.holder_and_standby(LEASE).await;
        assert_eq!(take_until(&mut sub, published[2]).await, published[..3]);
        stored_reaches(&p.a.storage, published[2]).await;
        p.a.lease.set(HANG);
        let (_, errors) = drain(&mut sub).await;
        assert_eq!(errors, vec![ErrorKind::LeaseLost]);
        assert!(client.closed());
        // The standby takes over and processes further than the first client ever got.
        waiting.await.unwrap().unwrap();
        published.extend(p.publish(3));
        let mut sub = standby.subscribe(CH).await.unwrap();
        take_until(&mut sub, published[8]).await;
        standby.close().await.unwrap();
        p.a.lease.set(NORMAL);
        let later = p.publish(2);
        client.open().await.unwrap();
        let epochs: Vec<u64> = p.a.lease.acquired().iter().map(|(_, e)| *e).collect();
        let standby_epoch = p.b.lease.acquired()[0].1;
        assert!(
            epochs.len() == 2 && epochs[1] > standby_epoch && standby_epoch > epochs[0],
            "{epochs:?}, standby {standby_epoch}"
        );
        let mut sub = client.subscribe(CH).await.unwrap();
        assert_eq!(
            take_until(&mut sub, later[1]).await,
            later,
            "resumes after the stored marker"
        );
        client.close().await.unwrap();
        stored_reaches(&p.a.storage, later[1]).await;
        assert!(p.a.lease.released.lock().unwrap().contains(&epochs[1]));
    })
    .await;
}

/// A lease without a storage that fences is refused when the client is built.
#[tokio::test]
async fn a_lease_needs_a_storage_that_fences() {
    struct Never;
    impl Lease for Never {
        fn try_acquire<'a>(
            &'a self,
            _: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, sfstream::Result<Option<u64>>> {
            Box::pin(async { Ok(None) })
        }
        fn renew<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: Duration,
        ) -> BoxFuture<'a, sfstream::Result<bool>> {
            Box::pin(async { Ok(false) })
        }
        fn release<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, sfstream::Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }
    let auth = common::token_for("https://example.my.salesforce.com");
    let no_storage = Client::builder(auth.clone()).lease(Never).build();
    assert_eq!(no_storage.unwrap_err().kind(), ErrorKind::Client);
    let unfenced = Client::builder(auth.clone())
        .replay_storage(sfstream::replay::MappingStorage::new())
        .lease(Never)
        .build();
    assert_eq!(unfenced.unwrap_err().kind(), ErrorKind::Client);
    #[cfg(feature = "postgres")]
    if let Some(url) = Store::Postgres.url() {
        let (storage, lease) = Store::Postgres.open(&url, &key("timing")).await;
        let renews_too_late = Client::builder(auth)
            .replay_storage(storage)
            .lease(Controlled::new(lease))
            .lease_timing(Duration::from_secs(1), Duration::from_secs(1))
            .build();
        assert_eq!(renews_too_late.unwrap_err().kind(), ErrorKind::Client);
    }
}

macro_rules! on_every_store {
    ($($name:ident => $scenario:ident),* $(,)?) => {
        #[cfg(feature = "postgres")]
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $scenario(Store::Postgres).await;
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $scenario(Store::Redis).await;
                }
            )*
        }
    };
}

// ---- fail-over between processes: SIGKILL and SIGSTOP ------------------------------------------

const CHILD_ENV: &str = "SFSTREAM_LEASE_CHILD";
/// Lease timing of the child processes: short, so that fail-overs are quick to test.
const CHILD_LEASE: Duration = Duration::from_millis(2000);
const CHILD_RENEW: Duration = Duration::from_millis(400);

/// Not a test of its own: the consumer process that the fail-over tests start (with
/// `SFSTREAM_LEASE_CHILD` set), kill, stop and continue. Prints `HOLDER` once it holds the
/// lease, `EVENT <replay id>` per event (processed, under the default commit policy, when the
/// next one is asked for), `ERROR <kind> <message>` per error and `END` when its stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the lease fail-over tests"]
async fn lease_consumer_child() {
    let Some([store, url, key, instance, token, version]) = common::child::config(CHILD_ENV) else {
        return;
    };
    let store = match store.as_str() {
        #[cfg(feature = "postgres")]
        "postgres" => Store::Postgres,
        #[cfg(feature = "redis")]
        "redis" => Store::Redis,
        other => panic!("unknown store {other}"),
    };
    let consumer = Consumer::new(store, &url, &key).await;
    let auth = sfstream::auth::AccessToken::new(token, instance.parse().unwrap());
    let client = consumer
        .builder_with(consumer.storage.clone(), auth, &version)
        .lease_timing(CHILD_LEASE, CHILD_RENEW)
        .connect()
        .await
        .expect("connect");
    println!("HOLDER");
    let mut sub = client.subscribe(CH).await.expect("subscribe");
    while let Some(item) = sub.next().await {
        match item {
            Ok(event) => println!("EVENT {}", event.replay_id().expect("a replay id")),
            Err(e) => println!("ERROR {:?} {e}", e.kind()),
        }
    }
    println!("END");
}

/// What a child printed, with when.
#[derive(Default)]
struct Output {
    holder_at: Option<Instant>,
    events: Vec<i64>,
    errors: Vec<String>,
    ended: bool,
}

struct Child {
    child: common::child::TestChild,
    out: Arc<std::sync::Mutex<Output>>,
}

impl Child {
    fn spawn(config: &str) -> Child {
        let out = Arc::new(std::sync::Mutex::new(Output::default()));
        let o = out.clone();
        let child = common::child::spawn("lease_consumer_child", CHILD_ENV, config, move |line| {
            let mut o = o.lock().unwrap();
            if line == "HOLDER" {
                o.holder_at = Some(Instant::now());
            } else if line == "END" {
                o.ended = true;
            } else if let Some(id) = line.strip_prefix("EVENT ") {
                o.events.push(id.parse().unwrap());
            } else if let Some(e) = line.strip_prefix("ERROR ") {
                o.errors.push(e.to_owned());
            }
        });
        Child { child, out }
    }

    fn pid(&self) -> i32 {
        self.child.process.id().unwrap() as i32
    }

    /// `kill -<signal>` to the child: the shell's builtin (the crate forbids `unsafe`, so no
    /// `libc::kill`; procps' kill(1) may be missing on a minimal image).
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.pid())])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn with<T>(&self, f: impl FnOnce(&Output) -> T) -> T {
        f(&self.out.lock().unwrap())
    }
}

fn child_config(store: Store, url: &str, key: &str, emu: &Emulator) -> String {
    let store = match store {
        #[cfg(feature = "postgres")]
        Store::Postgres => "postgres",
        #[cfg(feature = "redis")]
        Store::Redis => "redis",
    };
    [
        store.to_owned(),
        url.to_owned(),
        key.to_owned(),
        emu.instance_url(),
        emu.issue_token(),
        emu.api_version(),
    ]
    .join("\n")
}

/// Publish `count` events, one every 20 ms, in the background; their replay ids.
fn publish_slowly(emu: &Arc<Emulator>, count: usize) -> tokio::task::JoinHandle<Vec<i64>> {
    let emu = emu.clone();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..count {
            ids.push(emu.publish(CH, json!({ "n": n })));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ids
    })
}

/// A holder process and a standby sharing the lease of `config`, and 150 events published
/// slowly in the background; returns once the holder has streamed `streamed` of them.
async fn holder_and_standby(
    emu: &Arc<Emulator>,
    config: &str,
    streamed: usize,
) -> (Child, Child, tokio::task::JoinHandle<Vec<i64>>) {
    let holder = Child::spawn(config);
    until(|| holder.with(|o| o.holder_at.is_some())).await;
    let standby = Child::spawn(config);
    let publisher = publish_slowly(emu, 150);
    until(|| holder.with(|o| o.events.len() >= streamed)).await;
    (holder, standby, publisher)
}

/// Every event of `published` reached the holder or the standby; what each of them got.
fn assert_none_lost(holder: &Child, standby: &Child, published: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let (a, b) = (
        holder.with(|o| o.events.clone()),
        standby.with(|o| o.events.clone()),
    );
    let seen: std::collections::HashSet<i64> = a.iter().chain(&b).copied().collect();
    let lost: Vec<_> = published.iter().filter(|id| !seen.contains(id)).collect();
    assert!(lost.is_empty(), "lost {lost:?}");
    (a, b)
}

/// Two consumer processes share a lease; the holder is killed with SIGKILL mid-stream. The
/// standby takes over within the lease duration plus a renewal interval (plus slack for a
/// loaded machine), and the union of their outputs holds every event; the duplicates are the
/// events the killed holder had been handed after its last stored marker.
async fn sigkill_failover(store: Store) {
    let Some(url) = store.url() else { return };
    within("SIGKILL fail-over", async {
        let emu = Arc::new(Emulator::start().await.unwrap());
        let k = key("sigkill");
        let config = child_config(store, &url, &k, &emu);
        let (holder, standby, publisher) = holder_and_standby(&emu, &config, 40).await;
        assert!(standby.with(|o| o.holder_at.is_none()), "two holders");
        holder.signal("KILL");
        let killed_at = Instant::now();
        until(|| standby.with(|o| o.holder_at.is_some())).await;
        let takeover = standby.with(|o| o.holder_at.unwrap()) - killed_at;
        let published = publisher.await.unwrap();
        let last = *published.last().unwrap();
        until(|| standby.with(|o| o.events.contains(&last))).await;
        let (a, b) = assert_none_lost(&holder, &standby, &published);
        let duplicates = a.iter().filter(|id| b.contains(id)).count();
        // The standby resumed right after a marker the holder stored: only what the holder had
        // been handed after it comes again (at most the event in hand plus the queue).
        let resumed_at = b[0];
        assert!(a.contains(&(resumed_at - 1)) || resumed_at == published[0]);
        assert_eq!(duplicates, a.iter().filter(|id| **id >= resumed_at).count());
        assert!(duplicates <= 101, "{duplicates} duplicates");
        assert!(
            takeover < CHILD_LEASE + CHILD_RENEW + Duration::from_secs(3),
            "took over after {takeover:?}"
        );
        eprintln!(
            "{store:?} SIGKILL: standby streaming {takeover:?} after the kill (lease {CHILD_LEASE:?}, renewal {CHILD_RENEW:?}); {} events, {duplicates} duplicates",
            published.len()
        );
    })
    .await;
}

/// The holder process is stopped with SIGSTOP past its lease; the standby takes over and
/// advances the marker; SIGCONT: the old holder notices (its own count of the lease ran out,
/// or its write is fenced off), its stream ends with `LeaseLost`, and the stored marker never
/// moves back.
async fn sigstop_failover(store: Store) {
    let Some(url) = store.url() else { return };
    within("SIGSTOP fail-over", async {
        let emu = Arc::new(Emulator::start().await.unwrap());
        let k = key("sigstop");
        let config = child_config(store, &url, &k, &emu);
        let (storage, _) = store.open(&url, &k).await;
        let (holder, standby, publisher) = holder_and_standby(&emu, &config, 20).await;
        holder.signal("STOP");
        let stopped_at = Instant::now();
        until(|| standby.with(|o| o.events.len() >= 20)).await;
        let takeover = standby.with(|o| o.holder_at.unwrap()) - stopped_at;
        // The new holder's marker, read while the old one is still stopped.
        let advanced = loop {
            let m = storage.get(CH).await.unwrap().map(|m| m.replay_id);
            if m.is_some_and(|m| standby.with(|o| o.events.iter().any(|id| *id < m))) {
                break m.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let before = holder.with(|o| o.events.len());
        holder.signal("CONT");
        until(|| holder.with(|o| o.ended)).await;
        let (errors, after) = holder.with(|o| (o.errors.clone(), o.events.len() - before));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("LeaseLost"), "{errors:?}");
        let published = publisher.await.unwrap();
        let last = *published.last().unwrap();
        until(|| standby.with(|o| o.events.contains(&last))).await;
        let stored = storage.get(CH).await.unwrap().unwrap().replay_id;
        assert!(stored >= advanced, "the marker went back from {advanced} to {stored}");
        assert_none_lost(&holder, &standby, &published);
        eprintln!(
            "{store:?} SIGSTOP: standby streaming {takeover:?} after the stop; resumed holder read {after} more event(s) and stopped with {}",
            errors[0]
        );
    })
    .await;
}

// ---- the database restarted while streaming ----------------------------------------------------

/// A server of our own (never the shared ones): started, stopped and started again by the test,
/// removed when dropped.
struct Throwaway {
    store: Store,
    dir: std::path::PathBuf,
    port: u16,
    url: String,
}

async fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str], as_postgres: bool) {
    // initdb and postgres refuse to run as root: as root, run them as the postgres user.
    let root = is_root();
    let mut command = if as_postgres && root {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program.as_ref());
        c
    } else {
        tokio::process::Command::new(program.as_ref())
    };
    let out = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run a server command");
    assert!(
        out.status.success(),
        "{:?} {args:?}: {}",
        program.as_ref(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_bin() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("SFSTREAM_TEST_PG_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into());
    if dir.join("pg_ctl").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but {} has no pg_ctl: set SFSTREAM_TEST_PG_BIN",
            dir.display()
        );
    }
    eprintln!(
        "skipping: no PostgreSQL binaries in {}; set SFSTREAM_TEST_PG_BIN",
        dir.display()
    );
    None
}

impl Throwaway {
    async fn start(store: Store) -> Option<Throwaway> {
        // Only where the shared server of that kind is configured (CI starts both).
        store.url()?;
        let dir = std::env::temp_dir().join(key("restart"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let url = match store {
            #[cfg(feature = "postgres")]
            Store::Postgres => {
                let bin = pg_bin()?;
                if is_root() {
                    run("chown", &["postgres", dir.to_str().unwrap()], false).await;
                }
                let data = dir.join("data");
                run(
                    bin.join("initdb"),
                    &[
                        "-D",
                        data.to_str().unwrap(),
                        "-U",
                        "postgres",
                        "--auth=trust",
                    ],
                    true,
                )
                .await;
                format!("postgresql://postgres@127.0.0.1:{port}/postgres")
            }
            #[cfg(feature = "redis")]
            Store::Redis => format!("redis://127.0.0.1:{port}/0"),
        };
        let server = Throwaway {
            store,
            dir,
            port,
            url,
        };
        server.up().await;
        Some(server)
    }

    async fn up(&self) {
        let dir = self.dir.to_str().unwrap();
        let port = self.port.to_string();
        match self.store {
            #[cfg(feature = "postgres")]
            Store::Postgres => {
                let options = format!("-c listen_addresses=127.0.0.1 -p {port} -k {dir} -F");
                let pg_ctl = pg_bin().unwrap().join("pg_ctl");
                let (data, log) = (format!("{dir}/data"), format!("{dir}/log"));
                run(
                    pg_ctl,
                    &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
                    true,
                )
                .await;
            }
            #[cfg(feature = "redis")]
            Store::Redis => {
                // appendonly: the lease, its epoch counter and the markers survive the restart.
                let (pid, log) = (format!("{dir}/redis.pid"), format!("{dir}/redis.log"));
                let args = [
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--dir",
                    dir,
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    &pid,
                    "--logfile",
                    &log,
                ];
                run("redis-server", &args, false).await;
                let ping = async {
                    loop {
                        let out = tokio::process::Command::new("redis-cli")
                            .args(["-p", &port, "ping"])
                            .output()
                            .await
                            .unwrap();
                        if out.stdout.starts_with(b"PONG") {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), ping)
                    .await
                    .expect("redis-server answers");
            }
        }
    }

    async fn down(&self) {
        let dir = self.dir.to_str().unwrap();
        match self.store {
            #[cfg(feature = "postgres")]
            Store::Postgres => {
                let pg_ctl = pg_bin().unwrap().join("pg_ctl");
                let data = format!("{dir}/data");
                run(pg_ctl, &["-D", &data, "-m", "fast", "-w", "stop"], true).await;
            }
            #[cfg(feature = "redis")]
            Store::Redis => {
                let port = self.port.to_string();
                run("redis-cli", &["-p", &port, "shutdown"], false).await;
            }
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let dir = self.dir.to_str().unwrap().to_owned();
        match self.store {
            #[cfg(feature = "postgres")]
            Store::Postgres => {
                if let Some(bin) = pg_bin() {
                    let data = format!("{dir}/data");
                    let mut stop = if is_root() {
                        let mut c = std::process::Command::new("runuser");
                        c.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
                        c
                    } else {
                        std::process::Command::new(bin.join("pg_ctl"))
                    };
                    let _ = stop.args(["-D", &data, "-m", "immediate", "stop"]).output();
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis => {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The store restarts while the holder streams: the stream goes on meanwhile, and the holder
/// keeps the lease (a restart shorter than the lease) or loses it cleanly (its stream ends with
/// `LeaseLost` and the standby takes over); either way every event arrives and the stored
/// marker reaches the last one once the store is back.
async fn database_restart(store: Store) {
    let lease = (Duration::from_secs(15), Duration::from_millis(500));
    restart_scenario(store, lease, Some(30)).await;
}

/// The store stays down longer than the lease: the holder stops (its stream ends with
/// `LeaseLost`) since it cannot know whether the standby got in; once the store is back, the
/// standby takes over from the stored markers and nothing is lost.
async fn database_outage_past_the_lease(store: Store) {
    let lease = (Duration::from_millis(1500), Duration::from_millis(300));
    restart_scenario(store, lease, None).await;
}

/// The store goes down while `outage` events arrive (at least 20 ms apart), or with `None`
/// until the holder gave the lease up, then up again.
async fn restart_scenario(
    store: Store,
    (duration, renew): (Duration, Duration),
    outage: Option<usize>,
) {
    let expect_kept = outage.is_some();
    let Some(server) = Throwaway::start(store).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let emu = Arc::new(Emulator::start().await.unwrap());
        let (a, b) = two_consumers(store, &server.url, "restart").await;
        let holder = a.builder(&emu, duration, renew).connect().await.unwrap();
        let standby = b.builder(&emu, duration, renew).build().unwrap();
        let waiting = stand_by(&standby);
        let seen = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
        let mut sub = holder.subscribe(CH).await.unwrap();
        let reader = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(item) = sub.next().await {
                    let mut seen = seen.lock().unwrap();
                    match item {
                        Ok(e) => seen.0.push(e.replay_id().unwrap()),
                        Err(e) => seen.1.push(e.kind()),
                    }
                }
            })
        };
        let count = || seen.lock().unwrap().0.len();
        let publisher = publish_slowly(&emu, 200);
        until(|| count() >= 30).await;
        server.down().await;
        let down_at = count();
        // The stream goes on while the store is down (markers wait).
        match outage {
            Some(n) => until(|| count() >= down_at + n).await,
            None => until(|| seen.lock().unwrap().1.contains(&ErrorKind::LeaseLost)).await,
        }
        server.up().await;
        let renewed_before = a.lease.renewed.load(Ordering::SeqCst);
        assert!(
            a.lease.unreachable.load(Ordering::SeqCst) >= 1,
            "a renewal met the outage"
        );
        let published = publisher.await.unwrap();
        let last = *published.last().unwrap();
        let kept = !seen.lock().unwrap().1.contains(&ErrorKind::LeaseLost);
        assert_eq!(kept, expect_kept, "kept the lease");
        let mut events = seen.lock().unwrap().0.clone();
        if kept {
            until(|| seen.lock().unwrap().0.contains(&last)).await;
            events = seen.lock().unwrap().0.clone();
            while b.storage.get(CH).await.ok().flatten().map(|m| m.replay_id)
                < Some(published[published.len() - 2])
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The lease is renewed again on the restarted store.
            until(|| a.lease.renewed.load(Ordering::SeqCst) > renewed_before).await;
            assert!(
                !waiting.is_finished(),
                "the standby took over a lease still held"
            );
            holder.close().await.unwrap();
            waiting.await.unwrap().unwrap();
            standby.close().await.unwrap();
        } else {
            waiting.await.unwrap().unwrap();
            let mut sub = standby.subscribe(CH).await.unwrap();
            loop {
                let id = sub.next().await.unwrap().unwrap().replay_id().unwrap();
                events.push(id);
                if id == last {
                    break;
                }
            }
            standby.close().await.unwrap();
        }
        reader.await.unwrap();
        let lost: Vec<i64> = published
            .iter()
            .copied()
            .filter(|id| !events.contains(id))
            .collect();
        assert!(lost.is_empty(), "lost {lost:?}");
        let errors = seen.lock().unwrap().1.clone();
        let expected = if kept {
            vec![]
        } else {
            vec![ErrorKind::LeaseLost]
        };
        assert_eq!(errors, expected);
        eprintln!(
            "{store:?} restart: the holder {} the lease; holder errors {errors:?}",
            if kept { "kept" } else { "lost" }
        );
    })
    .await
    .expect("timed out: database restart");
}

on_every_store! {
    lease_contract_holds => lease_contract,
    writes_of_an_older_epoch_are_refused => fenced_writes,
    the_standby_takes_over_within_a_renewal_interval_when_the_holder_closes => standby_takes_over_after_close,
    a_cut_off_holder_stops_before_the_standby_starts => cut_off_holder_stops_before_the_standby_starts,
    a_stale_holder_is_fenced_and_its_stream_ends_with_lease_lost => stale_holder_is_fenced,
    sigkill_of_the_holder_hands_over_without_loss => sigkill_failover,
    sigstop_of_the_holder_is_fenced_after_sigcont => sigstop_failover,
    a_database_restart_loses_nothing => database_restart,
    a_database_outage_past_the_lease_hands_over_cleanly => database_outage_past_the_lease,
    an_old_keepers_late_release_leaves_the_reopened_session_alone => late_release_after_reopen,
    an_old_sessions_refused_write_leaves_the_reopened_session_alone => late_refusal_after_reopen,
    no_queued_event_is_handed_out_after_the_lease_is_lost => queued_events_after_lease_lost,
    a_client_reopened_after_lease_lost_resumes_from_the_stored_markers => reopen_after_lease_lost,
}
