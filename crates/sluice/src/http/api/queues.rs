//! Queues, workers and tasks: depth by state and oldest age, live workers with
//! their heartbeat age, dead letters (list with filters; retry or delete one,
//! some or all matching a filter, with a count preview), a task's status, and
//! cancelling a waiting task.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use sluice_queue::{Broker, CancelOutcome, Envelope, QueueError, TaskId, TaskStatus};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiState, Page, PageQuery, Problem, auth};
use crate::http::ApiError;
use crate::views::rfc3339;

fn queue_err(e: QueueError) -> ApiError {
    ApiError::unavailable("queue_unavailable", e.to_string())
}

fn broker(s: &ApiState) -> Result<&Arc<dyn Broker>, ApiError> {
    Ok(s.jobs()?.broker())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A queue's depth.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Ready to lease now.
    pub ready: u64,
    /// Waiting for a not-before time (delays, retry backoff).
    pub delayed: u64,
    /// Leased by workers.
    pub running: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Whether workers lease from it.
    pub paused: bool,
    /// Seconds the longest-waiting ready task has been ready: how far behind
    /// the workers are.
    pub oldest_ready_age_seconds: Option<f64>,
    /// Seconds since the oldest dead task was enqueued (how long a failure
    /// has waited for someone).
    pub oldest_dead_age_seconds: Option<f64>,
    /// Live workers leasing from it.
    pub workers: usize,
}

async fn queue_view(
    b: &dyn Broker,
    name: &str,
    paused: &[String],
    workers: &[sluice_queue::LiveWorker],
) -> Result<QueueView, ApiError> {
    let st = b.stats(name).await.map_err(queue_err)?;
    let oldest = if st.dead > 0 {
        b.dead(name, 1)
            .await
            .map_err(queue_err)?
            .first()
            .map(|e| ((now_ms() - e.created_at).max(0) as f64) / 1000.0)
    } else {
        None
    };
    let oldest_ready = b
        .oldest_ready(name)
        .await
        .map_err(queue_err)?
        .map(|t| ((now_ms() - t).max(0) as f64) / 1000.0);
    Ok(QueueView {
        oldest_ready_age_seconds: oldest_ready,
        name: name.to_owned(),
        ready: st.ready,
        delayed: st.delayed,
        running: st.running,
        dead: st.dead,
        paused: paused.iter().any(|p| p == name),
        oldest_dead_age_seconds: oldest,
        workers: workers.iter().filter(|w| w.serves(name)).count(),
    })
}

/// The queues the broker knows and the configured ones.
async fn queue_names(s: &ApiState, b: &dyn Broker) -> Result<Vec<String>, ApiError> {
    let mut names = b.queues().await.map_err(queue_err)?;
    names.extend(s.rt.settings().queue.concurrency.keys().cloned());
    names.sort();
    names.dedup();
    Ok(names)
}

/// Every queue's depth.
pub async fn queue_views(s: &ApiState) -> Result<Vec<QueueView>, ApiError> {
    let b = broker(s)?;
    let paused = paused_queues(b.as_ref()).await?;
    let workers = b.workers().await.map_err(queue_err)?;
    let mut out = Vec::new();
    for n in queue_names(s, b.as_ref()).await? {
        out.push(queue_view(b.as_ref(), &n, &paused, &workers).await?);
    }
    Ok(out)
}

async fn paused_queues(b: &dyn Broker) -> Result<Vec<String>, ApiError> {
    b.paused_queues().await.map_err(queue_err)
}

/// Queues with their depth by state.
#[utoipa::path(get, path = "/queues", tag = "queues", params(PageQuery),
    responses((status = 200, body = Page<QueueView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn list_queues(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
) -> Result<Json<Page<QueueView>>, ApiError> {
    let all = queue_views(&s).await?;
    Ok(Json(pq.page_sorted(all, |q| q.name.clone())?))
}

/// One queue.
#[utoipa::path(get, path = "/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses((status = 200, body = QueueView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn get_queue(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    let b = broker(&s)?;
    known_queue(&s, b.as_ref(), &name).await?;
    let paused = paused_queues(b.as_ref()).await?;
    let workers = b.workers().await.map_err(queue_err)?;
    Ok(Json(
        queue_view(b.as_ref(), &name, &paused, &workers).await?,
    ))
}

async fn known_queue(s: &ApiState, b: &dyn Broker, name: &str) -> Result<(), ApiError> {
    if queue_names(s, b).await?.iter().any(|q| q == name) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "no_queue",
            format!("no queue named {name:?}"),
        ))
    }
}

