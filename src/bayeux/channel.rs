use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A Bayeux channel name (`/meta/connect`, `/event/Order__e`), shared.
///
/// Cloning is a reference count: [`parse_batch`](super::parse_batch) gives the events of a run
/// on one channel a single name instead of a `String` each (that allocation was about 6 % of the
/// client's CPU per event). It reads as a `&str` through `Deref` (`channel.starts_with("/meta/")`,
/// `&*channel`), compares with `str`, `&str` and `String`, and is made from either with `into()`.
///
/// ```
/// use sfstream::bayeux::{Channel, Message, channels};
/// let m = Message::new(channels::CONNECT);
/// assert_eq!(m.channel, channels::CONNECT);
/// assert_eq!(m.channel.as_str(), "/meta/connect");
/// let name: Channel = String::from("/event/Order__e").into();
/// assert!(name.starts_with("/event/"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

impl Channel {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two names share one allocation (then they are equal without comparing text).
    pub(crate) fn same(&self, other: &Channel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Channel {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Channel {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Channel {
    fn from(s: &str) -> Self {
        Channel(s.into())
    }
}

impl From<&String> for Channel {
    fn from(s: &String) -> Self {
        Channel(s.as_str().into())
    }
}

impl From<String> for Channel {
    fn from(s: String) -> Self {
        Channel(s.into())
    }
}

impl From<Cow<'_, str>> for Channel {
    fn from(s: Cow<'_, str>) -> Self {
        Channel(s.into())
    }
}

impl From<Arc<str>> for Channel {
    fn from(s: Arc<str>) -> Self {
        Channel(s)
    }
}

impl From<Channel> for Arc<str> {
    fn from(c: Channel) -> Self {
        c.0
    }
}

impl From<Channel> for String {
    fn from(c: Channel) -> Self {
        c.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for Channel {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Channel {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Channel {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Channel> for str {
    fn eq(&self, other: &Channel) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Channel> for &str {
    fn eq(&self, other: &Channel) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Channel> for String {
    fn eq(&self, other: &Channel) -> bool {
        **self == *other.0
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Channel::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_reads_like_a_string() {
        let c = Channel::from("/event/A__e");
        assert_eq!(c, "/event/A__e");
        assert_eq!("/event/A__e", c);
        assert_eq!(c, String::from("/event/A__e"));
        assert_eq!(String::from(c.clone()), "/event/A__e");
        assert!(c.same(&c.clone()));
        assert!(!c.same(&Channel::from("/event/A__e")));
        assert_eq!(format!("{c} {c:?}"), r#"/event/A__e "/event/A__e""#);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""/event/A__e""#);
        let back: Channel = serde_json::from_str(r#""/a\/b""#).unwrap();
        assert_eq!(back, "/a/b");
        assert!(Channel::default().is_empty());
    }
}
