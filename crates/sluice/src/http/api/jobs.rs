//! Jobs, executions and triggers: list and read them; run a job with
//! parameters, stop and restart an execution, pause a trigger (until resumed or
//! until a time) and resume it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sluice_batch::model::{BatchStatus, JobExecution, SkipRecord, StepExecution};
use sluice_batch::repository::{ExecutionFilter, RepoError, Repository};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiState, Page, PageQuery, Problem, auth};
use crate::http::ApiError;
use crate::runtime::job_task::JobRunInput;
use crate::views::{ExecutionView, JobView, StepView, TriggerView, rfc3339, trigger_views};

fn repo_err(e: RepoError) -> ApiError {
    match e {
        RepoError::NoSuchExecution(id) => {
            ApiError::not_found("no_execution", format!("no execution {id}"))
        }
        e => ApiError::unavailable("repository_unavailable", e.to_string()),
    }
}

async fn repository(s: &ApiState) -> Result<std::sync::Arc<dyn Repository>, ApiError> {
    s.jobs()?;
    s.rt.repository()
        .await
        .map_err(|e| ApiError::unavailable("repository_unavailable", e))
}

/// Filters of jobs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// Only those whose name contains this.
    pub q: Option<String>,
    /// Only those whose last execution has this status (`COMPLETED`,
    /// `FAILED`, …; `NONE` for jobs that never ran).
    pub status: Option<String>,
}

fn parse_status(s: &str) -> Result<BatchStatus, ApiError> {
    BatchStatus::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
        ApiError::bad_request(
            "bad_status",
            format!(
                "unknown status {s:?}: use one of {}",
                BatchStatus::ALL.map(BatchStatus::as_str).join(", ")
            ),
        )
    })
}

/// Configured jobs with their last execution.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(PageQuery, JobFilter),
    responses((status = 200, body = Page<JobView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn list_jobs(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(f): Query<JobFilter>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let want = match f.status.as_deref() {
        None => None,
        Some(x) if x.eq_ignore_ascii_case("none") => Some(None),
        Some(x) => Some(Some(parse_status(x)?)),
    };
    let repo = repository(&s).await?;
    let settings = s.rt.settings();
    let limit = pq.limit()?;
    let after = pq.cursor_key()?;
    let mut out = Vec::new();
    for (name, job) in &settings.jobs.jobs {
        if f.q.as_ref().is_some_and(|q| !name.contains(q.as_str()))
            || after.as_ref().is_some_and(|a| name <= a)
        {
            continue;
        }
        let last = repo.executions(Some(name), 1).await.map_err(repo_err)?;
        if want.is_some_and(|w| w != last.first().map(|e| e.status)) {
            continue;
        }
        let v = JobView {
            name,
            description: job.description.as_deref(),
            steps: job
                .steps
                .iter()
                .map(|s| s.name.get_ref().as_str())
                .collect(),
            last: last.first().map(ExecutionView::of),
        };
        out.push((name.clone(), serde_json::to_value(v).unwrap_or_default()));
        if out.len() > limit {
            break;
        }
    }
    let page = Page::by_key(out, limit, |(n, _)| n.clone());
    Ok(Json(Page {
        items: page.items.into_iter().map(|(_, v)| v).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A job: its steps, triggers and recent executions.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail<'a> {
    /// The job.
    pub job: JobView<'a>,
    /// Its default parameters.
    pub params: &'a BTreeMap<String, String>,
    /// Its triggers.
    pub triggers: Vec<TriggerView<'a>>,
    /// Its last ten executions, newest first.
    pub recent: Vec<ExecutionView<'a>>,
}

/// One job.
#[utoipa::path(get, path = "/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses((status = 200, body = JobDetail), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn get_job(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let repo = repository(&s).await?;
    let api = s.jobs()?;
    let settings = s.rt.settings();
    let job = settings
        .jobs
        .jobs
        .get(&name)
        .ok_or_else(|| ApiError::not_found("no_job", format!("no job named {name:?}")))?;
    let recent = repo.executions(Some(&name), 10).await.map_err(repo_err)?;
    let (last, pauses) = trigger_state(api).await?;
    let triggers: Vec<TriggerView<'_>> =
        trigger_views(settings, &last, &pauses, chrono::Utc::now())
            .into_iter()
            .filter(|t| t.job == name)
            .collect();
    let d = JobDetail {
        job: JobView {
            name: &name,
            description: job.description.as_deref(),
            steps: job
                .steps
                .iter()
                .map(|s| s.name.get_ref().as_str())
                .collect(),
            last: recent.first().map(ExecutionView::of),
        },
        params: &job.params,
        triggers,
        recent: recent.iter().map(ExecutionView::of).collect(),
    };
    Ok(Json(serde_json::to_value(d).unwrap_or_default()))
}

/// A run request: parameters over the job's defaults.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `name → value`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Run a COMPLETED instance again.
    #[serde(default)]
    pub rerun: bool,
}

/// An enqueued run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enqueued {
    /// The `job.run` task's id.
    pub task: String,
    /// The queue it waits on.
    pub queue: String,
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("invalid request body: {e}")))
}

