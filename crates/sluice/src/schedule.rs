//! Scheduling jobs: the scheduler `serve` runs, its launcher (a fire enqueues a
//! `job.run` task), `sluice schedule …`, and the job trigger API.
//!
//! Claims live where the queue lives: in Redis when `[queue] url` is Redis (several
//! nodes), else in the SQL database (SQLite embedded, PostgreSQL for several nodes).

use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use sluice_batch::model::Params;
use sluice_queue::{Broker, TaskState};
use sluice_schedule::{
    ClaimStore, FileLauncher, FileTrigger, LaunchError, Launcher, RedisClaims, Scheduler,
    SqlClaims, TriggerDef, Watchers,
};

use crate::config::{JOBS_QUEUE, Settings};
use crate::job_task::{JobRunInput, job_run_task};

/// The claim store of `settings`.
///
/// # Errors
///
/// When it cannot be reached.
pub async fn claims(settings: &Settings) -> Result<Arc<dyn ClaimStore>, String> {
    let url = &settings.queue.url;
    if url.starts_with("redis") {
        let opts = sluice_core::RedisOptions {
            urls: vec![url.clone()],
            namespace: settings.queue.namespace.clone(),
            ..sluice_core::RedisOptions::default()
        };
        let redis = sluice_core::Redis::connect(&opts).map_err(|e| e.to_string())?;
        Ok(Arc::new(RedisClaims::new(redis)))
    } else {
        Ok(Arc::new(
            SqlClaims::connect(url).await.map_err(|e| e.to_string())?,
        ))
    }
}

/// The parameters of a run fired by `trigger` at `at`: the job's defaults, the
/// trigger's, and `fire_time` / `fire_date` in the trigger's zone.
pub fn fire_params(settings: &Settings, trigger: &TriggerDef, at: DateTime<Utc>) -> Params {
    let mut p: Params = settings
        .jobs
        .jobs
        .get(&trigger.job)
        .map(|j| j.params.clone().into_iter().collect())
        .unwrap_or_default();
    if let Some(tc) = settings
        .jobs
        .triggers
        .iter()
        .find(|t| t.def.id == trigger.id)
    {
        p.extend(tc.params.clone());
    }
    let local = at.with_timezone(&trigger.spec.tz());
    p.insert("fire_time".into(), local.to_rfc3339());
    p.insert("fire_date".into(), local.format("%Y-%m-%d").to_string());
    p
}

/// Enqueues `job.run` tasks for fires.
pub struct JobLauncher {
    settings: Arc<Settings>,
    broker: Arc<dyn Broker>,
}

impl JobLauncher {
    /// A launcher enqueueing on `broker`.
    pub fn new(settings: Arc<Settings>, broker: Arc<dyn Broker>) -> Self {
        Self { settings, broker }
    }
}

#[async_trait]
impl Launcher for JobLauncher {
    async fn launch(&self, trigger: &TriggerDef, at: DateTime<Utc>) -> Result<String, LaunchError> {
        let params = fire_params(&self.settings, trigger, at);
        let input = JobRunInput {
            job: trigger.job.clone(),
            params,
            rerun: false,
        };
        // A second guard besides the claim: one task per fire.
        let task = job_run_task(&input).idempotency_key(format!(
            "fire:{}:{}",
            trigger.id,
            at.timestamp_millis()
        ));
        let e = self
            .broker
            .enqueue(task)
            .await
            .map_err(|e| LaunchError::Enqueue(e.to_string()))?;
        Ok(e.id.to_string())
    }

