//! `ok_when`: a jq predicate that decides whether an upstream answer is a success.
//!
//! Public data portals answer most errors with HTTP 200 and an error code in the
//! body, so the status alone cannot decide what is cached. The predicate runs over
//! the body parsed as JSON; XML bodies (the portal's default format, and the format
//! of its gateway-layer errors) are first converted to the same JSON shape
//! (`<response><header><resultCode>00…` becomes `.response.header.resultCode`), so
//! one predicate serves both formats. A body that is neither, or a predicate whose
//! first output is not truthy, is a rejection. The rejection carries the upstream's
//! own error code and message when they can be found, for the client's error body.

use jaq_json::Val;
use serde_json::{Map, Value};

use crate::body::{BodyError, excerpt, parse_json_or_xml};
use crate::jq::{Jq, JqError, to_val};

/// A compiled `ok_when` predicate.
pub struct OkWhen {
    jq: Jq,
}

impl std::fmt::Debug for OkWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OkWhen").field(&self.jq.source()).finish()
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Short explanation (`predicate was false`, `body is neither JSON nor XML`).
    pub reason: String,
    /// The upstream's own error code, if found (`resultCode`, `returnReasonCode`, …).
    pub code: Option<String>,
    /// The upstream's own error message, if found.
    pub message: Option<String>,
}

impl OkWhen {
    /// Compiles a jq predicate.
    ///
    /// # Errors
    ///
    /// A [`JqError`] describing the parse or compile error.
    pub fn compile(source: &str) -> Result<Self, JqError> {
        Ok(Self {
            jq: Jq::compile(source)?,
        })
    }

    /// The predicate's source text.
    pub fn source(&self) -> &str {
        self.jq.source()
    }

    /// Checks a body, judged as JSON or XML by its first byte.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] when the body is unreadable or the predicate is not truthy.
    pub fn check(&self, body: &[u8]) -> Result<(), Rejection> {
        self.check_typed(body, None)
    }

    /// Checks a body whose `Content-Type` is `content_type`.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] when the body is unreadable (not JSON or XML, nested too
    /// deep) or the predicate is not truthy.
    pub fn check_typed(&self, body: &[u8], content_type: Option<&[u8]>) -> Result<(), Rejection> {
        let (val, json) = parse_body(body, content_type).map_err(|e| Rejection {
            reason: e.to_string(),
            code: None,
            message: None,
        })?;
        let first = self.jq.first(val);
        let ok = matches!(&first, Some(Ok(v)) if jaq_core::ValT::as_bool(v));
        if ok {
            return Ok(());
        }
        let reason = match first {
            Some(Err(e)) => format!("predicate failed: {}", excerpt(&e.message, 200)),
            None => "predicate produced no output".into(),
            _ => "predicate was false".into(),
        };
        let (code, message) = find_error_code(&json);
        Err(Rejection {
            reason,
            code,
            message,
        })
    }
}

/// Parses a body as JSON, or converts XML to JSON (see [`parse_json_or_xml`]).
/// Returns the jq value and the serde value (for the error-code lookup).
///
/// # Errors
///
/// Why the body could not be read.
pub fn parse_body(body: &[u8], content_type: Option<&[u8]>) -> Result<(Val, Value), BodyError> {
    let json = parse_json_or_xml(body, content_type)?;
    let val = to_val(&json).map_err(|_| BodyError::TooDeep { at: 0 })?;
    Ok((val, json))
}

const CODE_KEYS: [&str; 4] = ["returnReasonCode", "resultCode", "CODE", "code"];
const MESSAGE_KEYS: [&str; 6] = [
    "returnAuthMsg",
    "resultMsg",
    "MESSAGE",
    "errMsg",
    "message",
    "error",
];

