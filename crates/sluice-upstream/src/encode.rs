//! The one percent-encoding of query components.
//!
//! It lives with the upstream client because that is where a query is finally
//! written (secrets injected with it); the gateway's canonical keys and the batch
//! readers, tasklets and cache writer encode with the same function, so what a job
//! sends and what the gateway keys are byte for byte the same.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are in a canonical query component: the RFC 3986
/// unreserved set (`A-Z a-z 0-9 - . _ ~`). Everything else is percent-encoded, which
/// is also how a portal service key (`+`, `/`, `=`) must be sent: encoded once.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` for a query name or value (unreserved characters kept).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}
