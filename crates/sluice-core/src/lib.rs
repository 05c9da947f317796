//! What every sluice crate shares, and nothing else: time ([`Clock`]), secrets
//! ([`Secret`], [`Scrubber`]), the value types of config files ([`config`]: durations,
//! sizes, secrets as written), URL redaction ([`redact_url`], the only one), the
//! host name used in node ids, the one handle to a shared Redis ([`redis::Redis`],
//! with its outage breaker [`Backend`]), an upstream's call budget
//! ([`quota::Quota`]), the jittered wait between retries ([`full_jitter`]) and
//! the once-per-process guard of a hot path ([`SeenOnce`]).
//!
//! The Redis handle and the quota live here rather than in the cache crate
//! because the queue, the scheduler's claims and the workers use them too, and
//! none of those caches anything. This crate depends on no other sluice crate, so
//! every crate may depend on it.

#![forbid(unsafe_code)]

mod backoff;
mod clock;
pub mod config;
pub mod health;
pub mod metrics;
pub mod quota;
mod redact;
pub mod redis;
mod secret;
mod seen;

pub use backoff::full_jitter;
pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use health::{Backend, Unavailable};
pub use quota::{LocalQuota, Quota, QuotaExceeded, QuotaSnapshot, RedisQuota};
pub use redact::redact_url;
pub use redis::{Redis, RedisOptions};
pub use secret::{REDACTED, Scrubber, Secret};
pub use seen::SeenOnce;

/// This machine's host name (`$HOSTNAME`, else `/etc/hostname`), for the node ids
/// of lock tokens and job executions.
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
