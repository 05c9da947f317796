//! Built-in readers: local files, SQL tables or queries ([`SqlReader`]), and the
//! pages of an HTTP API ([`HttpPagesReader`], through a `sluice_upstream::Upstream`).
//!
//! One folder per kind, its config (`Raw*`, as written in a step's `reader`
//! table) in its `config.rs`; [`RawReader`] is the registry of kinds. A new kind
//! is a folder here plus its variant of [`RawReader`] (one line in its
//! `registry!`); the kind's `config.rs` implements [`Kind`](crate::config::Kind).
//!
//! | reader | input | item | checkpoint |
//! |---|---|---|---|
//! | [`CsvReader`] | delimited text, UTF-8 or a legacy encoding (EUC-KR/CP949, …) | `{key: "value" \| null}` | `{"offset", "row"}` |
//! | [`JsonLinesReader`] | one JSON value per line | the value | `{"offset", "line"}` |
//! | [`JsonArrayReader`] | one JSON array, top-level or at a JSON pointer | each element | `{"index", "offset"}` |
//! | [`SqlReader`] | a table or `FROM` fragment of SQLite, PostgreSQL or MySQL, by keyset pages | a row as an object | `{"after", "position"}` |
//!
//! The file readers:
//!
//! - have **exact** checkpoints holding a byte offset in the raw file, so opening
//!   at a checkpoint seeks there instead of reading everything before it again;
//! - report an unreadable row as [`ReadError::Bad`](crate::ReadError::Bad) with
//!   its 1-based position, and go on with the next one; a missing file, a broken
//!   structure or a checkpoint that does not fit the file is
//!   [`Fatal`](crate::ReadError::Fatal), an I/O error while reading
//!   [`Transient`](crate::ReadError::Transient);
//! - skip a UTF-8 byte order mark;
//! - do their blocking file I/O and parsing on tokio's blocking pool
//!   (`spawn_blocking`), in batches of up to 1024 items with the next batch read
//!   ahead, so they never block a runtime thread and work on a `current_thread`
//!   runtime too. A `read` future dropped mid-way loses nothing.
//!
//! ```no_run
//! use sluice_batch::Reader;
//! use sluice_batch::readers::CsvReader;
//!
//! # async fn demo() -> Result<(), sluice_batch::ReadError> {
//! let mut reader = CsvReader::new("stations.csv")
//!     .encoding(encoding_rs::EUC_KR)
//!     .rename("측정소명", "station");
//! reader.open(None).await?;
//! while let Some(row) = reader.read().await? {
//!     println!("{}: {}", row.position, row.item);
//! }
//! # Ok(())
//! # }
//! ```

/// `impl Debug` for a file reader: `Name { field: …, checkpoint: … }`.
macro_rules! debug_reader {
    ($reader:ident, $field:ident) => {
        impl std::fmt::Debug for $reader {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($reader))
                    .field(stringify!($field), &self.$field)
                    .field("checkpoint", &self.checkpoint())
                    .finish()
            }
        }
    };
}

mod csv;
mod driver;
mod http_pages;
mod json;
mod jsonl;
pub mod log;
mod split;
pub(crate) mod sql;

pub use csv::{CsvReader, RawCsvReader};
pub use http_pages::{HttpPagesReader, Pagination, RawHttpPagesReader};
pub use json::{JsonArrayReader, RawJsonReader};
pub use jsonl::{JsonLinesReader, RawJsonlReader};
pub use log::{LogFormat, LogReader, RawLogReader};
pub use sql::{RawSqlReader, SqlReader, SqlSource};

use serde::Deserialize;

use crate::api::Reader;

registry! {
dyn Reader =>
/// `reader = { kind = …, … }`: where a chunk step's items come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawReader {
    /// `kind = "csv"`: a CSV file, one item (a JSON object) per record.
    Csv(RawCsvReader),
    /// `kind = "jsonl"`: JSON Lines, one item per line.
    Jsonl(RawJsonlReader),
    /// `kind = "json"`: one JSON array (optionally inside an object, at
    /// `pointer`), one item per element.
    Json(RawJsonReader),
    /// `kind = "http_pages"`: the pages of an upstream API, through its client
    /// (secrets, retries, rate limits).
    HttpPages(RawHttpPagesReader),
    /// `kind = "sql"`: the rows of a table or query, by keyset pagination.
    Sql(RawSqlReader),
    /// `kind = "log"`: an access log (nginx, Apache, sluice, JSON lines),
    /// followed across rotation.
    Log(RawLogReader),
}
}
