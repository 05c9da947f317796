//! The REST API under `/api/v1`: JSON, bearer tokens with roles ([`auth`]),
//! RFC 9457 problems ([`ApiError`]), cursor pagination and server-side filters
//! on every list ([`page`]), and an OpenAPI 3.1 document generated from the
//! handlers at `/api/v1/openapi.json`.
//!
//! Every state-changing call is recorded in the audit log
//! ([`crate::ops::OpsStore`]) with the token's name. The dashboard (`/ui`) reads
//! the same functions.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::middleware;
use serde::{Deserialize, Serialize};
use sluice_gateway::Gateway;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, JobsApi};
use crate::ops::AuditEntry;
use crate::runtime::Runtime;

pub mod auth;
pub mod gateway;
pub mod jobs;
pub mod overview;
pub mod page;
pub mod queues;

pub use auth::{Principal, Tokens};
pub use page::{Page, PageQuery};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The gateway: routes, upstreams, the cache.
    pub gateway: Gateway,
    /// The process's runtime (settings, repository, ops store).
    pub rt: Arc<Runtime>,
    /// The job backends (broker, claims) on a node with jobs.
    pub jobs: Option<Arc<JobsApi>>,
    /// The tokens.
    pub tokens: Tokens,
    /// The request rates the sampler measures.
    pub rates: Arc<overview::Rates>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("jobs", &self.jobs.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API's state on a node with `rt` (and, when it runs jobs, their
    /// backends `jobs`).
    pub fn new(gateway: Gateway, rt: Arc<Runtime>, jobs: Option<Arc<JobsApi>>) -> Self {
        let s = rt.settings();
        Self {
            tokens: Tokens::new(s.tokens.clone(), s.session_ttl),
            gateway,
            rt,
            jobs,
            rates: overview::rates(),
        }
    }

    /// The job backends, or `404 no_jobs` on a node without jobs.
    ///
    /// # Errors
    ///
    /// `404 no_jobs`.
    pub fn jobs(&self) -> Result<&JobsApi, ApiError> {
        self.jobs.as_deref().ok_or_else(|| {
            ApiError::not_found(
                "no_jobs",
                "this node runs no jobs ([[job]] in the config): no executions, triggers or queues",
            )
        })
    }

    /// Records `action` on `target` by `who` in the audit log. A failure to
    /// record is logged, not returned: the action itself has happened.
    pub async fn audit(&self, who: &Principal, action: &str, target: &str, detail: &str) {
        let r = match self.rt.ops().await {
            Ok(ops) => {
                ops.audit(&who.name, who.role.as_str(), action, target, detail)
                    .await
            }
            Err(e) => Err(e),
        };
        tracing::info!(actor = %who.name, role = who.role.as_str(), action, target, detail, "audit");
        if let Err(e) = r {
            tracing::warn!(error = %e, action, "cannot record the action in the audit log");
        }
    }
}

/// The holder of the token the request was made with.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
}

/// Who the caller is.
#[utoipa::path(get, path = "/whoami", tag = "meta",
    responses((status = 200, body = WhoAmI), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn whoami(auth::Viewer(p): auth::Viewer) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: p.name,
        role: p.role.as_str().into(),
    })
}

/// An RFC 9457 problem document, as every error answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:sluice:problem:CODE`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
    /// The stable code.
    pub error: String,
    /// The same as `detail`.
    pub message: String,
}

/// Filters of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this token's actions.
    pub actor: Option<String>,
    /// Only actions starting with this, e.g. `job.` or `dead.retry`.
    pub action: Option<String>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/audit", tag = "meta", params(PageQuery, AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn audit_log(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = pq.limit()?;
    let before = pq.cursor_i64()?;
    let ops =
        s.rt.ops()
            .await
            .map_err(|e| ApiError::unavailable("repository_unavailable", e))?;
    let items = ops
        .audit_log(before, q.actor.as_deref(), q.action.as_deref(), limit + 1)
        .await
        .map_err(|e| ApiError::unavailable("repository_unavailable", e))?;
    Ok(Json(Page::by_key(items, limit, |e| e.id.to_string())))
}

/// The chart series' samples.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// The series, e.g. `requests_per_second`, `hit_ratio`,
    /// `quota_remaining:UPSTREAM`, `queue_depth:QUEUE`.
    pub name: String,
    /// `[unix_ms, value]` pairs, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// Which series to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// The series' name; without it, every series' name is listed with no
    /// points.
    pub name: Option<String>,
    /// How far back, e.g. `1h` (default), `24h`, `7d`.
    pub window: Option<String>,
}

