//! A front for the emulator on an ephemeral loopback port: TLS with the test-only certificate
//! for 127.0.0.1 (see tests/data/TEST-ONLY-KEYS.md) or plain TCP, recording who connected, so
//! that a test can tell a proxy's connections from the client's own.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

pub const CA: &[u8] = include_bytes!("../data/test-only-ca.pem");
const CERT: &[u8] = include_bytes!("../data/test-only-tls-cert.pem");
const KEY: &[u8] = include_bytes!("../data/test-only-tls-key.pem");

pub fn ca_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-only-ca.pem")
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting only the test CA.
pub fn trusting_the_test_ca() -> rustls::ClientConfig {
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

/// The front's port and the peer address of every connection it accepted.
pub struct Front {
    pub port: u16,
    peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl Front {
    pub fn url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }
}

/// Terminates TLS (when `tls`) and forwards to the emulator's plain HTTP port.
pub async fn front(emulator: SocketAddr, tls: bool) -> Front {
    let acceptor = tls.then(|| {
        let cert = CertificateDer::from_pem_slice(CERT).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((socket, peer)) = listener.accept().await {
            seen.lock().unwrap().push(peer.ip());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut plain) = TcpStream::connect(emulator).await else {
                    return;
                };
                match acceptor {
                    Some(acceptor) => {
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return; // a client that refused our certificate
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                    None => {
                        let mut socket = socket;
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut plain).await;
                    }
                }
            });
        }
    });
    Front { port, peers }
}

/// Logs in with `inner` and points the client at `instance` (a front) instead of the emulator's
/// own `http://` instance URL.
pub struct AtInstance<A> {
    pub inner: A,
    pub instance: url::Url,
}

impl<A: sfstream::auth::Authenticator> sfstream::auth::Authenticator for AtInstance<A> {
    fn authenticate(
        &self,
    ) -> futures::future::BoxFuture<'_, sfstream::Result<sfstream::auth::Token>> {
        Box::pin(async {
            let mut token = self.inner.authenticate().await?;
            token.instance_url = self.instance.clone();
            Ok(token)
        })
    }

    fn inherit_http_settings(&self, settings: &sfstream::transport::HttpSettings) {
        self.inner.inherit_http_settings(settings);
    }
}

/// The emulator's password flow, logging in at `front` and streaming from it.
pub fn password_at(
    emu: &sfstream::emulator::Emulator,
    front: &str,
) -> AtInstance<sfstream::auth::PasswordAuthenticator> {
    let url: url::Url = front.parse().unwrap();
    AtInstance {
        inner: sfstream::auth::PasswordAuthenticator::new(
            emu.client_id(),
            emu.client_secret(),
            emu.username(),
            emu.password(),
        )
        .login_url(url.clone()),
        instance: url,
    }
}
