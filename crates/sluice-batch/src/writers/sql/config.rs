//! `writer = { kind = "sql_upsert" | "sql_append", … }`.

use serde::Deserialize;

use super::{Column, SqlWriter, SqlWriterOptions, WriteMode};
use crate::config::ConfigError;

/// `kind = "sql_upsert"`: multi-row upserts (insert or update on `key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlUpsertWriter {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The table.
    pub table: String,
    /// The column(s) of the unique key rows are matched on.
    pub key: Vec<String>,
    /// `"name TYPE [NOT NULL]"`, in order (for `create`, and typed binds).
    pub columns: Option<Vec<String>>,
    /// Create the table (and `indexes`) when missing. Default `false`.
    #[serde(default)]
    pub create: bool,
    /// Indexes created with the table, each a list of columns.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
}

/// `kind = "sql_append"`: plain inserts (PostgreSQL: COPY).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlAppendWriter {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The table.
    pub table: String,
    /// `"name TYPE [NOT NULL]"`, in order (for `create`, and typed binds).
    pub columns: Option<Vec<String>>,
    /// Create the table (and `indexes`) when missing. Default `false`.
    #[serde(default)]
    pub create: bool,
    /// Indexes created with the table, each a list of columns.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
}

kind!(RawSqlUpsertWriter => dyn crate::Writer, |c, _ctx| Self::build(c)?);

impl RawSqlUpsertWriter {
    /// The writer (it connects when opened).
    ///
    /// # Errors
    ///
    /// An empty `key`, a column spec that is not `"name TYPE [NOT NULL]"`, what
    /// [`SqlWriter::new`] refuses.
    pub fn build(self) -> Result<SqlWriter, ConfigError> {
        if self.key.is_empty() {
            return Err(ConfigError::Needs {
                what: "sql_upsert",
                needs: "key = [\"column\", …]; use sql_append for plain inserts",
            });
        }
        let options = SqlWriterOptions::new(self.table)
            .key(self.key)
            .mode(WriteMode::Upsert);
        writer(&self.url, options, self.columns, self.create, self.indexes)
    }
}

kind!(RawSqlAppendWriter => dyn crate::Writer, |c, _ctx| Self::build(c)?);

impl RawSqlAppendWriter {
    /// The writer (it connects when opened).
    ///
    /// # Errors
    ///
    /// A column spec that is not `"name TYPE [NOT NULL]"`, what [`SqlWriter::new`]
    /// refuses.
    pub fn build(self) -> Result<SqlWriter, ConfigError> {
        let options = SqlWriterOptions::new(self.table).mode(WriteMode::Append);
        writer(&self.url, options, self.columns, self.create, self.indexes)
    }
}

/// The writer of `options`, with the configured columns, `create` and indexes.
fn writer(
    url: &str,
    mut options: SqlWriterOptions,
    columns: Option<Vec<String>>,
    create: bool,
    indexes: Vec<Vec<String>>,
) -> Result<SqlWriter, ConfigError> {
    options = options.create(create);
    if let Some(cols) = columns {
        options = options.columns(cols.iter().map(|c| column(c)).collect::<Result<_, _>>()?);
    }
    for ix in indexes {
        options = options.index(ix);
    }
    SqlWriter::new(url, options).map_err(ConfigError::SqlWriter)
}

/// `"name TYPE [NOT NULL]"` → a column.
fn column(spec: &str) -> Result<Column, ConfigError> {
    let spec = spec.trim();
    let (name, ty) = spec
        .split_once(char::is_whitespace)
        .ok_or_else(|| ConfigError::Column(spec.to_owned()))?;
    let ty = ty.trim();
    let upper = ty.to_ascii_uppercase();
    Ok(match upper.strip_suffix("NOT NULL") {
        Some(_) => Column::new(name, ty[..ty.len() - 8].trim_end()).not_null(),
        None => Column::new(name, ty),
    })
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn column_specs() {
        assert_eq!(
            column(" pm10 double precision not null ").ok(),
            Some(Column::new("pm10", "double precision").not_null())
        );
        assert_eq!(column("id BIGINT").ok(), Some(Column::new("id", "BIGINT")));
        assert_eq!(
            column("id").unwrap_err().to_string(),
            "column \"id\" must be written \"name TYPE\", like \"pm10 DOUBLE PRECISION\""
        );
    }
}