/// Sampled series for the dashboard's charts, kept in the repository.
#[utoipa::path(get, path = "/series", tag = "meta", params(SeriesQuery),
    responses((status = 200, body = Vec<Series>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn series(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Vec<Series>>, ApiError> {
    let window = match q.window.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(w) => crate::config::parse_duration(w).map_err(|e| {
            ApiError::bad_request(
                "bad_window",
                format!("window {w:?}: {e}; write e.g. 1h or 7d"),
            )
        })?,
    };
    let ops =
        s.rt.ops()
            .await
            .map_err(|e| ApiError::unavailable("repository_unavailable", e))?;
    let unavailable = |e| ApiError::unavailable("repository_unavailable", e);
    let Some(name) = q.name else {
        let names = ops.series_names().await.map_err(unavailable)?;
        return Ok(Json(
            names
                .into_iter()
                .map(|name| Series {
                    name,
                    points: Vec::new(),
                })
                .collect(),
        ));
    };
    let since = chrono::Utc::now().timestamp_millis() - window.as_millis() as i64;
    let points = ops.series(&name, since).await.map_err(unavailable)?;
    Ok(Json(vec![Series { name, points }]))
}

/// An alert.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Alert)]
pub struct AlertSchema {
    /// Its id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// Hash of its labels.
    pub fingerprint: String,
    /// Its labels.
    pub labels: std::collections::HashMap<String, String>,
    /// `summary` and `description`.
    pub annotations: std::collections::HashMap<String, String>,
    /// Its severity.
    pub severity: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// When it fired (Unix ms).
    pub starts_at: i64,
    /// When it resolved (Unix ms).
    pub ends_at: Option<i64>,
    /// When a node last evaluated it (Unix ms).
    pub last_eval: i64,
}

/// Which alerts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Also the 100 most recently resolved ones.
    pub all: Option<bool>,
    /// Only this rule's.
    pub rule: Option<String>,
}

/// Firing alerts, oldest first (with `all`, then the recently resolved,
/// newest first).
#[utoipa::path(get, path = "/alerts", tag = "meta", params(PageQuery, AlertQuery),
    responses((status = 200, body = Page<AlertSchema>), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn list_alerts(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(q): Query<AlertQuery>,
) -> Result<Json<Page<crate::alerts::AlertRecord>>, ApiError> {
    let unavailable = |e| ApiError::unavailable("repository_unavailable", e);
    let mut all = crate::alerts::active(&s.rt).await.map_err(unavailable)?;
    if q.all == Some(true) {
        all.extend(
            crate::alerts::recent(&s.rt, 100)
                .await
                .map_err(unavailable)?,
        );
    }
    all.retain(|a| q.rule.as_ref().is_none_or(|r| &a.rule == r));
    Ok(Json(pq.page_in_order(all)?))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every operation can answer `400` (a path, query or body it cannot read)
/// and `401`: both are added where a handler does not list them.
pub(crate) fn document_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for item in openapi.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            for (code, what) in [
                ("400", "The path, query or body cannot be read"),
                ("401", "No valid token or session"),
            ] {
                op.responses
                    .responses
                    .entry(code.into())
                    .or_insert_with(|| problem(what).into());
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sluice", description = "The REST API of sluice: the gateway's upstreams, routes and cache; jobs, executions, triggers, queues and tasks."),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The API's router (paths relative to `/api/v1`) and its OpenAPI document.
pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let tokens = state.tokens.clone();
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(whoami))
        .routes(routes!(overview::get_overview))
        .routes(routes!(audit_log))
        .routes(routes!(series))
        .routes(routes!(list_alerts))
        .merge(gateway::router())
        .merge(jobs::router())
        .merge(queues::router())
        .with_state(state)
        .split_for_parts();
    let mut doc = doc;
    document_common_errors(&mut doc);
    let router = router
        .route_layer(middleware::from_fn_with_state(tokens, auth::authenticate))
        .layer(middleware::from_fn(problems));
    (router, doc)
}

/// Turns every error answer that is not a problem document yet (axum's
/// rejections of a bad path, query or body, an unknown method) into one, so
/// that every error of the API has the one shape its document promises.
async fn problems(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "no_route",
        405 => "method_not_allowed",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "bad_request",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// The `/api/v1` router with its OpenAPI document served (without a token) at
/// `/api/v1/openapi.json`.
pub fn service(state: ApiState) -> axum::Router {
    let (router, doc) = router(state);
    let doc = Arc::new(doc);
    let json = axum::Router::new().route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        }),
    );
    let unknown = || async {
        ApiError::not_found(
            "no_route",
            "no such API resource; GET /api/v1/openapi.json lists them",
        )
    };
    axum::Router::new().nest("/api/v1", router.merge(json).fallback(unknown))
}
