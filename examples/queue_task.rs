//! A typed task on the embedded SQLite broker: enqueue with a delay, a priority and
//! an idempotency key, run a worker, read the result.
//!
//! ```sh
//! cargo run -p sluice-queue --example queue_task
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_queue::{
    Broker, ResultExt, RetryPolicy, SqlBroker, Task, TaskContext, TaskError, TaskState, Worker,
};

/// The payload: which station to fetch.
#[derive(Debug, Serialize, Deserialize)]
struct Fetch {
    station: String,
}

/// A task that "fetches" a station's latest reading.
struct FetchStation;

#[async_trait::async_trait]
impl Task for FetchStation {
    const NAME: &'static str = "station.fetch";
    type Input = Fetch;
    type Output = serde_json::Value;

    async fn execute(&self, ctx: TaskContext, input: Fetch) -> Result<Self::Output, TaskError> {
        if input.station.is_empty() {
            return Err(TaskError::Fatal("no station given".into()));
        }
        // A transient failure on the first attempt, retried with backoff.
        if ctx.attempt == 1 {
            return Err("upstream answered 503").retryable();
        }
        Ok(serde_json::json!({ "station": input.station, "pm10": 42, "attempt": ctx.attempt }))
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            ..RetryPolicy::default()
        }
    }

    fn result_ttl(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    let broker: Arc<dyn Broker> = Arc::new(SqlBroker::connect(&url).await?);

    let first = broker
        .enqueue(
            FetchStation
                .build(&Fetch {
                    station: "jongno".into(),
                })?
                .delay(Duration::from_millis(300))
                .priority(8)
                .idempotency_key("jongno-2026-11-25T10"),
        )
        .await?;
    // The same key within its window: no second task.
    let again = broker
        .enqueue(
            FetchStation
                .build(&Fetch {
                    station: "jongno".into(),
                })?
                .idempotency_key("jongno-2026-11-25T10"),
        )
        .await?;
    assert_eq!(first.id, again.id);
    println!(
        "enqueued {} (second enqueue deduplicated: {})",
        first.id, again.duplicate
    );

    let worker = Worker::builder(broker.clone())
        .queue("default", 4)
        .poll(Duration::from_millis(50))
        .task(FetchStation)
        .start();
    loop {
        let s = broker
            .status("default", first.id)
            .await?
            .ok_or("task vanished")?;
        if s.state == TaskState::Completed {
            println!(
                "completed after {} attempts: {}",
                s.task.attempt,
                s.result.unwrap_or_default()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
    Ok(())
}
