//! Proxies: full sessions through a real proxy server (tinyproxy, started by `.ci/run`), and the
//! errors of a proxy that refuses, against small fakes.
//!
//! `.ci/run` sets `SFSTREAM_TEST_PROXY` (a tinyproxy without authentication) and
//! `SFSTREAM_TEST_PROXY_AUTH` (one with Basic auth, credentials in the URL). Both make their
//! outgoing connections from 127.0.0.2, so a test can tell proxied connections from direct ones.
//! Without the variables the tinyproxy tests print a hint and pass, unless `CI` is set or
//! `SFSTREAM_REQUIRE_INTEROP=1`, where they fail.

mod common;

use common::front::{ca_path, front, password_at};
use common::within;
use futures::StreamExt;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::transport::Proxy;
use sfstream::{Client, ClientBuilder, ErrorKind};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PROXIED_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const HINT: &str = "install tinyproxy and start it as .ci/run does (SFSTREAM_TEST_PROXY, \
                    SFSTREAM_TEST_PROXY_AUTH)";

/// A tinyproxy URL from the environment, or `None` (skip) with a hint; a failure in CI.
fn tinyproxy(var: &str) -> Option<String> {
    if let Some(url) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Some(url);
    }
    let required = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
        || std::env::var("SFSTREAM_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    assert!(!required, "{var} is not set in CI: {HINT}");
    eprintln!("proxy test skipped: {var} is not set; {HINT}");
    None
}

/// The credentials of the authenticating proxy's URL, for the leak checks.
fn password_of(url: &str) -> String {
    let url: url::Url = url.parse().unwrap();
    url.password().unwrap().to_owned()
}

fn without_credentials(url: &str) -> String {
    let mut url: url::Url = url.parse().unwrap();
    url.set_username("").unwrap();
    url.set_password(None).unwrap();
    url.to_string()
}

/// Token request, handshake, subscribe, two events in order, disconnect.
async fn session(builder: ClientBuilder, emu: &Emulator) {
    let client = builder
        .api_version(emu.api_version())
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe("/event/Order__e").await.unwrap();
    for n in 1..=2 {
        emu.publish("/event/Order__e", serde_json::json!({ "n": n }));
        let event = sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(n));
    }
    client.close().await.unwrap();
}

/// [`session`], and each step exactly once.
async fn full_session(builder: ClientBuilder, emu: &Emulator) {
    session(builder, emu).await;
    let stats = emu.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.handshakes,
            stats.subscribes,
            stats.disconnects
        ),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_full_session_over_tls_through_an_authenticating_proxy() {
    let Some(proxy) = tinyproxy("SFSTREAM_TEST_PROXY_AUTH") else {
        return;
    };
    within("tls through proxy", async {
        let emu = Emulator::start().await.unwrap();
        let front = front(emu.local_addr(), true).await;
        // Proxy and roots on the builder only: both reach the token request too.
        let builder = Client::builder(password_at(&emu, &front.url(true)))
            .proxy(Proxy::all(&proxy).unwrap())
            .add_root_certificates_pem(ca_path());
        full_session(builder, &emu).await;
        let peers = front.peers();
        assert!(!peers.is_empty());
        assert!(peers.iter().all(|p| *p == PROXIED_FROM), "{peers:?}");
    })
    .await;
}

#[tokio::test]
async fn a_full_session_over_plain_http_is_forwarded_with_credentials() {
    let Some(proxy) = tinyproxy("SFSTREAM_TEST_PROXY_AUTH") else {
        return;
    };
    within("http through proxy", async {
        // tinyproxy forwards only one of several Set-Cookie headers (over CONNECT it sees none):
        // this emulator does not insist on its cookies.
        let emu = Emulator::builder()
            .require_cookies(false)
            .start()
            .await
            .unwrap();
        let front = front(emu.local_addr(), false).await;
        let credentials = url::Url::parse(&proxy).unwrap();
        let proxy = Proxy::all(&without_credentials(&proxy))
            .unwrap()
            .basic_auth(credentials.username(), credentials.password().unwrap());
        let builder = Client::builder(password_at(&emu, &front.url(false))).proxy(proxy);
        // Without its cookies the emulator may ask for a new handshake, as Salesforce would.
        session(builder, &emu).await;
        assert_eq!(emu.stats().token_requests, 1);
        let peers = front.peers();
        assert!(!peers.is_empty());
        assert!(peers.iter().all(|p| *p == PROXIED_FROM), "{peers:?}");
    })
    .await;
}

