//! The pages: overview, jobs, a job, an execution, schedule, queues, a queue's
//! dead letters, cache, audit. Each is a list of sections; the live ones are
//! also what `/ui/events` and `/ui/fragments` push.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;

use super::html::{
    action_form, badge, chart, confirm, csrf_field, esc, html, layout, link, may, message_page,
    pct, stat, table,
};
use crate::config::Role;
use crate::http::ApiError;
use crate::http::api::{self, ApiState, PageQuery, Principal, auth};

/// A part of a page.
pub(super) struct Section {
    /// Its element id.
    pub(super) id: &'static str,
    /// Whether live updates replace it.
    pub(super) live: bool,
    /// Its HTML.
    pub(super) html: String,
}

/// A rendered page.
pub(super) struct View {
    title: String,
    /// Its sections in order.
    pub(super) sections: Vec<Section>,
}

fn live(id: &'static str, html: String) -> Section {
    Section {
        id,
        live: true,
        html,
    }
}

fn fixed(id: &'static str, html: String) -> Section {
    Section {
        id,
        live: false,
        html,
    }
}

/// `s` as one URL path segment.
pub(super) fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// `GET /ui` and `GET /ui/*`: a whole page.
pub(super) async fn page(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let here = uri
        .path_and_query()
        .map_or("/ui".to_owned(), |pq| pq.as_str().to_owned());
    match render(&s, &p, &uri).await {
        Ok(v) => {
            let flash = super::actions::flash_of(&headers);
            let body: String = v
                .sections
                .iter()
                .map(|sec| {
                    format!(
                        "<section id=\"{}\"{}>{}</section>",
                        sec.id,
                        if sec.live { " data-live" } else { "" },
                        sec.html
                    )
                })
                .collect();
            let mut r = html(
                StatusCode::OK,
                layout(&p, &here, &v.title, flash.as_deref(), &body),
            );
            if flash.is_some() {
                r.headers_mut().append(
                    header::SET_COOKIE,
                    super::actions::CLEAR_FLASH
                        .parse()
                        .unwrap_or_else(|_| unreachable!()),
                );
            }
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "no-store".parse().unwrap_or_else(|_| unreachable!()),
            );
            r
        }
        Err(e) => message_page(e.status, "Cannot show this page", &e.message),
    }
}

/// `GET /ui` with a query string alias.
pub(super) async fn page_root(
    s: State<ApiState>,
    p: Extension<Principal>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    page(s, p, headers, uri).await
}

/// The page at `uri` (a path under `/ui` and its query) for `p`.
///
/// # Errors
///
/// `404` for a page that does not exist; what the API's functions answer.
pub(super) async fn render(s: &ApiState, p: &Principal, uri: &Uri) -> Result<View, ApiError> {
    let q: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let here = uri
        .path_and_query()
        .map_or("/ui".to_owned(), |pq| pq.as_str().to_owned());
    let rest = uri.path().strip_prefix("/ui").unwrap_or("");
    let parts: Vec<String> = rest
        .split('/')
        .filter(|x| !x.is_empty())
        .map(|x| percent_decode_str(x).decode_utf8_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let cx = Cx { s, p, here: &here };
    let (title, sections) = match parts.as_slice() {
        [] => ("Overview".to_owned(), overview(&cx).await?),
        ["jobs"] => ("Jobs".to_owned(), jobs(&cx).await?),
        ["jobs", name] => (format!("Job {name}"), job(&cx, name).await?),
        ["executions", id] => {
            let id: i64 = id.parse().map_err(|_| {
                ApiError::bad_request("bad_id", format!("{id:?} is not an execution id"))
            })?;
            (format!("Execution {id}"), execution(&cx, id).await?)
        }
        ["schedule"] => ("Schedule".to_owned(), schedule(&cx).await?),
        ["queues"] => ("Queues".to_owned(), queues(&cx).await?),
        ["queues", name] => (format!("Queue {name}"), queue(&cx, name, &q).await?),
        ["cache"] => ("Cache".to_owned(), cache(&cx).await?),
        ["audit"] => ("Audit log".to_owned(), audit(&cx, &q).await?),
        _ => {
            return Err(ApiError::not_found(
                "no_page",
                format!("the dashboard has no page {}", uri.path()),
            ));
        }
    };
    Ok(View { title, sections })
}

/// What a page's renderer needs.
struct Cx<'a> {
    s: &'a ApiState,
    p: &'a Principal,
    here: &'a str,
}

