//! The `sluice` binary's library half: configuration, the server around the
//! gateway, the demo and telemetry. `main.rs` is only the command line.
//!
//! Exit codes of the binary: `0` success, `1` runtime failure (cannot listen,
//! server error), `2` bad command line or invalid configuration.

#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod job_cli;
pub mod job_task;
pub mod jobs;
pub mod partition;
pub mod queue_cli;
pub mod schedule;
pub mod serve;
pub mod telemetry;

/// Installs the process-wide TLS crypto provider (ring) for upstream `https://`
/// calls. Idempotent.
pub fn init_tls() {
    sluice_upstream::init_tls();
}