#[tokio::test]
async fn the_authenticators_own_proxy_carries_the_token_request() {
    let (Some(open), Some(_)) = (
        tinyproxy("SFSTREAM_TEST_PROXY"),
        tinyproxy("SFSTREAM_TEST_PROXY_AUTH"),
    ) else {
        return;
    };
    within("authenticator proxy", async {
        let emu = Emulator::start().await.unwrap();
        let front = front(emu.local_addr(), true).await;
        let mut auth = password_at(&emu, &front.url(true));
        auth.inner = auth.inner.proxy(Proxy::all(&open).unwrap());
        // The builder's proxy would refuse every connection: only the token request may pass,
        // through the authenticator's own proxy.
        let e = Client::builder(auth)
            .proxy(Proxy::all("http://127.0.0.1:1").unwrap())
            .add_root_certificates_pem(ca_path())
            .connection_timeout(Some(Duration::from_millis(300)))
            .api_version(emu.api_version())
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert!(e.to_string().contains("proxy http://127.0.0.1:1/"), "{e}");
        assert_eq!(emu.stats().token_requests, 1);
        assert_eq!(emu.stats().handshakes, 0);
        assert_eq!(front.peers(), vec![PROXIED_FROM]);
    })
    .await;
}

#[tokio::test]
async fn tinyproxy_without_or_with_wrong_credentials_is_a_clear_error() {
    let Some(proxy) = tinyproxy("SFSTREAM_TEST_PROXY_AUTH") else {
        return;
    };
    within("407", async {
        let emu = Emulator::start().await.unwrap();
        let front = front(emu.local_addr(), true).await;
        let secret = password_of(&proxy);
        let bare = without_credentials(&proxy);
        for (proxy, expect) in [
            (
                Proxy::all(&bare).unwrap(),
                "requires authentication for a tunnel",
            ),
            // tinyproxy answers wrong credentials with 401, not 407.
            (
                Proxy::all(&bare)
                    .unwrap()
                    .basic_auth("sfstream", "wrong-SECRET"),
                "check the proxy credentials",
            ),
        ] {
            let e = Client::builder(password_at(&emu, &front.url(true)))
                .proxy(proxy)
                .add_root_certificates_pem(ca_path())
                .connection_timeout(Some(Duration::from_millis(300)))
                .connect()
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
            let text = format!("{e} {e:?}");
            assert!(text.contains(expect), "{text}");
            if expect.starts_with("requires") {
                assert_eq!(e.status(), Some(407), "{text}");
            }
            assert!(text.contains(&format!("proxy {bare}")), "{text}");
            assert!(
                !text.contains("wrong-SECRET") && !text.contains(&secret),
                "{text}"
            );
        }
        assert_eq!(emu.stats().token_requests, 0);
        assert!(front.peers().is_empty());
    })
    .await;
}

/// A fake proxy answering every request with `status`; returns its URL and the request heads.
async fn refusing_proxy(status: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, heads)
}

