//! Workers against real brokers (Redis and SQLite): retries with backoff, panics,
//! fatal errors, heartbeats over long handlers, delays longer than the lease,
//! graceful shutdown, rate limits and typed tasks.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_queue::{
    Broker, NewTask, RedisBroker, RetryPolicy, SqlBroker, Task, TaskContext, TaskError, TaskId,
    TaskState, Worker, WorkerBuilder,
};

use common::until;

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis() -> Arc<dyn Broker> {
    let ns = format!("tw-{:016x}", rand::random::<u64>());
    Arc::new(RedisBroker::connect(&redis_url(), &ns).expect("redis broker"))
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Broker> {
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    Arc::new(SqlBroker::connect(&url).await.expect("sqlite broker"))
}

fn fast_retry(max: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: max,
        base: Duration::from_millis(50),
        factor: 2.0,
        max: Duration::from_millis(200),
        jitter: true,
    }
}

/// A worker on `broker` serving `queue` (`concurrency` at once), polling every 20 ms.
fn worker(broker: &Arc<dyn Broker>, queue: &str, concurrency: usize) -> WorkerBuilder {
    Worker::builder(broker.clone())
        .queue(queue, concurrency)
        .poll(Duration::from_millis(20))
}

/// Adds a handler for `name` that calls `note` with the payload, sleeps its `ms`
/// milliseconds and returns `result`.
fn sleeper(
    builder: WorkerBuilder,
    name: &str,
    note: impl Fn(&serde_json::Value) + Send + Sync + 'static,
    result: Option<serde_json::Value>,
) -> WorkerBuilder {
    builder.handler_fn(name, move |_ctx, p| {
        note(&p);
        let result = result.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(p["ms"].as_u64().unwrap())).await;
            Ok(result)
        }
    })
}

/// Waits up to `secs` seconds for task `id` of `queue` to complete.
async fn completes(broker: &Arc<dyn Broker>, queue: &str, id: TaskId, secs: u64) -> bool {
    until(Duration::from_secs(secs), async || {
        broker
            .status(queue, id)
            .await
            .unwrap()
            .is_some_and(|s| s.state == TaskState::Completed)
    })
    .await
}

/// Waits up to `secs` seconds for `queue` to hold `n` dead tasks.
async fn dead_reach(broker: &Arc<dyn Broker>, queue: &str, n: u64, secs: u64) -> bool {
    until(Duration::from_secs(secs), async || {
        broker.stats(queue).await.unwrap().dead == n
    })
    .await
}

/// Enqueues a task on `q` whose result is kept a minute.
async fn enqueue_kept(broker: &Arc<dyn Broker>, name: &str, payload: serde_json::Value) -> TaskId {
    let task = NewTask::new(name, payload)
        .queue("q")
        .result_ttl(Duration::from_secs(60));
    broker.enqueue(task).await.unwrap().id
}

/// When each `limited` task started.
type Starts = Arc<Mutex<Vec<Instant>>>;

/// Adds a `limited` handler that notes when each task starts in `starts`.
fn limited(builder: WorkerBuilder, starts: &Starts) -> WorkerBuilder {
    let s = starts.clone();
    builder.handler_fn("limited", move |_ctx, _p| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(Instant::now());
            Ok(None)
        }
    })
}

/// Enqueues `n` `limited` tasks on `q`.
async fn enqueue_limited(broker: &Arc<dyn Broker>, n: usize) {
    for _ in 0..n {
        broker
            .enqueue(NewTask::new("limited", json!({})).queue("q"))
            .await
            .unwrap();
    }
}

/// Waits up to `secs` seconds for `n` `limited` tasks to have started, and
/// returns the time from the first start to the last.
async fn limited_span(starts: &Starts, n: usize, secs: u64) -> Duration {
    assert!(
        until(Duration::from_secs(secs), async || starts
            .lock()
            .unwrap()
            .len()
            == n)
        .await
    );
    let st = starts.lock().unwrap().clone();
    *st.iter().max().unwrap() - *st.iter().min().unwrap()
}

/// A local quota of `n` a second (no daily budget).
fn per_second(n: u32) -> sluice_core::LocalQuota {
    sluice_core::LocalQuota::new(
        std::num::NonZeroU32::new(n),
        None,
        chrono_tz::UTC,
        Arc::new(sluice_core::SystemClock),
    )
}

/// What a handler's future gives.
type Reply = Result<Option<serde_json::Value>, TaskError>;