    async fn running(&self, task: &str) -> bool {
        let Ok(id) = task.parse() else {
            return false;
        };
        matches!(
            self.broker.status(JOBS_QUEUE, id).await,
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
        let Some(w) = self
            .settings
            .jobs
            .watches
            .iter()
            .find(|w| w.trigger.id == trigger.id)
        else {
            return Err(LaunchError::Invalid(format!(
                "unknown trigger {}",
                trigger.id
            )));
        };
        let mut params: Params = self
            .settings
            .jobs
            .jobs
            .get(&trigger.job)
            .map(|j| j.params.clone().into_iter().collect())
            .unwrap_or_default();
        params.extend(w.params.clone());
        params.insert(w.param.clone(), path.display().to_string());
        add_manual_fire_params(&self.settings, &trigger.job, &mut params);
        let input = JobRunInput {
            job: trigger.job.clone(),
            params,
            rerun: false,
        };
        let task = job_run_task(&input);
        let e = self
            .broker
            .enqueue(task)
            .await
            .map_err(|e| LaunchError::Enqueue(e.to_string()))?;
        Ok(e.id.to_string())
    }
}

/// The scheduler and the directory watchers of a node.
#[derive(Debug)]
pub struct Running {
    scheduler: Option<Scheduler>,
    watchers: Option<Watchers>,
}

impl Running {
    /// Stops firing.
    pub async fn shutdown(self) {
        drop(self.watchers);
        if let Some(s) = self.scheduler {
            s.shutdown().await;
        }
    }
}

/// Starts the scheduler and the directory watchers, when jobs have triggers.
///
/// # Errors
///
/// When the claim store or the broker cannot be reached, or a watched directory
/// does not exist.
pub async fn start(settings: Arc<Settings>) -> Result<Option<Running>, String> {
    if settings.jobs.triggers.is_empty() && settings.jobs.watches.is_empty() {
        return Ok(None);
    }
    let broker = crate::job_task::broker(&settings).await?;
    let store = claims(&settings).await?;
    let launcher = Arc::new(JobLauncher::new(settings.clone(), broker));
    let watchers = if settings.jobs.watches.is_empty() {
        None
    } else {
        let files: Vec<FileTrigger> = settings
            .jobs
            .watches
            .iter()
            .map(|w| w.trigger.clone())
            .collect();
        Some(sluice_schedule::watch::start(
            files,
            store.clone(),
            launcher.clone(),
        )?)
    };
    let scheduler = if settings.jobs.triggers.is_empty() {
        None
    } else {
        let defs: Vec<TriggerDef> = settings
            .jobs
            .triggers
            .iter()
            .map(|t| t.def.clone())
            .collect();
        tracing::info!(triggers = defs.len(), "scheduler started");
        Some(Scheduler::start(defs, store, launcher, Arc::new(sluice_core::SystemClock)).await)
    };
    Ok(Some(Running {
        scheduler,
        watchers,
    }))
}

/// `sluice schedule …`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every trigger: its job, last fire, and next three fire times in its zone and UTC.
    List,
    /// Pauses a trigger (on every node).
    Pause {
        /// The trigger's id (`JOB#N` or `JOB/NAME`, see `list`).
        id: String,
    },
    /// Resumes a paused trigger.
    Resume {
        /// The trigger's id.
        id: String,
    },
}

/// Runs `sluice schedule …`.
pub async fn run(cmd: ScheduleCommand, settings: &Settings) -> ExitCode {
    match run_inner(cmd, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn known(settings: &Settings, id: &str) -> Result<(), String> {
    if settings.jobs.triggers.iter().any(|t| t.def.id == id) {
        return Ok(());
    }
    let ids: Vec<&str> = settings
        .jobs
        .triggers
        .iter()
        .map(|t| t.def.id.as_str())
        .collect();
    Err(format!(
        "no trigger {id:?}; triggers: {}",
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    ))
}

async fn run_inner(cmd: ScheduleCommand, settings: &Settings) -> Result<(), String> {
    let store = claims(settings).await?;
    match cmd {
        ScheduleCommand::Pause { id } => {
            known(settings, &id)?;
            store
                .set_paused(&id, true)
                .await
                .map_err(|e| e.to_string())?;
            println!("trigger {id} paused");
        }
        ScheduleCommand::Resume { id } => {
            known(settings, &id)?;
            store
                .set_paused(&id, false)
                .await
                .map_err(|e| e.to_string())?;
            println!("trigger {id} resumed");
        }
        ScheduleCommand::List => {
            let last = store.last_fires().await.map_err(|e| e.to_string())?;
            if settings.jobs.triggers.is_empty() && settings.jobs.watches.is_empty() {
                println!("no triggers ([[job.trigger]] in the config)");
            }
            for w in &settings.jobs.watches {
                let t = &w.trigger;
                println!(
                    "{}  job {}  watch {} ({}), the path in parameter {}",
                    t.id,
                    t.job,
                    t.dir.display(),
                    t.pattern.as_deref().unwrap_or("*"),
                    w.param,
                );
                match last.get(&t.id) {
                    Some(l) => println!("  last fire  {}", l.outcome),
                    None => println!("  last fire  never"),
                }
            }
            let paused = store.paused().await.map_err(|e| e.to_string())?;
            let now = Utc::now();
            for t in &settings.jobs.triggers {
                let d = &t.def;
                println!(
                    "{}  job {}  {}  misfire {:?}  overlap {}{}",
                    d.id,
                    d.job,
                    d.spec.describe(),
                    d.misfire,
                    d.overlap.as_str(),
                    if paused.contains(&d.id) {
                        "  PAUSED"
                    } else {
                        ""
                    }
                );
                match last.get(&d.id) {
                    Some(l) => {
                        let at = DateTime::<Utc>::from_timestamp_millis(l.at).unwrap_or_default();
                        println!(
                            "  last fire  {}  {}",
                            at.with_timezone(&d.spec.tz()).to_rfc3339(),
                            l.outcome
                        );
                    }
                    None => println!("  last fire  never"),
                }
                for next in d.spec.upcoming(now, 3) {
                    println!(
                        "  next       {}  ({} UTC)",
                        next.with_timezone(&d.spec.tz()).to_rfc3339(),
                        next.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
    }
    Ok(())
}

/// What the job API handlers need.
pub struct JobsApi {
    settings: Arc<Settings>,
    broker: Arc<dyn Broker>,
    store: Arc<dyn ClaimStore>,
}

impl JobsApi {
    /// Connects the broker and the claim store of `settings`.
    ///
    /// # Errors
    ///
    /// When either cannot be reached.
    pub async fn new(settings: Arc<Settings>) -> Result<Self, String> {
        let broker = crate::job_task::broker(&settings).await?;
        let store = claims(&settings).await?;
        Ok(Self {
            settings,
            broker,
            store,
        })
    }
}

fn api_error(
    status: axum::http::StatusCode,
    code: &str,
    msg: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(serde_json::json!({"error": code, "message": msg.into()})),
    )
        .into_response()
}

/// `POST /api/jobs/{name}/trigger` with `{"params": {…}}` (optional): enqueues a
/// run; `202 {"task": ID}`.
async fn trigger_job(
    axum::extract::State(api): axum::extract::State<Arc<JobsApi>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let Some(job) = api.settings.jobs.jobs.get(&name) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "no_job",
            format!("no job named {name:?}"),
        );
    };
    let extra: std::collections::BTreeMap<String, String> = if body.is_empty() {
        Default::default()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => match serde_json::from_value(v.get("params").cloned().unwrap_or_default()) {
                Ok(p) => p,
                Err(_) if v.get("params").is_none() => Default::default(),
                Err(e) => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "bad_params",
                        format!("\"params\" must be an object of strings: {e}"),
                    );
                }
            },
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("body is not JSON: {e}"),
                );
            }
        }
    };
    let mut params: Params = job.params.clone().into_iter().collect();
    params.extend(extra);
    add_manual_fire_params(&api.settings, &name, &mut params);
    if let Err(e) = crate::jobs::build(&api.settings, &name, &params) {
        return api_error(StatusCode::BAD_REQUEST, "bad_job", e);
    }
    let input = JobRunInput {
        job: name,
        params,
        rerun: false,
    };
    let task = job_run_task(&input);
    match api.broker.enqueue(task).await {
        Ok(e) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"task": e.id.to_string(), "queue": JOBS_QUEUE})),
        )
            .into_response(),
        Err(e) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            e.to_string(),
        ),
    }
}

