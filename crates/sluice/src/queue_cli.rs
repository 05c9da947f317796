//! `sluice queue …` and `sluice task …`: look into the task queue, and handle its
//! dead letters.

use std::process::ExitCode;

use clap::Subcommand;
use sluice_queue::{Broker, TaskId, TaskStatus};

use crate::config::{JOBS_QUEUE, Settings};

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

/// `sluice task …`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// A task's state, attempts, last error and result.
    Status {
        /// The task's id.
        id: TaskId,
        /// Its queue (default: look in every queue).
        #[arg(long)]
        queue: Option<String>,
    },
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

/// Runs `sluice queue …`.
pub async fn run_queue(cmd: QueueCommand, settings: &Settings) -> ExitCode {
    let broker = match crate::job_task::broker(settings).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match queue_inner(cmd, broker.as_ref()).await {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

async fn queue_inner(cmd: QueueCommand, broker: &dyn Broker) -> Result<ExitCode, String> {
    let e = |e: sluice_queue::QueueError| e.to_string();
    match cmd {
        QueueCommand::Stats => {
            let queues = broker.queues().await.map_err(e)?;
            if queues.is_empty() {
                println!("no queue has held a task yet");
            }
            println!(
                "{:<20} {:>8} {:>8} {:>8} {:>8}",
                "queue", "ready", "delayed", "running", "dead"
            );
            for q in queues {
                let s = broker.stats(&q).await.map_err(e)?;
                println!(
                    "{q:<20} {:>8} {:>8} {:>8} {:>8}",
                    s.ready, s.delayed, s.running, s.dead
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Dlq {
            cmd: DlqCommand::List { queue, limit },
        } => {
            let dead = broker.dead(&queue, limit).await.map_err(e)?;
            if dead.is_empty() {
                println!("no dead tasks on queue {queue}");
            }
            for t in dead {
                println!(
                    "{}  {}  attempts {}/{}  {}  {}",
                    t.id,
                    t.name,
                    t.attempt,
                    t.max_attempts,
                    t.payload,
                    t.last_error.unwrap_or_default()
                );
            }
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
            println!("{n} task(s) back on queue {queue}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Dlq {
            cmd: DlqCommand::Purge { queue },
        } => {
            let n = broker.purge_dead(&queue).await.map_err(e)?;
            println!("deleted {n} dead task(s) of queue {queue}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Finds task `id` in `queue`, or in every known queue.
///
/// # Errors
///
/// The broker's error.
pub async fn find_task(
    broker: &dyn Broker,
    id: TaskId,
    queue: Option<&str>,
) -> Result<Option<TaskStatus>, String> {
    let queues = match queue {
        Some(q) => vec![q.to_owned()],
        None => broker.queues().await.map_err(|e| e.to_string())?,
    };
    for q in queues {
        if let Some(s) = broker.status(&q, id).await.map_err(|e| e.to_string())? {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Prints a task's status.
pub fn print_task(s: &TaskStatus) {
    let t = &s.task;
    println!("task      {}", t.id);
    println!(
        "name      {}  (queue {}, priority {})",
        t.name, t.queue, t.priority
    );
    println!("state     {}", s.state);
    println!(
        "attempts  {}/{}{}",
        t.attempt,
        t.max_attempts,
        if s.redelivered > 0 {
            format!(
                "  (redelivered {} time(s) after a lease ran out)",
                s.redelivered
            )
        } else {
            String::new()
        }
    );
    println!("payload   {}", t.payload);
    if let Some(e) = &t.last_error {
        println!("error     {e}");
    }
    if let Some(r) = &s.result {
        println!("result    {r}");
    }
}

/// Runs `sluice task …`.
pub async fn run_task(cmd: TaskCommand, settings: &Settings) -> ExitCode {
    let TaskCommand::Status { id, queue } = cmd;
    let broker = match crate::job_task::broker(settings).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match find_task(broker.as_ref(), id, queue.as_deref()).await {
        Ok(Some(s)) => {
            print_task(&s);
            ExitCode::SUCCESS
        }
        Ok(None) => fail(format!(
            "task {id} is unknown: never enqueued here, or completed without a result TTL, or its result expired"
        )),
        Err(e) => fail(e),
    }
}
