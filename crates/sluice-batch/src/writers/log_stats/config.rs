//! `writer = { kind = "log_stats", … }`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{LogStatsSpec, LogStatsWriter, Rule};
use crate::config::ConfigError;

/// `kind = "log_stats"`: per time window (and group), counts, error rate,
/// p50/p95/p99 of a value and the top values of a field, merged into a SQL
/// table exactly once per chunk (README, "Log analysis").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogStatsWriter {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The stats table (created when missing): one row per window and group.
    pub table: String,
    /// The window length: `"1m"`, `"5m"`, `"1h"`, `"1d"`. Windows start at
    /// multiples of it since the Unix epoch (UTC).
    pub window: String,
    /// Item fields whose values make a group (`["route"]`, `["method",
    /// "status"]`); each is a column of the table. Default: one group.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The numeric field whose p50/p95/p99, mean, min and max are kept
    /// (`"request_time"`, `"latency_ms"`). Default: none (counts only).
    pub value: Option<String>,
    /// Which items are errors: comparisons joined by `or` (or `and`), like
    /// `status >= 500 or status == 429` or `cache == "error"`. Default
    /// `status >= 500`.
    pub error_when: Option<String>,
    /// More counts by rule, each giving columns `<name>_count` and
    /// `<name>_ratio`: `{ hit = 'cache == "hit"' }`.
    #[serde(default)]
    pub count_when: BTreeMap<String, String>,
    /// The most frequent values of a field: `{ field = "path", n = 10 }`.
    pub top: Option<RawTop>,
    /// The field holding the item's time: Unix milliseconds, or RFC 3339 text.
    /// Default `time_ms` (what the log reader gives).
    pub time_field: Option<String>,
}

/// `top = { field = …, n = … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTop {
    /// The field counted (`"path"`).
    pub field: String,
    /// How many values the `top` column lists. Default 10.
    pub n: Option<usize>,
    /// How many distinct values a row's count map keeps (the least counted
    /// are dropped beyond it). Default 10 × `n`, at least 100.
    pub keep: Option<usize>,
}

kind!(RawLogStatsWriter => dyn crate::Writer, |c, _ctx| Self::build(c)?);

impl RawLogStatsWriter {
    /// The writer (it connects when opened).
    ///
    /// # Errors
    ///
    /// A bad window, rule, name or URL.
    pub fn build(self) -> Result<LogStatsWriter, ConfigError> {
        let window = crate::config::duration(&self.window)?;
        let error_when = match &self.error_when {
            Some(r) => Rule::parse(r).map_err(|e| ConfigError::Log(format!("error_when: {e}")))?,
            None => Rule::server_errors(),
        };
        let count_when = self
            .count_when
            .iter()
            .map(|(k, r)| {
                Rule::parse(r)
                    .map(|r| (k.clone(), r))
                    .map_err(|e| ConfigError::Log(format!("count_when.{k}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let top = self.top.map(|t| {
            let n = t.n.unwrap_or(10).max(1);
            (t.field, n, t.keep.unwrap_or((n * 10).max(100)).max(n))
        });
        let spec = LogStatsSpec {
            table: self.table,
            window,
            group_by: self.group_by,
            value: self.value,
            error_when,
            count_when,
            top,
            time_field: self.time_field.unwrap_or_else(|| "time_ms".into()),
        };
        LogStatsWriter::new(&self.url, spec).map_err(ConfigError::Log)
    }
}
