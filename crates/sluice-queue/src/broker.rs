//! The [`Broker`] trait: where tasks wait, and the lease protocol every broker keeps.
//!
//! The protocol, the same on Redis, SQLite and PostgreSQL:
//!
//! - **Enqueue** stores the envelope. A task with a delay (or a retry's backoff)
//!   waits *outside* the lease machinery until its not-before time, so a long delay
//!   never turns into several deliveries.
//! - **Lease** hands out up to `max` ready tasks, highest priority first, then oldest
//!   first, each with a fresh random token and a deadline `visibility` ahead. Before
//!   it does, due delayed tasks become ready and tasks whose lease ran out (their
//!   worker died or hung) go back to ready, counted as a redelivery; one whose last
//!   attempt it was goes to the dead-letter queue instead.
//! - **Extend**, **complete** and **fail** take the token: a worker whose lease ran
//!   out and whose task was leased again cannot extend, acknowledge or fail the new
//!   holder's attempt.
//! - Acknowledgement comes after the handler returns, so delivery is at least once;
//!   a duplicate run happens only when a lease runs out mid-run.
//!
//! Time is the broker's own (Redis `TIME`, PostgreSQL `clock_timestamp()`, the
//! SQLite process's clock), so nodes with skewed clocks agree on deadlines.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::task::{
    Completion, Enqueued, Envelope, FailOutcome, Lease, LeaseRef, NewTask, QueueStats, TaskId,
    TaskStatus,
};

/// A broker failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The broker (Redis, the database) did not answer or refused.
    #[error("{broker} broker unavailable: {message}")]
    Unavailable {
        /// `redis`, `sqlite` or `postgres`.
        broker: &'static str,
        /// What happened (never a password).
        message: String,
    },
    /// A task or argument was invalid.
    #[error("invalid task: {0}")]
    Invalid(String),
    /// Stored data could not be read back.
    #[error("corrupt task {id} in the {broker} broker: {message}")]
    Corrupt {
        /// `redis`, `sqlite` or `postgres`.
        broker: &'static str,
        /// The task.
        id: String,
        /// What was wrong.
        message: String,
    },
}

/// What one [`Broker::lease`] call asks of a broker: always at least one task.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LeaseRequest<'a> {
    /// The queue to lease from.
    pub queue: &'a str,
    /// Most tasks to lease.
    pub max: NonZeroUsize,
    /// How long the leases last without a heartbeat.
    pub visibility: Duration,
}

/// What a worker announces of itself: which node it is and which queues it
/// serves. A node running a job in its own process (`sluice job run` without a
/// worker) announces itself with no queues, so that its executions show as alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// The node id, `{hostname}-{pid}` (the owner recorded on job executions).
    pub node: String,
    /// The queues it leases from (empty for a node that only runs a job itself).
    pub queues: Vec<String>,
    /// When it started (Unix ms, its own clock).
    pub started_at: i64,
}

/// A worker whose last [`Broker::announce`] has not run out yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWorker {
    /// The node id, `{hostname}-{pid}`.
    pub node: String,
    /// The queues it leases from.
    pub queues: Vec<String>,
    /// When it started (Unix ms, its own clock).
    pub started_at: i64,
    /// When it last announced itself (Unix ms, the broker's clock).
    pub seen_at: i64,
    /// When it counts as gone unless it announces itself again (Unix ms, the
    /// broker's clock).
    pub expires_at: i64,
}

impl LiveWorker {
    /// Whether it leases from `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q == queue)
    }
}

/// What [`Broker::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The task was waiting (ready or delayed) and is gone: no worker will run it.
    Cancelled,
    /// A worker holds its lease: it is left running.
    Running,
    /// It already finished (completed with a kept result, or dead): nothing to cancel.
    Finished(crate::task::TaskState),
    /// No such task on that queue.
    Unknown,
}

/// A leased task and when its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    /// The task.
    pub id: TaskId,
    /// When its lease runs out unless its worker extends it (Unix ms, the
    /// broker's clock).
    pub lease_until: i64,
}

