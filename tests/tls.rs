//! HTTPS end to end: the client over rustls (ring) to the emulator behind a TLS terminator with
//! a test-only certificate for 127.0.0.1 (see tests/data/TEST-ONLY-KEYS.md).

mod common;

use common::front::{ca_path, front, password_at, trusting_the_test_ca};
use common::proxy::session;
use common::within;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::{Client, ClientBuilder, Error, ErrorKind};

/// The emulator behind a TLS terminator with the test certificate, and that front's https URL.
async fn emulator_behind_tls() -> (Emulator, String) {
    let emu = Emulator::start().await.unwrap();
    let url = front(emu.local_addr(), true).await.url(true);
    (emu, url)
}

/// Subscribes, receives events in order over TLS and disconnects.
async fn events_over_tls(builder: ClientBuilder, emu: &Emulator) {
    session(builder, emu).await;
    assert_eq!(emu.stats().disconnects, 1);
    assert_eq!(emu.stats().cookie_failures, 0);
}

/// `connect()` fails, and the error names the certificate.
async fn refused_certificate(builder: ClientBuilder, emu: &Emulator) -> Error {
    let e = builder
        .api_version(emu.api_version())
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    e
}

#[tokio::test]
async fn streams_over_https_with_a_custom_root() {
    within("https", async {
        let (emu, front) = emulator_behind_tls().await;
        let url = front.parse().unwrap();
        let builder = Client::builder(AccessToken::new(emu.issue_token(), url))
            .tls_config(trusting_the_test_ca());
        events_over_tls(builder, &emu).await;
    })
    .await;
}

#[tokio::test]
async fn the_builders_tls_config_reaches_the_token_request() {
    within("tls config for login", async {
        let (emu, front) = emulator_behind_tls().await;
        // Set on the builder only: before, the token request trusted the webpki roots alone
        // and failed on the test certificate.
        let builder = Client::builder(password_at(&emu, &front)).tls_config(trusting_the_test_ca());
        events_over_tls(builder, &emu).await;
        assert_eq!(emu.stats().token_requests, 1);
    })
    .await;
}

#[tokio::test]
async fn extra_roots_from_a_pem_file_serve_login_and_streaming() {
    within("pem roots", async {
        let (emu, front) = emulator_behind_tls().await;
        let builder =
            Client::builder(password_at(&emu, &front)).add_root_certificates_pem(ca_path());
        events_over_tls(builder, &emu).await;
        assert_eq!(emu.stats().token_requests, 1);
    })
    .await;
}

#[tokio::test]
async fn the_authenticators_own_tls_config_wins_over_the_builders() {
    within("own tls wins", async {
        let (emu, front) = emulator_behind_tls().await;
        let mut auth = password_at(&emu, &front);
        // The authenticator trusts the public roots only: its login must fail even though the
        // builder trusts the test CA.
        let public_only = rustls::ClientConfig::builder_with_provider(common::front::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
        auth.inner = auth.inner.tls_config(public_only);
        let builder = Client::builder(auth).add_root_certificates_pem(ca_path());
        let e = refused_certificate(builder, &emu).await;
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert_eq!(emu.stats().token_requests, 0);
    })
    .await;
}

#[tokio::test]
async fn root_certificate_files_must_hold_certificates() {
    let key = ca_path().with_file_name("test-only-tls-key.pem");
    let e = Client::builder(AccessToken::new("t", "https://x.invalid".parse().unwrap()))
        .add_root_certificates_pem(&key)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Client, "{e}");
    assert!(e.to_string().contains("test-only-tls-key.pem"), "{e}");
    let e = Client::builder(AccessToken::new("t", "https://x.invalid".parse().unwrap()))
        .tls_config(trusting_the_test_ca())
        .add_root_certificates_pem(ca_path())
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Client, "{e}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_transport_error() {
    within("untrusted", async {
        let (emu, front) = emulator_behind_tls().await;
        let url = front.parse().unwrap();
        // The default configuration trusts the public web roots (and the platform's) only.
        let builder = Client::builder(AccessToken::new(emu.issue_token(), url));
        let e = refused_certificate(builder, &emu).await;
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert_eq!(emu.stats().handshakes, 0);
    })
    .await;
}

/// A refused certificate needs a person (a trust setting or a server fix): `connect()` fails
/// with it at once instead of retrying it for `connection_timeout` like a network failure.
/// Without the classification both connects below would retry for an hour and time out.
#[tokio::test]
async fn an_untrusted_certificate_fails_connect_at_once_not_after_connection_timeout() {
    within("untrusted, no retries", async {
        let (emu, front) = emulator_behind_tls().await;
        let an_hour = Some(std::time::Duration::from_secs(3600));
        // The handshake is the first request.
        let url = front.parse().unwrap();
        let builder = Client::builder(AccessToken::new(emu.issue_token(), url));
        let e = refused_certificate(builder.connection_timeout(an_hour), &emu).await;
        assert!(!e.is_transient(), "{e}");
        // The token request is the first request.
        let builder = Client::builder(password_at(&emu, &front));
        let e = refused_certificate(builder.connection_timeout(an_hour), &emu).await;
        assert!(!e.is_transient(), "{e}");
        assert_eq!(emu.stats().handshakes, 0);
    })
    .await;
}
