//! Jobs and the runner that executes them against a repository.
//!
//! ```text
//! run(job, params)
//!   repository.start_execution ── live lease elsewhere ─▶ AlreadyRunning
//!     │                        └─ COMPLETED, no --rerun ─▶ AlreadyCompleted
//!     ├─ heartbeat task: extends the lease every lease/3; learns of stop requests
//!     └─ for each step, in order:
//!          restarting and the step COMPLETED before ─▶ skipped
//!          stop requested (read before every step and every chunk) ─▶ STOPPED
//!          else start_step (resuming counts + checkpoint) ─▶ chunk loop / tasklet
//!   finish_execution(COMPLETED | FAILED | STOPPED, exit message)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::{Clock, SystemClock};
use thiserror::Error;

use crate::model::{BatchStatus, JobExecution, NonIdentifying, Params, StepCounts, StepExecution};
use crate::partition::PartitionError;
use crate::repository::{Heartbeat, RepoError, Repository};
use crate::step::{ChunkStep, Progress, StepContext, StepEnd};

/// A step that does one thing (an SQL statement, a shell command, an HTTP call).
#[async_trait]
pub trait Tasklet: Send {
    /// Does the work; returns an exit message for the repository (output summary).
    ///
    /// # Errors
    ///
    /// What went wrong; the step fails with its message.
    async fn execute(&mut self) -> Result<String, TaskletError>;

    /// What the last [`execute`](Self::execute) did, as step counts (a cleanup's
    /// rows removed as `written`, say); `None` (the default) records one commit
    /// and nothing else. Asked after `execute` returns, whether it succeeded or
    /// failed, so that work committed before a failure is still counted.
    fn counts(&self) -> Option<StepCounts> {
        None
    }
}

/// Why a tasklet failed; its message becomes the step's exit message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TaskletError {
    /// The database could not be opened.
    #[error("connecting to the database: {0}")]
    Connect(#[source] sluice_sql::SqlError),
    /// The statement failed.
    #[error("SQL failed: {0}")]
    Sql(#[source] sqlx::Error),
    /// A batch of a repeated statement failed; the batches before it stay
    /// committed.
    #[error("SQL failed in batch {batch} after {rows} rows affected in {done} batches: {source}")]
    SqlBatch {
        /// The failed batch, 1-based.
        batch: u64,
        /// Rows affected by the batches committed before it.
        rows: u64,
        /// How many batches were committed before it.
        done: u64,
        /// The database's error.
        source: sqlx::Error,
    },
    /// A repeated statement reached its batch limit and still affected rows.
    #[error(
        "stopped after {batches} batches ({rows} rows affected): the statement still affects rows"
    )]
    TooManyBatches {
        /// The batches run.
        batches: u64,
        /// The rows they affected.
        rows: u64,
    },
    /// The command could not be started.
    #[error("could not start sh -c {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for the command failed.
    #[error("waiting for the command: {0}")]
    Wait(#[source] std::io::Error),
    /// The command ran out of time; its process group was killed.
    #[error("timed out after {timeout:?}; the process group was killed{output}")]
    TimedOut {
        /// The time it had.
        timeout: Duration,
        /// The tails of its stdout and stderr, each under a heading (or empty).
        output: String,
    },
    /// The command ended unsuccessfully.
    #[error("{status} after {seconds:.1}s{output}")]
    Exited {
        /// How it ended: `exit code 3`, `killed by signal 9`, …
        status: String,
        /// How long it ran.
        seconds: f64,
        /// The tails of its stderr and stdout, each under a heading (or empty).
        output: String,
    },
    /// The upstream call failed (after its retries).
    #[error(transparent)]
    Upstream(#[from] sluice_upstream::UpstreamError),
    /// The upstream answered with a status outside 2xx.
    #[error("upstream {upstream} answered HTTP {status}, {bytes} bytes")]
    Status {
        /// The upstream's name.
        upstream: String,
        /// The HTTP status.
        status: u16,
        /// The body's length.
        bytes: usize,
    },
    /// A partitioned step's partitions failed or could not be handed out.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// Anything else (a tasklet outside this crate), as a message.
    #[error("{0}")]
    Failed(String),
}

/// One step of a job.
pub enum Step {
    /// Read → process → write in chunks.
    Chunk(ChunkStep),
    /// One piece of work.
    Tasklet {
        /// The step's name.
        name: String,
        /// The work.
        tasklet: Box<dyn Tasklet>,
    },
}

impl Step {
    /// The step's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Chunk(c) => &c.name,
            Self::Tasklet { name, .. } => name,
        }
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Chunk(c) => c.fmt(f),
            Self::Tasklet { name, .. } => f.debug_struct("Tasklet").field("name", name).finish(),
        }
    }
}

