//! [`CsvReader`]: delimited text files, in any ASCII-compatible encoding.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use csv::ByteRecord;
use encoding_rs::Encoding;
use serde_json::{Map, Value};

use crate::api::{ReadError, ReadItem, Reader, Rows};
use crate::readers::driver::{
    BATCH_BYTES, BATCH_ITEMS, Driver, Entry, Pos, Source, blocking, checkpoint_json,
    driven_reader_methods, io_fatal, io_transient, opened, parse_checkpoint, sniff_bom,
};
use crate::readers::split::Extent;

mod config;

pub use config::RawCsvReader;

/// Reads a CSV (or TSV, or any delimited) file, one JSON object per record.
///
/// - **Keys.** With a header (the default) its names are the keys, an empty name
///   becoming `cN` (N the 1-based column number); without one the keys are
///   `c1..cN`, N the field count of the file's first record.
///   [`columns`](Self::columns) gives the keys by position instead, and
///   [`rename`](Self::rename) renames single keys. Duplicate keys are an error at
///   [`open`](Reader::open).
/// - **Values.** Every value is a JSON string, except that an empty field is
///   `null` (set [`empty_as_null(false)`](Self::empty_as_null) to keep `""`).
///   A quoted empty field (`""`) is empty too.
/// - **Encoding.** UTF-8 unless set with [`encoding`](Self::encoding), e.g.
///   [`encoding_rs::EUC_KR`] (which decodes CP949/UHC, as used by Korean public
///   data files). A UTF-8 BOM is skipped and makes the file UTF-8 whatever the
///   setting; UTF-16 files and other encodings that are not ASCII-compatible are
///   refused. Fields are decoded one by one from the raw bytes, so positions stay
///   raw-file byte offsets.
/// - **Bad rows.** A record whose field count differs from the number of keys, or
///   with bytes invalid in the encoding, is a [`ReadError::Bad`] with its 1-based
///   data row number (the header and blank lines are not counted) and the record
///   as text; the next `read` goes on with the next row.
/// - **Checkpoint.** `{"offset": B, "row": R}`: B the byte offset in the raw file
///   of what follows the last record returned, R that record's row number.
///   Opening at it reads the header again, then seeks to B: O(1) whatever the row.
///   An offset that is not at a record boundary is refused (checked with the byte
///   before it, which must end a line).
///
/// Reading happens on tokio's blocking pool, 1024 records at a time with the next
/// batch read ahead, so no runtime thread blocks on the file. The reader also
/// hands out [`Rows`] ([`Reader::read_row`]): the same records without a JSON
/// object each.
pub struct CsvReader {
    config: CsvConfig,
    driver: Option<Driver<CsvSource>>,
    keys: Option<Arc<[String]>>,
}

debug_reader!(CsvReader, config);

#[derive(Debug, Clone)]
struct CsvConfig {
    path: PathBuf,
    delimiter: u8,
    quote: u8,
    encoding: &'static Encoding,
    has_header: bool,
    columns: Option<Vec<String>>,
    renames: Vec<(String, String)>,
    trim: bool,
    empty_as_null: bool,
    partition: Option<(usize, usize)>,
}

