//! The chunk loop: read up to `chunk` items, process them, write them, commit the
//! checkpoint; skip bad items up to `skip_limit`; retry transient errors with
//! backoff.
//!
//! ```text
//! open reader at checkpoint.reader, writer at checkpoint.writer
//! loop:
//!   stop requested? ─▶ STOPPED (between chunks: nothing half-done)
//!   read ≤ chunk items ── bad row ─▶ skip (row, reason)        ── transient ─▶ reopen at the
//!     └ process ── error ─▶ skip · null ─▶ filtered                committed checkpoint, re-read
//!   write chunk ── item error ─▶ rollback, write item by item, skip the refused ones
//!               └─ transient ─▶ rollback, retry with backoff (max, then FAILED)
//!   commit counts + checkpoint + skips in the repository (lease checked)
//! end of input ─▶ writer.complete() ─▶ COMPLETED
//! ```
//!
//! **Exactly once.** A chunk and its checkpoint commit in one transaction
//! wherever the writer can: into the repository's own database, the writer runs
//! the repository's chunk commit; into another database, a writer with a
//! [`CheckpointStore`](crate::api::CheckpointStore) (the SQL writers: the
//! target's `sluice_checkpoint` table) stores the step's checkpoint there, fenced
//! by the execution, and the repository's commit follows. Before the first chunk
//! the step claims that row; a target ahead of the repository (a crash between
//! the two commits) is where the step resumes. Not covered: a chunk refused by
//! the writer and rewritten item by item commits item by item, so a crash in the
//! middle of it writes its first items again on restart (an upsert rewrites them
//! harmlessly); the skip records of chunks adopted from the target are not in
//! the repository (their counts are).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use sluice_core::Clock;

use crate::api::{
    CheckpointKey, Chunk, ChunkForm, Committed, Extent, Processor, ReadError, Reader, Rows,
    SqlStatement, TargetCheckpoint, WriteError, Writer,
};
use crate::model::{BatchStatus, Item, SkipRecord, StepCounts, StepExecution, truncate};
use crate::repository::{RepoError, Repository};

/// Retry of transient errors: up to `max` more attempts, waiting `backoff × 2^n`
/// (at most `max_backoff`) with full jitter between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub max: u32,
    /// Base wait.
    pub backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Retry {
    /// The wait before retry number `attempt` (0-based), full jitter.
    fn wait(&self, attempt: u32) -> Duration {
        sluice_core::full_jitter(self.backoff, self.max_backoff, attempt)
    }
}

/// A chunk-oriented step.
///
/// With no processor, a reader that hands out [`Rows`] ([`Reader::row_keys`], the
/// CSV reader) and a writer that takes them ([`ChunkForm::Rows`], the SQL
/// writer), a chunk travels as rows of text, with no JSON object per item;
/// otherwise as [`Item`]s. Counts, skips, checkpoints and commits are the same
/// either way.
pub struct ChunkStep {
    /// The step's name (unique in its job).
    pub name: String,
    /// Items per chunk (and per commit).
    pub chunk: usize,
    /// How many items may be skipped before the step fails.
    pub skip_limit: u64,
    /// Retry of transient errors.
    pub retry: Retry,
    /// Where items come from.
    pub reader: Box<dyn Reader>,
    /// What happens to each item (none: items are written as read).
    pub processor: Option<Arc<dyn Processor>>,
    /// Where chunks go.
    pub writer: Box<dyn Writer>,
}

impl ChunkStep {
    /// A step named `name` reading from `reader` and writing to `writer`, with
    /// chunks of 500, no skips allowed and the default retry; items are written as
    /// read until a [`processor`](Self::processor) is set.
    pub fn new(
        name: impl Into<String>,
        reader: impl Reader + 'static,
        writer: impl Writer + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            chunk: 500,
            skip_limit: 0,
            retry: Retry::default(),
            reader: Box::new(reader),
            processor: None,
            writer: Box::new(writer),
        }
    }

    /// Items per chunk (and per commit).
    #[must_use]
    pub fn chunk(mut self, items: usize) -> Self {
        self.chunk = items.max(1);
        self
    }

    setters! {
        /// Items that may be skipped before the step fails.
        #[must_use]
        skip_limit(skip_limit: u64);
        /// Retry of transient errors.
        #[must_use]
        retry(retry: Retry);
    }

    /// What happens to each item: a [`Processor`], e.g. a closure
    /// `|item: &Item| -> Result<Option<Item>, ProcessError>`
    /// ([`ProcessError`](crate::api::ProcessError)).
    #[must_use]
    pub fn processor(mut self, processor: impl Processor + 'static) -> Self {
        self.processor = Some(Arc::new(processor));
        self
    }
}

