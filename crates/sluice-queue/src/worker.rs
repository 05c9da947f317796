//! Workers: lease tasks, run their handlers, heartbeat, acknowledge, retry.
//!
//! One [`Worker`] serves several queues, each with its own concurrency. Per queue a
//! fetch loop leases as many tasks as there are free slots (in one broker call) and
//! spawns a handler for each. Around them:
//!
//! - a **heartbeat** extends every in-flight lease each third of the visibility
//!   timeout, in one broker call; a lease that could not be extended (it ran out and
//!   moved on) is counted as lost;
//! - an **acknowledger** batches completions: acknowledgement happens after the
//!   handler returned, and several finished tasks share one broker call;
//! - a handler's panic is caught and counted as a failed attempt (the worker lives
//!   on); a retryable error is retried with the task name's [`RetryPolicy`] until
//!   the envelope's attempts run out, then dead-lettered with the error; a
//!   [`TaskError::Wait`] ("not now, after this delay") gives the lease back
//!   without counting the attempt, the task leased again after the delay;
//! - a **presence** loop announces the worker (its node id and queues) every few
//!   seconds with a TTL ([`Broker::announce`]), so that `sluice job run` knows
//!   whether a live worker serves a queue, and `job status` whether a running
//!   execution's owner is alive; a clean shutdown withdraws the announcement;
//! - **pauses**: before leasing from a queue a fetch loop checks the paused
//!   queues ([`Broker::paused_queues`]), which the worker reads at most once
//!   every [`PAUSES_EVERY`] for all its queues; a paused queue is skipped (its
//!   tasks in flight finish). When the broker cannot say, the last known set
//!   holds (the failure logged once, not every second);
//! - **shutdown** stops leasing, lets in-flight handlers finish within the grace
//!   period, then gives the rest of the leases back (not counted as attempts).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_core::Quota;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{Broker, QueueError, WorkerBeat};
use crate::metrics as m;
use crate::retry::RetryPolicy;
use crate::task::{Completion, FailOutcome, Lease, LeaseRef, NewTask, TaskId};

/// How often a worker reads the paused queues from its broker (at most).
pub const PAUSES_EVERY: Duration = Duration::from_secs(1);

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// Worth another attempt (a timeout, an upstream 503).
    #[error("{0}")]
    Retryable(String),
    /// Never worth retrying (bad input): dead-lettered at once.
    #[error("{0}")]
    Fatal(String),
    /// The worker is shutting down and the handler stopped early: the lease is
    /// given back without counting the attempt.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// Not now: the work cannot start before some time (another process still
    /// holds it, say). The lease is given back without counting the attempt and
    /// the task is leased again after `delay`.
    #[error("waiting {delay:?}: {reason}")]
    Wait {
        /// How long to wait before the next attempt.
        delay: Duration,
        /// Why (kept as the task's last error).
        reason: String,
    },
}

/// Turns any error into a [`TaskError`]: `.retryable()?` or `.fatal()?`.
pub trait ResultExt<T> {
    /// A failure worth retrying.
    ///
    /// # Errors
    ///
    /// The error as [`TaskError::Retryable`].
    fn retryable(self) -> Result<T, TaskError>;
    /// A failure never worth retrying.
    ///
    /// # Errors
    ///
    /// The error as [`TaskError::Fatal`].
    fn fatal(self) -> Result<T, TaskError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, TaskError> {
        self.map_err(|e| TaskError::Retryable(e.to_string()))
    }
    fn fatal(self) -> Result<T, TaskError> {
        self.map_err(|e| TaskError::Fatal(e.to_string()))
    }
}

