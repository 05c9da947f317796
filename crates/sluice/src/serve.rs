//! `sluice serve`: the HTTP server around the gateway, with the admin API,
//! `/metrics`, `/healthz` and graceful shutdown.
//!
//! Reserved paths (`/healthz`, `/metrics`, `/admin/…`) are matched before gateway
//! routes. The admin API exists only when `server.admin_token` is configured; without
//! it `/admin/…` falls through to the gateway, which answers 404.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sluice_gateway::{Gateway, Secret};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::telemetry;

#[derive(Clone)]
struct AppState {
    gateway: Gateway,
    token: Option<Secret>,
}

/// Builds the application router for `settings`.
pub fn app(gateway: Gateway, admin_token: Option<Secret>) -> Router {
    let state = AppState {
        gateway: gateway.clone(),
        token: admin_token.clone(),
    };
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page));
    if admin_token.is_some() {
        let admin = Router::new()
            .route("/admin/purge", post(purge))
            .route("/admin/cache/stats", get(stats))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        router = router.merge(admin);
    }
    let gw = gateway;
    router
        .fallback(move |req: Request| {
            let gw = gw.clone();
            async move { gw.handle(req).await }
        })
        .with_state(state)
}

/// `200 {"status":"ok"}`, or `200 {"status":"degraded","reason":…}` while a
/// shared backend is away: the node still serves (from L1, the upstream, local
/// coalescing and rate limits), so a load balancer must keep sending it traffic.
async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.gateway.degraded() {
        None => Json(json!({"status": "ok"})),
        Some(reason) => Json(json!({"status": "degraded", "reason": reason})),
    }
}

async fn metrics_page(State(s): State<AppState>) -> Response {
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

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

async fn require_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &s.token else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no_route",
            "the admin API is disabled",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid 'Authorization: Bearer <admin_token>' header is required",
        );
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

/// Body of `POST /admin/purge`: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    /// An exact key, as logged and shown by `Cache-Status`-carrying responses.
    key: Option<String>,
    /// A route name: every key of the route.
    route: Option<String>,
    /// Every key starting with this prefix.
    prefix: Option<String>,
    /// A request path and query, e.g. `/air/x?sidoName=서울`: the key a GET of it uses.
    url: Option<String>,
}

async fn purge(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "invalid purge request: {e}; send {{\"key\": …}}, {{\"route\": …}}, {{\"prefix\": …}} or {{\"url\": …}}"
                ),
            );
        }
    };
    let given = [
        req.key.is_some(),
        req.route.is_some(),
        req.prefix.is_some(),
        req.url.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give exactly one of key, route, prefix, url",
        );
    }
    let gw = &s.gateway;
    let result = if let Some(k) = req.key {
        gw.purge_key(&k).await.map(|p| (p.0, json!({"key": k})))
    } else if let Some(r) = req.route {
        match gw.purge_route(&r).await {
            Ok(Some(p)) => Ok((p.0, json!({"route": r}))),
            Ok(None) => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "unknown_route",
                    &format!(
                        "no route named {r:?}; routes: {}",
                        gw.route_names().join(", ")
                    ),
                );
            }
            Err(e) => Err(e),
        }
    } else if let Some(p) = req.prefix {
        if p.is_empty() {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "an empty prefix would purge everything; purge routes one by one",
            );
        }
        gw.purge_prefix(&p)
            .await
            .map(|n| (n.0, json!({"prefix": p})))
    } else {
        let url = req.url.unwrap_or_default();
        let key = match gw.key_for(&url) {
            Ok(k) => k,
            Err(e) => {
                return json_error(StatusCode::BAD_REQUEST, "bad_request", &e.public_message());
            }
        };
        gw.purge_key(&key).await.map(|p| (p.0, json!({"key": key})))
    };
    match result {
        Ok((n, what)) => {
            tracing::info!(purged = n, what = %what, "purge");
            Json(json!({"purged": n, "target": what})).into_response()
        }
        Err(e @ sluice_cache::StoreError::Unsupported { .. }) => {
            json_error(StatusCode::BAD_REQUEST, "unsupported", &e.to_string())
        }
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
        ),
    }
}

