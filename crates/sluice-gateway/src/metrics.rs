//! Metric names and pre-registered handles.
//!
//! All gateway metric names live in [`names`]; `docs/specs/metrics.md` is the spec
//! they follow (the upstream client's are in `sluice_upstream::metrics`). Handles
//! are registered once per route, so the hot path
//! increments an atomic instead of hashing labels on every request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, counter, gauge};
use serde::Serialize;

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
    /// What [`RouteStats`] reads: requests by outcome and upstream calls.
    counts: Arc<RouteCounts>,
}

#[derive(Debug, Default)]
struct RouteCounts {
    requests: [AtomicU64; 5],
    upstream_calls: AtomicU64,
    top: std::sync::Mutex<HashMap<Box<str>, KeyCount>>,
}

/// Keys a route tracks for [`Gateway::top_keys`](crate::Gateway::top_keys);
/// when full, every count is halved and keys down to zero are dropped, so
/// keys that stopped being asked for leave room for new ones.
const TOP_CAPACITY: usize = 256;

#[derive(Debug, Default, Clone, Copy)]
struct KeyCount {
    requests: u64,
    hits: u64,
}

/// One of the most requested keys of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopKey {
    /// The cache key.
    pub key: String,
    /// The route.
    pub route: String,
    /// Requests counted (approximate: counts decay when the table is full,
    /// and requests racing for the table are not counted).
    pub requests: u64,
    /// Of those, answers from the cache (fresh or stale).
    pub hits: u64,
}

/// One route's requests since the process started, for the REST API and the
/// dashboard (the Prometheus counters carry the same for scraping).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStats {
    /// The route's name.
    pub route: String,
    /// Its path pattern.
    pub path: String,
    /// The upstream it calls.
    pub upstream: String,
    /// Requests by cache outcome (`hit`, `stale`, `miss`, `bypass`, `error`).
    pub requests: BTreeMap<&'static str, u64>,
    /// All requests.
    pub total: u64,
    /// Answers from the cache (`hit` and `stale`) over all requests; `None`
    /// before the first request.
    pub hit_ratio: Option<f64>,
    /// Calls this route made to its upstream (misses, revalidations, bypasses).
    pub upstream_calls: u64,
    /// Requests answered without an upstream call of their own: cache hits,
    /// stale answers and coalesced waiters.
    pub calls_saved: u64,
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
            counts: Arc::default(),
        }
    }

    /// Counts one request with its outcome.
    pub fn request(&self, outcome: CacheOutcome) {
        self.requests[outcome.index()].increment(1);
        self.counts.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request for `key` in the route's top-keys table. Never
    /// waits: a request that finds the table busy is not counted.
    pub fn key_request(&self, key: &str, outcome: CacheOutcome) {
        let Ok(mut top) = self.counts.top.try_lock() else {
            return;
        };
        if top.len() >= TOP_CAPACITY && !top.contains_key(key) {
            top.retain(|_, c| {
                c.requests /= 2;
                c.hits /= 2;
                c.requests > 0
            });
            if top.len() >= TOP_CAPACITY {
                return;
            }
        }
        let c = top.entry(Box::from(key)).or_default();
        c.requests += 1;
        c.hits += u64::from(matches!(
            outcome,
            CacheOutcome::Hit | CacheOutcome::Stale(_)
        ));
    }

    /// The route's most requested keys, most first.
    pub fn top_keys(&self, limit: usize) -> Vec<TopKey> {
        let top = self.counts.top.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<TopKey> = top
            .iter()
            .map(|(k, c)| TopKey {
                key: k.to_string(),
                route: self.route.to_string(),
                requests: c.requests,
                hits: c.hits,
            })
            .collect();
        v.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.key.cmp(&b.key)));
        v.truncate(limit);
        v
    }

    /// Counts one call to the upstream made for this route.
    pub fn upstream_call(&self) {
        self.counts.upstream_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The route's counts, for a route calling `upstream`.
    pub fn stats(&self, upstream: &str) -> RouteStats {
        let requests: BTreeMap<&'static str, u64> = CacheOutcome::LABELS
            .iter()
            .zip(&self.counts.requests)
            .map(|(l, n)| (*l, n.load(Ordering::Relaxed)))
            .collect();
        let total: u64 = requests.values().sum();
        let cached = requests["hit"] + requests["stale"];
        let upstream_calls = self.counts.upstream_calls.load(Ordering::Relaxed);
        RouteStats {
            route: self.route.to_string(),
            path: String::new(),
            upstream: upstream.to_owned(),
            hit_ratio: (total > 0).then(|| cached as f64 / total as f64),
            calls_saved: total.saturating_sub(upstream_calls),
            upstream_calls,
            requests,
            total,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_count_outcomes_and_their_most_requested_keys() {
        let m = RouteMetrics::new("air");
        for _ in 0..3 {
            m.request(CacheOutcome::Hit);
            m.key_request("air:/a", CacheOutcome::Hit);
        }
        m.request(CacheOutcome::Miss);
        m.key_request("air:/b", CacheOutcome::Miss);
        m.upstream_call();
        let s = m.stats("portal");
        assert_eq!((s.total, s.upstream_calls, s.calls_saved), (4, 1, 3));
        assert_eq!(s.hit_ratio, Some(0.75));
        let top = m.top_keys(10);
        assert_eq!(top[0].key, "air:/a");
        assert_eq!((top[0].requests, top[0].hits), (3, 3));
        assert_eq!((top[1].key.as_str(), top[1].hits), ("air:/b", 0));
        // A full table halves its counts: keys asked for once leave room.
        for i in 0..TOP_CAPACITY + 10 {
            m.key_request(&format!("air:/k{i}"), CacheOutcome::Miss);
        }
        let top = m.top_keys(TOP_CAPACITY * 2);
        assert!(top.len() <= TOP_CAPACITY, "{}", top.len());
        assert_eq!(top[0].key, "air:/a");
    }
}
