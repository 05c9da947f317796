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

impl crate::config::Kind<dyn crate::Processor> for RawJqProcessor {
    fn build(
        self,
        _ctx: &dyn crate::config::BuildContext,
    ) -> Result<Box<dyn crate::Processor>, crate::config::ConfigError> {
        Ok(Box::new(Self::build(self)?))
    }
}

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
