//! [`FileWriter`]: CSV or JSON Lines into a temp file, made final atomically.

use std::ffi::OsString;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::api::{Chunk, Committed, SqlStatement, WriteError, Writer};
use crate::model::Item;

mod config;

pub use config::{RawCsvWriter, RawJsonlWriter};

/// The suffix of the temp file next to the final path.
pub const TEMP_SUFFIX: &str = ".tmp-sluice";

/// What a [`FileWriter`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// CSV with a header row (RFC 4180 quoting, `\n` line ends).
    Csv,
    /// One JSON value per line.
    JsonLines,
}

/// Writes chunks to a CSV or JSON Lines file, durably and restartably.
///
/// Chunks are appended to `<path>.tmp-sluice` and synced to disk before
/// [`write`](Writer::write) returns; [`complete`](Writer::complete) renames the temp
/// file to `path` atomically (and syncs the directory), so `path` only ever holds a
/// finished output.
///
/// Its [`checkpoint`](Writer::checkpoint) is `{"bytes": n, "header_written": b}`, the
/// temp file's length after the last chunk. [`open`](Writer::open) with it truncates
/// the temp file back to `n` (dropping chunks written after the last commit) and
/// appends from there; `open(None)` starts a new, empty temp file.
///
/// CSV: the header row is [`columns`](Self::columns) when given, else the keys of
/// the first item (in the item's key order); cells are strings as they are,
/// numbers and booleans as JSON writes them, `null` and missing keys as empty
/// cells, arrays and objects as JSON text; item keys that are not columns are
/// ignored. On a restart without declared columns the columns are read back from
/// the header row of the temp file (so without a header, declare the columns).
#[derive(Debug)]
pub struct FileWriter {
    path: PathBuf,
    temp: PathBuf,
    format: FileFormat,
    delimiter: u8,
    header: bool,
    declared: Option<Vec<String>>,
    columns: Option<Vec<String>>,
    file: Option<File>,
    bytes: u64,
    header_written: bool,
    /// A write failed half-way: truncate to `bytes` before the next one.
    dirty: bool,
    completed: bool,
}

impl FileWriter {
    /// A writer of `format` to `path`.
    pub fn new(path: impl Into<PathBuf>, format: FileFormat) -> Self {
        let path = path.into();
        Self {
            temp: Self::temp_path_for(&path),
            path,
            format,
            delimiter: b',',
            header: true,
            declared: None,
            columns: None,
            file: None,
            bytes: 0,
            header_written: false,
            dirty: false,
            completed: false,
        }
    }

    /// A CSV writer to `path` (comma-separated, with a header row).
    pub fn csv(path: impl Into<PathBuf>) -> Self {
        Self::new(path, FileFormat::Csv)
    }

    /// A JSON Lines writer to `path`.
    pub fn json_lines(path: impl Into<PathBuf>) -> Self {
        Self::new(path, FileFormat::JsonLines)
    }

