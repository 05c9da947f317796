//! Metric names and pre-registered handles.
//!
//! All gateway metric names live in [`names`]; `docs/specs/metrics.md` is the spec
//! they follow (the upstream client's are in `sluice_upstream::metrics`). Handles
//! are registered once per route, so the hot path
//! increments an atomic instead of hashing labels on every request.

use std::sync::Arc;

use metrics::{Counter, Unit, counter, gauge};
use sluice_core::metrics::{Family, Kind};

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
    /// Entries held, by `store`.
    pub const STORE_ENTRIES: &str = "sluice_store_entries";
    /// Bytes held, by `store`.
    pub const STORE_BYTES: &str = "sluice_store_bytes";
    /// Store operation failures, by `store` and `op` (declared by the store layer).
    pub use sluice_cache::metrics::names::STORE_ERRORS;
}

const FAMILIES: &[Family] = &[
    (
        Kind::Counter,
        names::REQUESTS,
        Unit::Count,
        "Proxied requests, by route and cache_status (hit, stale, miss, bypass, error).",
    ),
    (
        Kind::Counter,
        names::COALESCED,
        Unit::Count,
        "Requests that waited for another request's upstream call instead of making their own, by route.",
    ),
    (
        Kind::Counter,
        names::REVALIDATIONS,
        Unit::Count,
        "Background refreshes started by stale-while-revalidate, by route.",
    ),
    (
        Kind::Counter,
        names::NOT_STORED,
        Unit::Count,
        "Upstream answers that were not stored, by route and reason.",
    ),
    (
        Kind::Gauge,
        names::STORE_ENTRIES,
        Unit::Count,
        "Entries held by the store, by store (refreshed on each scrape).",
    ),
    (
        Kind::Gauge,
        names::STORE_BYTES,
        Unit::Bytes,
        "Bytes held by the store, by store (refreshed on each scrape).",
    ),
];

/// Registers the help text and unit of every metric in [`names`] with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Call once, when the recorder is
/// installed; the store layer's own names are described by
/// [`sluice_cache::metrics::describe`], the upstream client's by
/// [`sluice_upstream::metrics::describe`].
pub fn describe() {
    sluice_core::metrics::describe(FAMILIES);
}

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

/// Publishes store size gauges.
pub fn store_gauges(store: &'static str, entries: u64, bytes: u64) {
    gauge!(names::STORE_ENTRIES, "store" => store).set(entries as f64);
    gauge!(names::STORE_BYTES, "store" => store).set(bytes as f64);
}

/// Counts a store failure.
pub fn store_error(store: &'static str, op: &'static str) {
    sluice_cache::metrics::store_error(store, op);
}
