//! The composition root: what a process builds once from its [`Settings`] and
//! hands down to the commands, the workers, the scheduler and the HTTP API.
//!
//! [`Runtime`] owns the connections to the broker, the job repository and the
//! claim store. Each is connected on first use and at most once per process, so
//! a command that reads only the queue (`sluice queue stats`) never opens the
//! repository, and `sluice serve` shares one broker between its workers, its
//! scheduler and its job API. Everything that turns configuration into running
//! things lives below it:
//!
//! - [`build`]: `[[job]]` config → [`sluice_batch::Job`] for one run;
//! - [`params`]: the parameters of a run, for every origin (CLI, API, cron fire,
//!   file fire);
//! - [`job_task`]: the `job.run` task and its handler;
//! - [`partition`]: the queue-backed [`sluice_batch::partition::PartitionHandler`];
//! - [`launcher`]: the scheduler's launcher and the scheduler itself.

use std::sync::Arc;

use sluice_batch::Job;
use sluice_batch::model::Params;
use sluice_batch::partition::PartitionHandler;
use sluice_batch::repository::{Repository, SqlRepository};
use sluice_queue::{Broker, Worker, WorkerHandle};
use sluice_schedule::{ClaimStore, RedisClaims, SqlClaims};
use tokio::sync::OnceCell;

use crate::alerts::ALERTS_QUEUE;
use crate::config::Settings;

pub mod build;
pub mod job_task;
pub mod launcher;
pub mod params;
pub mod partition;

pub use build::{BuildError, check_all};

/// The process's shared parts, built once from the settings.
pub struct Runtime {
    settings: Arc<Settings>,
    broker: OnceCell<Arc<dyn Broker>>,
    repository: OnceCell<Arc<dyn Repository>>,
    claims: OnceCell<Arc<dyn ClaimStore>>,
    alerts: OnceCell<Arc<crate::alerts::AlertStore>>,
    ops: OnceCell<Arc<crate::ops::OpsStore>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("broker", &self.broker.initialized())
            .field("repository", &self.repository.initialized())
            .field("claims", &self.claims.initialized())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime for `settings`; nothing is connected yet.
    pub fn new(settings: Settings) -> Arc<Self> {
        Self::shared(Arc::new(settings))
    }

    /// As [`Runtime::new`], for settings already shared.
    pub fn shared(settings: Arc<Settings>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            broker: OnceCell::new(),
            repository: OnceCell::new(),
            claims: OnceCell::new(),
            alerts: OnceCell::new(),
            ops: OnceCell::new(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The task broker of `[queue]`, connected on first use.
    ///
    /// # Errors
    ///
    /// The broker's connect error.
    pub async fn broker(&self) -> Result<Arc<dyn Broker>, String> {
        let q = &self.settings.queue;
        self.broker
            .get_or_try_init(|| async {
                sluice_queue::connect(&q.url, &q.namespace)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .cloned()
    }

    /// The job repository of `[repository]`, connected and migrated on first use.
    ///
    /// # Errors
    ///
    /// The repository's connect or migration error.
    pub async fn repository(&self) -> Result<Arc<dyn Repository>, String> {
        let url = &self.settings.jobs.repository_url;
        self.repository
            .get_or_try_init(|| async {
                let repo = SqlRepository::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                repo.migrate().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(Arc::new(repo) as Arc<dyn Repository>)
            })
            .await
            .cloned()
    }

    /// The alert state, in the job repository's database, opened and migrated
    /// on first use.
    ///
    /// # Errors
    ///
    /// When it cannot be opened or migrated.
    pub async fn alert_store(&self) -> Result<Arc<crate::alerts::AlertStore>, String> {
        let url = &self.settings.jobs.repository_url;
        self.alerts
            .get_or_try_init(|| async { crate::alerts::AlertStore::open(url).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The audit log and chart series, in the repository's database, connected
    /// and migrated on first use.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn ops(&self) -> Result<Arc<crate::ops::OpsStore>, String> {
        let url = &self.settings.jobs.repository_url;
        self.ops
            .get_or_try_init(|| async { crate::ops::OpsStore::connect(url).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The trigger claim store, connected on first use. Claims live where the
    /// queue lives: in Redis when `[queue] url` is Redis (several nodes), else in
    /// the SQL database (SQLite embedded, PostgreSQL for several nodes).
    ///
    /// # Errors
    ///
    /// When it cannot be reached.
    pub async fn claims(&self) -> Result<Arc<dyn ClaimStore>, String> {
        let q = &self.settings.queue;
        self.claims
            .get_or_try_init(|| async {
                if q.url.starts_with("redis") {
                    let opts = sluice_core::RedisOptions {
                        urls: vec![q.url.clone()],
                        namespace: q.namespace.clone(),
                        ..sluice_core::RedisOptions::default()
                    };
                    let redis = sluice_core::Redis::connect(&opts).map_err(|e| e.to_string())?;
                    Ok(Arc::new(RedisClaims::new(redis)) as Arc<dyn ClaimStore>)
                } else {
                    Ok(Arc::new(
                        SqlClaims::connect(&q.url)
                            .await
                            .map_err(|e| e.to_string())?,
                    ) as Arc<dyn ClaimStore>)
                }
            })
            .await
            .cloned()
    }

    /// Builds job `name` for a run with `params`, its partitioned steps running
    /// their partitions as tasks on this runtime's queue.
    ///
    /// # Errors
    ///
    /// As [`build::build`].
    pub fn job(self: &Arc<Self>, name: &str, params: &Params) -> Result<Job, String> {
        let partitions: Arc<dyn PartitionHandler> =
            Arc::new(partition::QueuePartitions::new(self.clone()));
        build::build(&self.settings, &partitions, name, params).map_err(|e| e.to_string())
    }

    /// Starts this node's workers: every configured queue with its concurrency,
    /// `job.run` and `job.partition` tasks. With `only`, just that queue (a local
    /// run serving its own partitions).
    ///
    /// # Errors
    ///
    /// When the broker or the repository cannot be reached.
    pub async fn start_workers(
        self: &Arc<Self>,
        only: Option<&str>,
    ) -> Result<WorkerHandle, String> {
        let q = &self.settings.queue;
        let mut b = Worker::builder(self.broker().await?)
            .visibility(q.visibility)
            .grace(q.grace);
        b = match only {
            Some(name) => b
                .queue(name, q.concurrency.get(name).copied().unwrap_or(2))
                .task(partition::PartitionTask::new(self.clone())),
            None => {
                for (name, n) in &q.concurrency {
                    b = b.queue(name.clone(), *n);
                }
                let alerts = &self.settings.alerts;
                if !alerts.receivers.is_empty() && !q.concurrency.contains_key(ALERTS_QUEUE) {
                    b = b.queue(ALERTS_QUEUE, 2);
                }
                b.task(job_task::JobRunTask::new(self.clone()))
                    .task(partition::PartitionTask::new(self.clone()))
                    .task(crate::alerts::NotifyTask::new(self.clone()))
            }
        };
        // The handlers record into the repository: connect it before taking tasks.
        self.repository().await?;
        if only.is_none() {
            tracing::info!(broker = %sluice_core::redact_url(&q.url),
                queues = ?q.concurrency, "workers started");
        }
        Ok(b.start())
    }
}
