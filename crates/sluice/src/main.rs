//! `sluice`: a caching gateway and batch engine for slow, quota-limited APIs.
//!
//! Exit codes: 0 success; 1 runtime failure; 2 bad arguments or invalid config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::{self, Env};
use sluice::telemetry::{self, LogFormat};

/// Keep slow, quota-limited upstream APIs fast and fresh.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml")]
        config: PathBuf,
        /// Listen here instead of `server.listen` (several nodes from one config).
        #[arg(long, env = "SLUICE_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Batch jobs: run them, and look into their repository.
    Job {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: sluice::job_cli::JobCommand,
    },
    /// The task queue: counts and dead letters.
    Queue {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: sluice::queue_cli::QueueCommand,
    },
    /// Job triggers: list them with their next fires, pause and resume.
    Schedule {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: sluice::schedule::ScheduleCommand,
    },
    /// One task: its state, attempts, error and result.
    Task {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: sluice::queue_cli::TaskCommand,
    },
    /// Validate a config file and exit (0 valid, 2 invalid).
    Check {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml")]
        config: PathBuf,
    },
    /// Start a simulated upstream and the gateway in front of it, and show what
    /// caching does.
    Demo {
        /// Leave both running afterwards and print their URLs.
        #[arg(long)]
        keep_running: bool,
    },
    /// Run the simulated public-data-portal upstream (for trying sluice and for
    /// benchmarks).
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Latency per call.
        #[arg(long, default_value = "300ms", value_parser = config::parse_duration)]
        latency: std::time::Duration,
        /// The raw service key the simulator accepts.
        #[arg(long, default_value = "sim+Key/with==")]
        key: String,
        /// Daily quota per key (resets at midnight KST).
        #[arg(long)]
        quota: Option<u64>,
    },
}

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
    rt.block_on(run(cli.command))
}

async fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Check { config } => match config::load(&config, &Env::process()) {
            Ok(s) => {
                let problems = sluice::jobs::check_all(&s);
                if !problems.is_empty() {
                    for p in problems {
                        eprintln!("{}: {p}", config.display());
                    }
                    return ExitCode::from(2);
                }
                println!(
                    "{}: ok ({} routes, store {}, {} jobs)",
                    config.display(),
                    s.gateway.route_names().len(),
                    s.gateway.store().kind(),
                    s.jobs.jobs.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config, listen } => {
            let settings = match config::load(&config, &Env::process()) {
                Ok(s) => config::Settings {
                    listen: listen.unwrap_or(s.listen),
                    ..s
                },
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let _ = telemetry::prometheus();
            telemetry::spawn_upkeep();
            match sluice::serve::run(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Job { config, cmd } => {
            // Only running a job calls upstreams; the rest reads the repository.
            let env = if cmd.needs_secrets() {
                Env::process()
            } else {
                Env::inspect()
            };
            let settings = match config::load(&config, &env) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            sluice::job_cli::run(cmd, &settings).await
        }
        Command::Queue { config, cmd } => match config::load(&config, &Env::inspect()) {
            Ok(s) => sluice::queue_cli::run_queue(cmd, &s).await,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Schedule { config, cmd } => match config::load(&config, &Env::inspect()) {
            Ok(s) => sluice::schedule::run(cmd, &s).await,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Task { config, cmd } => match config::load(&config, &Env::inspect()) {
            Ok(s) => sluice::queue_cli::run_task(cmd, &s).await,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Demo { keep_running } => match sluice::demo::run(keep_running).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Sim {
            listen,
            latency,
            key,
            quota,
        } => {
            let cfg = sluice_sim::SimConfig {
                latency,
                service_key: key,
                daily_quota: quota,
                ..Default::default()
            };
            match sluice_sim::SimUpstream::start_on(listen, cfg).await {
                Ok(sim) => {
                    println!("simulated upstream on {}", sim.base_url());
                    sluice::serve::shutdown_signal().await;
                    sim.shutdown().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot listen on {listen}: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
