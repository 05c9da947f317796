//! The metric catalogue of sluice (`docs/specs/metrics.md` in code): every family's
//! name, type, unit and help text, in one place, and [`describe`], which gives
//! them all to the recorder at once.
//!
//! Names are declared here, once, so that the spec's table and the code cannot
//! drift and no two crates can pick one name twice; each crate re-exports its own
//! names from its `metrics` module and emits them only through the handles and
//! helpers there. Adding a metric is one constant and one [`FAMILIES`] row here,
//! one row in the spec.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

/// Every metric name of sluice, by area (`store`, `gateway`, `upstream`,
/// `queue` / `task(s)`, `schedule`).
pub mod names {
    /// Store operation failures, by `store` and `op` (counted by the backends' breaker, [`crate::Backend`]).
    pub const STORE_ERRORS: &str = "sluice_store_errors_total";
    /// Entries a store would not keep because they exceed its item size, by `store`.
    pub const STORE_TOO_LARGE: &str = "sluice_store_too_large_total";
    /// Purge notices received from other nodes, by `kind` (`key`, `prefix`, `all`).
    pub const STORE_PURGE_NOTICES: &str = "sluice_store_purge_notices_total";
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
    /// Lateness of claims after the due instant, seconds.
    pub const LATENESS: &str = "sluice_schedule_fire_lateness_seconds";
    /// Fires by trigger and outcome (`fired` | `lost` (another node claimed it) | `skipped_overlap` | `queued` | `paused` | `error`).
    pub const FIRES: &str = "sluice_schedule_fires_total";
    /// Instants a trigger missed while no scheduler ran, by trigger and action (`fired` | `skipped`).
    pub const MISFIRES: &str = "sluice_schedule_misfires_total";
    /// Gateway access log lines dropped because the writer fell behind.
    pub const ACCESS_LOG_DROPPED: &str = "sluice_access_log_dropped_total";
    /// Finished job runs, by `job_name` and `status` (`COMPLETED`, `FAILED`, `STOPPED`, …).
    pub const JOB_RUNS: &str = "sluice_job_runs_total";
    /// Items of a job's last finished run, by `job_name`, `step` and `kind` (`read`, `written`, `skipped`).
    pub const JOB_ITEMS: &str = "sluice_job_last_run_items";
    /// Run time of finished job runs in seconds, by `job_name`.
    pub const JOB_DURATION: &str = "sluice_job_duration_seconds";
    /// When a job last completed, Unix seconds, by `job_name`.
    pub const JOB_LAST_SUCCESS: &str = "sluice_job_last_success_timestamp_seconds";
    /// Alerts firing now, by `rule` (from the alert state every node shares).
    pub const ALERTS_FIRING: &str = "sluice_alerts_firing";
    /// Alert notification delivery attempts, by `receiver` and `result` (`sent`, `retry`, `failed`).
    pub const ALERT_NOTIFICATIONS: &str = "sluice_alert_notifications_total";
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter (`_total`).
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// One family's description: its type, name, unit and help text.
pub type Family = (Kind, &'static str, Unit, &'static str);

/// Every family, with the help text `/metrics` prints.
pub const FAMILIES: &[Family] = &[
    (
        Kind::Counter,
        names::STORE_ERRORS,
        Unit::Count,
        "Shared store operations that failed (served as misses), by store and op.",
    ),
    (
        Kind::Counter,
        names::STORE_TOO_LARGE,
        Unit::Count,
        "Entries a store would not keep because they exceed its item size, by store.",
    ),
    (
        Kind::Counter,
        names::STORE_PURGE_NOTICES,
        Unit::Count,
        "Purge notices received from the cluster and applied to this node's L1, by kind (key, prefix, all).",
    ),
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
    (
        Kind::Counter,
        names::ENQUEUED,
        Unit::Count,
        "Tasks enqueued, by queue and outcome (new, or duplicate of an idempotency key).",
    ),
    (
        Kind::Counter,
        names::COMPLETED,
        Unit::Count,
        "Tasks acknowledged after their handler returned, by queue.",
    ),
    (
        Kind::Counter,
        names::FAILED,
        Unit::Count,
        "Failed task attempts, by queue, task and outcome (retry, dead, lease_lost).",
    ),
    (
        Kind::Counter,
        names::RETRIED,
        Unit::Count,
        "Task retries scheduled with backoff, by queue and task.",
    ),
    (
        Kind::Histogram,
        names::DURATION,
        Unit::Seconds,
        "Handler run time of one task attempt in seconds, by queue and task.",
    ),
    (
        Kind::Gauge,
        names::IN_FLIGHT,
        Unit::Count,
        "Task handlers running in this process, by queue.",
    ),
    (
        Kind::Gauge,
        names::DEPTH,
        Unit::Count,
        "Tasks per queue and state (ready, delayed, running, dead), refreshed by each worker every 5 s.",
    ),
    (
        Kind::Counter,
        names::LEASES_LOST,
        Unit::Count,
        "Task leases that ran out before the handler finished (the task may run twice), by queue.",
    ),
    (
        Kind::Counter,
        names::BROKER_ERRORS,
        Unit::Count,
        "Broker calls that failed, by broker.",
    ),
    (
        Kind::Histogram,
        names::LATENESS,
        Unit::Seconds,
        "How late a fire was claimed after its due instant, in seconds.",
    ),
    (
        Kind::Counter,
        names::FIRES,
        Unit::Count,
        "Trigger fires, by trigger and outcome (fired, lost, skipped_overlap, queued, paused, error).",
    ),
    (
        Kind::Counter,
        names::MISFIRES,
        Unit::Count,
        "Instants a trigger missed while no scheduler ran, by trigger and action (fired: made up by this node, skipped: dropped by the misfire policy).",
    ),
    (
        Kind::Counter,
        names::ACCESS_LOG_DROPPED,
        Unit::Count,
        "Gateway access log lines dropped because the log writer fell behind.",
    ),
    (
        Kind::Counter,
        names::JOB_RUNS,
        Unit::Count,
        "Finished job runs, by job_name and status.",
    ),
    (
        Kind::Gauge,
        names::JOB_ITEMS,
        Unit::Count,
        "Items of the job's last finished run on this node, by job_name, step and kind (read, written, skipped); a resumed step's counts include what earlier executions committed.",
    ),
    (
        Kind::Histogram,
        names::JOB_DURATION,
        Unit::Seconds,
        "Run time of finished job runs in seconds, by job_name.",
    ),
    (
        Kind::Gauge,
        names::JOB_LAST_SUCCESS,
        Unit::Seconds,
        "When a job last completed on this node, Unix seconds, by job_name.",
    ),
    (
        Kind::Gauge,
        names::ALERTS_FIRING,
        Unit::Count,
        "Alerts firing now, by rule.",
    ),
    (
        Kind::Counter,
        names::ALERT_NOTIFICATIONS,
        Unit::Count,
        "Alert notification delivery attempts on this node, by receiver and result (sent, retry, failed).",
    ),
];

/// Registers the help text and unit of every family in [`FAMILIES`] with the
/// current recorder, so the Prometheus page prints `# HELP` and `# TYPE` for each
/// family whether or not it has been recorded yet. Call once, when the recorder
/// is installed; calling again only repeats the same descriptions.
pub fn describe() {
    for &(kind, name, unit, help) in FAMILIES {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
}

/// Counts one failed store operation.
pub fn store_error(store: &'static str, op: &'static str) {
    counter!(names::STORE_ERRORS, "store" => store, "op" => op).increment(1);
}
