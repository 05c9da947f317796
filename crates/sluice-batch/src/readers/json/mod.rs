//! [`JsonArrayReader`]: the items of one JSON array, streamed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use crate::api::{ReadError, ReadItem, Reader};
use crate::readers::driver::{
    BATCH_BYTES, BATCH_ITEMS, Driver, Entry, MAX_ITEM_BYTES, Pos, Source, driven_reader_methods,
    io_fatal, io_transient, raw_excerpt, utf8_bom_len,
};

mod config;

pub use config::RawJsonReader;

/// Reads the items of a JSON array in a UTF-8 file: the whole file
/// (`[{…}, {…}]`), or an array inside it picked by a JSON pointer
/// ([`pointer`](Self::pointer), e.g. `/response/body/items`).
///
/// The file is streamed, never loaded whole: a small scanner finds where each
/// item starts and ends (tracking strings and brackets) and only one item at a
/// time is parsed, so memory stays bounded by the largest item. With a pointer,
/// the scanner walks to the array, skipping the values before it.
///
/// - An item's [`position`](ReadItem::position) is its 1-based index in the
///   array.
/// - An item that is delimited but not valid JSON (`[1, tru, 3]`, `{"a" 1}`) is
///   a [`ReadError::Bad`] and reading goes on. A broken structure (an unclosed
///   string or bracket, a missing comma, the end of the file before `]`) is
///   [`ReadError::Fatal`]. A trailing comma before `]` is tolerated; anything but
///   whitespace after a top-level array is refused.
/// - **Checkpoint.** `{"index": N, "offset": B}`: N the index of the last item
///   returned, B the byte offset after it (and its comma). Opening at it walks to
///   the array again (cheap: only what precedes the array is scanned) and seeks
///   to B. A checkpoint with only `"index"` is accepted too, and skips N items.
///
/// Data portals often send a lone object where a one-element array is expected
/// (`"item": {…}` instead of `"item": [{…}]`); with
/// [`object_as_single_item(true)`](Self::object_as_single_item) an object found
/// at the pointer is read as a one-item array instead of being an error.
pub struct JsonArrayReader {
    config: ArrayConfig,
    driver: Option<Driver<ArraySource>>,
}

#[derive(Debug, Clone)]
struct ArrayConfig {
    path: PathBuf,
    pointer: String,
    object_as_item: bool,
}

debug_reader!(JsonArrayReader, config);

impl JsonArrayReader {
    /// A reader of the top-level array of the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonArrayReader {
            config: ArrayConfig {
                path: path.into(),
                pointer: String::new(),
                object_as_item: false,
            },
            driver: None,
        }
    }

    /// Reads the array at this JSON pointer (RFC 6901: `/a/b/0`, `~1` for `/`,
    /// `~0` for `~`) instead of the top-level one. An empty pointer is the whole
    /// file. A pointer that does not resolve is an error at open.
    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.config.pointer = pointer.into();
        self
    }

    setters! {
        config =>
        /// Whether an object where the array is expected is read as a one-item array
        /// (default `false`: an error).
        object_as_single_item(object_as_item: bool);
    }
}

#[async_trait]
impl Reader for JsonArrayReader {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), ReadError> {
        self.driver = None;
        let start = match checkpoint.filter(|v| !v.is_null()) {
            None => None,
            Some(cp) => match cp.get("index").and_then(Value::as_u64) {
                Some(index) => {
                    let offset = match cp.get("offset") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(v.as_u64().ok_or_else(|| bad_checkpoint(cp))?),
                    };
                    Some((index, offset))
                }
                None => return Err(bad_checkpoint(cp)),
            },
        };
        let config = self.config.clone();
        self.driver = Some(Driver::start(move || ArraySource::open(config, start)).await?);
        Ok(())
    }

    driven_reader_methods!("JsonArrayReader", |pos| {
        serde_json::json!({ "index": pos.n, "offset": pos.offset })
    });
}

fn bad_checkpoint(cp: &Value) -> ReadError {
    ReadError::Fatal(format!(
        "checkpoint {cp} does not fit this reader (expected {{\"index\": N, \"offset\": N}})"
    ))
}

/// A scanning failure.
enum ScanError {
    Io(std::io::Error),
    Syntax(String),
}