/// A queue's pause state.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePaused {
    /// The queue.
    pub queue: String,
    /// Whether workers lease from it.
    pub paused: bool,
}

async fn set_queue_paused(
    s: &ApiState,
    who: &super::Principal,
    name: String,
    paused: bool,
) -> Result<Json<QueuePaused>, ApiError> {
    let b = broker(s)?;
    known_queue(s, b.as_ref(), &name).await?;
    b.set_queue_paused(&name, paused).await.map_err(queue_err)?;
    let action = if paused {
        "queue.pause"
    } else {
        "queue.resume"
    };
    s.audit(who, action, &name, "").await;
    Ok(Json(QueuePaused {
        queue: name,
        paused,
    }))
}

/// Pauses a queue: no worker on any node leases its tasks until resumed;
/// tasks in flight finish (operator).
#[utoipa::path(post, path = "/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses((status = 200, body = QueuePaused), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn pause_queue(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<QueuePaused>, ApiError> {
    set_queue_paused(&s, &who, name, true).await
}

/// Resumes a paused queue (operator).
#[utoipa::path(post, path = "/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses((status = 200, body = QueuePaused), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn resume_queue(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<QueuePaused>, ApiError> {
    set_queue_paused(&s, &who, name, false).await
}

/// A task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    /// Its id.
    pub id: String,
    /// Its handler, e.g. `job.run`.
    pub name: String,
    /// The queue.
    pub queue: String,
    /// Its input.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// 0..=9, higher first.
    pub priority: u8,
    /// Attempts made.
    pub attempt: u32,
    /// Attempts before it goes to the dead-letter queue.
    pub max_attempts: u32,
    /// When it was enqueued.
    pub created_at: Option<String>,
    /// Not leased before.
    pub not_before: Option<String>,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

impl TaskView {
    fn of(e: &Envelope) -> Self {
        Self {
            id: e.id.to_string(),
            name: e.name.clone(),
            queue: e.queue.clone(),
            payload: e.payload.clone(),
            priority: e.priority,
            attempt: e.attempt,
            max_attempts: e.max_attempts,
            created_at: rfc3339(Some(e.created_at)),
            not_before: rfc3339(Some(e.not_before)),
            last_error: e.last_error.clone(),
        }
    }
}

/// Which dead tasks: by handler and error text.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    /// Only tasks of this handler, e.g. `job.run`.
    pub task: Option<String>,
    /// Only those whose last error contains this.
    pub error: Option<String>,
}

impl DeadFilter {
    fn matches(&self, e: &Envelope) -> bool {
        self.task.as_ref().is_none_or(|t| &e.name == t)
            && self.error.as_ref().is_none_or(|x| {
                e.last_error
                    .as_deref()
                    .is_some_and(|l| l.contains(x.as_str()))
            })
    }
}

/// The most dead tasks a list or a bulk action looks at.
const DEAD_SCAN: usize = 10_000;

async fn dead_matching(
    b: &dyn Broker,
    queue: &str,
    f: &DeadFilter,
) -> Result<Vec<Envelope>, ApiError> {
    let mut all = b.dead(queue, DEAD_SCAN).await.map_err(queue_err)?;
    all.retain(|e| f.matches(e));
    all.sort_by_key(|e| e.id.to_string());
    Ok(all)
}

