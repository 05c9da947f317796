//! The request flow, phase by phase.
//!
//! ```text
//! request_filter ─▶ match route ─▶ cache_key ─▶ lookup ─┬─ fresh ─────────────▶ respond (hit)
//!                                                       ├─ stale, revalidate ─▶ respond (stale) + refresh in background
//!                                                       └─ stale / miss ──────▶ coalesce ─▶ quota ─▶ upstream ─▶ ok_when
//!                                                                                  └─▶ store ─▶ respond (miss)
//!                                                              upstream failed ─▶ stale within stale_if_error, else error
//! ```
//!
//! Each phase is a method on [`Gateway`], in that order (see `docs/gateway-phases.md`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use sluice_cache::{
    Acquire, CacheTarget, Coalescer, Entry, Freshness, KeyError, KeyErrorKind, PutOutcome,
    SharedFlights, Store, StoreError, StoreStats,
};
use sluice_core::{Clock, SystemClock};

use crate::access::{AccessLog, AccessLogSpec, Answered};
use crate::error::{ErrorKind, GatewayError};
use crate::key::{self, Param};
use crate::metrics;
use crate::metrics::{RouteStats, TopKey};
use crate::outcome::{CacheOutcome, CacheStatus, NoCacheReason, StaleReason};
use crate::route::{Route, RouteSpec, Ttl};
use sluice_upstream::{Caller, Upstream, UpstreamErrorKind, UpstreamResponse};

/// Response headers kept in an entry and replayed to clients. The upstream has
/// scrubbed every secret from them already.
const KEPT_HEADERS: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_LANGUAGE,
    header::CONTENT_DISPOSITION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_ENCODING,
    header::LOCATION,
];

/// What a leader's upstream call produced, shared with its followers.
#[derive(Debug, Clone)]
struct Fetched {
    entry: Arc<Entry>,
    stored: Result<(), NoCacheReason>,
    /// Another node (or an earlier flight) fetched it; this request only waited.
    remote: bool,
}

type FlightResult = Result<Fetched, GatewayError>;

/// Routes that cannot make a gateway (a conflict, an invalid pattern, a name
/// used twice), with the message naming the route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// What is wrong, naming the route.
    pub message: String,
}

impl BuildError {
    fn new(message: String) -> Self {
        Self { message }
    }
}

/// Builder for [`Gateway`].
pub struct GatewayBuilder {
    routes: Vec<RouteSpec>,
    store: Option<Arc<dyn Store>>,
    flights: Option<Arc<SharedFlights>>,
    clock: Arc<dyn Clock>,
    access: Option<AccessLogSpec>,
}

impl GatewayBuilder {
    /// Writes an access log line for each request answered (default: none); see
    /// [`crate::access`]. [`Gateway::open_access_log`] opens it, else the first
    /// request does.
    pub fn access_log(mut self, spec: AccessLogSpec) -> Self {
        self.access = Some(spec);
        self
    }

    /// Coalesces misses across nodes through Redis locks (default: this process
    /// only).
    pub fn shared_flights(mut self, flights: Arc<SharedFlights>) -> Self {
        self.flights = Some(flights);
        self
    }

    /// Adds a route; routes are matched by pattern, most specific first.
    pub fn route(mut self, route: RouteSpec) -> Self {
        self.routes.push(route);
        self
    }

    /// The store (default: a 256 MiB memory store).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the gateway.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] when two routes conflict, a pattern is invalid or a name
    /// repeats.
    pub fn build(self) -> Result<Gateway, BuildError> {
        let mut router = matchit::Router::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, spec) in self.routes.into_iter().enumerate() {
            if let Some(p) = crate::route::check_route(&spec).into_iter().next() {
                return Err(BuildError::new(format!(
                    "route {:?} {}: {}",
                    spec.name, p.field, p.message
                )));
            }
            if spec.name.is_empty() || spec.name.chars().any(char::is_whitespace) {
                return Err(BuildError::new(format!(
                    "route name {:?} must be non-empty and contain no whitespace",
                    spec.name
                )));
            }
            if routes.iter().any(|r: &Route| r.spec.name == spec.name) {
                return Err(BuildError::new(format!(
                    "route name {:?} is used twice",
                    spec.name
                )));
            }
            router.insert(spec.path.clone(), i).map_err(|e| {
                BuildError::new(format!("route {:?} path {:?}: {e}", spec.name, spec.path))
            })?;
            routes.push(Route::new(spec));
        }
        let store = self.store.unwrap_or_else(|| {
            Arc::new(
                sluice_cache::MemoryStore::builder()
                    .clock(self.clock.clone())
                    .build(),
            )
        });
        Ok(Gateway {
            inner: Arc::new(Inner {
                routes,
                router,
                store,
                clock: self.clock,
                flights: Coalescer::new(),
                shared: self.flights,
                access: self.access.map(AccessLog::new),
            }),
        })
    }
}

