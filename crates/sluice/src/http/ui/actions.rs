//! Log in and out, and the actions (`POST /ui/act/*`): each checks the
//! session's CSRF token and role, calls the API's handler (which records it
//! in the audit log) and goes back to the page it came from with a message.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Extension, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;

use super::html::{bare, esc, html, message_page};
use crate::config::Role;
use crate::http::ApiError;
use crate::http::api::{self, ApiState, Principal, Tokens, auth};

/// The cookie carrying the message shown once on the next page.
const FLASH_COOKIE: &str = "sluice_flash";
/// The `Set-Cookie` value that removes the message.
pub(super) const CLEAR_FLASH: &str =
    "sluice_flash=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0";

/// The message of the flash cookie, if any.
pub(super) fn flash_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(FLASH_COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
        .and_then(|v| B64.decode(v).ok())
        .and_then(|b| String::from_utf8(b).ok())
}

/// A form body's fields (the last of repeated names wins).
fn fields(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// `303` to `back` (a dashboard path, else `/ui`) with `message` to show.
fn back_with(back: Option<&String>, message: &str) -> Response {
    let to = back
        .map(String::as_str)
        .filter(|b| {
            b.starts_with("/ui") && !b.contains("//") && !b.contains('\\') && !b.contains("://")
        })
        .unwrap_or("/ui");
    let mut r = Redirect::to(to).into_response();
    let cookie = format!(
        "{FLASH_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60",
        B64.encode(message)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The refusal (`403`) of a request without the session's CSRF token or by a
/// role below `need`; none when it may go on.
fn guard(
    p: &Principal,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
    need: Role,
) -> Option<Response> {
    let given = headers
        .get(auth::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(f.get("csrf").map(String::as_str));
    if let Err(e) = auth::check_csrf(p, given) {
        return Some(message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            &format!("{} (reload the page and try again)", e.message),
        ));
    }
    if p.role < need {
        return Some(message_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!(
                "this needs the {} role; {} has {}",
                need.as_str(),
                p.name,
                p.role.as_str()
            ),
        ));
    }
    None
}

/// The answer to an action: back with what it did or why it failed.
fn done(f: &HashMap<String, String>, r: Result<String, ApiError>) -> Response {
    match r {
        Ok(m) => back_with(f.get("back"), &m),
        Err(e) => back_with(f.get("back"), &format!("error: {}", e.message)),
    }
}

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> Result<&'a str, ApiError> {
    f.get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", format!("the form has no {k}")))
}

fn body(v: serde_json::Value) -> axum::body::Bytes {
    axum::body::Bytes::from(v.to_string())
}

macro_rules! action {
    ($(#[$doc:meta])* $name:ident, $role:expr, |$s:ident, $p:ident, $f:ident| $body:expr) => {
        $(#[$doc])*
        async fn $name(
            State($s): State<ApiState>,
            Extension($p): Extension<Principal>,
            headers: HeaderMap,
            raw: axum::body::Bytes,
        ) -> Response {
            let $f = fields(&raw);
            if let Some(r) = guard(&$p, &headers, &$f, $role) {
                return r;
            }
            let r: Result<String, ApiError> = async { $body }.await;
            done(&$f, r)
        }
    };
}

action!(
    /// Runs a job with the form's `param.NAME` fields and `extra` lines
    /// (`NAME=VALUE`).
    run, Role::Operator, |s, p, f| {
        let job = field(&f, "job")?.to_owned();
        let mut params = serde_json::Map::new();
        for (k, v) in &f {
            if let Some(n) = k.strip_prefix("param.") {
                params.insert(n.to_owned(), json!(v));
            }
        }
        for line in f.get("extra").map(String::as_str).unwrap_or("").lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                ApiError::bad_request("bad_param", format!("{line:?}: write NAME=VALUE"))
            })?;
            params.insert(k.trim().to_owned(), json!(v.trim()));
        }
        let rerun = f.get("rerun").is_some_and(|v| v == "1");
        let (_, r) = api::jobs::run_job(
            auth::Operator(p),
            State(s),
            Path(job.clone()),
            body(json!({"params": params, "rerun": rerun})),
        )
        .await?;
        Ok(format!("run of {job} enqueued as task {}", r.0.task))
    }
);