/// Where tasks wait: Redis, SQLite or PostgreSQL.
///
/// Every method is safe to call from many workers on many nodes at once.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// `redis`, `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Stores `task`; with an idempotency key seen within its window, stores
    /// nothing and returns the first task's id.
    ///
    /// # Errors
    ///
    /// [`QueueError::Invalid`] for a bad envelope, [`QueueError::Unavailable`].
    async fn enqueue(&self, task: NewTask) -> Result<Enqueued, QueueError>;

    /// Enqueues several tasks in as few round trips as the broker allows.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue); tasks before the failing one may be stored.
    async fn enqueue_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, QueueError> {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(self.enqueue(t).await?);
        }
        Ok(out)
    }

    /// Leases up to `max` tasks of `queue` for `visibility`; none when `max` is 0
    /// (without asking the backend). Brokers implement
    /// [`lease_request`](Self::lease_request), which this calls.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn lease(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Lease>, QueueError> {
        match NonZeroUsize::new(max) {
            Some(max) => {
                self.lease_request(LeaseRequest {
                    queue,
                    max,
                    visibility,
                })
                .await
            }
            None => Ok(Vec::new()),
        }
    }

    /// Leases the tasks of one [`LeaseRequest`], which asks for at least one; the
    /// broker's side of [`lease`](Self::lease) (call that one).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn lease_request(&self, req: LeaseRequest<'_>) -> Result<Vec<Lease>, QueueError>;

    /// Moves each lease's deadline to `visibility` from now; one flag per lease,
    /// false where the lease is no longer held by that token.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn extend(
        &self,
        leases: &[LeaseRef],
        visibility: Duration,
    ) -> Result<Vec<bool>, QueueError>;

    /// Acknowledges finished tasks; returns how many were still held (an
    /// acknowledgement with a stale token is ignored).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn complete(&self, done: &[Completion]) -> Result<usize, QueueError>;

    /// Records a failed attempt: retried at `retry_in` from now while attempts
    /// remain, else dead-lettered with `error`. `None` dead-letters at once.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<FailOutcome, QueueError>;

    /// Gives a lease back without counting the attempt (a worker shutting
    /// down); false when it was no longer held.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn release(&self, lease: &LeaseRef) -> Result<bool, QueueError>;

    /// Gives a lease back without counting the attempt, the task becoming ready
    /// again only `delay` from now (a handler that must wait for something, such
    /// as another process's lease on the same work); `reason` becomes the task's
    /// last error. False when the lease was no longer held.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn release_delayed(
        &self,
        lease: &LeaseRef,
        delay: Duration,
        reason: &str,
    ) -> Result<bool, QueueError>;

    /// A task's state, or `None` when unknown (never enqueued, or completed
    /// without a result TTL, or its result expired).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn status(&self, queue: &str, id: TaskId) -> Result<Option<TaskStatus>, QueueError>;

    /// Counts of `queue`.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError>;

    /// Queues that have held tasks.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn queues(&self) -> Result<Vec<String>, QueueError>;

    /// Up to `limit` dead-lettered tasks of `queue`, oldest death first, each with
    /// its last error.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>, QueueError>;

    /// Puts dead tasks back on the queue with fresh attempts: those named, or all
    /// when `ids` is `None`; returns how many moved.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn retry_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<u64, QueueError>;

    /// Deletes every dead task of `queue`; returns how many.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn purge_dead(&self, queue: &str) -> Result<u64, QueueError>;

    /// Deletes the dead tasks of `queue` with these ids (others untouched); how
    /// many were deleted. An id that is not a dead task of `queue` (unknown,
    /// live, or on another queue) counts 0 and is left as it is.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<u64, QueueError>;

    /// Pauses or resumes `queue`: while paused, no worker on any node leases its
    /// tasks (tasks in flight finish; enqueueing still works). Workers read the
    /// paused set about once a second, so a pause takes effect within that.
    /// Pausing a paused queue (or resuming a running one) changes nothing.
    ///
    /// # Errors
    ///
    /// [`QueueError::Invalid`] for an empty queue name, [`QueueError::Unavailable`].
    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError>;

    /// The paused queues, by name.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn paused_queues(&self) -> Result<Vec<String>, QueueError>;

    /// Since when the longest-waiting ready task of `queue` has been ready to
    /// lease (its not-before time, Unix ms; the broker's clock), or `None`
    /// when none is ready: how far behind its workers are.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn oldest_ready(&self, queue: &str) -> Result<Option<i64>, QueueError>;

    /// Announces a worker for `ttl`: it counts as live until then (on the
    /// broker's clock) unless it announces itself again. Workers call it every
    /// few seconds; entries that ran out are ignored (and cleaned up).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn announce(&self, beat: &WorkerBeat, ttl: Duration) -> Result<(), QueueError>;

    /// Removes a worker's announcement (a clean shutdown).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn withdraw(&self, node: &str) -> Result<(), QueueError>;

    /// The workers whose announcement has not run out, by node id.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn workers(&self) -> Result<Vec<LiveWorker>, QueueError>;

    /// Cancels task `id` of `queue` while no worker has started it (ready or
    /// delayed): it is deleted. A running or finished task is left as it is, and
    /// the outcome says so.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn cancel(&self, queue: &str, id: TaskId) -> Result<CancelOutcome, QueueError>;

    /// Up to `limit` leased tasks of `queue`, the lease that runs out first
    /// first.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`].
    async fn running(&self, queue: &str, limit: usize) -> Result<Vec<RunningTask>, QueueError>;
}
