//! `sluice`: a caching gateway and batch engine for slow, quota-limited APIs.
//!
//! Exit codes: 0 success; 1 runtime failure; 2 bad arguments, invalid config, or
//! an unknown job, execution, trigger or task; `job run` also 3 (already running or completed), 4 (STOPPED), 75 (the follower
//! gave up waiting for the broker or repository) and 130 (interrupted).

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command};
use sluice::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        Command::Demo { .. } => "error",
        _ => "info",
    };
    telemetry::init_logs(cli.log_format, level);
    sluice::init_tls();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(sluice::cli::run(cli.command))
}