impl CsvReader {
    /// A reader of the file at `path`: comma-delimited, UTF-8, with a header.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvReader {
            config: CsvConfig {
                path: path.into(),
                delimiter: b',',
                quote: b'"',
                encoding: encoding_rs::UTF_8,
                has_header: true,
                columns: None,
                renames: Vec::new(),
                trim: false,
                empty_as_null: true,
                partition: None,
            },
            driver: None,
            keys: None,
        }
    }

    /// Reads only share `index` of `of` (0-based) of the file's data, split by
    /// byte offset at line starts (the header is read by every share). Files with
    /// line breaks inside quoted fields cannot be split this way. Positions count
    /// rows from the share's start.
    pub fn partition(mut self, index: usize, of: usize) -> Self {
        self.config.partition = Some((index, of.max(1)));
        self
    }

    /// The keys, by position, in place of the header's names (a header, if any, is
    /// still skipped and must have as many columns).
    pub fn columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Uses `key` for the column named `header` (a header name, a
    /// [`columns`](Self::columns) name or `cN`); an unknown name is an error at
    /// open.
    pub fn rename(mut self, header: impl Into<String>, key: impl Into<String>) -> Self {
        self.config.renames.push((header.into(), key.into()));
        self
    }

    setters! {
        config =>
        /// The field delimiter (default `,`; `b'\t'` for TSV).
        delimiter(delimiter: u8);
        /// The quote character (default `"`); a quote inside a quoted field is
        /// doubled.
        quote(quote: u8);
        /// The file's encoding (default UTF-8); it must be ASCII-compatible, and the
        /// delimiter and quote must not occur inside its multi-byte characters (true
        /// of EUC-KR/CP949 for the usual delimiters).
        encoding(encoding: &'static Encoding);
        /// Whether the first record is a header (default `true`).
        has_header(has_header: bool);
        /// Whether to trim ASCII whitespace around header names and fields (default
        /// `false`).
        trim(trim: bool);
        /// Whether an empty field is `null` (default `true`) or `""`.
        empty_as_null(empty_as_null: bool);
    }
}

#[async_trait]
impl Reader for CsvReader {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), ReadError> {
        self.driver = None;
        self.keys = None;
        let start = parse_checkpoint(checkpoint, "row")?;
        let config = self.config.clone();
        let (source, pos) = blocking(move || CsvSource::open(config, start)).await?;
        self.keys = Some(source.keys.clone());
        self.driver = Some(Driver::new(source, pos));
        Ok(())
    }

    fn row_keys(&self) -> Option<Arc<[String]>> {
        self.keys.clone()
    }

    async fn read_row(&mut self, rows: &mut Rows) -> Result<Option<u64>, ReadError> {
        opened(&mut self.driver, "CsvReader::read_row")?
            .next_row(rows)
            .await
    }

    driven_reader_methods!("CsvReader", |pos| checkpoint_json(pos, "row"));
}

/// The blocking half: a csv reader positioned at `base` in the raw file.
struct CsvSource {
    path: PathBuf,
    rdr: csv::Reader<File>,
    record: ByteRecord,
    keys: Arc<[String]>,
    encoding: &'static Encoding,
    delimiter: u8,
    empty_as_null: bool,
    /// Raw-file offset where `rdr` started.
    base: u64,
    /// Data rows consumed.
    row: u64,
    /// Where this reader's share ends (the file's length without partitions).
    end: u64,
    /// Where its share starts.
    start: u64,
}

fn builder(config: &CsvConfig) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(false)
        .flexible(true)
        .delimiter(config.delimiter)
        .quote(config.quote)
        .buffer_capacity(64 * 1024)
        .trim(if config.trim {
            csv::Trim::All
        } else {
            csv::Trim::None
        });
    b
}

fn decode(encoding: &'static Encoding, bytes: &[u8]) -> Option<String> {
    if encoding == encoding_rs::UTF_8 {
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    } else {
        encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(std::borrow::Cow::into_owned)
    }
}

/// The record as text (lossy), fields joined by the delimiter.
fn raw_text(record: &ByteRecord, encoding: &'static Encoding, delimiter: u8) -> String {
    let mut out = String::new();
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            out.push(char::from(delimiter));
        }
        out.push_str(&encoding.decode_without_bom_handling(field).0);
    }
    out
}

fn fatal(path: &Path, message: impl std::fmt::Display) -> ReadError {
    ReadError::Fatal(format!("{}: {message}", path.display()))
}