fn exec_id(f: &HashMap<String, String>) -> Result<i64, ApiError> {
    let id = field(f, "id")?;
    id.parse()
        .map_err(|_| ApiError::bad_request("bad_id", format!("{id:?} is not an execution id")))
}

action!(
    /// Asks a running execution to stop.
    stop, Role::Operator, |s, p, f| {
        let r = api::jobs::stop_execution(auth::Operator(p), State(s), Path(exec_id(&f)?)).await?;
        Ok(r.0.message)
    }
);

action!(
    /// Restarts a failed or stopped execution.
    restart, Role::Operator, |s, p, f| {
        let (_, r) =
            api::jobs::restart_execution(auth::Operator(p), State(s), Path(exec_id(&f)?)).await?;
        Ok(r.0.message)
    }
);

action!(
    /// Pauses a trigger, until resumed or until `until` (a `datetime-local`
    /// value, UTC, or RFC 3339).
    pause, Role::Operator, |s, p, f| {
        let id = field(&f, "trigger")?.to_owned();
        let until = f.get("until").filter(|u| !u.is_empty()).map(|u| {
            if u.len() == 16 {
                format!("{u}:00Z")
            } else if u.len() == 19 {
                format!("{u}Z")
            } else {
                u.clone()
            }
        });
        let r = api::jobs::pause_trigger(
            auth::Operator(p),
            State(s),
            Path(id.clone()),
            body(json!({ "until": until })),
        )
        .await?;
        Ok(match r.0.until {
            Some(u) => format!("trigger {id} paused until {u}"),
            None => format!("trigger {id} paused"),
        })
    }
);

action!(
    /// Resumes a paused trigger.
    resume, Role::Operator, |s, p, f| {
        let id = field(&f, "trigger")?.to_owned();
        let _ = api::jobs::resume_trigger(auth::Operator(p), State(s), Path(id.clone())).await?;
        Ok(format!("trigger {id} resumed"))
    }
);

/// The API's body of a dead-letter action of the form: one `id`, or every
/// task matching `task` and `error` when `all` is set.
fn dead_body(f: &HashMap<String, String>, dry_run: bool) -> Result<axum::body::Bytes, ApiError> {
    let filter = json!({
        "task": f.get("task").filter(|v| !v.is_empty()),
        "error": f.get("error").filter(|v| !v.is_empty()),
    });
    if f.get("all").is_some_and(|v| v == "1") || dry_run {
        Ok(body(json!({ "filter": filter, "dry_run": dry_run })))
    } else {
        Ok(body(json!({ "ids": [field(f, "id")?] })))
    }
}

action!(
    /// Retries one dead task or every one matching the filter.
    retry, Role::Operator, |s, p, f| {
        let q = field(&f, "queue")?.to_owned();
        let r = api::queues::retry_dead(auth::Operator(p), State(s), Path(q.clone()), dead_body(&f, false)?)
            .await?;
        Ok(format!("{} dead task(s) of {q} back in the queue", r.0.affected))
    }
);

action!(
    /// Deletes one dead task or every one matching the filter (admin).
    delete, Role::Admin, |s, p, f| {
        let q = field(&f, "queue")?.to_owned();
        let r = api::queues::delete_dead(auth::Admin(p), State(s), Path(q.clone()), dead_body(&f, false)?)
            .await?;
        Ok(format!("{} dead task(s) of {q} deleted", r.0.affected))
    }
);

