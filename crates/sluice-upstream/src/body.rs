//! Reading untrusted bodies: JSON, or XML converted to the same JSON shape,
//! bounded in depth so that no document can exhaust the stack.
//!
//! One parser for every place a body from outside is read: `ok_when` in the
//! gateway, the HTTP pages reader of batch jobs and its cached pages. Size is
//! bounded before this point (an upstream's `max_response`).

use serde_json::Value;

/// The deepest nesting accepted, in elements (XML) or arrays and objects (JSON).
/// serde_json's own parser stops at the same depth.
pub const MAX_DEPTH: usize = 128;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Nothing but whitespace.
    #[error("the body is empty")]
    Empty,
    /// An HTML page (an error page, a login wall), which is neither format.
    #[error("the body is HTML, not JSON or XML")]
    Html,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("the body nests deeper than {MAX_DEPTH} levels (at byte {at})")]
    TooDeep {
        /// Byte offset where the limit was crossed.
        at: u64,
    },
    /// Not well-formed JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// Not well-formed XML.
    #[error("the body is not well-formed XML at byte {at}: {reason}")]
    Xml {
        /// Byte offset of the error.
        at: u64,
        /// What the XML parser said.
        reason: String,
    },
}

/// Parses `body` as JSON or XML: as its content type says when it names JSON or
/// XML, else by its first character (`<` is XML). A UTF-8 byte order mark is
/// skipped.
///
/// # Errors
///
/// A [`BodyError`] saying what is wrong and where.
pub fn parse_json_or_xml(body: &[u8], content_type: Option<&[u8]>) -> Result<Value, BodyError> {
    let ct = content_type
        .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
        .unwrap_or_default();
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(BodyError::Empty)?;
    let body = &body[start..];
    if ct.contains("html") {
        return Err(BodyError::Html);
    }
    let xml = if ct.contains("json") {
        false
    } else {
        ct.contains("xml") || body[0] == b'<'
    };
    if xml {
        crate::xml::xml_to_json(body)
    } else {
        parse_json(body)
    }
}

/// Parses JSON with serde_json's depth limit, reported as [`BodyError::TooDeep`].
///
/// # Errors
///
/// [`BodyError::Json`] with serde_json's message (line and column), or
/// [`BodyError::TooDeep`].
pub fn parse_json(body: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("recursion limit exceeded") {
            BodyError::TooDeep {
                at: byte_offset(body, e.line(), e.column()),
            }
        } else {
            BodyError::Json(msg)
        }
    })
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> u64 {
    let mut seen = 1;
    for (i, b) in body.iter().enumerate() {
        if seen == line {
            return (i + column.saturating_sub(1)) as u64;
        }
        if *b == b'\n' {
            seen += 1;
        }
    }
    body.len() as u64
}

/// A short, single-line version of text taken from an upstream's body for an
/// error message: control characters become spaces and it is cut at `max`
/// characters (with `…`).
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_content_type_or_first_byte() {
        assert_eq!(parse_json_or_xml(b" {\"a\":1}", None).unwrap()["a"], 1);
        assert_eq!(
            parse_json_or_xml(b"\xEF\xBB\xBF<r><a>1</a></r>", None).unwrap()["r"]["a"],
            "1"
        );
        assert_eq!(
            parse_json_or_xml(b"<html></html>", Some(b"text/html")),
            Err(BodyError::Html)
        );
        assert_eq!(parse_json_or_xml(b"  \n", None), Err(BodyError::Empty));
        assert!(matches!(
            parse_json_or_xml(b"<r>", Some(b"application/json")),
            Err(BodyError::Json(_))
        ));
    }

    #[test]
    fn deep_json_is_an_error_in_every_shape() {
        for doc in [
            format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
            "[".repeat(1_000_000),
        ] {
            let e = parse_json_or_xml(doc.as_bytes(), None).unwrap_err();
            assert!(matches!(e, BodyError::TooDeep { .. }), "{e}");
            assert!(e.to_string().contains("deeper than 128"), "{e}");
        }
        let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_json_or_xml(ok.as_bytes(), None).is_ok());
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        assert_eq!(excerpt("a\nb\u{7}c", 10), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
