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
//! - STOPPED because a reader suspended it (an upstream's daily quota, less its
//!   reserve, spent): [`TaskError::Wait`] until the reader's resume time (the
//!   quota's reset) plus a minute, the attempt not counted; the task then runs
//!   again and resumes the execution from its checkpoint;
//! - STOPPED because the worker shuts down: the lease is given back and another
//!   worker resumes the execution; STOPPED on `sluice job stop`: completes;
//! - the execution is still held by another process's repository lease (a dead
//!   one's runs out by itself): [`TaskError::Wait`] until that lease ends, the
//!   attempt not counted, so a killed run is resumed, never dead-lettered for
//!   having died;
//! - the repository is unreachable: a retryable error, tried again with backoff.
//!
//! A worker killed mid-run leaves its task leased; when the task lease runs out
//! (after the queue's visibility, often much sooner than the repository lease)
//! another worker takes it, waits for the repository lease to end, and resumes
//! the execution.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_batch::model::{BatchStatus, NonIdentifying, Params};
use sluice_batch::repository::RepoError;
use sluice_batch::step::NoProgress;
use sluice_batch::{JobRunner, RunOptions};
use sluice_core::SystemClock;
use sluice_queue::{NewTask, RetryPolicy, Task, TaskContext, TaskError};

use super::Runtime;
use super::params::RunParams;
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
    /// Those of `params` that do not identify the instance.
    #[serde(default, skip_serializing_if = "NonIdentifying::is_empty")]
    pub non_identifying: NonIdentifying,
    /// Run a COMPLETED instance again.
    #[serde(default)]
    pub rerun: bool,
}

impl JobRunInput {
    /// A run of `job` with `run`'s parameters.
    pub fn new(job: impl Into<String>, run: RunParams, rerun: bool) -> Self {
        Self {
            job: job.into(),
            params: run.params,
            non_identifying: run.non_identifying,
            rerun,
        }
    }
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
        run_job_task(
            &ctx,
            &self.rt,
            job,
            &input.params,
            &input.non_identifying,
            input.rerun,
        )
        .await
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
/// a repository lease held elsewhere → [`TaskError::Wait`] until its end; an
/// unreachable repository → [`TaskError::Retryable`].
pub async fn run_job_task(
    ctx: &TaskContext,
    rt: &Runtime,
    job: sluice_batch::Job,
    params: &Params,
    non_identifying: &NonIdentifying,
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
        non_identifying: non_identifying.clone(),
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
                BatchStatus::Stopped if r.suspended => {
                    // The clock the quotas count days by.
                    let now = sluice_cache::CacheTarget::now_millis(&rt.settings().gateway);
                    Err(TaskError::Wait {
                        delay: resume_delay(r.resume_at_ms, now),
                        reason: format!(
                            "execution {} {}; resuming from its checkpoint then",
                            r.execution.id, out.message
                        ),
                    })
                }
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
        Err(e @ RepoError::AlreadyRunning { lease_until, .. }) => Err(TaskError::Wait {
            delay: wait_for_lease(lease_until, sluice_core::Clock::now_millis(&SystemClock)),
            reason: format!("{e}; waiting for that lease to end"),
        }),
        Err(e) => Err(TaskError::Retryable(e.to_string())),
    }
}

/// The job metrics of a finished run (`docs/specs/metrics.md`): its status,
/// the item counts of this execution's steps, its duration, its completion time.
fn record_finished(r: &sluice_batch::RunReport, ms: i64) {
    use sluice_core::metrics::names::{JOB_DURATION, JOB_ITEMS, JOB_LAST_SUCCESS, JOB_RUNS};
    let e = &r.execution;
    let job = e.job_name.clone();
    metrics::counter!(JOB_RUNS, "job_name" => job.clone(), "status" => e.status.to_string())
        .increment(1);
    metrics::histogram!(JOB_DURATION, "job_name" => job.clone()).record(ms as f64 / 1000.0);
    if e.status == BatchStatus::Completed
        && let Some(end) = e.ended_at
    {
        metrics::gauge!(JOB_LAST_SUCCESS, "job_name" => job.clone()).set(end as f64 / 1000.0);
    }
    for s in r.steps.iter().filter(|s| s.execution_id == e.id) {
        for (kind, n) in [
            ("read", s.counts.read),
            ("written", s.counts.written),
            ("skipped", s.counts.skipped),
        ] {
            metrics::gauge!(JOB_ITEMS, "job_name" => job.clone(), "step" => s.step_name.clone(), "kind" => kind)
                .set(n as f64);
        }
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
    record_finished(r, ms);
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

/// How long to wait, at `now` (Unix ms), for a repository lease ending at
/// `lease_until` to run out: until its end plus [`LEASE_MARGIN`] (a holder that
/// is alive extends it meanwhile, and the task waits again).
/// How long a suspended run waits: until `resume_at_ms` plus a minute (clocks
/// differ; the upstream's day may turn a little late), or an hour when the
/// reader did not know.
fn resume_delay(resume_at_ms: Option<i64>, now: i64) -> Duration {
    match resume_at_ms {
        Some(at) => Duration::from_millis((at - now).max(0) as u64 + 60_000),
        None => Duration::from_secs(3600),
    }
}

fn wait_for_lease(lease_until: i64, now: i64) -> Duration {
    let left = u64::try_from(lease_until.saturating_sub(now)).unwrap_or(0);
    Duration::from_millis(left) + LEASE_MARGIN
}

/// Waited beyond a repository lease's end, so that the next attempt finds it
/// expired despite small clock differences between nodes.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspended_run_waits_for_the_reset_plus_a_minute() {
        assert_eq!(
            resume_delay(Some(10_000_000), 4_000_000),
            Duration::from_millis(6_060_000)
        );
        // A reset already past: a minute.
        assert_eq!(resume_delay(Some(1_000), 5_000), Duration::from_secs(60));
        assert_eq!(resume_delay(None, 5_000), Duration::from_secs(3600));
    }

    #[test]
    fn waits_until_the_lease_ends_plus_a_margin() {
        assert_eq!(
            wait_for_lease(10_000, 7_000),
            Duration::from_millis(3_000) + LEASE_MARGIN
        );
        assert_eq!(wait_for_lease(5_000, 7_000), LEASE_MARGIN);
    }
}
