//! Built-in writers, one folder per writer type, its configs (`Raw*`, as written
//! in a step's `writer` table) in its `config.rs`; [`RawWriter`] is the registry
//! of kinds. A new kind is a folder here plus its variant of [`RawWriter`] (one line in its
//! `registry!`); the kind's `config.rs` implements [`Kind`](crate::config::Kind).
//!
//! - [`SqlWriter`]: upserts (or appends) chunks into a table of SQLite, PostgreSQL
//!   or MySQL/MariaDB. SQLite and MySQL get multi-row `INSERT … ON CONFLICT` /
//!   `ON DUPLICATE KEY UPDATE` statements sized to their bind-parameter limits;
//!   PostgreSQL gets `COPY … FROM STDIN` for appends and for upserts of new keys,
//!   and one `MERGE … USING (SELECT … FROM UNNEST(…))` when keys exist. Its upserts
//!   are idempotent, so it needs no checkpoint of its own; [`SqlWriter::kind`] and
//!   [`SqlWriter::url`] tell which database it writes to. Into the repository's
//!   own database, each chunk's transaction also runs the repository's chunk
//!   commit; into any other database, it updates the step's row of a
//!   `sluice_checkpoint` table there ([`CHECKPOINT_TABLE`], created when
//!   missing: job name, instance and step, the execution that holds the row, the
//!   chunk sequence, counts and checkpoint), fenced by the execution id. A crash
//!   between the target's commit and the repository's then repeats nothing: on
//!   restart the step finds the target ahead and resumes from its checkpoint.
//!   Appends and upserts are exactly once on SQLite, PostgreSQL and
//!   MySQL/MariaDB alike (a chunk with a refused item, rewritten item by item,
//!   is the exception: see [`ChunkStep`](crate::ChunkStep)).
//! - [`FileWriter`]: CSV or JSON Lines into `<path>.tmp-sluice`, synced after each
//!   chunk, renamed to `<path>` when the step completes; its checkpoint (the temp
//!   file's length) lets a restart drop the chunks written after the last commit.
//! - [`CacheWriter`]: items become entries of a gateway's cache, under the keys
//!   of the requests a client would send for them (through
//!   `sluice_cache::CacheTarget`, so batch does not depend on the gateway).
//! - [`EmailWriter`]: one e-mail per item, rendered from MiniJinja templates and
//!   sent over SMTP under a shared rate limit, each recorded under an
//!   idempotency key in a send log ([`EMAIL_LOG_TABLE`]) so that a restart
//!   never sends twice (see its module for the `sending` → `sent` records).
//!
//! All follow the [`Writer`] contract: a chunk is written all
//! or nothing and is durable when `write` returns (items or rows, as its
//! [`ChunkForm`](crate::api::ChunkForm) says); a refused item is a
//! [`WriteError::Item`](crate::api::WriteError::Item), so that the step can find it
//! by writing the chunk again item by item; identifiers are checked before any SQL
//! runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_batch::WriteError> {
//! use sluice_batch::{Chunk, Writer};
//! use sluice_batch::writers::{Column, SqlWriter, SqlWriterOptions};
//!
//! let options = SqlWriterOptions::new("measurements")
//!     .key(["id"])
//!     .columns(vec![
//!         Column::new("id", "BIGINT"),
//!         Column::new("station", "TEXT").not_null(),
//!         Column::new("pm10", "DOUBLE PRECISION"),
//!     ])
//!     .create(true)
//!     .index(["station"]);
//! let mut writer = SqlWriter::new("sqlite://air.db", options)?;
//! writer.open(None).await?;
//! let items = [serde_json::json!({"id": 1, "station": "종로구", "pm10": 31.5})];
//! writer.write(Chunk::Items(&items), &[]).await?;
//! # Ok(())
//! # }
//! ```

mod cache;
mod email;
mod file;
mod ident;
pub mod log_stats;
mod sql;

pub use cache::{CacheWriter, CacheWriterError, RawCacheWriter};
pub use email::{
    DryRun, EMAIL_LOG_TABLE, EmailSecret, EmailWriter, OnUncertain, RawEmailWriter, RawTemplates,
    SecretTable, UNCERTAIN,
};
pub use file::{FileFormat, FileWriter, RawCsvWriter, RawJsonlWriter, TEMP_SUFFIX};
pub use log_stats::{LogStatsWriter, RawLogStatsWriter};
pub use sluice_sql::{DbKind, MYSQL_MAX_PARAMS, POSTGRES_MAX_PARAMS, SQLITE_MAX_PARAMS};
pub use sql::{
    CHECKPOINT_TABLE, Column, RawSqlAppendWriter, RawSqlUpsertWriter, SqlWriter, SqlWriterOptions,
    WriteMode,
};

use serde::Deserialize;

use crate::api::Writer;

registry! {
dyn Writer =>
/// `writer = { kind = …, … }`: where a chunk step's chunks go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum RawWriter {
    /// `kind = "sql_upsert"`: multi-row upserts (insert or update on `key`).
    SqlUpsert(RawSqlUpsertWriter),
    /// `kind = "sql_append"`: plain inserts (PostgreSQL: COPY).
    SqlAppend(RawSqlAppendWriter),
    /// `kind = "csv"`: a CSV file (written under a temp name, renamed when the
    /// step completes).
    Csv(RawCsvWriter),
    /// `kind = "jsonl"`: a JSON Lines file (written under a temp name, renamed
    /// when the step completes).
    Jsonl(RawJsonlWriter),
    /// `kind = "cache"`: entries in the gateway's store, under the key a client
    /// request for `path` would use.
    Cache(RawCacheWriter),
    /// `kind = "log_stats"`: per-window counts, error rates, percentiles and
    /// top values of log items, merged into a SQL table exactly once.
    LogStats(RawLogStatsWriter),
    /// `kind = "email"`: one e-mail per item, from MiniJinja templates, over
    /// SMTP at most once per key (or `.eml` files in a dry run).
    Email(RawEmailWriter),
}
}
