//! Reading a response body into messages.

use super::{Advice, Channel, Data, Message};
use crate::error::{Error, ErrorKind};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// The messages of one response body.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Batch {
    /// Every element that parsed, in body order.
    pub messages: Vec<Message>,
    /// Elements that were valid JSON but not a valid Bayeux message (a field of the wrong type,
    /// no channel, not an object). They are reported, never dropped silently.
    pub malformed: Vec<MalformedMessage>,
}

/// One element of a batch that could not be read as a message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MalformedMessage {
    /// The channel, if the element had a string `channel` field.
    pub channel: Option<String>,
    /// Why it was rejected, with the position in the batch.
    pub error: Error,
}

/// Parse a response body: a JSON array of Bayeux messages.
///
/// Fails with [`ErrorKind::Protocol`] when the body is not JSON (an HTML error page, a truncated
/// body) or not an array. Individual malformed elements land in [`Batch::malformed`], up to 16
/// per body: a body with more is rejected as a whole. A malformed body is read element by
/// element, never into a `serde_json::Value` tree, so it costs little more than its own size.
pub fn parse_batch(body: Bytes) -> Result<Batch, Error> {
    parse_body(&body)
}

/// [`parse_batch`] on a borrowed body: the transport parses its reused read buffer in place.
pub(crate) fn parse_body(body: &[u8]) -> Result<Batch, Error> {
    // The body is checked as UTF-8 once up front so that the parsers need not re-check every
    // string and every raw `data` slice.
    // simdutf8's `basic` check says only valid/invalid (the lenient path finds the details).
    let Ok(text) = simdutf8::basic::from_utf8(body) else {
        return parse_lenient(body);
    };
    // Roughly one message per 256 bytes: avoids regrowing (and moving) the vector for small
    // events. Capped, because a `Message` takes ~300 bytes: for ~10 KB events the estimate is 40
    // times the real count, and presizing by it took a 12.6 MB vector for each 10 MB response
    // (measured with heaptrack), freed again once the batch was routed. Such large short-lived
    // blocks left holes that the queued events split up, so the heap kept growing. Beyond the
    // cap the vector grows as needed.
    let capacity = (body.len() / 256).clamp(4, MAX_PRESIZED);
    // Fastest: a direct scan of the usual shape (see `scan`); then one serde pass; then element
    // by element.
    if let Some(messages) = super::scan::messages(text, capacity) {
        return Ok(Batch {
            messages,
            malformed: Vec::new(),
        });
    }
    match parse_serde_with(text, capacity) {
        Some(messages) => Ok(Batch {
            messages,
            malformed: Vec::new(),
        }),
        None => parse_lenient(body),
    }
}

/// The most messages a batch's vector is presized for (about 600 KB).
const MAX_PRESIZED: usize = 2048;

/// One serde pass over the whole body, straight into messages; `None` if any element is
/// malformed.
fn parse_serde_with(text: &str, capacity: usize) -> Option<Vec<Message>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = BatchSeed { capacity };
    de::DeserializeSeed::deserialize(seed, &mut de)
        .and_then(|m| de.end().map(|()| m))
        .ok()
}

/// The serde pass alone, to check the fast scan against it.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_serde(text: &str) -> Option<Vec<Message>> {
    parse_serde_with(text, 4)
}

struct BatchSeed {
    capacity: usize,
}

impl<'de> de::DeserializeSeed<'de> for BatchSeed {
    type Value = Vec<Message>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Vec<Message>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Bayeux messages")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut messages = Vec::with_capacity(self.capacity);
        while let Some(wire) = seq.next_element::<WireMessage<'de>>()? {
            messages.push(wire.into_message().map_err(de::Error::custom)?);
        }
        Ok(messages)
    }
}

/// Beyond this many malformed elements in one body the whole body is rejected: each one reported
/// costs an error value, a log line and a queue slot, so a hostile body of `[1,1,1,...]` must not
/// turn into millions of them.
pub(crate) const MAX_MALFORMED_PER_BATCH: usize = 16;