/// `POST /ui/act/preview`: how many dead tasks a bulk retry or delete would
/// take (the API's dry run), as a fragment.
async fn preview(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let f = fields(&raw);
    let delete = f.get("kind").is_some_and(|k| k == "delete");
    let need = if delete { Role::Admin } else { Role::Operator };
    if let Some(r) = guard(&p, &headers, &f, need) {
        return r;
    }
    let r = async {
        let q = field(&f, "queue")?.to_owned();
        let b = dead_body(&f, true)?;
        let m = if delete {
            api::queues::delete_dead(auth::Admin(p), State(s), Path(q), b)
                .await?
                .0
                .matched
        } else {
            api::queues::retry_dead(auth::Operator(p), State(s), Path(q), b)
                .await?
                .0
                .matched
        };
        Ok::<_, ApiError>(m)
    }
    .await;
    let text = match r {
        Ok(n) => format!("<strong class=\"count\">{n}</strong> task(s) match."),
        Err(e) => format!("<span class=\"bad\">{}</span>", esc(&e.message)),
    };
    html(StatusCode::OK, text)
}

action!(
    /// Purges a key (`key` or `url`; operator) or a route or prefix (admin).
    purge, Role::Operator, |s, p, f| {
        let pick = |k: &str| f.get(k).filter(|v| !v.is_empty());
        let req = json!({
            "key": pick("key"), "url": pick("url"), "route": pick("route"), "prefix": pick("prefix"),
        });
        if (pick("route").is_some() || pick("prefix").is_some()) && p.role < Role::Admin {
            return Err(ApiError::forbidden("purging a whole route or prefix needs the admin role"));
        }
        let r = api::gateway::purge(auth::Operator(p), State(s), body(req)).await?;
        Ok(format!("purged {} entr{} ({})", r.0.purged, if r.0.purged == 1 { "y" } else { "ies" }, r.0.target))
    }
);

/// The actions' routes.
pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/ui/act/run", post(run))
        .route("/ui/act/stop", post(stop))
        .route("/ui/act/restart", post(restart))
        .route("/ui/act/pause", post(pause))
        .route("/ui/act/resume", post(resume))
        .route("/ui/act/retry", post(retry))
        .route("/ui/act/delete", post(delete))
        .route("/ui/act/preview", post(preview))
        .route("/ui/act/purge", post(purge))
}

fn login_page(error: Option<&str>) -> String {
    let err = error.map_or(String::new(), |e| {
        format!("<p class=\"flash error\" role=\"alert\">{}</p>", esc(e))
    });
    bare(
        "Log in",
        &format!(
            "{err}<form method=\"post\" action=\"/ui/login\" class=\"login\">\
             <label>Token <input type=\"password\" name=\"token\" autocomplete=\"off\" required autofocus></label>\
             <button class=\"primary\" data-action=\"login\">Log in</button></form>\
             <p class=\"hint\">Any token of <code>[server] admin_token</code> or <code>[[server.tokens]]</code>; the session lasts <code>session_ttl</code>.</p>"
        ),
    )
}

/// `GET /ui/login`.
pub(super) async fn login_form() -> Response {
    html(StatusCode::OK, login_page(None))
}

/// `POST /ui/login`: a valid token sets the session cookie and goes to the
/// overview; any other answers the form again with `401`.
pub(super) async fn login(
    State(s): State<ApiState>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let f = fields(&raw);
    let Some(token) = f
        .get("token")
        .and_then(|t| s.tokens.by_value(t.trim()))
        .cloned()
    else {
        return html(
            StatusCode::UNAUTHORIZED,
            login_page(Some("That token is not valid.")),
        );
    };
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    let cookie = s.tokens.set_cookie(&s.tokens.session_for(&token), secure);
    let who = Principal {
        name: token.name.clone(),
        role: token.role,
        by_cookie: true,
        csrf: String::new(),
    };
    s.audit(&who, "ui.login", "dashboard", "").await;
    let mut r = Redirect::to("/ui").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /ui/logout` (CSRF): ends the session.
pub(super) async fn logout(
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let f = fields(&raw);
    if let Some(r) = guard(&p, &headers, &f, Role::Viewer) {
        return r;
    }
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&Tokens::clear_cookie()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
