//! Partitioned steps: one chunk step fanned out as N partitions, run elsewhere.
//!
//! Partitioning is a batch concept (Spring Batch's `PartitionHandler`): the parent
//! job sees one step, [`PartitionedStep`], which hands its `N` partitions to a
//! [`PartitionHandler`] and completes when every partition completed, or fails
//! with the failed partitions' messages. *How* partitions are run (as queue tasks
//! on any worker, in threads, on a cluster) is the handler's business; the batch
//! crate knows nothing of queues. The binary supplies a queue-backed handler.

use std::sync::Arc;

use async_trait::async_trait;

use crate::job::{Tasklet, TaskletError};
use crate::model::Params;

/// Why a partitioned step did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The partitions could not be handed out (queue or repository unreachable,
    /// no record of the parent run).
    #[error("{0}")]
    Dispatch(String),
    /// One or more partitions ran and failed; the messages, joined.
    #[error("{0}")]
    Failed(String),
}

/// What one partitioned step asks its handler to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRequest {
    /// The parent job.
    pub job: String,
    /// The partitioned step.
    pub step: String,
    /// The parent run's parameters.
    pub params: Params,
    /// How many partitions.
    pub of: usize,
}

/// Runs the partitions of a step and waits for all of them.
#[async_trait]
pub trait PartitionHandler: Send + Sync {
    /// Runs partitions `0..request.of` and returns a summary once all completed.
    ///
    /// # Errors
    ///
    /// [`PartitionError::Dispatch`] when they could not be started,
    /// [`PartitionError::Failed`] when one or more failed.
    async fn run_partitions(&self, request: &PartitionRequest) -> Result<String, PartitionError>;
}

/// The parent's side of a partitioned step: a tasklet that delegates to a
/// [`PartitionHandler`].
pub struct PartitionedStep {
    request: PartitionRequest,
    handler: Arc<dyn PartitionHandler>,
}

impl PartitionedStep {
    /// A step that runs `request` through `handler`.
    pub fn new(request: PartitionRequest, handler: Arc<dyn PartitionHandler>) -> Self {
        Self { request, handler }
    }
}

#[async_trait]
impl Tasklet for PartitionedStep {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        Ok(self.handler.run_partitions(&self.request).await?)
    }
}