/// What a handler knows of the attempt it runs.
#[derive(Clone)]
pub struct TaskContext {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// This attempt, 1-based.
    pub attempt: u32,
    /// Attempts it gets in all.
    pub max_attempts: u32,
    /// The previous attempt's error.
    pub last_error: Option<String>,
    /// The broker it came from (to enqueue follow-up tasks).
    pub broker: Arc<dyn Broker>,
    shutdown: watch::Receiver<bool>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl TaskContext {
    /// Whether the worker is shutting down (long handlers should stop at a safe
    /// point and return [`TaskError::Interrupted`]).
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when the worker starts shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// A task handler on JSON: what the worker calls.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt; `Ok(Some(v))` is kept as the result when the task has a
    /// result TTL.
    async fn handle(&self, ctx: TaskContext, payload: Value) -> Result<Option<Value>, TaskError>;
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Option<Value>, TaskError>> + Send>>;

/// A [`Handler`] from an async closure.
pub struct FnHandler(Box<dyn Fn(TaskContext, Value) -> BoxFut + Send + Sync>);

impl FnHandler {
    /// Wraps `f`.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(TaskContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, TaskError>> + Send + 'static,
    {
        Self(Box::new(move |c, v| Box::pin(f(c, v))))
    }
}

#[async_trait]
impl Handler for FnHandler {
    async fn handle(&self, ctx: TaskContext, payload: Value) -> Result<Option<Value>, TaskError> {
        (self.0)(ctx, payload).await
    }
}

/// A typed task: serde input and output, an async `execute`, and defaults for how
/// it is enqueued and retried.
///
/// ```
/// use sluice_queue::{Task, TaskContext, TaskError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Email { to: String }
///
/// struct SendEmail;
///
/// #[async_trait::async_trait]
/// impl Task for SendEmail {
///     const NAME: &'static str = "email.send";
///     type Input = Email;
///     type Output = ();
///     async fn execute(&self, _ctx: TaskContext, input: Email) -> Result<(), TaskError> {
///         if input.to.is_empty() { return Err(TaskError::Fatal("no recipient".into())); }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The name tasks are enqueued and dispatched under.
    const NAME: &'static str;
    /// The payload.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The result (kept when [`result_ttl`](Self::result_ttl) is non-zero).
    type Output: Serialize + Send + 'static;

    /// Runs one attempt.
    async fn execute(
        &self,
        ctx: TaskContext,
        input: Self::Input,
    ) -> Result<Self::Output, TaskError>;

    /// Retries and backoff (its `max_attempts` is stamped on enqueued tasks).
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }
    /// An attempt running longer fails (retryable).
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// The queue it is enqueued on.
    fn queue(&self) -> &str {
        crate::task::DEFAULT_QUEUE
    }
    /// Its priority, 0..=9.
    fn priority(&self) -> u8 {
        crate::task::DEFAULT_PRIORITY
    }
    /// How long results are kept (zero: not kept).
    fn result_ttl(&self) -> Duration {
        Duration::ZERO
    }

    /// An enqueue builder for `input` with this task's defaults; chain
    /// `.delay()`, `.priority()`, `.idempotency_key()`, then pass it to
    /// [`Broker::enqueue`].
    ///
    /// # Errors
    ///
    /// [`QueueError::Invalid`] when `input` does not serialize.
    fn build(&self, input: &Self::Input) -> Result<NewTask, QueueError> {
        let payload = serde_json::to_value(input)
            .map_err(|e| QueueError::Invalid(format!("payload of {}: {e}", Self::NAME)))?;
        Ok(NewTask::new(Self::NAME, payload)
            .queue(self.queue())
            .priority(self.priority())
            .max_attempts(self.retry_policy().max_attempts)
            .result_ttl(self.result_ttl()))
    }
}

struct Typed<T>(T);

#[async_trait]
impl<T: Task> Handler for Typed<T> {
    async fn handle(&self, ctx: TaskContext, payload: Value) -> Result<Option<Value>, TaskError> {
        let input: T::Input = serde_json::from_value(payload)
            .map_err(|e| TaskError::Fatal(format!("payload does not fit {}: {e}", T::NAME)))?;
        let out = self.0.execute(ctx, input).await?;
        let v = serde_json::to_value(out).map_err(|e| {
            TaskError::Fatal(format!("result of {} does not serialize: {e}", T::NAME))
        })?;
        Ok((!v.is_null()).then_some(v))
    }
}

/// What the worker knows of one task name.
#[derive(Clone)]
struct Registered {
    handler: Arc<dyn Handler>,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    rate: Option<Arc<dyn Quota>>,
}