impl Cx<'_> {
    fn viewer(&self) -> auth::Viewer {
        auth::Viewer(self.p.clone())
    }

    fn operator(&self) -> bool {
        may(self.p, Role::Operator)
    }

    fn admin(&self) -> bool {
        may(self.p, Role::Admin)
    }

    fn form(&self, action: &str, fields: &[(&str, &str)], label: &str, class: &str) -> String {
        action_form(self.p, action, self.here, fields, label, class)
    }
}

/// The text at JSON pointer `ptr` of `v`: strings as they are, numbers and
/// booleans written out, nothing for null or absent.
fn t(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(x) => x.to_string(),
    }
}

fn e(v: &Value, ptr: &str) -> String {
    esc(&t(v, ptr))
}

fn items(v: &Value) -> Vec<Value> {
    v.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn all() -> Query<PageQuery> {
    Query(PageQuery {
        limit: Some(api::page::MAX_LIMIT as i64),
        cursor: None,
    })
}

fn json<T: serde::Serialize>(x: T) -> Value {
    serde_json::to_value(x).unwrap_or_default()
}

fn no_jobs_note(s: &ApiState) -> Option<Vec<Section>> {
    s.jobs.is_none().then(|| {
        vec![fixed(
            "no-jobs",
            "<p class=\"empty\">This node runs no jobs ([[job]] in the config): no executions, triggers or queues.</p>".into(),
        )]
    })
}

async fn overview(cx: &Cx<'_>) -> Result<Vec<Section>, ApiError> {
    let o = api::overview::overview(cx.s).await?;
    let queued: u64 = o.queues.iter().map(|q| q.ready + q.delayed).sum();
    let dead: u64 = o.queues.iter().map(|q| q.dead).sum();
    let stats = [
        stat("Requests/s", &format!("{:.2}", o.requests_per_second)),
        stat("Hit ratio", &pct(o.cache.hit_ratio)),
        stat("Upstream calls saved", &o.cache.calls_saved.to_string()),
        stat("Jobs running", &o.jobs.running.to_string()),
        stat("Jobs failed (24 h)", &o.jobs.failed_24h.to_string()),
        stat("Jobs completed (24 h)", &o.jobs.completed_24h.to_string()),
        stat("Tasks waiting", &queued.to_string()),
        stat("Dead tasks", &dead.to_string()),
        stat("Workers", &o.workers.to_string()),
        stat("Alerts firing", &o.alerts_firing.to_string()),
    ]
    .concat();
    let rows: Vec<Vec<String>> = o
        .upstreams
        .iter()
        .map(|u| {
            let q = &u.quota;
            vec![
                esc(&u.name),
                u.calls.to_string(),
                u.errors.to_string(),
                match (q.remaining_today, q.per_day) {
                    (Some(r), Some(d)) => format!("{r} / {d}"),
                    _ => "unlimited".into(),
                },
                pct(q.remaining_ratio),
                esc(q.resets_at.as_deref().unwrap_or("–")),
                esc(q.projected_exhaustion.as_deref().unwrap_or("–")),
            ]
        })
        .collect();
    let upstreams = table(
        &[
            "Upstream",
            "Calls",
            "Errors",
            "Quota left today",
            "Left",
            "Resets at",
            "Runs out at (today's rate)",
        ],
        &rows,
        "No upstream configured.",
    );
    let mut charts = vec![
        chart("requests_per_second", "Requests per second"),
        chart("hit_ratio", "Hit ratio"),
    ];
    for u in o.upstreams.iter().filter(|u| u.quota.per_day.is_some()) {
        charts.push(chart(
            &format!("quota_remaining:{}", u.name),
            &format!(
                "Quota left: {} (resets {})",
                u.name,
                u.quota.resets_at.as_deref().unwrap_or("–")
            ),
        ));
    }
    let qrows: Vec<Vec<String>> = o
        .queues
        .iter()
        .map(|q| {
            vec![
                link(&format!("/ui/queues/{}", seg(&q.name)), &q.name),
                q.ready.to_string(),
                q.delayed.to_string(),
                q.running.to_string(),
                q.dead.to_string(),
            ]
        })
        .collect();
    Ok(vec![
        live("ov-stats", format!("<div class=\"stats\">{stats}</div>")),
        live("ov-upstreams", format!("<h2>Upstreams</h2>{upstreams}")),
        fixed(
            "ov-charts",
            format!("<div class=\"charts\">{}</div>", charts.concat()),
        ),
        live(
            "ov-queues",
            format!(
                "<h2>Queues</h2>{}",
                table(
                    &["Queue", "Ready", "Delayed", "Running", "Dead"],
                    &qrows,
                    "No queue (this node runs no jobs)."
                )
            ),
        ),
    ])
}

async fn jobs(cx: &Cx<'_>) -> Result<Vec<Section>, ApiError> {
    if let Some(n) = no_jobs_note(cx.s) {
        return Ok(n);
    }
    let filter = api::jobs::JobFilter {
        q: None,
        status: None,
    };
    let page = json(
        api::jobs::list_jobs(cx.viewer(), State(cx.s.clone()), all(), Query(filter))
            .await?
            .0,
    );
    let rows: Vec<Vec<String>> = items(&page)
        .iter()
        .map(|j| {
            let name = t(j, "/name");
            let steps: Vec<String> = j
                .get("steps")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|s| t(s, "")).collect())
                .unwrap_or_default();
            let last = if j.pointer("/last/id").is_some() {
                format!(
                    "{} {}",
                    badge(&t(j, "/last/status")),
                    link(
                        &format!("/ui/executions/{}", t(j, "/last/id")),
                        &format!("#{}", t(j, "/last/id"))
                    )
                )
            } else {
                "never ran".into()
            };
            let mut row = vec![
                link(&format!("/ui/jobs/{}", seg(&name)), &name),
                e(j, "/description"),
                esc(&steps.join(" → ")),
                last,
            ];
            if cx.operator() {
                row.push(cx.form("run", &[("job", &name)], "Run", "primary"));
            }
            row
        })
        .collect();
    let mut head = vec!["Job", "Description", "Steps", "Last execution"];
    if cx.operator() {
        head.push("");
    }
    Ok(vec![live(
        "jobs-list",
        table(&head, &rows, "No job configured."),
    )])
}

