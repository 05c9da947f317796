//! `writer = { kind = "cache", … }`.

use serde::Deserialize;

use super::CacheWriter;
use crate::config::{BuildContext, ConfigError, duration};

/// `kind = "cache"`: entries in the gateway's store, under the key a client
/// request for `path` would use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheWriter {
    /// A request path with `{field}` placeholders filled from each item.
    pub path: String,
    /// Freshness of the entries written, e.g. `"1h"`.
    pub ttl: String,
}

kind!(RawCacheWriter => dyn crate::Writer, |c, ctx| Self::build(c, ctx)?);

impl RawCacheWriter {
    /// The writer, into the cache of `ctx`.
    ///
    /// # Errors
    ///
    /// No cache in `ctx`, a `ttl` that is not a duration, what
    /// [`CacheWriter::new`] refuses.
    pub fn build(self, ctx: &dyn BuildContext) -> Result<CacheWriter, ConfigError> {
        let target = ctx.cache_target().ok_or(ConfigError::NoCache)?;
        Ok(CacheWriter::for_target(
            target,
            &self.path,
            duration(&self.ttl)?,
        )?)
    }
}