/// A handler that counts its calls in `calls`, answers the first `failures`
/// of them with `error(call number, context)`, and every later one with
/// `{"attempt": …, "last": …}` (its attempt and the last error it was told of).
fn fails_then_reports(
    calls: Arc<AtomicU32>,
    failures: u32,
    error: fn(u32, &TaskContext) -> TaskError,
) -> impl Fn(TaskContext, serde_json::Value) -> Pin<Box<dyn Future<Output = Reply> + Send>>
+ Send
+ Sync
+ 'static {
    move |ctx, _p| {
        let calls = calls.clone();
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= failures {
                Err(error(n, &ctx))
            } else {
                Ok(Some(
                    json!({"attempt": ctx.attempt, "last": ctx.last_error}),
                ))
            }
        })
    }
}

/// Asserts that the handler was called `n` times, that task `t` (queue "q")
/// kept `result`, and that nothing on it is dead.
async fn assert_reported(
    broker: &Arc<dyn Broker>,
    t: TaskId,
    calls: &AtomicU32,
    n: u32,
    result: serde_json::Value,
) {
    let s = broker.status("q", t).await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), n);
    assert_eq!(s.result, Some(result));
    assert_eq!(broker.stats("q").await.unwrap().dead, 0);
}

/// A task whose handler fails `failures` times with `error` (then reports, see
/// [`fails_then_reports`]), on a retry policy and task of `attempts` attempts.
struct FailsThenCompletes {
    name: &'static str,
    failures: u32,
    error: fn(u32, &TaskContext) -> TaskError,
    attempts: u32,
    /// How long it may take to complete, in seconds.
    secs: u64,
    /// What its handler reports at last.
    report: serde_json::Value,
}

