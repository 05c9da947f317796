//! Scheduling jobs: the scheduler, the directory watchers and the database-change
//! watchers `serve` runs, and their launcher: a fire enqueues a `job.run` task.
//!
//! Claims (who fired what, paused triggers) come from the runtime's claim store:
//! see [`Runtime::claims`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_queue::TaskState;
use sluice_schedule::{
    ChangeFire, ChangeLauncher, ChangeTrigger, ChangeWatchers, FileLauncher, FileTrigger,
    LaunchError, Launcher, Scheduler, TriggerDef, Watchers,
};

use super::Runtime;
use super::job_task::{JobRunInput, job_run_task};
use super::params::{self, Origin};
use crate::config::JOBS_QUEUE;

/// Enqueues `job.run` tasks for fires.
pub struct JobLauncher {
    rt: Arc<Runtime>,
}

impl JobLauncher {
    /// A launcher enqueueing on the broker of `rt`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }

    /// Enqueues a run of `job` with `params`, under `idempotency_key` if given.
    async fn enqueue(
        &self,
        job: &str,
        params: params::RunParams,
        idempotency_key: Option<String>,
    ) -> Result<String, LaunchError> {
        let input = JobRunInput::new(job, params, false);
        let mut task = job_run_task(&input);
        if let Some(k) = idempotency_key {
            task = task.idempotency_key(k);
        }
        let broker = self
            .rt
            .broker()
            .await
            .map_err(|e| LaunchError::Enqueue(e.to_string()))?;
        let e = broker
            .enqueue(task)
            .await
            .map_err(|e| LaunchError::Enqueue(e.to_string()))?;
        Ok(e.id.to_string())
    }
}

#[async_trait]
impl Launcher for JobLauncher {
    async fn launch(&self, trigger: &TriggerDef, at: DateTime<Utc>) -> Result<String, LaunchError> {
        let params = params::resolve(self.rt.settings(), &trigger.job, Origin::Fire(trigger, at))
            .map_err(|e| LaunchError::Invalid(e.to_string()))?;
        // A second guard besides the claim: one task per fire.
        let key = format!("fire:{}:{}", trigger.id, at.timestamp_millis());
        self.enqueue(&trigger.job, params, Some(key)).await
    }

    async fn running(&self, task: &str) -> bool {
        let (Ok(id), Ok(broker)) = (task.parse(), self.rt.broker().await) else {
            return false;
        };
        matches!(
            broker.status(JOBS_QUEUE, id).await,
            Ok(Some(s)) if matches!(s.state, TaskState::Ready | TaskState::Delayed | TaskState::Running)
        )
    }
}

#[async_trait]
impl FileLauncher for JobLauncher {
    async fn launch_file(
        &self,
        trigger: &FileTrigger,
        path: &std::path::Path,
    ) -> Result<String, LaunchError> {
        let params = params::resolve(
            self.rt.settings(),
            &trigger.job,
            Origin::File(trigger, path),
        )
        .map_err(|e| LaunchError::Invalid(e.to_string()))?;
        self.enqueue(&trigger.job, params, None).await
    }
}

#[async_trait]
impl ChangeLauncher for JobLauncher {
    async fn launch_change(&self, fire: &ChangeFire) -> Result<String, LaunchError> {
        let params = params::resolve(self.rt.settings(), &fire.job, Origin::Change(fire))
            .map_err(|e| LaunchError::Invalid(e.to_string()))?;
        // One task per change range, even if a node fires it twice.
        let key = format!("change:{}:{}", fire.trigger, fire.mark);
        self.enqueue(&fire.job, params, Some(key)).await
    }
}

/// The scheduler, the directory watchers and the change watchers of a node.
#[derive(Debug)]
pub struct Running {
    scheduler: Option<Scheduler>,
    watchers: Option<Watchers>,
    changes: Option<ChangeWatchers>,
}

impl Running {
    /// Stops firing.
    pub async fn shutdown(self) {
        drop(self.watchers);
        if let Some(c) = self.changes {
            c.shutdown().await;
        }
        if let Some(s) = self.scheduler {
            s.shutdown().await;
        }
    }
}

/// Starts the scheduler, the directory watchers and the change watchers, when
/// jobs have triggers.
///
/// # Errors
///
/// When the claim store or the broker cannot be reached, a watched directory
/// does not exist, or a change trigger's database, table or query is wrong.
pub async fn start(rt: &Arc<Runtime>) -> Result<Option<Running>, String> {
    let jobs = &rt.settings().jobs;
    if jobs.triggers.is_empty() && jobs.watches.is_empty() && jobs.changes.is_empty() {
        return Ok(None);
    }
    rt.broker().await?;
    let store = rt.claims().await?;
    let launcher = Arc::new(JobLauncher::new(rt.clone()));
    let watchers = if jobs.watches.is_empty() {
        None
    } else {
        let files: Vec<FileTrigger> = jobs.watches.iter().map(|w| w.trigger.clone()).collect();
        Some(sluice_schedule::triggers::watch::start(
            files,
            store.clone(),
            launcher.clone(),
        )?)
    };
    let changes = if jobs.changes.is_empty() {
        None
    } else {
        let triggers: Vec<ChangeTrigger> = jobs.changes.iter().map(|c| c.trigger.clone()).collect();
        Some(
            sluice_schedule::triggers::change::start(triggers, store.clone(), launcher.clone())
                .await?,
        )
    };
    let scheduler = if jobs.triggers.is_empty() {
        None
    } else {
        let defs: Vec<TriggerDef> = jobs.triggers.iter().map(|t| t.def.clone()).collect();
        tracing::info!(triggers = defs.len(), "scheduler started");
        Some(Scheduler::start(defs, store, launcher, Arc::new(sluice_core::SystemClock)).await)
    };
    Ok(Some(Running {
        scheduler,
        watchers,
        changes,
    }))
}
