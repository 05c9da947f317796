//! What every sluice crate shares, and nothing else: time ([`Clock`]), secrets
//! ([`Secret`], [`Scrubber`]), URL redaction ([`redact_url`], the only one) and the
//! host name used in node ids.
//!
//! It depends on no other crate, so every crate may depend on it.

#![forbid(unsafe_code)]

mod clock;
mod redact;
mod secret;

pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use redact::redact_url;
pub use secret::{REDACTED, Scrubber, Secret};

/// This machine's host name (`$HOSTNAME`, else `/etc/hostname`), for the node ids
/// of lock tokens and job executions.
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