impl CsvSource {
    fn open(config: CsvConfig, start: Option<Pos>) -> Result<(Self, Pos), ReadError> {
        let path = config.path.as_path();
        let mut file = File::open(path).map_err(|e| io_fatal(path, e))?;
        let len = file.metadata().map_err(|e| io_fatal(path, e))?.len();

        let (encoding, bom_len) = match sniff_bom(&mut file, path)? {
            Some((enc, n)) if enc == encoding_rs::UTF_8 => (enc, n as u64),
            Some((enc, _)) => {
                return Err(fatal(
                    path,
                    format_args!("{} files are not supported; convert to UTF-8", enc.name()),
                ));
            }
            None => (config.encoding, 0),
        };
        if !encoding.is_ascii_compatible() {
            return Err(fatal(
                path,
                format_args!("encoding {} is not ASCII-compatible", encoding.name()),
            ));
        }

        // The header (or the first record, for its field count).
        file.seek(SeekFrom::Start(bom_len))
            .map_err(|e| io_fatal(path, e))?;
        let mut record = ByteRecord::new();
        let (first, first_end) = {
            let mut prefix = builder(&config).from_reader(&mut file);
            let found = prefix
                .read_byte_record(&mut record)
                .map_err(|e| fatal(path, e))?;
            (found, bom_len + prefix.position().byte())
        };
        let data_start = if config.has_header {
            first_end
        } else {
            bom_len
        };

        let mut keys: Vec<String> = match (&config.columns, config.has_header) {
            (Some(columns), true) if first && record.len() != columns.len() => {
                return Err(fatal(
                    path,
                    format_args!(
                        "the header has {} columns but {} were given",
                        record.len(),
                        columns.len()
                    ),
                ));
            }
            (Some(columns), _) => columns.clone(),
            (None, true) => {
                let mut keys = Vec::with_capacity(record.len());
                for (i, name) in record.iter().enumerate() {
                    let name = decode(encoding, name).ok_or_else(|| {
                        fatal(
                            path,
                            format_args!(
                                "header column {} is not valid {}",
                                i + 1,
                                encoding.name()
                            ),
                        )
                    })?;
                    keys.push(if name.is_empty() {
                        format!("c{}", i + 1)
                    } else {
                        name
                    });
                }
                keys
            }
            (None, false) => (1..=record.len()).map(|i| format!("c{i}")).collect(),
        };
        for (from, to) in &config.renames {
            let key = keys
                .iter_mut()
                .find(|k| *k == from)
                .ok_or_else(|| fatal(path, format_args!("rename: no column named `{from}`")))?;
            key.clone_from(to);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                return Err(fatal(
                    path,
                    format_args!("duplicate column `{key}` (use columns() or rename())"),
                ));
            }
        }

        let extent = Extent { data_start, len };
        let (pos, span) = extent.start(
            &mut file,
            path,
            config.partition,
            start,
            |b| matches!(b, b'\n' | b'\r'),
            |offset| {
                fatal(
                    path,
                    format_args!(
                        "checkpoint offset {offset} is not at a record boundary (file of {len} bytes, data from byte {data_start})"
                    ),
                )
            },
        )?;

        file.seek(SeekFrom::Start(pos.offset))
            .map_err(|e| io_fatal(path, e))?;
        let rdr = builder(&config).from_reader(file);
        Ok((
            CsvSource {
                path: config.path,
                rdr,
                record,
                keys: keys.into(),
                encoding,
                delimiter: config.delimiter,
                empty_as_null: config.empty_as_null,
                base: pos.offset,
                row: pos.n,
                end: span.1,
                start: span.0,
            },
            pos,
        ))
    }

    /// The current record as a bad row, for `reason`.
    fn bad(&self, reason: String) -> ReadError {
        ReadError::Bad {
            position: self.row,
            reason,
            raw: Some(raw_text(&self.record, self.encoding, self.delimiter)),
        }
    }

    /// The current record, checked to have one field per key.
    fn record(&self) -> Result<&ByteRecord, ReadError> {
        let record = &self.record;
        if record.len() != self.keys.len() {
            return Err(self.bad(format!(
                "expected {} fields, found {}",
                self.keys.len(),
                record.len()
            )));
        }
        Ok(record)
    }

    /// The bad row for field `key`, not valid in the encoding.
    fn undecodable(&self, key: &str) -> ReadError {
        self.bad(format!(
            "field `{key}` is not valid {}",
            self.encoding.name()
        ))
    }

    fn item(&self) -> Result<ReadItem, ReadError> {
        let record = self.record()?;
        let mut map = Map::new();
        for (key, field) in self.keys.iter().zip(record.iter()) {
            let value = if field.is_empty() && self.empty_as_null {
                Value::Null
            } else {
                Value::String(decode(self.encoding, field).ok_or_else(|| self.undecodable(key))?)
            };
            map.insert(key.clone(), value);
        }
        Ok(ReadItem {
            item: Value::Object(map),
            position: self.row,
        })
    }
}

