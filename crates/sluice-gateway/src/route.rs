//! Routes: a path pattern mapped to an upstream with a cache policy.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::metrics::RouteMetrics;
use crate::upstream::Upstream;

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
    pub(crate) metrics: RouteMetrics,
}

impl Route {
    pub(crate) fn new(spec: RouteSpec) -> Self {
        let key_query = spec.key_query.as_ref().map(|names| {
            let mut v: Vec<String> = names
                .iter()
                .map(|n| crate::key::encode_component(n))
                .collect();
            v.sort();
            v
        });
        let fixed_query = spec
            .query
            .iter()
            .map(|(n, v)| crate::key::Param {
                name: crate::key::encode_component(n),
                value: crate::key::encode_component(v),
            })
            .collect();
        let secret_names = spec
            .upstream
            .secret_query_names()
            .map(crate::key::encode_component)
            .collect();
        let catch_all = spec
            .path
            .split('/')
            .find_map(|s| s.strip_prefix("{*").and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned);
        let metrics = RouteMetrics::new(&spec.name);
        Self {
            spec,
            key_query,
            secret_names,
            fixed_query,
            catch_all,
            metrics,
        }
    }

    /// The upstream path suffix for matched parameters.
    pub(crate) fn suffix(&self, params: &matchit::Params<'_, '_>) -> String {
        match &self.spec.upstream_path {
            Some(t) => {
                let mut s = t.clone();
                for (k, v) in params.iter() {
                    s = s.replace(&format!("{{{k}}}"), v);
                    s = s.replace(&format!("{{*{k}}}"), v);
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
