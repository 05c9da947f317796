//! Job runs as tasks: the `job.run` task, its handler, and the worker `serve` runs.
//!
//! `sluice job run NAME` enqueues a `job.run` task on the `jobs` queue; a worker
//! (in `sluice serve`, on any node) leases it and runs the job with the
//! [`JobRunner`]. What the outcomes mean to the queue:
//!
//! - COMPLETED (or an instance completed before): the task completes, its result
//!   names the execution;
//! - FAILED: the task is dead-lettered with the execution's exit message, so
//!   `sluice queue dlq retry` restarts it from its last committed chunk;
//! - STOPPED because the worker shuts down: the lease is given back and another
//!   worker resumes the execution; STOPPED on `sluice job stop`: completes;
//! - the execution is still held by a dead process's lease, or the repository is
//!   unreachable: a retryable error, tried again with backoff.
//!
//! A worker killed mid-run leaves its task leased; when the lease runs out another
//! worker takes it and resumes the execution once its repository lease is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_batch::model::{BatchStatus, Params};
use sluice_batch::repository::RepoError;
use sluice_batch::step::NoProgress;
use sluice_batch::{JobRunner, RunOptions};
use sluice_queue::{NewTask, RetryPolicy, Task, TaskContext, TaskError};

use super::Runtime;
use crate::config::JOBS_QUEUE;

/// The task name of job runs.
pub const JOB_RUN: &str = "job.run";

/// How long a job run's result is kept for `sluice task status` and followers.
pub const JOB_RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The `job.run` task for `input` on the `jobs` queue: 5 attempts, result kept
/// for [`JOB_RESULT_TTL`].
pub fn job_run_task(input: &JobRunInput) -> NewTask {
    NewTask::new(
        JOB_RUN,
        serde_json::to_value(input).unwrap_or(serde_json::Value::Null),
    )
    .queue(JOBS_QUEUE)
    .max_attempts(5)
    .result_ttl(JOB_RESULT_TTL)
}

/// The payload of a `job.run` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRunInput {
    /// The job's name.
    pub job: String,
    /// Its parameters (the job's defaults already merged in).
    #[serde(default)]
    pub params: Params,
    /// Run a COMPLETED instance again.
    #[serde(default)]
    pub rerun: bool,
}

/// The result of a `job.run` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRunOutput {
    /// The execution that ran (or the completed one, when it was not run again).
    pub execution: i64,
    /// `COMPLETED`, `STOPPED`, or `ALREADY_COMPLETED`.
    pub status: String,
    /// The execution it resumed, if any.
    pub resumed_from: Option<i64>,
    /// The exit message.
    pub message: String,
}

/// The `job.run` handler: builds the job from the config and runs it.
pub struct JobRunTask {
    rt: Arc<Runtime>,
}

impl JobRunTask {
    /// A handler for the jobs of `rt`, recording into its repository.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }
}

#[async_trait::async_trait]
impl Task for JobRunTask {
    const NAME: &'static str = JOB_RUN;
    type Input = JobRunInput;
    type Output = JobRunOutput;

    async fn execute(
        &self,
        ctx: TaskContext,
        input: JobRunInput,
    ) -> Result<JobRunOutput, TaskError> {
        let job = self
            .rt
            .job(&input.job, &input.params)
            .map_err(TaskError::Fatal)?;
        run_job_task(&ctx, &self.rt, job, &input.params, input.rerun).await
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(5),
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: true,
        }
    }

    fn queue(&self) -> &str {
        JOBS_QUEUE
    }

    fn result_ttl(&self) -> Duration {
        JOB_RESULT_TTL
    }
}

/// Runs `job` for a task: maps the run's outcome to the task's (see the module
/// doc).
///
/// # Errors
///
/// FAILED → [`TaskError::Fatal`]; stopped for shutdown → [`TaskError::Interrupted`];
/// a live lease or an unreachable repository → [`TaskError::Retryable`].
pub async fn run_job_task(
    ctx: &TaskContext,
    rt: &Runtime,
    job: sluice_batch::Job,
    params: &Params,
    rerun: bool,
) -> Result<JobRunOutput, TaskError> {
    let name = job.name.clone();
    let repo = rt.repository().await.map_err(TaskError::Retryable)?;
    let runner = JobRunner::new(repo).lease(rt.settings().jobs.lease);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, ctx) = (stop.clone(), ctx.clone());
        tokio::spawn(async move {
            ctx.shutting_down().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let opts = RunOptions {
        rerun,
        stop: Some(stop),
    };
    tracing::info!(job = %name, task = %ctx.id, attempt = ctx.attempt, "running job");
    let result = runner.run(job, params, opts, &NoProgress).await;
    watcher.abort();
    match result {
        Ok(r) => {
            log_finished(&r);
            let out = JobRunOutput {
                execution: r.execution.id,
                status: r.execution.status.to_string(),
                resumed_from: r.resumed_from,
                message: r.execution.exit_message.clone(),
            };
            match r.execution.status {
                BatchStatus::Completed => Ok(out),
                BatchStatus::Stopped if ctx.is_shutting_down() => Err(TaskError::Interrupted(
                    format!("execution {} stopped for shutdown", r.execution.id),
                )),
                BatchStatus::Stopped => Ok(out),
                other => Err(TaskError::Fatal(format!(
                    "job {name} execution {} {other}: {}",
                    r.execution.id, out.message
                ))),
            }
        }
        Err(RepoError::AlreadyCompleted { execution_id, .. }) => Ok(JobRunOutput {
            execution: execution_id,
            status: "ALREADY_COMPLETED".into(),
            resumed_from: None,
            message: "this instance completed before; run with --rerun to run it again".into(),
        }),
        Err(e) => Err(TaskError::Retryable(e.to_string())),
    }
}

/// The one log line of a finished run (here and in a local `sluice job run`):
/// job, execution, status, the read, written and skipped counts of its steps
/// (including steps an earlier execution completed) and how long it ran.
pub fn log_finished(r: &sluice_batch::RunReport) {
    let e = &r.execution;
    let sum = |f: fn(&sluice_batch::model::StepCounts) -> u64| -> u64 {
        r.steps.iter().map(|s| f(&s.counts)).sum()
    };
    let ms = match (e.started_at, e.ended_at) {
        (Some(a), Some(b)) => b.saturating_sub(a).max(0),
        _ => 0,
    };
    tracing::info!(
        job = %e.job_name,
        execution = e.id,
        status = %e.status,
        read = sum(|c| c.read),
        written = sum(|c| c.written),
        skipped = sum(|c| c.skipped),
        duration = %format!("{:.3}s", ms as f64 / 1000.0),
        "job finished"
    );
}
