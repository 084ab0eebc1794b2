//! One RFC 6265 cookie jar per client (BAYEUX_BROWSER, load-balancer cookies), with limits: the
//! server decides what goes in, and a hostile or compromised one must not be able to grow the
//! jar (and the `Cookie` header sent with every request) without bound.

use cookie_store::{Cookie, CookieDomain, CookieStore};
#[cfg(test)]
use http::header::COOKIE;
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue};
use std::sync::Mutex;
use url::Url;

/// Longest `Set-Cookie` value stored, attributes included: RFC 6265 §6.1's minimum a user
/// agent must support. Salesforce's longest are a few hundred bytes.
const MAX_COOKIE_BYTES: usize = 4096;
/// Cookies per domain: RFC 6265 §6.1's minimum. Salesforce sets fewer than ten.
const MAX_COOKIES_PER_DOMAIN: usize = 50;
/// Names and values of all cookies in the jar together, so the `Cookie` header stays bounded.
/// One client talks to one instance host and its parent domains.
const MAX_JAR_BYTES: usize = 64 * 1024;

/// Why a `Set-Cookie` was not stored.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    TooLarge,
    /// `Domain=com`: a single-label domain is a public suffix (or a TLD), and a cookie for it
    /// would go to every host under it.
    PublicSuffix,
    DomainFull,
    JarFull,
    Invalid(String),
}

/// The jar of one client session. `cookie_store` does the RFC 6265 work (domain and path
/// matching, the default-path of Path-less cookies, expiry, loopback hosts); values are stored and
/// sent back exactly as received, never re-encoded.
#[derive(Default)]
pub(crate) struct CookieJar(Mutex<CookieStore>);

impl CookieJar {
    /// The `Cookie` header for a request to `url`, if any cookie applies.
    pub(crate) fn header_for(&self, url: &Url) -> Option<HeaderValue> {
        let store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut header = String::new();
        for (name, value) in store.get_request_values(url) {
            if !header.is_empty() {
                header.push_str("; ");
            }
            header.push_str(name);
            header.push('=');
            header.push_str(value);
        }
        drop(store);
        if header.is_empty() {
            return None;
        }
        HeaderValue::from_str(&header).ok()
    }

    /// Store every `Set-Cookie` of a response from `url`; a later cookie overwrites an earlier one.
    pub(crate) fn store_from(&self, url: &Url, headers: &HeaderMap) {
        let mut values = headers.get_all(SET_COOKIE).iter().peekable();
        if values.peek().is_none() {
            return;
        }
        let mut store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for value in values {
            match value.to_str() {
                Ok(text) => {
                    if let Err(why) = store_one(&mut store, text, url) {
                        tracing::debug!(?why, "ignoring a Set-Cookie the jar refused");
                    }
                }
                Err(_) => tracing::debug!("ignoring a non-ASCII Set-Cookie"),
            }
        }
    }