/// A client whose `connect()` gives up quickly on errors that may pass (refused tunnels and
/// unreachable proxies are retried until `connection_timeout`).
fn https_client(proxy: Proxy) -> ClientBuilder {
    let token = AccessToken::new(
        "00Dxx!token",
        "https://acme.my.salesforce.com".parse().unwrap(),
    );
    Client::builder(token)
        .proxy(proxy)
        .connection_timeout(Some(Duration::from_millis(300)))
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_a_transport_error_naming_it() {
    within("403", async {
        let (url, heads) = refusing_proxy("403 Forbidden").await;
        let proxy = Proxy::all(&url).unwrap().basic_auth("svc", "pw-SECRET-403");
        let e = https_client(proxy).connect().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        let text = format!("{e} {e:?}");
        assert!(
            text.contains(&format!(
                "proxy {url}/ refused the tunnel to acme.my.salesforce.com:443"
            )),
            "{text}"
        );
        assert!(
            !text.contains("pw-SECRET-403") && !text.contains("00Dxx!token"),
            "{text}"
        );
        let heads = heads.lock().unwrap().clone();
        assert!(
            heads[0].starts_with("CONNECT acme.my.salesforce.com:443 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        // The credentials went to the proxy, and only there.
        assert!(heads[0].contains("Proxy-Authorization: Basic"), "{heads:?}");
    })
    .await;
}

#[tokio::test]
async fn a_fake_407_without_credentials_says_how_to_set_them() {
    within("fake 407", async {
        let (url, _) =
            refusing_proxy("407 Proxy Authentication Required\r\nProxy-Authenticate: Basic").await;
        // Needs a person, not a retry: fails at once, however long connection_timeout is.
        let e = https_client(Proxy::all(&url).unwrap())
            .connection_timeout(Some(Duration::from_secs(3600)))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert_eq!(e.status(), Some(407), "{e}");
        assert!(e.to_string().contains("Proxy::basic_auth"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_proxy_fails_fast_naming_it_without_credentials() {
    within("refused", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let proxy = Proxy::all(&format!("http://svc:pw-SECRET-refused@127.0.0.1:{port}")).unwrap();
        assert!(!format!("{proxy:?}").contains("pw-SECRET"));
        for builder in [
            https_client(proxy.clone()),
            // Plain http to loopback is forwarded: the same error from the forwarding path.
            Client::builder(AccessToken::new("t", "http://127.0.0.1:9".parse().unwrap()))
                .proxy(proxy.clone())
                .connection_timeout(Some(Duration::from_millis(300))),
        ] {
            let e = builder.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
            let text = format!("{e} {e:?}");
            assert!(
                text.contains(&format!("proxy http://127.0.0.1:{port}/ is unreachable")),
                "{text}"
            );
            assert!(
                !text.contains("pw-SECRET") && !text.contains("svc:"),
                "{text}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn no_proxy_rules_bypass_the_proxy() {
    within("no_proxy", async {
        let emu = Emulator::start().await.unwrap();
        // The proxy refuses everything: the session only works if 127.0.0.1 bypasses it.
        let (url, heads) = refusing_proxy("403 Forbidden").await;
        let builder = emu.client_builder().proxy(
            Proxy::all(&url)
                .unwrap()
                .no_proxy("10.0.0.0/8, 127.0.0.0/8"),
        );
        let client = builder.connect().await.unwrap();
        client.close().await.unwrap();
        assert!(heads.lock().unwrap().is_empty());
    })
    .await;
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_proxy_credentials_in_debug_errors_or_logs() {
    // Current-thread runtime: the client, its connection task and the emulator log here.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let real = std::env::var("SFSTREAM_TEST_PROXY_AUTH").ok();
    let mut secrets = vec!["pw-url-SECRET".to_owned(), "pw-basic-SECRET".to_owned()];
    // The Basic header's value gives the credentials away as well as the plain password.
    // base64 of svc:pw-url-SECRET and svc:pw-basic-SECRET
    secrets.push("c3ZjOnB3LXVybC1TRUNSRVQ=".to_owned());
    secrets.push("c3ZjOnB3LWJhc2ljLVNFQ1JFVA==".to_owned());
    let mut seen = String::new();
    within("proxy secrets", async {
        let (url, _) = refusing_proxy("403 Forbidden").await;
        let in_url = url.replace("http://", "http://svc:pw-url-SECRET@");
        for proxy in [
            Proxy::all(&in_url).unwrap(),
            Proxy::all(&url)
                .unwrap()
                .basic_auth("svc", "pw-basic-SECRET"),
        ] {
            seen += &format!("{proxy:?}");
            let builder = https_client(proxy.clone());
            seen += &format!("{builder:?}");
            let transport = sfstream::transport::HttpTransport::builder()
                .proxy(proxy.clone())
                .build()
                .unwrap();
            seen += &format!("{transport:?}");
            let auth = sfstream::auth::PasswordAuthenticator::new("id", "s", "u", "p").proxy(proxy);
            seen += &format!("{auth:?}");
            let e = builder.connect().await.unwrap_err();
            seen += &format!("{e} {e:?}");
        }
        if let Some(real) = real {
            secrets.push(password_of(&real));
            let emu = Emulator::start().await.unwrap();
            let front = front(emu.local_addr(), true).await;
            let builder = Client::builder(password_at(&emu, &front.url(true)))
                .proxy(Proxy::all(&real).unwrap())
                .add_root_certificates_pem(ca_path());
            seen += &format!("{builder:?}");
            full_session(builder, &emu).await;
        }
    })
    .await;
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("connecting through the proxy"),
        "the capture works: {log}"
    );
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "{secret} in {seen}");
        assert!(!log.contains(secret.as_str()), "{secret} in the log");
    }
}
