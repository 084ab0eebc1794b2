//! HTTPS end to end: the client over rustls (ring) to the emulator behind a TLS terminator with
//! a test-only certificate for 127.0.0.1 (see tests/data/TEST-ONLY-KEYS.md).

mod common;

use common::within;
use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::{Client, ErrorKind};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

const CA: &[u8] = include_bytes!("data/test-only-ca.pem");
const CERT: &[u8] = include_bytes!("data/test-only-tls-cert.pem");
const KEY: &[u8] = include_bytes!("data/test-only-tls-key.pem");

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Terminates TLS on an ephemeral port and forwards to the emulator's plain HTTP port.
async fn tls_front(emulator: std::net::SocketAddr) -> u16 {
    let cert = CertificateDer::from_pem_slice(CERT).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return; // a client that refused our certificate
                };
                let Ok(mut plain) = TcpStream::connect(emulator).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn trusting_the_test_ca() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(CA).unwrap())
        .unwrap();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn streams_over_https_with_a_custom_root() {
    within("https", async {
        let emu = Emulator::start().await.unwrap();
        let port = tls_front(emu.local_addr()).await;
        let url = format!("https://127.0.0.1:{port}").parse().unwrap();
        let client = Client::builder(AccessToken::new(emu.issue_token(), url))
            .api_version(emu.api_version())
            .tls_config(trusting_the_test_ca())
            .connect()
            .await
            .unwrap();
        let mut sub = client.subscribe("/event/Order__e").await.unwrap();
        emu.publish("/event/Order__e", serde_json::json!({"over": "tls"}));
        let event = sub.next().await.unwrap().unwrap();
        assert_eq!(event.replay_id(), Some(1));
        client.close().await.unwrap();
        assert_eq!(emu.stats().disconnects, 1);
        assert_eq!(emu.stats().cookie_failures, 0);
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_transport_error() {
    within("untrusted", async {
        let emu = Emulator::start().await.unwrap();
        let port = tls_front(emu.local_addr()).await;
        let url = format!("https://127.0.0.1:{port}").parse().unwrap();
        // The default configuration trusts the public web roots only.
        let e = Client::builder(AccessToken::new(emu.issue_token(), url))
            .api_version(emu.api_version())
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        assert_eq!(emu.stats().handshakes, 0);
    })
    .await;
}