struct Inner {
    routes: Vec<Route>,
    router: matchit::Router<usize>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    flights: Coalescer<FlightResult>,
    shared: Option<Arc<SharedFlights>>,
    access: Option<AccessLog>,
}

/// The caching gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.inner.routes.len())
            .field("store", &self.inner.store.kind())
            .finish()
    }
}

/// A matched, validated request.
struct Prepared {
    route: usize,
    key: String,
    suffix: String,
    query: String,
    forward: HeaderMap,
    head: bool,
}

/// Result of a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged(pub u64);

impl Gateway {
    /// A builder with no routes.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            routes: Vec::new(),
            store: None,
            flights: None,
            clock: Arc::new(SystemClock),
            access: None,
        }
    }

    /// The access log, when configured.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.inner.access.as_ref()
    }

    /// Opens the access log, when configured (else does nothing), so that a
    /// target that cannot be written fails at start, not at the first request.
    ///
    /// # Errors
    ///
    /// When its file cannot be opened for appending.
    pub fn open_access_log(&self) -> std::io::Result<()> {
        self.inner.access.as_ref().map_or(Ok(()), AccessLog::open)
    }

    /// The store entries live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Names of the configured routes.
    pub fn route_names(&self) -> Vec<String> {
        self.inner
            .routes
            .iter()
            .map(|r| r.spec.name.clone())
            .collect()
    }

    /// Every route's requests by outcome, hit ratio and upstream calls saved,
    /// in configuration order.
    pub fn route_stats(&self) -> Vec<RouteStats> {
        self.inner
            .routes
            .iter()
            .map(|r| {
                let mut s = r.metrics.stats(r.spec.upstream.name());
                s.path.clone_from(&r.spec.path);
                s
            })
            .collect()
    }

    /// The most requested keys over all routes, most first.
    pub fn top_keys(&self, limit: usize) -> Vec<TopKey> {
        let mut all: Vec<TopKey> = self
            .inner
            .routes
            .iter()
            .flat_map(|r| r.metrics.top_keys(limit))
            .collect();
        all.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.key.cmp(&b.key)));
        all.truncate(limit);
        all
    }

    /// The distinct upstreams of all routes.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut out: Vec<Arc<Upstream>> = Vec::new();
        for r in &self.inner.routes {
            if !out.iter().any(|u| Arc::ptr_eq(u, &r.spec.upstream)) {
                out.push(r.spec.upstream.clone());
            }
        }
        out
    }

    /// Handles one proxied request.
    pub async fn handle(&self, req: Request<Body>) -> Response {
        let started = std::time::Instant::now();
        let prepared = match self.request_filter(&req) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "request refused");
                let resp = e.into_response();
                // sluice's own paths are not the gateway's requests: not logged.
                if let Some(log) = &self.inner.access
                    && !key::canonical_path(req.uri().path())
                        .is_ok_and(|p| crate::route::is_reserved(&p))
                {
                    let now = self.inner.clock.now_millis();
                    log.record(&Answered::new(&req, None, started, now), &resp);
                }
                return resp;
            }
        };
        let route = &self.inner.routes[prepared.route];
        let (resp, outcome) = self.serve(&prepared).await;
        route.metrics.request(outcome);
        route.metrics.key_request(&prepared.key, outcome);
        tracing::debug!(route = %route.spec.name, cache_status = outcome.as_str(),
            status = resp.status().as_u16(), "served");
        if let Some(log) = &self.inner.access {
            let served = Some((route.spec.name.as_str(), prepared.key.as_str(), outcome));
            let now = self.inner.clock.now_millis();
            log.record(&Answered::new(&req, served, started, now), &resp);
        }
        resp
    }

    /// Phase 1: refuse what is not ours, match a route, build the key.
    fn request_filter(&self, req: &Request<Body>) -> Result<Prepared, GatewayError> {
        let uri = req.uri();
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(GatewayError::new(
                ErrorKind::BadRequest,
                "absolute-form request targets are not accepted; send the path only",
            ));
        }
        let path = key::canonical_path(uri.path())?;
        if crate::route::is_reserved(&path) {
            // sluice's own paths are never proxied, whatever the routes say.
            return Err(GatewayError::new(
                ErrorKind::NoRoute,
                format!("{path} is reserved for sluice and what serves it is not enabled"),
            ));
        }
        let matched =
            self.inner.router.at(&path).map_err(|_| {
                GatewayError::new(ErrorKind::NoRoute, format!("no route for {path}"))
            })?;
        let idx = *matched.value;
        let route = &self.inner.routes[idx];
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                return Err(GatewayError::new(
                    ErrorKind::MethodNotAllowed,
                    "only GET and HEAD are served",
                ));
            }
        };
        let suffix = route.suffix(&matched.params);
        let params = key::canonical_query(uri.query())?;
        let query = self.cache_key_query(route, params);
        let mut vary = Vec::with_capacity(route.spec.vary.len());
        let mut forward = HeaderMap::new();
        for h in &route.spec.vary {
            if let Some(v) = req.headers().get(h) {
                let text = v.to_str().unwrap_or("").trim().to_owned();
                forward.insert(h.clone(), v.clone());
                vary.push((h.as_str().to_owned(), text));
            }
        }
        let key = key::build_key(&route.spec.name, "GET", &path, &query, &vary);
        Ok(Prepared {
            route: idx,
            key,
            suffix,
            query,
            forward,
            head,
        })
    }

    /// Phase 2: the key's query part, which is also what is forwarded: the route's
    /// `key_query` parameters (or all), never a secret parameter, plus fixed ones.
    fn cache_key_query(&self, route: &Route, params: Vec<Param>) -> String {
        let mut kept: Vec<Param> = params
            .into_iter()
            .filter(|p| {
                !route
                    .secret_names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&p.name))
            })
            .filter(|p| {
                route
                    .key_query
                    .as_ref()
                    .is_none_or(|names| names.binary_search(&p.name).is_ok())
            })
            .filter(|p| {
                !route
                    .fixed_query
                    .iter()
                    .any(|f| f.name.eq_ignore_ascii_case(&p.name))
            })
            .collect();
        kept.extend(route.fixed_query.iter().cloned());
        kept.sort();
        key::join_query(&kept)
    }

    /// Phases 3 to 6: lookup, decide, fetch, respond.
    async fn serve(&self, p: &Prepared) -> (Response, CacheOutcome) {
        let route = &self.inner.routes[p.route];
        let now = self.inner.clock.now_millis();
        let cached = match self.inner.store.get(&p.key).await {
            Ok(c) => c,
            Err(e) => {
                store_failed(&self.inner, "get", &e);
                None
            }
        };
        let fallback = match cached {
            Some(e) => match e.freshness(now) {
                Freshness::Fresh { .. } => {
                    let status = CacheStatus {
                        hit: true,
                        ttl: Some(e.ttl_secs(now)),
                        ..Default::default()
                    };
                    return (self.respond(&e, now, &status, p.head), CacheOutcome::Hit);
                }
                Freshness::StaleRevalidate => {
                    self.revalidate_in_background(p);
                    let status = CacheStatus {
                        hit: true,
                        ttl: Some(e.ttl_secs(now)),
                        detail: Some(StaleReason::Revalidating.as_str()),
                        ..Default::default()
                    };
                    return (
                        self.respond(&e, now, &status, p.head),
                        CacheOutcome::Stale(StaleReason::Revalidating),
                    );
                }
                Freshness::StaleIfError => Some(e),
                Freshness::Expired => None,
            },
            None => None,
        };
        let (result, local_follower) = self.fetch(p).await;
        let collapsed = local_follower || result.as_ref().is_ok_and(|f| f.remote);
        if collapsed {
            route.metrics.coalesced.increment(1);
        }
        let now = self.inner.clock.now_millis();
        match result {
            Ok(f) => {
                let status = CacheStatus {
                    fwd: Some(if fallback.is_some() { "stale" } else { "miss" }),
                    fwd_status: Some(f.entry.status),
                    ttl: f.stored.is_ok().then(|| f.entry.ttl_secs(now)),
                    stored: f.stored.is_ok() && !collapsed,
                    collapsed,
                    detail: f.stored.err().map(NoCacheReason::as_str),
                    ..Default::default()
                };
                let outcome = match f.stored {
                    Err(r @ (NoCacheReason::RouteDisabled | NoCacheReason::TooLarge)) => {
                        CacheOutcome::Bypass(r)
                    }
                    _ => CacheOutcome::Miss,
                };
                (self.respond(&f.entry, now, &status, p.head), outcome)
            }
            Err(err) => self.fail_to_upstream(p, err, fallback, now).await,
        }
    }

    /// Phase 6b: the upstream failed; serve stale when allowed, else the error.
    async fn fail_to_upstream(
        &self,
        p: &Prepared,
        err: GatewayError,
        fallback: Option<Arc<Entry>>,
        now: i64,
    ) -> (Response, CacheOutcome) {
        let quota = matches!(
            err.kind,
            ErrorKind::Upstream(UpstreamErrorKind::QuotaExceeded { .. })
        );
        // A quota refusal may use any entry still held; other failures only one in
        // its stale window (the store may hold one we have not looked at yet when the
        // failure came from a coalesced call).
        let fallback = match fallback {
            Some(f) => Some(f),
            None => self
                .inner
                .store
                .get(&p.key)
                .await
                .ok()
                .flatten()
                .filter(|e| e.freshness(now) != Freshness::Expired),
        };
        if let Some(e) = fallback.filter(|e| e.freshness(now) != Freshness::Expired) {
            let reason = if quota {
                StaleReason::QuotaExceeded
            } else {
                StaleReason::UpstreamError
            };
            let status = CacheStatus {
                fwd: Some("stale"),
                fwd_status: err.fwd_status(),
                ttl: Some(e.ttl_secs(now)),
                detail: Some(reason.as_str()),
                ..Default::default()
            };
            tracing::info!(key = %p.key, error = %err, "serving stale: {}", reason.as_str());
            return (
                self.respond(&e, now, &status, p.head),
                CacheOutcome::Stale(reason),
            );
        }
        let status = CacheStatus {
            fwd: Some("miss"),
            fwd_status: err.fwd_status(),
            detail: Some(err.code()),
            ..Default::default()
        };
        let mut resp = err.into_response();
        if let Ok(v) = HeaderValue::from_str(&status.header_value()) {
            resp.headers_mut().insert("cache-status", v);
        }
        (resp, CacheOutcome::Error)
    }

    /// Phase 4: one upstream call per key, shared by everyone who misses it now.
    async fn fetch(&self, p: &Prepared) -> (FlightResult, bool) {
        let (res, role) = self.inner.flights.run(&p.key, self.leader_work(p)).await;
        let collapsed = role == sluice_cache::Role::Follower;
        let res = res.unwrap_or_else(|e| {
            Err(GatewayError::new(
                ErrorKind::Internal,
                format!("upstream fetch task: {e}"),
            ))
        });
        (res, collapsed)
    }

    /// The work a flight's leader does for `p`, owning everything it needs.
    fn leader_work(
        &self,
        p: &Prepared,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = FlightResult> + Send>> + use<>
    {
        let inner = self.inner.clone();
        let (route, key, suffix, query, forward) = (
            p.route,
            p.key.clone(),
            p.suffix.clone(),
            p.query.clone(),
            p.forward.clone(),
        );
        move || Box::pin(fetch_and_store(inner, route, key, suffix, query, forward))
    }

    fn revalidate_in_background(&self, p: &Prepared) {
        if self.inner.flights.is_in_flight(&p.key) {
            return;
        }
        self.inner.routes[p.route]
            .metrics
            .revalidations
            .increment(1);
        let this = self.clone();
        let key = p.key.clone();
        let work = self.leader_work(p);
        tokio::spawn(async move {
            let (res, _) = this.inner.flights.run(&key, work).await;
            if let Ok(Err(e)) = res {
                tracing::warn!(key = %key, error = %e, "background revalidation failed");
            }
        });
    }

    /// Phase 7: turn an entry into a response with `Age` and `Cache-Status`.
    fn respond(&self, e: &Entry, now: i64, status: &CacheStatus, head: bool) -> Response {
        let body = if head {
            Body::empty()
        } else {
            Body::from(e.body.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let h = resp.headers_mut();
        for (name, value) in &e.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                h.append(n, v);
            }
        }
        if head {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(e.body.len()));
        }
        h.insert(header::AGE, HeaderValue::from(e.age_secs(now)));
        if let Ok(v) = HeaderValue::from_str(&status.header_value()) {
            h.insert("cache-status", v);
        }
        resp
    }

    /// Removes one key.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn purge_key(&self, key: &str) -> Result<Purged, sluice_cache::StoreError> {
        Ok(Purged(u64::from(self.inner.store.purge(key).await?)))
    }

    /// Removes every key of a route.
    ///
    /// # Errors
    ///
    /// When the route is unknown (as `Ok(None)`) or the store fails.
    pub async fn purge_route(
        &self,
        route: &str,
    ) -> Result<Option<Purged>, sluice_cache::StoreError> {
        if !self.inner.routes.iter().any(|r| r.spec.name == route) {
            return Ok(None);
        }
        let n = self.inner.store.purge_prefix(&format!("{route} ")).await?;
        Ok(Some(Purged(n)))
    }

    /// Removes every key starting with `prefix`.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<Purged, sluice_cache::StoreError> {
        Ok(Purged(self.inner.store.purge_prefix(prefix).await?))
    }

    /// The key a plain `GET` of `path_and_query` would use (no vary headers).
    ///
    /// # Errors
    ///
    /// When the path is invalid or matches no route.
    pub fn key_for(&self, path_and_query: &str) -> Result<String, GatewayError> {
        let req = Request::get(path_and_query)
            .body(Body::empty())
            .map_err(|e| GatewayError::new(ErrorKind::BadRequest, e.to_string()))?;
        self.request_filter(&req).map(|p| p.key)
    }

    /// Store figures, also published as gauges.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn stats(&self) -> Result<StoreStats, sluice_cache::StoreError> {
        let s = self.inner.store.stats().await?;
        metrics::store_gauges(self.inner.store.kind(), s.entries, s.bytes);
        for u in self.upstreams() {
            u.report_quota();
        }
        Ok(s)
    }

    /// `None` while every shared backend answers; else what is degraded. The
    /// gateway keeps serving (from L1, the upstream, local coalescing and local
    /// rate limits) while degraded.
    pub fn degraded(&self) -> Option<String> {
        self.inner
            .store
            .degraded()
            .or_else(|| self.inner.shared.as_ref().and_then(|f| f.degraded()))
    }

    /// The cluster-wide flights, when configured.
    pub fn shared_flights(&self) -> Option<&Arc<SharedFlights>> {
        self.inner.shared.as_ref()
    }

    /// Number of keys with an upstream call in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.in_flight()
    }
}