impl std::fmt::Debug for ChunkStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStep")
            .field("name", &self.name)
            .field("chunk", &self.chunk)
            .field("skip_limit", &self.skip_limit)
            .finish()
    }
}

/// Progress reports of a running step (the CLI draws a progress bar from them).
pub trait Progress: Send + Sync {
    /// A step starts; `total` items when the reader knows; `resumed` counts carried
    /// over from a previous execution.
    fn step_started(&self, step: &str, total: Option<u64>, resumed: &StepCounts) {
        let _ = (step, total, resumed);
    }
    /// A chunk was committed; `counts` are the step's totals so far.
    fn chunk_committed(&self, step: &str, counts: &StepCounts) {
        let _ = (step, counts);
    }
    /// How far the step's reader is through its source ([`Reader::extent`]),
    /// when it knows: reported as the step starts and as each chunk is read.
    fn extent(&self, step: &str, extent: Extent) {
        let _ = (step, extent);
    }
    /// A step ended.
    fn step_finished(&self, step: &StepExecution) {
        let _ = step;
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// What a running step shares with the job runner.
pub(crate) struct StepContext<'a> {
    pub(crate) repo: &'a dyn Repository,
    /// The job's name and instance (they key the target's checkpoint row).
    pub(crate) job: &'a str,
    pub(crate) instance_id: i64,
    /// The execution resumes an earlier one of the instance (else: from scratch).
    pub(crate) resumed: bool,
    pub(crate) owner: &'a str,
    pub(crate) stop: &'a AtomicBool,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) clock: &'a dyn Clock,
}

impl StepContext<'_> {
    /// Whether the run must stop now: asked in this process (shutdown, a
    /// heartbeat that learned of it), or by `sluice job stop`, read from the
    /// repository at every chunk boundary so that a stop never waits for the
    /// next heartbeat.
    pub(crate) async fn should_stop(&self, execution_id: i64) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        match self.repo.stop_requested(execution_id).await {
            Ok(stop) => {
                if stop {
                    self.stop.store(true, Ordering::Relaxed);
                }
                stop
            }
            Err(e) => {
                tracing::warn!(execution = execution_id, error = %e, "could not read whether a stop was requested; carrying on");
                false
            }
        }
    }
}

/// Why a step did not complete.
#[derive(Debug)]
pub(crate) enum StepEnd {
    Stopped,
    /// The reader suspended reading (see [`ReadError::Suspended`]).
    Suspended {
        reason: String,
        resume_at_ms: Option<i64>,
    },
    Failed(String),
    LeaseLost(RepoError),
}

/// The items of a chunk: JSON items, or rows when the reader hands out rows and
/// the writer takes them (no processor in between).
enum Data {
    Items(Vec<Item>),
    Rows(Rows),
}

impl Data {
    /// The chunk as the writer gets it.
    fn as_chunk(&self) -> Chunk<'_> {
        match self {
            Data::Items(items) => Chunk::Items(items),
            Data::Rows(rows) => Chunk::Rows(rows),
        }
    }
}

/// One chunk read and processed, not yet written.
struct ReadChunk {
    positions: Vec<u64>,
    data: Data,
    delta: StepCounts,
    skips: Vec<SkipRecord>,
    eof: bool,
    /// The reader suspended after the items of this chunk (reason, resume time).
    suspend: Option<(String, Option<i64>)>,
}

impl ReadChunk {
    /// An empty chunk that carries only the reader's suspension.
    fn suspended(suspend: Option<(String, Option<i64>)>) -> Self {
        Self {
            positions: Vec::new(),
            data: Data::Items(Vec::new()),
            delta: StepCounts::default(),
            skips: Vec::new(),
            eof: false,
            suspend,
        }
    }
}