/// Configures a [`Worker`].
pub struct WorkerBuilder {
    broker: Arc<dyn Broker>,
    queues: Vec<(String, usize)>,
    handlers: HashMap<String, Registered>,
    visibility: Duration,
    poll: Duration,
    grace: Duration,
    batch: usize,
    stats_every: Duration,
    node: String,
    announce_every: Duration,
}

impl WorkerBuilder {
    /// The node id it announces itself as (default `{hostname}-{pid}`, the owner
    /// name job executions record).
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// How often it announces itself (default 3 s); an announcement lasts three
    /// times as long.
    pub fn announce_every(mut self, d: Duration) -> Self {
        self.announce_every = d.max(Duration::from_millis(50));
        self
    }

    /// Serves `queue` with up to `concurrency` tasks at once.
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.queues.push((queue.into(), concurrency.max(1)));
        self
    }

    /// Handles tasks named `name` with `handler` and the default retry policy.
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(
            name.into(),
            Registered {
                handler: Arc::new(handler),
                retry: RetryPolicy::default(),
                timeout: None,
                rate: None,
            },
        );
        self
    }

    /// Handles tasks named `name` with an async closure.
    pub fn handler_fn<F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, TaskError>> + Send + 'static,
    {
        self.handler(name, FnHandler::new(f))
    }

    /// Handles a typed [`Task`] with its retry policy and timeout.
    pub fn task<T: Task>(mut self, task: T) -> Self {
        let retry = task.retry_policy();
        let timeout = task.timeout();
        self.handlers.insert(
            T::NAME.to_owned(),
            Registered {
                handler: Arc::new(Typed(task)),
                retry,
                timeout,
                rate: None,
            },
        );
        self
    }

    /// Sets the retry policy of task name `name` (registered before).
    pub fn retry(mut self, name: &str, policy: RetryPolicy) -> Self {
        if let Some(r) = self.handlers.get_mut(name) {
            r.retry = policy;
        }
        self
    }

    /// Sets an attempt timeout for task name `name` (registered before).
    pub fn timeout(mut self, name: &str, timeout: Duration) -> Self {
        if let Some(r) = self.handlers.get_mut(name) {
            r.timeout = Some(timeout);
        }
        self
    }

    /// Limits how fast tasks named `name` start: a [`sluice_core::LocalQuota`]
    /// per process, or a [`sluice_core::RedisQuota`] shared by every node.
    pub fn rate_limit(mut self, name: &str, quota: Arc<dyn Quota>) -> Self {
        if let Some(r) = self.handlers.get_mut(name) {
            r.rate = Some(quota);
        }
        self
    }

    /// How long a lease lasts without a heartbeat (default 30 s).
    pub fn visibility(mut self, d: Duration) -> Self {
        self.visibility = d.max(Duration::from_millis(50));
        self
    }

    /// How long an idle fetch loop waits before asking again (default 100 ms).
    pub fn poll(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// How long shutdown waits for in-flight handlers (default 30 s).
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Most tasks leased in one broker call (default 100).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Starts the worker on the current tokio runtime.
    pub fn start(self) -> WorkerHandle {
        let (tx, rx) = watch::channel(false);
        let queues = if self.queues.is_empty() {
            vec![(crate::task::DEFAULT_QUEUE.to_owned(), 10)]
        } else {
            self.queues.clone()
        };
        let shared = Arc::new(Shared {
            broker: self.broker.clone(),
            handlers: self.handlers,
            visibility: self.visibility,
            inflight: Mutex::new(HashMap::new()),
            shutdown: rx,
            pauses: tokio::sync::Mutex::new(Pauses::default()),
        });
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acknowledger(shared.clone(), ack_rx));
        let heart = tokio::spawn(heartbeat(shared.clone()));
        let stats = tokio::spawn(depth_gauges(
            shared.clone(),
            queues.iter().map(|q| q.0.clone()).collect(),
            self.stats_every,
        ));
        let presence = Presence::start(
            self.broker.clone(),
            self.node.clone(),
            queues.iter().map(|q| q.0.clone()).collect(),
            self.announce_every,
        );
        let mut loops = Vec::new();
        let handlers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        for (q, concurrency) in queues {
            loops.push(tokio::spawn(fetch_loop(
                shared.clone(),
                q,
                concurrency,
                self.batch,
                self.poll,
                ack_tx.clone(),
                handlers.clone(),
            )));
        }
        WorkerHandle {
            shutdown: tx,
            shared,
            loops,
            handlers,
            acker,
            heart,
            stats,
            ack_tx,
            grace: self.grace,
            presence,
        }
    }
}

