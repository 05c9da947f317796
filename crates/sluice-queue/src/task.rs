//! The task envelope: what waits on a queue, and what a worker gets when it leases it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::UnixMillis;
use uuid::Uuid;

/// Highest priority; tasks of higher priority are leased first.
pub const MAX_PRIORITY: u8 = 9;
/// The default priority (the middle of 0..=9).
pub const DEFAULT_PRIORITY: u8 = 5;
/// Attempts a task gets unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The default queue's name.
pub const DEFAULT_QUEUE: &str = "default";

/// A task's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|e| format!("'{s}' is not a task id (a UUID): {e}"))
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting to be leased.
    Ready,
    /// Waiting for its not-before time (a delay or a retry's backoff).
    Delayed,
    /// Leased by a worker.
    Running,
    /// Done; kept only when a result TTL was asked for.
    Completed,
    /// Out of attempts, in the dead-letter queue.
    Dead,
}

impl TaskState {
    /// The state's name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Delayed => "delayed",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Dead => "dead",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ready" => Self::Ready,
            "delayed" => Self::Delayed,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task as it sits on a queue: the envelope of a unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Its id (UUIDv7).
    pub id: TaskId,
    /// The handler's name, e.g. `job.run`.
    pub name: String,
    /// The handler's input.
    pub payload: Value,
    /// The queue it waits on.
    pub queue: String,
    /// 0..=9, higher first.
    pub priority: u8,
    /// The attempt under way (1 for the first lease), or attempts made so far
    /// when not leased.
    pub attempt: u32,
    /// Attempts before the task goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Not leased before this instant (ms since the epoch).
    pub not_before: UnixMillis,
    /// Deduplication key given at enqueue.
    pub idempotency_key: Option<String>,
    /// When it was enqueued (ms since the epoch).
    pub created_at: UnixMillis,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// How long a result is kept after completion (0 = not kept).
    pub result_ttl_ms: u64,
}

/// A task to enqueue, built with [`NewTask::new`] and its setters.
///
/// ```
/// use sluice_queue::NewTask;
/// use std::time::Duration;
/// let t = NewTask::new("email.send", serde_json::json!({"to": "a@b.c"}))
///     .queue("mail")
///     .priority(7)
///     .delay(Duration::from_secs(30))
///     .idempotency_key("welcome-42");
/// assert_eq!(t.queue, "mail");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Assigned here so that callers know it before the enqueue returns.
    pub id: TaskId,
    /// The handler's name.
    pub name: String,
    /// The handler's input.
    pub payload: Value,
    /// The queue (default `default`).
    pub queue: String,
    /// 0..=9, higher first (default 5).
    pub priority: u8,
    /// Attempts before dead-lettering (default 5).
    pub max_attempts: u32,
    /// Waits this long before it can be leased.
    pub delay: Duration,
    /// A second enqueue with the same key within `idempotency_window` returns
    /// the first task's id.
    pub idempotency_key: Option<String>,
    /// How long the key deduplicates (default 24 h).
    pub idempotency_window: Duration,
    /// Keep the result this long after completion (default: not kept).
    pub result_ttl: Duration,
}

impl NewTask {
    /// A task for handler `name` with `payload`, on the default queue.
    pub fn new(name: impl Into<String>, payload: Value) -> Self {
        Self {
            id: TaskId::new(),
            name: name.into(),
            payload,
            queue: DEFAULT_QUEUE.into(),
            priority: DEFAULT_PRIORITY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            delay: Duration::ZERO,
            idempotency_key: None,
            idempotency_window: Duration::from_secs(24 * 3600),
            result_ttl: Duration::ZERO,
        }
    }

    /// Puts it on `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Priority 0..=9 (higher first; values above 9 count as 9).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority.min(MAX_PRIORITY);
        self
    }

    /// Attempts before it goes to the dead-letter queue (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Not leased before `delay` has passed.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Deduplicates on `key` for the idempotency window.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How long the idempotency key deduplicates.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Keeps the handler's result for `ttl` after completion, for
    /// [`Broker::status`](crate::Broker::status).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// Checks what a broker cannot store.
    ///
    /// # Errors
    ///
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("task name is empty".into());
        }
        check_queue_name(&self.queue)?;
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > 512)
        {
            return Err("idempotency key must be 1 to 512 characters".into());
        }
        Ok(())
    }

    /// The envelope as stored, at enqueue time `now`.
    pub fn to_envelope(&self, now: UnixMillis) -> Envelope {
        Envelope {
            id: self.id,
            name: self.name.clone(),
            payload: self.payload.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            attempt: 0,
            max_attempts: self.max_attempts,
            not_before: now + self.delay.as_millis() as i64,
            idempotency_key: self.idempotency_key.clone(),
            created_at: now,
            last_error: None,
            result_ttl_ms: self.result_ttl.as_millis() as u64,
        }
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The task's id: the new one, or the first task's for a duplicate key.
    pub id: TaskId,
    /// An earlier task had the same idempotency key within its window.
    pub duplicate: bool,
}

/// A worker's time-bounded claim on a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The task, with `attempt` counting this one.
    pub task: Envelope,
    /// Proof of holding the lease: only this token extends, acknowledges or
    /// fails it.
    pub token: String,
    /// The lease runs out at this instant unless extended (broker's clock, ms).
    pub deadline: UnixMillis,
}

impl Lease {
    /// The reference that extends, completes or fails this lease.
    pub fn as_ref(&self) -> LeaseRef {
        LeaseRef {
            queue: self.task.queue.clone(),
            id: self.task.id,
            token: self.token.clone(),
        }
    }
}

/// Names a lease: the task and the holder's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The task's queue.
    pub queue: String,
    /// The task.
    pub id: TaskId,
    /// The holder's token.
    pub token: String,
}

/// An acknowledgement: the handler returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The lease that completed.
    pub lease: LeaseRef,
    /// The handler's result, kept for the task's result TTL when it has one.
    pub result: Option<Value>,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Scheduled again at this instant (ms since the epoch).
    Retry(UnixMillis),
    /// Moved to the dead-letter queue.
    Dead,
    /// The lease was no longer ours (it expired and the task moved on).
    LeaseLost,
}

/// A task's state as [`Broker::status`](crate::Broker::status) reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The envelope.
    pub task: Envelope,
    /// Where it stands.
    pub state: TaskState,
    /// The handler's result, when completed with a result TTL.
    pub result: Option<Value>,
    /// When it completed or died (ms since the epoch).
    pub finished_at: Option<UnixMillis>,
    /// Times the task was handed out again because a lease ran out.
    pub redelivered: u32,
}

/// Counts of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Ready to lease now.
    pub ready: u64,
    /// Waiting for a not-before time.
    pub delayed: u64,
    /// Leased by workers.
    pub running: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// Checks a queue name: 1 to 200 characters, no braces, no control characters.
///
/// # Errors
///
/// What is wrong with it, naming it.
pub fn check_queue_name(queue: &str) -> Result<(), String> {
    if queue.is_empty() || queue.len() > 200 {
        return Err(format!("queue name '{queue}' must be 1 to 200 characters"));
    }
    if queue.contains(['{', '}']) || queue.chars().any(char::is_control) {
        return Err(format!(
            "queue name '{queue}' must not contain braces or control characters"
        ));
    }
    Ok(())
}

impl QueueStats {
    /// Tasks not yet finished (ready, delayed or running).
    pub fn pending(&self) -> u64 {
        self.ready + self.delayed + self.running
    }
}
