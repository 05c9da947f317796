//! The probes: `/healthz` (is the process alive), `/readyz` (should a load
//! balancer send traffic) and `/metrics` (Prometheus text). No token: they reveal
//! no data.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::telemetry;

/// `200 {"status":"ready"}` while serving; `503 {"status":"draining"}` once
pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    if s.readiness.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ready"})).into_response()
    }
}

/// `200 {"status":"ok"}`, or `200 {"status":"degraded","reason":…}` while a
/// shared backend is away: the node still serves (from L1, the upstream, local
/// coalescing and rate limits), so a load balancer must keep sending it traffic.
pub(super) async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.gateway.degraded() {
        None => Json(json!({"status": "ok"})),
        Some(reason) => Json(json!({"status": "degraded", "reason": reason})),
    }
}

pub(super) async fn metrics_page(State(s): State<AppState>) -> Response {
    if let Err(e) = s.gateway.stats().await {
        tracing::warn!(error = %e, "store stats unavailable for /metrics");
    }
    let body = telemetry::prometheus().render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
