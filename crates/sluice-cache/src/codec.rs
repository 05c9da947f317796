//! The binary encoding of an [`Entry`] in shared stores.
//!
//! Layout of version 1 (all integers big-endian):
//!
//! ```text
//! u8  version (= 1)
//! u16 status
//! i64 stored_at, i64 fresh_until, i64 revalidate_until, i64 stale_until   (Unix ms)
//! u16 header count, then per header: u8 name length, name, u32 value length, value
//! u32 key length, key            (guards against hash collisions in memcached keys)
//! body                           (the rest)
//! ```
//!
//! The version byte comes first so that a later format can be read beside this one
//! during a rolling upgrade; an unknown version decodes to an error, which stores
//! treat as a miss.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::entry::Entry;

/// The format version written by [`encode`].
pub const VERSION: u8 = 1;

/// Fixed part of the header: version, status, four instants, header count.
const FIXED: usize = 1 + 2 + 4 * 8 + 2;

/// Encodes `entry`, stored under `key`, into one buffer.
pub fn encode(key: &str, entry: &Entry) -> Bytes {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(n, v)| 1 + n.len() + 4 + v.len())
        .sum();
    let mut b = BytesMut::with_capacity(FIXED + headers + 4 + key.len() + entry.body.len());
    b.put_u8(VERSION);
    b.put_u16(entry.status);
    b.put_i64(entry.stored_at);
    b.put_i64(entry.fresh_until);
    b.put_i64(entry.revalidate_until);
    b.put_i64(entry.stale_until);
    let kept: Vec<_> = entry
        .headers
        .iter()
        .filter(|(n, v)| n.len() <= usize::from(u8::MAX) && u32::try_from(v.len()).is_ok())
        .take(usize::from(u16::MAX))
        .collect();
    b.put_u16(kept.len() as u16);
    for (n, v) in kept {
        b.put_u8(n.len() as u8);
        b.put_slice(n.as_bytes());
        b.put_u32(v.len() as u32);
        b.put_slice(v);
    }
    b.put_u32(key.len() as u32);
    b.put_slice(key.as_bytes());
    b.put_slice(&entry.body);
    b.freeze()
}

/// A stored value that is not an entry this version can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// What is wrong: an unknown version, a truncated buffer, a header name that
    /// is not UTF-8.
    pub message: String,
}

impl From<String> for DecodeError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

/// Decodes a buffer written by [`encode`], returning the key it was stored under
/// and the entry. The body shares `buf`'s memory.
///
/// # Errors
///
/// A [`DecodeError`] naming what is wrong: an unknown version, a truncated
/// buffer, a header name that is not UTF-8.
pub fn decode(buf: Bytes) -> Result<(String, Entry), DecodeError> {
    decode_text(buf).map_err(DecodeError::from)
}

fn decode_text(mut buf: Bytes) -> Result<(String, Entry), String> {
    fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), String> {
        if buf.remaining() < n {
            Err(format!(
                "truncated: {what} needs {n} bytes, {} left",
                buf.remaining()
            ))
        } else {
            Ok(())
        }
    }
    need(&buf, 1, "version")?;
    let version = buf.get_u8();
    if version != VERSION {
        return Err(format!(
            "unknown entry format version {version} (this build reads {VERSION})"
        ));
    }
    need(&buf, FIXED - 1, "fixed header")?;
    let status = buf.get_u16();
    let stored_at = buf.get_i64();
    let fresh_until = buf.get_i64();
    let revalidate_until = buf.get_i64();
    let stale_until = buf.get_i64();
    let count = buf.get_u16();
    let mut headers = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        need(&buf, 1, "header name length")?;
        let nl = usize::from(buf.get_u8());
        need(&buf, nl, "header name")?;
        let name = String::from_utf8(buf.split_to(nl).to_vec())
            .map_err(|_| format!("header {i}: name is not UTF-8"))?;
        need(&buf, 4, "header value length")?;
        let vl = buf.get_u32() as usize;
        need(&buf, vl, "header value")?;
        headers.push((name, buf.split_to(vl)));
    }
    need(&buf, 4, "key length")?;
    let kl = buf.get_u32() as usize;
    need(&buf, kl, "key")?;
    let key = String::from_utf8(buf.split_to(kl).to_vec()).map_err(|_| "key is not UTF-8")?;
    Ok((
        key,
        Entry {
            status,
            headers,
            body: buf,
            stored_at,
            fresh_until,
            revalidate_until,
            stale_until,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Entry {
        let s = Duration::from_secs;
        let mut e = crate::testing::json_entry(1_700_000_000_000, 11, s(60), s(30), s(3600));
        e.headers
            .push(("etag".into(), Bytes::from_static(b"\"abc\"")));
        e
    }

    #[test]
    fn round_trips() {
        let e = sample();
        let (key, back) = decode(encode("air GET /x?a=1", &e)).unwrap();
        assert_eq!(key, "air GET /x?a=1");
        assert_eq!(back, e);
        let empty = Entry::new(
            404,
            vec![],
            Bytes::new(),
            0,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(decode(encode("", &empty)).unwrap().1, empty);
    }

    #[test]
    fn version_byte_comes_first_and_unknown_versions_are_refused() {
        let mut raw = encode("k", &sample()).to_vec();
        assert_eq!(raw[0], VERSION);
        raw[0] = 2;
        let err = decode(Bytes::from(raw)).unwrap_err();
        assert!(
            err.message.contains("unknown entry format version 2"),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let raw = encode("key", &sample());
        let body_len = sample().body.len();
        for cut in 0..raw.len() - body_len {
            let err = decode(raw.slice(..cut)).unwrap_err();
            assert!(err.message.contains("truncated"), "cut {cut}: {err}");
        }
    }
}
