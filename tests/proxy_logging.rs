//! No proxy credential reaches `Debug`, errors or the log. One test in its own binary: tracing
//! caches which callsites are enabled, so a capturing subscriber beside other tests' threads
//! (which have none) could miss lines ("the capture works" failed that way under load).

mod common;

use common::front::{ca_path, front, password_at};
use common::log::Captured;
use common::proxy::{full_session, https_client, password_of, refusing_proxy};
use common::within;
use sfstream::Client;
use sfstream::emulator::Emulator;
use sfstream::transport::Proxy;

#[tokio::test(flavor = "current_thread")]
async fn no_proxy_credentials_in_debug_errors_or_logs() {
    // Current-thread runtime: the client, its connection task and the emulator log here.
    let (captured, _guard) = Captured::this_thread(tracing::Level::TRACE);
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
    let log = captured.text();
    assert!(
        log.contains("connecting through the proxy"),
        "the capture works: {log}"
    );
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "{secret} in {seen}");
        assert!(!log.contains(secret.as_str()), "{secret} in the log");
    }
}
