//! Partitioned chunk steps: `partitions = N` fans a step out as N tasks.
//!
//! In the parent job, a partitioned step becomes a
//! [`sluice_batch::partition::PartitionedStep`] whose handler is
//! [`QueuePartitions`]: it enqueues one `job.partition` task per partition on the `partitions` queue and waits until
//! every partition completed (the step completes) or one failed (the step fails
//! with that partition's message). Each partition runs as a child job instance of
//! its own, named `JOB:STEP`, with the parent's parameters plus `partition = "i/N"`
//! and `generation` (below), and with the step's reader narrowed to its share: a
//! byte range of a CSV or JSON Lines file cut at line starts, or a range of an
//! integer key of an SQL table. Being job instances, partitions get everything a
//! job has: checkpoints per chunk, leases, restart from the last committed chunk.
//!
//! **Restart re-runs only unfinished partitions.** The `generation` parameter is the
//! id of the parent execution that started the current run from scratch: a resumed
//! parent (after a failure or a crash) keeps it, so completed partitions are
//! already-completed instances and are not run again, and failed ones resume from
//! their checkpoints; a `--rerun` starts a new generation and runs every partition.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_batch::model::{BatchStatus, Params};
use sluice_batch::partition::{PartitionError, PartitionHandler, PartitionRequest};
use sluice_batch::repository::Repository;
use sluice_queue::{Broker, NewTask, RetryPolicy, Task, TaskContext, TaskError};

use super::Runtime;
use crate::config::PARTITIONS_QUEUE;

/// The task name of partitions.
pub const JOB_PARTITION: &str = "job.partition";
/// Parameter naming a partition, `"i/N"` (0-based `i`).
pub const PARTITION_PARAM: &str = "partition";
/// Parameter naming the parent run's generation.
pub const GENERATION_PARAM: &str = "generation";

/// The payload of a `job.partition` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInput {
    /// The parent job.
    pub job: String,
    /// The partitioned step.
    pub step: String,
    /// The parent's parameters.
    pub params: Params,
    /// This partition, 0-based.
    pub index: usize,
    /// Partitions in all.
    pub of: usize,
    /// The parent run's generation.
    pub generation: i64,
}

impl PartitionInput {
    /// The child job's name.
    pub fn child_job(&self) -> String {
        super::build::child_job(&self.job, &self.step)
    }

    /// The child instance's parameters.
    pub fn child_params(&self) -> Params {
        let mut p = self.params.clone();
        p.insert(
            PARTITION_PARAM.into(),
            format!("{}/{}", self.index, self.of),
        );
        p.insert(GENERATION_PARAM.into(), self.generation.to_string());
        p
    }
}

/// Parses `"i/N"`.
pub fn parse_partition(s: &str) -> Option<(usize, usize)> {
    let (i, n) = s.split_once('/')?;
    let (i, n) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (n > 0 && i < n).then_some((i, n))
}

/// The queue-backed partition handler: each partition is a `job.partition` task
/// on the `partitions` queue, run by any worker as a child job instance.
pub struct QueuePartitions {
    rt: Arc<Runtime>,
}

impl QueuePartitions {
    /// A handler enqueueing on the broker of `rt`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }
}

/// The first execution of the current run of the parent instance: the newest
/// execution with these parameters, followed back through unfinished ones.
async fn generation(repo: &dyn Repository, job: &str, params: &Params) -> Result<i64, String> {
    let list = repo
        .executions(Some(job), 1000)
        .await
        .map_err(|e| e.to_string())?;
    let mut mine = list.into_iter().filter(|e| &e.params == params);
    let current = mine
        .next()
        .ok_or_else(|| format!("no execution of job {job} with these parameters is recorded"))?;
    let mut g = current.id;
    for e in mine {
        if e.status == BatchStatus::Completed {
            break;
        }
        g = e.id;
    }
    Ok(g)
}

#[async_trait]
impl PartitionHandler for QueuePartitions {
    async fn run_partitions(&self, req: &PartitionRequest) -> Result<String, PartitionError> {
        let broker = self.rt.broker().await.map_err(PartitionError::Dispatch)?;
        let repo = self
            .rt
            .repository()
            .await
            .map_err(PartitionError::Dispatch)?;
        let generation = generation(repo.as_ref(), &req.job, &req.params)
            .await
            .map_err(PartitionError::Dispatch)?;
        let inputs: Vec<PartitionInput> = (0..req.of)
            .map(|index| PartitionInput {
                job: req.job.clone(),
                step: req.step.clone(),
                params: req.params.clone(),
                index,
                of: req.of,
                generation,
            })
            .collect();
        // Failures recorded before this point belong to an earlier run.
        let since = sluice_core::Clock::now_millis(&sluice_core::SystemClock);
        let mut tasks = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let payload =
                serde_json::to_value(input).map_err(|e| PartitionError::Dispatch(e.to_string()))?;
            tasks.push(
                NewTask::new(JOB_PARTITION, payload)
                    .queue(PARTITIONS_QUEUE)
                    .max_attempts(PartitionTask::RETRY.max_attempts),
            );
        }
        broker.enqueue_many(tasks).await.map_err(|e| {
            PartitionError::Dispatch(format!("could not enqueue the partitions: {e}"))
        })?;
        tracing::info!(job = %req.job, step = %req.step, partitions = req.of, generation, "partitions enqueued");
        wait_for(repo.as_ref(), broker.as_ref(), &inputs, since).await
    }
}

