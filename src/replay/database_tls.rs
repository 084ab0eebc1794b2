//! Which database servers `PostgresStorage` and `RedisStorage` trust: the same roots as the
//! client's own connections, with the same ring provider.

use crate::error::{Error, ErrorKind, Result};
use crate::transport::tls;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// TLS settings for [`PostgresStorage`](super::PostgresStorage) and
/// [`RedisStorage`](super::RedisStorage): which certificate authorities to trust.
///
/// The default trusts what the client trusts for Salesforce: the bundled webpki roots, and the
/// platform's root store with feature `native-roots`. A database with a certificate from a
/// private CA needs that CA added with
/// [`add_root_certificates_pem`](Self::add_root_certificates_pem); a client certificate or
/// pinned roots need a whole [`rustls_config`](Self::rustls_config). Whether TLS is used at
/// all is the URL's choice: `sslmode` for PostgreSQL, `rediss://` for Redis.
///
/// ```no_run
/// # async fn f() -> sfstream::Result<()> {
/// use sfstream::replay::{DatabaseTls, PostgresStorage};
/// let tls = DatabaseTls::new().add_root_certificates_pem("/etc/ssl/db-ca.pem");
/// let storage = PostgresStorage::connect_with_tls(
///     "postgresql://sfstream@db.internal/app?sslmode=require",
///     "orders-consumer",
///     tls,
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct DatabaseTls {
    extra_roots: Vec<PathBuf>,
    config: Option<rustls::ClientConfig>,
}

impl DatabaseTls {
    /// The default roots (webpki, plus the platform's with feature `native-roots`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the certificates in this PEM file besides the default roots (the database's
    /// private CA, say). The file is read when the storage connects; an unreadable file, or one
    /// without a certificate, is an error then.
    pub fn add_root_certificates_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_roots.push(path.into());
        self
    }

    /// Use this rustls configuration as it is (client certificates, pinned roots). It replaces
    /// the root store, so it cannot be combined with
    /// [`add_root_certificates_pem`](Self::add_root_certificates_pem). Build it with the ring
    /// provider (`rustls::ClientConfig::builder_with_provider`) to keep one crypto backend.
    pub fn rustls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.config = Some(config);
        self
    }

    pub(crate) fn resolve(&self) -> Result<Arc<rustls::ClientConfig>> {
        match (&self.config, self.extra_roots.is_empty()) {
            (Some(_), false) => Err(Error::new(
                ErrorKind::Replay,
                "rustls_config replaces the root store: add the extra root certificates to that \
                 configuration instead of calling add_root_certificates_pem",
            )),
            (Some(config), true) => Ok(Arc::new(config.clone())),
            (None, _) => tls::client_config(&self.extra_roots)
                .map(Arc::new)
                .map_err(|e| e.with_kind(ErrorKind::Replay)),
        }
    }
}

/// What to do about a certificate the root store does not trust.
pub(super) fn tls_hint(e: &dyn std::error::Error) -> &'static str {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("UnknownIssuer") {
            return " (no trusted root signed the server's certificate: add its CA with \
                    DatabaseTls::add_root_certificates_pem)";
        }
        cause = c.source();
    }
    ""
}

impl fmt::Debug for DatabaseTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseTls")
            .field("custom_config", &self.config.is_some())
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn database_roots_must_be_pem_certificates_and_a_whole_config_excludes_extra_roots() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let ca = data.join("test-only-ca.pem");
        assert!(DatabaseTls::new().resolve().is_ok());
        assert!(
            DatabaseTls::new()
                .add_root_certificates_pem(&ca)
                .resolve()
                .is_ok()
        );
        let e = DatabaseTls::new()
            .add_root_certificates_pem(data.join("test-only-tls-key.pem"))
            .resolve()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay);
        assert!(e.to_string().contains("test-only-tls-key.pem"), "{e}");
        let config = DatabaseTls::new().resolve().unwrap();
        let e = DatabaseTls::new()
            .rustls_config(Arc::unwrap_or_clone(config))
            .add_root_certificates_pem(&ca)
            .resolve()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay);
    }
}