/// Runs `case`: the task completes, after `failures + 1` calls, with its report
/// and nothing dead.
async fn fails_then_completes(broker: Arc<dyn Broker>, case: FailsThenCompletes) {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = fails_then_reports(calls.clone(), case.failures, case.error);
    let w = worker(&broker, "q", 2)
        .handler_fn(case.name, handler)
        .retry(case.name, fast_retry(case.attempts))
        // A timeout keeps the handler's own error (it wraps the handler).
        .timeout(case.name, Duration::from_secs(60))
        .start();
    let t = broker
        .enqueue(
            NewTask::new(case.name, json!({}))
                .queue("q")
                .max_attempts(case.attempts)
                .result_ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap()
        .id;
    assert!(
        completes(&broker, "q", t, case.secs).await,
        "task {} should complete after {} failures",
        case.name,
        case.failures
    );
    assert_reported(&broker, t, &calls, case.failures + 1, case.report).await;
    w.shutdown().await;
}

async fn retries_then_succeeds(broker: Arc<dyn Broker>) {
    let case = FailsThenCompletes {
        name: "flaky",
        failures: 2,
        error: |_, ctx| TaskError::Retryable(format!("upstream 503 on attempt {}", ctx.attempt)),
        attempts: 5,
        secs: 10,
        report: json!({"attempt": 3, "last": "upstream 503 on attempt 2"}),
    };
    fails_then_completes(broker, case).await;
}

/// Issue #14 point 1: a handler that says "not now" (`TaskError::Wait`) several
/// times, on a task with one attempt, is not dead-lettered: each wait gives the
/// lease back without counting the attempt, and the task completes on attempt 1.
async fn waiting_spends_no_attempt(broker: Arc<dyn Broker>) {
    let case = FailsThenCompletes {
        name: "held",
        failures: 3,
        error: |n, _| TaskError::Wait {
            delay: Duration::from_millis(200),
            reason: format!("held elsewhere ({n})"),
        },
        attempts: 1,
        secs: 20,
        report: json!({"attempt": 1, "last": "held elsewhere (3)"}),
    };
    fails_then_completes(broker, case).await;
}

async fn panics_and_fatal_errors_dead_letter_with_their_error(broker: Arc<dyn Broker>) {
    let w = worker(&broker, "q", 2)
        .handler_fn("boom", |_ctx, p| async move {
            if p.get("survive").is_none() {
                panic!("index out of bounds in the handler");
            }
            Ok(None)
        })
        .retry("boom", fast_retry(2))
        .handler_fn("bad", |_ctx, _p| async move {
            Err(TaskError::Fatal("payload has no 'station'".into()))
        })
        .handler_fn("ok", |_ctx, p| async move { Ok(Some(p)) })
        .start();
    let boom = broker
        .enqueue(NewTask::new("boom", json!({})).queue("q").max_attempts(2))
        .await
        .unwrap();
    let bad = broker
        .enqueue(NewTask::new("bad", json!({})).queue("q").max_attempts(5))
        .await
        .unwrap();
    let unknown = broker
        .enqueue(
            NewTask::new("nobody.handles", json!({}))
                .queue("q")
                .max_attempts(1),
        )
        .await
        .unwrap();
    let ok = enqueue_kept(&broker, "ok", json!({"n": 1})).await;
    assert!(
        dead_reach(&broker, "q", 3, 10).await,
        "three tasks should be dead: {:?}",
        broker.stats("q").await
    );
    let dead: HashMap<_, _> = broker
        .dead("q", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let b = &dead[&boom.id];
    assert_eq!(b.attempt, 2, "a panic is a failed attempt, retried");
    assert!(
        b.last_error
            .as_deref()
            .unwrap()
            .contains("panicked: index out of bounds")
    );
    let f = &dead[&bad.id];
    assert_eq!(f.attempt, 1, "a fatal error is not retried");
    assert_eq!(f.last_error.as_deref(), Some("payload has no 'station'"));
    assert!(
        dead[&unknown.id]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no handler for task name 'nobody.handles'")
    );
    // The worker lived through the panics.
    assert!(completes(&broker, "q", ok, 5).await);
    // Retry from the dead-letter queue: it fails again and comes back.
    assert_eq!(broker.retry_dead("q", Some(&[bad.id])).await.unwrap(), 1);
    assert!(dead_reach(&broker, "q", 3, 5).await);
    assert_eq!(broker.purge_dead("q").await.unwrap(), 3);
    w.shutdown().await;
}

async fn heartbeats_keep_a_long_task_and_delays_wait_outside_leases(broker: Arc<dyn Broker>) {
    let runs = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let r = runs.clone();
    let note = move |p: &serde_json::Value| {
        let k = p["k"].as_str().unwrap().to_owned();
        *r.lock().unwrap().entry(k).or_default() += 1;
    };
    let builder = worker(&broker, "q", 4).visibility(Duration::from_millis(300));
    let w = sleeper(builder, "slow", note, None).start();
    // Runs 3x the visibility timeout: heartbeats keep the lease.
    broker
        .enqueue(NewTask::new("slow", json!({"k": "long", "ms": 900})).queue("q"))
        .await
        .unwrap();
    // Waits 3x the visibility timeout before it may run.
    let enq = Instant::now();
    broker
        .enqueue(
            NewTask::new("slow", json!({"k": "delayed", "ms": 10}))
                .queue("q")
                .delay(Duration::from_millis(900)),
        )
        .await
        .unwrap();
    assert!(
        until(Duration::from_secs(10), async || {
            let s = broker.stats("q").await.unwrap();
            s.pending() == 0 && runs.lock().unwrap().len() == 2
        })
        .await
    );
    // Watch a little longer for a second delivery.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs["long"], 1, "a heartbeated task runs once");
    assert_eq!(runs["delayed"], 1, "a delayed task runs once");
    assert!(enq.elapsed() >= Duration::from_millis(900));
    w.shutdown().await;
}

async fn shutdown_finishes_in_flight_and_gives_back_the_rest(broker: Arc<dyn Broker>) {
    let started = Arc::new(AtomicU32::new(0));
    let s = started.clone();
    let note = move |_: &serde_json::Value| {
        s.fetch_add(1, Ordering::SeqCst);
    };
    let builder = worker(&broker, "q", 4).grace(Duration::from_millis(500));
    let w = sleeper(builder, "sleep", note, Some(json!("done"))).start();
    let quick = enqueue_kept(&broker, "sleep", json!({"ms": 200})).await;
    let long = broker
        .enqueue(NewTask::new("sleep", json!({"ms": 60_000})).queue("q"))
        .await
        .unwrap();
    assert!(
        until(Duration::from_secs(5), async || started
            .load(Ordering::SeqCst)
            == 2)
        .await
    );
    w.shutdown().await;
    let q = broker.status("q", quick).await.unwrap().unwrap();
    assert_eq!(
        q.state,
        TaskState::Completed,
        "finished within the grace period"
    );
    let l = broker.status("q", long.id).await.unwrap().unwrap();
    assert_eq!(l.state, TaskState::Ready, "given back at shutdown");
    assert_eq!(l.task.attempt, 0, "a given-back attempt does not count");
    // No worker leases after shutdown.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(broker.stats("q").await.unwrap().ready, 1);
}

#[derive(Serialize, Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

struct Add;

#[async_trait::async_trait]
impl Task for Add {
    const NAME: &'static str = "math.add";
    type Input = Sum;
    type Output = i64;
    async fn execute(&self, _ctx: TaskContext, input: Sum) -> Result<i64, TaskError> {
        Ok(input.a + input.b)
    }
    fn queue(&self) -> &str {
        "math"
    }
    fn result_ttl(&self) -> Duration {
        Duration::from_secs(60)
    }
}

async fn typed_tasks_and_rate_limits(broker: Arc<dyn Broker>) {
    let starts = Starts::default();
    let w = limited(worker(&broker, "math", 4).queue("q", 8).task(Add), &starts)
        .rate_limit("limited", Arc::new(per_second(5)))
        .start();
    let t = broker
        .enqueue(Add.build(&Sum { a: 2, b: 40 }).unwrap().priority(9))
        .await
        .unwrap();
    let wrong = broker
        .enqueue(NewTask::new("math.add", json!({"a": "two"})).queue("math"))
        .await
        .unwrap();
    enqueue_limited(&broker, 10).await;
    assert!(completes(&broker, "math", t.id, 10).await);
    assert_eq!(
        broker.status("math", t.id).await.unwrap().unwrap().result,
        Some(json!(42))
    );
    assert!(dead_reach(&broker, "math", 1, 5).await);
    let d = broker.status("math", wrong.id).await.unwrap().unwrap();
    assert!(
        d.task
            .last_error
            .unwrap()
            .contains("payload does not fit math.add")
    );
    let span = limited_span(&starts, 10, 10).await;
    // 10 starts at 5 a second with a burst of 5 cannot take less than ~1 s.
    assert!(
        span >= Duration::from_millis(800),
        "rate limit not applied: {span:?}"
    );
    w.shutdown().await;
}

macro_rules! on_brokers {
    ($($name:ident),* $(,)?) => {
        mod redis_broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::redis().await).await;
                }
            )*
        }
        mod sqlite_broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(super::sqlite(&dir).await).await;
                }
            )*
        }
    };
}

