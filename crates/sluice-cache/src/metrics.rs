//! Metric names of the store layer (see `docs/specs/metrics.md`).

use metrics::{Unit, counter, describe_counter};

/// Every metric name this crate emits.
pub mod names {
    /// Store operation failures, by `store` and `op`.
    pub const STORE_ERRORS: &str = "sluice_store_errors_total";
    /// Entries a store would not keep because they exceed its item size, by `store`.
    pub const STORE_TOO_LARGE: &str = "sluice_store_too_large_total";
    /// Purge notices received from other nodes, by `kind` (`key`, `prefix`, `all`).
    pub const STORE_PURGE_NOTICES: &str = "sluice_store_purge_notices_total";
}

/// Registers the help text and unit of every metric in [`names`] with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Call once, when the recorder is
/// installed; calling again only repeats the same descriptions.
pub fn describe() {
    describe_counter!(
        names::STORE_ERRORS,
        Unit::Count,
        "Shared store operations that failed (served as misses), by store and op."
    );
    describe_counter!(
        names::STORE_TOO_LARGE,
        Unit::Count,
        "Entries a store would not keep because they exceed its item size, by store."
    );
    describe_counter!(
        names::STORE_PURGE_NOTICES,
        Unit::Count,
        "Purge notices received from the cluster and applied to this node's L1, by kind (key, prefix, all)."
    );
}

/// Counts one failed store operation.
pub fn store_error(store: &'static str, op: &'static str) {
    counter!(names::STORE_ERRORS, "store" => store, "op" => op).increment(1);
}

/// Counts one entry refused for its size.
pub fn too_large(store: &'static str) {
    counter!(names::STORE_TOO_LARGE, "store" => store).increment(1);
}

/// Counts one purge notice received.
pub fn purge_notice(kind: &'static str) {
    counter!(names::STORE_PURGE_NOTICES, "kind" => kind).increment(1);
}