/// Looks for an upstream error code and message anywhere in the first levels of a
/// body: the portal's `returnReasonCode` / `resultCode`, Seoul's `RESULT.CODE`, and
/// common `code` / `message` fields.
pub fn find_error_code(v: &Value) -> (Option<String>, Option<String>) {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(excerpt(s.trim(), 200)),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    fn walk(m: &Map<String, Value>, keys: &[&str], depth: usize) -> Option<String> {
        for k in keys {
            if let Some(s) = m.get(*k).and_then(scalar) {
                return Some(s);
            }
        }
        if depth == 0 {
            return None;
        }
        m.values().find_map(|v| match v {
            Value::Object(o) => walk(o, keys, depth - 1),
            _ => None,
        })
    }
    match v {
        Value::Object(m) => (walk(m, &CODE_KEYS, 4), walk(m, &MESSAGE_KEYS, 4)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRED: &str = r#".response.header.resultCode == "00""#;

    #[test]
    fn compiled_filters_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OkWhen>();
    }

    #[test]
    fn json_success_and_failure() {
        let ok = OkWhen::compile(PRED).unwrap();
        ok.check(br#"{"response":{"header":{"resultCode":"00","resultMsg":"NORMAL_SERVICE"}}}"#)
            .unwrap();
        let r = ok
            .check(
                br#"{"response":{"header":{"resultCode":"01","resultMsg":"APPLICATION_ERROR"}}}"#,
            )
            .unwrap_err();
        assert_eq!(r.code.as_deref(), Some("01"));
        assert_eq!(r.message.as_deref(), Some("APPLICATION_ERROR"));
    }

    #[test]
    fn xml_bodies_are_checked_in_the_same_shape() {
        let ok = OkWhen::compile(PRED).unwrap();
        ok.check(b"<?xml version=\"1.0\"?><response><header><resultCode>00</resultCode></header><body><items/></body></response>")
            .unwrap();
        let gw = b"<OpenAPI_ServiceResponse><cmmMsgHeader><errMsg>SERVICE ERROR</errMsg><returnAuthMsg>SERVICE_KEY_IS_NOT_REGISTERED_ERROR</returnAuthMsg><returnReasonCode>30</returnReasonCode></cmmMsgHeader></OpenAPI_ServiceResponse>";
        let r = ok.check(gw).unwrap_err();
        assert_eq!(r.code.as_deref(), Some("30"));
        assert_eq!(
            r.message.as_deref(),
            Some("SERVICE_KEY_IS_NOT_REGISTERED_ERROR")
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let ok = OkWhen::compile(PRED).unwrap();
        let r = ok.check(b"\x00\x01 not json").unwrap_err();
        assert!(
            r.reason.starts_with("the body is not valid JSON"),
            "{}",
            r.reason
        );
        assert!(ok.check(br#"{"response":{"header":"#).is_err());
    }

    #[test]
    fn deep_bodies_are_rejections_and_messages_are_excerpts() {
        let ok = OkWhen::compile(PRED).unwrap();
        for n in [200, 8_000, 100_000] {
            let xml = format!("{}x{}", "<a>".repeat(n), "</a>".repeat(n));
            let r = ok.check(xml.as_bytes()).unwrap_err();
            assert!(r.reason.contains("deeper than 128"), "{}", r.reason);
            let json = format!("{}1{}", "[".repeat(n), "]".repeat(n));
            let r = ok.check(json.as_bytes()).unwrap_err();
            assert!(r.reason.contains("deeper than 128"), "{}", r.reason);
        }
        let long = format!(
            r#"{{"response":{{"header":{{"resultCode":"30","resultMsg":"{}\n{}"}}}}}}"#,
            "m".repeat(500),
            "x"
        );
        let r = ok.check(long.as_bytes()).unwrap_err();
        let m = r.message.unwrap();
        assert_eq!(m.chars().count(), 201);
        assert!(!m.contains('\n'));
    }

    #[test]
    fn invalid_predicates_are_reported() {
        let e = OkWhen::compile(".response.header.resultCode ==").unwrap_err();
        assert!(e.message.starts_with("invalid jq expression"), "{e}");
        let e = OkWhen::compile("nosuchfn(1)").unwrap_err();
        assert!(e.message.contains("nosuchfn"), "{e}");
    }
}
