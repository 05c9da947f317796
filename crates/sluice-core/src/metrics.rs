//! Metric plumbing shared by every crate that records metrics (names in
//! `docs/specs/metrics.md`): one way to describe a family, and the one counter
//! this crate records itself (store failures, counted by [`crate::Backend`]).

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

/// Store operation failures, by `store` and `op` (counted by [`crate::Backend`];
/// described by the cache crate, whose stores they belong to).
pub const STORE_ERRORS: &str = "sluice_store_errors_total";

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

/// Registers the help text and unit of every family in `families` with the
/// current recorder, so the Prometheus page prints `# HELP` for each family
/// whether or not it has been recorded yet. Each crate calls it once from its own
/// `describe`, with its table; calling again only repeats the descriptions.
pub fn describe(families: &[Family]) {
    for &(kind, name, unit, help) in families {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
}

/// Counts one failed store operation.
pub fn store_error(store: &'static str, op: &'static str) {
    counter!(STORE_ERRORS, "store" => store, "op" => op).increment(1);
}