    #[cfg(test)]
    fn stored_bytes(&self) -> (usize, usize) {
        let store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<_> = store.iter_unexpired().collect();
        (all.len(), all.iter().map(|c| size(c)).sum())
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    #[cfg(test)]
    fn apply(&self, url: &Url, headers: &mut HeaderMap) {
        if let Some(v) = self.header_for(url) {
            headers.insert(COOKIE, v);
        }
    }
}

/// What a cookie adds to the `Cookie` header.
fn size(cookie: &Cookie<'_>) -> usize {
    cookie.name().len() + cookie.value().len() + 2
}

fn store_one(store: &mut CookieStore, text: &str, url: &Url) -> Result<(), Refused> {
    if text.len() > MAX_COOKIE_BYTES {
        return Err(Refused::TooLarge);
    }
    let mut cookie = Cookie::parse(text, url)
        .map_err(|e| Refused::Invalid(e.to_string()))?
        .into_owned();
    if let CookieDomain::Suffix(domain) = &cookie.domain
        && !domain.contains('.')
    {
        // RFC 6265 §5.3 step 5: a public-suffix domain equal to the host means host-only.
        if cookie.domain.host_is_identical(url) {
            cookie.domain =
                CookieDomain::host_only(url).map_err(|e| Refused::Invalid(e.to_string()))?;
        } else {
            return Err(Refused::PublicSuffix);
        }
    }
    // A removal (an expired cookie) is always taken.
    if !cookie.is_expired() {
        let domain = cookie.domain.as_cow().map(|d| d.into_owned());
        let replaces = |c: &Cookie<'_>| {
            c.name() == cookie.name()
                && c.path == cookie.path
                && c.domain.as_cow().map(|d| d.into_owned()) == domain
        };
        let (mut in_domain, mut bytes) = (0, 0);
        for c in store.iter_unexpired().filter(|c| !replaces(c)) {
            bytes += size(c);
            if c.domain.as_cow().map(|d| d.into_owned()) == domain {
                in_domain += 1;
            }
        }
        if in_domain >= MAX_COOKIES_PER_DOMAIN {
            return Err(Refused::DomainFull);
        }
        if bytes + size(&cookie) > MAX_JAR_BYTES {
            return Err(Refused::JarFull);
        }
    }
    store
        .insert(cookie, url)
        .map(drop)
        .map_err(|e| Refused::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SET_COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn sent(jar: &CookieJar, url: &str) -> Vec<String> {
        let mut h = HeaderMap::new();
        jar.apply(&Url::parse(url).unwrap(), &mut h);
        let mut v: Vec<String> = h
            .get(COOKIE)
            .map(|v| v.to_str().unwrap().split("; ").map(str::to_owned).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn salesforce_cookie_shapes_round_trip_byte_exact() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/salesforce-messages.json"))
                .unwrap();
        let shapes: Vec<&str> = vectors["set_cookie_headers_seen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let jar = CookieJar::default();
        let url = Url::parse("https://na1.my.salesforce.com/cometd/62.0").unwrap();
        jar.store_from(&url, &set_cookies(&shapes));
        let got = sent(&jar, "https://na1.my.salesforce.com/cometd/62.0");
        // sfdc-stream expires in 2026-11-28 10:00 GMT in the vectors; compare the names that must
        // always be there and the exact bytes of the odd values.
        assert!(
            got.iter()
                .any(|c| c == "BAYEUX_BROWSER=3b2ej9tvm3hd1ov1hv0w8ikabg4"),
            "{got:?}"
        );
        assert!(got.iter().any(|c| c.starts_with("t=!sYwYY3bRx2qJgKgaLU1rWTxpXRHtpiqoIF9ui9X7Nh+dNBYyyrwn/5TDAYNbR0iJ6UrsTAj39vWCG1vRDrslPR5M8nYGhh1bW9Q34xSfc=")), "{got:?}");
        assert!(
            got.iter().any(|c| c == "sfproxy-id=8a1d2f3e4b5c6d7e8f90"),
            "{got:?}"
        );
        assert!(
            got.iter().any(|c| c == "BrowserId=_0PRe7vYEe-bQ2kd8xQ3_Q"),
            "{got:?}"
        );
        // Path=/cometd/ cookies stay off other paths; the Path-less one defaults to /cometd.
        let other = sent(&jar, "https://na1.my.salesforce.com/services/data");
        assert!(
            !other.iter().any(|c| c.starts_with("BAYEUX_BROWSER")),
            "{other:?}"
        );
        assert!(
            !other.iter().any(|c| c.starts_with("sfproxy-id")),
            "{other:?}"
        );
        assert!(
            other.iter().any(|c| c.starts_with("BrowserId")),
            "{other:?}"
        );
        // Secure cookies never go over plain http to a non-loopback host.
        assert!(sent(&jar, "http://na1.my.salesforce.com/cometd/62.0").is_empty());
    }

    #[test]
    fn special_characters_are_not_re_encoded_and_overwrite_works() {
        let jar = CookieJar::default();
        let url = Url::parse("http://127.0.0.1:8080/cometd/62.0").unwrap();
        jar.store_from(
            &url,
            &set_cookies(&[
                "sfdc-stream=!7rmPK3HS/c1o0+/BN6vXoqTQ==; Path=/",
                "BAYEUX_BROWSER=a1; Path=/cometd/",
            ]),
        );
        assert_eq!(
            sent(&jar, "http://127.0.0.1:8080/cometd/62.0"),
            vec![
                "BAYEUX_BROWSER=a1",
                "sfdc-stream=!7rmPK3HS/c1o0+/BN6vXoqTQ=="
            ]
        );
        jar.store_from(&url, &set_cookies(&["sfdc-stream=!new/value+=; Path=/"]));
        assert_eq!(
            sent(&jar, "http://127.0.0.1:8080/cometd/62.0"),
            vec!["BAYEUX_BROWSER=a1", "sfdc-stream=!new/value+="]
        );
        // Host-only: another loopback port is the same host for cookies (RFC 6265 ignores ports).
        assert_eq!(
            sent(&jar, "http://127.0.0.2:8080/cometd/62.0"),
            Vec::<String>::new()
        );
        jar.clear();
        assert!(sent(&jar, "http://127.0.0.1:8080/cometd/62.0").is_empty());
    }

    #[test]
    fn a_flood_of_cookies_is_capped_per_domain_and_in_total() {
        let jar = CookieJar::default();
        let url = Url::parse("https://na1.my.salesforce.com/cometd/62.0").unwrap();
        let value = "v".repeat(1000);
        for response in 0..100 {
            let cookies: Vec<String> = (0..100)
                .map(|i| format!("c{response}x{i}={value}; Path=/"))
                .collect();
            let refs: Vec<&str> = cookies.iter().map(String::as_str).collect();
            jar.store_from(&url, &set_cookies(&refs));
        }
        let (count, bytes) = jar.stored_bytes();
        assert!(count <= MAX_COOKIES_PER_DOMAIN, "{count} cookies");
        assert!(bytes <= MAX_JAR_BYTES, "{bytes} bytes");
        let header = jar.header_for(&url).unwrap();
        assert!(header.len() <= MAX_JAR_BYTES, "{} bytes", header.len());

        // Parent domains do not multiply the limit past the total.
        let jar = CookieJar::default();
        for domain in [
            "na1.my.salesforce.com",
            "my.salesforce.com",
            "salesforce.com",
        ] {
            let cookies: Vec<String> = (0..60)
                .map(|i| format!("{domain}{i}={value}; Domain={domain}; Path=/"))
                .collect();
            let refs: Vec<&str> = cookies.iter().map(String::as_str).collect();
            jar.store_from(&url, &set_cookies(&refs));
        }
        let (_, bytes) = jar.stored_bytes();
        assert!(bytes <= MAX_JAR_BYTES, "{bytes} bytes");

        // Once full, a known cookie can still be updated (same size) and removed.
        let jar = CookieJar::default();
        let many: Vec<String> = (0..60).map(|i| format!("n{i}=1; Path=/")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        jar.store_from(&url, &set_cookies(&refs));
        jar.store_from(
            &url,
            &set_cookies(&["n0=2; Path=/", "n1=; Max-Age=0; Path=/"]),
        );
        let sent = sent(&jar, "https://na1.my.salesforce.com/cometd/62.0");
        assert!(sent.contains(&"n0=2".to_owned()), "{sent:?}");
        assert!(!sent.iter().any(|c| c.starts_with("n1=")), "{sent:?}");
    }

    #[test]
    fn an_oversized_cookie_is_refused() {
        let jar = CookieJar::default();
        let url = Url::parse("https://na1.my.salesforce.com/cometd/62.0").unwrap();
        let big = format!("big={}; Path=/", "v".repeat(MAX_COOKIE_BYTES));
        jar.store_from(&url, &set_cookies(&[&big, "small=1; Path=/"]));
        assert_eq!(sent(&jar, url.as_str()), vec!["small=1"]);
    }

    #[test]
    fn single_label_public_suffix_domains_are_refused() {
        let jar = CookieJar::default();
        let url = Url::parse("https://na1.my.salesforce.com/cometd/62.0").unwrap();
        jar.store_from(
            &url,
            &set_cookies(&[
                "tld=1; Domain=com; Path=/",
                "dot=1; Domain=.com; Path=/",
                "ok=1; Domain=.salesforce.com; Path=/",
            ]),
        );
        assert_eq!(sent(&jar, url.as_str()), vec!["ok=1"]);
        // Would have gone to every .com host.
        assert!(sent(&jar, "https://attacker.com/x").is_empty());
        // A single-label host naming itself is a host-only cookie (RFC 6265 §5.3 step 5).
        let intranet = Url::parse("https://intranet/cometd").unwrap();
        jar.store_from(&intranet, &set_cookies(&["lb=1; Domain=intranet; Path=/"]));
        assert_eq!(sent(&jar, intranet.as_str()), vec!["lb=1"]);
    }
}