/// Counts and logs a store failure. Outages of shared stores are logged once by
/// their backend tracker; here only undecodable entries are counted.
fn store_failed(inner: &Inner, op: &'static str, e: &StoreError) {
    if matches!(e, StoreError::Corrupt { .. }) {
        metrics::store_error(inner.store.kind(), op);
        tracing::warn!(error = %e, "treating an undecodable entry as a miss");
    } else {
        tracing::debug!(error = %e, op, "store failed; treating as a miss");
    }
}

/// A fresh entry under `key`, if the store holds one.
async fn fresh_in_store(inner: &Inner, key: &str) -> Option<Arc<Entry>> {
    match inner.store.get(key).await {
        Ok(Some(e))
            if matches!(
                e.freshness(inner.clock.now_millis()),
                Freshness::Fresh { .. }
            ) =>
        {
            Some(e)
        }
        Ok(_) => None,
        Err(e) => {
            store_failed(inner, "get", &e);
            None
        }
    }
}

/// The leader's work: one upstream call for `key` in this process and, with shared
/// flights, in the whole cluster.
async fn fetch_and_store(
    inner: Arc<Inner>,
    route_idx: usize,
    key: String,
    suffix: String,
    query: String,
    forward: HeaderMap,
) -> FlightResult {
    // Double-check: a flight that finished just before ours started has stored
    // a fresh entry; use it instead of calling the upstream again.
    if let Some(entry) = fresh_in_store(&inner, &key).await {
        return Ok(Fetched {
            entry,
            stored: Ok(()),
            remote: true,
        });
    }
    let Some(flights) = inner.shared.clone() else {
        return call_and_store(&inner, route_idx, &key, &suffix, &query, &forward).await;
    };
    let deadline = tokio::time::Instant::now() + flights.max_wait();
    loop {
        match flights.try_acquire(&key).await {
            Err(_) => {
                // Redis is down (logged once by its tracker): coalesce locally only.
                return call_and_store(&inner, route_idx, &key, &suffix, &query, &forward).await;
            }
            Ok(Acquire::Held(lease)) => {
                // The previous holder may have stored it between our read and our lock.
                if let Some(entry) = fresh_in_store(&inner, &key).await {
                    lease.release().await;
                    return Ok(Fetched {
                        entry,
                        stored: Ok(()),
                        remote: true,
                    });
                }
                let res = call_and_store(&inner, route_idx, &key, &suffix, &query, &forward).await;
                lease.release().await;
                return res;
            }
            Ok(Acquire::Busy) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(key = %key, wait = ?flights.max_wait(),
                        "another node's upstream call for this key takes too long; calling the upstream here");
                    return call_and_store(&inner, route_idx, &key, &suffix, &query, &forward)
                        .await;
                }
                flights.wait(&key).await;
                if let Some(entry) = fresh_in_store(&inner, &key).await {
                    return Ok(Fetched {
                        entry,
                        stored: Ok(()),
                        remote: true,
                    });
                }
            }
        }
    }
}

