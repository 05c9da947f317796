//! `[[route]]`: the paths the gateway serves, checked into [`RouteSpec`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_spanned::Spanned;
use sluice_gateway::{RouteSpec, Ttl};
use sluice_upstream::Upstream;

use super::values::{Dur, parse_duration};
use super::{ConfigError, Source, none_or_list, span};

/// `ttl = "10m"` or `ttl = "upstream"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTtl(pub Ttl);

impl<'de> Deserialize<'de> for RawTtl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "upstream" {
            return Ok(RawTtl(Ttl::Upstream));
        }
        parse_duration(&s)
            .map(|d| RawTtl(Ttl::Fixed(d)))
            .map_err(|e| de::Error::custom(format!("{e}, or \"upstream\"")))
    }
}

/// `[[route]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name without spaces, the first part of the route's keys. Default:
    /// the path.
    pub name: Option<Spanned<String>>,
    /// Path pattern: `/air/{*rest}` (catch-all), `/station/{id}` (one segment).
    pub path: Spanned<String>,
    /// Name of the upstream.
    pub upstream: Spanned<String>,
    /// Path appended to the upstream's base URL, with `{param}` placeholders.
    /// Default: the catch-all parameter's value. Every placeholder must be a
    /// parameter of `path`; no `.` or `..` segments, no query.
    pub upstream_path: Option<Spanned<String>>,
    /// Fixed query parameters added to every upstream call
    /// (`{ returnType = "json" }`); not a secret parameter of the upstream.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Freshness: a duration, or `"upstream"` to follow `Cache-Control`
    /// (`s-maxage`, `max-age`, `no-store`, `private`) / `Expires`.
    pub ttl: RawTtl,
    /// Serve stale this long after freshness ends while one background call
    /// refreshes. Default `0s`.
    pub stale_while_revalidate: Option<Dur>,
    /// Serve stale this long after freshness ends when the upstream fails, times
    /// out or fails `ok_when`. Default `0s`.
    pub stale_if_error: Option<Dur>,
    /// Freshness of 404 and 410 answers. Default `30s`; `"0s"` disables.
    pub negative_ttl: Option<Dur>,
    /// Query parameters that form the key and are forwarded (the others are
    /// dropped). Not a secret parameter of the upstream. Default: all of them.
    pub key_query: Option<Vec<String>>,
    /// Request headers that form the key and are forwarded. Not a secret header
    /// of the upstream, nor a hop-by-hop or framing header (`Host`, `Connection`,
    /// `Content-Length`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`,
    /// `Keep-Alive`, `Expect`, `Proxy-*`).
    #[serde(default)]
    pub vary: Vec<Spanned<String>>,
    /// Store 3xx answers (except 304) with the route's TTL. Default `false`:
    /// redirects are passed through with their `Location` and not stored.
    #[serde(default)]
    pub cache_redirects: bool,
}

impl RawRoute {
    /// Checks route number `i` against the built `upstreams`; `defined` names
    /// every upstream of the file, built or not (a route of a broken upstream
    /// reports nothing more: no cascade).
    pub(super) fn check(
        &self,
        i: usize,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        defined: &[&str],
        src: &Source,
        errs: &mut Vec<ConfigError>,
    ) -> Option<RouteSpec> {
        let at = |k: &str| format!("route[{i}].{k}");
        let r = self;
        let Some(upstream) = upstreams.get(r.upstream.get_ref()).cloned() else {
            if defined.contains(&r.upstream.get_ref().as_str()) {
                // Defined, but its own errors are reported already: no cascade.
                return None;
            }
            let known: Vec<&str> = defined.to_vec();
            errs.push(src.err(
                span(&r.upstream),
                at("upstream"),
                format!(
                    "unknown upstream {:?}; defined upstreams: {}",
                    r.upstream.get_ref(),
                    none_or_list(&known)
                ),
            ));
            return None;
        };
        let path = r.path.get_ref();
        if !path.starts_with('/') {
            errs.push(src.err(
                span(&r.path),
                at("path"),
                "a route path must start with '/'",
            ));
            return None;
        }
        let mut vary = Vec::new();
        for v in &r.vary {
            match http::HeaderName::from_bytes(v.get_ref().to_ascii_lowercase().as_bytes()) {
                Ok(h) => vary.push(h),
                Err(_) => errs.push(src.err(
                    span(v),
                    at("vary"),
                    format!("{:?} is not a valid header name", v.get_ref()),
                )),
            }
        }
        let spec = RouteSpec {
            name: r
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_else(|| path.clone()),
            path: path.clone(),
            upstream,
            upstream_path: r.upstream_path.as_ref().map(|p| p.get_ref().clone()),
            query: r
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ttl: r.ttl.0,
            stale_while_revalidate: r.stale_while_revalidate.map(|d| d.0).unwrap_or_default(),
            stale_if_error: r.stale_if_error.map(|d| d.0).unwrap_or_default(),
            negative_ttl: r
                .negative_ttl
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
            key_query: r.key_query.clone(),
            vary,
            cache_redirects: r.cache_redirects,
        };
        let problems = sluice_gateway::route::check_route(&spec);
        for p in &problems {
            let at_span = match p.field {
                "path" => span(&r.path),
                "vary" => r
                    .vary
                    .iter()
                    .find(|v| {
                        p.message
                            .contains(&format!("{:?}", v.get_ref().to_ascii_lowercase()))
                    })
                    .and_then(span),
                "upstream_path" => r.upstream_path.as_ref().and_then(span),
                _ => r.name.as_ref().and_then(span).or_else(|| span(&r.path)),
            };
            errs.push(src.err(at_span, at(p.field), p.message.clone()));
        }
        problems.is_empty().then_some(spec)
    }
}
