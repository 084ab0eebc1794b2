use crate::error::{Error, ErrorKind, Result};
use crate::url_policy::{shown, without_userinfo};
use std::fmt;
use std::str::FromStr;
use url::Url;

/// Where to log in: the OAuth server whose token endpoint is `<login url>/services/oauth2/token`.
///
/// `Production` (`https://login.salesforce.com`) and `Sandbox` (`https://test.salesforce.com`)
/// serve every org of their kind; `MyDomain` is your org's own login URL, e.g.
/// `https://acme.my.salesforce.com` (required by the client credentials flow, and accepted by
/// every other flow).
///
/// ```
/// use sfstream::auth::LoginUrl;
/// let url: LoginUrl = "https://acme.my.salesforce.com".parse()?;
/// assert_eq!(url.token_url().as_str(), "https://acme.my.salesforce.com/services/oauth2/token");
/// // The well-known hosts are recognised.
/// assert_eq!("https://test.salesforce.com/".parse::<LoginUrl>()?, LoginUrl::Sandbox);
/// assert_eq!(LoginUrl::default().to_string(), "https://login.salesforce.com");
/// # Ok::<(), sfstream::Error>(())
/// ```
///
/// User info in the URL (`user:password@`) is never sent and never shown: [`url`](Self::url),
/// [`token_url`](Self::token_url), `Display` and `Debug` drop it, also for a `MyDomain` built
/// directly.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LoginUrl {
    /// `https://login.salesforce.com`, for production and Developer Edition orgs.
    #[default]
    Production,
    /// `https://test.salesforce.com`, for sandboxes.
    Sandbox,
    /// Your org's My Domain login URL (or an Experience Cloud site URL).
    MyDomain(Url),
}

impl LoginUrl {
    /// `https://login.salesforce.com`.
    pub const PRODUCTION_URL: &'static str = "https://login.salesforce.com";
    /// `https://test.salesforce.com`.
    pub const SANDBOX_URL: &'static str = "https://test.salesforce.com";

    /// [`Sandbox`](LoginUrl::Sandbox) if `sandbox`, else [`Production`](LoginUrl::Production),
    /// like aiosfstream's `sandbox=` argument.
    ///
    /// ```
    /// assert_eq!(sfstream::auth::LoginUrl::for_sandbox(true), sfstream::auth::LoginUrl::Sandbox);
    /// ```
    pub fn for_sandbox(sandbox: bool) -> Self {
        if sandbox {
            LoginUrl::Sandbox
        } else {
            LoginUrl::Production
        }
    }

    /// Parse a login URL; the production and sandbox hosts become their variants.
    ///
    /// ```
    /// let url = sfstream::auth::LoginUrl::parse("https://acme.my.salesforce.com")?;
    /// assert!(url.is_my_domain());
    /// # Ok::<(), sfstream::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        // The input is not repeated in the errors: it may carry a password (`user:pw@host`
        // without a scheme parses as a URL with no host whose path holds the password).
        let url = Url::parse(s.trim()).map_err(|e| {
            Error::new(
                ErrorKind::Client,
                format!(
                    "the login URL is not a URL ({e}); expected e.g. https://acme.my.salesforce.com"
                ),
            )
        })?;
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(Error::new(
                ErrorKind::Client,
                "the login URL has no host; expected e.g. https://acme.my.salesforce.com",
            ));
        }
        Ok(LoginUrl::from(url))
    }

    /// The login URL as a [`Url`], without user info.
    pub fn url(&self) -> Url {
        match self {
            LoginUrl::MyDomain(url) => without_userinfo(url.clone()),
            LoginUrl::Production => constant(Self::PRODUCTION_URL),
            LoginUrl::Sandbox => constant(Self::SANDBOX_URL),
        }
    }

    /// `<login url>/services/oauth2/token`.
    pub fn token_url(&self) -> Url {
        let base = self.to_string();
        Url::parse(&format!("{base}/services/oauth2/token")).unwrap_or_else(|_| self.url())
    }

    /// Whether this is an org's own URL rather than the shared production or sandbox login.
    pub fn is_my_domain(&self) -> bool {
        matches!(self, LoginUrl::MyDomain(_))
    }
}

fn constant(url: &str) -> Url {
    Url::parse(url).unwrap_or_else(|_| unreachable!("{url} is a valid URL"))
}