/// Calls the upstream, decides cacheability, stores.
async fn call_and_store(
    inner: &Inner,
    route_idx: usize,
    key: &str,
    suffix: &str,
    query: &str,
    forward: &HeaderMap,
) -> FlightResult {
    let route = &inner.routes[route_idx];
    route.metrics.upstream_call();
    let resp = route
        .spec
        .upstream
        .fetch(Caller::Gateway, suffix, query, forward)
        .await?;
    let now = inner.clock.now_millis();
    let (entry, cacheable) = to_entry(route, &resp, now);
    let entry = Arc::new(entry);
    let stored = match cacheable {
        Err(r) => Err(r),
        Ok(()) => match inner.store.put(key, entry.clone()).await {
            Ok(PutOutcome::Stored) => Ok(()),
            Ok(PutOutcome::TooLarge) => Err(NoCacheReason::TooLarge),
            Err(e) => {
                store_failed(inner, "put", &e);
                Err(NoCacheReason::StoreError)
            }
        },
    };
    if let Err(r) = stored {
        route.metrics.not_stored(r.as_str());
    }
    Ok(Fetched {
        entry,
        stored,
        remote: false,
    })
}

fn to_entry(
    route: &Route,
    resp: &UpstreamResponse,
    now: i64,
) -> (Entry, Result<(), NoCacheReason>) {
    let spec = &route.spec;
    let mut headers = Vec::new();
    for name in &KEPT_HEADERS {
        for v in resp.headers.get_all(name) {
            headers.push((
                name.as_str().to_owned(),
                Bytes::copy_from_slice(v.as_bytes()),
            ));
        }
    }
    let negative = matches!(resp.status, 404 | 410);
    let redirect = (300..400).contains(&resp.status) && resp.status != 304;
    let cacheable_status =
        matches!(resp.status, 200..=205) || negative || (redirect && spec.cache_redirects);
    let (ttl, store_ok) = if !cacheable_status {
        (Duration::ZERO, Err(NoCacheReason::Status))
    } else if negative {
        if spec.negative_ttl.is_zero() {
            (Duration::ZERO, Err(NoCacheReason::RouteDisabled))
        } else {
            (spec.negative_ttl, Ok(()))
        }
    } else {
        match spec.ttl {
            Ttl::Fixed(d) => (d, Ok(())),
            Ttl::Upstream => match upstream_ttl(&resp.headers, now) {
                Some(d) => (d, Ok(())),
                None => (Duration::ZERO, Err(NoCacheReason::UpstreamNoStore)),
            },
        }
    };
    let (swr, sie) = if negative {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (spec.stale_while_revalidate, spec.stale_if_error)
    };
    let store_ok = store_ok.and_then(|()| {
        if ttl.is_zero() && swr.is_zero() && sie.is_zero() {
            Err(NoCacheReason::RouteDisabled)
        } else {
            Ok(())
        }
    });
    let entry = Entry::new(resp.status, headers, resp.body.clone(), now, ttl, swr, sie);
    (entry, store_ok)
}

