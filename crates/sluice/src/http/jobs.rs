//! The job API: `POST /api/jobs/{name}/trigger` starts a run,
//! `POST /api/schedule/{id}/pause|resume` pauses and resumes a trigger. Behind
//! the admin token (see [`super::app`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use sluice_queue::Broker;
use sluice_schedule::ClaimStore;

use super::ApiError;
use crate::config::JOBS_QUEUE;
use crate::runtime::Runtime;
use crate::runtime::job_task::{JobRunInput, job_run_task};
use crate::runtime::params::{self, Origin};

/// What the job API handlers need: the runtime, with its broker and claim store
/// connected.
pub struct JobsApi {
    rt: Arc<Runtime>,
    broker: Arc<dyn Broker>,
    store: Arc<dyn ClaimStore>,
}

impl JobsApi {
    /// Connects the broker and the claim store of `rt`.
    ///
    /// # Errors
    ///
    /// When either cannot be reached.
    pub async fn new(rt: Arc<Runtime>) -> Result<Self, String> {
        let broker = rt.broker().await?;
        let store = rt.claims().await?;
        Ok(Self { rt, broker, store })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// The task broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The trigger claim store.
    pub fn claims(&self) -> &Arc<dyn ClaimStore> {
        &self.store
    }

    /// Enqueues a run of job `name` with the `extra` parameters (over the
    /// job's defaults); its task's id.
    ///
    /// # Errors
    ///
    /// `404 no_job`, `400 bad_job` for parameters the job does not take,
    /// `503` when the queue does not answer.
    pub async fn enqueue_run(
        &self,
        name: &str,
        extra: &BTreeMap<String, String>,
        rerun: bool,
    ) -> Result<String, ApiError> {
        let settings = self.rt.settings();
        if !settings.jobs.jobs.contains_key(name) {
            return Err(ApiError::not_found(
                "no_job",
                format!("no job named {name:?}"),
            ));
        }
        let run = params::resolve(settings, name, Origin::Manual(extra))
            .map_err(|e| ApiError::bad_request("bad_job", e))?;
        self.enqueue(JobRunInput::new(name.to_owned(), run, rerun))
            .await
    }

    /// Enqueues the `job.run` task of `input`; its task's id.
    ///
    /// # Errors
    ///
    /// `400 bad_job` when the job cannot be built, `503` when the queue does
    /// not answer.
    pub async fn enqueue(&self, input: JobRunInput) -> Result<String, ApiError> {
        self.rt
            .job(&input.job, &input.params)
            .map_err(|e| ApiError::bad_request("bad_job", e))?;
        let e = self
            .broker
            .enqueue(job_run_task(&input))
            .await
            .map_err(|e| ApiError::unavailable("queue_unavailable", e.to_string()))?;
        Ok(e.id.to_string())
    }
}

/// The `params` of a trigger request's body: none for an empty body or one
/// without `params`.
pub(crate) fn body_params(body: &Bytes) -> Result<BTreeMap<String, String>, ApiError> {
    if body.is_empty() {
        return Ok(BTreeMap::new());
    }
    let v = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("body is not JSON: {e}")))?;
    match v.get("params") {
        None => Ok(BTreeMap::new()),
        Some(p) => serde_json::from_value(p.clone()).map_err(|e| {
            ApiError::bad_request(
                "bad_params",
                format!("\"params\" must be an object of strings: {e}"),
            )
        }),
    }
}

/// `POST /api/jobs/{name}/trigger` with `{"params": {…}}` (optional): enqueues a
/// run; `202 {"task": ID}`.
async fn trigger_job(
    State(api): State<Arc<JobsApi>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let extra = body_params(&body)?;
    let task = api.enqueue_run(&name, &extra, false).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"task": task, "queue": JOBS_QUEUE})),
    )
        .into_response())
}

/// `POST /api/schedule/{job}/{name}/pause` (a named trigger, `JOB/NAME`).
async fn pause_named_trigger(
    state: State<Arc<JobsApi>>,
    Path((job, name, action)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    pause_trigger(state, Path((format!("{job}/{name}"), action))).await
}

/// `POST /api/schedule/{id}/pause` (an unnamed trigger, `JOB#N`, with `#`
/// written `%23`).
async fn pause_trigger(
    State(api): State<Arc<JobsApi>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(ApiError::not_found("no_route", "use pause or resume")),
    };
    api.rt
        .settings()
        .jobs
        .trigger(&id)
        .map_err(|e| ApiError::not_found("no_trigger", e))?;
    api.store
        .set_paused(&id, paused)
        .await
        .map_err(|e| ApiError::unavailable("store_unavailable", e.to_string()))?;
    Ok(Json(json!({"trigger": id, "paused": paused})).into_response())
}

/// The job and schedule API routes (the caller adds the admin-token check).
pub fn router(api: Arc<JobsApi>) -> Router {
    Router::new()
        .route("/api/jobs/{name}/trigger", post(trigger_job))
        .route("/api/schedule/{id}/{action}", post(pause_trigger))
        .route(
            "/api/schedule/{job}/{name}/{action}",
            post(pause_named_trigger),
        )
        .with_state(api)
}