async fn job(cx: &Cx<'_>, name: &str) -> Result<Vec<Section>, ApiError> {
    if let Some(n) = no_jobs_note(cx.s) {
        return Ok(n);
    }
    let d = api::jobs::get_job(
        cx.viewer(),
        State(cx.s.clone()),
        axum::extract::Path(name.to_owned()),
    )
    .await?
    .0;
    let steps: Vec<String> = d
        .pointer("/job/steps")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|s| format!("<li>{}</li>", e(s, ""))).collect())
        .unwrap_or_default();
    let info = format!(
        "<p>{}</p><h2>Steps</h2><ol class=\"steps\">{}</ol>",
        e(&d, "/job/description"),
        steps.concat()
    );
    let mut out = vec![fixed("job-info", info)];
    if cx.operator() {
        let params: String = d
            .get("params")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        format!(
                            "<label>{k} <input name=\"param.{k}\" value=\"{v}\"></label>",
                            k = esc(k),
                            v = esc(v.as_str().unwrap_or_default())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(fixed(
            "job-run",
            format!(
                "<h2>Run</h2><form method=\"post\" action=\"/ui/act/run\" class=\"run\">{csrf}\
                 <input type=\"hidden\" name=\"back\" value=\"{back}\">\
                 <input type=\"hidden\" name=\"job\" value=\"{job}\">{params}\
                 <label>More parameters (NAME=VALUE, one a line) <textarea name=\"extra\" rows=\"2\"></textarea></label>\
                 <label class=\"check\"><input type=\"checkbox\" name=\"rerun\" value=\"1\"> run a completed instance again</label>\
                 <button class=\"primary\" data-action=\"run\">Run {job}</button></form>",
                csrf = csrf_field(cx.p),
                back = esc(cx.here),
                job = esc(name),
            ),
        ));
    }
    let recent: Vec<Vec<String>> = d
        .get("recent")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    let id = t(x, "/id");
                    vec![
                        format!(
                            "<a class=\"exec\" href=\"/ui/executions/{}\">#{}</a>",
                            esc(&id),
                            esc(&id)
                        ),
                        badge(&t(x, "/status")),
                        e(x, "/created_at"),
                        e(x, "/ended_at"),
                        e(x, "/exit_message"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push(live(
        "job-recent",
        format!(
            "<h2>Recent executions</h2>{}",
            table(
                &["Execution", "Status", "Created", "Ended", "Exit"],
                &recent,
                "No execution yet."
            )
        ),
    ));
    let triggers = d
        .get("triggers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.push(live(
        "job-triggers",
        format!("<h2>Triggers</h2>{}", trigger_table(cx, &triggers)),
    ));
    Ok(out)
}

fn trigger_table(cx: &Cx<'_>, triggers: &[Value]) -> String {
    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|tr| {
            let id = t(tr, "/id");
            let job = t(tr, "/job");
            let paused = tr.get("paused").and_then(Value::as_bool).unwrap_or(false);
            let state = if paused {
                match tr.get("paused_until").and_then(Value::as_str) {
                    Some(u) => format!("<span class=\"badge s-paused\">paused</span> until {}", esc(u)),
                    None => "<span class=\"badge s-paused\">paused</span>".into(),
                }
            } else {
                "<span class=\"badge s-active\">active</span>".into()
            };
            let next: Vec<String> = tr
                .get("next")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|n| e(n, "")).collect())
                .unwrap_or_default();
            let last = if tr.pointer("/last_fire/at").is_some() {
                format!("{} ({})", e(tr, "/last_fire/at"), e(tr, "/last_fire/outcome"))
            } else {
                "–".into()
            };
            let mut row = vec![
                esc(&id),
                link(&format!("/ui/jobs/{}", seg(&job)), &job),
                e(tr, "/rule"),
                state,
                last,
                next.join("<br>"),
            ];
            if cx.operator() {
                let actions = if paused {
                    cx.form("resume", &[("trigger", &id)], "Resume", "")
                } else {
                    format!(
                        "{}<details class=\"until\"><summary class=\"button\" data-action=\"pause-until-open\">Pause until…</summary>\
                         <form method=\"post\" action=\"/ui/act/pause\" class=\"inline\">{csrf}\
                         <input type=\"hidden\" name=\"back\" value=\"{back}\">\
                         <input type=\"hidden\" name=\"trigger\" value=\"{id}\">\
                         <label>UTC <input type=\"datetime-local\" name=\"until\" required></label>\
                         <button data-action=\"pause-until\">Pause</button></form></details>",
                        cx.form("pause", &[("trigger", &id)], "Pause", ""),
                        csrf = csrf_field(cx.p),
                        back = esc(cx.here),
                        id = esc(&id),
                    )
                };
                row.push(actions);
            }
            row
        })
        .collect();
    let mut head = vec!["Trigger", "Job", "Rule", "State", "Last fire", "Next fires"];
    if cx.operator() {
        head.push("");
    }
    table(&head, &rows, "No trigger.")
}

