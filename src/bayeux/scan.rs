//! The fast path of [`parse_batch`](super::parse_batch): a hand-written scan for the shape almost
//! every element of a busy response has, `{"channel":"...","data":...}`.
//!
//! Through serde, each event costs a 13-field struct visit and a generic skip of `data`; that was
//! most of the client's CPU per event. Here an event is read by a direct scan, and `data` is
//! checked by a validating skipper that searches strings a word or a vector at a time.
//!
//! It is only an accelerator. It answers `None` whenever the body is not plainly well-formed
//! (an escape in a key or channel, a `data` of `null`, deep nesting, anything unusual), and the
//! caller then parses the whole body the old way, so errors, malformed elements and odd inputs
//! behave exactly as before. Elements of any other shape (replies, events with more fields) are
//! read by serde from their own span, as the lenient path does. Equivalence with the serde path
//! is checked by tests on the fuzz corpus and on mutated bodies, and by the `batch` fuzz target.

use super::batch::WireMessage;
use super::{Channel, Data, Message};

/// Nesting deeper than this inside one element is left to serde (which has no such limit in
/// `data` but one of 128 for the rest): the fast path must never accept what serde refuses.
const MAX_DEPTH: usize = 64;

/// The messages of a body, or `None` to parse it with serde instead.
pub(super) fn messages(text: &str, capacity: usize) -> Option<Vec<Message>> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = ws(b, i + 1);
    let mut messages = Vec::with_capacity(capacity);
    // The name of the previous event: the events of a response mostly share a channel, and
    // then share its name (one allocation per run, not per event).
    let mut last = Channel::default();
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let end = match event(text, i, &mut messages, &mut last) {
                Some(end) => end,
                None => {
                    let end = value(b, i, 1)?;
                    let wire: WireMessage<'_> = serde_json::from_str(&text[i..end]).ok()?;
                    messages.push(wire.into_message().ok()?);
                    end
                }
            };
            i = ws(b, end);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (ws(b, i) == b.len()).then_some(messages)
}

/// `{"channel":"<no escapes>","data":<value>}` in either order, each key once, nothing else:
/// pushed onto `out`; the index after it.
fn event(text: &str, start: usize, out: &mut Vec<Message>, last: &mut Channel) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let mut i = start + 1;
    // `Some(None)`: the same name as the previous event's (`last`), found without reading it
    // twice.
    let mut channel: Option<Option<&str>> = None;
    let mut data = None;
    loop {
        i = ws(b, i);
        // The two keys as literals: the same as reading a key without escapes and comparing it.
        let rest = b.get(i..)?;
        let is_channel = if rest.starts_with(b"\"channel\"") {
            i += 9;
            true
        } else if rest.starts_with(b"\"data\"") {
            i += 6;
            false
        } else {
            return None;
        };
        i = ws(b, i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        if is_channel {
            if channel.is_some() {
                return None;
            }
            // `last` holds no quote, backslash or control character (it was read by
            // `plain_string`), so text equal to it and then a quote is that same string.
            let name = last.as_bytes();
            let from = i + 1;
            if b.get(i) == Some(&b'"')
                && b.get(from..from + name.len()) == Some(name)
                && b.get(from + name.len()) == Some(&b'"')
            {
                channel = Some(None);
                i = from + name.len() + 1;
            } else {
                let (name, after) = plain_string(b, i)?;
                // ASCII and UTF-8 boundaries: `name` lies between two quotes of a valid str.
                channel = Some(Some(&text[from..from + name.len()]));
                i = after;
            }
        } else {
            if data.is_some() {
                return None;
            }
            let end = value(b, i, 2)?;
            let raw = &text[i..end];
            if raw == "null" {
                return None; // serde reads it as no data
            }
            data = Some(raw);
            i = end;
        }
        i = ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    let (channel, data) = (channel?, data?);
    if let Some(name) = channel {
        *last = Channel::from(name);
    }
    // Built in its slot: a `Message` is ~300 bytes, and returning it by value cost three
    // copies of it per event.
    out.push(Message::default());
    if let Some(message) = out.last_mut() {
        message.channel = last.clone();
        message.data = Some(Data::from_validated(data));
    }
    Some(i + 1)
}

#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// A string at `i` without escapes: its contents and the index after its closing quote.
fn plain_string(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = special(b, i + 1);
    (b.get(end) == Some(&b'"')).then(|| (&b[i + 1..end], end + 1))
}

/// The index of the first `"`, `\\` or control character (not allowed raw in JSON strings) at
/// or after `i`, or `b.len()`. Most strings of an event are short keys and values: eight bytes
/// at a time (as serde_json does); a long one (a text field) goes to `memchr`'s vector search.
#[inline(always)]
fn special(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let short_end = i.saturating_add(32);
    while let Some(Ok(chunk)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let x = u64::from_le_bytes(chunk);
        // Flipping bit 1 maps `"` (0x22) to 0x20 and the control characters onto themselves,
        // so one "byte below 0x21" test finds both; a zero-byte test finds the backslash.
        let quote_or_control = x ^ (ONES * 0x02);
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // The lowest flagged byte is exact (a false flag can only sit above a true one).
        let flagged = ((quote_or_control.wrapping_sub(ONES * 0x21) & !quote_or_control)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH;
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
        if i >= short_end {
            return long(b, i);
        }
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// [`special`] for the rest of a long string.
#[inline(never)]
fn long(b: &[u8], i: usize) -> usize {
    let rest = &b[i..];
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    // Without an early exit, so that it compiles to a vector loop (a running minimum: one
    // vector instruction per 16 bytes).
    let control = rest[..end].iter().fold(u8::MAX, |low, c| low.min(*c)) < 0x20;
    if control {
        i + rest[..end].iter().position(|c| *c < 0x20).unwrap_or(end)
    } else {
        i + end
    }
}

/// Skip a string at `i` (escapes checked as serde checks them); the index after it.
#[inline(always)]
fn string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut i = i + 1;
    loop {
        i = special(b, i);
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {}
            _ => return None, // a control character
        }
        // One of the simple escapes, or \u and four hex digits.
        match b.get(i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
            b'u' => {
                let hex = b.get(i + 2..i + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                i += 6;
            }
            _ => return None,
        }
    }
}

/// Skip any JSON value at `i`, validating it; the index after it. `depth` counts the
/// enclosing arrays and objects.
fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i),
        b'{' => container(b, i, depth, b'}', true),
        b'[' => container(b, i, depth, b']', false),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => None,
    }
}

