//! Tasklets: steps that do one thing.
//!
//! - [`SqlTasklet`]: one SQL statement (or script), or a statement repeated in
//!   small transactions until it affects no row ([`BatchLoop`]), for large
//!   `DELETE`/`UPDATE`s that must not lock a table for minutes;
//! - [`ShellTasklet`]: a shell command with a timeout, its output captured into the
//!   exit message;
//! - [`RowCleanup`] and [`FileCleanup`]: rows or files older than a retention
//!   removed (rows in bounded batches, optionally archived first);
//! - [`HttpTasklet`]: one `GET` through a gateway [`Upstream`](sluice_upstream::Upstream) (secrets, quota and
//!   `ok_when` apply);
//! - [`BackupTasklet`]: a compressed, checksummed backup of a database (or of
//!   sluice's repository) to a directory or an S3 bucket, with retention.
//!
//! One module per kind, its config (`Raw*`, as written in a step's `tasklet`
//! table) beside it; [`RawTasklet`] is the registry of kinds. A new kind is a
//! module here plus its variant of [`RawTasklet`] (one line in its
//! `registry!`); the kind's `config.rs` implements [`Kind`](crate::config::Kind).

pub mod backup;
mod cleanup;
mod http;
mod shell;
mod sql;

use serde::Deserialize;

pub use backup::{BackupTasklet, RawBackupTasklet};
pub use cleanup::{
    AgeColumn, Archive, FileCleanup, RawCleanupTasklet, RawFileCleanupTasklet, RowCleanup, wildcard,
};
pub use http::{HttpTasklet, RawHttpTasklet};
pub use shell::{DEFAULT_TAIL_BYTES, RawShellTasklet, ShellTasklet};
pub use sql::{BatchLoop, RawSqlTasklet, SqlTasklet};

use crate::job::Tasklet;

registry! {
dyn Tasklet =>
/// `tasklet = { kind = …, … }`: a step that does one thing, instead of
/// reader/processor/writer.
#[allow(clippy::large_enum_variant, reason = "built once per run")]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawTasklet {
    /// `kind = "sql"`: one SQL statement.
    Sql(RawSqlTasklet),
    /// `kind = "shell"`: a shell command (`sh -c`); a non-zero exit fails the step.
    Shell(RawShellTasklet),
    /// `kind = "http"`: one GET through an upstream.
    Http(RawHttpTasklet),
    /// `kind = "cleanup"`: rows older than a retention deleted or archived, in
    /// batches.
    Cleanup(RawCleanupTasklet),
    /// `kind = "file_cleanup"`: files older than a retention deleted.
    FileCleanup(RawFileCleanupTasklet),

    /// `kind = "backup"`: a zstd-compressed, SHA-256-checksummed backup of a
    /// database or of the repository, to a directory or S3, with retention
    /// (read back by `sluice backup list | verify | restore`).
    Backup(RawBackupTasklet),
}
}