on_brokers!(
    retries_then_succeeds,
    waiting_spends_no_attempt,
    panics_and_fatal_errors_dead_letter_with_their_error,
    heartbeats_keep_a_long_task_and_delays_wait_outside_leases,
    shutdown_finishes_in_flight_and_gives_back_the_rest,
    typed_tasks_and_rate_limits,
    a_worker_announces_its_queues_and_withdraws_at_shutdown,
);

/// Two workers (think: two nodes) share one rate limit through Redis: together
/// they start no more than the limit allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_on_redis_is_shared_by_every_worker() {
    let ns = format!("tw-{:016x}", rand::random::<u64>());
    let redis = RedisBroker::connect(&redis_url(), &ns).unwrap();
    let shared = redis.redis().clone();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let starts = Starts::default();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let quota = sluice_core::RedisQuota::new(shared.clone(), "task:limited", per_second(4));
        workers.push(
            limited(worker(&broker, "q", 8), &starts)
                .rate_limit("limited", Arc::new(quota))
                .start(),
        );
    }
    enqueue_limited(&broker, 12).await;
    let span = limited_span(&starts, 12, 15).await;
    // 12 starts at 4 a second shared: at least ~2 s, whatever the split between
    // the workers (each alone would allow 4 a second, 8 together).
    assert!(
        span >= Duration::from_millis(1800),
        "the limit was not shared: {span:?}"
    );
    for w in workers {
        w.shutdown().await;
    }
}

/// Issue #14 point 3: a started worker is listed as live with its node id and
/// queues (at once, before any task), and a clean shutdown removes it.
async fn a_worker_announces_its_queues_and_withdraws_at_shutdown(broker: Arc<dyn Broker>) {
    let w = worker(&broker, "announced", 1)
        .queue("also", 1)
        .node("node-under-test")
        .announce_every(Duration::from_millis(100))
        .start();
    assert_eq!(w.node(), "node-under-test");
    assert!(
        until(Duration::from_secs(10), async || {
            broker
                .workers()
                .await
                .unwrap()
                .iter()
                .any(|l| l.node == "node-under-test" && l.serves("announced") && l.serves("also"))
        })
        .await,
        "{:?}",
        broker.workers().await
    );
    w.shutdown().await;
    assert!(broker.workers().await.unwrap().is_empty());
}
