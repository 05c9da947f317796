//! What the file readers share: blocking reads on tokio's blocking pool, in
//! batches, one batch read ahead, with an exact position per item.
//!
//! A reader's parsing state (a [`Source`]) lives on the blocking pool while it
//! fills a batch and comes back with it, so the async side never blocks a runtime
//! thread (a `current_thread` runtime included) and never waits on a lock. The
//! pending batch's `JoinHandle` is kept in the driver, so a `read` future dropped
//! mid-await loses nothing: the next `read` awaits the same batch.

use std::collections::VecDeque;

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::api::{ReadError, ReadItem, Rows};

/// At most this many entries per batch.
pub(crate) const BATCH_ITEMS: usize = 1024;

/// A batch stops once it has consumed this many bytes of input.
pub(crate) const BATCH_BYTES: u64 = 4 << 20;

/// The largest line or item a JSON reader parses; a larger one is a bad item
/// (skipped or failed by the step's skip policy), never a reason to hold the
/// whole of it in memory.
pub(crate) const MAX_ITEM_BYTES: usize = 16 << 20;

/// How much of a bad item's raw text is kept with its skip record.
const RAW_EXCERPT: usize = 4096;

/// A bad item's raw text for its skip record, cut at 4 KiB.
pub(crate) fn raw_excerpt(bytes: &[u8]) -> String {
    if bytes.len() <= RAW_EXCERPT {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut s = String::from_utf8_lossy(&bytes[..RAW_EXCERPT]).into_owned();
    s.push_str(&format!("… ({} bytes in all)", bytes.len()));
    s
}

/// A position in a file: the byte offset of what comes next, and how many rows,
/// lines or items are behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    /// Byte offset in the raw file.
    pub(crate) offset: u64,
    /// Rows, lines or items consumed.
    pub(crate) n: u64,
}

/// One outcome of reading, with the position after it.
pub(crate) struct Entry {
    /// An item, a bad row, or an error that stops the reader.
    pub(crate) result: Result<ReadItem, ReadError>,
    /// The position after this entry (ignored for stopping errors).
    pub(crate) pos: Pos,
}

impl Entry {
    /// An error that stops the reader.
    pub(crate) fn stop(error: ReadError) -> Self {
        Entry {
            result: Err(error),
            pos: Pos::default(),
        }
    }
}

/// The blocking half of a reader.
pub(crate) trait Source: Send + 'static {
    /// Appends up to [`BATCH_ITEMS`] entries to `out` (stopping early after about
    /// [`BATCH_BYTES`]); returns `true` when the input is exhausted or a stopping
    /// error was pushed.
    fn fill(&mut self, out: &mut VecDeque<Entry>) -> bool;

    /// As [`fill`](Self::fill), but a source that can appends each item as a row
    /// of `rows` and pushes its entry as `Ok` with a `null` item; returns
    /// `(end, whether it did)`. The default fills items.
    fn fill_rows(&mut self, out: &mut VecDeque<Entry>, rows: &mut Rows) -> (bool, bool) {
        let _ = rows;
        (self.fill(out), false)
    }

    /// The bytes `[start, end)` of the file this source reads (its share).
    fn span(&self) -> (u64, u64);
}

/// A filled batch: the source back, its entries, the rows of its `Ok` entries
/// when it holds rows, whether the input ended.
struct Batch<S> {
    source: S,
    entries: VecDeque<Entry>,
    rows: Rows,
    is_rows: bool,
    end: bool,
}

enum State<S> {
    Idle(S),
    Fetching(JoinHandle<Batch<S>>),
    Done,
    Failed { transient: bool, message: String },
}

/// Drives a [`Source`] from async code.
pub(crate) struct Driver<S> {
    state: State<S>,
    ready: VecDeque<Entry>,
    spare: VecDeque<Entry>,
    /// The rows of `ready`'s `Ok` entries, when `ready_is_rows`; the next one is
    /// `row_at`.
    ready_rows: Rows,
    ready_is_rows: bool,
    row_at: usize,
    spare_rows: Rows,
    /// Batches are filled as rows (set by the first [`next_row`](Self::next_row)).
    as_rows: bool,
    pos: Pos,
    /// The source's [`span`](Source::span).
    span: (u64, u64),
}

impl<S: Source> Driver<S> {
    /// A driver whose source stands at `pos`.
    pub(crate) fn new(source: S, pos: Pos) -> Self {
        let span = source.span();
        Driver {
            state: State::Idle(source),
            ready: VecDeque::new(),
            spare: VecDeque::new(),
            ready_rows: Rows::default(),
            ready_is_rows: false,
            row_at: 0,
            spare_rows: Rows::default(),
            as_rows: false,
            pos,
            span,
        }
    }

    /// How far through its bytes the reader is (after the last entry returned).
    pub(crate) fn extent(&self) -> crate::api::Extent {
        let (start, end) = self.span;
        crate::api::Extent {
            done: self.pos.offset.clamp(start, end) - start,
            total: end - start,
            unit: crate::api::ExtentUnit::Bytes,
        }
    }