async fn stats(State(s): State<AppState>) -> Response {
    match s.gateway.stats().await {
        Ok(st) => {
            let upstreams: Vec<_> = s
                .gateway
                .upstreams()
                .iter()
                .map(|u| json!({"name": u.name().to_string(), "quota_remaining_today": u.quota().remaining_today()}))
                .collect();
            Json(json!({
                "store": s.gateway.store().kind(),
                "entries": st.entries,
                "bytes": st.bytes,
                "max_bytes": st.max_bytes,
                "in_flight": s.gateway.in_flight(),
                "routes": s.gateway.route_names(),
                "upstreams": upstreams,
            }))
            .into_response()
        }
        Err(e @ sluice_cache::StoreError::Unsupported { .. }) => {
            json_error(StatusCode::BAD_REQUEST, "unsupported", &e.to_string())
        }
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
        ),
    }
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Asks the server to stop and waits for in-flight requests to finish.
    ///
    /// # Errors
    ///
    /// When the server task failed.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.map_err(std::io::Error::other)?
    }
}

/// Binds `addr` and serves `app` until `shutdown` resolves, then drains in-flight
/// requests for up to `grace`.
///
/// # Errors
///
/// When the address cannot be bound or serving fails.
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
    let mut rx2 = rx.clone();
    let deadline = async move {
        let _ = rx2.wait_for(|v| *v).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!(grace_s = grace.as_secs(), "in-flight requests did not finish within the grace period; exiting");
            Ok(())
        }
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Starts the server in the background on `settings.listen` (port 0 picks one).
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn start(settings: Settings) -> std::io::Result<Running> {
    let listener = bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let app = app(settings.gateway, settings.admin_token);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = settings.shutdown_grace;
    let handle = tokio::spawn(serve_until(
        listener,
        app,
        async move {
            let _ = stop_rx.await;
        },
        grace,
    ));
    Ok(Running {
        addr,
        handle,
        stop: Some(stop_tx),
    })
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}

/// Runs the server in the foreground until SIGINT/SIGTERM.
///
/// # Errors
///
/// When the address cannot be bound or serving fails.
pub async fn run(settings: Settings) -> std::io::Result<()> {
    let listener = bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, routes = ?settings.gateway.route_names(), store = settings.gateway.store().kind(),
        admin = settings.admin_token.is_some(), "sluice gateway listening");
    let grace = settings.shutdown_grace;
    let mut app = app(settings.gateway.clone(), settings.admin_token.clone());
    let settings = std::sync::Arc::new(settings);
    if settings.admin_token.is_some() && !settings.jobs.jobs.is_empty() {
        match crate::schedule::JobsApi::new(settings.clone()).await {
            Ok(api) => {
                let state = AppState {
                    gateway: settings.gateway.clone(),
                    token: settings.admin_token.clone(),
                };
                app = app.merge(
                    crate::schedule::api_router(std::sync::Arc::new(api))
                        .route_layer(middleware::from_fn_with_state(state, require_token)),
                );
            }
            Err(e) => tracing::warn!(error = %e, "job API disabled: the queue is unreachable"),
        }
    }
    let workers = if settings.queue.workers {
        match crate::job_task::start_workers(settings.clone()).await {
            Ok(w) => Some(w),
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "cannot start workers: {e} (set [queue] workers = false to serve without them)"
                )));
            }
        }
    } else {
        None
    };
    let scheduler = match crate::schedule::start(settings.clone()).await {
        Ok(s) => s,
        Err(e) => {
            return Err(std::io::Error::other(format!(
                "cannot start the scheduler: {e}"
            )));
        }
    };
    serve_until(listener, app, shutdown_signal(), grace).await?;
    if let Some(s) = scheduler {
        s.shutdown().await;
    }
    if let Some(w) = workers {
        tracing::info!(in_flight = w.in_flight(), "stopping workers");
        w.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
