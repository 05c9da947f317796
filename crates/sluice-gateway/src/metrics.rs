//! Metric names and pre-registered handles.
//!
//! All gateway metric names live in [`names`]; `docs/specs/metrics.md` is the spec
//! they follow (the upstream client's are in `sluice_upstream::metrics`). Handles
//! are registered once per route, so the hot path
//! increments an atomic instead of hashing labels on every request.

use std::sync::Arc;

use metrics::{Counter, counter, gauge};

use crate::outcome::CacheOutcome;

/// Every metric name the gateway emits (declared in the workspace catalogue,
/// `sluice_core::metrics`).
pub mod names {
    pub use sluice_core::metrics::names::{
        COALESCED, NOT_STORED, REQUESTS, REVALIDATIONS, STORE_BYTES, STORE_ENTRIES, STORE_ERRORS,
    };
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