/// What reading needs of the step (borrowed apart from the writer, so that the next
/// chunk is read while the current one is written).
struct ReadSide<'a> {
    name: &'a str,
    chunk: usize,
    skip_limit: u64,
    reader: &'a mut Box<dyn Reader>,
    processor: Option<&'a Arc<dyn Processor>>,
    /// Read rows with these keys instead of items (no processor, a reader and a
    /// writer that can).
    rows: Option<Arc<[String]>>,
    /// Bytes of text in the last chunk of rows (to size the next one).
    rows_bytes: usize,
}

/// What writing needs of the step.
struct WriteSide<'a> {
    name: &'a str,
    retry: Retry,
    writer: &'a mut Box<dyn Writer>,
}

fn skip_record(
    name: &str,
    exec_id: i64,
    position: u64,
    phase: &str,
    reason: &str,
    item: Option<String>,
) -> SkipRecord {
    SkipRecord {
        step_execution_id: exec_id,
        step_name: name.to_owned(),
        position,
        phase: phase.into(),
        reason: reason.into(),
        item: item.map(|i| truncate(&i, 4096).to_owned()),
    }
}

impl ChunkStep {
    /// Runs the chunk loop on `exec` (already started in the repository, carrying
    /// the counts and checkpoint it resumes from). While chunk N is written and
    /// committed, chunk N+1 is read and processed.
    pub(crate) async fn run(
        &mut self,
        exec: &mut StepExecution,
        ctx: &StepContext<'_>,
    ) -> Result<(), StepEnd> {
        let name = self.name.clone();
        let same_db = matches!(
            (ctx.repo.database_url(), self.writer.database_url()),
            (Some(r), Some(w)) if r == w
        );
        let target = if same_db {
            None
        } else {
            self.claim_target(exec, ctx).await?
        };
        let fault_after = fault_after_target_commit();
        let resuming = !exec.checkpoint.is_null();
        let reader_cp = exec.checkpoint.get("reader").cloned();
        let writer_cp = exec.checkpoint.get("writer").cloned();
        self.reader
            .open(reader_cp.as_ref())
            .await
            .map_err(|e| StepEnd::Failed(format!("step {name}: opening the reader: {e}")))?;
        self.writer
            .open(if resuming { writer_cp.as_ref() } else { None })
            .await
            .map_err(|e| StepEnd::Failed(format!("step {name}: opening the writer: {e}")))?;
        ctx.progress
            .step_started(&name, self.reader.total(), &exec.counts);
        if let Some(e) = self.reader.extent() {
            ctx.progress.extent(&name, e);
        }
        let retry = self.retry;
        let takes_rows = self.processor.is_none() && self.writer.chunk_form() == ChunkForm::Rows;
        let mut rs = ReadSide {
            name: &self.name,
            chunk: self.chunk.max(1),
            skip_limit: self.skip_limit,
            reader: &mut self.reader,
            processor: self.processor.as_ref(),
            rows: None,
            rows_bytes: 0,
        };
        if takes_rows {
            rs.rows = rs.reader.row_keys();
        }
        let mut ws = WriteSide {
            name: &self.name,
            retry,
            writer: &mut self.writer,
        };
        if same_db {
            tracing::info!(step = %name, "the writer targets the repository's database: chunks and checkpoints commit together");
        }
        let mut last_reason = String::new();
        let mut next = rs
            .read_with_retry(exec.id, exec.counts.skipped, &exec.checkpoint, retry)
            .await?;
        // The previous chunk: written, its checkpoint committed while the next chunk
        // is written (a crash in between: the SQL writers' target holds the chunk's
        // checkpoint and the restart resumes from it; file writers truncate to the
        // committed length).
        let mut uncommitted: Option<(StepExecution, Vec<SkipRecord>)> = None;
        let commit = |pending: Option<(StepExecution, Vec<SkipRecord>)>| {
            let name = &name;
            async move {
                let Some((snapshot, skips)) = pending else {
                    return Ok(());
                };
                ctx.repo
                    .commit_chunk(&snapshot, ctx.owner, &skips)
                    .await
                    .map_err(|e| match e {
                        e @ RepoError::LeaseLost(_) => StepEnd::LeaseLost(e),
                        e => StepEnd::Failed(format!("step {name}: committing a chunk: {e}")),
                    })?;
                ctx.progress.chunk_committed(name, &snapshot.counts);
                Ok::<(), StepEnd>(())
            }
        };
        loop {
            let ReadChunk {
                positions,
                data,
                mut delta,
                mut skips,
                eof,
                suspend,
            } = next;
            if eof && delta.read == 0 {
                // The input ended exactly at the last chunk: nothing more to write.
                break;
            }
            if let Some((reason, resume_at_ms)) = suspend.as_ref().filter(|_| delta.read == 0) {
                commit(uncommitted.take()).await?;
                tracing::info!(step = %name, reason = %reason, "reading suspended");
                return Err(StepEnd::Suspended {
                    reason: reason.clone(),
                    resume_at_ms: *resume_at_ms,
                });
            }
            if ctx.should_stop(exec.execution_id).await {
                // Nothing of this chunk is written: it is read again on restart.
                commit(uncommitted.take()).await?;
                return Err(StepEnd::Stopped);
            }
            if let Some(s) = skips.last() {
                last_reason = format!("{} at position {}: {}", s.phase, s.position, s.reason);
            }
            // Over the limit already: fail before writing anything of this chunk.
            if let Err(e) = check_skip_limit(
                &name,
                rs.skip_limit,
                exec.counts.skipped + delta.skipped,
                &last_reason,
            ) {
                commit(uncommitted.take()).await?;
                return Err(e);
            }
            let reader_cp = rs.reader.checkpoint();
            if let Some(e) = rs.reader.extent() {
                ctx.progress.extent(&name, e);
            }
            let skipped_before = exec.counts.skipped + delta.skipped;
            // Into the repository's own database: the chunk and its commit in one
            // transaction (exactly once). The statements assume the whole chunk is
            // written; when it is not (a refused item), the writer only writes and
            // the commit follows separately.
            let in_tx = if same_db {
                // A previous chunk that fell back to a separate commit goes first, so
                // that checkpoints never go backwards.
                commit(uncommitted.take()).await?;
                let mut d = delta;
                d.written += data.as_chunk().len() as u64;
                d.commits = 1;
                let mut snapshot = exec.clone();
                snapshot.counts.add(&d);
                snapshot.checkpoint = json!({
                    "reader": reader_cp,
                    "writer": ws.writer.checkpoint(),
                });
                ctx.repo
                    .chunk_commit_statements(&snapshot, ctx.owner, &skips)
            } else if let Some(key) = &target {
                // Into another database: the step's checkpoint after this chunk, in
                // the target's `sluice_checkpoint`, in the chunk's transaction.
                let mut d = delta;
                d.written += data.as_chunk().len() as u64;
                d.commits = 1;
                let mut counts = exec.counts;
                counts.add(&d);
                let checkpoint = TargetCheckpoint {
                    counts,
                    checkpoint: json!({
                        "reader": reader_cp,
                        "writer": ws.writer.checkpoint(),
                    }),
                };
                ws.writer
                    .checkpoint_store()
                    .map(|store| store.store_statements(key, &checkpoint))
            } else {
                None
            };
            // Write this chunk, read the next, commit the previous: all at once.
            let (written, read_ahead, committed) = tokio::join!(
                ws.write_chunk(
                    exec.id,
                    &positions,
                    &data,
                    &mut delta,
                    &mut skips,
                    &mut last_reason,
                    in_tx.as_deref(),
                ),
                async {
                    if eof || suspend.is_some() {
                        None
                    } else {
                        Some(rs.read_chunk(exec.id, skipped_before).await)
                    }
                },
                commit(uncommitted.take()),
            );
            committed?;
            let together = written?;
            // With the repository's statements: the chunk's commit is done.
            let committed_with_chunk = together && same_db;
            check_skip_limit(
                &name,
                rs.skip_limit,
                exec.counts.skipped + delta.skipped,
                &last_reason,
            )?;
            delta.commits = 1;
            exec.counts.add(&delta);
            exec.checkpoint = json!({
                "reader": reader_cp,
                "writer": ws.writer.checkpoint(),
            });
            if committed_with_chunk {
                ctx.progress.chunk_committed(&name, &exec.counts);
            } else {
                uncommitted = Some((exec.clone(), skips));
            }
            if together && target.is_some() && fault_after == Some(exec.counts.commits) {
                // Test hook: die between the target's commit and the repository's.
                tracing::error!(step = %name, chunk = exec.counts.commits, "{FAULT_AFTER_TARGET_COMMIT}: aborting");
                std::process::abort();
            }
            next = match read_ahead {
                None if suspend.is_some() => ReadChunk::suspended(suspend),
                None => break,
                Some(Ok(c)) => c,
                Some(Err(ReadError::Transient(e))) => {
                    tracing::warn!(step = %name, error = %e, "transient read error; re-reading from the last written chunk");
                    commit(uncommitted.take()).await?;
                    rs.reopen(&exec.checkpoint, &name).await?;
                    rs.read_with_retry(exec.id, exec.counts.skipped, &exec.checkpoint, retry)
                        .await?
                }
                Some(Err(e)) => {
                    commit(uncommitted.take()).await?;
                    return Err(StepEnd::Failed(format!("step {name}: reading failed: {e}")));
                }
            };
        }
        commit(uncommitted.take()).await?;
        ws.writer
            .complete()
            .await
            .map_err(|e| StepEnd::Failed(format!("step {name}: completing the writer: {e}")))?;
        exec.status = BatchStatus::Completed;
        exec.ended_at = Some(ctx.clock.now_millis());
        Ok(())
    }
}

