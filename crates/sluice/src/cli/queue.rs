//! `sluice queue …`: look into the task queue, and handle its dead letters.

use std::process::ExitCode;

use clap::Subcommand;
use sluice_queue::TaskId;

use crate::config::JOBS_QUEUE;
use crate::runtime::Runtime;

/// `sluice queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts of every queue: ready, delayed, running, dead.
    Stats,
    /// The dead-letter queue.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        cmd: DlqCommand,
    },
}

/// `sluice queue dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead tasks with their last error, oldest first.
    List {
        /// The queue.
        #[arg(long, default_value = JOBS_QUEUE)]
        queue: String,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Puts dead tasks back on their queue with fresh attempts.
    Retry {
        /// The task's id (or `--all`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<TaskId>,
        /// Every dead task of the queue.
        #[arg(long)]
        all: bool,
        /// The queue.
        #[arg(long, default_value = JOBS_QUEUE)]
        queue: String,
    },
    /// Deletes every dead task of the queue.
    Purge {
        /// The queue.
        #[arg(long, default_value = JOBS_QUEUE)]
        queue: String,
    },
}

/// Runs `sluice queue …`.
///
/// # Errors
///
/// The broker's errors; a task id that is not dead.
pub async fn run(cmd: QueueCommand, rt: &Runtime) -> Result<ExitCode, String> {
    let broker = rt.broker().await?;
    let broker = broker.as_ref();
    let e = |e: sluice_queue::QueueError| e.to_string();
    match cmd {
        QueueCommand::Stats => {
            let queues = broker.queues().await.map_err(e)?;
            if queues.is_empty() {
                outln!("no queue has held a task yet");
            }
            outln!(
                "{:<20} {:>8} {:>8} {:>8} {:>8}",
                "queue",
                "ready",
                "delayed",
                "running",
                "dead"
            );
            for q in queues {
                let s = broker.stats(&q).await.map_err(e)?;
                outln!(
                    "{q:<20} {:>8} {:>8} {:>8} {:>8}",
                    s.ready,
                    s.delayed,
                    s.running,
                    s.dead
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Dlq {
            cmd: DlqCommand::List { queue, limit },
        } => {
            let dead = broker.dead(&queue, limit).await.map_err(e)?;
            super::print_lines(dead, &format!("no dead tasks on queue {queue}"), |t| {
                format!(
                    "{}  {}  attempts {}/{}  {}  {}",
                    t.id,
                    t.name,
                    t.attempt,
                    t.max_attempts,
                    t.payload,
                    t.last_error.unwrap_or_default()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Dlq {
            cmd: DlqCommand::Retry { id, all, queue },
        } => {
            let ids = id.map(|i| vec![i]);
            let n = broker
                .retry_dead(&queue, if all { None } else { ids.as_deref() })
                .await
                .map_err(e)?;
            if n == 0
                && let Some(id) = id
            {
                return Err(format!(
                    "task {id} is not in the dead-letter queue of {queue}"
                ));
            }
            outln!("{n} task(s) back on queue {queue}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Dlq {
            cmd: DlqCommand::Purge { queue },
        } => {
            let n = broker.purge_dead(&queue).await.map_err(e)?;
            outln!("deleted {n} dead task(s) of queue {queue}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