/// Runs handlers of tasks leased from a [`Broker`].
pub struct Worker;

impl Worker {
    /// A worker on `broker`; add queues and handlers, then
    /// [`start`](WorkerBuilder::start).
    pub fn builder(broker: Arc<dyn Broker>) -> WorkerBuilder {
        WorkerBuilder {
            broker,
            queues: Vec::new(),
            handlers: HashMap::new(),
            visibility: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            grace: Duration::from_secs(30),
            batch: 100,
            stats_every: Duration::from_secs(5),
            node: default_node(),
            announce_every: Duration::from_secs(3),
        }
    }
}

struct Shared {
    broker: Arc<dyn Broker>,
    handlers: HashMap<String, Registered>,
    visibility: Duration,
    /// Leases held by this worker: handler running or acknowledgement pending.
    inflight: Mutex<HashMap<TaskId, LeaseRef>>,
    shutdown: watch::Receiver<bool>,
    /// The paused queues as last read; the lock is held while reading them, so
    /// the fetch loops share one read.
    pauses: tokio::sync::Mutex<Pauses>,
}

/// The paused queues as a worker last read them from its broker.
#[derive(Default)]
struct Pauses {
    /// When they were last read (or a read failed); `None` before the first.
    read_at: Option<Instant>,
    /// The paused queue names.
    queues: HashSet<String>,
    /// The last read failed (logged once until one succeeds again).
    failing: bool,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether `queue` is paused, by the paused set read at most
    /// [`PAUSES_EVERY`] ago. A failed read keeps the last known set.
    async fn paused(&self, queue: &str) -> bool {
        let mut p = self.pauses.lock().await;
        if p.read_at.is_none_or(|t| t.elapsed() >= PAUSES_EVERY) {
            match self.broker.paused_queues().await {
                Ok(queues) => {
                    if p.failing {
                        tracing::info!("read the paused queues again");
                    }
                    p.failing = false;
                    p.queues = queues.into_iter().collect();
                }
                Err(e) => {
                    if !p.failing {
                        tracing::warn!(error = %e, paused = ?p.queues, "could not read the paused queues; keeping the last known ones");
                    }
                    p.failing = true;
                }
            }
            p.read_at = Some(Instant::now());
        }
        p.queues.contains(queue)
    }

    fn forget(&self, id: &TaskId) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// A running worker.
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    shared: Arc<Shared>,
    loops: Vec<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acker: JoinHandle<()>,
    heart: JoinHandle<()>,
    stats: JoinHandle<()>,
    ack_tx: mpsc::UnboundedSender<Completion>,
    grace: Duration,
    presence: Presence,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl WorkerHandle {
    /// Leases held right now (handlers running or acknowledgements pending).
    pub fn in_flight(&self) -> usize {
        self.shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The node id it announces itself as.
    pub fn node(&self) -> &str {
        self.presence.node()
    }

    /// Stops leasing, waits up to the grace period for in-flight handlers, gives
    /// the leases of the rest back, flushes acknowledgements, withdraws its
    /// announcement, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            let running: Vec<JoinHandle<()>> = {
                let mut h = self.handlers.lock().unwrap_or_else(|p| p.into_inner());
                h.retain(|j| !j.is_finished());
                std::mem::take(&mut *h)
            };
            if running.is_empty() {
                break;
            }
            let mut rest = Vec::new();
            for j in running {
                if tokio::time::Instant::now() >= deadline {
                    j.abort();
                } else {
                    rest.push(j);
                }
            }
            if rest.is_empty() {
                break;
            }
            self.handlers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(rest);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the acknowledger drain what finished, then give back the rest.
        drop(self.ack_tx);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.acker).await;
        let left: Vec<LeaseRef> = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in &left {
            match self.shared.broker.release(l).await {
                Ok(_) => tracing::info!(task = %l.id, "gave the lease back at shutdown"),
                Err(e) => {
                    tracing::warn!(task = %l.id, error = %e, "could not give the lease back; it runs out by itself")
                }
            }
        }
        self.heart.abort();
        self.stats.abort();
        self.presence.leave().await;
    }
}

