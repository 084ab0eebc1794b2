//! Which proxy a request takes: explicit settings or the environment, matched by hyper-util's
//! [`Matcher`] (the curl/reqwest rules for `NO_PROXY`: domain suffixes, IPs, CIDR blocks, `*`).

use crate::auth::Secret;
use crate::error::{Error, ErrorKind, Result};
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use std::fmt;
use std::sync::Arc;

/// An HTTP proxy for the CometD requests and the OAuth token requests.
///
/// `https://` endpoints are reached through an HTTP `CONNECT` tunnel (TLS stays end to end);
/// plain `http://` requests (loopback only, such as the emulator) are forwarded. Basic proxy
/// authentication comes from the URL's user info or [`basic_auth`](Proxy::basic_auth); the
/// credentials never appear in `Debug`, errors or logs.
///
/// ```
/// use sfstream::transport::Proxy;
/// let proxy = Proxy::all("http://proxy.corp.example:3128")?
///     .basic_auth("svc-sfstream", "s3cret")
///     .no_proxy("localhost, .internal.example, 10.0.0.0/8");
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// # Ok::<(), sfstream::Error>(())
/// ```
///
/// Or from the environment, as curl and reqwest read it:
///
/// ```
/// let proxy = sfstream::transport::Proxy::from_env();
/// ```
#[derive(Clone)]
pub struct Proxy {
    rules: Rules,
    /// Overrides credentials found in the proxy URLs.
    auth: Option<HeaderValue>,
    matcher: Arc<Matcher>,
}

/// The matcher's inputs. Proxy URLs may carry credentials: never print these strings.
#[derive(Clone, Default)]
struct Rules {
    http: String,
    https: String,
    no: String,
    from_env: bool,
}

/// Where one request goes: the proxy (without credentials) and what to authenticate with.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) proxy: Uri,
    pub(crate) auth: Option<HeaderValue>,
}

impl Route {
    /// Only plain-HTTP proxies: a CONNECT tunnel is opened in the clear to the proxy.
    pub(crate) fn check(&self) -> Result<(), ProxyError> {
        match self.proxy.scheme_str() {
            Some("http") => Ok(()),
            _ => Err(ProxyError {
                proxy: self.proxy.to_string(),
                what: "uses a scheme other than http:// (only HTTP proxies are supported)"
                    .to_owned(),
                status: None,
            }),
        }
    }
}

impl Proxy {
    /// Send every request through the proxy at `url`, `http://[user:password@]host:port`.
    ///
    /// Fails with [`ErrorKind::Client`] for anything else (`https://` and SOCKS proxies are not
    /// supported); the error does not repeat the URL, which may hold a password.
    pub fn all(url: &str) -> Result<Proxy> {
        let rules = Rules {
            http: url.to_owned(),
            https: url.to_owned(),
            ..Rules::default()
        };
        let proxy = Proxy::with_rules(rules);
        let probe = Uri::from_static("https://probe.invalid/");
        match proxy.route(&probe) {
            Some(route) if route.check().is_ok() => Ok(proxy),
            _ => Err(Error::new(
                ErrorKind::Client,
                "invalid proxy URL: expected http://[user:password@]host[:port]",
            )),
        }
    }