async fn execution(cx: &Cx<'_>, id: i64) -> Result<Vec<Section>, ApiError> {
    if let Some(n) = no_jobs_note(cx.s) {
        return Ok(n);
    }
    let x = api::jobs::get_execution(cx.viewer(), State(cx.s.clone()), axum::extract::Path(id))
        .await?
        .0;
    let status = t(&x, "/execution/status");
    let job = t(&x, "/execution/job_name");
    let mut buttons = String::new();
    if cx.operator() {
        let ids = id.to_string();
        if matches!(status.as_str(), "STARTING" | "STARTED") {
            buttons.push_str(&cx.form("stop", &[("id", &ids)], "Stop", "danger"));
        }
        if matches!(status.as_str(), "FAILED" | "STOPPED" | "ABANDONED") {
            buttons.push_str(&cx.form("restart", &[("id", &ids)], "Restart", "primary"));
        }
    }
    let done = t(&x, "/progress/steps_done");
    let total = t(&x, "/progress/steps_total");
    let rate = x
        .pointer("/progress/read_per_second")
        .and_then(Value::as_f64)
        .map_or("–".into(), |r| format!("{r:.1}/s"));
    let params = x
        .pointer("/execution/params")
        .map(Value::to_string)
        .unwrap_or_default();
    let head = format!(
        "<p class=\"exec-status\">{badge} of {job} · {buttons}</p>\
         <dl class=\"facts\"><dt>Parameters</dt><dd><code>{params}</code></dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Started</dt><dd>{started}</dd><dt>Ended</dt><dd>{ended}</dd>\
         <dt>Exit</dt><dd>{exit}</dd><dt>Owner</dt><dd>{owner}</dd></dl>\
         <p>Steps {done} of {total} <progress value=\"{done}\" max=\"{total}\"></progress>\
         · read {read}, written {written}, skipped {skipped} · {rate} · current step: {current}</p>",
        badge = badge(&status),
        job = link(&format!("/ui/jobs/{}", seg(&job)), &job),
        params = esc(&params),
        created = e(&x, "/execution/created_at"),
        started = e(&x, "/execution/started_at"),
        ended = e(&x, "/execution/ended_at"),
        exit = e(&x, "/execution/exit_message"),
        owner = e(&x, "/execution/owner"),
        done = esc(&done),
        total = esc(&total),
        read = e(&x, "/progress/read"),
        written = e(&x, "/progress/written"),
        skipped = e(&x, "/progress/skipped"),
        rate = esc(&rate),
        current = match t(&x, "/progress/current_step") {
            c if c.is_empty() => "–".to_owned(),
            c => esc(&c),
        },
    );
    let steps = x
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tree = step_tree(&steps);
    let skips: Vec<Vec<String>> = x
        .get("skips")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|k| {
                    vec![
                        e(k, "/step_name"),
                        e(k, "/position"),
                        e(k, "/phase"),
                        e(k, "/reason"),
                        format!("<code>{}</code>", e(k, "/item")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let log: String = x
        .get("log")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|l| format!("<li><time>{}</time> {}</li>", e(l, "/at"), e(l, "/message")))
                .collect()
        })
        .unwrap_or_default();
    Ok(vec![
        live("ex-head", head),
        live("ex-steps", format!("<h2>Steps</h2>{tree}")),
        live(
            "ex-skips",
            format!(
                "<h2>Skipped items</h2>{}",
                table(
                    &["Step", "Position", "Phase", "Reason", "Item"],
                    &skips,
                    "No item skipped."
                )
            ),
        ),
        live(
            "ex-log",
            format!("<h2>Log</h2><ol class=\"log\">{log}</ol>"),
        ),
    ])
}

