//! Routes: a path pattern mapped to an upstream with a cache policy.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::metrics::RouteMetrics;
use sluice_upstream::Upstream;

/// How long a response stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// A fixed duration.
    Fixed(Duration),
    /// Whatever the upstream's `Cache-Control` (`s-maxage`, `max-age`) or `Expires`
    /// says; `no-store` and `private` are not stored; no information means not fresh.
    Upstream,
}

/// Everything needed to add a route to a gateway.
#[derive(Debug)]
pub struct RouteSpec {
    /// Unique name; the first part of every key of the route (purge by route uses
    /// it). No whitespace.
    pub name: String,
    /// Path pattern in matchit syntax: `/air/{*rest}`, `/stations/{id}`.
    pub path: String,
    /// The upstream to call.
    pub upstream: Arc<Upstream>,
    /// Path appended to the upstream's base URL, with `{param}` placeholders from
    /// the pattern. Default: the catch-all parameter's value, or nothing.
    pub upstream_path: Option<String>,
    /// Fixed query parameters added to every upstream call (e.g. `returnType=json`).
    pub query: Vec<(String, String)>,
    /// Freshness.
    pub ttl: Ttl,
    /// Stale-while-revalidate window after freshness ends.
    pub stale_while_revalidate: Duration,
    /// Stale-if-error window after freshness ends.
    pub stale_if_error: Duration,
    /// Freshness of 404 and 410 answers (negative caching); zero disables it.
    pub negative_ttl: Duration,
    /// Query parameters that form the key and are forwarded; `None` keys and
    /// forwards all of them.
    pub key_query: Option<Vec<String>>,
    /// Request headers that form the key and are forwarded (lower case).
    pub vary: Vec<HeaderName>,
    /// Store 3xx answers (except 304) like 200s. Off by default: redirects are
    /// passed through, with their `Location`, and not stored.
    pub cache_redirects: bool,
}

/// Paths served by sluice itself, never by a route.
pub const RESERVED_PATHS: [&str; 6] = ["/admin", "/api", "/metrics", "/healthz", "/readyz", "/ui"];

/// Whether a canonical path (see [`crate::key::canonical_path`]) is one of
/// [`RESERVED_PATHS`] or below one: its first segment names a reserved path.
pub fn is_reserved(canonical: &str) -> bool {
    let first = canonical
        .strip_prefix('/')
        .unwrap_or(canonical)
        .split('/')
        .next()
        .unwrap_or("");
    RESERVED_PATHS
        .iter()
        .any(|r| r.strip_prefix('/') == Some(first))
}

/// Request headers a route may not vary on (and so forward): hop-by-hop and
/// framing headers, which belong to each connection, not to the request.
pub const UNFORWARDABLE_HEADERS: [&str; 9] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "expect",
];

/// A mistake in a route, found before it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProblem {
    /// The field at fault (`path`, `upstream_path`, `query`, `key_query`, `vary`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// One piece of an `upstream_path` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

