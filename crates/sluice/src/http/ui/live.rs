//! Live updates: the live sections of a page as JSON (`{"ID": "HTML", …}`),
//! pushed every 2 s by server-sent events or fetched by the polling fallback.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;

use super::pages::render;
use crate::http::api::{ApiState, Principal};

/// How often the events push.
const EVERY: Duration = Duration::from_secs(2);
/// Pushes per stream before it ends (the browser reconnects): a stream lasts
/// about ten minutes, so none outlives a session by long.
const PUSHES: usize = 300;

/// Which page the fragments are for.
#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    /// Its path and query, e.g. `/ui/executions/3`.
    page: String,
}

/// The live sections of `page` for `p`, as a JSON object; `{}` for a page
/// that is not the dashboard's or cannot be shown now.
async fn live_json(s: &ApiState, p: &Principal, page: &str) -> String {
    let Some(uri) = page
        .parse::<Uri>()
        .ok()
        .filter(|u| u.path().starts_with("/ui") && u.host().is_none())
    else {
        return "{}".into();
    };
    let mut out = serde_json::Map::new();
    if let Ok(v) = render(s, p, &uri).await {
        for sec in v.sections.into_iter().filter(|s| s.live) {
            out.insert(sec.id.to_owned(), serde_json::Value::String(sec.html));
        }
    }
    serde_json::Value::Object(out).to_string()
}

/// `GET /ui/fragments?page=…`: the live sections once (the polling fallback).
pub(super) async fn fragments(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<LiveQuery>,
) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        live_json(&s, &p, &q.page).await,
    )
        .into_response()
}

/// `GET /ui/events?page=…`: an event `fragments` with the live sections now
/// and every 2 s after.
pub(super) async fn events(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<LiveQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let st = stream::unfold((s, p, q.page, true), |(s, p, page, first)| async move {
        if !first {
            tokio::time::sleep(EVERY).await;
        }
        let data = live_json(&s, &p, &page).await;
        Some((
            Ok(Event::default().event("fragments").data(data)),
            (s, p, page, false),
        ))
    })
    .take(PUSHES);
    Sse::new(st).keep_alive(KeepAlive::default())
}
