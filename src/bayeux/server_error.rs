use std::fmt;

/// A Bayeux error string `code:args:message`, parsed.
///
/// Salesforce sends `403::Unknown client` (empty args), the Bayeux spec and Faye send
/// `401:<clientId>:Unknown client`. A string that does not start with a numeric code keeps the
/// whole text as its message.
///
/// ```
/// use sfstream::bayeux::ServerError;
/// let e = ServerError::parse("401:4a1kz5s3:Unknown client");
/// assert_eq!((e.code, e.args.as_slice(), e.message.as_str()), (Some(401), &["4a1kz5s3".to_string()][..], "Unknown client"));
/// let e = ServerError::parse("something odd");
/// assert_eq!((e.code, e.message.as_str()), (None, "something odd"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerError {
    /// The numeric code (400, 401, 402, 403, ...), if the string had one.
    pub code: Option<u16>,
    /// The comma-separated arguments between the two colons.
    pub args: Vec<String>,
    /// The human-readable message.
    pub message: String,
}

impl ServerError {
    /// Parse an error string; never fails.
    pub fn parse(s: &str) -> Self {
        let mut parts = s.splitn(3, ':');
        let code = parts.next().and_then(|c| c.trim().parse::<u16>().ok());
        match (code, parts.next(), parts.next()) {
            (Some(code), Some(args), Some(message)) => ServerError {
                code: Some(code),
                args: if args.is_empty() {
                    Vec::new()
                } else {
                    args.split(',').map(str::to_owned).collect()
                },
                message: message.to_owned(),
            },
            _ => ServerError {
                code: None,
                args: Vec::new(),
                message: s.to_owned(),
            },
        }
    }

    /// `402::Unknown client`, Salesforce's `403::Unknown client` and the spec's
    /// `401:<id>:Unknown client`: the session is gone and a rehandshake (with the same token)
    /// recovers. Never a reason to log in again.
    pub fn is_unknown_client(&self) -> bool {
        matches!(self.code, Some(401..=403)) && self.message.trim() == "Unknown client"
    }

    /// A 401 that means the token is no longer valid (not an unknown session).
    pub fn is_authentication_failure(&self) -> bool {
        self.code == Some(401) && !self.is_unknown_client()
    }

    /// An org limit (`403::Organization total events daily limit exceeded`,
    /// `403::Organization concurrent user limit exceeded`): it passes with time, so requests are
    /// retried with backoff rather than given up.
    pub fn is_limit_exceeded(&self) -> bool {
        self.code == Some(403) && self.message.contains("limit exceeded")
    }

    /// Salesforce's answer to a subscribe whose replay id is outside the retention window, or whose
    /// channel is missing from the replay map.
    pub fn is_invalid_replay_id(&self) -> bool {
        self.code == Some(400)
            && self.message.contains("replayId")
            && (self.message.contains("was invalid") || self.message.contains("wasn't found"))
    }

    /// The replay id quoted in an invalid-replay-id message (`The replayId {1800} ...`).
    pub fn replay_id(&self) -> Option<i64> {
        let start = self.message.find("replayId {")? + "replayId {".len();
        let end = self.message[start..].find('}')? + start;
        self.message[start..end].trim().parse().ok()
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{code}:{}:{}", self.args.join(","), self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_strings() {
        let e = ServerError::parse("403::Unknown client");
        assert_eq!(e.code, Some(403));
        assert!(e.args.is_empty());
        assert!(e.is_unknown_client());
        assert!(!e.is_authentication_failure());

        let e = ServerError::parse("401::Authentication invalid");
        assert!(e.is_authentication_failure());
        assert!(!e.is_unknown_client());

        let e = ServerError::parse("402::Unknown client");
        assert!(e.is_unknown_client());

        let e = ServerError::parse(
            "400::The replayId {1800} you provided was invalid.  Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.",
        );
        assert!(e.is_invalid_replay_id());
        assert_eq!(e.replay_id(), Some(1800));

        let e = ServerError::parse(
            "400::The replayId for channel {/data/ChangeEvents} wasn't found using the provided replay ID map {{}}.",
        );
        assert!(e.is_invalid_replay_id());
        assert_eq!(e.replay_id(), None);

        let e = ServerError::parse("403::Organization total events daily limit exceeded");
        assert!(!e.is_unknown_client() && !e.is_invalid_replay_id());
        assert!(e.is_limit_exceeded());
        let clients = ServerError::parse("403::Organization concurrent user limit exceeded");
        assert!(clients.is_limit_exceeded());
        assert_eq!(
            e.to_string(),
            "403::Organization total events daily limit exceeded"
        );
    }

    #[test]
    fn spec_strings_and_garbage() {
        let e = ServerError::parse("401:abc,def:Unknown client");
        assert_eq!(e.args, vec!["abc", "def"]);
        assert!(e.is_unknown_client());
        for s in ["", ":", "::", "abc:def:ghi", "403", "403:only-two"] {
            let e = ServerError::parse(s);
            assert_eq!(e.code, None, "{s}");
            assert_eq!(e.message, s);
        }
        // Messages may themselves contain colons.
        let e = ServerError::parse("400::Bad thing: details here");
        assert_eq!(e.message, "Bad thing: details here");
    }
}
