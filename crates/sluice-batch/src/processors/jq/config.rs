//! `processor = { kind = "jq", … }`.

use serde::Deserialize;

use super::JqProcessor;
use crate::config::ConfigError;

/// `kind = "jq"`: a jq program; each output is an item, none filters it out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJqProcessor {
    /// The jq program.
    pub expr: String,
}

kind!(RawJqProcessor => dyn crate::Processor, |c, _ctx| Self::build(c)?);

impl RawJqProcessor {
    /// The processor.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Processor`] when the program does not compile.
    pub fn build(self) -> Result<JqProcessor, ConfigError> {
        JqProcessor::new(&self.expr).map_err(ConfigError::Processor)
    }
}