/// Steps as a tree: a partitioned step's partitions (`STEP:partition…`) under
/// it.
fn step_tree(steps: &[Value]) -> String {
    if steps.is_empty() {
        return "<p class=\"empty\">No step has started.</p>".into();
    }
    let one = |s: &Value, label: &str| {
        let c = |k: &str| t(s, &format!("/counts/{k}"));
        format!(
            "<span class=\"step-name\">{}</span> {} <span class=\"counts\">read {}, processed {}, filtered {}, written {}, skipped {}, {} commits, {} rollbacks</span> <span class=\"exit\">{}</span>",
            esc(label),
            badge(&t(s, "/status")),
            esc(&c("read")),
            esc(&c("processed")),
            esc(&c("filtered")),
            esc(&c("written")),
            esc(&c("skipped")),
            esc(&c("commits")),
            esc(&c("rollbacks")),
            e(s, "/exit_message"),
        )
    };
    let mut out = String::from("<ul class=\"tree\">");
    let mut i = 0;
    while i < steps.len() {
        let name = t(&steps[i], "/step_name");
        let (parent, _) = name.split_once(':').unwrap_or((&name, ""));
        let children: Vec<&Value> = steps[i..]
            .iter()
            .take_while(|s| {
                let n = t(s, "/step_name");
                n.split_once(':').is_some_and(|(p, _)| p == parent)
            })
            .collect();
        if children.is_empty() {
            out.push_str(&format!("<li>{}</li>", one(&steps[i], &name)));
            i += 1;
        } else {
            out.push_str(&format!(
                "<li><span class=\"step-name\">{}</span><ul>",
                esc(parent)
            ));
            for c in &children {
                let n = t(c, "/step_name");
                out.push_str(&format!("<li>{}</li>", one(c, &n)));
            }
            out.push_str("</ul></li>");
            i += children.len();
        }
    }
    out.push_str("</ul>");
    out
}

