//! The endpoints sluice serves itself, beside the gateway's routes: probes
//! (`/healthz`, `/readyz`, `/metrics`), the admin API (`/admin/*`) and the job
//! API (`/api/jobs`, `/api/schedule`), both behind the admin token.
//!
//! Every handler here answers its errors as [`ApiError`] (one JSON shape); the
//! gateway answers for every other path. The server around this router (accept
//! loop, connection limits, shutdown) is [`crate::serve`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sluice_core::Secret;
use sluice_gateway::Gateway;

pub mod admin;
pub mod api;
mod error;
pub mod jobs;
mod probes;

pub use error::ApiError;
pub use jobs::JobsApi;

#[derive(Clone)]
struct AppState {
    gateway: Gateway,
    token: Option<Secret>,
    readiness: Readiness,
    /// The last state of the job runtime's backends (queue broker, repository,
    /// claims) on a node that runs jobs: the probes report each of them.
    backends: Option<probes::Backends>,
}

/// Whether the server still takes traffic: `GET /readyz` answers from it.
///
/// Clones share one flag. [`crate::serve::serve_until`] sets it when shutdown
/// begins.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A server that is ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Marks the server as draining: `/readyz` answers 503 from now on.
    pub fn begin_draining(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Builds the application router: the probes, the admin API when `admin_token`
/// is set, the job API when `jobs` is given (behind the same token), and the
/// gateway for every other path. `readiness` is what `/readyz` reports; pass the
/// same handle to [`crate::serve::serve_until`]. `runtime` (a node that runs
/// jobs) adds its queue broker, repository and claims to what the probes check.
/// `api` (a node with API tokens) adds the REST API under `/api/v1`.
pub fn app(
    gateway: Gateway,
    admin_token: Option<Secret>,
    readiness: Readiness,
    jobs: Option<Arc<JobsApi>>,
    runtime: Option<Arc<crate::runtime::Runtime>>,
    api: Option<api::ApiState>,
) -> Router {
    let state = AppState {
        gateway: gateway.clone(),
        token: admin_token.clone(),
        readiness,
        backends: runtime.map(probes::Backends::watch),
    };
    let mut router = Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics_page));
    if admin_token.is_some() {
        let admin = Router::new()
            .route("/admin/purge", post(admin::purge))
            .route("/admin/cache/stats", get(admin::stats))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        router = router.merge(admin);
    }
    let gw = gateway;
    let mut app = router
        .fallback(move |req: Request| {
            let gw = gw.clone();
            // The gateway refuses reserved paths itself (see `route::is_reserved`).
            async move { gw.handle(req).await }
        })
        .with_state(state.clone());
    if let Some(api) = jobs.filter(|_| state.token.is_some()) {
        app = app.merge(
            jobs::router(api).route_layer(middleware::from_fn_with_state(state, require_token)),
        );
    }
    if let Some(api) = api.filter(|a| !a.tokens.is_empty()) {
        app = app.merge(api::service(api));
    }
    app
}

async fn require_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &s.token else {
        return ApiError::not_found("no_route", "the admin API is disabled").into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        let mut r = ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid 'Authorization: Bearer <admin_token>' header is required",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
