//! [`JsonLinesReader`]: one JSON value per line.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;

use crate::api::{ReadError, ReadItem, Reader};
use crate::readers::driver::{
    BATCH_BYTES, BATCH_ITEMS, Driver, Entry, MAX_ITEM_BYTES, Pos, Source, checkpoint_json,
    driven_reader_methods, io_fatal, io_transient, parse_checkpoint, raw_excerpt, utf8_bom_len,
};
use crate::readers::split::Extent;

mod config;

pub use config::RawJsonlReader;

/// Reads a JSON Lines file (NDJSON): one JSON value per line, UTF-8.
///
/// - Lines may end with `\n` or `\r\n`; the last one needs no line end. A UTF-8
///   BOM at the start is skipped.
/// - Blank lines (only whitespace) are skipped, but counted: an item's
///   [`position`](ReadItem::position) is its 1-based line number in the file.
/// - A line that is not one JSON value is a [`ReadError::Bad`] with its line
///   number and text; the next `read` goes on with the next line.
/// - **Checkpoint.** `{"offset": B, "line": L}`: B the byte offset after the last
///   line returned, L its line number. Opening at it seeks to B: O(1). An offset
///   that is not at the start of a line is refused.
///
/// - **Partitions.** [`partition`](Self::partition) narrows the reader to a share
///   of the file's bytes, cut at line starts; positions then count lines from the
///   share's start.
///
/// Reading happens on tokio's blocking pool, 1024 lines (or 4 MiB) at a time with
/// the next batch read ahead.
pub struct JsonLinesReader {
    path: PathBuf,
    driver: Option<Driver<JsonlSource>>,
    partition: Option<(usize, usize)>,
}

debug_reader!(JsonLinesReader, path);

impl JsonLinesReader {
    /// A reader of the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesReader {
            path: path.into(),
            driver: None,
            partition: None,
        }
    }

    /// Reads only share `index` of `of` (0-based) of the file, split by byte
    /// offset at line starts.
    pub fn partition(mut self, index: usize, of: usize) -> Self {
        self.partition = Some((index, of.max(1)));
        self
    }
}

#[async_trait]
impl Reader for JsonLinesReader {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), ReadError> {
        self.driver = None;
        let start = parse_checkpoint(checkpoint, "line")?;
        let path = self.path.clone();
        let partition = self.partition;
        self.driver = Some(Driver::start(move || JsonlSource::open(path, start, partition)).await?);
        Ok(())
    }

    driven_reader_methods!("JsonLinesReader", |pos| checkpoint_json(pos, "line"));
}

struct JsonlSource {
    path: PathBuf,
    rdr: BufReader<File>,
    line: Vec<u8>,
    pos: Pos,
    /// Where this reader's share ends (the file's length without partitions).
    end: u64,
    /// Where its share starts.
    start: u64,
}

fn is_ws(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl JsonlSource {
    fn open(
        path: PathBuf,
        start: Option<Pos>,
        partition: Option<(usize, usize)>,
    ) -> Result<(Self, Pos), ReadError> {
        let mut file = File::open(&path).map_err(|e| io_fatal(&path, e))?;
        let len = file.metadata().map_err(|e| io_fatal(&path, e))?.len();
        let data_start = utf8_bom_len(&mut file, &path)?;
        let extent = Extent { data_start, len };
        let (pos, span) = extent.start(
            &mut file,
            &path,
            partition,
            start,
            |b| b == b'\n',
            |offset| {
                ReadError::Fatal(format!(
                    "{}: checkpoint offset {offset} is not at the start of a line (file of {len} bytes)",
                    path.display()
                ))
            },
        )?;
        file.seek(SeekFrom::Start(pos.offset))
            .map_err(|e| io_fatal(&path, e))?;
        Ok((
            JsonlSource {
                path,
                rdr: BufReader::with_capacity(64 * 1024, file),
                line: Vec::new(),
                pos,
                end: span.1,
                start: span.0,
            },
            pos,
        ))
    }
}

impl Source for JsonlSource {
    fn span(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    fn fill(&mut self, out: &mut VecDeque<Entry>) -> bool {
        let start = self.pos.offset;
        while out.len() < BATCH_ITEMS && self.pos.offset - start < BATCH_BYTES {
            if self.pos.offset >= self.end {
                return true;
            }
            self.line.clear();
            let limit = MAX_ITEM_BYTES as u64 + 1;
            let n =
                match std::io::Read::take(&mut self.rdr, limit).read_until(b'\n', &mut self.line) {
                    Ok(0) => return true,
                    Ok(n) => n,
                    Err(e) => {
                        out.push_back(Entry::stop(io_transient(&self.path, e)));
                        return true;
                    }
                };
            self.pos.offset += n as u64;
            self.pos.n += 1;
            if n > MAX_ITEM_BYTES && self.line.last() != Some(&b'\n') {
                // Too long to parse: pass over the rest of it without keeping it.
                let rest = match skip_line(&mut self.rdr) {
                    Ok(r) => r,
                    Err(e) => {
                        out.push_back(Entry::stop(io_transient(&self.path, e)));
                        return true;
                    }
                };
                self.pos.offset += rest;
                out.push_back(Entry {
                    result: Err(ReadError::Bad {
                        position: self.pos.n,
                        reason: format!(
                            "line of {} bytes is longer than the {} MiB limit",
                            n as u64 + rest,
                            MAX_ITEM_BYTES >> 20
                        ),
                        raw: Some(raw_excerpt(&self.line)),
                    }),
                    pos: self.pos,
                });
                continue;
            }
            let Some(first) = self.line.iter().position(|b| !is_ws(b)) else {
                continue; // blank line
            };
            let last = self.line.iter().rposition(|b| !is_ws(b)).unwrap_or(first);
            let text = &self.line[first..=last];
            let result = match serde_json::from_slice::<Value>(text) {
                Ok(item) => Ok(ReadItem {
                    item,
                    position: self.pos.n,
                }),
                Err(e) => Err(ReadError::Bad {
                    position: self.pos.n,
                    reason: format!("not JSON: {e}"),
                    raw: Some(raw_excerpt(text)),
                }),
            };
            out.push_back(Entry {
                result,
                pos: self.pos,
            });
        }
        false
    }
}

/// Consumes bytes up to and including the next newline; returns how many.
fn skip_line(rdr: &mut impl BufRead) -> std::io::Result<u64> {
    let mut n = 0u64;
    loop {
        let buf = rdr.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                rdr.consume(i + 1);
                return Ok(n + i as u64 + 1);
            }
            None => {
                let len = buf.len();
                rdr.consume(len);
                n += len as u64;
            }
        }
    }
}
