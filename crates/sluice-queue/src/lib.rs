//! A reliable task queue: brokers on Redis, SQLite and PostgreSQL; workers with
//! leases, heartbeats, retries with backoff and dead letters.
//!
//! Background work in sluice (job runs, step partitions, webhooks) runs as
//! tasks on a queue, executed by [`Worker`]s on any node. Delivery is at least
//! once: a task is acknowledged after its handler returns, and a task whose worker
//! died is handed out again when its lease runs out. See [`broker`] for the
//! protocol every broker keeps.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sluice_queue::{Broker, NewTask, SqlBroker};
//! # async fn demo() -> Result<(), sluice_queue::QueueError> {
//! let broker = SqlBroker::connect("sqlite://queue.db").await?;
//! let t = broker.enqueue(NewTask::new("email.send", serde_json::json!({"to": "a@b.c"}))).await?;
//! println!("enqueued {}", t.id);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod broker;
pub mod metrics;
pub mod redis_broker;
pub mod retry;
pub mod sql;
pub mod task;
pub mod worker;

pub use broker::{
    Broker, CancelOutcome, LeaseRequest, LiveWorker, QueueError, RunningTask, WorkerBeat,
};
pub use redis_broker::RedisBroker;
pub use retry::RetryPolicy;
pub use sql::SqlBroker;
pub use task::{
    Completion, Enqueued, Envelope, FailOutcome, Lease, LeaseRef, NewTask, QueueStats, TaskId,
    TaskState, TaskStatus,
};
pub use worker::{
    FnHandler, Handler, Presence, ResultExt, Task, TaskContext, TaskError, Worker, WorkerBuilder,
    WorkerHandle, default_node,
};

/// Connects the broker a URL names: `redis://` / `rediss://` (keys under
/// `namespace`), `sqlite://` or `postgres://`.
///
/// # Errors
///
/// [`QueueError::Invalid`] for another scheme, or the broker's connect error.
pub async fn connect(url: &str, namespace: &str) -> Result<std::sync::Arc<dyn Broker>, QueueError> {
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    match scheme {
        "redis" | "rediss" => Ok(std::sync::Arc::new(RedisBroker::connect(url, namespace)?)),
        "sqlite" | "postgres" | "postgresql" => {
            Ok(std::sync::Arc::new(SqlBroker::connect(url).await?))
        }
        _ => Err(QueueError::Invalid(format!(
            "broker URL '{}' must start with redis://, rediss://, sqlite:// or postgres://",
            sluice_core::redact_url(url)
        ))),
    }
}
