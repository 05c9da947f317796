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

impl crate::config::Kind<dyn crate::Writer> for RawCsvWriter {
    fn build(
        self,
        _ctx: &dyn crate::config::BuildContext,
    ) -> Result<Box<dyn crate::Writer>, crate::config::ConfigError> {
        Ok(Box::new(Self::build(self)?))
    }
}

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

impl crate::config::Kind<dyn crate::Writer> for RawJsonlWriter {
    fn build(
        self,
        _ctx: &dyn crate::config::BuildContext,
    ) -> Result<Box<dyn crate::Writer>, crate::config::ConfigError> {
        Ok(Box::new(Self::build(self)))
    }
}

impl RawJsonlWriter {
    /// The writer.
    pub fn build(self) -> FileWriter {
        FileWriter::json_lines(self.path)
    }
}
