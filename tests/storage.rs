//! The replay storage contract, run against every storage: `FileStorage` and `MappingStorage`
//! always, `PostgresStorage` (feature `postgres`) against the server named by
//! `SFSTREAM_TEST_POSTGRES_URL` and `RedisStorage` (feature `redis`) against
//! `SFSTREAM_TEST_REDIS_URL` (`.ci/run` starts both on loopback).

mod common;

use common::{unique_dir, within};
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::replay::{FileStorage, MappingStorage, ReplayMarker, ReplayOption, ReplayStorage};
use sfstream::{Client, ClientBuilder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

const CH: &str = "/event/Order__e";

fn at(ms: u64) -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn builder(emu: &Emulator, storage: impl ReplayStorage) -> ClientBuilder {
    let url = emu.instance_url().parse().unwrap();
    Client::builder(AccessToken::new(emu.issue_token(), url))
        .api_version(emu.api_version())
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .replay(ReplayOption::AllEvents)
        .replay_storage(storage)
}

/// `get` returns what `set` stored, per subscribed name (a PushTopic filter's apart from its
/// topic's), byte-exact (ids past 2^32, dates to the ms).
async fn round_trip(storage: &impl ReplayStorage) {
    assert_eq!(storage.get(CH).await.unwrap(), None);
    let big = ReplayMarker::new(i64::from(u32::MAX) * 3, at(1_764_316_801_123));
    storage.set(CH, big).await.unwrap();
    storage
        .set("/data/X", ReplayMarker::new(7, None))
        .await
        .unwrap();
    assert_eq!(storage.get(CH).await.unwrap(), Some(big));
    assert_eq!(
        storage.get("/data/X").await.unwrap(),
        Some(ReplayMarker::new(7, None))
    );
    let next = ReplayMarker::new(i64::from(u32::MAX) * 3 + 1, at(1_764_316_802_000));
    storage.set(CH, next).await.unwrap();
    assert_eq!(storage.get(CH).await.unwrap(), Some(next));
    // A PushTopic filter's marker is kept under its full name, quotes, spaces and `&`
    // included, apart from its topic's; a filter's start may be `-2`.
    let filter = "/topic/T?Industry='Energy'&ShippingCity='San Francisco'";
    storage
        .set("/topic/T", ReplayMarker::new(5, at(1_764_316_801_000)))
        .await
        .unwrap();
    assert_eq!(storage.get(filter).await.unwrap(), None);
    storage
        .set(filter, ReplayMarker::new(-2, None))
        .await
        .unwrap();
    assert_eq!(
        storage.get(filter).await.unwrap(),
        Some(ReplayMarker::new(-2, None))
    );
    let filtered = ReplayMarker::new(9, at(1_764_316_803_000));
    storage.set(filter, filtered).await.unwrap();
    assert_eq!(storage.get(filter).await.unwrap(), Some(filtered));
    assert_eq!(
        storage.get("/topic/T").await.unwrap(),
        Some(ReplayMarker::new(5, at(1_764_316_801_000)))
    );
}

/// Through a client: markers never move backwards when older events are replayed, and
/// `close` returns only after the last processed event's marker is stored.
async fn through_a_client<S: ReplayStorage + Clone>(storage: S) {
    let emu = Emulator::start().await.unwrap();
    for i in 0..20 {
        emu.publish(CH, json!({ "n": i }));
    }
    let client = builder(&emu, storage.clone()).connect().await.unwrap();
    let mut s = client.subscribe(CH).await.unwrap();
    for _ in 0..20 {
        s.next().await.unwrap().unwrap().ack();
    }
    s.unsubscribe().await.unwrap();
    // Replaying from 2 must not move the stored marker back.
    let mut again = client.subscribe_from(CH, 2).await.unwrap();
    for _ in 3..=20 {
        again.next().await.unwrap().unwrap().ack();
    }
    again.unsubscribe().await.unwrap();
    // No wait before close: close itself must wait for the last write.
    client.close().await.unwrap();
    assert_eq!(storage.get(CH).await.unwrap().unwrap().replay_id, 20);
}

#[tokio::test]
async fn file_storage_meets_the_contract() {
    within("file contract", async {
        let dir = unique_dir();
        round_trip(&FileStorage::open(dir.join("a.json")).unwrap()).await;
        through_a_client(FileStorage::open(dir.join("b.json")).unwrap()).await;
    })
    .await;
}

#[tokio::test]
async fn mapping_storage_meets_the_contract() {
    within("mapping contract", async {
        round_trip(&MappingStorage::new()).await;
        through_a_client(MappingStorage::new()).await;
    })
    .await;
}

#[cfg(any(feature = "postgres", feature = "redis"))]
mod support {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use tokio::net::{TcpListener, TcpStream};

    /// The URL in `var`, or `None` (with a hint) when there is none; in CI a missing server is
    /// a failure.
    pub(crate) fn server(var: &str, example: &str) -> Option<String> {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CI").is_some() => {
                panic!("CI is set but {var} is not: .ci/run starts the server")
            }
            _ => {
                eprintln!(
                    "skipping: set {var}={example} to run these tests (.ci/run starts a server)"
                );
                None
            }
        }
    }

    /// A loopback TCP relay to the server that can be cut (open connections dropped, new ones
    /// refused) and restored; counts refused connections.
    pub(crate) struct Relay {
        pub(crate) port: u16,
        up: Arc<AtomicBool>,
        pub(crate) refused: Arc<AtomicUsize>,
        conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Relay {
        pub(crate) async fn start(target: String) -> Relay {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let up = Arc::new(AtomicBool::new(true));
            let refused = Arc::new(AtomicUsize::new(0));
            let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (u, r, c) = (up.clone(), refused.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !u.load(Ordering::SeqCst) {
                        r.fetch_add(1, Ordering::SeqCst);
                        continue; // dropped: the client sees the connection closed
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    c.lock().unwrap().push(task.abort_handle());
                }
            });
            Relay {
                port,
                up,
                refused,
                conns,
            }
        }

        pub(crate) fn cut(&self) {
            self.up.store(false, Ordering::SeqCst);
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }

        pub(crate) fn restore(&self) {
            self.up.store(true, Ordering::SeqCst);
        }
    }

    /// `url` with its host and port replaced by the relay's.
    pub(crate) async fn relayed(url: &str) -> (Relay, String) {
        let mut u = url::Url::parse(url).expect("the server URL is a URL");
        let target = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
        let relay = Relay::start(target).await;
        u.set_port(Some(relay.port)).unwrap();
        (relay, u.to_string())
    }

    pub(crate) async fn until(what: &str, cond: impl Fn() -> bool) {
        within(what, async {
            while !cond() {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// A key no other test (or earlier run) uses.
    pub(crate) fn key(name: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{name}-{}-{nanos}", std::process::id())
    }
}

/// The cases every database storage runs, each generic over the [`Database`] it talks to;
/// `database_contract!` instantiates them as tests, once per storage.
#[cfg(any(feature = "postgres", feature = "redis"))]
mod database {
    use super::*;
    use sfstream::ErrorKind;
    use std::future::Future;
    use support::{key, relayed, until};

    /// One database storage under test: where its server is and how to connect to it.
    pub(crate) trait Database {
        type Storage: ReplayStorage + Clone + std::fmt::Debug + 'static;
        /// The variable naming the test server, and an example of its value.
        const SERVER: (&'static str, &'static str);
        fn connect(url: &str, key: String)
        -> impl Future<Output = sfstream::Result<Self::Storage>>;
        fn retry_for(storage: Self::Storage, retry_for: Duration) -> Self::Storage;
    }

    async fn connect<D: Database>(url: &str, key: String) -> D::Storage {
        D::connect(url, key).await.unwrap()
    }

    /// Run `case` against the test server of `D`, or skip with a hint when there is none.
    pub(crate) async fn run<D: Database, F: Future<Output = ()>>(
        what: &str,
        case: impl FnOnce(String) -> F,
    ) {
        let (var, example) = D::SERVER;
        let Some(url) = support::server(var, example) else {
            return;
        };
        within(what, case(url)).await;
    }

    pub(crate) async fn contract<D: Database>(url: String) {
        round_trip(&connect::<D>(&url, key("contract")).await).await;
        through_a_client(connect::<D>(&url, key("client")).await).await;
    }

    pub(crate) async fn keys_do_not_share_markers<D: Database>(url: String) {
        let a = connect::<D>(&url, key("a")).await;
        let b = connect::<D>(&url, key("b")).await;
        a.set(CH, ReplayMarker::new(5, None)).await.unwrap();
        assert_eq!(b.get(CH).await.unwrap(), None);
    }

    /// The comparison runs in the server (SQL, a Lua script), not only in the client.
    pub(crate) async fn never_moves_a_marker_backwards<D: Database>(url: String) {
        let s = connect::<D>(&url, key("backwards")).await;
        let newest = ReplayMarker::new(10, at(10_000));
        s.set(CH, newest).await.unwrap();
        // An older date wins over a higher id, and a lower id with the same date loses.
        s.set(CH, ReplayMarker::new(99, at(9_000))).await.unwrap();
        s.set(CH, ReplayMarker::new(9, at(10_000))).await.unwrap();
        s.set(CH, ReplayMarker::new(9, None)).await.unwrap();
        assert_eq!(s.get(CH).await.unwrap(), Some(newest));
        // Decimal comparison of any width: 100 > 99 although "100" < "99" as text.
        let n = connect::<D>(&url, key("width")).await;
        n.set(CH, ReplayMarker::new(99, None)).await.unwrap();
        n.set(CH, ReplayMarker::new(100, None)).await.unwrap();
        n.set(CH, ReplayMarker::new(98, None)).await.unwrap();
        assert_eq!(n.get(CH).await.unwrap().unwrap().replay_id, 100);
        let later = ReplayMarker::new(3, at(11_000));
        s.set(CH, later).await.unwrap();
        assert_eq!(s.get(CH).await.unwrap(), Some(later));
        // A restart point after an expired id (a negative id) replaces any marker, and any
        // event's marker replaces it.
        let restart = ReplayMarker::new(-2, None);
        s.set(CH, restart).await.unwrap();
        assert_eq!(s.get(CH).await.unwrap(), Some(restart));
        let first = ReplayMarker::new(1, at(1_000));
        s.set(CH, first).await.unwrap();
        assert_eq!(s.get(CH).await.unwrap(), Some(first));
    }

    pub(crate) async fn two_writers_on_one_key_end_at_the_newest_marker<D: Database>(url: String) {
        let k = key("writers");
        let a = connect::<D>(&url, k.clone()).await;
        let b = connect::<D>(&url, k).await;
        // Interleaved, in opposite orders: whatever commits last, the newest stays.
        let up = tokio::spawn(async move {
            for id in 1..=200 {
                a.set(CH, ReplayMarker::new(id, None)).await.unwrap();
            }
        });
        let down = {
            let b = b.clone();
            tokio::spawn(async move {
                for id in (1..=200).rev() {
                    b.set(CH, ReplayMarker::new(id, None)).await.unwrap();
                }
            })
        };
        up.await.unwrap();
        down.await.unwrap();
        assert_eq!(b.get(CH).await.unwrap().unwrap().replay_id, 200);
    }

    pub(crate) async fn a_lost_connection_is_retried_with_backoff_until_the_write_lands<
        D: Database,
    >(
        url: String,
    ) {
        let (relay, via) = relayed(&url).await;
        let k = key("retry");
        let s = D::retry_for(connect::<D>(&via, k.clone()).await, Duration::from_secs(15));
        s.set(CH, ReplayMarker::new(1, None)).await.unwrap();
        relay.cut();
        let writer = {
            let s = s.clone();
            tokio::spawn(async move { s.set(CH, ReplayMarker::new(2, None)).await })
        };
        // The write keeps trying (and reconnecting) while the database is unreachable.
        until("two refused reconnects", || {
            relay.refused.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert!(!writer.is_finished());
        relay.restore();
        writer.await.unwrap().unwrap();
        let direct = connect::<D>(&url, k).await;
        assert_eq!(direct.get(CH).await.unwrap().unwrap().replay_id, 2);
    }

    pub(crate) async fn a_write_that_keeps_failing_is_a_replay_error<D: Database>(url: String) {
        let (relay, via) = relayed(&url).await;
        let s = D::retry_for(
            connect::<D>(&via, key("give-up")).await,
            Duration::from_millis(300),
        );
        relay.cut();
        let e = s.set(CH, ReplayMarker::new(1, None)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay);
    }

    pub(crate) async fn the_stream_goes_on_while_unreachable_and_close_stores_the_last_marker<
        D: Database,
    >(
        url: String,
    ) {
        let (relay, via) = relayed(&url).await;
        let k = key("goes-on");
        let storage = D::retry_for(connect::<D>(&via, k.clone()).await, Duration::from_secs(15));
        let emu = Emulator::start().await.unwrap();
        for i in 0..30 {
            emu.publish(CH, json!({ "n": i }));
        }
        let client = builder(&emu, storage).connect().await.unwrap();
        let mut s = client.subscribe(CH).await.unwrap();
        relay.cut();
        // Every event arrives although no marker can be written.
        for id in 1..=30 {
            let event = s.next().await.unwrap().unwrap();
            assert_eq!(event.replay_id(), Some(id));
            event.ack();
        }
        relay.restore();
        client.close().await.unwrap();
        let direct = connect::<D>(&url, k).await;
        assert_eq!(direct.get(CH).await.unwrap().unwrap().replay_id, 30);
    }

    /// A URL with a password that fails to connect: the password shows nowhere.
    pub(crate) async fn a_password_in_the_url_is_not_echoed<D: Database>(url: &str) {
        let e = D::connect(url, "k".into()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay);
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }

    /// One test per case for the storage `$db`, in module `$name`.
    macro_rules! database_contract {
        ($name:ident, $db:ty) => {
            mod $name {
                use super::database::*;

                #[tokio::test]
                async fn storage_meets_the_contract() {
                    run::<$db, _>("contract", contract::<$db>).await;
                }

                #[tokio::test]
                async fn keys_do_not_share_markers() {
                    run::<$db, _>("keys", super::database::keys_do_not_share_markers::<$db>)
                        .await;
                }

                #[tokio::test]
                async fn never_moves_a_marker_backwards_on_the_server() {
                    run::<$db, _>("never backwards", never_moves_a_marker_backwards::<$db>).await;
                }

                #[tokio::test]
                async fn two_writers_on_one_key_end_at_the_newest_marker() {
                    run::<$db, _>(
                        "two writers",
                        super::database::two_writers_on_one_key_end_at_the_newest_marker::<$db>,
                    )
                    .await;
                }

                #[tokio::test]
                async fn a_lost_connection_is_retried_with_backoff_until_the_write_lands() {
                    run::<$db, _>(
                        "retry",
                        super::database::a_lost_connection_is_retried_with_backoff_until_the_write_lands::<$db>,
                    )
                    .await;
                }

                #[tokio::test]
                async fn a_write_that_keeps_failing_is_a_replay_error() {
                    run::<$db, _>(
                        "give up",
                        super::database::a_write_that_keeps_failing_is_a_replay_error::<$db>,
                    )
                    .await;
                }

                #[tokio::test]
                async fn the_stream_goes_on_while_unreachable_and_close_stores_the_last_marker() {
                    run::<$db, _>(
                        "stream goes on",
                        super::database::the_stream_goes_on_while_unreachable_and_close_stores_the_last_marker::<$db>,
                    )
                    .await;
                }
            }
        };
    }
    pub(crate) use database_contract;
}

#[cfg(feature = "postgres")]
mod postgres_db {
    use super::*;
    use sfstream::replay::PostgresStorage;

    pub(crate) struct Postgres;

    impl database::Database for Postgres {
        type Storage = PostgresStorage;
        const SERVER: (&'static str, &'static str) = (
            "SFSTREAM_TEST_POSTGRES_URL",
            "postgresql://user@127.0.0.1:PORT/db",
        );
        async fn connect(url: &str, key: String) -> sfstream::Result<PostgresStorage> {
            PostgresStorage::connect(url, key).await
        }
        fn retry_for(storage: PostgresStorage, retry_for: Duration) -> PostgresStorage {
            storage.retry_for(retry_for)
        }
    }

    #[tokio::test]
    async fn a_postgres_url_with_a_password_is_not_echoed() {
        database::a_password_in_the_url_is_not_echoed::<Postgres>(
            "postgresql://u:hunter2@127.0.0.1:1/db?bogus=1",
        )
        .await;
    }
}

#[cfg(feature = "postgres")]
database::database_contract!(postgres, super::postgres_db::Postgres);

#[cfg(feature = "redis")]
mod redis_db {
    use super::*;
    use sfstream::replay::RedisStorage;

    pub(crate) struct Redis;

    impl database::Database for Redis {
        type Storage = RedisStorage;
        const SERVER: (&'static str, &'static str) =
            ("SFSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:PORT/0");
        async fn connect(url: &str, key: String) -> sfstream::Result<RedisStorage> {
            RedisStorage::connect(url, key).await
        }
        fn retry_for(storage: RedisStorage, retry_for: Duration) -> RedisStorage {
            storage.retry_for(retry_for)
        }
    }

    #[tokio::test]
    async fn a_redis_url_with_a_password_is_not_echoed() {
        database::a_password_in_the_url_is_not_echoed::<Redis>("redis://u:hunter2@127.0.0.1:1/0")
            .await;
    }
}

#[cfg(feature = "redis")]
database::database_contract!(redis, super::redis_db::Redis);
