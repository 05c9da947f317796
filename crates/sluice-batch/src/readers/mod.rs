//! Built-in readers: local files, SQL tables or queries ([`SqlReader`]), and the
//! pages of an HTTP API ([`HttpPagesReader`], through a `sluice_upstream::Upstream`).
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

mod csv;
mod driver;
mod http_pages;
mod json;
mod jsonl;
mod split;
pub(crate) mod sql;

pub use csv::CsvReader;
pub use http_pages::{HttpPagesReader, Pagination};
pub use json::JsonArrayReader;
pub use jsonl::JsonLinesReader;
pub use sql::{SqlReader, SqlSource};