/// Waits until every partition's child instance completed, or one failed.
async fn wait_for(
    repo: &dyn Repository,
    broker: &dyn Broker,
    inputs: &[PartitionInput],
    since: i64,
) -> Result<String, PartitionError> {
    let child = inputs[0].child_job();
    let wanted: Vec<Params> = inputs.iter().map(PartitionInput::child_params).collect();
    loop {
        let list = repo
            .executions(Some(&child), 10_000)
            .await
            .map_err(|e| PartitionError::Dispatch(e.to_string()))?;
        let mut done: Vec<i64> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for (i, p) in wanted.iter().enumerate() {
            // Newest first: the partition's latest execution.
            let Some(e) = list.iter().find(|e| &e.params == p) else {
                continue;
            };
            match e.status {
                BatchStatus::Completed => done.push(e.id),
                BatchStatus::Failed if e.created_at >= since => failed.push(format!(
                    "partition {i}/{} failed (execution {}): {}",
                    wanted.len(),
                    e.id,
                    e.exit_message
                )),
                _ => {}
            }
        }
        // A partition task that died without an execution (e.g. its job could not
        // be built) has failed too.
        if let Ok(dead) = broker.dead(PARTITIONS_QUEUE, 1000).await {
            for t in dead {
                if let Ok(input) = serde_json::from_value::<PartitionInput>(t.payload.clone())
                    && input.child_job() == child
                    && t.created_at >= since
                    && wanted.contains(&input.child_params())
                    && !list.iter().any(|e| e.params == input.child_params())
                {
                    failed.push(format!(
                        "partition {}/{} failed: {}",
                        input.index,
                        input.of,
                        t.last_error.unwrap_or_default()
                    ));
                }
            }
        }
        // The step ends when every partition has ended, as Spring Batch's
        // partition handler does: completed ones stay completed for the restart.
        if done.len() + failed.len() >= wanted.len() {
            if failed.is_empty() {
                // Counts are read once, at the end, not on every poll.
                let mut written = 0u64;
                for id in &done {
                    if let Ok((_, steps)) = repo.execution(*id).await {
                        written += steps.iter().map(|s| s.counts.written).sum::<u64>();
                    }
                }
                return Ok(format!(
                    "{} partitions completed, {written} items written",
                    done.len()
                ));
            }
            return Err(PartitionError::Failed(failed.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `job.partition` handler: runs one partition as a child job instance.
pub struct PartitionTask {
    rt: Arc<Runtime>,
}

impl PartitionTask {
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_secs(2),
        factor: 2.0,
        max: Duration::from_secs(120),
        jitter: true,
    };

    /// A handler for the jobs of `rt`, recording into its repository.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }
}

#[async_trait]
impl Task for PartitionTask {
    const NAME: &'static str = JOB_PARTITION;
    type Input = PartitionInput;
    type Output = super::job_task::JobRunOutput;

    async fn execute(
        &self,
        ctx: TaskContext,
        input: PartitionInput,
    ) -> Result<Self::Output, TaskError> {
        let job = super::build::build_partition(
            self.rt.settings(),
            &input.job,
            &input.step,
            &input.params,
            input.index,
            input.of,
        )
        .map_err(|e| TaskError::Fatal(e.to_string()))?;
        super::job_task::run_job_task(
            &ctx,
            &self.rt,
            job,
            &input.child_params(),
            &Default::default(),
            false,
        )
        .await
    }

    fn retry_policy(&self) -> RetryPolicy {
        Self::RETRY
    }

    fn queue(&self) -> &str {
        PARTITIONS_QUEUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_specs_parse() {
        assert_eq!(parse_partition("0/4"), Some((0, 4)));
        assert_eq!(parse_partition(" 3 / 4 "), Some((3, 4)));
        assert_eq!(parse_partition("4/4"), None);
        assert_eq!(parse_partition("1/0"), None);
        assert_eq!(parse_partition("x"), None);
    }
}