/// Freshness from `Cache-Control` / `Expires`; `None` means "do not store".
fn upstream_ttl(h: &HeaderMap, now: i64) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for v in h.get_all(header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            let d = d.trim().to_ascii_lowercase();
            if d == "no-store" || d == "private" {
                return None;
            }
            if d == "no-cache" {
                max_age = Some(0);
            }
            if let Some(n) = d.strip_prefix("s-maxage=") {
                s_maxage = n.trim_matches('"').parse::<u64>().ok();
            } else if let Some(n) = d.strip_prefix("max-age=") {
                max_age = max_age.or(n.trim_matches('"').parse::<u64>().ok());
            }
        }
    }
    if let Some(s) = s_maxage.or(max_age) {
        return Some(Duration::from_secs(s));
    }
    let expires = h.get(header::EXPIRES)?.to_str().ok()?;
    let exp = httpdate::parse_http_date(expires).ok()?;
    let base = h
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .map(|d| {
            d.duration_since(std::time::UNIX_EPOCH)
                .map(|x| x.as_millis() as i64)
                .unwrap_or(now)
        })
        .unwrap_or(now);
    let exp_ms = exp
        .duration_since(std::time::UNIX_EPOCH)
        .map(|x| x.as_millis() as i64)
        .unwrap_or(0);
    Some(Duration::from_millis((exp_ms - base).max(0) as u64))
}