    /// The proxies named by the environment, read now: `HTTPS_PROXY`/`https_proxy` for
    /// `https://` endpoints, `HTTP_PROXY`/`http_proxy` for `http://` ones, `ALL_PROXY`/`all_proxy`
    /// for both, and `NO_PROXY`/`no_proxy` for the exceptions (comma-separated domain suffixes,
    /// IP addresses, CIDR blocks, or `*`). Unset variables mean a direct connection. As curl
    /// does, `HTTP_PROXY` is ignored in a CGI environment (`REQUEST_METHOD` set).
    pub fn from_env() -> Proxy {
        Proxy::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Proxy {
        let first = |names: [&str; 2]| names.iter().find_map(|n| get(n)).unwrap_or_default();
        let all = first(["ALL_PROXY", "all_proxy"]);
        let or_all = |s: String| if s.is_empty() { all.clone() } else { s };
        // httpoxy: in CGI, HTTP_PROXY is the client's `Proxy:` request header.
        let http = if get("REQUEST_METHOD").is_some() {
            String::new()
        } else {
            or_all(first(["HTTP_PROXY", "http_proxy"]))
        };
        Proxy::with_rules(Rules {
            http,
            https: or_all(first(["HTTPS_PROXY", "https_proxy"])),
            no: first(["NO_PROXY", "no_proxy"]),
            from_env: true,
        })
    }

    /// Authenticate to the proxy with Basic credentials (overrides any in the URL).
    #[must_use]
    pub fn basic_auth(mut self, username: &str, password: impl Into<Secret>) -> Self {
        // hyper-util builds the (sensitive) Basic header from a proxy URL's user info.
        let password = password.into();
        let mut url = url::Url::parse("http://proxy.invalid/").expect("a valid URL");
        if url.set_username(username).is_ok() && url.set_password(Some(password.expose())).is_ok() {
            let matcher = Matcher::builder().http(url.as_str()).build();
            self.auth = matcher
                .intercept(&Uri::from_static("http://probe.invalid/"))
                .and_then(|i| i.basic_auth().cloned());
        }
        self
    }

    /// Hosts to reach directly, in `NO_PROXY` syntax: comma-separated domain suffixes
    /// (`example.com` also matches `api.example.com`), IP addresses, CIDR blocks
    /// (`10.0.0.0/8`), or `*` for all. Replaces the environment's `NO_PROXY` for
    /// [`from_env`](Proxy::from_env).
    #[must_use]
    pub fn no_proxy(mut self, hosts: &str) -> Self {
        hosts.clone_into(&mut self.rules.no);
        Proxy::with_rules(self.rules).with_auth(self.auth)
    }

    fn with_auth(mut self, auth: Option<HeaderValue>) -> Self {
        self.auth = auth;
        self
    }

    fn with_rules(rules: Rules) -> Proxy {
        let matcher = Matcher::builder()
            .http(rules.http.as_str())
            .https(rules.https.as_str())
            .no(rules.no.as_str())
            .build();
        Proxy {
            rules,
            auth: None,
            matcher: Arc::new(matcher),
        }
    }

    /// The proxy for `dst`, or `None` to connect directly.
    pub(crate) fn route(&self, dst: &Uri) -> Option<Route> {
        let intercept = self.matcher.intercept(dst)?;
        Some(Route {
            proxy: intercept.uri().clone(),
            auth: self
                .auth
                .clone()
                .or_else(|| intercept.basic_auth().cloned()),
        })
    }

    /// A proxy URL without its credentials, for `Debug`.
    fn shown(url: &str) -> Option<String> {
        let matcher = Matcher::builder().http(url).build();
        let intercept = matcher.intercept(&Uri::from_static("http://probe.invalid/"))?;
        Some(intercept.uri().to_string())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("from_env", &self.rules.from_env)
            .field("http", &Proxy::shown(&self.rules.http))
            .field("https", &Proxy::shown(&self.rules.https))
            .field("no_proxy", &self.rules.no)
            .field("basic_auth", &self.auth.is_some())
            .finish()
    }
}

/// A proxy that could not be used, named without its credentials. The cause is in the text:
/// the error is a leaf, so that every chain printed ends here.
#[derive(Debug)]
pub(crate) struct ProxyError {
    proxy: String,
    what: String,
    /// The proxy's HTTP status, when known (407): an error a retry cannot fix.
    pub(crate) status: Option<u16>,
}

impl ProxyError {
    pub(crate) fn new(route: &Route, what: String) -> Self {
        ProxyError {
            proxy: route.proxy.to_string(),
            what,
            status: None,
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proxy {} {}", self.proxy, self.what)
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> Proxy {
        Proxy::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn via(proxy: &Proxy, url: &str) -> Option<String> {
        proxy
            .route(&url.parse().unwrap())
            .map(|r| r.proxy.to_string())
    }

    #[test]
    fn environment_rules_follow_curl() {
        let p = env(&[
            ("https_proxy", "http://user:pw-SECRET@proxy.corp:3128"),
            ("HTTP_PROXY", "plain.corp:8080"),
            (
                "NO_PROXY",
                "internal.example, .svc.local,10.0.0.0/8, 192.168.1.7",
            ),
        ]);
        assert_eq!(
            via(&p, "https://acme.my.salesforce.com/cometd/66.0").as_deref(),
            Some("http://proxy.corp:3128/")
        );
        assert_eq!(
            via(&p, "http://127.0.0.1:8080/x").as_deref(),
            Some("http://plain.corp:8080/")
        );
        for direct in [
            "https://internal.example/",
            "https://api.internal.example/",
            "https://a.svc.local/",
            "https://10.1.2.3/",
            "https://192.168.1.7/",
        ] {
            assert_eq!(via(&p, direct), None, "{direct}");
        }
        assert!(via(&p, "https://notinternal.example/").is_some());
        assert!(via(&p, "https://192.168.1.8/").is_some());
        let route = p.route(&"https://x.example/".parse().unwrap()).unwrap();
        assert!(route.auth.unwrap().is_sensitive());
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("pw-SECRET") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.contains("proxy.corp:3128"), "{shown}");
    }

    #[test]
    fn uppercase_wins_and_all_proxy_fills_in() {
        let p = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("ALL_PROXY", "http://all:3"),
        ]);
        assert_eq!(via(&p, "https://x/").as_deref(), Some("http://upper:1/"));
        assert_eq!(via(&p, "http://x/").as_deref(), Some("http://all:3/"));
        assert_eq!(via(&env(&[]), "https://x/"), None);
        let cgi = env(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://evil:1")]);
        assert_eq!(via(&cgi, "http://x/"), None);
    }

    #[test]
    fn explicit_proxies_take_http_urls_only_and_never_echo_them() {
        let p = Proxy::all("http://u:pw-SECRET@127.0.0.1:3128")
            .unwrap()
            .no_proxy("localhost");
        assert_eq!(
            via(&p, "https://x.example/").as_deref(),
            Some("http://127.0.0.1:3128/")
        );
        assert_eq!(via(&p, "http://localhost:1/"), None);
        // Credentials from the URL survive `no_proxy`; `basic_auth` overrides them.
        let auth = |p: &Proxy| {
            p.route(&"https://x/".parse().unwrap())
                .unwrap()
                .auth
                .unwrap()
        };
        assert_eq!(auth(&p), "Basic dTpwdy1TRUNSRVQ=");
        let p = p.basic_auth("other", "pw2-SECRET");
        assert_eq!(auth(&p), "Basic b3RoZXI6cHcyLVNFQ1JFVA==");
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("u:"),
            "{shown}"
        );
        for bad in [
            "https://u:pw-SECRET@proxy:443",
            "socks5://u:pw-SECRET@proxy:1080",
            "not a url pw-SECRET",
            "",
        ] {
            let e = Proxy::all(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Client);
            assert!(!format!("{e} {e:?}").contains("SECRET"), "{e:?}");
        }
    }
}
