//! The value types of the config file. Durations, sizes and secrets are
//! `sluice_core::config`'s (the stores' configs in `sluice-cache` write them the
//! same way); here are retries, and reading a secret into a located error.

use std::time::Duration;

use serde::Deserialize;
use sluice_core::Secret;
pub use sluice_core::config::{Dur, Env, RawSecret, Size, parse_duration, parse_size};

use super::{ConfigError, Source};

/// `retries = { max = 2, backoff = "200ms", max_backoff = "5s" }`: how often
/// and how long to retry (the defaults are those of the table it is in).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries after the first attempt.
    pub max: Option<u32>,
    /// Base of the exponential backoff (full jitter): each wait is uniform in
    /// `[0, min(max_backoff, backoff × 2^attempt)]`.
    pub backoff: Option<Dur>,
    /// Longest single wait.
    pub max_backoff: Option<Dur>,
}

impl RawRetry {
    /// `(max, backoff, max_backoff)`, each given or from `default`.
    pub fn or(&self, default: (u32, Duration, Duration)) -> (u32, Duration, Duration) {
        (
            self.max.unwrap_or(default.0),
            self.backoff.map_or(default.1, |d| d.0),
            self.max_backoff.map_or(default.2, |d| d.0),
        )
    }
}

/// Reads a secret; an error at `key` when it cannot be (see [`RawSecret::read`]
/// for what [`Env::secrets_optional`] allows).
pub(super) fn read_secret(
    s: &RawSecret,
    src: &Source,
    env: &Env<'_>,
    key: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Secret> {
    s.read(env)
        .map_err(|e| errs.push(src.err(e.span, key, e.message)))
        .ok()
}
