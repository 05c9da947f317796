//! The three traits a chunk step is made of, and their errors.
//!
//! ```text
//! Reader::read ──item──▶ Processor::process ──item──▶ (chunk of N) ──▶ Writer::write
//!     │ checkpoint()                                                     │
//!     └───────────── committed with the chunk in the repository ◀────────┘
//! ```
//!
//! Errors say what can be done about them: a [`ReadError::Bad`] row, a processor
//! error or a [`WriteError::Item`] is *skippable* (recorded, counted against
//! `skip_limit`); a `Transient` error is *retryable* (the chunk is rolled back and
//! tried again with backoff); a `Fatal` one fails the step.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::model::{Item, StepCounts};

/// An item read, with its position in the input (for skip records and progress).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadItem {
    /// The item.
    pub item: Item,
    /// 1-based row, line or item number in the input.
    pub position: u64,
}

/// A reader could not produce the next item.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// One bad row (unparseable, undecodable); the reader has moved past it.
    #[error("row {position}: {reason}")]
    Bad {
        /// 1-based position of the row.
        position: u64,
        /// What is wrong with it.
        reason: String,
        /// The raw row, when available.
        raw: Option<String>,
    },
    /// A failure that may go away (connection lost, upstream timeout); the reader
    /// can be reopened at its last checkpoint and read again.
    #[error("{0}")]
    Transient(String),
    /// Reading cannot go on (missing file, bad configuration).
    #[error("{0}")]
    Fatal(String),
    /// Reading must pause until later, e.g. the upstream's daily quota (less a
    /// reserve) is spent. What was read before is written and committed, the step
    /// stops (STOPPED, with `reason`) and the run resumes from the checkpoint at
    /// `resume_at_ms` (a job run on the queue waits for it by itself).
    #[error("{reason}")]
    Suspended {
        /// Why, for the exit message: what is spent and when it resets.
        reason: String,
        /// When reading can go on, Unix milliseconds, if known.
        resume_at_ms: Option<i64>,
    },
}

/// How far a reader is through its source ([`Reader::extent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Units done (for a resumed or partitioned reader, from its share's start).
    pub done: u64,
    /// Units in the whole source (or share).
    pub total: u64,
    /// What is counted.
    pub unit: ExtentUnit,
}

/// What an [`Extent`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentUnit {
    /// Bytes of a file.
    Bytes,
    /// Items.
    Items,
}

/// Reads items one by one from a source, and says where it stands.
///
/// A reader's checkpoint is **exact**: opening a new reader of the same source at a
/// checkpoint returns exactly the items after the last one returned before it was
/// taken.
#[async_trait]
pub trait Reader: Send {
    /// Opens the source at `checkpoint` (`None`: from the start).
    ///
    /// # Errors
    ///
    /// When the source cannot be opened or the checkpoint does not fit it.
    async fn open(&mut self, checkpoint: Option<&serde_json::Value>) -> Result<(), ReadError>;

    /// The next item, or `Ok(None)` at the end.
    ///
    /// # Errors
    ///
    /// [`ReadError::Bad`] for one bad row (reading may go on), else a transient or
    /// fatal error.
    async fn read(&mut self) -> Result<Option<ReadItem>, ReadError>;

    /// The position after the last item returned (or skipped), as JSON.
    fn checkpoint(&self) -> serde_json::Value;

    /// The number of items in the whole source, when known (for the ETA).
    fn total(&self) -> Option<u64> {
        None
    }

    /// How far through its source the reader is, for a progress bar: bytes of
    /// a file, or items of a known total; `None` (the default) when unknown.
    /// Asked when the step starts and after each chunk is read.
    fn extent(&self) -> Option<Extent> {
        None
    }

    /// The keys of the flat rows this reader can hand out with
    /// [`read_row`](Self::read_row) (known once open), or `None` when it reads
    /// items only (the default).
    fn row_keys(&self) -> Option<Arc<[String]>> {
        None
    }

    /// Reads the next item as a row appended to `rows` (whose keys are
    /// [`row_keys`](Self::row_keys)) instead of as an [`Item`], and returns its
    /// position, or `Ok(None)` at the end. Only called when `row_keys` is `Some`;
    /// rows and items may be mixed, the checkpoint covers both.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read); the default, for readers without rows, is
    /// [`ReadError::Fatal`].
    async fn read_row(&mut self, rows: &mut Rows) -> Result<Option<u64>, ReadError> {
        let _ = rows;
        Err(ReadError::Fatal("this reader does not read rows".into()))
    }
}

