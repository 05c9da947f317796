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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::api::{Processor, ReadError, Reader, WriteError, Writer};
use crate::model::{BatchStatus, Item, SkipRecord, StepCounts, StepExecution, now_millis};
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
    fn wait(&self, attempt: u32) -> Duration {
        let cap = self
            .backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        cap.mul_f64(rand::random::<f64>())
    }
}

/// A chunk-oriented step.
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
    pub(crate) owner: &'a str,
    pub(crate) stop: &'a AtomicBool,
    pub(crate) progress: &'a dyn Progress,
}

/// Why a step did not complete.
#[derive(Debug)]
pub(crate) enum StepEnd {
    Stopped,
    Failed(String),
    LeaseLost(RepoError),
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl ChunkStep {
    fn skip(
        &self,
        exec: &StepExecution,
        position: u64,
        phase: &str,
        reason: &str,
        item: Option<String>,
    ) -> SkipRecord {
        SkipRecord {
            step_execution_id: exec.id,
            step_name: self.name.clone(),
            position,
            phase: phase.into(),
            reason: reason.into(),
            item: item.map(|i| truncate(&i, 4096)),
        }
    }

    /// Runs the chunk loop on `exec` (already started in the repository, carrying
    /// the counts and checkpoint it resumes from).
    pub(crate) async fn run(
        &mut self,
        exec: &mut StepExecution,
        ctx: &StepContext<'_>,
    ) -> Result<(), StepEnd> {
        let resuming = !exec.checkpoint.is_null();
        let reader_cp = exec.checkpoint.get("reader").cloned();
        let writer_cp = exec.checkpoint.get("writer").cloned();
        self.reader
            .open(reader_cp.as_ref())
            .await
            .map_err(|e| StepEnd::Failed(format!("step {}: opening the reader: {e}", self.name)))?;
        self.writer
            .open(if resuming { writer_cp.as_ref() } else { None })
            .await
            .map_err(|e| StepEnd::Failed(format!("step {}: opening the writer: {e}", self.name)))?;
        ctx.progress
            .step_started(&self.name, self.reader.total(), &exec.counts);
        let mut last_reason = String::new();
        let mut eof = false;
        while !eof {
            if ctx.stop.load(Ordering::Relaxed) {
                return Err(StepEnd::Stopped);
            }
            // Read and process one chunk; a transient read error re-reads it from
            // the committed checkpoint.
            let mut attempt = 0u32;
            let (items, mut delta, mut skips) = loop {
                match self.read_chunk(exec).await {
                    Ok((items, delta, skips, at_end)) => {
                        eof = at_end;
                        break (items, delta, skips);
                    }
                    Err(ReadError::Transient(e)) if attempt < self.retry.max => {
                        tracing::warn!(step = %self.name, attempt, error = %e, "transient read error; re-reading the chunk");
                        tokio::time::sleep(self.retry.wait(attempt)).await;
                        attempt += 1;
                        let cp = exec.checkpoint.get("reader").cloned();
                        self.reader.open(cp.as_ref()).await.map_err(|e| {
                            StepEnd::Failed(format!(
                                "step {}: reopening the reader: {e}",
                                self.name
                            ))
                        })?;
                    }
                    Err(e) => {
                        return Err(StepEnd::Failed(format!(
                            "step {}: reading failed after {attempt} retries: {e}",
                            self.name
                        )));
                    }
                }
            };
            if eof && delta.read == 0 {
                // The input ended exactly at the last chunk: nothing to commit.
                break;
            }
            if let Some(s) = skips.last() {
                last_reason = format!("{} at position {}: {}", s.phase, s.position, s.reason);
            }
            // Over the limit already: fail before writing anything of this chunk.
            self.check_skip_limit(exec.counts.skipped + delta.skipped, &last_reason)?;
            // Write it.
            if !items.is_empty() {
                self.write_chunk(exec, items, &mut delta, &mut skips, &mut last_reason)
                    .await?;
            }
            self.check_skip_limit(exec.counts.skipped + delta.skipped, &last_reason)?;
            // Commit.
            delta.commits = 1;
            exec.counts.add(&delta);
            exec.checkpoint = json!({
                "reader": self.reader.checkpoint(),
                "writer": self.writer.checkpoint(),
            });
            ctx.repo
                .commit_chunk(exec, ctx.owner, &skips)
                .await
                .map_err(|e| match e {
                    e @ RepoError::LeaseLost(_) => StepEnd::LeaseLost(e),
                    e => StepEnd::Failed(format!("step {}: committing a chunk: {e}", self.name)),
                })?;
            ctx.progress.chunk_committed(&self.name, &exec.counts);
        }
        self.writer.complete().await.map_err(|e| {
            StepEnd::Failed(format!("step {}: completing the writer: {e}", self.name))
        })?;
        exec.status = BatchStatus::Completed;
        exec.ended_at = Some(now_millis());
        Ok(())
    }

    /// The skip limit counts every skip of the step, across restarts.
    fn check_skip_limit(&self, skipped: u64, last_reason: &str) -> Result<(), StepEnd> {
        if skipped > self.skip_limit {
            return Err(StepEnd::Failed(format!(
                "step {}: skip limit of {} exceeded ({skipped} skipped); last: {last_reason}",
                self.name, self.skip_limit
            )));
        }
        Ok(())
    }

    /// Reads up to `chunk` items and processes them.
    #[allow(clippy::type_complexity)]
    async fn read_chunk(
        &mut self,
        exec: &StepExecution,
    ) -> Result<(Vec<(u64, Item)>, StepCounts, Vec<SkipRecord>, bool), ReadError> {
        let mut items = Vec::with_capacity(self.chunk);
        let mut delta = StepCounts::default();
        let mut skips = Vec::new();
        let mut consumed = 0usize;
        while consumed < self.chunk {
            if exec.counts.skipped + delta.skipped > self.skip_limit {
                // Over the limit: stop here, the step fails on this skip.
                return Ok((items, delta, skips, false));
            }
            match self.reader.read().await {
                Ok(Some(ri)) => {
                    consumed += 1;
                    delta.read += 1;
                    let Some(p) = &self.processor else {
                        items.push((ri.position, ri.item));
                        continue;
                    };
                    let raw = p.process(ri.item.clone());
                    match raw {
                        Ok(Some(v)) => {
                            delta.processed += 1;
                            items.push((ri.position, v));
                        }
                        Ok(None) => {
                            delta.processed += 1;
                            delta.filtered += 1;
                        }
                        Err(reason) => {
                            delta.skipped += 1;
                            skips.push(self.skip(
                                exec,
                                ri.position,
                                "process",
                                &reason,
                                Some(ri.item.to_string()),
                            ));
                        }
                    }
                }
                Ok(None) => return Ok((items, delta, skips, true)),
                Err(ReadError::Bad {
                    position,
                    reason,
                    raw,
                }) => {
                    consumed += 1;
                    delta.read += 1;
                    delta.skipped += 1;
                    skips.push(self.skip(exec, position, "read", &reason, raw));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((items, delta, skips, false))
    }

    /// Writes one chunk, retrying transient errors and isolating refused items.
    async fn write_chunk(
        &mut self,
        exec: &StepExecution,
        items: Vec<(u64, Item)>,
        delta: &mut StepCounts,
        skips: &mut Vec<SkipRecord>,
        last_reason: &mut String,
    ) -> Result<(), StepEnd> {
        let values: Vec<Item> = items.iter().map(|(_, v)| v.clone()).collect();
        let mut attempt = 0u32;
        loop {
            match self.writer.write(&values).await {
                Ok(()) => {
                    delta.written += values.len() as u64;
                    return Ok(());
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
                    for (pos, v) in &items {
                        let mut attempt = 0u32;
                        loop {
                            match self.writer.write(std::slice::from_ref(v)).await {
                                Ok(()) => {
                                    delta.written += 1;
                                    break;
                                }
                                Err(WriteError::Item(reason)) => {
                                    delta.skipped += 1;
                                    *last_reason = format!("write at position {pos}: {reason}");
                                    skips.push(self.skip(
                                        exec,
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
                    return Ok(());
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