async fn schedule(cx: &Cx<'_>) -> Result<Vec<Section>, ApiError> {
    if let Some(n) = no_jobs_note(cx.s) {
        return Ok(n);
    }
    let f = api::jobs::TriggerFilter {
        job: None,
        paused: None,
    };
    let page = json(
        api::jobs::list_triggers(cx.viewer(), State(cx.s.clone()), all(), Query(f))
            .await?
            .0,
    );
    Ok(vec![live("sch-triggers", trigger_table(cx, &items(&page)))])
}

async fn queues(cx: &Cx<'_>) -> Result<Vec<Section>, ApiError> {
    if let Some(n) = no_jobs_note(cx.s) {
        return Ok(n);
    }
    let qs = api::queues::queue_views(cx.s).await?;
    let workers = api::queues::worker_views(cx.s).await?;
    let rows: Vec<Vec<String>> = qs
        .iter()
        .map(|q| {
            vec![
                link(&format!("/ui/queues/{}", seg(&q.name)), &q.name),
                q.ready.to_string(),
                q.delayed.to_string(),
                q.running.to_string(),
                if q.dead > 0 {
                    format!("<strong class=\"bad\">{}</strong>", q.dead)
                } else {
                    "0".into()
                },
                if q.paused { "paused" } else { "active" }.into(),
                q.workers.to_string(),
                q.oldest_dead_age_seconds
                    .map_or("–".into(), |a| format!("{a:.0} s")),
            ]
        })
        .collect();
    let wrows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                esc(&w.node),
                esc(&w.queues.join(", ")),
                esc(w.started_at.as_deref().unwrap_or("")),
                format!("{:.1} s", w.heartbeat_age_seconds),
            ]
        })
        .collect();
    let charts: String = qs
        .iter()
        .map(|q| {
            chart(
                &format!("queue_depth:{}", q.name),
                &format!("Depth of {}", q.name),
            )
        })
        .collect();
    Ok(vec![
        live(
            "q-list",
            table(
                &[
                    "Queue",
                    "Ready",
                    "Delayed",
                    "Running",
                    "Dead",
                    "State",
                    "Workers",
                    "Oldest dead",
                ],
                &rows,
                "No queue.",
            ),
        ),
        fixed("q-charts", format!("<div class=\"charts\">{charts}</div>")),
        live(
            "q-workers",
            format!(
                "<h2>Workers</h2>{}",
                table(
                    &["Node", "Queues", "Started", "Heartbeat"],
                    &wrows,
                    "No live worker."
                )
            ),
        ),
    ])
}

