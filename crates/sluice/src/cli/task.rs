//! `sluice task …`: one task's state, attempts, error and result.

use std::process::ExitCode;

use clap::Subcommand;
use sluice_queue::{Broker, TaskId, TaskStatus};

use crate::runtime::Runtime;

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
    outln!("task      {}", t.id);
    outln!(
        "name      {}  (queue {}, priority {})",
        t.name,
        t.queue,
        t.priority
    );
    outln!("state     {}", s.state);
    outln!(
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
    outln!("payload   {}", t.payload);
    if let Some(e) = &t.last_error {
        outln!("error     {e}");
    }
    if let Some(r) = &s.result {
        outln!("result    {r}");
    }
}

/// Runs `sluice task …`.
///
/// # Errors
///
/// The broker's errors; an unknown task.
pub async fn run(cmd: TaskCommand, rt: &Runtime) -> Result<ExitCode, String> {
    let TaskCommand::Status { id, queue } = cmd;
    let broker = rt.broker().await?;
    match find_task(broker.as_ref(), id, queue.as_deref()).await? {
        Some(s) => {
            print_task(&s);
            Ok(ExitCode::SUCCESS)
        }
        None => Err(format!(
            "task {id} is unknown: never enqueued here, or completed without a result TTL, or its result expired"
        )),
    }
}