/// `{hostname}-{pid}`: the node id workers announce (and job executions record
/// as their owner).
pub fn default_node() -> String {
    let host = sluice_core::host_name().unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

/// A node's announcement loop: [`Broker::announce`] at once and then every
/// `every`, each lasting three times as long; [`leave`](Self::leave) stops it
/// and withdraws the announcement. Workers run one; a process that runs a job
/// itself runs one with no queues, so its executions show as owned by a live
/// node. Failures are logged and tried again at the next beat.
pub struct Presence {
    node: String,
    broker: Arc<dyn Broker>,
    beat: JoinHandle<()>,
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presence")
            .field("node", &self.node)
            .finish()
    }
}

impl Presence {
    /// Starts announcing `node` as serving `queues` on the current tokio runtime.
    pub fn start(
        broker: Arc<dyn Broker>,
        node: String,
        queues: Vec<String>,
        every: Duration,
    ) -> Presence {
        let started_at = sluice_core::Clock::now_millis(&sluice_core::SystemClock);
        let beat = WorkerBeat {
            node: node.clone(),
            queues,
            started_at,
        };
        let b = broker.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            loop {
                match b.announce(&beat, every * 3).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(node = %beat.node, "worker announcement back");
                        }
                        failing = false;
                    }
                    Err(e) if !failing => {
                        tracing::warn!(node = %beat.node, error = %e,
                            "could not announce this worker; trying again");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(every).await;
            }
        });
        Presence {
            node,
            broker,
            beat: task,
        }
    }

    /// The node id it announces.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops announcing and withdraws the announcement (a failure is logged: the
    /// announcement then runs out by itself).
    pub async fn leave(self) {
        self.beat.abort();
        let _ = self.beat.await;
        if let Err(e) = self.broker.withdraw(&self.node).await {
            tracing::warn!(node = %self.node, error = %e,
                "could not withdraw this worker's announcement; it runs out by itself");
        }
    }
}