impl CsvSource {
    /// Appends the current record to `rows` (with `rows`' keys, these keys).
    fn push_row(&self, rows: &mut Rows) -> Result<ReadItem, ReadError> {
        let record = self.record()?;
        let done = ReadItem {
            item: Value::Null,
            position: self.row,
        };
        let empty_as_null = self.empty_as_null;
        if self.encoding == encoding_rs::UTF_8 {
            // The fields lie end to end in the record: check them all at once, then
            // that no field boundary splits a character.
            let bytes = record.as_slice();
            let text = std::str::from_utf8(bytes).ok().filter(|text| {
                (0..record.len()).all(|i| {
                    record
                        .range(i)
                        .is_some_and(|r| text.is_char_boundary(r.end))
                })
            });
            let Some(text) = text else {
                let key = self
                    .keys
                    .iter()
                    .zip(record.iter())
                    .find(|(_, f)| std::str::from_utf8(f).is_err())
                    .map_or("?", |(k, _)| k.as_str());
                return Err(self.undecodable(key));
            };
            rows.push_joined(
                text,
                (0..record.len()).map(|i| {
                    let r = record.range(i).unwrap_or_default();
                    (!(r.is_empty() && empty_as_null)).then_some(r.end)
                }),
            );
            return Ok(done);
        }
        let mut fields = Vec::with_capacity(record.len());
        for (key, field) in self.keys.iter().zip(record.iter()) {
            if field.is_empty() && empty_as_null {
                fields.push(None);
                continue;
            }
            fields.push(Some(
                decode(self.encoding, field).ok_or_else(|| self.undecodable(key))?,
            ));
        }
        rows.push_row(fields.iter().map(Option::as_deref));
        Ok(done)
    }

    /// Reads up to a batch of records, as items or (`rows`) as rows.
    fn fill_with(&mut self, out: &mut VecDeque<Entry>, mut rows: Option<&mut Rows>) -> bool {
        let start = self.rdr.position().byte();
        while out.len() < BATCH_ITEMS {
            if self.base + self.rdr.position().byte() >= self.end {
                return true;
            }
            match self.rdr.read_byte_record(&mut self.record) {
                Ok(true) => {
                    self.row += 1;
                    let rel = self.rdr.position().byte();
                    let result = match rows.as_deref_mut() {
                        Some(rows) => self.push_row(rows),
                        None => self.item(),
                    };
                    out.push_back(Entry {
                        result,
                        pos: Pos {
                            offset: self.base + rel,
                            n: self.row,
                        },
                    });
                    if rel - start >= BATCH_BYTES {
                        return false;
                    }
                }
                Ok(false) => return true,
                Err(e) => {
                    let error = match e.into_kind() {
                        csv::ErrorKind::Io(e) => io_transient(&self.path, e),
                        other => fatal(&self.path, format_args!("{other:?}")),
                    };
                    out.push_back(Entry::stop(error));
                    return true;
                }
            }
        }
        false
    }
}

impl Source for CsvSource {
    fn span(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    fn fill(&mut self, out: &mut VecDeque<Entry>) -> bool {
        self.fill_with(out, None)
    }

    fn fill_rows(&mut self, out: &mut VecDeque<Entry>, rows: &mut Rows) -> (bool, bool) {
        if rows.keys().len() != self.keys.len() {
            *rows = Rows::new(self.keys.clone());
        }
        (self.fill_with(out, Some(rows)), true)
    }
}
