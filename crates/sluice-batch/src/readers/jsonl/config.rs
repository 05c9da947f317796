//! `reader = { kind = "jsonl", … }`.

use serde::Deserialize;

use super::JsonLinesReader;

/// `kind = "jsonl"`: JSON Lines, one item per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonlReader {
    /// The file.
    pub path: String,
}

impl crate::config::Kind<dyn crate::Reader> for RawJsonlReader {
    fn build(
        self,
        ctx: &dyn crate::config::BuildContext,
    ) -> Result<Box<dyn crate::Reader>, crate::config::ConfigError> {
        Ok(Box::new(Self::build(self, ctx.share())))
    }
}

impl RawJsonlReader {
    /// The reader, narrowed to partition `share` (`(index, of)`) when given.
    pub fn build(self, share: Option<(usize, usize)>) -> JsonLinesReader {
        let r = JsonLinesReader::new(self.path);
        match share {
            Some((i, n)) => r.partition(i, n),
            None => r,
        }
    }
}