/// The slow path, after the fast one failed: element by element, each kept as a borrowed raw
/// slice until it is read, so a malformed body never becomes a `serde_json::Value` tree.
fn parse_lenient(body: &[u8]) -> Result<Batch, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = LenientSeed;
    match de::DeserializeSeed::deserialize(seed, &mut de).and_then(|b| de.end().map(|()| b)) {
        Ok(batch) => Ok(batch),
        Err(e) => Err(match serde_json::from_slice::<de::IgnoredAny>(body) {
            // Valid JSON all the same: not an array, or too many malformed elements.
            Ok(_) => match json_type(body) {
                Some(what) => Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "expected a JSON array of messages, got {what}: {}",
                        excerpt(body)
                    ),
                ),
                None => Error::new(ErrorKind::Protocol, format!("{e}: {}", excerpt(body))),
            },
            Err(syntax) => protocol_error(body)(syntax),
        }),
    }
}

struct LenientSeed;

impl<'de> de::DeserializeSeed<'de> for LenientSeed {
    type Value = Batch;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for LenientSeed {
    type Value = Batch;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Bayeux messages")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut batch = Batch::default();
        let mut index = 0usize;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let parsed = serde_json::from_str::<WireMessage<'_>>(raw.get()).and_then(|w| {
                w.into_message()
                    .map_err(<serde_json::Error as de::Error>::custom)
            });
            match parsed {
                Ok(m) => batch.messages.push(m),
                Err(_) if batch.malformed.len() == MAX_MALFORMED_PER_BATCH => {
                    return Err(de::Error::custom(format_args!(
                        "more than {MAX_MALFORMED_PER_BATCH} malformed messages in one response \
                         (the response is rejected)"
                    )));
                }
                Err(e) => batch.malformed.push(malformed(index, raw, e)),
            }
            index += 1;
        }
        Ok(batch)
    }
}

fn malformed(index: usize, raw: &RawValue, e: serde_json::Error) -> MalformedMessage {
    #[derive(Deserialize)]
    struct ChannelOnly {
        channel: String,
    }
    let channel = serde_json::from_str::<ChannelOnly>(raw.get())
        .ok()
        .map(|c| c.channel);
    let error = Error::new(
        ErrorKind::Protocol,
        format!(
            "malformed message #{index} in batch: {e}: {}",
            excerpt(raw.get().as_bytes())
        ),
    )
    .with_source(e);
    MalformedMessage { channel, error }
}

fn protocol_error(body: &[u8]) -> impl FnOnce(serde_json::Error) -> Error + '_ {
    move |e| {
        let what = if body.iter().all(u8::is_ascii_whitespace) {
            "empty body".to_owned()
        } else if e.is_eof() {
            format!("truncated JSON ({} bytes): {}", body.len(), excerpt(body))
        } else {
            format!("response is not JSON: {}", excerpt(body))
        };
        Error::new(ErrorKind::Protocol, what).with_source(e)
    }
}

/// What a valid JSON text is, from its first character.
fn json_type(body: &[u8]) -> Option<&'static str> {
    match body.iter().find(|b| !b.is_ascii_whitespace())? {
        b'n' => Some("null"),
        b't' | b'f' => Some("a boolean"),
        b'"' => Some("a string"),
        b'{' => Some("an object"),
        b'[' => None,
        _ => Some("a number"),
    }
}

/// The first characters of a body, on one line, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 160;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if body.len() > out.len() {
        out.push_str("...");
    }
    out
}

/// A message borrowing from the body: `data` is captured as a slice, never parsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireMessage<'a> {
    /// Missing only on a reply to a request refused before Bayeux processing
    /// (`[{"error":"401::Request requires authentication","successful":false}]`, restforce#103).
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "id")]
    id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    successful: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    advice: Option<Advice>,
    #[serde(default)]
    ext: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "subscription")]
    subscription: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    minimum_version: Option<String>,
    #[serde(default)]
    supported_connection_types: Option<Vec<String>>,
    #[serde(default)]
    connection_type: Option<String>,
}