/// Flat rows of text fields, stored compactly: one buffer of text for a whole
/// chunk instead of a JSON object per item.
///
/// This is how a reader that knows its columns (the CSV reader) hands a chunk to a
/// writer that takes text (the SQL writer, [`ChunkForm::Rows`]) when the step has
/// no processor. Row
/// `r` stands for the item [`item(r)`](Self::item): an object with one key per
/// [`key`](Self::keys), each value a string or `null`. A writer that does not
/// take rows gets those items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    keys: Arc<[String]>,
    text: String,
    /// Per field, row by row: its end offset in `text` (it starts where the
    /// previous field ends).
    ends: Vec<usize>,
    /// Per field: whether it is null (it then takes no text).
    nulls: Vec<bool>,
}

impl Rows {
    /// No rows yet, with these keys.
    pub fn new(keys: Arc<[String]>) -> Self {
        Self {
            keys,
            ..Self::default()
        }
    }

    /// The keys, one per field of every row.
    pub fn keys(&self) -> &Arc<[String]> {
        &self.keys
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ends.len().checked_div(self.keys.len()).unwrap_or(0)
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Room for `rows` more rows of about `bytes` bytes of text in all.
    pub fn reserve(&mut self, rows: usize, bytes: usize) {
        self.ends.reserve(rows * self.keys.len());
        self.nulls.reserve(rows * self.keys.len());
        self.text.reserve(bytes);
    }

    /// Bytes of text held.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Field `col` of row `row`: its text, or `None` when null.
    ///
    /// # Panics
    ///
    /// When `row` or `col` is out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<&str> {
        assert!(col < self.keys.len(), "column {col} out of range");
        let i = row * self.keys.len() + col;
        if self.nulls[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..self.ends[i]])
    }

    /// The fields of row `row`, in key order.
    ///
    /// # Panics
    ///
    /// When `row` is out of range.
    pub fn row(&self, row: usize) -> impl Iterator<Item = Option<&str>> + '_ {
        assert!(row < self.len(), "row {row} out of range");
        (0..self.keys.len()).map(move |c| self.get(row, c))
    }

    /// Appends a row.
    ///
    /// # Panics
    ///
    /// When `fields` does not give exactly one field per key.
    pub fn push_row<'a>(&mut self, fields: impl IntoIterator<Item = Option<&'a str>>) {
        let before = self.ends.len();
        for field in fields {
            self.push_field(field);
        }
        assert!(
            self.ends.len() - before == self.keys.len(),
            "a row needs {} fields",
            self.keys.len()
        );
    }

    /// Appends row `row` of `other`, which has as many keys.
    ///
    /// # Panics
    ///
    /// When the key counts differ or `row` is out of range.
    pub fn push_from(&mut self, other: &Rows, row: usize) {
        assert_eq!(self.keys.len(), other.keys.len(), "rows of different keys");
        let n = other.keys.len();
        let first = row * n;
        let start = if first == 0 { 0 } else { other.ends[first - 1] };
        let end = if n == 0 {
            start
        } else {
            other.ends[first + n - 1]
        };
        let shift = self.text.len();
        self.text.push_str(&other.text[start..end]);
        self.ends.extend(
            other.ends[first..first + n]
                .iter()
                .map(|e| e - start + shift),
        );
        self.nulls.extend_from_slice(&other.nulls[first..first + n]);
    }

    /// Appends `item` as a row: each key's string as is, `null` or a missing key
    /// as null, any other value as its JSON text.
    pub fn push_item(&mut self, item: &Item) {
        for key in self.keys.clone().iter() {
            match item.get(key) {
                None | Some(serde_json::Value::Null) => self.push_field(None),
                Some(serde_json::Value::String(s)) => self.push_field(Some(s)),
                Some(v) => self.push_field(Some(&v.to_string())),
            }
        }
    }

    /// Appends a row whose non-null fields, in order, make up `text`: `fields`
    /// gives, per key, the end offset of the field in `text` (a field starts
    /// where the previous one ended), or `None` for a null field.
    pub(crate) fn push_joined(
        &mut self,
        text: &str,
        fields: impl IntoIterator<Item = Option<usize>>,
    ) {
        let shift = self.text.len();
        let before = self.ends.len();
        self.text.push_str(text);
        let mut last = shift;
        for field in fields {
            match field {
                Some(end) => {
                    last = shift + end;
                    self.ends.push(last);
                    self.nulls.push(false);
                }
                None => {
                    self.ends.push(last);
                    self.nulls.push(true);
                }
            }
        }
        debug_assert_eq!(self.ends.len() - before, self.keys.len());
        debug_assert_eq!(last, self.text.len());
    }

    fn push_field(&mut self, field: Option<&str>) {
        if let Some(s) = field {
            self.text.push_str(s);
        }
        self.ends.push(self.text.len());
        self.nulls.push(field.is_none());
    }

    /// Row `row` as the item it stands for.
    ///
    /// # Panics
    ///
    /// When `row` is out of range.
    pub fn item(&self, row: usize) -> Item {
        let map = self
            .keys
            .iter()
            .zip(self.row(row))
            .map(|(k, v)| {
                let v = v.map_or(serde_json::Value::Null, |s| {
                    serde_json::Value::String(s.to_owned())
                });
                (k.clone(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// Every row as an item.
    pub fn items(&self) -> Vec<Item> {
        (0..self.len()).map(|r| self.item(r)).collect()
    }

    /// Removes every row, keeping the keys and the memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.nulls.clear();
    }
}

/// Why a processor could not process an item: the item becomes a skip candidate
/// (recorded with this message, counted against `skip_limit`).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The item cannot be processed (a value that does not parse, a missing
    /// field).
    #[error("{0}")]
    Item(String),
    /// A jq expression failed on the item.
    #[error(transparent)]
    Jq(#[from] sluice_upstream::JqError),
}

impl ProcessError {
    /// An [`Item`](Self::Item) error saying `why`.
    pub fn item(why: impl Into<String>) -> Self {
        Self::Item(why.into())
    }
}

/// Turns one item into another, or filters it out.
///
/// Returning `Ok(None)` filters the item (counted as filtered, not written). An
/// error makes the item a skip candidate; the item itself goes into the skip
/// record, which is why a processor borrows it.
pub trait Processor: Send + Sync {
    /// Processes one item.
    ///
    /// # Errors
    ///
    /// A [`ProcessError`] saying why the item cannot be processed.
    fn process(&self, item: &Item) -> Result<Option<Item>, ProcessError>;
}

impl<F> Processor for F
where
    F: Fn(&Item) -> Result<Option<Item>, ProcessError> + Send + Sync,
{
    fn process(&self, item: &Item) -> Result<Option<Item>, ProcessError> {
        self(item)
    }
}

/// One bound argument of a [`SqlStatement`] (sluice-sql's, the same for every
/// database).
pub use sluice_sql::Arg as SqlArg;

/// A statement that a writer runs inside its chunk's transaction, so that data
/// and checkpoint commit together (exactly once): the repository's chunk commit
/// (`$n` placeholders, SQLite and PostgreSQL) when the writer writes into the
/// repository's own database, or else the step's checkpoint in the target's own
/// `sluice_checkpoint` table (see [`CheckpointStore`]), in the target's dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStatement {
    /// The SQL.
    pub sql: String,
    /// Its arguments, in placeholder order.
    pub args: Vec<SqlArg>,
    /// When it affects no row, the whole transaction is rolled back (the lease or
    /// fencing check: a process that lost its lease, or an execution that a newer
    /// one superseded, commits nothing).
    pub must_affect: bool,
}

/// One chunk to write: items, or the [`Rows`] of text that stand for them.
///
/// A writer that [takes rows](ChunkForm::Rows) may get either form (rows when the
/// reader has them and no processor is in between, items otherwise, and always
/// items when the step rewrites a refused chunk item by item); one that takes
/// items gets items. [`items`](Self::items) views either form as items.
#[derive(Debug, Clone, Copy)]
pub enum Chunk<'a> {
    /// JSON items (usually objects).
    Items(&'a [Item]),
    /// Flat rows of text fields; row `r` stands for [`Rows::item`]`(r)`.
    Rows(&'a Rows),
}

impl<'a> Chunk<'a> {
    /// The number of items.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Items(items) => items.len(),
            Chunk::Rows(rows) => rows.len(),
        }
    }

    /// Whether there is no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i`, as JSON (borrowed when the chunk holds items).
    ///
    /// # Panics
    ///
    /// When `i` is out of range.
    pub fn item(&self, i: usize) -> Cow<'a, Item> {
        match *self {
            Chunk::Items(items) => Cow::Borrowed(&items[i]),
            Chunk::Rows(rows) => Cow::Owned(rows.item(i)),
        }
    }

    /// Every item, as JSON (borrowed when the chunk holds items).
    pub fn items(&self) -> Cow<'a, [Item]> {
        match *self {
            Chunk::Items(items) => Cow::Borrowed(items),
            Chunk::Rows(rows) => Cow::Owned(rows.items()),
        }
    }
}