/// Runs a job: enqueues its `job.run` task (operator).
#[utoipa::path(post, path = "/jobs/{name}/runs", tag = "jobs", request_body = RunRequest,
    params(("name" = String, Path, description = "The job's name")),
    responses((status = 202, body = Enqueued), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn run_job(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let req: RunRequest = json_body(&body)?;
    let task = s.jobs()?.enqueue_run(&name, &req.params, req.rerun).await?;
    let detail = serde_json::to_string(&req.params).unwrap_or_default();
    s.audit(
        &who,
        "job.run",
        &name,
        &format!("task {task} params {detail}"),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Enqueued {
            task,
            queue: crate::config::JOBS_QUEUE.into(),
        }),
    ))
}

/// Filters of executions.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionQuery {
    /// Only this job's.
    pub job: Option<String>,
    /// Only those in this status.
    pub status: Option<String>,
    /// Only those created since, e.g. `24h` ago.
    pub since: Option<String>,
}

/// Executions, newest first.
#[utoipa::path(get, path = "/executions", tag = "jobs", params(PageQuery, ExecutionQuery),
    responses((status = 200, body = Page<ExecutionView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn list_executions(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(q): Query<ExecutionQuery>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let limit = pq.limit()?;
    let since_ms = match q.since.as_deref() {
        None => None,
        Some(d) => Some(
            chrono::Utc::now().timestamp_millis()
                - crate::config::parse_duration(d)
                    .map_err(|e| {
                        ApiError::bad_request(
                            "bad_since",
                            format!("since {d:?}: {e}; write e.g. 24h"),
                        )
                    })?
                    .as_millis() as i64,
        ),
    };
    let filter = ExecutionFilter {
        job: q.job,
        status: q.status.as_deref().map(parse_status).transpose()?,
        before_id: pq.cursor_i64()?,
        since_ms,
    };
    let repo = repository(&s).await?;
    let list = repo
        .find_executions(&filter, limit as u32 + 1)
        .await
        .map_err(repo_err)?;
    let page = Page::by_key(list, limit, |e| e.id.to_string());
    Ok(Json(Page {
        items: page
            .items
            .iter()
            .map(|e| serde_json::to_value(ExecutionView::of(e)).unwrap_or_default())
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A skipped item and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Skip)]
pub struct SkipSchema {
    /// The step's name.
    pub step_name: String,
    /// Where in the input (1-based).
    pub position: u64,
    /// `read`, `process` or `write`.
    pub phase: String,
    /// Why it was skipped.
    pub reason: String,
    /// The item, truncated to 4 KiB.
    pub item: Option<String>,
}

/// One line of an execution's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    /// When (RFC 3339).
    pub at: Option<String>,
    /// What happened.
    pub message: String,
}

/// Where a running execution stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// Items read so far over all steps.
    pub read: u64,
    /// Items written so far.
    pub written: u64,
    /// Items skipped so far.
    pub skipped: u64,
    /// Steps finished, of `steps_total`.
    pub steps_done: usize,
    /// The job's steps.
    pub steps_total: usize,
    /// The step running now.
    pub current_step: Option<String>,
    /// Seconds since it started.
    pub elapsed_seconds: Option<f64>,
    /// Items read per second since it started.
    pub read_per_second: Option<f64>,
}

/// An execution with its steps, progress, skips and log.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionPage<'a> {
    /// The execution.
    pub execution: ExecutionView<'a>,
    /// Its steps, in the order they ran.
    pub steps: Vec<StepView<'a>>,
    /// Where it stands.
    pub progress: Progress,
    /// Its skipped items with their reasons (the first 200).
    #[schema(value_type = Vec<SkipSchema>)]
    pub skips: Vec<SkipRecord>,
    /// Its life as lines: started, each step's end with its counts, the end.
    pub log: Vec<LogLine>,
}

fn progress(e: &JobExecution, steps: &[StepExecution], total: usize) -> Progress {
    let mut p = Progress {
        read: 0,
        written: 0,
        skipped: 0,
        steps_done: steps.iter().filter(|s| s.ended_at.is_some()).count(),
        steps_total: total,
        current_step: steps
            .iter()
            .rev()
            .find(|s| s.ended_at.is_none())
            .map(|s| s.step_name.clone()),
        elapsed_seconds: None,
        read_per_second: None,
    };
    for s in steps {
        p.read += s.counts.read;
        p.written += s.counts.written;
        p.skipped += s.counts.skipped;
    }
    if let Some(start) = e.started_at {
        let end = e
            .ended_at
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let secs = ((end - start).max(0) as f64) / 1000.0;
        p.elapsed_seconds = Some(secs);
        p.read_per_second = (secs > 0.0).then(|| p.read as f64 / secs);
    }
    p
}

fn log_lines(e: &JobExecution, steps: &[StepExecution]) -> Vec<LogLine> {
    let mut out = vec![LogLine {
        at: rfc3339(Some(e.created_at)),
        message: format!(
            "execution {} of {} created with {:?}",
            e.id, e.job_name, e.params
        ),
    }];
    if let Some(t) = e.started_at {
        out.push(LogLine {
            at: rfc3339(Some(t)),
            message: format!("started on {}", e.owner),
        });
    }
    for s in steps {
        out.push(LogLine {
            at: rfc3339(Some(s.started_at)),
            message: format!("step {} started", s.step_name),
        });
        if let Some(t) = s.ended_at {
            let c = &s.counts;
            let mut m = format!(
                "step {} {}: read {}, written {}, skipped {}, filtered {}, {} commits, {} rollbacks",
                s.step_name,
                s.status,
                c.read,
                c.written,
                c.skipped,
                c.filtered,
                c.commits,
                c.rollbacks
            );
            if !s.exit_message.is_empty() {
                m.push_str(&format!(" ({})", s.exit_message));
            }
            out.push(LogLine {
                at: rfc3339(Some(t)),
                message: m,
            });
        }
    }
    if let Some(t) = e.ended_at {
        let mut m = format!("execution {}", e.status);
        if !e.exit_message.is_empty() {
            m.push_str(&format!(": {}", e.exit_message));
        }
        out.push(LogLine {
            at: rfc3339(Some(t)),
            message: m,
        });
    }
    out
}

/// One execution with its steps, progress, skips and log.
#[utoipa::path(get, path = "/executions/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "The execution's id")),
    responses((status = 200, body = ExecutionPage), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn get_execution(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let repo = repository(&s).await?;
    let (e, steps) = repo.execution(id).await.map_err(repo_err)?;
    let mut skips = repo.skips(id).await.map_err(repo_err)?;
    skips.truncate(200);
    let total =
        s.rt.settings()
            .jobs
            .jobs
            .get(&e.job_name)
            .map_or(steps.len(), |j| j.steps.len());
    let page = ExecutionPage {
        progress: progress(&e, &steps, total),
        log: log_lines(&e, &steps),
        execution: ExecutionView::of(&e),
        steps: steps.iter().map(StepView::of).collect(),
        skips,
    };
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

/// What a stop or restart did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionDone {
    /// What it did, for people.
    pub message: String,
    /// The task enqueued (a restart).
    pub task: Option<String>,
}

/// Asks a running execution to stop at its next chunk boundary (operator).
#[utoipa::path(post, path = "/executions/{id}/stop", tag = "jobs",
    params(("id" = i64, Path, description = "The execution's id")),
    responses((status = 200, body = ActionDone), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn stop_execution(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<ActionDone>, ApiError> {
    let repo = repository(&s).await?;
    let (e, _) = repo.execution(id).await.map_err(repo_err)?;
    if !repo.request_stop(id).await.map_err(repo_err)? {
        return Err(ApiError::conflict(
            "not_running",
            format!("execution {id} is {}, not running", e.status),
        ));
    }
    s.audit(&who, "execution.stop", &id.to_string(), &e.job_name)
        .await;
    Ok(Json(ActionDone {
        message: format!("execution {id}: stop requested; it stops at its next chunk boundary"),
        task: None,
    }))
}

/// Restarts a failed or stopped execution from its last checkpoint: enqueues
/// a run of its instance (operator).
#[utoipa::path(post, path = "/executions/{id}/restart", tag = "jobs",
    params(("id" = i64, Path, description = "The execution's id")),
    responses((status = 202, body = ActionDone), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn restart_execution(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<ActionDone>), ApiError> {
    let repo = repository(&s).await?;
    let (e, _) = repo.execution(id).await.map_err(repo_err)?;
    if e.status == BatchStatus::Completed || e.status.is_running() {
        return Err(ApiError::conflict(
            "not_restartable",
            format!(
                "execution {id} is {}: only a FAILED, STOPPED or ABANDONED one restarts (run the job again with rerun for a COMPLETED one)",
                e.status
            ),
        ));
    }
    let input = JobRunInput {
        job: e.job_name.clone(),
        params: e.params.clone(),
        non_identifying: e.non_identifying.clone(),
        rerun: false,
    };
    let task = s.jobs()?.enqueue(input).await?;
    s.audit(
        &who,
        "execution.restart",
        &id.to_string(),
        &format!("task {task}"),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(ActionDone {
            message: format!("execution {id}: restart enqueued"),
            task: Some(task),
        }),
    ))
}

type TriggerState = (
    std::collections::HashMap<String, sluice_schedule::LastFire>,
    std::collections::HashMap<String, Option<i64>>,
);

async fn trigger_state(api: &crate::http::JobsApi) -> Result<TriggerState, ApiError> {
    let unavailable =
        |e: sluice_schedule::ClaimError| ApiError::unavailable("claims_unavailable", e.to_string());
    let last = api.claims().last_fires().await.map_err(unavailable)?;
    let pauses = api.claims().pauses().await.map_err(unavailable)?;
    Ok((last, pauses))
}

/// Filters of triggers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TriggerFilter {
    /// Only this job's.
    pub job: Option<String>,
    /// Only paused (`true`) or running (`false`) ones.
    pub paused: Option<bool>,
}

/// Triggers with their last and next fires and pauses.
#[utoipa::path(get, path = "/triggers", tag = "jobs", params(PageQuery, TriggerFilter),
    responses((status = 200, body = Page<TriggerView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn list_triggers(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(f): Query<TriggerFilter>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let (last, pauses) = trigger_state(s.jobs()?).await?;
    let settings = s.rt.settings();
    let all: Vec<(String, serde_json::Value)> =
        trigger_views(settings, &last, &pauses, chrono::Utc::now())
            .into_iter()
            .filter(|t| f.job.as_ref().is_none_or(|j| t.job == j))
            .filter(|t| f.paused.is_none_or(|p| t.paused == p))
            .map(|t| {
                (
                    t.id.to_owned(),
                    serde_json::to_value(&t).unwrap_or_default(),
                )
            })
            .collect();
    let mut all = all;
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let page = pq.page_sorted(all, |(id, _)| id.clone())?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|(_, v)| v).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A pause request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Resume by itself at this time (RFC 3339); without it, until resumed.
    pub until: Option<String>,
}

/// A trigger's pause state.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseState {
    /// The trigger.
    pub trigger: String,
    /// Whether it is paused.
    pub paused: bool,
    /// When a timed pause ends.
    pub until: Option<String>,
}

fn known_trigger(s: &ApiState, id: &str) -> Result<(), ApiError> {
    let settings = s.rt.settings();
    if settings.jobs.watches.iter().any(|w| w.trigger.id == id)
        || settings.jobs.changes.iter().any(|c| c.trigger.id() == id)
    {
        return Ok(());
    }
    settings
        .jobs
        .trigger(id)
        .map(drop)
        .map_err(|e| ApiError::not_found("no_trigger", e))
}

/// Pauses a trigger until resumed or until a time (operator). Write `#` as
/// `%23` and `/` as `%2F` in the id.
#[utoipa::path(post, path = "/triggers/{id}/pause", tag = "jobs", request_body = PauseRequest,
    params(("id" = String, Path, description = "The trigger's id, `JOB#N` or `JOB/NAME`")),
    responses((status = 200, body = PauseState), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn pause_trigger(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PauseState>, ApiError> {
    let req: PauseRequest = json_body(&body)?;
    known_trigger(&s, &id)?;
    let claims = s.jobs()?.claims();
    let unavailable =
        |e: sluice_schedule::ClaimError| ApiError::unavailable("claims_unavailable", e.to_string());
    let until = match req.until.as_deref() {
        None => {
            claims.set_paused(&id, true).await.map_err(unavailable)?;
            None
        }
        Some(t) => {
            let at = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    ApiError::bad_request(
                        "bad_until",
                        format!("until {t:?} is not an RFC 3339 time ({e}); write e.g. 2026-12-24T08:00:00Z"),
                    )
                })?
                .timestamp_millis();
            if at <= chrono::Utc::now().timestamp_millis() {
                return Err(ApiError::bad_request(
                    "bad_until",
                    format!("until {t:?} is in the past"),
                ));
            }
            claims.pause_until(&id, at).await.map_err(unavailable)?;
            rfc3339(Some(at))
        }
    };
    s.audit(
        &who,
        "trigger.pause",
        &id,
        until.as_deref().unwrap_or("until resumed"),
    )
    .await;
    Ok(Json(PauseState {
        trigger: id,
        paused: true,
        until,
    }))
}

/// Resumes a paused trigger (operator).
#[utoipa::path(post, path = "/triggers/{id}/resume", tag = "jobs",
    params(("id" = String, Path, description = "The trigger's id, `JOB#N` or `JOB/NAME`")),
    responses((status = 200, body = PauseState), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn resume_trigger(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    known_trigger(&s, &id)?;
    s.jobs()?
        .claims()
        .set_paused(&id, false)
        .await
        .map_err(|e| ApiError::unavailable("claims_unavailable", e.to_string()))?;
    s.audit(&who, "trigger.resume", &id, "").await;
    Ok(Json(PauseState {
        trigger: id,
        paused: false,
        until: None,
    }))
}

/// The jobs' part of the API.
pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(run_job))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(stop_execution))
        .routes(routes!(restart_execution))
        .routes(routes!(list_triggers))
        .routes(routes!(pause_trigger))
        .routes(routes!(resume_trigger))
}