/// Splits an `upstream_path` template into text and `{param}` / `{*param}` pieces.
fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("{t:?} has a '}}' without a '{{'"));
        }
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{t:?} has a '{{' without a '}}'"))?;
        let name = after[..close].trim_start_matches('*');
        if name.is_empty() || name.contains('{') {
            return Err(format!("{t:?} has an empty or nested placeholder"));
        }
        out.push(Piece::Param(name.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Ok(out)
}

/// Names of the `{param}` / `{*param}` placeholders of a matchit pattern.
fn pattern_params(path: &str) -> Vec<String> {
    parse_template(path)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Param(n) => Some(n),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Every mistake in `spec` that would let a client steer what is sent upstream,
/// or shadow sluice's own paths.
pub fn check_route(spec: &RouteSpec) -> Vec<RouteProblem> {
    let mut out = Vec::new();
    let mut bad = |field, message: String| out.push(RouteProblem { field, message });
    let literal = spec.path.split('{').next().unwrap_or("");
    for r in RESERVED_PATHS {
        let lit = literal.trim_end_matches('/');
        if lit == r || lit.starts_with(&format!("{r}/")) {
            bad(
                "path",
                format!(
                    "{:?} is under {r}, which sluice serves itself; reserved: {}",
                    spec.path,
                    RESERVED_PATHS.join(", ")
                ),
            );
        }
    }
    let params = pattern_params(&spec.path);
    if let Some(t) = &spec.upstream_path {
        match parse_template(t) {
            Err(e) => bad("upstream_path", e),
            Ok(pieces) => {
                for p in &pieces {
                    if let Piece::Param(n) = p
                        && !params.contains(n)
                    {
                        bad(
                            "upstream_path",
                            format!(
                                "{{{n}}} is not a parameter of the route path {:?} (it has: {})",
                                spec.path,
                                if params.is_empty() {
                                    "none".to_owned()
                                } else {
                                    params.join(", ")
                                }
                            ),
                        );
                    }
                }
            }
        }
        if t.split(['/', '?']).any(|seg| {
            let d = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
            d == "." || d == ".."
        }) {
            bad("upstream_path", format!("{t:?} has a '.' or '..' segment"));
        }
        if t.contains('?') || t.contains('#') {
            bad(
                "upstream_path",
                format!("{t:?} may not carry a query or fragment; use query = {{ … }}"),
            );
        }
    }
    let secrets: Vec<&str> = spec.upstream.secret_query_names().collect();
    let is_secret = |n: &str| secrets.iter().any(|s| s.eq_ignore_ascii_case(n));
    for (n, _) in &spec.query {
        if is_secret(n) {
            bad(
                "query",
                format!(
                    "{n:?} is a secret parameter of upstream {}; it is injected by sluice and cannot be set here",
                    spec.upstream.name()
                ),
            );
        }
    }
    for n in spec.key_query.iter().flatten() {
        if is_secret(n) {
            bad(
                "key_query",
                format!(
                    "{n:?} is a secret parameter of upstream {}; clients may never set it",
                    spec.upstream.name()
                ),
            );
        }
    }
    for h in &spec.vary {
        let name = h.as_str();
        if spec
            .upstream
            .secret_header_names()
            .any(|s| s.as_str().eq_ignore_ascii_case(name))
        {
            bad(
                "vary",
                format!(
                    "{name:?} is a secret header of upstream {}; clients may never set it",
                    spec.upstream.name()
                ),
            );
        } else if UNFORWARDABLE_HEADERS.contains(&name) || name.starts_with("proxy-") {
            bad(
                "vary",
                format!("{name:?} is a hop-by-hop or framing header and cannot be forwarded"),
            );
        }
    }
    out
}

/// A route inside a running gateway.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) spec: RouteSpec,
    /// Canonically encoded `key_query` names.
    pub(crate) key_query: Option<Vec<String>>,
    /// Canonically encoded names of the upstream's secret parameters, which
    /// clients may not send.
    pub(crate) secret_names: Vec<String>,
    /// Canonically encoded fixed query.
    pub(crate) fixed_query: Vec<crate::key::Param>,
    pub(crate) catch_all: Option<String>,
    template: Option<Vec<Piece>>,
    pub(crate) metrics: RouteMetrics,
}

impl Route {
    pub(crate) fn new(spec: RouteSpec) -> Self {
        let key_query = spec.key_query.as_ref().map(|names| {
            let mut v: Vec<String> = names
                .iter()
                .map(|n| sluice_upstream::encode_component(n))
                .collect();
            v.sort();
            v
        });
        let fixed_query = spec
            .query
            .iter()
            .map(|(n, v)| crate::key::Param {
                name: sluice_upstream::encode_component(n),
                value: sluice_upstream::encode_component(v),
            })
            .collect();
        let secret_names = spec
            .upstream
            .secret_query_names()
            .map(sluice_upstream::encode_component)
            .collect();
        let catch_all = spec
            .path
            .split('/')
            .find_map(|s| s.strip_prefix("{*").and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned);
        let metrics = RouteMetrics::new(&spec.name);
        let template = spec
            .upstream_path
            .as_deref()
            .and_then(|t| parse_template(t).ok());
        Self {
            spec,
            key_query,
            secret_names,
            fixed_query,
            catch_all,
            template,
            metrics,
        }
    }

    /// The upstream path suffix for matched parameters.
    pub(crate) fn suffix(&self, params: &matchit::Params<'_, '_>) -> String {
        match &self.template {
            // One pass: a value is never searched for placeholders again.
            Some(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => s.push_str(t),
                        Piece::Param(n) => s.push_str(params.get(n).unwrap_or("")),
                    }
                }
                s
            }
            None => match &self.catch_all {
                Some(name) => params.get(name).unwrap_or("").to_owned(),
                None => String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_pieces() {
        assert_eq!(
            parse_template("/a/{id}/b/{*rest}").unwrap(),
            vec![
                Piece::Text("/a/".into()),
                Piece::Param("id".into()),
                Piece::Text("/b/".into()),
                Piece::Param("rest".into())
            ]
        );
        for bad in ["/a/{id", "/a/id}", "/a/{}", "/{{x}}"] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
        assert_eq!(pattern_params("/x/{a}/{*b}"), vec!["a", "b"]);
    }

    #[test]
    fn reserved_paths_by_first_segment() {
        for p in ["/admin", "/admin/", "/api/v1/x", "/ui", "/readyz/"] {
            assert!(is_reserved(p), "{p}");
        }
        for p in ["/", "/administrator", "/air/admin", "/apix"] {
            assert!(!is_reserved(p), "{p}");
        }
    }
}