impl<'a> From<&'a [Item]> for Chunk<'a> {
    fn from(items: &'a [Item]) -> Self {
        Chunk::Items(items)
    }
}

impl<'a> From<&'a Vec<Item>> for Chunk<'a> {
    fn from(items: &'a Vec<Item>) -> Self {
        Chunk::Items(items)
    }
}

impl<'a, const N: usize> From<&'a [Item; N]> for Chunk<'a> {
    fn from(items: &'a [Item; N]) -> Self {
        Chunk::Items(items)
    }
}

impl<'a> From<&'a Rows> for Chunk<'a> {
    fn from(rows: &'a Rows) -> Self {
        Chunk::Rows(rows)
    }
}

/// The form a writer takes its chunks in (see [`Writer::chunk_form`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkForm {
    /// [`Chunk::Items`] only: a chunk of rows is turned into items first.
    #[default]
    Items,
    /// [`Chunk::Rows`] too: a reader that hands out rows, with no processor in
    /// between, hands them to the writer as they are (no JSON object per item).
    Rows,
}

/// How a written chunk was committed (what [`Writer::write`] returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The chunk is written and durable; the step commits its checkpoint in the
    /// repository itself. The only answer when no commit statements were given.
    Separately,
    /// The commit statements ran in the chunk's own transaction: the chunk and its
    /// checkpoint are committed together (exactly once).
    Together,
}

