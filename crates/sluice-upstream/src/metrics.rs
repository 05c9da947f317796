//! Metric names and pre-registered handles of upstream calls (see
//! `docs/specs/metrics.md`).
//!
//! Handles are registered once per upstream, so a call increments an atomic
//! instead of hashing labels.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::stats::Caller;

/// Every metric name the upstream client emits (declared in the workspace
/// catalogue, `sluice_core::metrics`).
pub mod names {
    pub use sluice_core::metrics::names::{
        QUOTA_EXCEEDED, QUOTA_REMAINING, UPSTREAM_DURATION, UPSTREAM_REQUESTS, UPSTREAM_RETRIES,
    };
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

/// Handles for one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// By result: the counters by caller (gateway, job) and the histogram.
    results: Vec<([Counter; 2], Histogram)>,
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
                        [Caller::Gateway, Caller::Job].map(|c| {
                            counter!(names::UPSTREAM_REQUESTS, "upstream" => u.clone(),
                                "result" => *r, "caller" => c.label())
                        }),
                        histogram!(names::UPSTREAM_DURATION, "upstream" => u.clone(), "result" => *r),
                    )
                })
                .collect(),
            retries: counter!(names::UPSTREAM_RETRIES, "upstream" => u.clone()),
            quota_exceeded: counter!(names::QUOTA_EXCEEDED, "upstream" => u.clone()),
            quota_remaining: gauge!(names::QUOTA_REMAINING, "upstream" => u),
        }
    }

    /// Records one upstream attempt made for `caller`.
    pub fn record(&self, caller: Caller, result: &str, elapsed: Duration) {
        if let Some(i) = UPSTREAM_RESULTS.iter().position(|r| *r == result) {
            self.results[i].0[usize::from(caller == Caller::Job)].increment(1);
            self.results[i].1.record(elapsed.as_secs_f64());
        }
    }
}