/// A named, ordered list of steps.
#[derive(Debug)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// Its steps, run in order.
    pub steps: Vec<Step>,
}

impl Job {
    /// A job with no steps yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Adds a step.
    #[must_use]
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }
}

/// How one run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The execution, as finally recorded.
    pub execution: JobExecution,
    /// Its steps (including ones completed by an earlier execution and skipped now).
    pub steps: Vec<StepExecution>,
    /// Whether it resumed a previous execution.
    pub resumed_from: Option<i64>,
    /// Whether a reader suspended it (STOPPED until later, e.g. a daily quota
    /// spent); the run resumes from its checkpoint when started again.
    pub suspended: bool,
    /// When a suspended run can go on, Unix milliseconds, if the reader knew.
    pub resume_at_ms: Option<i64>,
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run a COMPLETED instance again from scratch.
    pub rerun: bool,
    /// Set it to stop the run at the next chunk boundary (STOPPED, restartable),
    /// e.g. from a SIGINT/SIGTERM handler.
    pub stop: Option<Arc<AtomicBool>>,
    /// The parameters that do not identify the instance (recorded with the
    /// execution, left out of the instance key).
    pub non_identifying: NonIdentifying,
}

/// Runs jobs against a repository.
pub struct JobRunner {
    repo: Arc<dyn Repository>,
    owner: String,
    lease: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .finish()
    }
}

