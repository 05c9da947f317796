//! The dashboard at `/ui`: server-rendered HTML over the same functions the
//! REST API ([`super::api`]) uses, with htmx and uPlot vendored into the binary
//! (`crates/sluice/assets/`), no CDN and no Node at run time.
//!
//! - `/ui/login` exchanges a token for the session cookie of
//!   [`super::api::auth`] (`HttpOnly`, `SameSite=Strict`); every other page
//!   without a valid session answers `303` to it, every action `401`.
//! - Every action (`POST /ui/act/*`) checks the session's CSRF token (the form
//!   field `csrf` or the header `x-csrf-token`) and the role the API asks for
//!   the same thing; a viewer sees no action button and the actions answer it
//!   `403`. The API's handlers do the work, so the audit log records each one.
//! - Live parts (elements with `data-live`) are pushed every 2 s by
//!   server-sent events (`/ui/events`), or fetched every 5 s from
//!   `/ui/fragments` when the event stream fails; the page's script never
//!   replaces an element holding the focus, an open `details` or a
//!   `data-editing` mark.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::api::{ApiState, auth};

mod actions;
mod assets;
mod html;
mod live;
mod pages;

pub use html::esc;

/// The dashboard's router (paths under `/ui`), for a node with API tokens.
pub fn service(state: ApiState) -> Router {
    let private = Router::new()
        .route("/ui", get(pages::page_root))
        .route("/ui/", get(pages::page_root))
        .route("/ui/{*path}", get(pages::page))
        .route("/ui/events", get(live::events))
        .route("/ui/fragments", get(live::fragments))
        .route("/ui/logout", post(actions::logout))
        .merge(actions::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), session));
    Router::new()
        .route("/ui/login", get(actions::login_form).post(actions::login))
        .route("/ui/assets/{file}", get(assets::serve))
        .merge(private)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Puts the session's [`auth::Principal`] into the request, or answers `303`
/// to the login page (a page) or `401` (an action) without a valid session.
async fn session(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let p = auth::session_cookie(req.headers()).and_then(|c| s.tokens.check_session(c));
    match p {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None if matches!(*req.method(), Method::GET | Method::HEAD) => {
            Redirect::to("/ui/login").into_response()
        }
        None => html::message_page(
            StatusCode::UNAUTHORIZED,
            "Not logged in",
            "Your session is missing, forged or expired.",
        ),
    }
}

/// No framing, no sniffing, scripts and styles from this origin only.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}
