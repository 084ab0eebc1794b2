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
use common::proxy::{
    full_session, https_client, password_of, refusing_proxy, session, tinyproxy,
    without_credentials,
};
use common::within;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::transport::Proxy;
use sfstream::{Client, ErrorKind};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::net::TcpListener;

const PROXIED_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

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