/// Batch jobs write entries under the keys clients' requests have: the cache
/// writer and the HTTP reader's cache-through reach the gateway through this.
impl CacheTarget for Gateway {
    fn key_for(&self, path_and_query: &str) -> Result<String, KeyError> {
        Gateway::key_for(self, path_and_query).map_err(|e| KeyError {
            kind: if e.kind == ErrorKind::NoRoute {
                KeyErrorKind::NoRoute
            } else {
                KeyErrorKind::Refused
            },
            message: e.to_string(),
        })
    }

    fn store(&self) -> &Arc<dyn Store> {
        Gateway::store(self)
    }

    fn now_millis(&self) -> sluice_core::UnixMillis {
        self.inner.clock.now_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_ttl_reads_cache_control_and_expires() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60, s-maxage=120"),
        );
        assert_eq!(upstream_ttl(&h, 0), Some(Duration::from_secs(120)));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=60"),
        );
        assert_eq!(upstream_ttl(&h, 0), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::DATE,
            HeaderValue::from_static("Wed, 25 Nov 2026 10:00:00 GMT"),
        );
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Wed, 25 Nov 2026 10:05:00 GMT"),
        );
        assert_eq!(upstream_ttl(&h, 0), Some(Duration::from_secs(300)));
        assert_eq!(upstream_ttl(&HeaderMap::new(), 0), None);
    }
}