/// A queue's dead letters, oldest id first, filtered.
#[utoipa::path(get, path = "/queues/{name}/dead", tag = "queues", params(("name" = String, Path, description = "The queue's name"), PageQuery, DeadFilter),
    responses((status = 200, body = Page<TaskView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn list_dead(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(pq): Query<PageQuery>,
    Query(f): Query<DeadFilter>,
) -> Result<Json<Page<TaskView>>, ApiError> {
    let b = broker(&s)?;
    known_queue(&s, b.as_ref(), &name).await?;
    let all: Vec<TaskView> = dead_matching(b.as_ref(), &name, &f)
        .await?
        .iter()
        .map(TaskView::of)
        .collect();
    Ok(Json(pq.page_sorted(all, |t| t.id.clone())?))
}

/// A bulk action on dead tasks: these ids, or every one matching the filter.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadAction {
    /// These tasks (else every one matching `filter`).
    pub ids: Option<Vec<String>>,
    /// Which tasks, when `ids` is not given; an empty filter matches all.
    #[serde(default)]
    pub filter: DeadFilter,
    /// Only count what would be affected (the preview); change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a bulk action did or would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadActionDone {
    /// Tasks matched.
    pub matched: u64,
    /// Tasks retried or deleted (0 on a dry run).
    pub affected: u64,
    /// Whether it was only a preview.
    pub dry_run: bool,
}

fn parse_ids(ids: &[String]) -> Result<Vec<TaskId>, ApiError> {
    ids.iter()
        .map(|i| {
            i.parse::<TaskId>().map_err(|_| {
                ApiError::bad_request("bad_task_id", format!("{i:?} is not a task id (a UUID)"))
            })
        })
        .collect()
}

async fn dead_targets(
    s: &ApiState,
    name: &str,
    body: &[u8],
) -> Result<(DeadAction, Vec<TaskId>), ApiError> {
    let b = broker(s)?;
    known_queue(s, b.as_ref(), name).await?;
    let req: DeadAction = if body.iter().all(u8::is_ascii_whitespace) {
        DeadAction::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "bad_json",
                format!("invalid body: {e}; send {{\"ids\": [...]}} or {{\"filter\": {{\"task\": …, \"error\": …}}, \"dry_run\": true}}"),
            )
        })?
    };
    let dead = dead_matching(b.as_ref(), name, &req.filter).await?;
    let ids = match &req.ids {
        Some(ids) => {
            let want = parse_ids(ids)?;
            want.into_iter()
                .filter(|id| dead.iter().any(|e| e.id == *id))
                .collect()
        }
        None => dead.iter().map(|e| e.id).collect(),
    };
    Ok((req, ids))
}

