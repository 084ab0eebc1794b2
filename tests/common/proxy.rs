//! Proxy test helpers shared by tests/proxy.rs and tests/proxy_logging.rs.

use futures::StreamExt;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::transport::Proxy;
use sfstream::{Client, ClientBuilder};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const HINT: &str = "install tinyproxy and start it as .ci/run does (SFSTREAM_TEST_PROXY, \
                    SFSTREAM_TEST_PROXY_AUTH)";

/// A tinyproxy URL from the environment, or `None` (skip) with a hint; a failure in CI.
pub fn tinyproxy(var: &str) -> Option<String> {
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
pub fn password_of(url: &str) -> String {
    let url: url::Url = url.parse().unwrap();
    url.password().unwrap().to_owned()
}

pub fn without_credentials(url: &str) -> String {
    let mut url: url::Url = url.parse().unwrap();
    url.set_username("").unwrap();
    url.set_password(None).unwrap();
    url.to_string()
}

/// Token request, handshake, subscribe, two events in order, disconnect.
pub async fn session(builder: ClientBuilder, emu: &Emulator) {
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
pub async fn full_session(builder: ClientBuilder, emu: &Emulator) {
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

/// A fake proxy answering every request with `status`; returns its URL and the request heads.
pub async fn refusing_proxy(status: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
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
pub fn https_client(proxy: Proxy) -> ClientBuilder {
    let token = AccessToken::new(
        "00Dxx!token",
        "https://acme.my.salesforce.com".parse().unwrap(),
    );
    Client::builder(token)
        .proxy(proxy)
        .connection_timeout(Some(Duration::from_millis(300)))
}
