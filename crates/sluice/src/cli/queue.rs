//! `sluice queue …`: look into the task queue, and handle its dead letters.

use std::process::ExitCode;

use clap::Subcommand;
use sluice_queue::{Broker, TaskId};

use crate::config::JOBS_QUEUE;
use crate::runtime::Runtime;

/// `sluice queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts of every queue: ready, delayed, running, dead; a running task of a
    /// queue no live worker serves shows as `owner gone, lease ends at …`.
    Stats {
        /// One JSON document: an array of `{name, ready, delayed, running, dead,
        /// owners_gone}`.
        #[arg(long)]
        json: bool,
    },
    /// Every queue with its counts, and the live workers with the queues they
    /// serve.
    List {
        /// One JSON document: `{"queues": [...], "workers": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Pauses a queue: no worker on any node leases its tasks until it is
    /// resumed (tasks in flight finish; enqueueing still works).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resumes a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
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
    /// Deletes the named dead tasks of a queue (others are left).
    Delete {
        /// The queue.
        queue: String,
        /// The dead tasks' ids.
        #[arg(required = true)]
        ids: Vec<TaskId>,
    },
    /// Deletes every dead task of the queue.
    Purge {
        /// The queue.
        #[arg(long, default_value = JOBS_QUEUE)]
        queue: String,
    },
}

/// The `task ID: owner gone, lease ends at …` lines of `queue`'s running tasks
/// when no live worker serves it (with a live one, the owner cannot be told).
async fn owners_gone(broker: &dyn Broker, queue: &str, running: u64) -> Vec<String> {
    if running == 0 {
        return Vec::new();
    }
    let Ok(live) = broker.workers().await else {
        return Vec::new();
    };
    if live.iter().any(|w| w.serves(queue)) {
        return Vec::new();
    }
    let Ok(tasks) = broker.running(queue, 20).await else {
        return Vec::new();
    };
    tasks
        .into_iter()
        .map(|t| {
            format!(
                "task {}: {}",
                t.id,
                super::job::lease_line("", Some(t.lease_until))
            )
        })
        .collect()
}

/// A queue in `queue stats --json`.
#[derive(serde::Serialize)]
struct QueueView {
    name: String,
    #[serde(flatten)]
    stats: sluice_queue::QueueStats,
    /// `task ID: owner gone, lease ends at …` of its running tasks no live
    /// worker holds.
    owners_gone: Vec<String>,
    /// Whether it is paused (`sluice queue pause`).
    paused: bool,
}

/// `sluice queue list`: queues with counts, then the live workers.
async fn list(broker: &dyn Broker, json: bool) -> Result<ExitCode, String> {
    let e = |e: sluice_queue::QueueError| e.to_string();
    let mut queues = Vec::new();
    for q in broker.queues().await.map_err(e)? {
        let s = broker.stats(&q).await.map_err(e)?;
        queues.push((q, s));
    }
    let workers = broker.workers().await.map_err(e)?;
    if json {
        let queues: Vec<serde_json::Value> = queues
            .iter()
            .map(|(q, s)| {
                serde_json::json!({
                    "name": q,
                    "ready": s.ready,
                    "delayed": s.delayed,
                    "running": s.running,
                    "dead": s.dead,
                    "workers": workers.iter().filter(|w| w.serves(q)).map(|w| &w.node).collect::<Vec<_>>(),
                })
            })
            .collect();
        super::out::json(&serde_json::json!({ "queues": queues, "workers": workers }));
        return Ok(ExitCode::SUCCESS);
    }
    if queues.is_empty() {
        outln!("no queue has held a task yet");
    } else {
        outln!(
            "{:<20} {:>8} {:>8} {:>8} {:>8}  workers",
            "queue",
            "ready",
            "delayed",
            "running",
            "dead"
        );
    }
    for (q, s) in &queues {
        let serving = workers.iter().filter(|w| w.serves(q)).count();
        outln!(
            "{q:<20} {:>8} {:>8} {:>8} {:>8}  {serving}",
            s.ready,
            s.delayed,
            s.running,
            s.dead
        );
    }
    if workers.is_empty() {
        outln!("no live worker (start one with `sluice serve`)");
    }
    for w in &workers {
        let queues = if w.queues.is_empty() {
            "no queue (runs a job in its own process)".to_owned()
        } else {
            format!("queues {}", w.queues.join(", "))
        };
        outln!(
            "worker {}  {queues}  started {}  seen {}",
            w.node,
            super::job::time(Some(w.started_at)),
            super::job::time(Some(w.seen_at))
        );
    }
    Ok(ExitCode::SUCCESS)
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
        QueueCommand::Stats { json: true } => {
            let paused = broker.paused_queues().await.map_err(e)?;
            let mut list = Vec::new();
            for name in broker.queues().await.map_err(e)? {
                let stats = broker.stats(&name).await.map_err(e)?;
                let owners_gone = owners_gone(broker, &name, stats.running).await;
                list.push(QueueView {
                    paused: paused.contains(&name),
                    name,
                    stats,
                    owners_gone,
                });
            }
            super::out::json(&list);
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Stats { json: false } => {
            let queues = broker.queues().await.map_err(e)?;
            let paused = broker.paused_queues().await.map_err(e)?;
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
                    "{q:<20} {:>8} {:>8} {:>8} {:>8}{}",
                    s.ready,
                    s.delayed,
                    s.running,
                    s.dead,
                    if paused.contains(&q) { "  paused" } else { "" }
                );
                for line in owners_gone(broker, &q, s.running).await {
                    outln!("  {line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::List { json } => list(broker, json).await,
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
                return Ok(super::out::invalid_input(format!(
                    "task {id} is not in the dead-letter queue of {queue} (see `sluice queue dlq list --queue {queue}`)"
                )));
            }
            outln!("{n} task(s) back on queue {queue}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Pause { queue } => {
            broker.set_queue_paused(&queue, true).await.map_err(e)?;
            outln!(
                "paused queue {queue}: workers lease none of its tasks until `sluice queue resume {queue}`"
            );
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Resume { queue } => {
            broker.set_queue_paused(&queue, false).await.map_err(e)?;
            outln!("resumed queue {queue}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Dlq {
            cmd: DlqCommand::Delete { queue, ids },
        } => {
            let n = broker.delete_dead(&queue, &ids).await.map_err(e)?;
            outln!("deleted {n} dead task(s) of queue {queue}");
            if n < ids.len() as u64 {
                return Ok(super::out::invalid_input(format!(
                    "{} of the ids given are not in the dead-letter queue of {queue} (see `sluice queue dlq list --queue {queue}`)",
                    ids.len() as u64 - n
                )));
            }
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
