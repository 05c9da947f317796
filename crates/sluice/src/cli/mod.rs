//! The command line: one module per command group. `main.rs` only parses and
//! calls [`run`].
//!
//! Every command that uses the queue, the repository or the claims builds one
//! [`Runtime`] and passes it down; each command connects only what it uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{self, Env};
use crate::runtime::Runtime;
use crate::telemetry::LogFormat;

pub mod alerts;
pub mod backup;
pub mod check;
pub mod follow;
pub mod job;
pub mod out;
pub mod progress;
pub mod queue;
pub mod schedule;
pub mod serve;
pub mod task;
pub mod top;

/// Keep slow, quota-limited upstream APIs fast and fresh.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
        cmd: job::JobCommand,
    },
    /// The task queue: counts and dead letters.
    Queue {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: queue::QueueCommand,
    },
    /// Job triggers: list them with their next fires, pause and resume.
    Schedule {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: schedule::ScheduleCommand,
    },
    /// One task: its state, attempts, error and result.
    Task {
        /// Config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: task::TaskCommand,
    },
    /// Alerts: those firing now, and those resolved lately.
    Alerts {
        /// The config file.
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: alerts::AlertsCommand,
    },
    /// Backups made by `kind = "backup"` steps: list, verify, restore.
    Backup {
        /// Config file (read for `--job`).
        #[arg(short, long, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: backup::BackupCommand,
    },
    /// The overview of a running server (gateway, upstream quotas, jobs,
    /// queues), redrawn every interval, read from its REST API.
    Top(top::TopArgs),
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
        /// Rows in the dataset of each `sidoName` (its `totalCount`); rows are
        /// made on demand, so millions cost no memory.
        #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
        rows_per_sido: u64,
    },
}

/// Runs a command; the exit code follows the crate's convention.
pub async fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Check { config } => check::run(&config),
        Command::Top(args) => top::run(args).await,
        Command::Serve { config, listen } => serve::serve(&config, listen).await,
        Command::Job { config, cmd } => {
            // Only running a job calls upstreams; the rest reads the repository.
            let env = if cmd.needs_secrets() {
                Env::process()
            } else {
                Env::inspect()
            };
            with_runtime(&config, &env, |rt| async move { job::run(cmd, &rt).await }).await
        }
        Command::Queue { config, cmd } => {
            with_runtime(&config, &Env::inspect(), |rt| async move {
                queue::run(cmd, &rt).await
            })
            .await
        }
        Command::Schedule { config, cmd } => {
            with_runtime(&config, &Env::inspect(), |rt| async move {
                schedule::run(cmd, &rt).await
            })
            .await
        }
        Command::Task { config, cmd } => {
            with_runtime(&config, &Env::inspect(), |rt| async move {
                task::run(cmd, &rt).await
            })
            .await
        }
        Command::Alerts { config, cmd } => {
            with_runtime(&config, &Env::inspect(), |rt| async move {
                alerts::run(cmd, &rt).await
            })
            .await
        }
        Command::Backup { config, cmd } => backup::run(&config, cmd).await,
        Command::Demo { keep_running } => match crate::demo::run(keep_running).await {
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
            rows_per_sido,
        } => serve::sim(listen, latency, key, quota, rows_per_sido).await,
    }
}

/// Loads the config, builds the process's [`Runtime`] and runs `f` with it:
/// exit 2 for an invalid config, 1 for an error of `f`.
async fn with_runtime<F, Fut>(path: &std::path::Path, env: &Env<'_>, f: F) -> ExitCode
where
    F: FnOnce(Arc<Runtime>) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    match config::load(path, env) {
        Ok(s) => f(Runtime::new(s)).await.unwrap_or_else(fail),
        Err(e) => invalid(&e),
    }
}

/// An invalid config: every problem on stderr, exit 2.
pub(crate) fn invalid(e: &config::ConfigErrors) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

/// Prints one line per item, or `empty` when there is none.
fn print_lines<T>(items: Vec<T>, empty: &str, line: impl Fn(T) -> String) {
    if items.is_empty() {
        outln!("{empty}");
    }
    for item in items {
        outln!("{}", line(item));
    }
}

/// A runtime failure: `error: …` on stderr, exit 1.
pub(crate) fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}