/// `POST /api/schedule/{job}/{name}/pause` (a named trigger, `JOB/NAME`).
async fn pause_named_trigger(
    state: axum::extract::State<Arc<JobsApi>>,
    axum::extract::Path((job, name, action)): axum::extract::Path<(String, String, String)>,
) -> axum::response::Response {
    pause_trigger(
        state,
        axum::extract::Path((format!("{job}/{name}"), action)),
    )
    .await
}

/// `POST /api/schedule/{id}/pause` (an unnamed trigger, `JOB#N`, with `#`
/// written `%23`).
async fn pause_trigger(
    axum::extract::State(api): axum::extract::State<Arc<JobsApi>>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return api_error(StatusCode::NOT_FOUND, "no_route", "use pause or resume"),
    };
    if let Err(e) = known(&api.settings, &id) {
        return api_error(StatusCode::NOT_FOUND, "no_trigger", e);
    }
    match api.store.set_paused(&id, paused).await {
        Ok(()) => axum::Json(serde_json::json!({"trigger": id, "paused": paused})).into_response(),
        Err(e) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

/// The job and schedule API routes (the caller adds the admin-token check).
pub fn api_router(api: Arc<JobsApi>) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route("/api/jobs/{name}/trigger", post(trigger_job))
        .route("/api/schedule/{id}/{action}", post(pause_trigger))
        .route(
            "/api/schedule/{job}/{name}/{action}",
            post(pause_named_trigger),
        )
        .with_state(api)
}

/// A run started by hand (CLI, API) of a job whose config uses `{{fire_time}}` or
/// `{{fire_date}}`: they become the current instant and date in UTC, unless given.
pub fn add_manual_fire_params(settings: &Settings, job: &str, params: &mut Params) {
    let Some(raw) = settings.jobs.jobs.get(job) else {
        return;
    };
    let mut used = std::collections::BTreeSet::new();
    for step in &raw.steps {
        for table in [&step.reader, &step.processor, &step.writer, &step.tasklet]
            .into_iter()
            .flatten()
        {
            crate::config::placeholders(table, &mut used);
        }
    }
    let now = Utc::now();
    if used.contains("fire_time") {
        params
            .entry("fire_time".into())
            .or_insert_with(|| now.to_rfc3339());
    }
    if used.contains("fire_date") {
        params
            .entry("fire_date".into())
            .or_insert_with(|| now.format("%Y-%m-%d").to_string());
    }
}
