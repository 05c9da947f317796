//! The job repository: where instances, executions, step checkpoints and skips
//! live, in SQLite (the embedded default) or PostgreSQL.
//!
//! ## Who runs an instance
//!
//! An execution that runs holds a **lease** on its instance: the instance row
//! records `lock_owner`, `lock_execution_id` and `lock_until`. Claiming is one
//! conditional `UPDATE … WHERE lock_until IS NULL OR lock_until < now`, atomic on
//! both databases, so two processes never run the same instance at once. The
//! running process extends its lease every few seconds (a heartbeat); a process that
//! dies stops extending it, and once it expires the next `run` claims the instance,
//! marks the dead execution `ABANDONED` and resumes from its last committed chunk. No
//! manual clean-up is ever needed.
//!
//! ## Schema
//!
//! See `crates/sluice-batch/migrations/*.sql` (one script for both databases;
//! `{identity}` is each one's auto-increment key) and `docs/batch-repository.md`.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::model::{
    BatchStatus, JobExecution, JobInstance, NonIdentifying, Params, SkipRecord, StepCounts,
    StepExecution,
};

mod sql;

pub use sql::SqlRepository;

/// A repository operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RepoError {
    /// Another live execution holds the instance.
    #[error(
        "job {job:?} with these parameters is already running as execution {execution_id} (owner {owner}, lease until {until})",
        until = crate::model::format_millis(*.lease_until)
    )]
    AlreadyRunning {
        /// The job's name.
        job: String,
        /// The running execution.
        execution_id: i64,
        /// Its process.
        owner: String,
        /// Its lease end (Unix ms).
        lease_until: i64,
    },
    /// The instance has completed; run it again only with `rerun`.
    #[error(
        "job {job:?} with these parameters already COMPLETED (execution {execution_id}); pass --rerun to run it again, or other parameters"
    )]
    AlreadyCompleted {
        /// The job's name.
        job: String,
        /// The completed execution.
        execution_id: i64,
    },
    /// This process's lease was taken over (it was presumed dead).
    #[error("execution {0} lost its lease: another process took the instance over")]
    LeaseLost(i64),
    /// No such execution.
    #[error("no execution {0}")]
    NoSuchExecution(i64),
    /// The database failed.
    #[error("job repository: {0}")]
    Db(String),
}

impl From<sqlx::Error> for RepoError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e.to_string())
    }
}

/// What starting an execution found.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The instance.
    pub instance: JobInstance,
    /// The new execution (STARTED, lease held).
    pub execution: JobExecution,
    /// The previous execution of this instance, if any (FAILED, STOPPED or
    /// ABANDONED): the new one resumes its steps.
    pub previous: Option<JobExecution>,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Lease extended; carry on.
    Alive,
    /// Lease extended, and a stop was requested: stop at the next chunk boundary.
    StopRequested,
}

/// Which executions [`Repository::find_executions`] returns; every field that
/// is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Of this job.
    pub job: Option<String>,
    /// In this status.
    pub status: Option<BatchStatus>,
    /// With an id below this (the next page of a newest-first list).
    pub before_id: Option<i64>,
    /// Created at or after this instant (Unix ms).
    pub since_ms: Option<i64>,
}

/// The job repository.
#[async_trait]
pub trait Repository: Send + Sync {
    /// Creates or upgrades the schema (idempotent; runs embedded migrations).
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn migrate(&self) -> Result<(), RepoError>;

    /// [`start_execution_with`](Self::start_execution_with) with every
    /// parameter identifying.
    ///
    /// # Errors
    ///
    /// As `start_execution_with`.
    async fn start_execution(
        &self,
        job: &str,
        params: &Params,
        owner: &str,
        lease: Duration,
        rerun: bool,
    ) -> Result<Launch, RepoError> {
        self.start_execution_with(job, params, &NonIdentifying::new(), owner, lease, rerun)
            .await
    }

