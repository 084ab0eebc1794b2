//! Which servers to trust: the bundled webpki roots, the platform's store (feature
//! `native-roots`) and extra roots from PEM files, always with the ring provider.

use crate::error::{Error, ErrorKind, Result};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the webpki roots, the platform's roots when the feature
/// `native-roots` is on, and the certificates in `extra_pem` files.
pub(crate) fn client_config(extra_pem: &[PathBuf]) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    #[cfg(feature = "native-roots")]
    roots.add_parsable_certificates(native::roots().iter().cloned());
    for path in extra_pem {
        for cert in read_pem(path)? {
            roots.add(cert).map_err(|e| {
                Error::new(
                    ErrorKind::Client,
                    format!("{} holds a certificate rustls rejects", path.display()),
                )
                .with_source(e)
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::new(
                ErrorKind::Client,
                "cannot set up TLS with the ring provider",
            )
            .with_source(e)
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Every certificate in a PEM file; none is an error (a wrong path or a key file).
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let what = |detail: &str| {
        Error::new(
            ErrorKind::Client,
            format!(
                "cannot read root certificates from {}: {detail}",
                path.display()
            ),
        )
    };
    let bytes = std::fs::read(path).map_err(|e| what("cannot read the file").with_source(e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| what("not PEM").with_source(e))?;
    if certs.is_empty() {
        return Err(what("no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

#[cfg(feature = "native-roots")]
mod native {
    use rustls::pki_types::CertificateDer;
    use std::sync::OnceLock;

    /// The platform's roots, loaded once per process: reading the store takes milliseconds.
    pub(super) fn roots() -> &'static [CertificateDer<'static>] {
        static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
        ROOTS.get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "skipping part of the platform's root store");
            }
            tracing::debug!(
                count = found.certs.len(),
                "loaded the platform's root certificates"
            );
            found.certs
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_must_be_pem_certificates() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        assert!(client_config(&[data.join("test-only-ca.pem")]).is_ok());
        for bad in ["test-only-tls-key.pem", "no-such-file.pem"] {
            let e = client_config(&[data.join(bad)]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Client, "{e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
