//! `reader = { kind = "sql", … }`.

use serde::Deserialize;

use super::SqlReader;
use crate::config::ConfigError;

/// `kind = "sql"`: the rows of a table or query, by keyset pagination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlReader {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The table (or give `query`).
    pub table: Option<String>,
    /// A `SELECT` (or give `table`).
    pub query: Option<String>,
    /// The unique, ordered column(s) pages are cut by.
    pub key: Vec<String>,
    /// The columns to read. Default: all.
    pub columns: Option<Vec<String>>,
    /// Rows per page. Default 1000.
    pub page: Option<usize>,
}

kind!(RawSqlReader => dyn crate::Reader, |c, ctx| Self::build(c, ctx.share())?);

impl RawSqlReader {
    /// The reader (counting the rows on open, for progress), narrowed to
    /// partition `share` (`(index, of)`) when given.
    ///
    /// # Errors
    ///
    /// An empty `key`, not exactly one of `table` and `query`, a partition that
    /// does not exist.
    pub fn build(self, share: Option<(usize, usize)>) -> Result<SqlReader, ConfigError> {
        if self.key.is_empty() {
            return Err(ConfigError::EmptyKey);
        }
        let mut r = match (self.table, self.query) {
            (Some(t), None) => SqlReader::table(self.url, t, self.key),
            (None, Some(q)) => SqlReader::query(self.url, q, self.key),
            _ => return Err(ConfigError::OneOf(&["table", "query"])),
        };
        if let Some(c) = self.columns {
            r = r.columns(c);
        }
        if let Some(p) = self.page {
            r = r.page_size(p.max(1));
        }
        if let Some((i, n)) = share {
            r = r.partition(i, n)?;
        }
        Ok(r.count_total(true))
    }
}
