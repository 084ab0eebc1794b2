//! Which URLs the client sends credentials to, and how a URL may appear in a message.
//!
//! Three URLs carry credentials: the login URL (a form with passwords or secrets), the instance
//! URL a token reply names, and the CometD endpoint derived from it (the bearer token). Each
//! must be `https`, or plain `http` to a *literal* loopback address (`127.0.0.0/8`, `[::1]`):
//! `localhost` is a name the system resolver (or `/etc/hosts`) may map anywhere, so it gets no
//! exemption. User info (`user:password@`) is never sent: it is stripped where a URL is given to
//! us and rejected where a request would go out with it, and [`shown`] prints URLs without it.

use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use url::{Host, Url};

/// Whether `url` may carry credentials: `https`, or `http` to a literal loopback address; never
/// with user info.
pub(crate) fn check_scheme(url: &Url) -> Result<()> {
    if has_userinfo(url) {
        return Err(Error::new(
            ErrorKind::Client,
            format!(
                "the URL {} carries user info (user:password@), which sfstream never sends; remove it",
                shown(url)
            ),
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_literal_loopback(url) => Ok(()),
        "http" => Err(Error::new(
            ErrorKind::Client,
            format!(
                "plain http is only allowed to a literal loopback address (127.0.0.1, [::1]); use https for {}",
                shown(url)
            ),
        )),
        other => Err(Error::new(
            ErrorKind::Client,
            format!(
                "unsupported URL scheme {} in {}",
                crate::error::sanitize(other),
                shown(url)
            ),
        )),
    }
}

/// A literal loopback IP address as host; no name, not even `localhost`.
pub(crate) fn is_literal_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(_)) | None => false,
    }
}

/// The instance URL of a token reply from `login`: a usable base (a host, no user info), `https`,
/// or `http` to a literal loopback address only when the login URL itself is one (the emulator).
/// An https login that points the client at `http://127.0.0.1:PORT` would otherwise have the
/// bearer token sent in clear text to whatever listens there.
///
/// No domain allowlist (`*.salesforce.com`): instance hosts also live under Hyperforce,
/// government-cloud and regional domains, and Experience Cloud sites under customers' own
/// domains, so a list would break real orgs while TLS already binds the token to the named host.
pub(crate) fn check_instance_url(instance: &Url, login: &Url) -> Result<()> {
    if instance.cannot_be_a_base() || instance.host().is_none() {
        return Err(Error::new(
            ErrorKind::Authentication,
            "the token reply's instance_url has no host",
        ));
    }
    if instance.scheme() == "http" && is_literal_loopback(instance) && !is_literal_loopback(login) {
        return Err(Error::new(
            ErrorKind::Authentication,
            format!(
                "the token reply from {} names the plain-http instance URL {}; plain http is \
                 accepted only when the login URL is on loopback too",
                shown(login),
                shown(instance)
            ),
        ));
    }
    check_scheme(instance).map_err(|e| e.with_kind(ErrorKind::Authentication))
}

/// Whether the URL has a user name or a password.
pub(crate) fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `url` without user name and password.
pub(crate) fn without_userinfo(mut url: Url) -> Url {
    if has_userinfo(&url) {
        // Both fail only for URLs that cannot have user info at all.
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    url
}

/// A URL for `Debug`, `Display`, logs and errors: without user info.
pub(crate) fn shown(url: &Url) -> Shown<'_> {
    Shown(url)
}

/// See [`shown`].
pub(crate) struct Shown<'a>(&'a Url);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if has_userinfo(self.0) {
            f.write_str(without_userinfo(self.0.clone()).as_str())
        } else {
            f.write_str(self.0.as_str())
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn http_only_for_literal_loopback_addresses() {
        for ok in [
            "https://na1.salesforce.com/cometd/62.0",
            "https://localhost:8443/x",
            "http://127.0.0.1:1/cometd/62.0",
            "http://127.8.9.1/x",
            "http://[::1]:8080/x",
        ] {
            assert!(check_scheme(&url(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://na1.salesforce.com/cometd",
            "http://10.0.0.1/x",
            "ftp://127.0.0.1/x",
            // A name, resolved by whatever the resolver or /etc/hosts says.
            "http://localhost:9/x",
            "http://LOCALHOST/x",
            "http://127.0.0.1.nip.io/x",
            "http://[::ffff:10.0.0.1]/x",
        ] {
            let e = check_scheme(&url(bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Client, "{bad}");
        }
    }

    #[test]
    fn user_info_is_rejected_and_never_shown() {
        let with = url("https://me:pw-SECRET@na1.salesforce.com/cometd/62.0");
        let e = check_scheme(&with).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client);
        assert!(!format!("{e} {e:?}").contains("pw-SECRET"), "{e:?}");
        assert!(check_scheme(&url("https://me@na1.salesforce.com/")).is_err());
        let bad = url("http://me:pw-SECRET@10.0.0.1/x");
        let e = check_scheme(&bad).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("pw-SECRET"), "{e:?}");
        assert_eq!(
            shown(&with).to_string(),
            "https://na1.salesforce.com/cometd/62.0"
        );
        assert!(!format!("{:?}", shown(&with)).contains("pw-SECRET"));
        assert!(!has_userinfo(&without_userinfo(with)));
    }

    #[test]
    fn loopback_http_instance_only_after_a_loopback_login() {
        let emulator = url("http://127.0.0.1:4000/services/oauth2/token");
        let real = url("https://login.salesforce.com/services/oauth2/token");
        let local = url("http://127.0.0.1:4001/");
        assert!(check_instance_url(&local, &emulator).is_ok());
        let e = check_instance_url(&local, &real).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(check_instance_url(&url("http://[::1]:80/"), &real).is_err());
        assert!(check_instance_url(&url("https://acme.my.salesforce.com"), &real).is_ok());
        assert!(check_instance_url(&url("https://acme.my.salesforce.com"), &emulator).is_ok());
        assert!(check_instance_url(&url("http://acme.my.salesforce.com"), &real).is_err());
        assert!(check_instance_url(&url("http://localhost:4001/"), &emulator).is_err());
        assert!(check_instance_url(&url("mailto:a@b.c"), &real).is_err());
    }
}
