//! `writer = { kind = "csv" | "jsonl", … }`.

use serde::Deserialize;

use super::FileWriter;
use crate::config::{ConfigError, delimiter};

/// `kind = "csv"`: a CSV file (written under a temp name, renamed when the
/// step completes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCsvWriter {
    /// The file.
    pub path: String,
    /// Field delimiter, one ASCII character or `"\t"`. Default `,`.
    pub delimiter: Option<String>,
    /// The item keys written, in order. Default: the first item's keys.
    pub columns: Option<Vec<String>>,
}

/// `kind = "jsonl"`: a JSON Lines file (written under a temp name, renamed
/// when the step completes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonlWriter {
    /// The file.
    pub path: String,
}

kind!(RawCsvWriter => dyn crate::Writer, |c, _ctx| Self::build(c)?);

impl RawCsvWriter {
    /// The writer.
    ///
    /// # Errors
    ///
    /// A delimiter longer than one byte.
    pub fn build(self) -> Result<FileWriter, ConfigError> {
        let mut w = FileWriter::csv(self.path);
        if let Some(d) = self.delimiter {
            w = w.delimiter(delimiter(&d)?);
        }
        if let Some(c) = self.columns {
            w = w.columns(c);
        }
        Ok(w)
    }
}

kind!(RawJsonlWriter => dyn crate::Writer, |c, _ctx| Self::build(c));

impl RawJsonlWriter {
    /// The writer.
    pub fn build(self) -> FileWriter {
        FileWriter::json_lines(self.path)
    }
}