    /// Sets the CSV delimiter (`b';'`, `b'\t'`, …).
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// Declares the CSV columns (and header row), in order.
    pub fn columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        let cols: Vec<String> = columns.into_iter().map(Into::into).collect();
        self.columns = Some(cols.clone());
        self.declared = Some(cols);
        self
    }

    /// Whether to write a CSV header row (default: yes).
    pub fn header(mut self, header: bool) -> Self {
        self.header = header;
        self
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp file written until [`complete`](Writer::complete).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The temp file of a final path: `<path>.tmp-sluice`.
    pub fn temp_path_for(path: &Path) -> PathBuf {
        let mut name: OsString = path.as_os_str().to_owned();
        name.push(TEMP_SUFFIX);
        PathBuf::from(name)
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> WriteError {
        let msg = format!("{what} {}: {e}", self.temp.display());
        match e.kind() {
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::ReadOnlyFilesystem
            | std::io::ErrorKind::InvalidInput => WriteError::Fatal(msg),
            _ => WriteError::Transient(msg),
        }
    }

    /// Syncs the directory holding the output, so that a created or renamed entry
    /// survives a crash.
    async fn sync_dir(&self) -> Result<(), WriteError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let d = File::open(&dir)
            .await
            .map_err(|e| self.io_err("opening the directory of", e))?;
        d.sync_all()
            .await
            .map_err(|e| self.io_err("syncing the directory of", e))
    }

    async fn open_fresh(&mut self) -> Result<(), WriteError> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.io_err("creating the directory of", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.temp)
            .await
            .map_err(|e| self.io_err("creating", e))?;
        file.sync_all()
            .await
            .map_err(|e| self.io_err("syncing", e))?;
        self.file = Some(file);
        self.bytes = 0;
        self.header_written = false;
        self.columns = self.declared.clone();
        self.sync_dir().await
    }

    async fn open_at(&mut self, checkpoint: &Value) -> Result<(), WriteError> {
        let bytes = checkpoint.get("bytes").and_then(Value::as_u64);
        let header_written = checkpoint.get("header_written").and_then(Value::as_bool);
        let (Some(bytes), Some(header_written)) = (bytes, header_written) else {
            return Err(WriteError::Fatal(format!(
                "file writer {}: bad checkpoint {checkpoint}: expected {{\"bytes\": n, \"header_written\": bool}}",
                self.path.display()
            )));
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.temp)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && bytes == 0 => {
                return self.open_fresh().await;
            }
            Err(e) => {
                return Err(WriteError::Fatal(format!(
                    "file writer: cannot resume {} at byte {bytes}: {e}",
                    self.temp.display()
                )));
            }
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| self.io_err("reading", e))?
            .len();
        if len < bytes {
            return Err(WriteError::Fatal(format!(
                "file writer: {} has {len} bytes, fewer than the {bytes} of its checkpoint",
                self.temp.display()
            )));
        }
        let mut file = file;
        file.set_len(bytes)
            .await
            .map_err(|e| self.io_err("truncating", e))?;
        file.sync_data()
            .await
            .map_err(|e| self.io_err("syncing", e))?;
        file.seek(SeekFrom::Start(bytes))
            .await
            .map_err(|e| self.io_err("seeking in", e))?;
        self.file = Some(file);
        self.bytes = bytes;
        self.header_written = header_written;
        self.columns = self.declared.clone();
        if self.format == FileFormat::Csv && header_written && self.columns.is_none() {
            self.columns = Some(self.read_header().await?);
        }
        Ok(())
    }

    /// Reads the header row back from the temp file.
    async fn read_header(&self) -> Result<Vec<String>, WriteError> {
        let temp = self.temp.clone();
        let delimiter = self.delimiter;
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
            let f = std::fs::File::open(&temp).map_err(|e| e.to_string())?;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .delimiter(delimiter)
                .flexible(true)
                .from_reader(f);
            let mut record = csv::StringRecord::new();
            match reader.read_record(&mut record) {
                Ok(true) => Ok(record.iter().map(str::to_owned).collect()),
                Ok(false) => Err("no header row".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .map_err(|e| WriteError::Fatal(format!("file writer: {e}")))?;
        read.map_err(|e| {
            WriteError::Fatal(format!(
                "file writer: cannot read the header row of {}: {e}",
                self.temp.display()
            ))
        })
    }

    /// The chunk as bytes (with the header row first when it is due).
    fn encode(&mut self, items: &[Item]) -> Result<(Vec<u8>, bool), WriteError> {
        match self.format {
            FileFormat::JsonLines => {
                let mut buf = Vec::with_capacity(items.len() * 128);
                for item in items {
                    serde_json::to_writer(&mut buf, item)
                        .map_err(|e| WriteError::Item(format!("cannot serialize an item: {e}")))?;
                    buf.push(b'\n');
                }
                Ok((buf, false))
            }
            FileFormat::Csv => {
                let mut objects = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    objects.push(item.as_object().ok_or_else(|| {
                        WriteError::Item(format!(
                            "item {} of the chunk is not a JSON object, cannot write it as a CSV row",
                            i + 1
                        ))
                    })?);
                }
                let columns = match &self.columns {
                    Some(c) => c.clone(),
                    None => objects
                        .first()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default(),
                };
                let mut w = csv::WriterBuilder::new()
                    .delimiter(self.delimiter)
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(Vec::with_capacity(items.len() * 128));
                let csv_err =
                    |e: csv::Error| WriteError::Item(format!("cannot write a CSV row: {e}"));
                let header_now = self.header && !self.header_written;
                if header_now {
                    w.write_record(&columns).map_err(csv_err)?;
                }
                let mut record: Vec<String> = Vec::with_capacity(columns.len());
                for o in objects {
                    record.clear();
                    record.extend(columns.iter().map(|c| match o.get(c) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    }));
                    w.write_record(&record).map_err(csv_err)?;
                }
                let buf = w
                    .into_inner()
                    .map_err(|e| WriteError::Item(format!("cannot write a CSV row: {e}")))?;
                self.columns = Some(columns);
                Ok((buf, header_now))
            }
        }
    }

    async fn append(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        let bytes = self.bytes;
        let Some(mut file) = self.file.take() else {
            return Err(WriteError::Fatal("file writer: not open".into()));
        };
        let res = async {
            if self.dirty {
                file.set_len(bytes).await?;
                file.seek(SeekFrom::Start(bytes)).await?;
            }
            file.write_all(buf).await?;
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        self.file = Some(file);
        match res {
            Ok(()) => {
                self.dirty = false;
                self.bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                Err(self.io_err("writing", e))
            }
        }
    }
}