/// Which step's checkpoint a [`CheckpointStore`] holds, and which execution
/// writes it: the row of the target's `sluice_checkpoint` table is keyed by job
/// name, job instance and step (a partition is a job instance of its own), and
/// fenced by the execution id (ids grow with every execution of an instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointKey {
    /// The job's name (a partition's child job: `JOB:STEP`).
    pub job: String,
    /// The job instance's repository id.
    pub instance_id: i64,
    /// The step's name.
    pub step: String,
    /// The job execution writing it: the fencing token.
    pub execution_id: i64,
}

/// A step's progress as a [`CheckpointStore`] keeps it: the counts after the
/// last chunk (its `commits` is the chunk sequence) and the step's checkpoint
/// (`{"reader": …, "writer": …}`, as the repository keeps it).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheckpoint {
    /// The step's counts after the chunk; `commits` numbers the chunk.
    pub counts: StepCounts,
    /// The reader's and writer's positions after the chunk.
    pub checkpoint: serde_json::Value,
}

/// A writer's ability to keep the step's checkpoint in its own target, committed
/// in each chunk's transaction, for targets other than the repository's
/// database (a `sluice_checkpoint` table in the target database, for the SQL
/// writers).
///
/// With it, a crash between a chunk's commit in the target and the checkpoint's
/// commit in the repository loses nothing and repeats nothing: on restart the
/// step [claims](Self::claim) the row, finds the target ahead of the repository
/// and resumes from the target's checkpoint instead of writing the chunk again.
#[async_trait]
pub trait CheckpointStore: Send {
    /// Takes the row of `key` for `key.execution_id` (creating the table and the
    /// row when missing) and returns what it holds, if anything. With `fresh`
    /// (the step starts from scratch: a new instance or a rerun) the row is
    /// reset and `None` returned. From then on, only this execution can store
    /// checkpoints in the row.
    ///
    /// # Errors
    ///
    /// [`WriteError::Fatal`] when a newer execution holds the row (this one is
    /// stale), or the database's error.
    async fn claim(
        &mut self,
        key: &CheckpointKey,
        fresh: bool,
    ) -> Result<Option<TargetCheckpoint>, WriteError>;

    /// The statements that store `checkpoint` in the row of `key`, fenced by
    /// `key.execution_id` ([`must_affect`](SqlStatement::must_affect): when a
    /// newer execution claimed the row, the chunk rolls back), for
    /// [`Writer::write`] to run in the chunk's transaction.
    fn store_statements(
        &self,
        key: &CheckpointKey,
        checkpoint: &TargetCheckpoint,
    ) -> Vec<SqlStatement>;
}