async fn fetch_loop(
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    batch: usize,
    poll: Duration,
    ack_tx: mpsc::UnboundedSender<Completion>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut stop = shared.shutdown.clone();
    let mut backoff = poll;
    loop {
        if shared.stopping() {
            return;
        }
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        if shared.paused(&queue).await {
            drop(first);
            tokio::select! {
                _ = tokio::time::sleep(poll.max(Duration::from_millis(100))) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        let mut permits = vec![first];
        while permits.len() < batch {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let leases = match shared
            .broker
            .lease(&queue, permits.len(), shared.visibility)
            .await
        {
            Ok(l) => {
                backoff = poll;
                l
            }
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "could not lease tasks; trying again");
                backoff = (backoff * 2).clamp(poll, Duration::from_secs(5));
                Vec::new()
            }
        };
        if leases.is_empty() {
            drop(permits);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        permits.truncate(leases.len());
        {
            let mut inflight = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
            for l in &leases {
                inflight.insert(l.task.id, l.as_ref());
            }
        }
        let mut spawned = Vec::with_capacity(leases.len());
        for (lease, permit) in leases.into_iter().zip(permits) {
            let shared = shared.clone();
            let ack_tx = ack_tx.clone();
            spawned.push(tokio::spawn(async move {
                run_one(&shared, lease, &ack_tx).await;
                drop(permit);
            }));
        }
        let mut h = handlers.lock().unwrap_or_else(|p| p.into_inner());
        h.retain(|j| !j.is_finished());
        h.extend(spawned);
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "cancelled".into();
    }
    let p = e.into_panic();
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".into()
    }
}

async fn run_one(shared: &Arc<Shared>, lease: Lease, ack_tx: &mpsc::UnboundedSender<Completion>) {
    let task = lease.task;
    let lref = LeaseRef {
        queue: task.queue.clone(),
        id: task.id,
        token: lease.token,
    };
    let queue = task.queue.clone();
    let name = task.name.clone();
    let Some(reg) = shared.handlers.get(&task.name).cloned() else {
        let err = format!(
            "no handler for task name '{}' on this worker (known: {})",
            task.name,
            {
                let mut k: Vec<&str> = shared.handlers.keys().map(String::as_str).collect();
                k.sort_unstable();
                k.join(", ")
            }
        );
        finish_failed(shared, &lref, &name, err, None).await;
        return;
    };
    if let Some(q) = &reg.rate {
        loop {
            match q.acquire(Duration::from_secs(1)).await {
                Ok(()) => break,
                Err(sluice_core::QuotaExceeded::PerSecond { .. }) if !shared.stopping() => {}
                Err(e) => {
                    let retry = Some(e.retry_after());
                    finish_failed(shared, &lref, &name, format!("rate limit: {e}"), retry).await;
                    return;
                }
            }
        }
    }
    let ctx = TaskContext {
        id: task.id,
        name: name.clone(),
        queue: queue.clone(),
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        last_error: task.last_error.clone(),
        broker: shared.broker.clone(),
        shutdown: shared.shutdown.clone(),
    };
    metrics::gauge!(m::IN_FLIGHT, "queue" => queue.clone()).increment(1.0);
    let started = Instant::now();
    let handler = reg.handler.clone();
    let payload = task.payload;
    let mut join = tokio::spawn(async move { handler.handle(ctx, payload).await });
    let outcome = match reg.timeout {
        // The handler's own error is kept as it is (a Fatal stays fatal, a Wait
        // waits); a panic or the timeout is a retryable failure.
        Some(t) => match tokio::time::timeout(t, &mut join).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(TaskError::Retryable(panic_message(e))),
            Err(_) => {
                join.abort();
                Err(TaskError::Retryable(format!("timed out after {t:?}")))
            }
        },
        None => match join.await {
            Ok(r) => r,
            Err(e) => Err(TaskError::Retryable(panic_message(e))),
        },
    };
    metrics::gauge!(m::IN_FLIGHT, "queue" => queue.clone()).decrement(1.0);
    metrics::histogram!(m::DURATION, "queue" => queue.clone(), "task" => name.clone())
        .record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(result) => {
            if ack_tx
                .send(Completion {
                    lease: lref.clone(),
                    result,
                })
                .is_err()
            {
                // The acknowledger is gone (shutdown): the lease is given back.
                tracing::debug!(task = %lref.id, "finished after the acknowledger stopped");
            }
        }
        Err(TaskError::Interrupted(msg)) => {
            tracing::info!(task = %lref.id, name = %name, "interrupted: {msg}; giving the lease back");
            if let Err(e) = shared.broker.release(&lref).await {
                tracing::warn!(task = %lref.id, error = %e, "could not give the lease back");
            }
            shared.forget(&lref.id);
        }
        Err(TaskError::Wait { delay, reason }) => {
            release_delayed(shared, &lref, &name, delay, &reason).await;
        }
        Err(TaskError::Fatal(msg)) => finish_failed(shared, &lref, &name, msg, None).await,
        Err(TaskError::Retryable(msg)) => {
            let retry = (task.attempt < task.max_attempts).then(|| reg.retry.backoff(task.attempt));
            finish_failed(shared, &lref, &name, msg, retry).await;
        }
    }
}

/// Gives `lref` back, ready again after `delay`, without counting the attempt
/// (a handler's [`TaskError::Wait`]).
async fn release_delayed(
    shared: &Arc<Shared>,
    lref: &LeaseRef,
    name: &str,
    delay: Duration,
    reason: &str,
) {
    let held = until_answered(shared, lref, "give the lease back for later", || {
        shared.broker.release_delayed(lref, delay, reason)
    })
    .await;
    match held {
        Some(true) => {
            tracing::info!(task = %lref.id, name, delay = ?delay, reason, "not now; leased again after the delay, the attempt not counted");
        }
        Some(false) => {
            metrics::counter!(m::LEASES_LOST, "queue" => lref.queue.clone()).increment(1);
        }
        None => {}
    }
    shared.forget(&lref.id);
}