    /// Opens a source on the blocking pool (`open` returns it and where it
    /// stands) and drives it.
    pub(crate) async fn start<F>(open: F) -> Result<Self, ReadError>
    where
        F: FnOnce() -> Result<(S, Pos), ReadError> + Send + 'static,
    {
        let (source, pos) = blocking(open).await?;
        Ok(Self::new(source, pos))
    }

    /// The position after the last entry returned.
    pub(crate) fn pos(&self) -> Pos {
        self.pos
    }

    fn spawn(&mut self, source: S) -> JoinHandle<Batch<S>> {
        let mut source = source;
        let mut entries = std::mem::take(&mut self.spare);
        let mut rows = std::mem::take(&mut self.spare_rows);
        let as_rows = self.as_rows;
        tokio::task::spawn_blocking(move || {
            entries.clear();
            rows.clear();
            let (end, is_rows) = if as_rows {
                source.fill_rows(&mut entries, &mut rows)
            } else {
                (source.fill(&mut entries), false)
            };
            Batch {
                source,
                entries,
                rows,
                is_rows,
                end,
            }
        })
    }

    fn fail(&mut self, transient: bool, message: String) -> ReadError {
        self.ready.clear();
        self.state = State::Failed {
            transient,
            message: message.clone(),
        };
        if transient {
            ReadError::Transient(message)
        } else {
            ReadError::Fatal(message)
        }
    }

    /// The next item, bad row, or end.
    pub(crate) async fn next(&mut self) -> Result<Option<ReadItem>, ReadError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return match entry.result {
                    Err(ReadError::Transient(m)) => Err(self.fail(true, m)),
                    Err(ReadError::Fatal(m)) => Err(self.fail(false, m)),
                    Ok(ri) if self.ready_is_rows => {
                        self.pos = entry.pos;
                        let item = self.ready_rows.item(self.row_at);
                        self.row_at += 1;
                        Ok(Some(ReadItem {
                            item,
                            position: ri.position,
                        }))
                    }
                    result => {
                        self.pos = entry.pos;
                        result.map(Some)
                    }
                };
            }
            if let Some(end) = self.refill().await? {
                return Ok(end);
            }
        }
    }

    /// The next item appended to `rows` as a row (its position returned), bad
    /// row, or end. From the first call on, batches are filled as rows.
    pub(crate) async fn next_row(&mut self, rows: &mut Rows) -> Result<Option<u64>, ReadError> {
        self.as_rows = true;
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return match entry.result {
                    Err(ReadError::Transient(m)) => Err(self.fail(true, m)),
                    Err(ReadError::Fatal(m)) => Err(self.fail(false, m)),
                    Err(e) => {
                        self.pos = entry.pos;
                        Err(e)
                    }
                    Ok(ri) => {
                        self.pos = entry.pos;
                        if self.ready_is_rows {
                            rows.push_from(&self.ready_rows, self.row_at);
                            self.row_at += 1;
                        } else {
                            rows.push_item(&ri.item);
                        }
                        Ok(Some(ri.position))
                    }
                };
            }
            if let Some(end) = self.refill().await? {
                return Ok(end.map(|ri| ri.position));
            }
        }
    }

    /// With nothing ready: waits for the pending batch (and starts the next), or
    /// says how reading ends (`Some(None)`: the input is done).
    async fn refill(&mut self) -> Result<Option<Option<ReadItem>>, ReadError> {
        match &mut self.state {
            State::Done => Ok(Some(None)),
            State::Failed { transient, message } => {
                let (t, m) = (*transient, message.clone());
                Err(self.fail(t, m))
            }
            State::Fetching(handle) => {
                // Awaiting through `&mut` keeps the handle in `self` if this
                // future is dropped.
                let joined = handle.await;
                match joined {
                    Ok(batch) => {
                        self.spare = std::mem::replace(&mut self.ready, batch.entries);
                        self.spare_rows = std::mem::replace(&mut self.ready_rows, batch.rows);
                        self.ready_is_rows = batch.is_rows;
                        self.row_at = 0;
                        self.state = if batch.end {
                            State::Done
                        } else {
                            // Read the next batch while this one is consumed.
                            State::Fetching(self.spawn(batch.source))
                        };
                        Ok(None)
                    }
                    Err(e) => Err(self.fail(false, format!("reader task failed: {e}"))),
                }
            }
            State::Idle(_) => {
                let State::Idle(source) = std::mem::replace(&mut self.state, State::Done) else {
                    unreachable!()
                };
                self.state = State::Fetching(self.spawn(source));
                Ok(None)
            }
        }
    }
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ReadError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ReadError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReadError::Fatal(format!("reader task failed: {e}")))?
}