impl From<std::io::Error> for ScanError {
    fn from(e: std::io::Error) -> Self {
        ScanError::Io(e)
    }
}

impl ScanError {
    /// I/O errors are fatal while opening and transient after.
    fn into_read_error(self, path: &Path, opening: bool) -> ReadError {
        match self {
            ScanError::Io(e) if opening => io_fatal(path, e),
            ScanError::Io(e) => io_transient(path, e),
            ScanError::Syntax(m) => ReadError::Fatal(format!("{}: {m}", path.display())),
        }
    }
}

/// Splits JSON text into values without parsing them.
struct Scanner {
    rdr: BufReader<File>,
    /// Raw-file offset of the next byte.
    pos: u64,
    /// Closing brackets expected, innermost last.
    stack: Vec<u8>,
    /// The last value copied out was longer than [`MAX_ITEM_BYTES`]; only its
    /// start was kept.
    overflow: bool,
}

impl Scanner {
    fn syntax(&self, what: impl std::fmt::Display) -> ScanError {
        ScanError::Syntax(format!("malformed JSON at byte {}: {what}", self.pos))
    }

    /// The next byte that is not whitespace, not consumed.
    fn skip_ws(&mut self) -> Result<Option<u8>, ScanError> {
        loop {
            let buf = self.rdr.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                Some(i) => {
                    let b = buf[i];
                    self.rdr.consume(i);
                    self.pos += i as u64;
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.rdr.consume(n);
                    self.pos += n as u64;
                }
            }
        }
    }

    /// Consumes one byte (after `skip_ws` saw it).
    fn bump(&mut self) {
        self.rdr.consume(1);
        self.pos += 1;
    }

    /// Consumes the value starting at the next byte (not whitespace), appending
    /// its bytes to `out`.
    fn value(&mut self, mut out: Option<&mut Vec<u8>>) -> Result<(), ScanError> {
        self.stack.clear();
        self.overflow = false;
        let Some(first) = self.skip_ws()? else {
            return Err(self.syntax("unexpected end of file"));
        };
        let scalar = !matches!(first, b'"' | b'{' | b'[');
        let mut in_string = false;
        let mut escape = false;
        loop {
            let buf = self.rdr.fill_buf()?;
            if buf.is_empty() {
                return if scalar {
                    Ok(())
                } else {
                    Err(self.syntax("unexpected end of file inside a value"))
                };
            }
            let mut i = 0;
            let mut done = false;
            if scalar {
                match buf
                    .iter()
                    .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                {
                    Some(j) => {
                        i = j;
                        done = true;
                    }
                    None => i = buf.len(),
                }
            } else {
                while i < buf.len() {
                    let b = buf[i];
                    i += 1;
                    if in_string {
                        if escape {
                            escape = false;
                        } else if b == b'\\' {
                            escape = true;
                        } else if b == b'"' {
                            in_string = false;
                            if self.stack.is_empty() {
                                done = true;
                                break;
                            }
                        }
                        continue;
                    }
                    match b {
                        b'"' => in_string = true,
                        b'{' => self.stack.push(b'}'),
                        b'[' => self.stack.push(b']'),
                        b'}' | b']' => {
                            if self.stack.pop() != Some(b) {
                                let at = self.pos + i as u64 - 1;
                                return Err(ScanError::Syntax(format!(
                                    "malformed JSON at byte {at}: unexpected `{}`",
                                    char::from(b)
                                )));
                            }
                            if self.stack.is_empty() {
                                done = true;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some(out) = out.as_deref_mut() {
                if out.len() + i <= MAX_ITEM_BYTES {
                    out.extend_from_slice(&buf[..i]);
                } else {
                    self.overflow = true;
                    if out.len() < 4096 {
                        out.extend_from_slice(&buf[..i.min(4096)]);
                    }
                }
            }
            self.rdr.consume(i);
            self.pos += i as u64;
            if done {
                return Ok(());
            }
        }
    }

    /// Inside an array: consumes the next element (appending it to `out`) and
    /// its comma, and returns `true`; or returns `false` at the closing `]`
    /// (not consumed).
    fn element(&mut self, out: Option<&mut Vec<u8>>) -> Result<bool, ScanError> {
        match self.skip_ws()? {
            None => return Err(self.syntax("unexpected end of file: the array is not closed")),
            Some(b']') => return Ok(false),
            Some(b @ (b',' | b'}' | b':')) => {
                return Err(self.syntax(format_args!("unexpected `{}`", char::from(b))));
            }
            Some(_) => self.value(out)?,
        }
        match self.skip_ws()? {
            Some(b',') => self.bump(),
            Some(b']') => {}
            None => return Err(self.syntax("unexpected end of file: the array is not closed")),
            Some(b) => {
                return Err(self.syntax(format_args!(
                    "expected `,` or `]` after an item, found `{}`",
                    char::from(b)
                )));
            }
        }
        Ok(true)
    }

    /// Walks from the start of a value to the value at `segments`; `Ok(false)`
    /// when it is not there.
    fn navigate(&mut self, segments: &[String]) -> Result<bool, ScanError> {
        let mut key = Vec::new();
        for segment in segments {
            match self.skip_ws()? {
                Some(b'{') => {
                    self.bump();
                    loop {
                        match self.skip_ws()? {
                            Some(b'"') => {}
                            Some(b'}') | None => return Ok(false),
                            Some(b) => {
                                return Err(self.syntax(format_args!(
                                    "expected a key, found `{}`",
                                    char::from(b)
                                )));
                            }
                        }
                        key.clear();
                        self.value(Some(&mut key))?;
                        let name: String = serde_json::from_slice(&key)
                            .map_err(|e| self.syntax(format_args!("bad key: {e}")))?;
                        if self.skip_ws()? != Some(b':') {
                            return Err(self.syntax("expected `:`"));
                        }
                        self.bump();
                        if name == *segment {
                            break;
                        }
                        self.value(None)?;
                        match self.skip_ws()? {
                            Some(b',') => self.bump(),
                            Some(b'}') => {}
                            _ => return Err(self.syntax("expected `,` or `}`")),
                        }
                    }
                }
                Some(b'[') => {
                    let Ok(index) = segment.parse::<u64>() else {
                        return Ok(false);
                    };
                    self.bump();
                    for _ in 0..index {
                        if !self.element(None)? {
                            return Ok(false);
                        }
                    }
                    if self.skip_ws()? == Some(b']') {
                        return Ok(false);
                    }
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// The segments of a JSON pointer.
fn pointer_segments(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

enum Mode {
    Array,
    Single,
    Done,
}

struct ArraySource {
    path: PathBuf,
    scan: Scanner,
    mode: Mode,
    top_level: bool,
    index: u64,
    item: Vec<u8>,
    /// The file's length.
    len: u64,
}

impl ArraySource {
    fn open(
        config: ArrayConfig,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<(Self, Pos), ReadError> {
        let path = config.path;
        let fatal = |m: String| ReadError::Fatal(format!("{}: {m}", path.display()));
        let segments = pointer_segments(&config.pointer).ok_or_else(|| {
            fatal(format!(
                "`{}` is not a JSON pointer (it must be empty or start with `/`)",
                config.pointer
            ))
        })?;
        let mut file = File::open(&path).map_err(|e| io_fatal(&path, e))?;
        let len = file.metadata().map_err(|e| io_fatal(&path, e))?.len();
        let bom = utf8_bom_len(&mut file, &path)?;
        file.seek(SeekFrom::Start(bom))
            .map_err(|e| io_fatal(&path, e))?;
        let mut scan = Scanner {
            rdr: BufReader::with_capacity(64 * 1024, file),
            pos: bom,
            stack: Vec::new(),
            overflow: false,
        };
        let opening = |e: ScanError| e.into_read_error(&path, true);
        let where_ = if segments.is_empty() {
            "the top level".to_owned()
        } else {
            format!("`{}`", config.pointer)
        };
        if !scan.navigate(&segments).map_err(opening)? {
            return Err(fatal(format!(
                "JSON pointer `{}` not found",
                config.pointer
            )));
        }
        let mode = match scan.skip_ws().map_err(opening)? {
            Some(b'[') => {
                scan.bump();
                Mode::Array
            }
            Some(b'{') if config.object_as_item => Mode::Single,
            Some(b) => {
                return Err(fatal(format!(
                    "expected an array at {where_}, found `{}`",
                    char::from(b)
                )));
            }
            None => {
                return Err(fatal(format!(
                    "expected an array at {where_}, found nothing"
                )));
            }
        };
        let array_start = scan.pos;

        let mut source = ArraySource {
            path: path.clone(),
            scan,
            mode,
            top_level: segments.is_empty(),
            index: 0,
            item: Vec::new(),
            len,
        };
        let Some((index, offset)) = start else {
            return Ok((
                source,
                Pos {
                    offset: array_start,
                    n: 0,
                },
            ));
        };
        let mut pos_offset = None;
        match source.mode {
            Mode::Single if index > 0 => {
                source.mode = Mode::Done;
                pos_offset = offset;
            }
            Mode::Single | Mode::Done => {}
            Mode::Array => match offset {
                Some(offset) if offset < array_start => {
                    return Err(fatal(format!(
                        "checkpoint offset {offset} is before the array (at byte {array_start})"
                    )));
                }
                Some(offset) => {
                    if offset != array_start {
                        source
                            .scan
                            .rdr
                            .seek(SeekFrom::Start(offset))
                            .map_err(|e| io_fatal(&path, e))?;
                        source.scan.pos = offset;
                    }
                }
                None => {
                    for done in 0..index {
                        if !source.scan.element(None).map_err(opening)? {
                            return Err(fatal(format!(
                                "checkpoint index {index} is beyond the array ({done} items)"
                            )));
                        }
                    }
                }
            },
        }
        source.index = index;
        let pos = Pos {
            offset: pos_offset.unwrap_or(source.scan.pos),
            n: index,
        };
        Ok((source, pos))
    }

    fn parsed(&self) -> Result<ReadItem, ReadError> {
        if self.scan.overflow {
            return Err(ReadError::Bad {
                position: self.index,
                reason: format!("item is larger than the {} MiB limit", MAX_ITEM_BYTES >> 20),
                raw: Some(raw_excerpt(&self.item)),
            });
        }
        match serde_json::from_slice::<Value>(&self.item) {
            Ok(item) => Ok(ReadItem {
                item,
                position: self.index,
            }),
            Err(e) => Err(ReadError::Bad {
                position: self.index,
                reason: format!("not JSON: {e}"),
                raw: Some(raw_excerpt(&self.item)),
            }),
        }
    }

    /// At the closing `]`: consumes it and, for a top-level array, checks that
    /// nothing follows.
    fn close(&mut self) -> Result<(), ScanError> {
        if self.top_level {
            self.scan.bump();
            if let Some(b) = self.scan.skip_ws()? {
                return Err(self.scan.syntax(format_args!(
                    "unexpected `{}` after the array",
                    char::from(b)
                )));
            }
        }
        Ok(())
    }
}

impl Source for ArraySource {
    fn span(&self) -> (u64, u64) {
        (0, self.len)
    }

    fn fill(&mut self, out: &mut VecDeque<Entry>) -> bool {
        let start = self.scan.pos;
        match self.mode {
            Mode::Done => true,
            Mode::Single => {
                self.mode = Mode::Done;
                self.item.clear();
                if let Err(e) = self.scan.value(Some(&mut self.item)) {
                    out.push_back(Entry::stop(e.into_read_error(&self.path, false)));
                    return true;
                }
                self.index = 1;
                out.push_back(Entry {
                    result: self.parsed(),
                    pos: Pos {
                        offset: self.scan.pos,
                        n: 1,
                    },
                });
                true
            }
            Mode::Array => {
                while out.len() < BATCH_ITEMS && self.scan.pos - start < BATCH_BYTES {
                    self.item.clear();
                    match self.scan.element(Some(&mut self.item)) {
                        Ok(true) => {
                            self.index += 1;
                            out.push_back(Entry {
                                result: self.parsed(),
                                pos: Pos {
                                    offset: self.scan.pos,
                                    n: self.index,
                                },
                            });
                        }
                        Ok(false) => {
                            self.mode = Mode::Done;
                            if let Err(e) = self.close() {
                                out.push_back(Entry::stop(e.into_read_error(&self.path, false)));
                            }
                            return true;
                        }
                        Err(e) => {
                            out.push_back(Entry::stop(e.into_read_error(&self.path, false)));
                            return true;
                        }
                    }
                }
                false
            }
        }
    }
}