#[async_trait]
impl Writer for FileWriter {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), WriteError> {
        self.file = None;
        self.dirty = false;
        self.completed = false;
        match checkpoint {
            None | Some(Value::Null) => self.open_fresh().await,
            Some(cp) => self.open_at(cp).await,
        }
    }

    fn checkpoint(&self) -> Value {
        json!({"bytes": self.bytes, "header_written": self.header_written})
    }

    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        _: &[SqlStatement],
    ) -> Result<Committed, WriteError> {
        if chunk.is_empty() {
            return Ok(Committed::Separately);
        }
        if self.file.is_none() {
            if self.completed {
                return Err(WriteError::Fatal(format!(
                    "file writer: {} is already complete",
                    self.path.display()
                )));
            }
            self.open_fresh().await?;
        }
        let columns_before = self.columns.clone();
        let (buf, header_now) = match self.encode(&chunk.items()) {
            Ok(v) => v,
            Err(e) => {
                self.columns = columns_before;
                return Err(e);
            }
        };
        if let Err(e) = self.append(&buf).await {
            self.columns = columns_before;
            return Err(e);
        }
        if header_now {
            self.header_written = true;
        }
        Ok(Committed::Separately)
    }

    async fn complete(&mut self) -> Result<(), WriteError> {
        if self.completed {
            return Ok(());
        }
        if self.file.is_none() {
            self.open_fresh().await?;
        }
        if self.format == FileFormat::Csv
            && self.header
            && !self.header_written
            && let Some(cols) = self.columns.clone()
        {
            let mut w = csv::WriterBuilder::new()
                .delimiter(self.delimiter)
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            w.write_record(&cols)
                .map_err(|e| WriteError::Fatal(format!("cannot write the CSV header: {e}")))?;
            let buf = w
                .into_inner()
                .map_err(|e| WriteError::Fatal(format!("cannot write the CSV header: {e}")))?;
            self.append(&buf).await?;
            self.header_written = true;
        }
        if let Some(mut file) = self.file.take() {
            let res = async {
                if self.dirty {
                    file.set_len(self.bytes).await?;
                }
                file.flush().await?;
                file.sync_all().await
            }
            .await;
            if let Err(e) = res {
                self.file = Some(file);
                return Err(self.io_err("syncing", e));
            }
        }
        tokio::fs::rename(&self.temp, &self.path)
            .await
            .map_err(|e| {
                WriteError::Fatal(format!(
                    "file writer: renaming {} to {}: {e}",
                    self.temp.display(),
                    self.path.display()
                ))
            })?;
        self.sync_dir().await?;
        self.completed = true;
        Ok(())
    }
}
