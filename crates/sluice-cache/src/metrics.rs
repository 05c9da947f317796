//! Metric names of the store layer (see `docs/specs/metrics.md`).

use metrics::{Unit, counter};
use sluice_core::metrics::{Family, Kind};

/// Every metric name this crate emits.
pub mod names {
    /// Store operation failures, by `store` and `op` (counted by the backends'
    /// breaker in `sluice-core`).
    pub use sluice_core::metrics::STORE_ERRORS;
    /// Entries a store would not keep because they exceed its item size, by `store`.
    pub const STORE_TOO_LARGE: &str = "sluice_store_too_large_total";
    /// Purge notices received from other nodes, by `kind` (`key`, `prefix`, `all`).
    pub const STORE_PURGE_NOTICES: &str = "sluice_store_purge_notices_total";
}

const FAMILIES: &[Family] = &[
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
];

/// Registers the help text and unit of every metric in [`names`] with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Call once, when the recorder is
/// installed; calling again only repeats the same descriptions.
pub fn describe() {
    sluice_core::metrics::describe(FAMILIES);
}

pub use sluice_core::metrics::store_error;

/// Counts one entry refused for its size.
pub fn too_large(store: &'static str) {
    counter!(names::STORE_TOO_LARGE, "store" => store).increment(1);
}

/// Counts one purge notice received.
pub fn purge_notice(kind: &'static str) {
    counter!(names::STORE_PURGE_NOTICES, "kind" => kind).increment(1);
}
