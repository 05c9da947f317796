//! Metric names and pre-registered handles of upstream calls (see
//! `docs/specs/metrics.md`).
//!
//! Handles are registered once per upstream, so a call increments an atomic
//! instead of hashing labels.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit, counter, gauge, histogram};
use sluice_core::metrics::{Family, Kind};

/// Every metric name the upstream client emits.
pub mod names {
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
}

const FAMILIES: &[Family] = &[
    (
        Kind::Counter,
        names::UPSTREAM_REQUESTS,
        Unit::Count,
        "Upstream call attempts (each retry counts), by upstream and result.",
    ),
    (
        Kind::Histogram,
        names::UPSTREAM_DURATION,
        Unit::Seconds,
        "Latency of one upstream call attempt in seconds, by upstream and result.",
    ),
    (
        Kind::Counter,
        names::UPSTREAM_RETRIES,
        Unit::Count,
        "Upstream call retries, by upstream.",
    ),
    (
        Kind::Counter,
        names::QUOTA_EXCEEDED,
        Unit::Count,
        "Upstream calls refused by the rate limit or daily quota, by upstream.",
    ),
    (
        Kind::Gauge,
        names::QUOTA_REMAINING,
        Unit::Count,
        "Calls left in today's quota, by upstream.",
    ),
];

/// Registers the help text and unit of every metric in [`names`] with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Call once, when the recorder is
/// installed.
pub fn describe() {
    sluice_core::metrics::describe(FAMILIES);
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