impl WireMessage<'_> {
    pub(super) fn into_message(self) -> Result<Message, &'static str> {
        let channel = match self.channel {
            Some(c) => c.into(),
            None if self.successful.is_some() => Channel::default(),
            None => return Err("missing field `channel`"),
        };
        Ok(Message {
            channel,
            id: self.id,
            client_id: self.client_id,
            successful: self.successful,
            error: self.error,
            advice: self.advice,
            ext: self.ext,
            subscription: self.subscription,
            // Copied out, not sliced: an event sharing the body would keep the whole response
            // alive, and a slow channel holding one event of each response of a busy one would
            // pin `max_pending_count` bodies. One small copy per event buys a bound in bytes.
            data: self.data.map(|raw| Data::from_validated(raw.get())),
            version: self.version,
            minimum_version: self.minimum_version,
            supported_connection_types: self.supported_connection_types,
            connection_type: self.connection_type,
        })
    }
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct IdVisitor;
    impl<'de> Visitor<'de> for IdVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or number id")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // 5.0 echoes our "5".
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(Some((v as i64).to_string()))
            } else {
                Ok(Some(v.to_string()))
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(IdVisitor)
        }
    }
    d.deserialize_option(IdVisitor)
}

fn subscription<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrList {
        One(String),
        List(Vec<String>),
    }
    match Option::<OneOrList>::deserialize(d)? {
        None => Ok(None),
        Some(OneOrList::One(s)) => Ok(Some(s)),
        Some(OneOrList::List(mut l)) if l.len() == 1 => Ok(l.pop()),
        Some(OneOrList::List(_)) => Err(de::Error::custom(
            "subscription lists with more than one channel are not supported",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/data/salesforce-messages.json")).unwrap()
    }

    fn parse(v: &Value) -> Batch {
        parse_batch(Bytes::from(serde_json::to_vec(v).unwrap())).unwrap()
    }

    #[test]
    fn every_salesforce_vector_parses() {
        let v = vectors();
        for (name, value) in v.as_object().unwrap() {
            if !value.is_array() || name == "set_cookie_headers_seen" {
                continue;
            }
            let batch = parse(value);
            assert!(batch.malformed.is_empty(), "{name}: {:?}", batch.malformed);
            assert_eq!(
                batch.messages.len(),
                value.as_array().unwrap().len(),
                "{name}"
            );
        }
    }

    #[test]
    fn numeric_ids_and_raw_data() {
        let batch = parse(&vectors()["connect_with_events_numeric_ids"]);
        let connect = batch.messages.last().unwrap();
        assert_eq!(connect.id.as_deref(), Some("5"));
        assert!(connect.is_successful());
        let pe = &batch.messages[1];
        assert!(pe.is_event());
        let data: Value = pe.data.as_ref().unwrap().deserialize().unwrap();
        assert_eq!(data["event"]["replayId"], 17);
    }

    #[test]
    fn data_is_copied_out_so_an_event_never_pins_its_response() {
        let body = Bytes::from(
            r#"[{"channel":"/u/x","data":{"a":[1,2,{"b":"\u00e9"}]}},1,{"channel":"/u/y","data":2}]"#,
        );
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        let batch = parse_batch(body.clone()).unwrap(); // the lenient path
        let fast = parse_batch(Bytes::from(r#"[{"channel":"/u/x","data":{"a":1}}]"#)).unwrap();
        let data = batch.messages[0].data.as_ref().unwrap();
        assert_eq!(data.get(), r#"{"a":[1,2,{"b":"\u00e9"}]}"#);
        for d in [data, fast.messages[0].data.as_ref().unwrap()] {
            let at = d.as_bytes().as_ptr() as usize;
            assert!(
                !range.contains(&at),
                "data must be a copy, not a slice of the body"
            );
        }
    }

    #[test]
    fn advice_floats_and_unknown_reconnect() {
        let b = parse_batch(Bytes::from_static(
            br#"[{"channel":"/meta/connect","successful":true,"advice":{"reconnect":"sideways","interval":0.0,"timeout":45000.0}}]"#,
        ))
        .unwrap();
        let a = b.messages[0].advice.clone().unwrap();
        assert_eq!(a.reconnect, Some(super::super::Reconnect::Unknown));
        assert_eq!((a.interval, a.timeout), (Some(0), Some(45000)));
    }

    #[test]
    fn html_truncated_object_and_empty_are_protocol_errors() {
        for (body, needle) in [
            (
                &b"<html><body>Service Unavailable</body></html>"[..],
                "not JSON",
            ),
            (
                &br#"[{"channel":"/meta/connect","successful":tr"#[..],
                "truncated",
            ),
            (
                &br#"{"channel":"/meta/connect","successful":true}"#[..],
                "an object",
            ),
            (&b"   "[..], "empty body"),
            (&b"\"just a string\""[..], "a string"),
        ] {
            let e = parse_batch(Bytes::copy_from_slice(body)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn wrong_field_types_keep_the_rest_of_the_batch() {
        let body = br#"[
            {"channel":"/event/A__e","data":{"event":{"replayId":1}}},
            {"channel":"/event/A__e","successful":"yes","data":{}},
            42,
            {"nochannel":true},
            {"channel":"/meta/connect","id":"3","successful":true}
        ]"#;
        let b = parse_batch(Bytes::from_static(body)).unwrap();
        assert_eq!(b.messages.len(), 2);
        assert_eq!(b.malformed.len(), 3);
        assert_eq!(b.malformed[0].channel.as_deref(), Some("/event/A__e"));
        assert!(b.malformed[0].error.to_string().contains("#1"));
        assert_eq!(b.malformed[1].channel, None);
        assert_eq!(b.messages[1].id.as_deref(), Some("3"));
    }

    #[test]
    fn a_body_of_many_malformed_elements_is_rejected_as_one_error() {
        let body = format!("[{}1]", "1,".repeat(10_000));
        let e = parse_batch(Bytes::from(body)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.to_string().contains("malformed messages"), "{e}");
        // Up to the cap, each one is reported and the rest of the batch kept.
        let mut elements = vec!["1"; MAX_MALFORMED_PER_BATCH];
        elements.push(r#"{"channel":"/meta/connect","successful":true}"#);
        let b = parse_batch(Bytes::from(format!("[{}]", elements.join(",")))).unwrap();
        assert_eq!(b.malformed.len(), MAX_MALFORMED_PER_BATCH);
        assert_eq!(b.messages.len(), 1);
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error_not_a_panic() {
        let body = Bytes::from_static(b"[{\"channel\":\"/a\xff\",\"data\":{}}]");
        assert_eq!(parse_batch(body).unwrap_err().kind(), ErrorKind::Protocol);
    }

    #[test]
    fn subscription_string_or_single_list() {
        let b = parse_batch(Bytes::from_static(
            br#"[{"channel":"/meta/subscribe","subscription":["/a"]},{"channel":"/meta/subscribe","subscription":"/b"}]"#,
        ))
        .unwrap();
        assert_eq!(b.messages[0].subscription.as_deref(), Some("/a"));
        assert_eq!(b.messages[1].subscription.as_deref(), Some("/b"));
    }

    #[test]
    fn serializes_like_salesforce_expects() {
        let mut m = Message::new("/meta/subscribe");
        m.client_id = Some("abc".into());
        m.id = Some("3".into());
        m.subscription = Some("/event/X__e".into());
        m.set_ext_field("replay", serde_json::json!({"/event/X__e": -1}));
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"channel":"/meta/subscribe","id":"3","clientId":"abc","ext":{"replay":{"/event/X__e":-1}},"subscription":"/event/X__e"}"#
        );
    }
}
