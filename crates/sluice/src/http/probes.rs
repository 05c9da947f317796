//! The probes: `/healthz` (is the process alive), `/readyz` (should a load
//! balancer send traffic) and `/metrics` (Prometheus text). No token: they reveal
//! no data.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::AppState;
use crate::telemetry;

/// How long one component's check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Each component's state: `{"store": {"status": "ok", "kind": "redis"},
/// "broker": {"status": "down", "error": "…"}, …}`; the queue broker, the job
/// repository and the trigger claims only on a node that runs jobs. Checked
/// concurrently, each within [`CHECK_TIMEOUT`].
async fn components(s: &AppState) -> Map<String, Value> {
    let mut out = Map::new();
    let store = match s.gateway.degraded() {
        None => json!({"status": "ok", "kind": s.gateway.store().kind()}),
        Some(reason) => {
            json!({"status": "down", "kind": s.gateway.store().kind(), "error": reason})
        }
    };
    out.insert("store".into(), store);
    let Some(rt) = &s.runtime else {
        return out;
    };
    let broker = check(async {
        let b = rt.broker().await?;
        b.queues().await.map(|_| ()).map_err(|e| e.to_string())
    });
    let repository = check(async {
        let r = rt.repository().await?;
        r.executions(None, 1)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let claims = check(async {
        let c = rt.claims().await?;
        c.paused().await.map(|_| ()).map_err(|e| e.to_string())
    });
    let (broker, repository, claims) = tokio::join!(broker, repository, claims);
    out.insert("broker".into(), broker);
    out.insert("repository".into(), repository);
    out.insert("claims".into(), claims);
    out
}

/// `{"status": "ok"}`, or `{"status": "down", "error": …}` when `f` fails or
/// takes longer than [`CHECK_TIMEOUT`].
async fn check(f: impl Future<Output = Result<(), String>>) -> Value {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => json!({"status": "ok"}),
        Ok(Err(e)) => json!({"status": "down", "error": e}),
        Err(_) => json!({"status": "down", "error": format!("no answer within {CHECK_TIMEOUT:?}")}),
    }
}

/// The components that are down, as `name: error` (empty when all are up).
fn down(components: &Map<String, Value>) -> Vec<String> {
    components
        .iter()
        .filter(|(_, c)| c["status"] != "ok")
        .map(|(name, c)| format!("{name}: {}", c["error"].as_str().unwrap_or("down")))
        .collect()
}

/// `200 {"status":"ready","components":{…}}` while serving and every component
/// is up; `200 {"status":"degraded",…}` while one is down (the node still
/// serves: from L1, the upstream, local coalescing; jobs wait); `503
/// {"status":"draining",…}` once shutdown has begun.
pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    let components = components(&s).await;
    if s.readiness.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "components": components})),
        )
            .into_response();
    }
    let status = if down(&components).is_empty() {
        "ready"
    } else {
        "degraded"
    };
    Json(json!({"status": status, "components": components})).into_response()
}

/// The process is alive: always `200`. `{"status":"ok"}`, or
/// `{"status":"degraded","reason":…}` naming what is down (a shared store, the
/// queue broker, the repository, the claims): the node still serves, so a load
/// balancer must keep sending it traffic.
pub(super) async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let components = components(&s).await;
    let down = down(&components);
    if down.is_empty() {
        Json(json!({"status": "ok", "components": components}))
    } else {
        Json(json!({"status": "degraded", "reason": down.join("; "), "components": components}))
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
