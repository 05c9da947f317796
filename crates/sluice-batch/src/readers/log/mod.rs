//! [`LogReader`]: web server access logs (nginx, Apache, sluice's own, JSON
//! lines), one item per line, followed across rotation.
//!
//! See [`formats`] for the fields of an item and [`follow`] for how a checkpoint
//! survives `logrotate` (rename and create, or copytruncate).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::api::{Extent, ExtentUnit, ReadError, ReadItem, Reader};

mod config;
pub mod follow;
pub mod formats;

pub use config::RawLogReader;
pub use follow::{FileId, LogPos};
pub use formats::LogFormat;

use follow::{Entry, Follower};

/// Reads an access log line by line, following it across rotation.
///
/// - **Items.** One JSON object per line, with `time` (RFC 3339, UTC, ms),
///   `time_ms`, `method`, `path`, `status`, `bytes`, `referer`, `agent`, and
///   nginx's `request_time` / `upstream_time` when logged (see [`formats`]).
/// - **Bad lines.** A line that does not fit the format is a
///   [`ReadError::Bad`] naming the file and line number (skipped or failing the
///   step by its skip policy); blank lines are passed over.
/// - **Checkpoint.** `{"dev", "ino", "fp", "fp_len", "offset", "line"}`: the
///   file's identity (device, inode, fingerprint of its first bytes), the byte
///   offset after the last whole line, and its line number. Opening at it
///   finishes a rotated file first (see [`follow`]), so a restart neither skips
///   nor repeats a line. A last line with no newline yet is not consumed.
/// - **End.** Reading ends at the end of the current file; the next run goes on
///   from there.
///
/// Reading and parsing happen on tokio's blocking pool, 1024 lines at a time.
pub struct LogReader {
    path: PathBuf,
    rotated: Option<String>,
    format: Arc<LogFormat>,
    state: State,
    ready: VecDeque<Entry>,
    pos: LogPos,
    sizes: (u64, u64),
}

enum State {
    Closed,
    Idle(Box<Follower>),
    Fetching(JoinHandle<(Box<Follower>, VecDeque<Entry>, bool)>),
    Done,
    /// A stopping error: (transient, message).
    Failed(bool, String),
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("path", &self.path)
            .field("checkpoint", &self.pos.to_json())
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// A reader of the log at `path`, in `format`.
    pub fn new(path: impl Into<PathBuf>, format: LogFormat) -> Self {
        LogReader {
            path: path.into(),
            rotated: None,
            format: Arc::new(format),
            state: State::Closed,
            ready: VecDeque::new(),
            pos: LogPos::default(),
            sizes: (0, 0),
        }
    }

    /// Also looks for rotated copies matching this glob (`*` and `?` in the file
    /// name).
    pub fn rotated(mut self, glob: impl Into<String>) -> Self {
        self.rotated = Some(glob.into());
        self
    }
}

#[async_trait]
impl Reader for LogReader {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), ReadError> {
        self.state = State::Closed;
        self.ready.clear();
        let cp = LogPos::from_json(checkpoint)?;
        let (path, rotated, format) =
            (self.path.clone(), self.rotated.clone(), self.format.clone());
        let follower = tokio::task::spawn_blocking(move || {
            Follower::open(&path, rotated.as_deref(), format, cp)
        })
        .await
        .map_err(|e| ReadError::Fatal(format!("log reader task failed: {e}")))??;
        self.pos = follower.start();
        self.sizes = follower.sizes();
        self.state = State::Idle(Box::new(follower));
        Ok(())
    }

    async fn read(&mut self) -> Result<Option<ReadItem>, ReadError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                match e.result {
                    Err(ReadError::Transient(m)) => {
                        self.state = State::Failed(true, m.clone());
                        self.ready.clear();
                        return Err(ReadError::Transient(m));
                    }
                    Err(ReadError::Fatal(m)) => {
                        self.state = State::Failed(false, m.clone());
                        self.ready.clear();
                        return Err(ReadError::Fatal(m));
                    }
                    Err(bad) => {
                        self.pos = e.pos;
                        return Err(bad);
                    }
                    // A blank line, or the move to the next file.
                    Ok(ri) if ri.item.is_null() => self.pos = e.pos,
                    Ok(ri) => {
                        self.pos = e.pos;
                        return Ok(Some(ri));
                    }
                }
                continue;
            }
            match &mut self.state {
                State::Closed => {
                    return Err(ReadError::Fatal("LogReader::read before open".into()));
                }
                State::Done => return Ok(None),
                State::Failed(true, m) => return Err(ReadError::Transient(m.clone())),
                State::Failed(false, m) => return Err(ReadError::Fatal(m.clone())),
                State::Fetching(handle) => {
                    // Awaiting through `&mut` keeps the handle if this future is
                    // dropped.
                    let joined = handle.await;
                    match joined {
                        Ok((follower, entries, end)) => {
                            self.ready = entries;
                            self.sizes = follower.sizes();
                            self.state = if end {
                                State::Done
                            } else {
                                State::Idle(follower)
                            };
                        }
                        Err(e) => {
                            let m = format!("log reader task failed: {e}");
                            self.state = State::Failed(false, m.clone());
                            return Err(ReadError::Fatal(m));
                        }
                    }
                }
                State::Idle(_) => {
                    let State::Idle(mut follower) = std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!()
                    };
                    self.state = State::Fetching(tokio::task::spawn_blocking(move || {
                        let mut out = VecDeque::with_capacity(follow::BATCH_LINES);
                        let end = follower.fill(&mut out);
                        (follower, out, end)
                    }));
                }
            }
        }
    }

    fn checkpoint(&self) -> Value {
        self.pos.to_json()
    }

    fn extent(&self) -> Option<Extent> {
        if matches!(self.state, State::Closed) {
            return None;
        }
        let (left, all) = self.sizes;
        Some(Extent {
            done: all.saturating_sub(left),
            total: all,
            unit: ExtentUnit::Bytes,
        })
    }
}

#[cfg(test)]
mod tests;
