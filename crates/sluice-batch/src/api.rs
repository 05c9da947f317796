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

use async_trait::async_trait;
use thiserror::Error;

use crate::model::Item;

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
    /// A message saying why the item cannot be processed.
    fn process(&self, item: &Item) -> Result<Option<Item>, String>;
}

impl<F> Processor for F
where
    F: Fn(&Item) -> Result<Option<Item>, String> + Send + Sync,
{
    fn process(&self, item: &Item) -> Result<Option<Item>, String> {
        self(item)
    }
}

/// One bound argument of a [`SqlStatement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlArg {
    /// An integer.
    I64(i64),
    /// Text.
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
}

impl From<i64> for SqlArg {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}

impl From<&str> for SqlArg {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<Option<&str>> for SqlArg {
    fn from(v: Option<&str>) -> Self {
        Self::OptText(v.map(str::to_owned))
    }
}

/// A statement with `$n` placeholders (SQLite and PostgreSQL) that a writer runs
/// inside its chunk's transaction: the repository's chunk commit, when the writer
/// writes into the repository's own database, so that data and checkpoint commit
/// together (exactly once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStatement {
    /// The SQL.
    pub sql: String,
    /// Its arguments, in placeholder order.
    pub args: Vec<SqlArg>,
    /// When it affects no row, the whole transaction is rolled back (the lease
    /// check: a process that lost its lease commits nothing).
    pub must_affect: bool,
}

/// A writer could not write a chunk.
#[derive(Debug, Error)]
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

    /// Writes one chunk. When it returns `Ok`, the chunk is durable.
    ///
    /// # Errors
    ///
    /// See [`WriteError`].
    async fn write(&mut self, items: &[Item]) -> Result<(), WriteError>;

    /// The database this writer writes into, when it is one (compared with the
    /// repository's to commit data and checkpoint in one transaction).
    fn database_url(&self) -> Option<&str> {
        None
    }

    /// Writes one chunk and runs `commit` in the same transaction. Returns
    /// `Ok(true)` when it did so (the chunk and its checkpoint are committed
    /// together), `Ok(false)` when this writer cannot, having only written the chunk
    /// (the caller then commits the checkpoint itself).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write); a `commit` statement with `must_affect` that
    /// affects nothing rolls everything back and is [`WriteError::Fatal`].
    async fn write_committing(
        &mut self,
        items: &[Item],
        commit: &[SqlStatement],
    ) -> Result<bool, WriteError> {
        let _ = commit;
        self.write(items).await.map(|()| false)
    }

    /// The step completed: make the output final (rename a temp file).
    ///
    /// # Errors
    ///
    /// When finishing fails; the step then fails.
    async fn complete(&mut self) -> Result<(), WriteError> {
        Ok(())
    }
}
