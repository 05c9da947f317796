//! The dashboard's static files, embedded in the binary and served under
//! `/ui/assets/` with long cache headers (their URLs carry the version).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/htmx.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/uPlot.min.css"),
    ),
    (
        "sluice.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/sluice.css"),
    ),
    (
        "sluice.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/sluice.js"),
    ),
];

/// The URL of asset `name`, with the version for cache busting.
pub(super) fn url(name: &str) -> String {
    format!("/ui/assets/{name}?v={}", env!("CARGO_PKG_VERSION"))
}

/// `GET /ui/assets/{file}`.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == file) {
        Some((_, ty, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ty)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