/// Test hook: with `SLUICE_FAULT_AFTER_TARGET_COMMIT=N`, the process aborts
/// right after chunk `N` (the step's `N`-th commit, counted across restarts) is
/// committed in the target's own transaction with its `sluice_checkpoint` row,
/// before the repository records it: the crash window that the target's
/// checkpoint closes. For tests only; unset in production.
pub const FAULT_AFTER_TARGET_COMMIT: &str = "SLUICE_FAULT_AFTER_TARGET_COMMIT";

fn fault_after_target_commit() -> Option<u64> {
    std::env::var(FAULT_AFTER_TARGET_COMMIT)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

impl ChunkStep {
    /// When the writer keeps the step's checkpoint in its own target (another
    /// database than the repository's): claims the row for this execution, and
    /// when the target is ahead of the repository (a crash between the two
    /// commits), resumes from the target's checkpoint and records it in the
    /// repository. Returns the row's key, for the chunks to update it.
    async fn claim_target(
        &mut self,
        exec: &mut StepExecution,
        ctx: &StepContext<'_>,
    ) -> Result<Option<CheckpointKey>, StepEnd> {
        let Some(store) = self.writer.checkpoint_store() else {
            return Ok(None);
        };
        let name = &self.name;
        let key = CheckpointKey {
            job: ctx.job.to_owned(),
            instance_id: ctx.instance_id,
            step: name.clone(),
            execution_id: exec.execution_id,
        };
        let held = store.claim(&key, !ctx.resumed).await.map_err(|e| {
            StepEnd::Failed(format!(
                "step {name}: claiming the target's checkpoint: {e}"
            ))
        })?;
        if let Some(t) = held.filter(|t| t.counts.commits > exec.counts.commits) {
            tracing::warn!(step = %name, target = t.counts.commits, repository = exec.counts.commits,
                "the target committed chunks the repository did not record; resuming from the target's checkpoint");
            exec.counts = t.counts;
            exec.checkpoint = t.checkpoint;
            ctx.repo
                .commit_chunk(exec, ctx.owner, &[])
                .await
                .map_err(|e| match e {
                    e @ RepoError::LeaseLost(_) => StepEnd::LeaseLost(e),
                    e => StepEnd::Failed(format!("step {name}: committing a chunk: {e}")),
                })?;
        }
        Ok(Some(key))
    }
}

/// The skip limit counts every skip of the step, across restarts.
fn check_skip_limit(
    name: &str,
    limit: u64,
    skipped: u64,
    last_reason: &str,
) -> Result<(), StepEnd> {
    if skipped > limit {
        return Err(StepEnd::Failed(format!(
            "step {name}: skip limit of {limit} exceeded ({skipped} skipped); last: {last_reason}"
        )));
    }
    Ok(())
}

impl ReadSide<'_> {
    /// Reopens the reader at the committed checkpoint.
    async fn reopen(&mut self, checkpoint: &serde_json::Value, name: &str) -> Result<(), StepEnd> {
        let cp = checkpoint.get("reader").cloned();
        self.reader
            .open(cp.as_ref())
            .await
            .map_err(|e| StepEnd::Failed(format!("step {name}: reopening the reader: {e}")))?;
        if self.rows.is_some() {
            self.rows = self.reader.row_keys();
        }
        Ok(())
    }

    /// Reads a chunk; a transient error re-reads it from the committed checkpoint,
    /// with backoff, up to the retry limit.
    async fn read_with_retry(
        &mut self,
        exec_id: i64,
        skipped_before: u64,
        checkpoint: &serde_json::Value,
        retry: Retry,
    ) -> Result<ReadChunk, StepEnd> {
        let mut attempt = 0u32;
        loop {
            match self.read_chunk(exec_id, skipped_before).await {
                Ok(c) => return Ok(c),
                Err(ReadError::Transient(e)) if attempt < retry.max => {
                    tracing::warn!(step = %self.name, attempt, error = %e, "transient read error; re-reading the chunk");
                    tokio::time::sleep(retry.wait(attempt)).await;
                    attempt += 1;
                    let name = self.name.to_owned();
                    self.reopen(checkpoint, &name).await?;
                }
                Err(e) => {
                    return Err(StepEnd::Failed(format!(
                        "step {}: reading failed after {attempt} retries: {e}",
                        self.name
                    )));
                }
            }
        }
    }

    /// Reads up to `chunk` items (as rows, when the reader hands them out to a
    /// writer that takes them) and processes them; stops early once the skips
    /// (with `skipped_before` of the step) exceed the limit.
    async fn read_chunk(
        &mut self,
        exec_id: i64,
        skipped_before: u64,
    ) -> Result<ReadChunk, ReadError> {
        let data = match &self.rows {
            Some(keys) => {
                let mut rows = Rows::new(keys.clone());
                rows.reserve(self.chunk, self.rows_bytes + self.rows_bytes / 8);
                Data::Rows(rows)
            }
            None => Data::Items(Vec::with_capacity(self.chunk)),
        };
        let mut c = ReadChunk {
            positions: Vec::with_capacity(self.chunk),
            data,
            delta: StepCounts::default(),
            skips: Vec::new(),
            eof: false,
            suspend: None,
        };
        while c.delta.read < self.chunk as u64 {
            if skipped_before + c.delta.skipped > self.skip_limit {
                break;
            }
            // A row is appended to the chunk as it is read; an item comes back.
            let next = match &mut c.data {
                Data::Rows(rows) => self
                    .reader
                    .read_row(rows)
                    .await
                    .map(|p| p.map(|p| (p, None))),
                Data::Items(_) => {
                    let read = self.reader.read().await;
                    read.map(|ri| ri.map(|ri| (ri.position, Some(ri.item))))
                }
            };
            match next {
                Ok(Some((position, item))) => {
                    c.delta.read += 1;
                    match item {
                        None => c.positions.push(position),
                        Some(item) => self.process(exec_id, position, item, &mut c),
                    }
                }
                Ok(None) => {
                    c.eof = true;
                    break;
                }
                Err(ReadError::Bad {
                    position,
                    reason,
                    raw,
                }) => {
                    c.delta.read += 1;
                    c.delta.skipped += 1;
                    c.skips.push(skip_record(
                        self.name, exec_id, position, "read", &reason, raw,
                    ));
                }
                Err(ReadError::Suspended {
                    reason,
                    resume_at_ms,
                }) => {
                    c.suspend = Some((reason, resume_at_ms));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if let Data::Rows(rows) = &c.data {
            self.rows_bytes = rows.text_len();
        }
        Ok(c)
    }

    /// Runs the processor (if any) on one item read at `position`, adding the
    /// result to `c`: the item to write, a filtered item or a skip.
    fn process(&self, exec_id: i64, position: u64, item: Item, c: &mut ReadChunk) {
        let Data::Items(items) = &mut c.data else {
            return;
        };
        let Some(p) = self.processor else {
            c.positions.push(position);
            items.push(item);
            return;
        };
        match p.process(&item) {
            Ok(Some(v)) => {
                c.delta.processed += 1;
                c.positions.push(position);
                items.push(v);
            }
            Ok(None) => {
                c.delta.processed += 1;
                c.delta.filtered += 1;
            }
            Err(e) => {
                c.delta.skipped += 1;
                c.skips.push(skip_record(
                    self.name,
                    exec_id,
                    position,
                    "process",
                    &e.to_string(),
                    Some(item.to_string()),
                ));
            }
        }
    }
}

impl WriteSide<'_> {
    /// Writes one chunk, retrying transient errors and isolating refused items;
    /// with `commit`, also runs the repository's chunk commit in the writer's
    /// transaction when the writer can (returns whether it did).
    #[allow(clippy::too_many_arguments)]
    async fn write_chunk(
        &mut self,
        exec_id: i64,
        positions: &[u64],
        data: &Data,
        delta: &mut StepCounts,
        skips: &mut Vec<SkipRecord>,
        last_reason: &mut String,
        commit: Option<&[SqlStatement]>,
    ) -> Result<bool, StepEnd> {
        let chunk = data.as_chunk();
        if chunk.is_empty() {
            return Ok(false);
        }
        let mut attempt = 0u32;
        loop {
            match self.writer.write(chunk, commit.unwrap_or_default()).await {
                Ok(committed) => {
                    delta.written += chunk.len() as u64;
                    return Ok(committed == Committed::Together);
                }
                Err(WriteError::Transient(e)) if attempt < self.retry.max => {
                    delta.rollbacks += 1;
                    tracing::warn!(step = %self.name, attempt, error = %e, "transient write error; retrying the chunk");
                    tokio::time::sleep(self.retry.wait(attempt)).await;
                    attempt += 1;
                }
                Err(WriteError::Item(e)) => {
                    // Find the refused item(s): write one by one.
                    delta.rollbacks += 1;
                    tracing::info!(step = %self.name, error = %e, "a chunk was refused; writing it item by item");
                    for (i, pos) in positions.iter().enumerate() {
                        let v = chunk.item(i);
                        let one = Chunk::Items(std::slice::from_ref(&*v));
                        let mut attempt = 0u32;
                        loop {
                            match self.writer.write(one, &[]).await {
                                Ok(_) => {
                                    delta.written += 1;
                                    break;
                                }
                                Err(WriteError::Item(reason)) => {
                                    delta.skipped += 1;
                                    *last_reason = format!("write at position {pos}: {reason}");
                                    skips.push(skip_record(
                                        self.name,
                                        exec_id,
                                        *pos,
                                        "write",
                                        &reason,
                                        Some(v.to_string()),
                                    ));
                                    break;
                                }
                                Err(WriteError::Transient(e)) if attempt < self.retry.max => {
                                    tokio::time::sleep(self.retry.wait(attempt)).await;
                                    attempt += 1;
                                    tracing::warn!(step = %self.name, error = %e, "transient write error; retrying the item");
                                }
                                Err(e) => {
                                    return Err(StepEnd::Failed(format!(
                                        "step {}: writing failed: {e}",
                                        self.name
                                    )));
                                }
                            }
                        }
                    }
                    return Ok(false);
                }
                Err(e) => {
                    return Err(StepEnd::Failed(format!(
                        "step {}: writing failed after {attempt} retries: {e}",
                        self.name
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let r = Retry {
            max: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        for attempt in 0..10 {
            assert!(r.wait(attempt) <= Duration::from_millis(250));
        }
        assert_eq!(truncate("가나다", 4), "가");
    }
}
