//! `sluice serve` (the gateway, with workers and scheduler) and `sluice sim` (the
//! simulated upstream).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::{fail, invalid};
use crate::config::{self, Env};
use crate::telemetry;

/// Runs the gateway from the config at `path` until SIGINT/SIGTERM; `listen`
/// overrides `server.listen`.
pub async fn serve(path: &Path, listen: Option<SocketAddr>) -> ExitCode {
    let settings = match config::load(path, &Env::process()) {
        Ok(s) => config::Settings {
            listen: listen.unwrap_or(s.listen),
            ..s
        },
        Err(e) => return invalid(&e),
    };
    let _ = telemetry::prometheus();
    telemetry::spawn_upkeep();
    match crate::serve::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Runs the simulated public-data portal on `listen` until SIGINT/SIGTERM, with
/// `rows_per_sido` rows in each `sidoName`'s dataset.
pub async fn sim(
    listen: SocketAddr,
    latency: Duration,
    key: String,
    quota: Option<u64>,
    rows_per_sido: u64,
) -> ExitCode {
    let Ok(rows_per_sido) = usize::try_from(rows_per_sido) else {
        return fail(format!("--rows-per-sido {rows_per_sido} is too large here"));
    };
    let cfg = sluice_sim::SimConfig {
        latency,
        service_key: key,
        daily_quota: quota,
        rows_per_sido,
        ..Default::default()
    };
    match sluice_sim::SimUpstream::start_on(listen, cfg).await {
        Ok(sim) => {
            outln!("simulated upstream on {}", sim.base_url());
            crate::serve::shutdown_signal().await;
            sim.shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot listen on {listen}: {e}")),
    }
}
