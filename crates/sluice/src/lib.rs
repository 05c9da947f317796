//! The `sluice` binary's library half. `main.rs` only parses the command line.
//!
//! - [`config`]: pure, the TOML file → checked [`config::Settings`], every error
//!   located;
//! - [`runtime`]: the composition root, built once per process (broker,
//!   repository, claims, job building, run parameters, partitions, launchers);
//! - [`cli`]: one module per command group;
//! - [`http`]: the endpoints sluice serves itself, with one `ApiError`;
//! - [`serve`]: the server around them and the gateway;
//! - [`alerts`]: alert rules evaluated by `serve`, their state and notifications;
//! - [`demo`], [`telemetry`].
//!
//! Exit codes of the binary: `0` success, `1` runtime failure (cannot listen,
//! server error), `2` bad command line or invalid configuration.

#![forbid(unsafe_code)]

/// `println!` for what a command prints: when the reader has gone away
/// (`sluice job history x | head -1`), the process ends quietly with exit 0, as a
/// Unix tool killed by `SIGPIPE` would, instead of panicking; any other write
/// error is reported on stderr with exit 1.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

pub mod alerts;
pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod ops;
pub mod runtime;
pub mod serve;
pub mod telemetry;
pub mod views;

/// Installs the process-wide TLS crypto provider (ring) for upstream `https://`
/// calls. Idempotent.
pub fn init_tls() {
    sluice_upstream::init_tls();
}
