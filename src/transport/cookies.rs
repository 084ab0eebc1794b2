//! One RFC 6265 cookie jar per client (BAYEUX_BROWSER, load-balancer cookies).

use cookie_store::CookieStore;
#[cfg(test)]
use http::header::COOKIE;
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue};
use std::sync::Mutex;
use url::Url;

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
                    if let Err(e) = store.parse(text, url) {
                        tracing::debug!(error = %e, "ignoring a Set-Cookie the jar rejected");
                    }
                }
                Err(_) => tracing::debug!("ignoring a non-ASCII Set-Cookie"),
            }
        }
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
}
