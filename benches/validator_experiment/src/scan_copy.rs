//! The validating skip of `src/bayeux/scan.rs` at `8324634` (`value` and what it calls), copied
//! unchanged but for visibility, so that it runs here on the same bytes as the candidates.

const MAX_DEPTH: usize = 64;

/// Whether `text` is one JSON value and nothing else, as the scanner checks a `data` value (at
/// depth 2: the body's array and the element's object enclose it).
pub fn validate(text: &str) -> bool {
    let b = text.as_bytes();
    value(b, 0, 2) == Some(b.len())
}

/// [`validate`] with whitespace allowed around the value, as the scanner's caller skips it.
pub fn validate_ws(text: &str) -> bool {
    let b = text.as_bytes();
    value(b, ws(b, 0), 2).map(|end| ws(b, end)) == Some(b.len())
}

#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

#[inline(always)]
fn special(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let short_end = i.saturating_add(32);
    while let Some(Ok(chunk)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let x = u64::from_le_bytes(chunk);
        let quote_or_control = x ^ (ONES * 0x02);
        let backslash = x ^ (ONES * u64::from(b'\\'));
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

#[inline(never)]
fn long(b: &[u8], i: usize) -> usize {
    let rest = &b[i..];
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let control = rest[..end].iter().fold(u8::MAX, |low, c| low.min(*c)) < 0x20;
    if control {
        i + rest[..end].iter().position(|c| *c < 0x20).unwrap_or(end)
    } else {
        i + end
    }
}

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
            _ => return None,
        }
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
