//! Built-in writers.
//!
//! - [`SqlWriter`]: upserts (or appends) chunks into a table of SQLite, PostgreSQL
//!   or MySQL/MariaDB. SQLite and MySQL get multi-row `INSERT … ON CONFLICT` /
//!   `ON DUPLICATE KEY UPDATE` statements sized to their bind-parameter limits;
//!   PostgreSQL gets `COPY … FROM STDIN` for appends and for upserts of new keys,
//!   and one `MERGE … USING (SELECT … FROM UNNEST(…))` when keys exist. Its upserts
//!   are idempotent, so it needs no checkpoint of its own; [`SqlWriter::kind`] and
//!   [`SqlWriter::url`] tell which database it writes to.
//! - [`FileWriter`]: CSV or JSON Lines into `<path>.tmp-sluice`, synced after each
//!   chunk, renamed to `<path>` when the step completes; its checkpoint (the temp
//!   file's length) lets a restart drop the chunks written after the last commit.
//! - [`CacheWriter`]: items become entries of a gateway's cache, under the keys
//!   of the requests a client would send for them (through
//!   `sluice_cache::CacheTarget`, so batch does not depend on the gateway).
//!
//! All follow the [`Writer`](crate::api::Writer) contract: a chunk is written all
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
mod file;
mod ident;
mod sql;

pub use cache::{CacheWriter, CacheWriterError};
pub use file::{FileFormat, FileWriter, TEMP_SUFFIX};
pub use sluice_sql::{DbKind, MYSQL_MAX_PARAMS, POSTGRES_MAX_PARAMS, SQLITE_MAX_PARAMS};
pub use sql::{Column, SqlWriter, SqlWriterOptions, WriteMode};
