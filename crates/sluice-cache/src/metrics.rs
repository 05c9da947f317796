//! Metric names of the store layer (see `docs/specs/metrics.md`).

use metrics::counter;

/// Every metric name this crate emits (declared in the workspace catalogue,
/// `sluice_core::metrics`).
pub mod names {
    pub use sluice_core::metrics::names::{STORE_ERRORS, STORE_PURGE_NOTICES, STORE_TOO_LARGE};
}

/// Counts one failed store operation.
pub use sluice_core::metrics::store_error;

/// Counts one entry refused for its size.
pub fn too_large(store: &'static str) {
    counter!(names::STORE_TOO_LARGE, "store" => store).increment(1);
}

/// Counts one purge notice received.
pub fn purge_notice(kind: &'static str) {
    counter!(names::STORE_PURGE_NOTICES, "kind" => kind).increment(1);
}
