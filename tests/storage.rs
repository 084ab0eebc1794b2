//! The replay storage contract, run against every storage: `FileStorage` and `MappingStorage`
//! always, `PostgresStorage` (feature `postgres`) against the server named by
//! `SFSTREAM_TEST_POSTGRES_URL` and `RedisStorage` (feature `redis`) against
//! `SFSTREAM_TEST_REDIS_URL` (`.ci/run` starts both on loopback).

mod common;

use common::within;
use futures::StreamExt;
use serde_json::json;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::replay::{FileStorage, MappingStorage, ReplayMarker, ReplayOption, ReplayStorage};
use sfstream::{Client, ClientBuilder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

const CH: &str = "/event/Order__e";

fn tempdir() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sfstream-storage-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

/// `get` returns what `set` stored, per channel, byte-exact (ids past 2^32, dates to the ms).
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
        let dir = tempdir();
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

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sfstream::ErrorKind;
    use sfstream::replay::PostgresStorage;
    use support::{key, relayed, until};

    fn server() -> Option<String> {
        support::server(
            "SFSTREAM_TEST_POSTGRES_URL",
            "postgresql://user@127.0.0.1:PORT/db",
        )
    }

    #[tokio::test]
    async fn postgres_storage_meets_the_contract() {
        let Some(url) = server() else { return };
        within("postgres contract", async {
            let storage = PostgresStorage::connect(&url, key("contract"))
                .await
                .unwrap();
            round_trip(&storage).await;
            through_a_client(PostgresStorage::connect(&url, key("client")).await.unwrap()).await;
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_keys_do_not_share_markers() {
        let Some(url) = server() else { return };
        within("keys", async {
            let a = PostgresStorage::connect(&url, key("a")).await.unwrap();
            let b = PostgresStorage::connect(&url, key("b")).await.unwrap();
            a.set(CH, ReplayMarker::new(5, None)).await.unwrap();
            assert_eq!(b.get(CH).await.unwrap(), None);
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_never_moves_a_marker_backwards_in_sql() {
        let Some(url) = server() else { return };
        within("never backwards", async {
            let s = PostgresStorage::connect(&url, key("backwards"))
                .await
                .unwrap();
            let newest = ReplayMarker::new(10, at(10_000));
            s.set(CH, newest).await.unwrap();
            // An older date wins over a higher id, and a lower id with the same date loses.
            s.set(CH, ReplayMarker::new(99, at(9_000))).await.unwrap();
            s.set(CH, ReplayMarker::new(9, at(10_000))).await.unwrap();
            s.set(CH, ReplayMarker::new(9, None)).await.unwrap();
            assert_eq!(s.get(CH).await.unwrap(), Some(newest));
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
        })
        .await;
    }

    #[tokio::test]
    async fn two_postgres_writers_on_one_key_end_at_the_newest_marker() {
        let Some(url) = server() else { return };
        within("two writers", async {
            let k = key("writers");
            let a = PostgresStorage::connect(&url, k.clone()).await.unwrap();
            let b = PostgresStorage::connect(&url, k).await.unwrap();
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
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_postgres_connection_is_retried_with_backoff_until_the_write_lands() {
        let Some(url) = server() else { return };
        within("retry", async {
            let (relay, via) = relayed(&url).await;
            let k = key("retry");
            let s = PostgresStorage::connect(&via, k.clone())
                .await
                .unwrap()
                .retry_for(Duration::from_secs(15));
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
            let direct = PostgresStorage::connect(&url, k).await.unwrap();
            assert_eq!(direct.get(CH).await.unwrap().unwrap().replay_id, 2);
        })
        .await;
    }

    #[tokio::test]
    async fn a_postgres_write_that_keeps_failing_is_a_replay_error() {
        let Some(url) = server() else { return };
        within("give up", async {
            let (relay, via) = relayed(&url).await;
            let s = PostgresStorage::connect(&via, key("give-up"))
                .await
                .unwrap()
                .retry_for(Duration::from_millis(300));
            relay.cut();
            let e = s.set(CH, ReplayMarker::new(1, None)).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Replay);
        })
        .await;
    }

    #[tokio::test]
    async fn the_stream_goes_on_while_postgres_is_unreachable_and_close_stores_the_last_marker() {
        let Some(url) = server() else { return };
        within("stream goes on", async {
            let (relay, via) = relayed(&url).await;
            let k = key("goes-on");
            let storage = PostgresStorage::connect(&via, k.clone())
                .await
                .unwrap()
                .retry_for(Duration::from_secs(15));
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
            let direct = PostgresStorage::connect(&url, k).await.unwrap();
            assert_eq!(direct.get(CH).await.unwrap().unwrap().replay_id, 30);
        })
        .await;
    }

    #[tokio::test]
    async fn a_postgres_url_with_a_password_is_not_echoed() {
        let e = PostgresStorage::connect("postgresql://u:hunter2@127.0.0.1:1/db?bogus=1", "k")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay);
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use sfstream::ErrorKind;
    use sfstream::replay::RedisStorage;
    use support::{key, relayed, until};

    fn server() -> Option<String> {
        support::server("SFSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:PORT/0")
    }

    #[tokio::test]
    async fn redis_storage_meets_the_contract() {
        let Some(url) = server() else { return };
        within("redis contract", async {
            round_trip(&RedisStorage::connect(&url, key("contract")).await.unwrap()).await;
            through_a_client(RedisStorage::connect(&url, key("client")).await.unwrap()).await;
        })
        .await;
    }

    #[tokio::test]
    async fn redis_never_moves_a_marker_backwards_in_its_script() {
        let Some(url) = server() else { return };
        within("never backwards", async {
            let s = RedisStorage::connect(&url, key("backwards")).await.unwrap();
            let newest = ReplayMarker::new(10, at(10_000));
            s.set(CH, newest).await.unwrap();
            s.set(CH, ReplayMarker::new(99, at(9_000))).await.unwrap();
            s.set(CH, ReplayMarker::new(9, at(10_000))).await.unwrap();
            s.set(CH, ReplayMarker::new(9, None)).await.unwrap();
            assert_eq!(s.get(CH).await.unwrap(), Some(newest));
            // Decimal comparison of any width: 100 > 99 although "100" < "99" as text.
            let n = RedisStorage::connect(&url, key("width")).await.unwrap();
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
        })
        .await;
    }

    #[tokio::test]
    async fn two_redis_writers_on_one_key_end_at_the_newest_marker() {
        let Some(url) = server() else { return };
        within("two writers", async {
            let k = key("writers");
            let a = RedisStorage::connect(&url, k.clone()).await.unwrap();
            let b = RedisStorage::connect(&url, k).await.unwrap();
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
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_redis_connection_is_retried_with_backoff_until_the_write_lands() {
        let Some(url) = server() else { return };
        within("retry", async {
            let (relay, via) = relayed(&url).await;
            let k = key("retry");
            let s = RedisStorage::connect(&via, k.clone())
                .await
                .unwrap()
                .retry_for(Duration::from_secs(15));
            s.set(CH, ReplayMarker::new(1, None)).await.unwrap();
            relay.cut();
            let writer = {
                let s = s.clone();
                tokio::spawn(async move { s.set(CH, ReplayMarker::new(2, None)).await })
            };
            until("two refused reconnects", || {
                relay.refused.load(Ordering::SeqCst) >= 2
            })
            .await;
            assert!(!writer.is_finished());
            relay.restore();
            writer.await.unwrap().unwrap();
            let direct = RedisStorage::connect(&url, k).await.unwrap();
            assert_eq!(direct.get(CH).await.unwrap().unwrap().replay_id, 2);
        })
        .await;
    }

    #[tokio::test]
    async fn a_redis_write_that_keeps_failing_is_a_replay_error() {
        let Some(url) = server() else { return };
        within("give up", async {
            let (relay, via) = relayed(&url).await;
            let s = RedisStorage::connect(&via, key("give-up"))
                .await
                .unwrap()
                .retry_for(Duration::from_millis(300));
            relay.cut();
            let e = s.set(CH, ReplayMarker::new(1, None)).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Replay);
        })
        .await;
    }
}
