//! Secret values that never print.

use std::fmt;
use std::sync::Arc;

/// A secret (API key, token). `Debug` and `Display` print `[redacted]`; the value
/// is read only through [`Secret::expose`], at the one place it is sent upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call only where it leaves for the upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Finds configured secrets in text that came back from an upstream (headers,
/// bodies, error messages, `Location`) and replaces them with `[redacted]`, in
/// every form they may take on the wire:
///
/// - raw, as sent in a header;
/// - percent-encoded as sent in a query (`%2B`), with upper- or lower-case hex, or
///   partly encoded (`%2b` next to a literal `/`);
/// - encoded twice (`%252B`), as an upstream that echoes its request URL into a
///   query of its own writes it;
/// - form-encoded (a space as `+`) and JSON-escaped (`\/` for `/`).
///
/// Each byte of a secret may appear in any of those forms independently, so mixed
/// forms are found too. Secrets are matched longest first.
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Arc<[Box<[u8]>]>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at the start of `t` stands for.
fn escape_at(t: &[u8]) -> Option<u8> {
    match t {
        [b'%', h, l, ..] => Some(hex_val(*h)? << 4 | hex_val(*l)?),
        _ => None,
    }
}

/// The lengths of every form of `want` at the start of `t` (a `%` may be
/// literal or the start of an escape, so there can be several).
fn byte_forms(t: &[u8], want: u8, out: &mut Vec<usize>) {
    let Some(&first) = t.first() else { return };
    if first == want {
        out.push(1);
    }
    match first {
        b'%' => {
            if escape_at(t) == Some(want) {
                out.push(3);
            }
            // Encoded twice: `%25` then the two hex digits.
            if t.len() >= 5
                && escape_at(t) == Some(b'%')
                && hex_val(t[3]).zip(hex_val(t[4])).map(|(h, l)| h << 4 | l) == Some(want)
            {
                out.push(5);
            }
        }
        b'+' if want == b' ' => out.push(1),
        b'\\' if want == b'/' && t.get(1) == Some(&b'/') => out.push(2),
        _ => {}
    }
}

/// The end of the longest form of `secret` starting at `start` of `t`, if one
/// starts there. Every reading of each byte is followed (a set of positions, so
/// the work stays linear in the secret's length).
fn match_at(t: &[u8], start: usize, secret: &[u8]) -> Option<usize> {
    let mut at = vec![start];
    let mut next = Vec::new();
    let mut lens = Vec::new();
    for &c in secret {
        next.clear();
        for &j in &at {
            lens.clear();
            byte_forms(&t[j..], c, &mut lens);
            next.extend(lens.iter().map(|l| j + l));
        }
        if next.is_empty() {
            return None;
        }
        next.sort_unstable();
        next.dedup();
        std::mem::swap(&mut at, &mut next);
    }
    at.last().copied()
}

impl Scrubber {
    /// A scrubber for these secret values (empty values are ignored).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut v: Vec<Box<[u8]>> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().into())
            .collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Self { secrets: v.into() }
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The first secret form in `t` at or after `from`: its start and end.
    fn find(&self, t: &[u8], from: usize) -> Option<(usize, usize)> {
        for i in from..t.len() {
            let b = t[i];
            for s in self.secrets.iter() {
                let c = s[0];
                let may =
                    b == c || b == b'%' || (c == b' ' && b == b'+') || (c == b'/' && b == b'\\');
                if may && let Some(end) = match_at(t, i, s) {
                    return Some((i, end));
                }
            }
        }
        None
    }

    /// Whether `t` holds any form of a secret.
    pub fn contains(&self, t: &[u8]) -> bool {
        !self.is_empty() && self.find(t, 0).is_some()
    }

    /// `t` with every form of every secret replaced by `[redacted]`; borrowed when
    /// there was none.
    pub fn scrub_bytes<'a>(&self, t: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.is_empty() {
            return std::borrow::Cow::Borrowed(t);
        }
        let Some((mut s, mut e)) = self.find(t, 0) else {
            return std::borrow::Cow::Borrowed(t);
        };
        let mut out = Vec::with_capacity(t.len());
        let mut last = 0;
        loop {
            out.extend_from_slice(&t[last..s]);
            out.extend_from_slice(REDACTED.as_bytes());
            last = e;
            match self.find(t, e) {
                Some((s2, e2)) => (s, e) = (s2, e2),
                None => break,
            }
        }
        out.extend_from_slice(&t[last..]);
        std::borrow::Cow::Owned(out)
    }

    /// [`Scrubber::scrub_bytes`] for text. A replacement never splits a UTF-8
    /// sequence (secrets are whole UTF-8 strings and escapes are ASCII).
    pub fn scrub<'a>(&self, t: &'a str) -> std::borrow::Cow<'a, str> {
        match self.scrub_bytes(t.as_bytes()) {
            std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(t),
            std::borrow::Cow::Owned(v) => std::borrow::Cow::Owned(
                String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// Scrubs a `String` in place.
    pub fn scrub_string(&self, s: &mut String) {
        if let std::borrow::Cow::Owned(v) = self.scrub(s) {
            *s = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "tEsT+sEcReT/kEy==";

    #[test]
    fn every_wire_form_is_scrubbed() {
        let s = Scrubber::new([KEY, "hdr-secret-1"]);
        for form in [
            KEY,
            "tEsT%2BsEcReT%2FkEy%3D%3D",
            "tEsT%2bsEcReT%2fkEy%3d%3d",
            "tEsT%2bsEcReT/kEy%3D=",
            "%74%45sT+sEcReT/kEy==",
            "tEsT%252BsEcReT%252FkEy%253D%253D",
            "tEsT+sEcReT\\/kEy==",
            "hdr-secret-1",
            "hdr%2Dsecret%2d1",
        ] {
            let text = format!("a \"{form}\" b {form}");
            let out = s.scrub(&text);
            assert_eq!(out, "a \"[redacted]\" b [redacted]", "{form}");
            assert!(s.contains(text.as_bytes()));
            assert!(!s.contains(out.as_bytes()));
        }
        assert!(matches!(
            s.scrub("nothing here %zz %"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(s.scrub("tEsT+sEcReT/kEy="), "tEsT+sEcReT/kEy=");
    }

    #[test]
    fn spaces_match_plus_and_longest_first() {
        let s = Scrubber::new(["a b", "a bc"]);
        assert_eq!(s.scrub("x a+bc y a%20b"), "x [redacted] y [redacted]");
        assert!(Scrubber::new([""]).is_empty());
    }
}
