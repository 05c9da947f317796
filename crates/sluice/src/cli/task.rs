//! `sluice task …`: one task's state, attempts, error and result.

use std::process::ExitCode;

use clap::Subcommand;
use sluice_queue::{Broker, CancelOutcome, TaskId, TaskStatus};

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
    /// Cancels a task no worker has started (ready or delayed): it is deleted.
    /// A running or finished task is refused (exit 1); an unknown one exits 2.
    Cancel {
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
    let (id, queue) = match cmd {
        TaskCommand::Status { id, queue } => (id, queue),
        TaskCommand::Cancel { id, queue } => return cancel(rt, id, queue).await,
    };
    let broker = rt.broker().await?;
    match find_task(broker.as_ref(), id, queue.as_deref()).await? {
        Some(s) => {
            print_task(&s);
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(super::out::invalid_input(format!(
            "task {id} is unknown: never enqueued here, or completed without a result TTL, or its result expired"
        ))),
    }
}

/// `sluice task cancel ID`: deletes a waiting task; refuses a running or
/// finished one.
async fn cancel(rt: &Runtime, id: TaskId, queue: Option<String>) -> Result<ExitCode, String> {
    let broker = rt.broker().await?;
    let Some(found) = find_task(broker.as_ref(), id, queue.as_deref()).await? else {
        return Ok(super::out::invalid_input(format!(
            "task {id} is unknown: never enqueued here, already cancelled, or completed"
        )));
    };
    let q = found.task.queue.clone();
    match broker.cancel(&q, id).await.map_err(|e| e.to_string())? {
        CancelOutcome::Cancelled => {
            outln!("cancelled task {id} on queue {q} (no worker had started it)");
            Ok(ExitCode::SUCCESS)
        }
        CancelOutcome::Running => Err(format!(
            "task {id} is running on a worker and cannot be cancelled; a job run stops with \
             `sluice job stop EXEC` (see `sluice job status`)"
        )),
        CancelOutcome::Finished(st) => {
            Err(format!("task {id} already ended ({st}): nothing to cancel"))
        }
        _ => Err(format!("task {id} is no longer on queue {q}")),
    }
}
