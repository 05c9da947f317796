//! The admin API (`/admin/purge`, `/admin/cache/stats`), behind the admin token.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

/// What to purge: exactly one of the fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// An exact key, as logged and shown by `Cache-Status`-carrying responses.
    pub key: Option<String>,
    /// A route name: every key of the route.
    pub route: Option<String>,
    /// Every key starting with this prefix.
    pub prefix: Option<String>,
    /// A request path and query, e.g. `/air/x?sidoName=서울`: the key a GET of it uses.
    pub url: Option<String>,
}

impl PurgeRequest {
    /// Whether it purges many keys at once (a route or a prefix), which the
    /// REST API leaves to admins.
    pub fn is_bulk(&self) -> bool {
        self.route.is_some() || self.prefix.is_some()
    }
}

/// Parses a purge request body.
///
/// # Errors
///
/// `400` naming what a body must hold.
pub fn parse_purge(body: &[u8]) -> Result<PurgeRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!(
                "invalid purge request: {e}; send {{\"key\": …}}, {{\"route\": …}}, {{\"prefix\": …}} or {{\"url\": …}}"
            ),
        )
    })
}

/// `POST /admin/purge` with exactly one of `key`, `route`, `prefix`, `url`:
/// `{"purged": N, "target": …}`.
pub(super) async fn purge(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (n, what) = purge_on(&s.gateway, parse_purge(&body)?).await?;
    Ok(Json(json!({"purged": n, "target": what})).into_response())
}

/// Purges what `req` names from `gw`'s store: how many entries went and the
/// target as JSON (`{"key": …}`, `{"route": …}` or `{"prefix": …}`).
///
/// # Errors
///
/// `400` for a request naming not exactly one target or an empty prefix, `404`
/// for an unknown route, `503` when the store fails.
pub async fn purge_on(
    gw: &sluice_gateway::Gateway,
    req: PurgeRequest,
) -> Result<(u64, serde_json::Value), ApiError> {
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
    Ok((n, what))
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
