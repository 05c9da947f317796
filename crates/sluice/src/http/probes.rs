//! The probes: `/healthz` (is the process alive), `/readyz` (should a load
//! balancer send traffic) and `/metrics` (Prometheus text). No token: they reveal
//! no data.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::runtime::Runtime;
use crate::telemetry;

/// How long one component's check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the backends of a node that runs jobs are checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The last state of a job node's backends (queue broker, job repository,
/// trigger claims), kept by one background task: the probes read it and do no
/// I/O, so a load balancer's probe never waits on a backend that is away.
#[derive(Clone)]
pub(super) struct Backends(Arc<RwLock<Map<String, Value>>>);

impl Backends {
    /// Starts checking `rt`'s backends every [`CHECK_EVERY`], concurrently,
    /// each within [`CHECK_TIMEOUT`]; until the first round ends each is
    /// `unknown`. The task ends with the process.
    pub(super) fn watch(rt: Arc<Runtime>) -> Self {
        let unknown = json!({"status": "unknown"});
        let first = ["broker", "repository", "claims"]
            .into_iter()
            .map(|c| (c.to_owned(), unknown.clone()))
            .collect();
        let state = Arc::new(RwLock::new(first));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let now = check_backends(&rt).await;
                if let Ok(mut s) = shared.write() {
                    *s = now;
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        });
        Self(state)
    }

    fn latest(&self) -> Map<String, Value> {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One round of checks of `rt`'s queue broker, repository and claims.
async fn check_backends(rt: &Runtime) -> Map<String, Value> {
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
    [
        ("broker", broker),
        ("repository", repository),
        ("claims", claims),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Each component's state: `{"store": {"status": "ok", "kind": "redis"},
/// "broker": {"status": "down", "error": "…"}, …}`: the store as the gateway
/// sees it now, and, on a node that runs jobs, the last round of [`Backends`].
fn components(s: &AppState) -> Map<String, Value> {
    let kind = s.gateway.store().kind();
    let store = match s.gateway.degraded() {
        None => json!({"status": "ok", "kind": kind}),
        Some(reason) => json!({"status": "down", "kind": kind, "error": reason}),
    };
    let mut out = Map::new();
    out.insert("store".into(), store);
    if let Some(b) = &s.backends {
        out.extend(b.latest());
    }
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

/// The components that are not ok (down, or not checked yet), as `name: error`
/// (empty when all are up).
fn down(components: &Map<String, Value>) -> Vec<String> {
    components
        .iter()
        .filter(|(_, c)| c["status"] != "ok")
        .map(|(name, c)| {
            let why = c["error"]
                .as_str()
                .or(c["status"].as_str())
                .unwrap_or("down");
            format!("{name}: {why}")
        })
        .collect()
}

/// `200 {"status":"ready","components":{…}}` while serving and every component
/// is up; `200 {"status":"degraded",…}` while one is down (the node still
/// serves: from L1, the upstream, local coalescing; jobs wait); `503
/// {"status":"draining",…}` once shutdown has begun.
pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    let components = components(&s);
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
    let components = components(&s);
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