/// A writer could not write a chunk.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// An item of the chunk was refused (a constraint, a type mismatch). The step
    /// rolls the chunk back and writes it again item by item to find which.
    #[error("{0}")]
    Item(String),
    /// A failure that may go away (connection lost); the chunk is retried.
    #[error("{0}")]
    Transient(String),
    /// Writing cannot go on.
    #[error("{0}")]
    Fatal(String),
}

/// Writes chunks of items, each chunk all or nothing.
///
/// A writer implements [`write`](Self::write); the rest has defaults. What it can
/// do beyond writing items is declared: taking chunks as [`Rows`]
/// ([`chunk_form`](Self::chunk_form)), and running the repository's commit in its
/// own transaction ([`database_url`](Self::database_url)).
///
/// ```
/// use async_trait::async_trait;
/// use sluice_batch::{Chunk, Committed, SqlStatement, WriteError, Writer};
///
/// /// Prints each item.
/// struct Print;
///
/// #[async_trait]
/// impl Writer for Print {
///     async fn write(
///         &mut self,
///         chunk: Chunk<'_>,
///         _: &[SqlStatement],
///     ) -> Result<Committed, WriteError> {
///         for item in chunk.items().iter() {
///             println!("{item}");
///         }
///         Ok(Committed::Separately)
///     }
/// }
/// ```
#[async_trait]
pub trait Writer: Send {
    /// Prepares the target (creates a table, opens a temp file). Called once per
    /// step execution, before the first chunk. `checkpoint` is what
    /// [`checkpoint`](Self::checkpoint) returned after the last chunk a previous
    /// execution of this step committed (`None` on a fresh start): a file writer
    /// truncates its temp file back to that length, since chunks written after it
    /// were never committed.
    ///
    /// # Errors
    ///
    /// When the target cannot be prepared.
    async fn open(&mut self, checkpoint: Option<&serde_json::Value>) -> Result<(), WriteError> {
        let _ = checkpoint;
        Ok(())
    }

    /// The writer's own position after the last chunk written (for a file: its
    /// length), committed with the chunk. `null` for writers that need none
    /// (idempotent upserts).
    fn checkpoint(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Which form this writer takes chunks in: [`ChunkForm::Items`] (the default)
    /// or also [`ChunkForm::Rows`].
    fn chunk_form(&self) -> ChunkForm {
        ChunkForm::Items
    }

    /// The database this writer writes into, when it can run statements in its
    /// chunk's transaction there (`None`, the default: it cannot). When it is the
    /// repository's database, the step hands [`write`](Self::write) the
    /// repository's commit statements, so that data and checkpoint commit
    /// together (exactly once).
    fn database_url(&self) -> Option<&str> {
        None
    }

    /// Where this writer keeps the step's checkpoint in its own target (`None`,
    /// the default: it cannot). The step uses it when the writer does not write
    /// into the repository's database: it claims the row before the first chunk
    /// and hands [`write`](Self::write) the store's statements with every chunk.
    fn checkpoint_store(&mut self) -> Option<&mut dyn CheckpointStore> {
        None
    }

    /// Writes one chunk, all or nothing; when it returns `Ok`, the chunk is
    /// durable.
    ///
    /// `commit` is empty unless this writer declared a
    /// [`database_url`](Self::database_url) and the step writes into the
    /// repository's database: then they are the repository's statements for this
    /// chunk, to run in the chunk's own transaction, and the answer is
    /// [`Committed::Together`]; a writer that cannot (or did not) run them answers
    /// [`Committed::Separately`] and the step commits them itself. For a writer
    /// with a [`checkpoint_store`](Self::checkpoint_store) into another database,
    /// `commit` holds that store's statements instead (the step then still
    /// commits the repository itself).
    ///
    /// # Errors
    ///
    /// See [`WriteError`]; a `commit` statement with
    /// [`must_affect`](SqlStatement::must_affect) that affects nothing rolls
    /// everything back and is [`WriteError::Fatal`].
    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        commit: &[SqlStatement],
    ) -> Result<Committed, WriteError>;

    /// The step completed: make the output final (rename a temp file).
    ///
    /// # Errors
    ///
    /// When finishing fails; the step then fails.
    async fn complete(&mut self) -> Result<(), WriteError> {
        Ok(())
    }
}
