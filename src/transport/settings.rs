//! The way out to the network shared by the CometD requests and the OAuth token requests.

use super::proxy::Proxy;
use super::tls;
use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// TLS and proxy settings. [`ClientBuilder`](crate::ClientBuilder) hands its own to the
/// authenticator ([`Authenticator::inherit_http_settings`](crate::auth::Authenticator::inherit_http_settings)),
/// so that one setting on the builder reaches both the CometD endpoint and the token endpoint.
///
/// ```
/// # fn f(auth: &dyn sfstream::auth::Authenticator) {
/// let settings = sfstream::transport::HttpSettings::default();
/// assert!(settings.proxy().is_none() && settings.tls_config().is_none());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct HttpSettings {
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) proxy: Option<Proxy>,
}

impl HttpSettings {
    /// The TLS configuration, when one other than the default (webpki roots, plus the
    /// platform's with feature `native-roots`) is set.
    pub fn tls_config(&self) -> Option<&rustls::ClientConfig> {
        self.tls.as_deref()
    }

    /// The proxy, if any.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// `self`, with each setting it lacks taken from `fallback`.
    pub(crate) fn or(&self, fallback: &HttpSettings) -> HttpSettings {
        HttpSettings {
            tls: self.tls.clone().or_else(|| fallback.tls.clone()),
            proxy: self.proxy.clone().or_else(|| fallback.proxy.clone()),
        }
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("custom_tls", &self.tls.is_some())
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// What a builder was told about TLS: a whole configuration, or roots to add to the default.
#[derive(Default)]
pub(crate) struct TlsOptions {
    pub(crate) config: Option<rustls::ClientConfig>,
    pub(crate) extra_roots: Vec<PathBuf>,
}

impl TlsOptions {
    /// The configuration to use, `None` for the default.
    pub(crate) fn resolve(self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        match (self.config, self.extra_roots.is_empty()) {
            (Some(_), false) => Err(Error::new(
                ErrorKind::Client,
                "tls_config replaces the root store: add the extra root certificates to that \
                 configuration instead of calling add_root_certificates_pem",
            )),
            (Some(config), true) => Ok(Some(Arc::new(config))),
            (None, true) => Ok(None),
            (None, false) => Ok(Some(Arc::new(tls::client_config(&self.extra_roots)?))),
        }
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("custom_tls", &self.config.is_some())
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}
