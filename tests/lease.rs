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
use sfstream::{Client, ClientBuilder, ErrorKind};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
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

/// A storage of either kind behind one type.
#[derive(Clone)]
struct AnyStorage(Arc<dyn ReplayStorage>);

impl ReplayStorage for AnyStorage {
    fn get<'a>(&'a self, s: &'a str) -> BoxFuture<'a, sfstream::Result<Option<ReplayMarker>>> {
        self.0.get(s)
    }
    fn set<'a>(&'a self, s: &'a str, m: ReplayMarker) -> BoxFuture<'a, sfstream::Result<()>> {
        self.0.set(s, m)
    }
    fn supports_fencing(&self) -> bool {
        self.0.supports_fencing()
    }
    fn set_fenced<'a>(
        &'a self,
        s: &'a str,
        m: ReplayMarker,
        epoch: u64,
    ) -> BoxFuture<'a, sfstream::Result<()>> {
        self.0.set_fenced(s, m, epoch)
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
}

impl Controlled {
    fn new(inner: Arc<dyn Lease>) -> Self {
        Controlled {
            inner,
            mode: Arc::new(AtomicU8::new(NORMAL)),
            attempts: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl Lease for Controlled {
    fn try_acquire<'a>(
        &'a self,
        owner: &'a str,
        d: Duration,
    ) -> BoxFuture<'a, sfstream::Result<Option<u64>>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.inner.try_acquire(owner, d)
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
            _ => self.inner.renew(owner, epoch, d),
        }
    }
    fn release<'a>(&'a self, owner: &'a str, epoch: u64) -> BoxFuture<'a, sfstream::Result<()>> {
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
        match self {
            #[cfg(feature = "postgres")]
            Store::Postgres => {
                let s = sfstream::replay::PostgresStorage::connect(url, key)
                    .await
                    .unwrap();
                let lease = Arc::new(s.lease());
                (AnyStorage(Arc::new(s)), lease)
            }
            #[cfg(feature = "redis")]
            Store::Redis => {
                let s = sfstream::replay::RedisStorage::connect(url, key)
                    .await
                    .unwrap();
                let lease = Arc::new(s.lease());
                (AnyStorage(Arc::new(s)), lease)
            }
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
        let url = emu.instance_url().parse().unwrap();
        Client::builder(sfstream::auth::AccessToken::new(emu.issue_token(), url))
            .api_version(emu.api_version())
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .replay(ReplayOption::AllEvents)
            .replay_storage(self.storage.clone())
            .lease(self.lease.clone())
            .lease_timing(duration, renew)
    }
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

/// Only the holder streams; `close()` releases the lease and the standby takes over at once
/// (well before the lease would expire), resuming after the last processed event: no loss
/// and, after a clean close, no duplicate.
async fn standby_takes_over_after_close(store: Store) {
    let Some(url) = store.url() else { return };
    within("hand-over on close", async {
        let emu = Emulator::start().await.unwrap();
        let k = key("close");
        let (a, b) = (
            Consumer::new(store, &url, &k).await,
            Consumer::new(store, &url, &k).await,
        );
        let duration = Duration::from_secs(10);
        let renew = Duration::from_millis(200);
        let first: Vec<i64> = (0..10)
            .map(|n| emu.publish(CH, json!({ "n": n })))
            .collect();
        let holder = a.builder(&emu, duration, renew).connect().await.unwrap();
        let standby = b.builder(&emu, duration, renew).build().unwrap();
        let waiting = {
            let standby = standby.clone();
            tokio::spawn(async move { standby.open().await })
        };
        let mut sub = holder.subscribe(CH).await.unwrap();
        for id in &first {
            let event = sub.next().await.unwrap().unwrap();
            assert_eq!(event.replay_id(), Some(*id));
            event.ack();
        }
        // The standby has asked several times and was refused each time.
        until(|| b.lease.attempts.load(Ordering::SeqCst) >= 3).await;
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
        let second: Vec<i64> = (10..15)
            .map(|n| emu.publish(CH, json!({ "n": n })))
            .collect();
        let mut sub = standby.subscribe(CH).await.unwrap();
        for id in &second {
            let event = sub.next().await.unwrap().unwrap();
            assert_eq!(
                event.replay_id(),
                Some(*id),
                "resumes after the last processed"
            );
            event.ack();
        }
        standby.close().await.unwrap();
        assert_eq!(
            b.storage.get(CH).await.unwrap().map(|m| m.replay_id),
            second.last().copied()
        );
        eprintln!("{store:?}: standby streaming {takeover:?} after close");
    })
    .await;
}

/// A holder that cannot reach the store stops streaming when its own count of the lease runs
/// out (its stream yields `LeaseLost` and ends), which is before the store lets the standby
/// in; the standby resumes from the holder's last stored marker, so nothing is lost.
async fn cut_off_holder_stops_before_the_standby_starts(store: Store) {
    let Some(url) = store.url() else { return };
    within("cut-off holder", async {
        let emu = Emulator::start().await.unwrap();
        let k = key("cutoff");
        let (a, b) = (
            Consumer::new(store, &url, &k).await,
            Consumer::new(store, &url, &k).await,
        );
        let (duration, renew) = (Duration::from_millis(1500), Duration::from_millis(200));
        let published: Vec<i64> = (0..10)
            .map(|n| emu.publish(CH, json!({ "n": n })))
            .collect();
        let holder = a.builder(&emu, duration, renew).connect().await.unwrap();
        let standby = b.builder(&emu, duration, renew).build().unwrap();
        let waiting = {
            let standby = standby.clone();
            tokio::spawn(async move { standby.open().await.map(|()| Instant::now()) })
        };
        let mut sub = holder.subscribe(CH).await.unwrap();
        let mut processed = Vec::new();
        for _ in 0..5 {
            let event = sub.next().await.unwrap().unwrap();
            processed.push(event.replay_id().unwrap());
            event.ack();
        }
        // The acknowledged markers are stored before the holder is cut off.
        let stored_before = loop {
            let m = a.storage.get(CH).await.unwrap().map(|m| m.replay_id);
            if m == Some(published[4]) {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        a.lease.set(HANG);
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
        let stored = b.storage.get(CH).await.unwrap().unwrap().replay_id;
        assert!(
            stored >= published[4],
            "{stored} regressed below {stored_before:?}"
        );
        let mut published = published;
        published.extend((10..13).map(|n| emu.publish(CH, json!({ "n": n }))));
        let mut sub = standby.subscribe(CH).await.unwrap();
        let mut resumed = Vec::new();
        while resumed.last() != published.last() {
            let event = sub.next().await.unwrap().unwrap();
            resumed.push(event.replay_id().unwrap());
            event.ack();
        }
        let expected: Vec<i64> = published
            .iter()
            .copied()
            .filter(|id| *id > stored)
            .collect();
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
    let Some(url) = store.url() else { return };
    within("stale holder", async {
        let emu = Emulator::start().await.unwrap();
        let k = key("stale");
        let (a, b) = (
            Consumer::new(store, &url, &k).await,
            Consumer::new(store, &url, &k).await,
        );
        let (duration, renew) = (Duration::from_millis(1500), Duration::from_millis(200));
        let stale = a.builder(&emu, duration, renew).connect().await.unwrap();
        let mut old_sub = stale.subscribe(CH).await.unwrap();
        a.lease.set(LIE);
        // The store lets the lease expire; the standby takes it.
        let standby = b.builder(&emu, duration, renew).connect().await.unwrap();
        assert!(
            !stale.closed(),
            "the stale holder still believes it holds the lease"
        );
        let mut new_sub = standby.subscribe(CH).await.unwrap();
        let published: Vec<i64> = (0..10)
            .map(|n| emu.publish(CH, json!({ "n": n })))
            .collect();
        // The new holder processes 3; the stale one everything it gets.
        for id in &published[..3] {
            let event = new_sub.next().await.unwrap().unwrap();
            assert_eq!(event.replay_id(), Some(*id));
            event.ack();
        }
        let new_marker = loop {
            let m = b.storage.get(CH).await.unwrap().map(|m| m.replay_id);
            if m == Some(published[2]) {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
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
            a.storage.get(CH).await.unwrap().map(|m| m.replay_id),
            new_marker,
            "the stale holder's writes were refused"
        );
        // The new holder goes on.
        let event = new_sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(published[3]));
        standby.close().await.unwrap();
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

on_every_store! {
    lease_contract_holds => lease_contract,
    writes_of_an_older_epoch_are_refused => fenced_writes,
    the_standby_takes_over_at_once_when_the_holder_closes => standby_takes_over_after_close,
    a_cut_off_holder_stops_before_the_standby_starts => cut_off_holder_stops_before_the_standby_starts,
    a_stale_holder_is_fenced_and_its_stream_ends_with_lease_lost => stale_holder_is_fenced,
}