    /// Claims the instance of `job` with the identifying part of `params` (all
    /// but `non_identifying`; creating it when new) for a new execution, which
    /// records all of `params`, owned by `owner`, with a lease of `lease`.
    ///
    /// - A live execution (lease not expired) → [`RepoError::AlreadyRunning`].
    /// - An expired one is marked `ABANDONED` and becomes [`Launch::previous`].
    /// - A `COMPLETED` last execution → [`RepoError::AlreadyCompleted`] unless
    ///   `rerun`; with `rerun` the new execution starts from scratch
    ///   (`previous` is `None`).
    ///
    /// # Errors
    ///
    /// As above, or when the database fails.
    async fn start_execution_with(
        &self,
        job: &str,
        params: &Params,
        non_identifying: &NonIdentifying,
        owner: &str,
        lease: Duration,
        rerun: bool,
    ) -> Result<Launch, RepoError>;

    /// Extends the lease of `execution_id`.
    ///
    /// # Errors
    ///
    /// [`RepoError::LeaseLost`] when another process took the instance over.
    async fn heartbeat(
        &self,
        execution_id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Heartbeat, RepoError>;

    /// Ends an execution with `status` and releases its lease.
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn finish_execution(
        &self,
        execution_id: i64,
        status: BatchStatus,
        exit_message: &str,
    ) -> Result<(), RepoError>;

    /// The latest step execution named `step` of any execution of `instance_id`
    /// (to resume from its checkpoint).
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn last_step_execution(
        &self,
        instance_id: i64,
        step: &str,
    ) -> Result<Option<StepExecution>, RepoError>;

    /// Records the start of step `step` in `execution_id`, with the counts and
    /// checkpoint it resumes from.
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn start_step(
        &self,
        execution_id: i64,
        step: &str,
        counts: StepCounts,
        checkpoint: &serde_json::Value,
    ) -> Result<StepExecution, RepoError>;

    /// Commits one chunk's progress: the counts and checkpoint of `step`, and the
    /// chunk's skips, in one transaction; also checks the lease (a chunk is never
    /// committed by a process that lost it).
    ///
    /// # Errors
    ///
    /// [`RepoError::LeaseLost`], or when the database fails.
    async fn commit_chunk(
        &self,
        step: &StepExecution,
        owner: &str,
        skips: &[SkipRecord],
    ) -> Result<(), RepoError>;

    /// The database URL of the repository, as configured (never shown).
    fn database_url(&self) -> Option<&str> {
        None
    }

    /// The statements [`commit_chunk`](Self::commit_chunk) runs, for a writer into
    /// the repository's own database to run in its chunk transaction (`None` when
    /// this repository cannot hand them out).
    fn chunk_commit_statements(
        &self,
        step: &StepExecution,
        owner: &str,
        skips: &[SkipRecord],
    ) -> Option<Vec<crate::api::SqlStatement>> {
        let _ = (step, owner, skips);
        None
    }

    /// Ends a step execution.
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn finish_step(&self, step: &StepExecution) -> Result<(), RepoError>;

    /// Asks a running execution to stop at its next chunk boundary. Returns whether
    /// it was running.
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn request_stop(&self, execution_id: i64) -> Result<bool, RepoError>;

    /// Whether a stop was requested for `execution_id` (a cheap read, made at
    /// every chunk boundary and between steps).
    ///
    /// # Errors
    ///
    /// [`RepoError::NoSuchExecution`], or when the database fails.
    async fn stop_requested(&self, execution_id: i64) -> Result<bool, RepoError>;

    /// Recent executions, newest first, of `job` (or all jobs).
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn executions(
        &self,
        job: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobExecution>, RepoError> {
        let filter = ExecutionFilter {
            job: job.map(str::to_owned),
            ..ExecutionFilter::default()
        };
        self.find_executions(&filter, limit).await
    }

    /// The executions matching `filter`, newest first.
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn find_executions(
        &self,
        filter: &ExecutionFilter,
        limit: u32,
    ) -> Result<Vec<JobExecution>, RepoError>;

    /// One execution and its steps.
    ///
    /// # Errors
    ///
    /// [`RepoError::NoSuchExecution`], or when the database fails.
    async fn execution(
        &self,
        execution_id: i64,
    ) -> Result<(JobExecution, Vec<StepExecution>), RepoError>;

    /// The skips recorded by an execution's steps.
    ///
    /// # Errors
    ///
    /// When the database fails.
    async fn skips(&self, execution_id: i64) -> Result<Vec<SkipRecord>, RepoError>;
}