/// `{hostname}-{pid}`: who runs an execution.
pub fn default_owner() -> String {
    let host = sluice_core::host_name().unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

impl JobRunner {
    /// A runner on `repo`, owning executions as `{hostname}-{pid}` with a 30 s
    /// lease, on the system clock.
    pub fn new(repo: Arc<dyn Repository>) -> Self {
        Self {
            repo,
            owner: default_owner(),
            lease: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }

    /// Where the step end times come from (the repository keeps its own clock for
    /// the times it records: give both the same one).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The lease length: how long after this process dies its execution counts as
    /// dead. Heartbeats go out every third of it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// The owner name recorded on executions.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Runs `job` with `params`: a new instance, or the restart of a failed, stopped
    /// or dead one.
    ///
    /// # Errors
    ///
    /// [`RepoError::AlreadyRunning`] / [`RepoError::AlreadyCompleted`] before
    /// anything runs, or a repository failure. A job that fails returns `Ok` with a
    /// FAILED execution.
    pub async fn run(
        &self,
        mut job: Job,
        params: &Params,
        opts: RunOptions,
        progress: &dyn Progress,
    ) -> Result<RunReport, RepoError> {
        let launch = self
            .repo
            .start_execution_with(
                &job.name,
                params,
                &opts.non_identifying,
                &self.owner,
                self.lease,
                opts.rerun,
            )
            .await?;
        let exec_id = launch.execution.id;
        let resumed_from = launch.previous.as_ref().map(|p| p.id);
        if let Some(prev) = &launch.previous {
            tracing::info!(job = %job.name, execution = exec_id, previous = prev.id,
                previous_status = %prev.status, "restarting from the last committed chunk");
        }
        let stop = opts
            .stop
            .clone()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (repo, owner, lease) = (self.repo.clone(), self.owner.clone(), self.lease);
            let (stop, lost) = (stop.clone(), lost.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match repo.heartbeat(exec_id, &owner, lease).await {
                        Ok(Heartbeat::Alive) => {}
                        Ok(Heartbeat::StopRequested) => stop.store(true, Ordering::Relaxed),
                        Err(RepoError::LeaseLost(_)) => {
                            lost.store(true, Ordering::Relaxed);
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(execution = exec_id, error = %e, "heartbeat failed")
                        }
                    }
                }
            })
        };
        let ctx = StepContext {
            repo: &*self.repo,
            job: &job.name,
            instance_id: launch.instance.id,
            resumed: launch.previous.is_some(),
            owner: &self.owner,
            stop: &stop,
            progress,
            clock: &*self.clock,
        };
        let mut steps = Vec::new();
        let mut outcome: Result<(), StepEnd> = Ok(());
        for step in &mut job.steps {
            let name = step.name().to_owned();
            let last = if launch.previous.is_some() {
                self.repo
                    .last_step_execution(launch.instance.id, &name)
                    .await?
            } else {
                None
            };
            if let Some(done) = last.as_ref().filter(|s| s.status == BatchStatus::Completed) {
                tracing::info!(step = %name, "completed by an earlier execution; skipped");
                steps.push(done.clone());
                continue;
            }
            if ctx.should_stop(exec_id).await {
                // Between steps: the next one starts on restart.
                outcome = Err(StepEnd::Stopped);
                break;
            }
            let (counts, checkpoint) = last
                .map(|s| (s.counts, s.checkpoint))
                .unwrap_or((StepCounts::default(), serde_json::Value::Null));
            let mut exec = self
                .repo
                .start_step(exec_id, &name, counts, &checkpoint)
                .await?;
            let result = match step {
                Step::Chunk(c) => c.run(&mut exec, &ctx).await,
                Step::Tasklet { tasklet, .. } => {
                    let done = tasklet.execute().await;
                    match tasklet.counts() {
                        Some(c) => exec.counts = c,
                        None if done.is_ok() => exec.counts.commits = 1,
                        None => {}
                    }
                    match done {
                        Ok(msg) => {
                            exec.status = BatchStatus::Completed;
                            exec.exit_message = msg;
                            Ok(())
                        }
                        Err(e) => Err(StepEnd::Failed(format!("step {name}: {e}"))),
                    }
                }
            };
            exec.ended_at = Some(self.clock.now_millis());
            match &result {
                Ok(()) => exec.status = BatchStatus::Completed,
                Err(StepEnd::Stopped) => {
                    exec.status = BatchStatus::Stopped;
                    exec.exit_message = "stopped on request".into();
                }
                Err(StepEnd::Suspended { reason, .. }) => {
                    exec.status = BatchStatus::Stopped;
                    exec.exit_message = format!("suspended: {reason}");
                }
                Err(StepEnd::Failed(m)) => {
                    exec.status = BatchStatus::Failed;
                    exec.exit_message = m.clone();
                }
                Err(StepEnd::LeaseLost(e)) => {
                    exec.status = BatchStatus::Failed;
                    exec.exit_message = e.to_string();
                }
            }
            if !matches!(result, Err(StepEnd::LeaseLost(_))) {
                self.repo.finish_step(&exec).await?;
            }
            progress.step_finished(&exec);
            steps.push(exec);
            if result.is_err() {
                outcome = result;
                break;
            }
        }
        heartbeat.abort();
        let (status, message) = match &outcome {
            Ok(()) => (BatchStatus::Completed, String::new()),
            Err(StepEnd::Stopped) => (BatchStatus::Stopped, "stopped on request".into()),
            Err(StepEnd::Suspended { reason, .. }) => {
                (BatchStatus::Stopped, format!("suspended: {reason}"))
            }
            Err(StepEnd::Failed(m)) => (BatchStatus::Failed, m.clone()),
            Err(StepEnd::LeaseLost(e)) => {
                // Another process owns the instance now; record nothing more.
                let _ = lost;
                return Err(RepoError::Db(e.to_string()));
            }
        };
        self.repo
            .finish_execution(exec_id, status, &message)
            .await?;
        let (execution, _) = self.repo.execution(exec_id).await?;
        let resume_at_ms = match &outcome {
            Err(StepEnd::Suspended { resume_at_ms, .. }) => *resume_at_ms,
            _ => None,
        };
        Ok(RunReport {
            execution,
            steps,
            resumed_from,
            suspended: matches!(outcome, Err(StepEnd::Suspended { .. })),
            resume_at_ms,
        })
    }
}
