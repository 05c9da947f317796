//! Queue metrics (names in `docs/specs/metrics.md`, declared in the workspace
//! catalogue `sluice_core::metrics`).
//!
//! Counters and the duration histogram are recorded by workers and brokers as
//! things happen; the depth gauges are refreshed by [`Worker`](crate::Worker)s
//! from [`Broker::stats`](crate::Broker::stats) every few seconds.

pub use sluice_core::metrics::names::{
    BROKER_ERRORS, COMPLETED, DEPTH, DURATION, ENQUEUED, FAILED, IN_FLIGHT, LEASES_LOST, RETRIED,
};

/// Records `stats` of `queue` as depth gauges.
pub fn record_depth(queue: &str, stats: &crate::QueueStats) {
    for (state, v) in [
        ("ready", stats.ready),
        ("delayed", stats.delayed),
        ("running", stats.running),
        ("dead", stats.dead),
    ] {
        metrics::gauge!(DEPTH, "queue" => queue.to_owned(), "state" => state).set(v as f64);
    }
}
