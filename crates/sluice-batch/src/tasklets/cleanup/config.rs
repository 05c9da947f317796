//! `tasklet = { kind = "cleanup", … }` and `tasklet = { kind = "file_cleanup", … }`.

use serde::Deserialize;

use super::files::FileCleanup;
use super::rows::{AgeColumn, Archive, RowCleanup};
use crate::config::{ConfigError, duration};

/// `kind = "cleanup"`: delete rows older than a retention, or archive them
/// (copy to another table or to a JSON-lines file, then delete), in bounded
/// batches with a pause between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCleanupTasklet {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The table (`name` or `schema.name`).
    pub table: String,
    /// The column holding each row's age (its creation or last-change time).
    pub column: String,
    /// What `column` holds: `timestamp` (a date-time; on SQLite, text written
    /// `YYYY-MM-DD HH:MM:SS` in UTC), `unix_seconds` or `unix_millis`. Default
    /// `timestamp`.
    pub column_type: Option<String>,
    /// Rows whose `column` is older than this are removed: `"90d"`, `"12h"`.
    pub older_than: String,
    /// More condition, SQL ANDed to the age test (e.g. `status = 'done'`).
    #[serde(rename = "where")]
    pub condition: Option<String>,
    /// Rows per batch, each batch its own short transaction. Default 1000.
    pub batch: Option<u64>,
    /// Pause between batches, so that other writers and replicas keep up.
    /// Default `100ms`.
    pub pause: Option<String>,
    /// Copy the rows into this table (same columns, same database) in the
    /// batch's transaction before deleting them.
    pub archive_table: Option<String>,
    /// Append the rows, as JSON lines, to this file before deleting them; the
    /// file's committed length is kept in the database (`sluice_cleanup_state`)
    /// so a crash between the two never leaves a row in the file twice.
    pub archive_file: Option<String>,
    /// The unique column(s) batches are ordered and deleted by. Required for
    /// `archive_file`, and for `archive_table` on MySQL/MariaDB; otherwise
    /// SQLite's `rowid` and PostgreSQL's `ctid` are used.
    #[serde(default)]
    pub key: Vec<String>,
    /// Only count what would be removed; remove nothing. Default `false`.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop with an error after this many batches. Default 1,000,000.
    pub max_batches: Option<u64>,
}

kind!(RawCleanupTasklet => dyn crate::job::Tasklet, |c, _ctx| c.build()?);

impl RawCleanupTasklet {
    /// The tasklet (it connects when it runs).
    ///
    /// # Errors
    ///
    /// A bad duration, column type, batch size, or archive settings that do not
    /// fit together.
    pub fn build(self) -> Result<RowCleanup, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        let column = match self.column_type.as_deref().unwrap_or("timestamp") {
            "timestamp" => AgeColumn::Timestamp,
            "unix_seconds" => AgeColumn::UnixSeconds,
            "unix_millis" => AgeColumn::UnixMillis,
            other => {
                return Err(invalid(
                    "column_type",
                    format!(
                        "unknown column type {other:?}; use timestamp, unix_seconds or unix_millis"
                    ),
                ));
            }
        };
        let older_than = duration(&self.older_than)?;
        if older_than.is_zero() {
            return Err(invalid("older_than", "must be greater than zero".into()));
        }
        let batch = self.batch.unwrap_or(1000);
        if batch == 0 || batch > 1_000_000 {
            return Err(invalid("batch", format!("{batch} rows; use 1 to 1000000")));
        }
        let pause = match &self.pause {
            Some(p) => duration(p)?,
            None => std::time::Duration::from_millis(100),
        };
        let archive = match (self.archive_table, self.archive_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "archive_table",
                    "give archive_table or archive_file, not both".into(),
                ));
            }
            (Some(t), None) => Some(Archive::Table(t)),
            (None, Some(f)) => {
                if self.key.is_empty() {
                    return Err(invalid(
                        "key",
                        "archive_file needs key = [\"<unique column>\", …]".into(),
                    ));
                }
                Some(Archive::File(f.into()))
            }
            (None, None) => None,
        };
        let mysql = sluice_sql::DbKind::from_url(&self.url) == Some(sluice_sql::DbKind::MySql);
        if mysql && matches!(archive, Some(Archive::Table(_))) && self.key.is_empty() {
            return Err(invalid(
                "key",
                "archive_table on MySQL/MariaDB needs key = [\"<unique column>\", …] to order the batches".into(),
            ));
        }
        Ok(RowCleanup {
            url: self.url,
            table: self.table,
            column: self.column,
            column_type: column,
            older_than,
            age_text: self.older_than.clone(),
            condition: self.condition,
            batch,
            pause,
            archive,
            key: self.key,
            dry_run: self.dry_run,
            max_batches: self.max_batches.unwrap_or(1_000_000),
            counts: Default::default(),
        })
    }
}

/// `kind = "file_cleanup"`: delete files older than a retention whose names
/// match a pattern, under a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileCleanupTasklet {
    /// The directory.
    pub path: String,
    /// Wildcard pattern of the file names (`*` any run of characters, `?` one
    /// character), e.g. `"*.log.*"`. Default `*`.
    pub pattern: Option<String>,
    /// Files last modified longer ago than this are removed: `"14d"`.
    pub older_than: String,
    /// Into subdirectories too. Default `false`.
    #[serde(default)]
    pub recursive: bool,
    /// Keep the newest N matching files whatever their age. Default 0.
    pub keep_last: Option<usize>,
    /// Only list what would be removed. Default `false`.
    #[serde(default)]
    pub dry_run: bool,
}

kind!(RawFileCleanupTasklet => dyn crate::job::Tasklet, |c, _ctx| c.build()?);

impl RawFileCleanupTasklet {
    /// The tasklet.
    ///
    /// # Errors
    ///
    /// A bad duration or an empty path.
    pub fn build(self) -> Result<FileCleanup, ConfigError> {
        if self.path.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "path",
                reason: "must name a directory".into(),
            });
        }
        Ok(FileCleanup {
            dir: self.path.into(),
            pattern: self.pattern.unwrap_or_else(|| "*".into()),
            older_than: duration(&self.older_than)?,
            recursive: self.recursive,
            keep_last: self.keep_last.unwrap_or(0),
            dry_run: self.dry_run,
            counts: Default::default(),
        })
    }
}
