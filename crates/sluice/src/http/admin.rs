//! The admin API (`/admin/purge`, `/admin/cache/stats`), behind the admin token.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

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

/// `POST /admin/purge` with exactly one of `key`, `route`, `prefix`, `url`:
/// `{"purged": N, "target": …}`.
pub(super) async fn purge(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: PurgeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!(
                "invalid purge request: {e}; send {{\"key\": …}}, {{\"route\": …}}, {{\"prefix\": …}} or {{\"url\": …}}"
            ),
        )
    })?;
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
        return Err(ApiError::bad_request(
            "bad_request",
            "give exactly one of key, route, prefix, url",
        ));
    }
    let gw = &s.gateway;
    let (n, what) = if let Some(k) = req.key {
        (gw.purge_key(&k).await?.0, json!({"key": k}))
    } else if let Some(r) = req.route {
        let Some(p) = gw.purge_route(&r).await? else {
            return Err(ApiError::not_found(
                "unknown_route",
                format!(
                    "no route named {r:?}; routes: {}",
                    gw.route_names().join(", ")
                ),
            ));
        };
        (p.0, json!({"route": r}))
    } else if let Some(p) = req.prefix {
        if p.is_empty() {
            return Err(ApiError::bad_request(
                "bad_request",
                "an empty prefix would purge everything; purge routes one by one",
            ));
        }
        (gw.purge_prefix(&p).await?.0, json!({"prefix": p}))
    } else {
        let url = req.url.unwrap_or_default();
        let key = gw
            .key_for(&url)
            .map_err(|e| ApiError::bad_request("bad_request", e.public_message()))?;
        (gw.purge_key(&key).await?.0, json!({"key": key}))
    };
    tracing::info!(purged = n, what = %what, "purge");
    Ok(Json(json!({"purged": n, "target": what})).into_response())
}

/// `GET /admin/cache/stats`: the store's counts, routes and upstream quotas.
pub(super) async fn stats(State(s): State<AppState>) -> Result<Response, ApiError> {
    let st = s.gateway.stats().await?;
    let upstreams: Vec<_> = s
        .gateway
        .upstreams()
        .iter()
        .map(|u| json!({"name": u.name().to_string(), "quota_remaining_today": u.quota().remaining_today()}))
        .collect();
    Ok(Json(json!({
        "store": s.gateway.store().kind(),
        "entries": st.entries,
        "bytes": st.bytes,
        "max_bytes": st.max_bytes,
        "in_flight": s.gateway.in_flight(),
        "routes": s.gateway.route_names(),
        "upstreams": upstreams,
    }))
    .into_response())
}
