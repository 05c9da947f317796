//! The gateway's resources: upstreams (calls, errors, latency, quota with its
//! projected exhaustion), routes (hit ratio, upstream calls saved) and the
//! cache (stats, purge).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use sluice_gateway::RouteStats;
use sluice_upstream::{RecentStats, UpstreamStats};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiState, Page, PageQuery, Problem, auth};
use crate::http::ApiError;
use crate::http::admin::{PurgeRequest, parse_purge, purge_on};
use crate::views::rfc3339;

/// An upstream and what it has been doing.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamView {
    /// Its name.
    pub name: String,
    /// Calls sent since the process started (retries count).
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Calls for gateway clients.
    pub calls_by_gateway: u64,
    /// Calls by batch jobs.
    pub calls_by_jobs: u64,
    /// The last five minutes.
    #[schema(value_type = RecentSchema)]
    pub recent: RecentStats,
    /// The call budget.
    pub quota: QuotaView,
}

/// Calls over the recent window.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RecentStats)]
pub struct RecentSchema {
    /// The window's length.
    pub window_seconds: u64,
    /// Calls in it.
    pub calls: u64,
    /// Failed calls in it.
    pub errors: u64,
    /// `errors / calls`.
    pub error_ratio: Option<f64>,
    /// Mean latency, ms.
    pub mean_latency_ms: Option<f64>,
    /// Slowest call, ms.
    pub max_latency_ms: Option<f64>,
}

/// An upstream's budget now.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    /// Calls a second, if limited.
    pub per_second: Option<u32>,
    /// Calls a day, if limited.
    pub per_day: Option<u64>,
    /// Calls spent today.
    pub used_today: Option<u64>,
    /// Calls left today.
    pub remaining_today: Option<u64>,
    /// `remaining / per_day`.
    pub remaining_ratio: Option<f64>,
    /// When the day's budget resets (RFC 3339).
    pub resets_at: Option<String>,
    /// When it runs out at today's average rate (RFC 3339); none before any
    /// call.
    pub projected_exhaustion: Option<String>,
    /// Whether it runs out before the reset at that rate.
    pub exhausted_before_reset: Option<bool>,
}

impl UpstreamView {
    fn of(name: &str, s: UpstreamStats) -> Self {
        let q = s.quota;
        let now = chrono::Utc::now().timestamp_millis();
        let projected = q.projected_exhaustion_ms(now);
        Self {
            name: name.to_owned(),
            calls: s.calls,
            errors: s.errors,
            calls_by_gateway: s.calls_by_gateway,
            calls_by_jobs: s.calls_by_jobs,
            recent: s.recent,
            quota: QuotaView {
                per_second: q.per_second,
                per_day: q.per_day,
                used_today: q.used(),
                remaining_today: q.remaining,
                remaining_ratio: q
                    .per_day
                    .zip(q.remaining)
                    .filter(|(d, _)| *d > 0)
                    .map(|(d, r)| r as f64 / d as f64),
                resets_at: rfc3339(q.resets_at_ms),
                projected_exhaustion: rfc3339(projected),
                exhausted_before_reset: projected.zip(q.resets_at_ms).map(|(p, r)| p < r),
            },
        }
    }
}

/// Filters of a list by name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NameFilter {
    /// Only those whose name contains this.
    pub q: Option<String>,
}

fn matches(name: &str, q: Option<&str>) -> bool {
    q.is_none_or(|q| name.contains(q))
}

/// Every configured upstream (of routes and of jobs), by name.
pub fn upstream_views(s: &ApiState, q: Option<&str>) -> Vec<UpstreamView> {
    s.rt.settings()
        .upstreams
        .iter()
        .filter(|(n, _)| matches(n, q))
        .map(|(n, u)| UpstreamView::of(n, u.stats()))
        .collect()
}

