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

kind!(RawJsonlReader => dyn crate::Reader, |c, ctx| Self::build(c, ctx.share()));

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