/// The driver of an opened reader; before `open`, a `Fatal` error naming `what`
/// (`"CsvReader::read"`).
pub(crate) fn opened<'a, S>(
    driver: &'a mut Option<Driver<S>>,
    what: &str,
) -> Result<&'a mut Driver<S>, ReadError> {
    driver
        .as_mut()
        .ok_or_else(|| ReadError::Fatal(format!("{what} before open")))
}

/// Where a reader's driver stands (the start before `open`).
pub(crate) fn pos_of<S: Source>(driver: &Option<Driver<S>>) -> Pos {
    driver.as_ref().map(Driver::pos).unwrap_or_default()
}

/// The `read`, `extent` and `checkpoint` methods of a [`Reader`](crate::api::Reader)
/// impl for a reader whose `driver: Option<Driver<_>>` field does the reading:
/// `driven_reader_methods!("CsvReader", |pos| checkpoint_json(pos, "row"));`
/// inside the `#[async_trait] impl Reader`. The name is what a read before
/// `open` names in its error; the closure turns the driver's [`Pos`] into the
/// checkpoint. (`read` is spelled as `async_trait` expands it, since a macro in
/// the impl is expanded after that attribute.)
macro_rules! driven_reader_methods {
    ($name:literal, $checkpoint:expr) => {
        fn read<'life0, 'async_trait>(
            &'life0 mut self,
        ) -> ::core::pin::Pin<
            Box<
                dyn ::core::future::Future<
                        Output = Result<Option<$crate::api::ReadItem>, $crate::api::ReadError>,
                    > + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                $crate::readers::driver::opened(&mut self.driver, concat!($name, "::read"))?
                    .next()
                    .await
            })
        }

        fn extent(&self) -> Option<$crate::api::Extent> {
            self.driver
                .as_ref()
                .map($crate::readers::driver::Driver::extent)
        }

        fn checkpoint(&self) -> serde_json::Value {
            let to_json: fn($crate::readers::driver::Pos) -> serde_json::Value = $checkpoint;
            to_json($crate::readers::driver::pos_of(&self.driver))
        }
    };
}
pub(crate) use driven_reader_methods;

/// Parses `{"offset": …, "<n_key>": …}`; `None` or `null` is the start.
pub(crate) fn parse_checkpoint(
    checkpoint: Option<&Value>,
    n_key: &str,
) -> Result<Option<Pos>, ReadError> {
    let Some(cp) = checkpoint.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let offset = cp.get("offset").and_then(Value::as_u64);
    let n = cp.get(n_key).and_then(Value::as_u64);
    match (offset, n) {
        (Some(offset), Some(n)) => Ok(Some(Pos { offset, n })),
        _ => Err(ReadError::Fatal(format!(
            "checkpoint {cp} does not fit this reader (expected {{\"offset\": N, \"{n_key}\": N}})"
        ))),
    }
}

/// The checkpoint `{"offset": …, "<n_key>": …}` of `pos`.
pub(crate) fn checkpoint_json(pos: Pos, n_key: &str) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("offset".into(), pos.offset.into());
    map.insert(n_key.into(), pos.n.into());
    Value::Object(map)
}

/// `Fatal` for an error opening or reading `path`.
pub(crate) fn io_fatal(path: &std::path::Path, e: std::io::Error) -> ReadError {
    ReadError::Fatal(format!("{}: {e}", path.display()))
}

/// `Transient` for an I/O error while reading `path`.
pub(crate) fn io_transient(path: &std::path::Path, e: std::io::Error) -> ReadError {
    ReadError::Transient(format!("{}: {e}", path.display()))
}

/// The byte at `offset` of `file` (moves the file's cursor).
pub(crate) fn byte_at(file: &mut std::fs::File, offset: u64) -> std::io::Result<u8> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    let mut b = [0u8; 1];
    file.read_exact(&mut b)?;
    Ok(b[0])
}

/// Reads up to 3 bytes at the start of `file` and returns the length of a UTF-8
/// BOM there (0 or 3); a UTF-16 BOM is an error.
pub(crate) fn utf8_bom_len(
    file: &mut std::fs::File,
    path: &std::path::Path,
) -> Result<u64, ReadError> {
    match sniff_bom(file, path)? {
        Some((enc, len)) if enc == encoding_rs::UTF_8 => Ok(len as u64),
        Some((enc, _)) => Err(ReadError::Fatal(format!(
            "{}: {} files are not supported (the reader needs an ASCII-compatible encoding)",
            path.display(),
            enc.name()
        ))),
        None => Ok(0),
    }
}

/// The encoding and length of a BOM at the start of `file`, if any.
pub(crate) fn sniff_bom(
    file: &mut std::fs::File,
    path: &std::path::Path,
) -> Result<Option<(&'static encoding_rs::Encoding, usize)>, ReadError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut head = [0u8; 3];
    let mut n = 0;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_fatal(path, e))?;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_fatal(path, e)),
        }
    }
    Ok(encoding_rs::Encoding::for_bom(&head[..n]))
}