/// Recognises the production and sandbox hosts. User info in the URL (`user:pass@`) is dropped:
/// it would never be sent, and must not show up in `Debug` output.
impl From<Url> for LoginUrl {
    fn from(url: Url) -> Self {
        let url = without_userinfo(url);
        let bare = url.scheme() == "https"
            && url.port().is_none()
            && url.path().trim_end_matches('/').is_empty()
            && url.query().is_none();
        match url.host_str() {
            Some(h) if bare && h.eq_ignore_ascii_case("login.salesforce.com") => {
                LoginUrl::Production
            }
            Some(h) if bare && h.eq_ignore_ascii_case("test.salesforce.com") => LoginUrl::Sandbox,
            _ => LoginUrl::MyDomain(url),
        }
    }
}

impl FromStr for LoginUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        LoginUrl::parse(s)
    }
}

/// The URL without a trailing slash, e.g. `https://login.salesforce.com`: the form Salesforce
/// expects as the `aud` of a JWT bearer assertion.
impl fmt::Display for LoginUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginUrl::Production => f.write_str(Self::PRODUCTION_URL),
            LoginUrl::Sandbox => f.write_str(Self::SANDBOX_URL),
            LoginUrl::MyDomain(url) => f.write_str(shown(url).to_string().trim_end_matches('/')),
        }
    }
}

/// `Production`, `Sandbox` or `MyDomain("<url without user info>")`.
impl fmt::Debug for LoginUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginUrl::Production => f.write_str("Production"),
            LoginUrl::Sandbox => f.write_str("Sandbox"),
            LoginUrl::MyDomain(url) => f.debug_tuple("MyDomain").field(&shown(url)).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_and_my_domain() {
        assert_eq!(
            LoginUrl::parse("https://login.salesforce.com").unwrap(),
            LoginUrl::Production
        );
        assert_eq!(
            LoginUrl::parse("https://TEST.salesforce.com/").unwrap(),
            LoginUrl::Sandbox
        );
        let my = LoginUrl::parse("https://acme--uat.sandbox.my.salesforce.com/").unwrap();
        assert!(my.is_my_domain());
        assert_eq!(
            my.to_string(),
            "https://acme--uat.sandbox.my.salesforce.com"
        );
        assert_eq!(
            my.token_url().as_str(),
            "https://acme--uat.sandbox.my.salesforce.com/services/oauth2/token"
        );
        let site = LoginUrl::parse("https://acme.my.site.com/customers").unwrap();
        assert_eq!(
            site.token_url().as_str(),
            "https://acme.my.site.com/customers/services/oauth2/token"
        );
        assert_eq!(
            LoginUrl::Production.token_url().as_str(),
            "https://login.salesforce.com/services/oauth2/token"
        );
        // Plain http or a port is not the shared login host.
        assert!(
            LoginUrl::parse("http://login.salesforce.com")
                .unwrap()
                .is_my_domain()
        );
        let with_user = LoginUrl::parse("https://me:pw-secret@acme.my.salesforce.com").unwrap();
        assert!(!format!("{with_user:?} {with_user}").contains("pw-secret"));
        for bad in ["", "login.salesforce.com", "mailto:x@example.com"] {
            assert_eq!(
                LoginUrl::parse(bad).unwrap_err().kind(),
                ErrorKind::Client,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_my_domain_built_directly_never_shows_or_sends_its_password() {
        let raw: Url = "https://me:pw-secret@acme.my.salesforce.com/"
            .parse()
            .unwrap();
        let login = LoginUrl::MyDomain(raw);
        let text = format!("{login:?} {login} {} {}", login.url(), login.token_url());
        assert!(!text.contains("pw-secret"), "{text}");
        assert!(!text.contains("me@"), "{text}");
        assert_eq!(
            format!("{login:?}"),
            "MyDomain(\"https://acme.my.salesforce.com/\")"
        );
        assert_eq!(format!("{:?}", LoginUrl::Sandbox), "Sandbox");
    }

    #[test]
    fn parse_errors_never_repeat_the_input() {
        for bad in [
            "me:pw-secret@acme.my.salesforce.com",
            "https://me:pw-secret@acme.my.salesforce.com:99999",
            "https://me:pw-secret@",
            "mailto:pw-secret@example.com",
        ] {
            let e = LoginUrl::parse(bad).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains("pw-secret"), "{bad}: {text}");
        }
    }
}
