//! HTML building: escaping, the page layout, forms for actions.
//!
//! Every value put into a page goes through [`esc`]; the only unescaped parts
//! are this module's own markup and fragments built by these helpers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::assets;
use crate::config::Role;
use crate::http::api::Principal;

/// `s` with `& < > " '` replaced by entities: safe in text and in quoted
/// attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The navigation: `(path, label)`.
const NAV: &[(&str, &str)] = &[
    ("/ui", "Overview"),
    ("/ui/jobs", "Jobs"),
    ("/ui/schedule", "Schedule"),
    ("/ui/queues", "Queues"),
    ("/ui/cache", "Cache"),
    ("/ui/audit", "Audit"),
];

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"htmx-config\" content=\"{cfg}\">\
         <title>{title} · sluice</title>\
         <link rel=\"stylesheet\" href=\"{uc}\"><link rel=\"stylesheet\" href=\"{sc}\">\
         <script src=\"{hx}\" defer></script><script src=\"{up}\" defer></script>\
         <script src=\"{sj}\" defer></script></head>",
        cfg = esc(r#"{"includeIndicatorStyles":false,"allowEval":false}"#),
        title = esc(title),
        uc = assets::url("uPlot.min.css"),
        sc = assets::url("sluice.css"),
        hx = assets::url("htmx.min.js"),
        up = assets::url("uPlot.iife.min.js"),
        sj = assets::url("sluice.js"),
    )
}

/// A whole page for `p`: navigation, who is logged in, the flash message and
/// `body`. `page` is the path and query the live updates are for.
pub(super) fn layout(
    p: &Principal,
    page: &str,
    title: &str,
    flash: Option<&str>,
    body: &str,
) -> String {
    let path = page.split('?').next().unwrap_or(page);
    let nav: String = NAV
        .iter()
        .map(|(href, label)| {
            let here = if *href == "/ui" {
                path == "/ui" || path == "/ui/"
            } else {
                path.starts_with(href)
            };
            format!(
                "<a href=\"{href}\"{}>{label}</a>",
                if here { " class=\"here\"" } else { "" }
            )
        })
        .collect();
    let headers = serde_json::json!({ crate::http::api::auth::CSRF_HEADER: p.csrf }).to_string();
    let flash = flash.map_or(String::new(), |f| {
        let class = if f.starts_with("error") {
            "flash error"
        } else {
            "flash"
        };
        format!("<p class=\"{class}\" role=\"status\">{}</p>", esc(f))
    });
    format!(
        "{head}<body data-page=\"{page}\" hx-headers=\"{headers}\">\
         <header><strong class=\"brand\">sluice</strong><nav>{nav}</nav>\
         <span class=\"who\">{name} ({role})</span>\
         <form method=\"post\" action=\"/ui/logout\" class=\"inline\">{csrf}\
         <button class=\"link\" data-action=\"logout\">Log out</button></form></header>\
         <main><h1>{title}</h1>{flash}{body}</main></body></html>",
        head = head(title),
        page = esc(page),
        headers = esc(&headers),
        name = esc(&p.name),
        role = p.role.as_str(),
        csrf = csrf_field(p),
        title = esc(title),
    )
}

/// A small page standing alone (errors, the login form).
pub(super) fn bare(title: &str, body: &str) -> String {
    format!(
        "{}<body class=\"bare\"><main><h1>{}</h1>{body}</main></body></html>",
        head(title),
        esc(title)
    )
}

/// An HTML answer.
pub(super) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// A page saying `what` with a link to the dashboard.
pub(super) fn message_page(status: StatusCode, title: &str, what: &str) -> Response {
    html(
        status,
        bare(
            title,
            &format!(
                "<p class=\"flash error\">{}</p><p><a href=\"/ui\">Back to the dashboard</a> · <a href=\"/ui/login\">Log in</a></p>",
                esc(what)
            ),
        ),
    )
}

/// The hidden CSRF field of `p`'s forms.
pub(super) fn csrf_field(p: &Principal) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&p.csrf)
    )
}

/// Whether `p` may do what needs `role`: the page shows its buttons.
pub(super) fn may(p: &Principal, role: Role) -> bool {
    p.role >= role
}

/// A form posting `fields` (hidden) to `/ui/act/ACTION`, then back to `back`,
/// with one button `label`.
pub(super) fn action_form(
    p: &Principal,
    action: &str,
    back: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> String {
    let hidden: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    format!(
        "<form method=\"post\" action=\"/ui/act/{action}\" class=\"inline\">{csrf}\
         <input type=\"hidden\" name=\"back\" value=\"{back}\">{hidden}\
         <button class=\"{class}\" data-action=\"{action}\">{label}</button></form>",
        csrf = csrf_field(p),
        back = esc(back),
        label = esc(label),
    )
}

/// An action behind an inline confirmation: `label` opens it, `question` and
/// the confirming button are inside.
pub(super) fn confirm(
    p: &Principal,
    action: &str,
    back: &str,
    fields: &[(&str, &str)],
    label: &str,
    question: &str,
) -> String {
    format!(
        "<details class=\"confirm\"><summary class=\"button danger\" data-action=\"{action}-open\">{}</summary>\
         <div class=\"confirm-body\"><span>{}</span> {}</div></details>",
        esc(label),
        esc(question),
        action_form(p, action, back, fields, "Confirm", "danger"),
    )
}

/// A table of `head` columns and `rows` (cells already HTML); `empty` when no
/// row.
pub(super) fn table(head: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let th: String = head
        .iter()
        .map(|h| format!("<th>{}</th>", esc(h)))
        .collect();
    let body: String = rows
        .iter()
        .map(|r| {
            let td: String = r.iter().map(|c| format!("<td>{c}</td>")).collect();
            format!("<tr>{td}</tr>")
        })
        .collect();
    format!("<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")
}

/// A figure: `label` over `value` (escaped).
pub(super) fn stat(label: &str, value: &str) -> String {
    format!(
        "<div class=\"stat\"><span class=\"label\">{}</span><span class=\"value\">{}</span></div>",
        esc(label),
        esc(value)
    )
}

/// A ratio as a percentage, `–` without one.
pub(super) fn pct(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:.1}%", r * 100.0))
}

/// A status badge.
pub(super) fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge s-{}\">{}</span>",
        esc(&status.to_ascii_lowercase()),
        esc(status)
    )
}

/// A link to `href` (escaped) reading `text` (escaped).
pub(super) fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

/// A chart of series `series` drawn by the page's script.
pub(super) fn chart(series: &str, title: &str) -> String {
    format!(
        "<figure class=\"chart\" data-series=\"{}\"><figcaption>{}</figcaption><div class=\"plot\"></div></figure>",
        esc(series),
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(esc("서울 ok"), "서울 ok");
    }
}
