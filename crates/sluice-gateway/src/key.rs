//! Request-target hygiene and cache keys.
//!
//! Two jobs share this module because they share one rule: *what is forwarded is
//! exactly what is keyed*. The path is validated and put into one canonical
//! percent-encoding; the query is decoded and re-encoded the same way, sorted, and
//! filtered to the route's `key_query` list. The upstream receives that canonical
//! form, so two requests with one key can never fetch different upstream answers,
//! and nothing in a request can steer sluice to another host.

use percent_encoding::{AsciiSet, percent_decode_str, utf8_percent_encode};
use sluice_upstream::encode::COMPONENT;
use sluice_upstream::encode_component;

use crate::error::{ErrorKind, GatewayError};

/// Characters left as they are in a canonical path segment: unreserved plus the
/// sub-delimiters and `:` that RFC 3986 allows in a segment.
const SEGMENT: &AsciiSet = &COMPONENT
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':');

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::BadRequest, msg)
}

/// Validates a request path and returns its canonical form.
///
/// Rejected: `.` and `..` segments (also percent-encoded), empty segments (`//`),
/// encoded `/` or `\`, backslashes, NUL and control characters, and `@`. Every
/// other byte is decoded and re-encoded canonically, so `%7E` and `~` are one path.
///
/// # Errors
///
/// A client error naming the offending part.
pub fn canonical_path(raw: &str) -> Result<String, GatewayError> {
    if !raw.starts_with('/') {
        return Err(bad("the request path must start with '/'"));
    }
    let mut out = String::with_capacity(raw.len());
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if i == last {
                out.push('/');
                continue;
            }
            return Err(bad("empty path segment ('//') is not allowed"));
        }
        let bytes: Vec<u8> = percent_decode_str(seg).collect();
        if bytes.iter().any(|b| *b == b'/' || *b == b'\\') {
            return Err(bad("encoded '/' or '\\' in the path is not allowed"));
        }
        if bytes.iter().any(|b| *b < 0x20 || *b == 0x7f) {
            return Err(bad("control characters in the path are not allowed"));
        }
        if bytes.contains(&b'@') {
            return Err(bad("'@' in the path is not allowed"));
        }
        if bytes == b"." || bytes == b".." {
            return Err(bad("'.' and '..' path segments are not allowed"));
        }
        out.push('/');
        let text = String::from_utf8(bytes)
            .map_err(|_| bad("the path is not valid UTF-8 after percent-decoding"))?;
        out.extend(utf8_percent_encode(&text, SEGMENT));
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// One query parameter in canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Param {
    /// Canonically encoded name.
    pub name: String,
    /// Canonically encoded value.
    pub value: String,
}

/// Decodes a raw query string (form rules: `+` is a space) into canonical,
/// name-sorted parameters. Empty pieces (`a=1&&b=2`) are ignored.
///
/// # Errors
///
/// A client error when a name or value is not UTF-8 after decoding.
pub fn canonical_query(raw: Option<&str>) -> Result<Vec<Param>, GatewayError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut params = Vec::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = piece.split_once('=').unwrap_or((piece, ""));
        params.push(Param {
            name: canon(n)?,
            value: canon(v)?,
        });
    }
    params.sort();
    Ok(params)
}

fn canon(s: &str) -> Result<String, GatewayError> {
    let plus_as_space = s.replace('+', " ");
    let decoded = percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map_err(|_| bad("a query parameter is not valid UTF-8 after percent-decoding"))?;
    Ok(encode_component(&decoded))
}

/// Joins parameters into a query string.
pub fn join_query(params: &[Param]) -> String {
    let mut s = String::new();
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(&p.name);
        s.push('=');
        s.push_str(&p.value);
    }
    s
}

/// Builds the cache key: `{route} {METHOD} {path}?{query}` followed by
/// ` {header}={value}` for each vary header. Separated by spaces, which a canonical
/// path, query or route name never contains.
pub fn build_key(
    route: &str,
    method: &str,
    path: &str,
    query: &str,
    vary: &[(String, String)],
) -> String {
    let mut k = String::with_capacity(route.len() + path.len() + query.len() + 8);
    k.push_str(route);
    k.push(' ');
    k.push_str(method);
    k.push(' ');
    k.push_str(path);
    if !query.is_empty() {
        k.push('?');
        k.push_str(query);
    }
    for (h, v) in vary {
        k.push(' ');
        k.push_str(h);
        k.push('=');
        k.extend(utf8_percent_encode(v, COMPONENT));
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_canonical() {
        assert_eq!(canonical_path("/air/get%7EX").unwrap(), "/air/get~X");
        assert_eq!(canonical_path("/a/%EC%84%9C").unwrap(), "/a/%EC%84%9C");
        assert_eq!(canonical_path("/a/b/").unwrap(), "/a/b/");
        assert_eq!(canonical_path("/").unwrap(), "/");
    }

    #[test]
    fn traversal_and_tricks_are_rejected() {
        for p in [
            "/air/../x",
            "/air/%2e%2e/x",
            "/air/.%2E/x",
            "/air/./x",
            "/air//evil.com/x",
            "/air/a%2Fb",
            "/air/a%5cb",
            "/air/a\\b",
            "/air/user@evil.com",
            "/air/a%40b",
            "/air/a%00b",
            "air/x",
        ] {
            assert!(canonical_path(p).is_err(), "{p} should be rejected");
        }
    }

    #[test]
    fn query_is_decoded_sorted_and_reencoded() {
        let q = canonical_query(Some("b=2&a=%ec%84%9c+x&&c&a=1")).unwrap();
        assert_eq!(join_query(&q), "a=%EC%84%9C%20x&a=1&b=2&c=");
        let same = canonical_query(Some("c=&a=%EC%84%9C%20x&b=2&a=1")).unwrap();
        assert_eq!(q, same);
    }

    #[test]
    fn service_keys_are_encoded_exactly_once() {
        assert_eq!(encode_component("ab+c/d=="), "ab%2Bc%2Fd%3D%3D");
    }

    #[test]
    fn keys_carry_vary_headers() {
        let k = build_key(
            "air",
            "GET",
            "/air/x",
            "a=1",
            &[("accept".into(), "text/xml".into())],
        );
        assert_eq!(k, "air GET /air/x?a=1 accept=text%2Fxml");
    }
}
