//! Queue metrics (names in `docs/specs/metrics.md`).
//!
//! Counters and the duration histogram are recorded by workers and brokers as
//! things happen; the depth gauges are refreshed by [`Worker`](crate::Worker)s
//! from [`Broker::stats`](crate::Broker::stats) every few seconds.

use metrics::Unit;
use sluice_core::metrics::{Family, Kind};

/// Tasks enqueued, by queue (`queue`) and outcome (`new` | `duplicate`).
pub const ENQUEUED: &str = "sluice_tasks_enqueued_total";
/// Tasks acknowledged as completed, by queue.
pub const COMPLETED: &str = "sluice_tasks_completed_total";
/// Failed attempts, by queue, task name and outcome (`retry` | `dead` | `lease_lost`).
pub const FAILED: &str = "sluice_tasks_failed_total";
/// Retries scheduled, by queue and task name.
pub const RETRIED: &str = "sluice_tasks_retried_total";
/// Handler run time in seconds, by queue and task name.
pub const DURATION: &str = "sluice_task_duration_seconds";
/// Tasks a worker of this process is running, by queue.
pub const IN_FLIGHT: &str = "sluice_tasks_in_flight";
/// Queue depth by queue and state (`ready` | `delayed` | `running` | `dead`).
pub const DEPTH: &str = "sluice_queue_depth";
/// Leases lost (ran out before the handler finished), by queue.
pub const LEASES_LOST: &str = "sluice_task_leases_lost_total";
/// Broker calls that failed, by broker kind (`broker`).
pub const BROKER_ERRORS: &str = "sluice_queue_broker_errors_total";

const FAMILIES: &[Family] = &[
    (
        Kind::Counter,
        ENQUEUED,
        Unit::Count,
        "Tasks enqueued, by queue and outcome (new, or duplicate of an idempotency key).",
    ),
    (
        Kind::Counter,
        COMPLETED,
        Unit::Count,
        "Tasks acknowledged after their handler returned, by queue.",
    ),
    (
        Kind::Counter,
        FAILED,
        Unit::Count,
        "Failed task attempts, by queue, task and outcome (retry, dead, lease_lost).",
    ),
    (
        Kind::Counter,
        RETRIED,
        Unit::Count,
        "Task retries scheduled with backoff, by queue and task.",
    ),
    (
        Kind::Histogram,
        DURATION,
        Unit::Seconds,
        "Handler run time of one task attempt in seconds, by queue and task.",
    ),
    (
        Kind::Gauge,
        IN_FLIGHT,
        Unit::Count,
        "Task handlers running in this process, by queue.",
    ),
    (
        Kind::Gauge,
        DEPTH,
        Unit::Count,
        "Tasks per queue and state (ready, delayed, running, dead), refreshed by each worker every 5 s.",
    ),
    (
        Kind::Counter,
        LEASES_LOST,
        Unit::Count,
        "Task leases that ran out before the handler finished (the task may run twice), by queue.",
    ),
    (
        Kind::Counter,
        BROKER_ERRORS,
        Unit::Count,
        "Broker calls that failed, by broker.",
    ),
];

/// Registers the help text and unit of every metric of this module with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Call once, when the recorder is
/// installed.
pub fn describe() {
    sluice_core::metrics::describe(FAMILIES);
}

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