/// Upstreams with their calls, errors, latency and quota.
#[utoipa::path(get, path = "/upstreams", tag = "gateway", params(PageQuery, NameFilter),
    responses((status = 200, body = Page<UpstreamView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_upstreams(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(f): Query<NameFilter>,
) -> Result<Json<Page<UpstreamView>>, ApiError> {
    let all = upstream_views(&s, f.q.as_deref());
    Ok(Json(pq.page_sorted(all, |u| u.name.clone())?))
}

/// One upstream.
#[utoipa::path(get, path = "/upstreams/{name}", tag = "gateway",
    params(("name" = String, Path, description = "The upstream's name")),
    responses((status = 200, body = UpstreamView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_upstream(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<UpstreamView>, ApiError> {
    let settings = s.rt.settings();
    let u = settings
        .upstreams
        .get(&name)
        .ok_or_else(|| ApiError::not_found("no_upstream", format!("no upstream named {name:?}")))?;
    Ok(Json(UpstreamView::of(&name, u.stats())))
}

/// A route and its requests.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Route)]
pub struct RouteSchema {
    /// Its name.
    pub route: String,
    /// Its path pattern.
    pub path: String,
    /// The upstream it calls.
    pub upstream: String,
    /// Requests by cache outcome: `hit`, `stale`, `miss`, `bypass`, `error`.
    pub requests: std::collections::HashMap<String, u64>,
    /// All requests.
    pub total: u64,
    /// Answers from the cache over all requests.
    pub hit_ratio: Option<f64>,
    /// Calls it made to its upstream.
    pub upstream_calls: u64,
    /// Requests answered without a call of their own.
    pub calls_saved: u64,
}

/// Filters of routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteFilter {
    /// Only those whose name contains this.
    pub q: Option<String>,
    /// Only those calling this upstream.
    pub upstream: Option<String>,
}

/// Routes with their hit ratio and upstream calls saved.
#[utoipa::path(get, path = "/routes", tag = "gateway", params(PageQuery, RouteFilter),
    responses((status = 200, body = Page<RouteSchema>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_routes(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(pq): Query<PageQuery>,
    Query(f): Query<RouteFilter>,
) -> Result<Json<Page<RouteStats>>, ApiError> {
    let all: Vec<RouteStats> = s
        .gateway
        .route_stats()
        .into_iter()
        .filter(|r| matches(&r.route, f.q.as_deref()))
        .filter(|r| f.upstream.as_ref().is_none_or(|u| &r.upstream == u))
        .collect();
    // Configuration order is kept; the cursor is the position in it.
    Ok(Json(pq.page_in_order(all)?))
}

/// One route.
#[utoipa::path(get, path = "/routes/{name}", tag = "gateway",
    params(("name" = String, Path, description = "The route's name")),
    responses((status = 200, body = RouteSchema), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_route(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RouteStats>, ApiError> {
    s.gateway
        .route_stats()
        .into_iter()
        .find(|r| r.route == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_route", format!("no route named {name:?}")))
}

/// The cache store's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheView {
    /// `memory`, `redis`, `memcached` or `tiered`.
    pub store: String,
    /// Entries held (approximate for shared stores).
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// The byte bound, if any.
    pub max_bytes: Option<u64>,
    /// Upstream fetches in flight.
    pub in_flight: usize,
    /// Why the store is degraded, if it is.
    pub degraded: Option<String>,
    /// Requests over all routes.
    pub requests: u64,
    /// Answers from the cache over all requests.
    pub hit_ratio: Option<f64>,
    /// Requests answered without a call of their own, over all routes.
    pub calls_saved: u64,
}

/// The cache's counts, over all routes.
pub async fn cache_view(s: &ApiState) -> Result<CacheView, ApiError> {
    let st = s.gateway.stats().await?;
    let routes = s.gateway.route_stats();
    let requests: u64 = routes.iter().map(|r| r.total).sum();
    let cached: u64 = routes
        .iter()
        .map(|r| r.requests["hit"] + r.requests["stale"])
        .sum();
    Ok(CacheView {
        store: s.gateway.store().kind().to_owned(),
        entries: st.entries,
        bytes: st.bytes,
        max_bytes: st.max_bytes,
        in_flight: s.gateway.in_flight(),
        degraded: s.gateway.degraded(),
        requests,
        hit_ratio: (requests > 0).then(|| cached as f64 / requests as f64),
        calls_saved: routes.iter().map(|r| r.calls_saved).sum(),
    })
}

/// The cache's store, size and hit ratio.
#[utoipa::path(get, path = "/cache", tag = "gateway",
    responses((status = 200, body = CacheView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn get_cache(
    _: auth::Viewer,
    State(s): State<ApiState>,
) -> Result<Json<CacheView>, ApiError> {
    Ok(Json(cache_view(&s).await?))
}

/// One of the most requested cache keys.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TopKey)]
pub struct TopKeySchema {
    /// The cache key.
    pub key: String,
    /// Its route.
    pub route: String,
    /// Requests counted (approximate).
    pub requests: u64,
    /// Of those, answers from the cache.
    pub hits: u64,
}

/// How many top keys.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// 1 to 500; default 20.
    pub limit: Option<i64>,
}

/// The most requested keys over all routes, most first.
pub fn top_keys(s: &ApiState, limit: usize) -> Vec<sluice_gateway::TopKey> {
    s.gateway.top_keys(limit)
}

/// The most requested cache keys with their hits.
#[utoipa::path(get, path = "/cache/top", tag = "gateway", params(TopQuery),
    responses((status = 200, body = Vec<TopKeySchema>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_top_keys(
    _: auth::Viewer,
    State(s): State<ApiState>,
    Query(q): Query<TopQuery>,
) -> Result<Json<Vec<sluice_gateway::TopKey>>, ApiError> {
    let limit = PageQuery {
        limit: Some(q.limit.unwrap_or(20)),
        cursor: None,
    }
    .limit()?;
    Ok(Json(top_keys(&s, limit)))
}

/// What a purge removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// Entries removed.
    pub purged: u64,
    /// What was purged: `{"key": …}`, `{"route": …}` or `{"prefix": …}`.
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
}

/// Purges one key (`key`, or `url`: the key a GET of that path and query
/// uses; operator) or many (`route`, `prefix`; admin).
#[utoipa::path(post, path = "/cache/purge", tag = "gateway", request_body = PurgeRequest,
    responses((status = 200, body = Purged), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn purge(
    auth::Operator(who): auth::Operator,
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<Purged>, ApiError> {
    let req = parse_purge(&body)?;
    if req.is_bulk() && who.role < crate::config::Role::Admin {
        return Err(ApiError::forbidden(
            "purging a whole route or prefix needs the admin role; an operator purges keys",
        ));
    }
    let (purged, target) = purge_on(&s.gateway, req).await?;
    s.audit(
        &who,
        "cache.purge",
        &target.to_string(),
        &format!("purged {purged}"),
    )
    .await;
    Ok(Json(Purged { purged, target }))
}

/// The gateway's part of the API.
pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_upstreams))
        .routes(routes!(get_upstream))
        .routes(routes!(list_routes))
        .routes(routes!(get_route))
        .routes(routes!(get_cache))
        .routes(routes!(get_top_keys))
        .routes(routes!(purge))
}