/// Retries dead tasks: these ids or all matching a filter; `dry_run` counts
/// them (operator).
#[utoipa::path(post, path = "/queues/{name}/dead/retry", tag = "queues", request_body = DeadAction,
    params(("name" = String, Path, description = "The queue's name")),
    responses((status = 200, body = DeadActionDone), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn retry_dead(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DeadActionDone>, ApiError> {
    let (req, ids) = dead_targets(&s, &name, &body).await?;
    let matched = ids.len() as u64;
    let affected = if req.dry_run || ids.is_empty() {
        0
    } else {
        let n = broker(&s)?
            .retry_dead(&name, Some(&ids))
            .await
            .map_err(queue_err)?;
        s.audit(&who, "dead.retry", &name, &format!("{n} tasks"))
            .await;
        n
    };
    Ok(Json(DeadActionDone {
        matched,
        affected,
        dry_run: req.dry_run,
    }))
}

/// Deletes dead tasks: these ids or all matching a filter; `dry_run` counts
/// them (admin).
#[utoipa::path(post, path = "/queues/{name}/dead/delete", tag = "queues", request_body = DeadAction,
    params(("name" = String, Path, description = "The queue's name")),
    responses((status = 200, body = DeadActionDone), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_dead(
    auth::Admin(who): auth::Admin,
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DeadActionDone>, ApiError> {
    let (req, ids) = dead_targets(&s, &name, &body).await?;
    let matched = ids.len() as u64;
    let affected = if req.dry_run || ids.is_empty() {
        0
    } else {
        let n = broker(&s)?
            .delete_dead(&name, &ids)
            .await
            .map_err(queue_err)?;
        s.audit(&who, "dead.delete", &name, &format!("{n} tasks"))
            .await;
        n
    };
    Ok(Json(DeadActionDone {
        matched,
        affected,
        dry_run: req.dry_run,
    }))
}

/// A live worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    /// Its node id, `{hostname}-{pid}`.
    pub node: String,
    /// The queues it leases from.
    pub queues: Vec<String>,
    /// When it started.
    pub started_at: Option<String>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: f64,
    /// When it counts as gone without another heartbeat.
    pub expires_at: Option<String>,
}

/// Workers alive on every node, with their heartbeat age.
pub async fn worker_views(s: &ApiState) -> Result<Vec<WorkerView>, ApiError> {
    let now = now_ms();
    Ok(broker(s)?
        .workers()
        .await
        .map_err(queue_err)?
        .into_iter()
        .map(|w| WorkerView {
            heartbeat_age_seconds: ((now - w.seen_at).max(0) as f64) / 1000.0,
            started_at: rfc3339(Some(w.started_at)),
            expires_at: rfc3339(Some(w.expires_at)),
            node: w.node,
            queues: w.queues,
        })
        .collect())
}

/// Live workers.
#[utoipa::path(get, path = "/workers", tag = "queues", params(PageQuery),
    responses((status = 200, body = Page<WorkerView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn list_workers(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
) -> Result<Json<Page<WorkerView>>, ApiError> {
    let mut all = worker_views(&s).await?;
    all.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Json(pq.page_sorted(all, |w| w.node.clone())?))
}

/// A task's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskStatusView {
    /// The task.
    pub task: TaskView,
    /// `ready`, `delayed`, `running`, `completed` or `dead`.
    pub state: String,
    /// Its result, when completed with a kept result.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// When it completed or died.
    pub finished_at: Option<String>,
    /// Times it was handed out again after a lost lease.
    pub redelivered: u32,
}

impl TaskStatusView {
    fn of(t: TaskStatus) -> Self {
        Self {
            task: TaskView::of(&t.task),
            state: serde_json::to_value(t.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            result: t.result,
            finished_at: rfc3339(t.finished_at),
            redelivered: t.redelivered,
        }
    }
}

fn task_id(id: &str) -> Result<TaskId, ApiError> {
    parse_ids(&[id.to_owned()]).map(|v| v[0])
}

/// A task's status.
#[utoipa::path(get, path = "/queues/{name}/tasks/{id}", tag = "queues",
    params(("name" = String, Path, description = "The queue's name"), ("id" = String, Path, description = "The task's id")),
    responses((status = 200, body = TaskStatusView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn get_task(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<TaskStatusView>, ApiError> {
    let id = task_id(&id)?;
    broker(&s)?
        .status(&name, id)
        .await
        .map_err(queue_err)?
        .map(|t| Json(TaskStatusView::of(t)))
        .ok_or_else(|| ApiError::not_found("no_task", format!("no task {id} on queue {name:?}")))
}

/// Cancels a waiting (ready or delayed) task (operator); a running one is left
/// running (409).
#[utoipa::path(post, path = "/queues/{name}/tasks/{id}/cancel", tag = "queues",
    params(("name" = String, Path, description = "The queue's name"), ("id" = String, Path, description = "The task's id")),
    responses((status = 200, body = super::jobs::ActionDone), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn cancel_task(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = task_id(&id)?;
    match broker(&s)?.cancel(&name, id).await.map_err(queue_err)? {
        CancelOutcome::Cancelled => {
            s.audit(&who, "task.cancel", &format!("{name}/{id}"), "")
                .await;
            Ok(Json(
                serde_json::json!({"message": format!("task {id} cancelled"), "task": id.to_string()}),
            ))
        }
        CancelOutcome::Running => Err(ApiError::conflict(
            "running",
            format!("task {id} is running; stop its execution instead"),
        )),
        CancelOutcome::Finished(st) => Err(ApiError::conflict(
            "finished",
            format!("task {id} already finished ({st:?})"),
        )),
        _ => Err(ApiError::not_found(
            "no_task",
            format!("no task {id} on queue {name:?}"),
        )),
    }
}

/// The queues' part of the API.
pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(get_queue))
        .routes(routes!(pause_queue))
        .routes(routes!(resume_queue))
        .routes(routes!(list_dead))
        .routes(routes!(retry_dead))
        .routes(routes!(delete_dead))
        .routes(routes!(list_workers))
        .routes(routes!(get_task))
        .routes(routes!(cancel_task))
}
