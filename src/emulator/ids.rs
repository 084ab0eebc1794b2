//! Pseudo-random and Salesforce-shaped identifiers, from `std` only (no `rand` dependency).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

const BASE36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TOKEN: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 64 unpredictable bits: SipHash with per-process random keys over a global counter, so values
/// never repeat within a process and are not guessable from one another.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut bits = 0u64;
    for i in 0..len {
        if i % 8 == 0 {
            bits = random_u64();
        }
        out.push(alphabet[(bits & 0xff) as usize % alphabet.len()] as char);
        bits >>= 8;
    }
    out
}

/// A CometD client id, shaped like Salesforce's (`4a1kz5s3tk6acl5qm3bz9mmvcgq`).
pub(crate) fn client_id() -> String {
    random_from(BASE36, 27)
}

/// The `BAYEUX_BROWSER` cookie value.
pub(crate) fn bayeux_browser() -> String {
    random_from(BASE36, 27)
}

/// The `sfdc-stream` cookie value: always contains `!`, `/`, `+` and `=`, which a careless cookie
/// jar re-encodes, so the emulator catches it.
pub(crate) fn sfdc_stream() -> String {
    format!(
        "!{}/{}+{}==",
        random_from(B64, 40),
        random_from(B64, 24),
        random_from(B64, 22)
    )
}

/// The `sfproxy-id` cookie value (hex).
pub(crate) fn sfproxy_id() -> String {
    format!("{:016x}{:04x}", random_u64(), random_u64() & 0xffff)
}

/// An access token shaped like Salesforce's (`00D...!AR...`).
pub(crate) fn access_token() -> String {
    format!("00DEMU0000001gPL!AR{}", random_from(TOKEN, 94))
}

/// A refresh token shaped like Salesforce's.
pub(crate) fn refresh_token() -> String {
    format!("5Aep861{}", random_from(TOKEN, 80))
}

/// A UUID-shaped string (version 4 layout).
pub(crate) fn uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// An 18-character record id with the given 3-character key prefix (`001` Account, `a00` custom).
pub(crate) fn record_id(prefix: &str) -> String {
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digits = [b'0'; 10];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    let digits = std::str::from_utf8(&digits).unwrap_or("0000000000");
    format!("{prefix:.3}xx{digits}AAA")
}

/// A monotonically growing number for `commitNumber` and the like.
pub(crate) fn sequence() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A schema id that depends only on the channel (FNV-1a), so it is stable across runs.
pub(crate) fn schema_id(channel: &str) -> String {
    let mut out = String::with_capacity(22);
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    for round in 0..3u8 {
        let mut h = seed ^ u64::from(round);
        for b in channel.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for _ in 0..8 {
            if out.len() == 22 {
                break;
            }
            out.push(B64URL[(h & 63) as usize] as char);
            h >>= 6;
        }
        seed ^= h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    out
}

/// Standard base64 with padding (for the token `signature`).
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(client_id().len(), 27);
        assert_ne!(client_id(), client_id());
        let s = sfdc_stream();
        assert!(s.starts_with('!') && s.contains('/') && s.contains('+') && s.ends_with("=="));
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(record_id("001").len(), 18);
        assert_eq!(schema_id("/event/A__e"), schema_id("/event/A__e"));
        assert_eq!(schema_id("/event/A__e").len(), 22);
        assert_ne!(schema_id("/event/A__e"), schema_id("/event/B__e"));
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
