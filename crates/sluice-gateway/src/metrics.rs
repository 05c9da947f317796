//! Metric names and pre-registered handles.
//!
//! All gateway metric names live in [`names`]; `docs/specs/metrics.md` is the spec
//! they follow. Handles are registered once per route and upstream, so the hot path
//! increments an atomic instead of hashing labels on every request.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::outcome::CacheOutcome;

/// Every metric name the gateway emits.
pub mod names {
    /// Requests by `route` and `cache_status` (hit, stale, miss, bypass, error).
    pub const REQUESTS: &str = "sluice_gateway_requests_total";
    /// Requests that waited for another request's upstream call, by `route`.
    pub const COALESCED: &str = "sluice_gateway_coalesced_waiters_total";
    /// Background refreshes started by stale-while-revalidate, by `route`.
    pub const REVALIDATIONS: &str = "sluice_gateway_revalidations_total";
    /// Responses not stored, by `route` and `reason`.
    pub const NOT_STORED: &str = "sluice_gateway_not_stored_total";
    /// Upstream calls (attempts) by `upstream` and `result`.
    pub const UPSTREAM_REQUESTS: &str = "sluice_upstream_requests_total";
    /// Upstream call latency by `upstream` and `result`.
    pub const UPSTREAM_DURATION: &str = "sluice_upstream_request_duration_seconds";
    /// Retries by `upstream`.
    pub const UPSTREAM_RETRIES: &str = "sluice_upstream_retries_total";
    /// Calls refused by the budget, by `upstream`.
    pub const QUOTA_EXCEEDED: &str = "sluice_upstream_quota_exceeded_total";
    /// Calls left in today's quota, by `upstream`.
    pub const QUOTA_REMAINING: &str = "sluice_upstream_quota_remaining_calls";
    /// Entries held, by `store`.
    pub const STORE_ENTRIES: &str = "sluice_store_entries";
    /// Bytes held, by `store`.
    pub const STORE_BYTES: &str = "sluice_store_bytes";
    /// Store operation failures, by `store` and `op` (declared by the store layer).
    pub use sluice_cache::metrics::names::STORE_ERRORS;
}

/// Registers the help text and unit of every metric in [`names`] with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Call once, when the recorder is
/// installed; the store layer's own names are described by
/// [`sluice_cache::metrics::describe`].
pub fn describe() {
    describe_counter!(
        names::REQUESTS,
        Unit::Count,
        "Proxied requests, by route and cache_status (hit, stale, miss, bypass, error)."
    );
    describe_counter!(
        names::COALESCED,
        Unit::Count,
        "Requests that waited for another request's upstream call instead of making their own, by route."
    );
    describe_counter!(
        names::REVALIDATIONS,
        Unit::Count,
        "Background refreshes started by stale-while-revalidate, by route."
    );
    describe_counter!(
        names::NOT_STORED,
        Unit::Count,
        "Upstream answers that were not stored, by route and reason."
    );
    describe_counter!(
        names::UPSTREAM_REQUESTS,
        Unit::Count,
        "Upstream call attempts (each retry counts), by upstream and result."
    );
    describe_histogram!(
        names::UPSTREAM_DURATION,
        Unit::Seconds,
        "Latency of one upstream call attempt in seconds, by upstream and result."
    );
    describe_counter!(
        names::UPSTREAM_RETRIES,
        Unit::Count,
        "Upstream call retries, by upstream."
    );
    describe_counter!(
        names::QUOTA_EXCEEDED,
        Unit::Count,
        "Upstream calls refused by the rate limit or daily quota, by upstream."
    );
    describe_gauge!(
        names::QUOTA_REMAINING,
        Unit::Count,
        "Calls left in today's quota, by upstream."
    );
    describe_gauge!(
        names::STORE_ENTRIES,
        Unit::Count,
        "Entries held by the store, by store (refreshed on each scrape)."
    );
    describe_gauge!(
        names::STORE_BYTES,
        Unit::Bytes,
        "Bytes held by the store, by store (refreshed on each scrape)."
    );
}

/// The `result` label values of upstream metrics.
pub const UPSTREAM_RESULTS: [&str; 8] = [
    "ok",
    "timeout",
    "connect_error",
    "http_error",
    "rejected",
    "bad_body",
    "quota_exceeded",
    "throttled",
];

/// Handles for one route.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    requests: [Counter; 5],
    /// Coalesced waiters.
    pub coalesced: Counter,
    /// Background refreshes.
    pub revalidations: Counter,
    route: Arc<str>,
}

impl RouteMetrics {
    /// Registers the handles of `route`.
    pub fn new(route: &str) -> Self {
        let r = route.to_owned();
        Self {
            requests: CacheOutcome::LABELS
                .map(|s| counter!(names::REQUESTS, "route" => r.clone(), "cache_status" => s)),
            coalesced: counter!(names::COALESCED, "route" => r.clone()),
            revalidations: counter!(names::REVALIDATIONS, "route" => r.clone()),
            route: Arc::from(route),
        }
    }

    /// Counts one request with its outcome.
    pub fn request(&self, outcome: CacheOutcome) {
        self.requests[outcome.index()].increment(1);
    }

    /// Counts a response that was not stored.
    pub fn not_stored(&self, reason: &'static str) {
        counter!(names::NOT_STORED, "route" => self.route.to_string(), "reason" => reason)
            .increment(1);
    }
}

/// Handles for one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    results: Vec<(Counter, Histogram)>,
    /// Retries.
    pub retries: Counter,
    /// Budget refusals.
    pub quota_exceeded: Counter,
    /// Remaining daily quota.
    pub quota_remaining: Gauge,
}

impl UpstreamMetrics {
    /// Registers the handles of `upstream`.
    pub fn new(upstream: &str) -> Self {
        let u = upstream.to_owned();
        Self {
            results: UPSTREAM_RESULTS
                .iter()
                .map(|r| {
                    (
                        counter!(names::UPSTREAM_REQUESTS, "upstream" => u.clone(), "result" => *r),
                        histogram!(names::UPSTREAM_DURATION, "upstream" => u.clone(), "result" => *r),
                    )
                })
                .collect(),
            retries: counter!(names::UPSTREAM_RETRIES, "upstream" => u.clone()),
            quota_exceeded: counter!(names::QUOTA_EXCEEDED, "upstream" => u.clone()),
            quota_remaining: gauge!(names::QUOTA_REMAINING, "upstream" => u),
        }
    }

    /// Records one upstream attempt.
    pub fn record(&self, result: &str, elapsed: Duration) {
        if let Some(i) = UPSTREAM_RESULTS.iter().position(|r| *r == result) {
            self.results[i].0.increment(1);
            self.results[i].1.record(elapsed.as_secs_f64());
        }
    }
}

/// Publishes store size gauges.
pub fn store_gauges(store: &'static str, entries: u64, bytes: u64) {
    gauge!(names::STORE_ENTRIES, "store" => store).set(entries as f64);
    gauge!(names::STORE_BYTES, "store" => store).set(bytes as f64);
}

/// Counts a store failure.
pub fn store_error(store: &'static str, op: &'static str) {
    sluice_cache::metrics::store_error(store, op);
}