fn container(b: &[u8], i: usize, depth: usize, close: u8, object: bool) -> Option<usize> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let mut i = ws(b, i + 1);
    if b.get(i) == Some(&close) {
        return Some(i + 1);
    }
    loop {
        if object {
            i = ws(b, string(b, i)?);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = ws(b, i + 1);
        }
        // Strings and numbers, most of the values, without a call.
        i = match *b.get(i)? {
            b'"' => string(b, i)?,
            b'-' | b'0'..=b'9' => number(b, i)?,
            _ => value(b, i, depth + 1)?,
        };
        i = ws(b, i);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            c if c == close => return Some(i + 1),
            _ => return None,
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
#[inline(always)]
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// Whether `b` is one JSON value, whitespace around it allowed, by the skip [`event`] runs on
/// a `data` value (at depth 2, inside the body's array and the element's object), for
/// `crate::fuzzing::validate_json_value`.
#[cfg(feature = "fuzzing")]
pub(crate) fn data_value(b: &[u8]) -> bool {
    value(b, ws(b, 0), 2).is_some_and(|end| ws(b, end) == b.len())
}

/// Whether the fast scan, where it answers, gives exactly what the serde pass gives (tests and
/// the `batch` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn agrees(text: &str) -> bool {
    let Some(fast) = messages(text, 4) else {
        return true;
    };
    super::batch::parse_serde(text).is_some_and(|slow| slow == fast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    fn skips_like_serde(text: &str) {
        let b = text.as_bytes();
        let start = ws(b, 0);
        let ours = value(b, start, 0).is_some_and(|end| ws(b, end) == b.len());
        if ours {
            assert!(
                serde_json::from_str::<IgnoredAny>(text).is_ok(),
                "the skipper accepts what serde refuses: {text:?}"
            );
        }
    }

    /// A small deterministic generator (no dependency): xorshift.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    const SEEDS: &[&str] = &[
        r#"[{"channel":"/event/A__e","data":{"schema":"s","payload":{"seq":1,"CreatedDate":"2026-12-07T10:00:00.000Z","Text__c":"x\"y\\z\u00e9\n","n":-0.5e+3,"b":[true,false,null,{}],"e":[]},"event":{"replayId":17}}},{"data":{"event":{"replayId":18}},"channel":"/event/A__e"},{"channel":"/meta/connect","id":"5","successful":true,"advice":{"interval":0}}]"#,
        r#"[ { "channel" : "/topic/T" , "data" : [ 1 , 2.25 , -3E-2 , "" ] } ]"#,
        r#"[{"channel":"/u/x","data":"text"},{"channel":"/u/y","data":12},{"channel":"/u/z","data":null}]"#,
        r#"[{"channel":"/meta/handshake","successful":true,"clientId":"c","supportedConnectionTypes":["long-polling"],"ext":{"replay":true}}]"#,
        "[]",
    ];

    #[test]
    fn the_fast_path_reads_events_and_leaves_odd_ones_to_serde() {
        let batch = messages(SEEDS[0], 4).expect("the common shape takes the fast path");
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[1].channel, "/event/A__e");
        assert_eq!(
            batch[1].data.as_ref().unwrap().get(),
            r#"{"event":{"replayId":18}}"#
        );
        assert!(agrees(SEEDS[0]));
        // `data: null` is no data for serde: that element is read by serde.
        let odd = messages(SEEDS[2], 4).expect("well-formed");
        assert_eq!(odd[2].data, None);
        assert!(agrees(SEEDS[2]));
        for text in [
            r#"[{"channel":"/a","data":{"x":01}}]"#,
            r#"[{"channel":"/a","data":{"x":"\q"}}]"#,
            r#"[{"channel":"/a","data":{"x":"\u12g4"}}]"#,
            "[{\"channel\":\"/a\",\"data\":\"tab\there\"}]",
            r#"[{"channel":"/a","data":{"x":1,}}]"#,
            r#"[{"channel":"/a","data":1} x"#,
            r#"[{"channel":"/a","channel":"/b","data":1}]"#,
        ] {
            assert!(messages(text, 4).is_none(), "{text}");
        }
        // An escaped key is no event shape: serde reads that element, and decodes the key.
        let escaped = r#"[{"chan\u006eel":"/a","data":1}]"#;
        assert_eq!(messages(escaped, 4).expect("well-formed")[0].channel, "/a");
        assert!(agrees(escaped));
        let deep = format!(
            r#"[{{"channel":"/a","data":{}1{}}}]"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(messages(&deep, 4).is_none());
    }

    #[test]
    fn a_run_of_events_on_one_channel_shares_one_name() {
        let text = r#"[{"channel":"/event/A__e","data":1},{"data":2,"channel":"/event/A__e"},{"channel":"/event/B__e","data":3},{"channel":"/event/A__e","data":4}]"#;
        let m = messages(text, 4).expect("the common shape takes the fast path");
        let names: Vec<&str> = m.iter().map(|m| m.channel.as_str()).collect();
        assert_eq!(
            names,
            ["/event/A__e", "/event/A__e", "/event/B__e", "/event/A__e"]
        );
        assert!(
            m[0].channel.same(&m[1].channel),
            "one allocation for the run"
        );
        assert!(!m[1].channel.same(&m[3].channel), "a new run, a new name");
        assert!(agrees(text));
    }

    #[test]
    fn the_word_search_finds_what_a_byte_loop_finds() {
        let mut rng = Rng(7);
        let pick = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0x9f, 0xa0, 0xdf, 0xff, b'x',
        ];
        for _ in 0..20_000 {
            let len = (rng.next() % 90) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.next() % 4 {
                    0 => pick[(rng.next() as usize) % pick.len()],
                    _ => b'a' + (rng.next() % 26) as u8,
                })
                .collect();
            let from = (rng.next() as usize) % (len + 1);
            let naive = (from..len)
                .find(|i| matches!(bytes[*i], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(len);
            assert_eq!(special(&bytes, from), naive, "{bytes:?} from {from}");
        }
    }

    #[test]
    fn fast_and_serde_paths_agree_on_mutated_bodies() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"{}[]\",:\\ 0123456789.eE+-tfnulrasx\n/";
        let mut fast_taken = 0;
        for seed in SEEDS {
            for _ in 0..3000 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..1 + rng.next() % 3 {
                    let at = (rng.next() as usize) % bytes.len();
                    let c = alphabet[(rng.next() as usize) % alphabet.len()];
                    match rng.next() % 3 {
                        0 => bytes[at] = c,
                        1 => bytes.insert(at, c),
                        _ => {
                            bytes.remove(at);
                        }
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                assert!(agrees(text), "fast and serde paths differ on {text:?}");
                skips_like_serde(text);
                fast_taken += usize::from(messages(text, 4).is_some());
            }
        }
        assert!(
            fast_taken > 1000,
            "the fast path was taken {fast_taken} times"
        );
    }

    #[test]
    fn fast_and_serde_paths_agree_on_the_fuzz_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/batch");
        let mut fast_taken = 0;
        for entry in std::fs::read_dir(dir).expect("the batch corpus") {
            let bytes = std::fs::read(entry.expect("an entry").path()).expect("a file");
            if let Ok(text) = std::str::from_utf8(&bytes) {
                assert!(agrees(text), "fast and serde paths differ on {text:?}");
                skips_like_serde(text);
                fast_taken += usize::from(messages(text, 4).is_some());
            }
        }
        assert!(
            fast_taken > 50,
            "the fast path was taken {fast_taken} times"
        );
    }
}