async fn finish_failed(
    shared: &Arc<Shared>,
    lref: &LeaseRef,
    name: &str,
    error: String,
    retry: Option<Duration>,
) {
    let outcome = until_answered(shared, lref, "record a failed attempt", || {
        shared.broker.fail(lref, &error, retry)
    })
    .await;
    if let Some(outcome) = outcome {
        let what = match outcome {
            FailOutcome::Retry(_) => {
                metrics::counter!(m::RETRIED, "queue" => lref.queue.clone(), "task" => name.to_owned())
                    .increment(1);
                tracing::info!(task = %lref.id, name, error = %error, "attempt failed; retrying later");
                "retry"
            }
            FailOutcome::Dead => {
                tracing::warn!(task = %lref.id, name, error = %error, "task failed its last attempt; moved to the dead-letter queue");
                "dead"
            }
            FailOutcome::LeaseLost => {
                metrics::counter!(m::LEASES_LOST, "queue" => lref.queue.clone()).increment(1);
                "lease_lost"
            }
        };
        metrics::counter!(m::FAILED, "queue" => lref.queue.clone(), "task" => name.to_owned(), "outcome" => what)
            .increment(1);
    }
    shared.forget(&lref.id);
}

/// Calls the broker with `call` about `lref` until it answers, waiting 100 ms
/// (doubling up to 5 s) between tries; once the worker stops, a failed call is
/// given up (`None`) and the lease runs out by itself. `what` says in the logs
/// what could not be done.
async fn until_answered<T, F, Fut>(
    shared: &Shared,
    lref: &LeaseRef,
    what: &str,
    mut call: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(answer) => return Some(answer),
            Err(e) if !shared.stopping() => {
                tracing::warn!(task = %lref.id, error = %e, "could not {what}; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(task = %lref.id, error = %e, "could not {what}; the lease runs out by itself");
                return None;
            }
        }
    }
}

async fn acknowledger(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    let mut batch: Vec<Completion> = Vec::new();
    let mut wait = Duration::from_millis(50);
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(c) => batch.push(c),
                None => return,
            }
        }
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        match shared.broker.complete(&batch).await {
            Ok(n) => {
                wait = Duration::from_millis(50);
                if n < batch.len() {
                    let lost = batch.len() - n;
                    tracing::warn!(
                        lost,
                        "acknowledgements refused: those leases ran out and the tasks were handed out again"
                    );
                }
                for c in batch.drain(..) {
                    metrics::counter!(m::COMPLETED, "queue" => c.lease.queue.clone()).increment(1);
                    shared.forget(&c.lease.id);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = batch.len(), "could not acknowledge; trying again");
                if rx.is_closed() && shared.stopping() && wait >= Duration::from_secs(5) {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    let every = shared.visibility / 3;
    loop {
        tokio::time::sleep(every).await;
        let held: Vec<LeaseRef> = shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        if held.is_empty() {
            continue;
        }
        match shared.broker.extend(&held, shared.visibility).await {
            Ok(flags) => {
                for (l, ok) in held.iter().zip(flags) {
                    if !ok {
                        metrics::counter!(m::LEASES_LOST, "queue" => l.queue.clone()).increment(1);
                        tracing::warn!(task = %l.id, "lease lost: it ran out before a heartbeat; the task may run twice");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, held = held.len(), "heartbeat failed; leases run out unless the broker answers in time")
            }
        }
    }
}

async fn depth_gauges(shared: Arc<Shared>, queues: Vec<String>, every: Duration) {
    loop {
        for q in &queues {
            if let Ok(s) = shared.broker.stats(q).await {
                m::record_depth(q, &s);
            }
        }
        tokio::time::sleep(every).await;
    }
}