async fn queue(
    cx: &Cx<'_>,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Vec<Section>, ApiError> {
    if let Some(n) = no_jobs_note(cx.s) {
        return Ok(n);
    }
    let pick = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let (task, error) = (pick("task"), pick("error"));
    let f = api::queues::DeadFilter {
        task: task.clone(),
        error: error.clone(),
    };
    let page = json(
        api::queues::list_dead(
            cx.viewer(),
            State(cx.s.clone()),
            axum::extract::Path(name.to_owned()),
            all(),
            Query(f),
        )
        .await?
        .0,
    );
    let dead = items(&page);
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            let id = t(d, "/id");
            let mut row = vec![
                format!("<code>{}</code>", esc(&id)),
                e(d, "/name"),
                format!("{}/{}", e(d, "/attempt"), e(d, "/max_attempts")),
                e(d, "/created_at"),
                e(d, "/last_error"),
            ];
            if cx.operator() {
                let mut a = cx.form("retry", &[("queue", name), ("id", &id)], "Retry", "primary");
                if cx.admin() {
                    a.push_str(&confirm(
                        cx.p,
                        "delete",
                        cx.here,
                        &[("queue", name), ("id", &id)],
                        "Delete",
                        "Delete this task for good?",
                    ));
                }
                row.push(a);
            }
            row
        })
        .collect();
    let mut head = vec!["Task", "Handler", "Attempts", "Enqueued", "Last error"];
    if cx.operator() {
        head.push("");
    }
    let filter = format!(
        "<form method=\"get\" class=\"filter\"><label>Handler <input name=\"task\" value=\"{}\" placeholder=\"job.run\"></label>\
         <label>Error contains <input name=\"error\" value=\"{}\"></label><button>Filter</button></form>",
        esc(task.as_deref().unwrap_or("")),
        esc(error.as_deref().unwrap_or("")),
    );
    let mut out = vec![
        fixed(
            "q-chart",
            chart(&format!("queue_depth:{name}"), &format!("Depth of {name}")),
        ),
        fixed("q-filter", format!("<h2>Dead letters</h2>{filter}")),
        live("q-dead", table(&head, &rows, "No dead task matches.")),
    ];
    if cx.operator() {
        let fields = [
            ("queue", name),
            ("task", task.as_deref().unwrap_or("")),
            ("error", error.as_deref().unwrap_or("")),
            ("all", "1"),
        ];
        let preview = |kind: &str| {
            let vals = serde_json::json!({
                "queue": name, "task": task.as_deref().unwrap_or(""),
                "error": error.as_deref().unwrap_or(""), "kind": kind,
            })
            .to_string();
            format!(
                "<span class=\"preview\" hx-post=\"/ui/act/preview\" hx-trigger=\"toggle from:closest details\" hx-vals=\"{}\">counting…</span>",
                esc(&vals)
            )
        };
        let mut bulk = format!(
            "<details class=\"confirm\"><summary class=\"button\" data-action=\"retry-all-open\">Retry all matching…</summary>\
             <div class=\"confirm-body\">{} {}</div></details>",
            preview("retry"),
            cx.form("retry", &fields, "Confirm retry", "primary"),
        );
        if cx.admin() {
            bulk.push_str(&format!(
                "<details class=\"confirm\"><summary class=\"button danger\" data-action=\"delete-all-open\">Delete all matching…</summary>\
                 <div class=\"confirm-body\">{} {}</div></details>",
                preview("delete"),
                cx.form("delete", &fields, "Confirm delete", "danger"),
            ));
        }
        out.push(fixed("q-bulk", format!("<div class=\"bulk\">{bulk}</div>")));
    }
    Ok(out)
}

