//! Built-in processors, one folder per kind: [`JqProcessor`] (a jq expression over
//! each item). [`RawProcessor`] is the registry of kinds: a new kind is a folder
//! here with its config, plus its variant (and that variant's arm in
//! [`RawProcessor::build`]).

mod jq;

use std::sync::Arc;

use serde::Deserialize;

pub use jq::{JqProcessor, RawJqProcessor};

use crate::api::Processor;
use crate::config::{BuildContext, ConfigError};

/// `processor = { kind = "jq", expr = "…" }`: what happens to each item.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawProcessor {
    /// `kind = "jq"`: a jq program; each output is an item, none filters it out.
    Jq(RawJqProcessor),
}

impl RawProcessor {
    /// The processor, in `ctx` (which the `jq` kind does not need).
    ///
    /// # Errors
    ///
    /// What the kind's config says is wrong ([`ConfigError`]).
    pub fn build(self, ctx: &dyn BuildContext) -> Result<Arc<dyn Processor>, ConfigError> {
        let _ = ctx;
        Ok(match self {
            Self::Jq(c) => Arc::new(c.build()?),
        })
    }
}
