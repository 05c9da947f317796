//! The tables of a `[[job.step]]`: `reader`, `processor`, `writer`, `tasklet`.
//!
//! Each is its family's `#[serde(tag = "kind")]` enum, which lives in
//! `sluice-batch` beside the kinds' implementations (`sluice_batch::readers`,
//! `processors`, `writers`, `tasklets`). They are typed when a job is built for a
//! run (`crate::runtime::build`), after the run's `{{params.NAME}}` are
//! substituted into their strings; `sluice check` builds every step once, so
//! mistakes show before anything runs.

pub use sluice_batch::processors::RawProcessor;
pub use sluice_batch::readers::RawReader;
pub use sluice_batch::tasklets::RawTasklet;
pub use sluice_batch::writers::RawWriter;