async fn cache(cx: &Cx<'_>) -> Result<Vec<Section>, ApiError> {
    let c = api::gateway::cache_view(cx.s).await?;
    let stats = [
        stat("Store", &c.store),
        stat("Entries", &c.entries.to_string()),
        stat(
            "Bytes",
            &match c.max_bytes {
                Some(m) => format!("{} of {m}", c.bytes),
                None => c.bytes.to_string(),
            },
        ),
        stat("In flight", &c.in_flight.to_string()),
        stat("Requests", &c.requests.to_string()),
        stat("Hit ratio", &pct(c.hit_ratio)),
        stat("Upstream calls saved", &c.calls_saved.to_string()),
        stat("Degraded", c.degraded.as_deref().unwrap_or("no")),
    ]
    .concat();
    let rows: Vec<Vec<String>> =
        cx.s.gateway
            .route_stats()
            .iter()
            .map(|r| {
                vec![
                    esc(&r.route),
                    esc(&r.path),
                    esc(&r.upstream),
                    r.total.to_string(),
                    pct(r.hit_ratio),
                    r.upstream_calls.to_string(),
                    r.calls_saved.to_string(),
                ]
            })
            .collect();
    let mut out = vec![
        live("c-stats", format!("<div class=\"stats\">{stats}</div>")),
        live(
            "c-routes",
            format!(
                "<h2>Routes</h2>{}",
                table(
                    &[
                        "Route",
                        "Path",
                        "Upstream",
                        "Requests",
                        "Hit ratio",
                        "Upstream calls",
                        "Calls saved"
                    ],
                    &rows,
                    "No route configured."
                )
            ),
        ),
    ];
    let top: Vec<Vec<String>> = api::gateway::top_keys(cx.s, 20)
        .iter()
        .map(|k| {
            vec![
                format!("<code>{}</code>", esc(&k.key)),
                esc(&k.route),
                k.requests.to_string(),
                k.hits.to_string(),
            ]
        })
        .collect();
    out.push(live(
        "c-top",
        format!(
            "<h2>Top keys</h2>{}",
            table(
                &["Key", "Route", "Requests", "Hits"],
                &top,
                "No request counted yet."
            )
        ),
    ));
    if cx.operator() {
        let one = |field: &str, label: &str, hint: &str| {
            format!(
                "<form method=\"post\" action=\"/ui/act/purge\" class=\"purge\">{csrf}\
                 <input type=\"hidden\" name=\"back\" value=\"{back}\">\
                 <label>{label} <input name=\"{field}\" placeholder=\"{hint}\" required></label>\
                 <button data-action=\"purge-{field}\">Purge</button></form>",
                csrf = csrf_field(cx.p),
                back = esc(cx.here),
            )
        };
        let mut forms =
            one("url", "Path and query", "/air/x?sidoName=…") + &one("key", "Exact key", "");
        if cx.admin() {
            let bulk = |field: &str, label: &str| {
                format!(
                    "<form method=\"post\" action=\"/ui/act/purge\" class=\"purge\">{csrf}\
                     <input type=\"hidden\" name=\"back\" value=\"{back}\">\
                     <label>{label} <input name=\"{field}\" required></label>\
                     <details class=\"confirm\"><summary class=\"button danger\" data-action=\"purge-{field}-open\">Purge…</summary>\
                     <div class=\"confirm-body\">Every entry of it goes. <button class=\"danger\" data-action=\"purge-{field}\">Confirm purge</button></div></details></form>",
                    csrf = csrf_field(cx.p),
                    back = esc(cx.here),
                )
            };
            forms.push_str(&bulk("route", "Whole route"));
            forms.push_str(&bulk("prefix", "Key prefix"));
        }
        out.push(fixed("c-purge", format!("<h2>Purge</h2>{forms}")));
    }
    Ok(out)
}

async fn audit(cx: &Cx<'_>, q: &HashMap<String, String>) -> Result<Vec<Section>, ApiError> {
    let pick = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let f = api::AuditQuery {
        actor: pick("actor"),
        action: pick("action"),
    };
    let filter = format!(
        "<form method=\"get\" class=\"filter\"><label>Who <input name=\"actor\" value=\"{}\"></label>\
         <label>Action starts with <input name=\"action\" value=\"{}\" placeholder=\"job.\"></label><button>Filter</button></form>",
        esc(f.actor.as_deref().unwrap_or("")),
        esc(f.action.as_deref().unwrap_or("")),
    );
    let page = json(
        api::audit_log(
            cx.viewer(),
            State(cx.s.clone()),
            Query(PageQuery {
                limit: Some(200),
                cursor: None,
            }),
            Query(f),
        )
        .await?
        .0,
    );
    let rows: Vec<Vec<String>> = items(&page)
        .iter()
        .map(|a| {
            vec![
                e(a, "/at"),
                format!("{} ({})", e(a, "/actor"), e(a, "/role")),
                e(a, "/action"),
                e(a, "/target"),
                e(a, "/detail"),
            ]
        })
        .collect();
    Ok(vec![
        fixed("audit-filter", filter),
        live(
            "audit-log",
            table(
                &["When", "Who", "Action", "Target", "Detail"],
                &rows,
                "Nothing recorded yet.",
            ),
        ),
    ])
}
