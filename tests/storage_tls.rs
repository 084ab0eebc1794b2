//! `PostgresStorage` and `RedisStorage` over TLS, against throwaway servers this test starts:
//! a PostgreSQL cluster (initdb, `ssl=on`, only `hostssl` connections allowed) and a
//! redis-server with only a `--tls-port`, both serving the test-only certificate for
//! 127.0.0.1 (tests/data/TEST-ONLY-KEYS.md) on an ephemeral loopback port, stopped when the
//! test ends. Without the server binaries the tests skip with a hint (`.ci/run` installs them;
//! with `CI` set they fail instead).

#![cfg(any(feature = "postgres", feature = "redis"))]

mod common;

use common::front::ca_path;
use common::within;
use sfstream::replay::{DatabaseTls, ReplayMarker, ReplayStorage};
use sfstream::{Error, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

const CH: &str = "/event/Order__e";

/// A server process and its data directory, both gone when this is dropped (also when the
/// test fails).
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (it releases its shared memory); redis exits too.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `None` (with a hint) when `what` is missing, unless `CI` is set.
fn missing(what: &str) -> Option<Server> {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {what} is missing: .ci/run installs it");
    }
    eprintln!("skipping: {what} is missing (install it to run these tests; .ci/run does)");
    None
}

fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sfstream-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Copy the test-only server certificate and key into `dir` (the key 0600: PostgreSQL refuses
/// a key others can read).
fn certificate_files(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(data.join("test-only-tls-cert.pem"), &cert).unwrap();
    std::fs::copy(data.join("test-only-tls-key.pem"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// Poll `ready` until it holds or `what` has had 60 s (initdb and startup on a loaded machine).
fn wait_for(what: &str, server: &mut Server, ready: impl Fn(&Server) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(server) {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{what} exited with {status} before it was ready");
        }
        assert!(
            Instant::now() < deadline,
            "{what} was not ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn the_test_ca() -> DatabaseTls {
    DatabaseTls::new().add_root_certificates_pem(ca_path())
}

/// Markers written over TLS read back, and never move backwards.
async fn round_trip(storage: &impl ReplayStorage) {
    let date = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_316_801_123));
    let newest = ReplayMarker::new(i64::from(u32::MAX) * 3, date);
    storage.set(CH, newest).await.unwrap();
    storage.set(CH, ReplayMarker::new(5, date)).await.unwrap();
    assert_eq!(storage.get(CH).await.unwrap(), Some(newest));
}

/// The refusal of a server whose CA is not trusted names the cause and the remedy.
fn assert_untrusted(e: &Error) {
    assert_eq!(e.kind(), ErrorKind::Replay, "{e}");
    let text = e.to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        text.contains("DatabaseTls::add_root_certificates_pem"),
        "{text}"
    );
}

fn key(name: &str) -> String {
    format!("tls-{name}-{}", std::process::id())
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sfstream::replay::PostgresStorage;

    /// Debian's layout, newest version first, or `SFSTREAM_TEST_PG_BIN`.
    fn bin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("SFSTREAM_TEST_PG_BIN") {
            return Some(dir.into());
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|d| d.join("initdb").exists() && d.join("postgres").exists())
            .collect();
        dirs.sort_by_key(|d| {
            let version = d.parent().and_then(|v| v.file_name());
            version.and_then(|v| v.to_str()?.parse::<u32>().ok())
        });
        dirs.pop()
    }

    /// PostgreSQL refuses to run as root: then the cluster belongs to the `postgres` user.
    fn server_user() -> Option<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let line = passwd
            .lines()
            .find(|l| l.starts_with("postgres:"))
            .expect("running as root needs a postgres user to run the server");
        let fields: Vec<&str> = line.split(':').collect();
        Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
    }

    fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
        use std::os::unix::process::CommandExt;
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null())
    }

    fn start() -> Option<Server> {
        let Some(bin) = bin_dir() else {
            return missing("PostgreSQL (initdb and postgres in /usr/lib/postgresql/*/bin)");
        };
        let dir = scratch_dir("pg-tls");
        let (cert, key) = certificate_files(&dir);
        let user = server_user();
        if let Some((uid, gid)) = user {
            for p in [&dir, &cert, &key] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let data = dir.join("data");
        let status = as_server_user(&mut Command::new(bin.join("initdb")), user)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed: {status}");
        // TLS only: a connection without it finds no pg_hba.conf entry.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let port = free_port();
        let child = as_server_user(&mut Command::new(bin.join("postgres")), user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-F", "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .spawn()
            .unwrap();
        let mut server = Server { child, dir, port };
        // The postmaster.pid file's eighth line turns "ready" once connections are accepted.
        let pid_file = data.join("postmaster.pid");
        wait_for("postgres", &mut server, |_| {
            std::fs::read_to_string(&pid_file)
                .is_ok_and(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        });
        Some(server)
    }

    fn url(server: &Server, sslmode: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode={sslmode}",
            server.port
        )
    }

    #[tokio::test]
    async fn postgres_storage_over_tls_verifies_the_server_and_refuses_an_untrusted_ca() {
        let Some(server) = start() else { return };
        within("postgres over TLS", async {
            let storage = PostgresStorage::connect_with_tls(
                &url(&server, "require"),
                key("pg"),
                the_test_ca(),
            )
            .await
            .unwrap();
            round_trip(&storage).await;

            // The server accepts nothing but TLS, so the round trip above went over TLS.
            let e = PostgresStorage::connect(&url(&server, "disable"), key("plain"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Replay);
            assert!(e.to_string().contains("no encryption"), "{e}");

            // The default roots (webpki) do not hold the test CA: refused, whatever sslmode.
            for mode in ["require", "prefer"] {
                let e = PostgresStorage::connect(&url(&server, mode), key("untrusted"))
                    .await
                    .unwrap_err();
                assert_untrusted(&e);
            }
        })
        .await;
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use sfstream::replay::RedisStorage;

    fn start() -> Option<Server> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !found.is_ok_and(|s| s.success()) {
            return missing("redis-server");
        }
        let dir = scratch_dir("redis-tls");
        let (cert, key) = certificate_files(&dir);
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(ca_path())
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server { child, dir, port };
        wait_for("redis-server", &mut server, |s| {
            std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok()
        });
        Some(server)
    }

    #[tokio::test]
    async fn redis_storage_over_tls_verifies_the_server_and_refuses_an_untrusted_ca() {
        let Some(server) = start() else { return };
        let port = server.port;
        within("redis over TLS", async {
            let url = format!("rediss://127.0.0.1:{port}/0");
            let storage = RedisStorage::connect_with_tls(&url, key("redis"), the_test_ca())
                .await
                .unwrap();
            round_trip(&storage).await;

            // The server has no plain port: TLS it is.
            let plain = format!("redis://127.0.0.1:{port}/0");
            let e = RedisStorage::connect(&plain, key("plain"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Replay);

            let e = RedisStorage::connect(&url, key("untrusted"))
                .await
                .unwrap_err();
            assert_untrusted(&e);

            // There is no way to skip verification.
            let e = RedisStorage::connect_with_tls(&format!("{url}#insecure"), "k", the_test_ca())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Replay);
            assert!(e.to_string().contains("#insecure"), "{e}");
        })
        .await;
    }
}
