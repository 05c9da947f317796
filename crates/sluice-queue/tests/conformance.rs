//! One conformance suite for every broker: each case below runs against Redis
//! (the machine's 7.x, and a Redis 8 of the test's own), SQLite and PostgreSQL (`cargo test -p sluice-queue --test conformance sqlite::`
//! runs one backend). The cases pin down the lease protocol of
//! [`sluice_queue::broker`]: ordering, delays, idempotency, lease expiry and
//! extension, retries and dead letters, release, results, and exactly-once leasing
//! under concurrency.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_queue::worker::PAUSES_EVERY;
use sluice_queue::{
    Broker, CancelOutcome, Completion, FailOutcome, Lease, LeaseRef, NewTask, QueueError,
    QueueStats, TaskId, TaskState, Worker, WorkerBeat,
};

use common::until;

/// Each case as `redis::case`, `sqlite::case` and `postgres::case`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = crate::common::redis().await;
                    super::$case(backend.broker.clone()).await;
                }
            )*
        }
        // The same cases on a Redis 8 server of the test's own (scripts/test
        // installs one; see `RedisServer::start_redis8`).
        mod redis8 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = crate::common::redis8().await;
                    super::$case(backend.broker.clone()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = crate::common::sqlite().await;
                    super::$case(backend.broker.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = crate::common::postgres().await;
                    super::$case(backend.broker.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip_keeps_the_envelope,
    higher_priority_first_then_fifo,
    delayed_task_waits_for_its_time,
    idempotency_key_deduplicates_within_its_window,
    expired_lease_is_redelivered_and_the_old_token_is_void,
    extended_lease_is_not_handed_out,
    retry_then_dead_letter_then_retry_dead_and_purge,
    release_returns_the_task_without_using_an_attempt,
    release_delayed_waits_without_using_an_attempt,
    results_are_kept_only_with_a_ttl,
    concurrent_leasers_get_each_task_once,
    lease_expiry_on_the_last_attempt_dead_letters,
    long_delay_is_delivered_once,
    queues_lists_queues_in_use,
    invalid_tasks_are_refused,
    workers_announce_run_out_and_withdraw,
    cancel_deletes_only_a_waiting_task,
    running_lists_leases_with_their_end,
    pauses_are_listed_until_resumed,
    a_running_worker_leases_nothing_from_a_paused_queue,
    delete_dead_deletes_only_the_named_dead_tasks,
    oldest_ready_is_the_longest_waiting_task_of_any_priority,
);

const LONG: Duration = Duration::from_secs(30);

fn stats(ready: u64, delayed: u64, running: u64, dead: u64) -> QueueStats {
    QueueStats {
        ready,
        delayed,
        running,
        dead,
    }
}

fn done(lease: &Lease) -> Completion {
    done_ref(lease.as_ref())
}

/// A completion of `lease` without a result.
fn done_ref(lease: LeaseRef) -> Completion {
    Completion {
        lease,
        result: None,
    }
}

/// Enqueues `task` on `b` and returns its id.
async fn put(b: &Arc<dyn Broker>, task: NewTask) -> TaskId {
    b.enqueue(task).await.unwrap().id
}

/// Enqueues a task `name` with `payload` on queue `q`, due after `delay`, and
/// returns its id.
async fn put_delayed(
    b: &Arc<dyn Broker>,
    q: &str,
    name: &str,
    payload: serde_json::Value,
    delay: Duration,
) -> TaskId {
    put(b, NewTask::new(name, payload).queue(q).delay(delay)).await
}

/// Leases from `queue` every 20 ms until something comes or `bound` passes.
async fn lease_within(
    b: &dyn Broker,
    queue: &str,
    max: usize,
    visibility: Duration,
    bound: Duration,
) -> Vec<Lease> {
    let start = Instant::now();
    loop {
        let got = b.lease(queue, max, visibility).await.unwrap();
        if !got.is_empty() || start.elapsed() > bound {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn round_trip_keeps_the_envelope(b: Arc<dyn Broker>) {
    let q = "conf-round-trip";
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
    let payload = json!({"to": "a@b.c", "n": [1, 2.5, null], "s": "서울"});
    let task = NewTask::new("email.send", payload.clone())
        .queue(q)
        .priority(7)
        .max_attempts(3)
        .idempotency_key("welcome-42");
    let id = task.id;
    let e = b.enqueue(task).await.unwrap();
    assert_eq!(e.id, id);
    assert!(!e.duplicate);
    assert_eq!(b.stats(q).await.unwrap(), stats(1, 0, 0, 0));
    let st = b
        .status(q, id)
        .await
        .unwrap()
        .expect("status of a ready task");
    assert_eq!(st.state, TaskState::Ready);
    assert_eq!(st.task.attempt, 0);

    let leases = b.lease(q, 10, LONG).await.unwrap();
    assert_eq!(leases.len(), 1);
    let l = &leases[0];
    let t = &l.task;
    assert_eq!(t.id, id);
    assert_eq!(t.name, "email.send");
    assert_eq!(t.payload, payload);
    assert_eq!(t.queue, q);
    assert_eq!(t.priority, 7);
    assert_eq!(t.attempt, 1);
    assert_eq!(t.max_attempts, 3);
    assert!(t.created_at > 0);
    assert_eq!(t.idempotency_key.as_deref(), Some("welcome-42"));
    assert_eq!(t.last_error, None);
    assert!(!l.token.is_empty());
    assert!(
        l.deadline >= t.created_at + 29_000,
        "{} vs {}",
        l.deadline,
        t.created_at
    );
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 1, 0));
    let st = b.status(q, id).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(st.task.attempt, 1);
    assert_eq!(st.redelivered, 0);
    // Nothing else to lease.
    assert!(b.lease(q, 10, LONG).await.unwrap().is_empty());

    assert_eq!(b.complete(&[done(l)]).await.unwrap(), 1);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
    assert_eq!(b.status(q, id).await.unwrap(), None);
    // A second acknowledgement is not counted.
    assert_eq!(b.complete(&[done(l)]).await.unwrap(), 0);
    assert!(b.lease(q, 10, LONG).await.unwrap().is_empty());
}

async fn higher_priority_first_then_fifo(b: Arc<dyn Broker>) {
    let q = "conf-priority";
    let mut ids = Vec::new();
    for (name, priority) in [("a", 1), ("b", 5), ("c", 9), ("d", 5), ("e", 1), ("f", 9)] {
        let t = NewTask::new(name, json!(name)).queue(q).priority(priority);
        ids.push(b.enqueue(t).await.unwrap().id);
        // Distinct enqueue times, so FIFO does not rest on id order alone.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // One at a time: c, f (9), then b (5).
    let mut order = Vec::new();
    for _ in 0..3 {
        let l = b.lease(q, 1, LONG).await.unwrap();
        assert_eq!(l.len(), 1);
        order.push(l[0].task.name.clone());
    }
    // The rest in one batch, returned in order: d (5), a, e (1).
    let rest = b.lease(q, 10, LONG).await.unwrap();
    order.extend(rest.iter().map(|l| l.task.name.clone()));
    assert_eq!(order, ["c", "f", "b", "d", "a", "e"]);
}

async fn delayed_task_waits_for_its_time(b: Arc<dyn Broker>) {
    let q = "conf-delay";
    let start = Instant::now();
    let id = put_delayed(&b, q, "later", json!(1), Duration::from_secs(1)).await;
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 1, 0, 0));
    assert_eq!(
        b.status(q, id).await.unwrap().unwrap().state,
        TaskState::Delayed
    );
    assert!(b.lease(q, 10, LONG).await.unwrap().is_empty());

    let got = lease_within(&*b, q, 10, LONG, Duration::from_secs(3)).await;
    let waited = start.elapsed();
    assert_eq!(got.len(), 1, "the delayed task was never leased");
    assert_eq!(got[0].task.id, id);
    assert_eq!(got[0].task.attempt, 1);
    // Never before its time (a little slack for the broker's clock granularity).
    assert!(
        waited >= Duration::from_millis(950),
        "leased after {waited:?}"
    );
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 1, 0));
}

async fn idempotency_key_deduplicates_within_its_window(b: Arc<dyn Broker>) {
    let q = "conf-idem";
    let first = b
        .enqueue(NewTask::new("t", json!(1)).queue(q).idempotency_key("k"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let second_task = NewTask::new("t", json!(2)).queue(q).idempotency_key("k");
    let second_id = second_task.id;
    let second = b.enqueue(second_task).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(second.id, first.id);
    assert_eq!(b.status(q, second_id).await.unwrap(), None);
    assert_eq!(b.stats(q).await.unwrap(), stats(1, 0, 0, 0));

    // Within one batch too.
    let batch = b
        .enqueue_many(vec![
            NewTask::new("t", json!(3)).queue(q).idempotency_key("b"),
            NewTask::new("t", json!(4)).queue(q).idempotency_key("b"),
            NewTask::new("t", json!(5)).queue(q).idempotency_key("k"),
        ])
        .await
        .unwrap();
    assert!(!batch[0].duplicate);
    assert!(batch[1].duplicate);
    assert_eq!(batch[1].id, batch[0].id);
    assert!(batch[2].duplicate);
    assert_eq!(batch[2].id, first.id);
    assert_eq!(b.stats(q).await.unwrap(), stats(2, 0, 0, 0));

    // A short window: deduplicates, then lets a new task in.
    let short = |n: i32| {
        NewTask::new("t", json!(n))
            .queue(q)
            .idempotency_key("w")
            .idempotency_window(Duration::from_millis(300))
    };
    let w1 = b.enqueue(short(6)).await.unwrap();
    assert!(!w1.duplicate);
    let w2 = b.enqueue(short(7)).await.unwrap();
    assert!(w2.duplicate);
    assert_eq!(w2.id, w1.id);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let w3 = b.enqueue(short(8)).await.unwrap();
    assert!(!w3.duplicate, "the key's window has passed");
    assert_ne!(w3.id, w1.id);
    assert_eq!(b.stats(q).await.unwrap(), stats(4, 0, 0, 0));
    let payloads: HashSet<i64> = b
        .lease(q, 10, LONG)
        .await
        .unwrap()
        .iter()
        .map(|l| l.task.payload.as_i64().unwrap())
        .collect();
    assert_eq!(payloads, HashSet::from([1, 3, 6, 8]));
}

async fn expired_lease_is_redelivered_and_the_old_token_is_void(b: Arc<dyn Broker>) {
    let q = "conf-expiry";
    let id = put(&b, NewTask::new("t", json!(1)).queue(q).max_attempts(3)).await;
    let first = b.lease(q, 1, Duration::from_millis(300)).await.unwrap();
    assert_eq!(first.len(), 1);
    let old = first[0].as_ref();
    // Not handed out again while the lease holds.
    assert!(b.lease(q, 1, LONG).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = lease_within(&*b, q, 1, LONG, Duration::from_secs(2)).await;
    assert_eq!(second.len(), 1, "the expired lease was not redelivered");
    let new = &second[0];
    assert_eq!(new.task.id, id);
    assert_eq!(new.task.attempt, 2);
    assert_ne!(new.token, old.token);
    let last_error = new.task.last_error.clone().unwrap_or_default();
    assert!(last_error.contains("lease"), "last_error: {last_error:?}");
    let st = b.status(q, id).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(st.redelivered, 1);
    assert!(
        st.task.last_error.unwrap_or_default().contains("lease"),
        "status keeps the expiry as last error"
    );

    // The old holder can no longer touch the task.
    assert_eq!(
        b.extend(std::slice::from_ref(&old), LONG).await.unwrap(),
        [false]
    );
    assert_eq!(b.complete(&[done_ref(old.clone())]).await.unwrap(), 0);
    assert_eq!(
        b.fail(&old, "late failure", Some(Duration::ZERO))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert!(!b.release(&old).await.unwrap());
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 1, 0));

    // The new holder completes.
    assert_eq!(b.complete(&[done(new)]).await.unwrap(), 1);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
}

async fn extended_lease_is_not_handed_out(b: Arc<dyn Broker>) {
    let q = "conf-extend";
    b.enqueue(NewTask::new("t", json!(1)).queue(q))
        .await
        .unwrap();
    b.enqueue(NewTask::new("t", json!(2)).queue(q))
        .await
        .unwrap();
    let leases = b.lease(q, 2, Duration::from_millis(300)).await.unwrap();
    assert_eq!(leases.len(), 2);
    let held = leases[0].as_ref();
    let dropped = leases[1].as_ref();

    let mut wrong = held.clone();
    wrong.token = format!("{}-not-mine", held.token);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        // One flag per lease, in order.
        let flags = b
            .extend(&[wrong.clone(), held.clone()], Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(flags, [false, true]);
        // Another worker polls: only the lease that was not extended comes back.
        for l in b.lease(q, 10, LONG).await.unwrap() {
            assert_eq!(l.task.id, dropped.id, "an extended lease was handed out");
        }
    }
    // 600 ms have passed: well beyond the original 300 ms deadline.
    let st = b.status(q, held.id).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(st.redelivered, 0);
    assert_eq!(st.task.attempt, 1);
    assert_eq!(b.complete(&[done_ref(held.clone())]).await.unwrap(), 1);
    // Extending a completed task fails.
    assert_eq!(b.extend(&[held], LONG).await.unwrap(), [false]);
}

async fn retry_then_dead_letter_then_retry_dead_and_purge(b: Arc<dyn Broker>) {
    let q = "conf-retry";
    let id = put(&b, NewTask::new("t", json!(1)).queue(q).max_attempts(2)).await;
    let l1 = b.lease(q, 1, LONG).await.unwrap().remove(0);
    assert_eq!(l1.task.attempt, 1);
    let outcome = b
        .fail(&l1.as_ref(), "boom 1", Some(Duration::from_millis(200)))
        .await
        .unwrap();
    let FailOutcome::Retry(at) = outcome else {
        panic!("expected a retry, got {outcome:?}");
    };
    assert!(at >= l1.task.created_at + 200, "retry at {at}");
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 1, 0, 0));
    let st = b.status(q, id).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Delayed);
    assert_eq!(st.task.last_error.as_deref(), Some("boom 1"));
    assert!(b.lease(q, 1, LONG).await.unwrap().is_empty());
    // The failed lease is gone.
    assert_eq!(b.complete(&[done(&l1)]).await.unwrap(), 0);

    let l2 = lease_within(&*b, q, 1, LONG, Duration::from_secs(2)).await;
    assert_eq!(l2.len(), 1, "the retry was never leased");
    let l2 = &l2[0];
    assert_eq!(l2.task.id, id);
    assert_eq!(l2.task.attempt, 2);
    assert_eq!(l2.task.last_error.as_deref(), Some("boom 1"));
    let outcome = b
        .fail(&l2.as_ref(), "boom 2", Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Dead, "the last attempt failed");
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 0, 1));
    let st = b.status(q, id).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Dead);
    assert!(st.finished_at.is_some());
    let dead = b.dead(q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 2"));
    assert!(b.lease(q, 1, LONG).await.unwrap().is_empty());

    // Retrying the dead letter restarts its attempts.
    assert_eq!(b.retry_dead(q, Some(&[TaskId::new()])).await.unwrap(), 0);
    assert_eq!(b.retry_dead(q, Some(&[id])).await.unwrap(), 1);
    assert_eq!(b.stats(q).await.unwrap(), stats(1, 0, 0, 0));
    assert!(b.dead(q, 10).await.unwrap().is_empty());
    let l3 = b.lease(q, 1, LONG).await.unwrap().remove(0);
    assert_eq!(l3.task.id, id);
    assert_eq!(l3.task.attempt, 1);
    assert_eq!(
        b.fail(&l3.as_ref(), "boom 3", Some(Duration::ZERO))
            .await
            .unwrap(),
        FailOutcome::Retry(b.status(q, id).await.unwrap().unwrap().task.not_before)
    );
    let l4 = lease_within(&*b, q, 1, LONG, Duration::from_secs(2)).await;
    assert_eq!(l4.len(), 1);
    assert_eq!(l4[0].task.attempt, 2);
    // No retry asked: dead at once.
    assert_eq!(
        b.fail(&l4[0].as_ref(), "boom 4", None).await.unwrap(),
        FailOutcome::Dead
    );
    assert_eq!(
        b.dead(q, 10).await.unwrap()[0].last_error.as_deref(),
        Some("boom 4")
    );

    assert_eq!(b.purge_dead(q).await.unwrap(), 1);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
    assert!(b.dead(q, 10).await.unwrap().is_empty());
    assert_eq!(b.status(q, id).await.unwrap(), None);
    assert_eq!(b.retry_dead(q, None).await.unwrap(), 0);
}

async fn release_returns_the_task_without_using_an_attempt(b: Arc<dyn Broker>) {
    let q = "conf-release";
    let id = put(&b, NewTask::new("t", json!(1)).queue(q).max_attempts(1)).await;
    let l1 = b.lease(q, 1, LONG).await.unwrap().remove(0);
    assert_eq!(l1.task.attempt, 1);
    assert!(b.release(&l1.as_ref()).await.unwrap());
    assert_eq!(b.stats(q).await.unwrap(), stats(1, 0, 0, 0));
    // A released lease is no longer held.
    assert!(!b.release(&l1.as_ref()).await.unwrap());
    assert_eq!(b.extend(&[l1.as_ref()], LONG).await.unwrap(), [false]);

    let l2 = b.lease(q, 1, LONG).await.unwrap().remove(0);
    assert_eq!(l2.task.id, id);
    assert_eq!(l2.task.attempt, 1, "a release does not use an attempt");
    assert_eq!(b.status(q, id).await.unwrap().unwrap().redelivered, 0);
    assert_eq!(b.complete(&[done(&l2)]).await.unwrap(), 1);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
}

async fn release_delayed_waits_without_using_an_attempt(b: Arc<dyn Broker>) {
    let q = "conf-release-delayed";
    // One attempt only: a counted attempt would dead-letter it.
    let id = put(&b, NewTask::new("t", json!(1)).queue(q).max_attempts(1)).await;
    let l1 = b.lease(q, 1, LONG).await.unwrap().remove(0);
    assert!(
        b.release_delayed(&l1.as_ref(), Duration::from_secs(1), "held elsewhere")
            .await
            .unwrap()
    );
    let status = b.status(q, id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Delayed);
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 1, 0, 0));
    // Not handed out before its time, and the old lease is void.
    assert!(b.lease(q, 10, LONG).await.unwrap().is_empty());
    assert!(
        !b.release_delayed(&l1.as_ref(), Duration::ZERO, "again")
            .await
            .unwrap()
    );
    assert_eq!(b.extend(&[l1.as_ref()], LONG).await.unwrap(), [false]);

    let got = lease_within(&*b, q, 1, LONG, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "the released task was never leased again");
    assert_eq!(got[0].task.id, id);
    assert_eq!(got[0].task.attempt, 1, "waiting does not use an attempt");
    assert_eq!(got[0].task.last_error.as_deref(), Some("held elsewhere"));
    assert_eq!(b.complete(&[done(&got[0])]).await.unwrap(), 1);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
}

async fn results_are_kept_only_with_a_ttl(b: Arc<dyn Broker>) {
    let q = "conf-results";
    // A task whose payload is `name`, its result kept for `ttl` (if any).
    let task = |name: &str, ttl: Option<Duration>| {
        let t = NewTask::new("t", json!(name)).queue(q);
        match ttl {
            Some(d) => t.result_ttl(d),
            None => t,
        }
    };
    let kept = put(&b, task("kept", Some(Duration::from_secs(60)))).await;
    let short = put(&b, task("short", Some(Duration::from_millis(300)))).await;
    let dropped = put(&b, task("dropped", None)).await;
    let leases = b.lease(q, 10, LONG).await.unwrap();
    assert_eq!(leases.len(), 3);
    let completions: Vec<Completion> = leases
        .iter()
        .map(|l| Completion {
            lease: l.as_ref(),
            result: Some(json!({"echo": l.task.payload})),
        })
        .collect();
    assert_eq!(b.complete(&completions).await.unwrap(), 3);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());

    let st = b.status(q, kept).await.unwrap().expect("a kept result");
    assert_eq!(st.state, TaskState::Completed);
    assert_eq!(st.result, Some(json!({"echo": "kept"})));
    assert!(st.finished_at.is_some());
    assert_eq!(st.task.result_ttl_ms, 60_000);
    assert_eq!(
        b.status(q, short).await.unwrap().map(|s| s.state),
        Some(TaskState::Completed)
    );
    assert_eq!(b.status(q, dropped).await.unwrap(), None);
    assert_eq!(b.status(q, TaskId::new()).await.unwrap(), None);
    // A completed task is not leased again.
    assert!(b.lease(q, 10, LONG).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        b.status(q, short).await.unwrap(),
        None,
        "the result expired"
    );
    assert!(b.status(q, kept).await.unwrap().is_some());
}

async fn concurrent_leasers_get_each_task_once(b: Arc<dyn Broker>) {
    let q = "conf-concurrent";
    let tasks: Vec<NewTask> = (0..500)
        .map(|i| NewTask::new("t", json!(i)).queue(q))
        .collect();
    let expected: HashSet<TaskId> = tasks.iter().map(|t| t.id).collect();
    let enqueued = b.enqueue_many(tasks).await.unwrap();
    assert_eq!(enqueued.len(), 500);
    assert!(enqueued.iter().all(|e| !e.duplicate));
    assert_eq!(b.stats(q).await.unwrap(), stats(500, 0, 0, 0));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (b, seen) = (b.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let mut acked = 0;
            loop {
                let batch = b.lease(q, 25, LONG).await.unwrap();
                if batch.is_empty() {
                    return acked;
                }
                assert!(batch.len() <= 25);
                seen.lock().unwrap().extend(batch.iter().map(|l| l.task.id));
                let done: Vec<Completion> = batch.iter().map(done).collect();
                acked += b.complete(&done).await.unwrap();
            }
        }));
    }
    let mut acked = 0;
    for w in workers {
        acked += w.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let unique: HashSet<TaskId> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 500, "a task was leased twice or not at all");
    assert_eq!(unique, expected);
    assert_eq!(acked, 500);
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
}

async fn lease_expiry_on_the_last_attempt_dead_letters(b: Arc<dyn Broker>) {
    let q = "conf-expiry-dead";
    let id = put(&b, NewTask::new("t", json!(1)).queue(q).max_attempts(1)).await;
    let l = b.lease(q, 1, Duration::from_millis(200)).await.unwrap();
    assert_eq!(l.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The lease that reaps it hands nothing out.
    assert!(b.lease(q, 1, LONG).await.unwrap().is_empty());
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 0, 1));
    let dead = b.dead(q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    let error = dead[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("lease"), "last_error: {error:?}");
    let st = b.status(q, id).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Dead);
    // Its old holder can no longer fail it.
    assert_eq!(
        b.fail(&l[0].as_ref(), "late", None).await.unwrap(),
        FailOutcome::LeaseLost
    );
}

async fn long_delay_is_delivered_once(b: Arc<dyn Broker>) {
    let q = "conf-long-delay";
    let visibility = Duration::from_millis(300);
    let start = Instant::now();
    let id = put_delayed(&b, q, "t", json!(1), visibility * 3).await;
    let mut deliveries = 0;
    let mut held = None;
    while start.elapsed() < Duration::from_millis(1_800) {
        for l in b.lease(q, 10, visibility).await.unwrap() {
            assert_eq!(l.task.id, id);
            assert!(
                start.elapsed() >= Duration::from_millis(850),
                "leased after {:?}, before its delay",
                start.elapsed()
            );
            deliveries += 1;
            held = Some(l.as_ref());
        }
        // The holder keeps its lease alive.
        if let Some(h) = &held {
            assert_eq!(
                b.extend(std::slice::from_ref(h), visibility).await.unwrap(),
                [true]
            );
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(deliveries, 1);
    let held = held.expect("leased once");
    assert_eq!(b.complete(&[done_ref(held)]).await.unwrap(), 1);
}

async fn queues_lists_queues_in_use(b: Arc<dyn Broker>) {
    b.enqueue(NewTask::new("t", json!(1)).queue("conf-queues-a"))
        .await
        .unwrap();
    b.enqueue_many(vec![
        NewTask::new("t", json!(2)).queue("conf-queues-b"),
        NewTask::new("t", json!(3)).queue("conf-queues-b"),
    ])
    .await
    .unwrap();
    let queues = b.queues().await.unwrap();
    assert!(queues.iter().any(|q| q == "conf-queues-a"), "{queues:?}");
    assert!(queues.iter().any(|q| q == "conf-queues-b"), "{queues:?}");
    assert_eq!(
        queues.iter().filter(|q| *q == "conf-queues-b").count(),
        1,
        "{queues:?}"
    );
}

async fn invalid_tasks_are_refused(b: Arc<dyn Broker>) {
    let q = "conf-invalid";
    let err = b.enqueue(NewTask::new(" ", json!(1)).queue(q)).await;
    assert!(matches!(err, Err(QueueError::Invalid(_))), "{err:?}");
    let err = b.enqueue(NewTask::new("t", json!(1)).queue("a{b}")).await;
    assert!(matches!(err, Err(QueueError::Invalid(_))), "{err:?}");
    assert_eq!(b.stats(q).await.unwrap(), QueueStats::default());
}

/// Bulk enqueue on the SQL brokers: 20,000 tasks in one call, all stored.
mod sql_bulk {
    use super::*;

    async fn bulk(b: Arc<dyn Broker>) {
        let q = "conf-bulk";
        let tasks: Vec<NewTask> = (0..20_000)
            .map(|i| NewTask::new("t", json!({"i": i})).queue(q))
            .collect();
        let out = b.enqueue_many(tasks).await.unwrap();
        assert_eq!(out.len(), 20_000);
        assert_eq!(b.stats(q).await.unwrap(), stats(20_000, 0, 0, 0));
        let leased = b.lease(q, 1_000, LONG).await.unwrap();
        assert_eq!(leased.len(), 1_000);
        assert_eq!(
            b.complete(&leased.iter().map(done).collect::<Vec<_>>())
                .await
                .unwrap(),
            1_000
        );
        assert_eq!(b.stats(q).await.unwrap(), stats(19_000, 0, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        let backend = crate::common::sqlite().await;
        bulk(backend.broker.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        let backend = crate::common::postgres().await;
        bulk(backend.broker.clone()).await;
    }
}

/// Issue #14 point 3: an announcement lasts its TTL (another one extends it), a
/// withdrawn or run-out one is not listed, and `serves` tells the queues apart.
async fn workers_announce_run_out_and_withdraw(b: Arc<dyn Broker>) {
    assert!(b.workers().await.unwrap().is_empty());
    let beat = |node: &str, queues: &[&str]| WorkerBeat {
        node: node.into(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        started_at: 1_000,
    };
    b.announce(&beat("node-a", &["jobs", "partitions"]), LONG)
        .await
        .unwrap();
    b.announce(&beat("node-b", &["partitions"]), Duration::from_millis(300))
        .await
        .unwrap();
    let live = b.workers().await.unwrap();
    let nodes: Vec<&str> = live.iter().map(|w| w.node.as_str()).collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert!(live[0].serves("jobs") && live[0].serves("partitions"));
    assert!(!live[1].serves("jobs"));
    assert_eq!(live[0].started_at, 1_000);
    assert!(live[0].expires_at > live[0].seen_at, "{:?}", live[0]);
    // node-b stops announcing: it runs out.
    let start = Instant::now();
    while b.workers().await.unwrap().len() > 1 {
        assert!(start.elapsed() < LONG, "node-b never ran out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new announcement replaces the queues; a withdrawn worker is gone.
    b.announce(&beat("node-a", &["jobs"]), LONG).await.unwrap();
    let live = b.workers().await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].queues, ["jobs"]);
    b.withdraw("node-a").await.unwrap();
    assert!(b.workers().await.unwrap().is_empty());
    b.withdraw("never-there").await.unwrap();
}

/// Issue #14 point 3: a ready or delayed task is deleted; a leased one is left
/// running; a dead one and an unknown id are reported as such.
async fn cancel_deletes_only_a_waiting_task(b: Arc<dyn Broker>) {
    let q = "cancels";
    let ready = put(&b, NewTask::new("t", json!(1)).queue(q)).await;
    let delayed = put_delayed(&b, q, "t", json!(2), Duration::from_secs(3600)).await;
    assert_eq!(b.cancel(q, ready).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        b.cancel(q, delayed).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(b.status(q, ready).await.unwrap().is_none());
    assert!(b.status(q, delayed).await.unwrap().is_none());
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 0, 0));
    assert_eq!(b.cancel(q, ready).await.unwrap(), CancelOutcome::Unknown);

    let running = put(&b, NewTask::new("t", json!(3)).queue(q).max_attempts(1)).await;
    let leases = lease_within(b.as_ref(), q, 1, LONG, LONG).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(b.cancel(q, running).await.unwrap(), CancelOutcome::Running);
    let st = b.status(q, running).await.unwrap().unwrap();
    assert_eq!(st.state, TaskState::Running);
    // The worker's lease still holds: it fails the task to the dead letters.
    assert_eq!(
        b.fail(&leases[0].as_ref(), "boom", None).await.unwrap(),
        FailOutcome::Dead
    );
    assert_eq!(
        b.cancel(q, running).await.unwrap(),
        CancelOutcome::Finished(TaskState::Dead)
    );
    assert_eq!(b.stats(q).await.unwrap(), stats(0, 0, 0, 1));
}

/// Issue #14 point 7: the leased tasks of a queue with the ends of their leases.
async fn running_lists_leases_with_their_end(b: Arc<dyn Broker>) {
    let q = "leases";
    assert!(b.running(q, 10).await.unwrap().is_empty());
    let a = put(&b, NewTask::new("t", json!(1)).queue(q)).await;
    let c = put(&b, NewTask::new("t", json!(2)).queue(q)).await;
    put(&b, NewTask::new("t", json!(3)).queue(q)).await;
    let leases = lease_within(b.as_ref(), q, 2, LONG, LONG).await;
    assert_eq!(leases.len(), 2);
    let running = b.running(q, 10).await.unwrap();
    let mut ids: Vec<TaskId> = running.iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(ids, want);
    for r in &running {
        let l = leases.iter().find(|l| l.task.id == r.id).unwrap();
        assert_eq!(r.lease_until, l.deadline, "{r:?}");
    }
    assert_eq!(b.running(q, 1).await.unwrap().len(), 1);
}

/// Pausing adds a queue to `paused_queues` (once, however often), resuming
/// removes it; enqueueing goes on while paused; a bad name is refused.
async fn pauses_are_listed_until_resumed(b: Arc<dyn Broker>) {
    assert!(b.paused_queues().await.unwrap().is_empty());
    b.set_queue_paused("conf-pause-b", true).await.unwrap();
    b.set_queue_paused("conf-pause-a", true).await.unwrap();
    b.set_queue_paused("conf-pause-a", true).await.unwrap();
    assert_eq!(
        b.paused_queues().await.unwrap(),
        ["conf-pause-a", "conf-pause-b"]
    );
    put(&b, NewTask::new("t", json!(1)).queue("conf-pause-a")).await;
    assert_eq!(b.stats("conf-pause-a").await.unwrap(), stats(1, 0, 0, 0));
    b.set_queue_paused("conf-pause-a", false).await.unwrap();
    b.set_queue_paused("conf-never-paused", false)
        .await
        .unwrap();
    assert_eq!(b.paused_queues().await.unwrap(), ["conf-pause-b"]);
    b.set_queue_paused("conf-pause-b", false).await.unwrap();
    assert!(b.paused_queues().await.unwrap().is_empty());
    for bad in ["", "a{b}"] {
        let err = b.set_queue_paused(bad, true).await;
        assert!(
            matches!(err, Err(QueueError::Invalid(_))),
            "{bad:?}: {err:?}"
        );
    }
    assert!(b.paused_queues().await.unwrap().is_empty());
}

/// A worker serving two queues: once one is paused it starts none of its tasks
/// (they stay ready) while the other queue runs on; resumed, they all run.
async fn a_running_worker_leases_nothing_from_a_paused_queue(b: Arc<dyn Broker>) {
    let (paused, other) = ("conf-paused", "conf-running");
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = started.clone();
    let worker = Worker::builder(b.clone())
        .queue(paused, 4)
        .queue(other, 4)
        .poll(Duration::from_millis(20))
        .handler_fn("t", move |_ctx, p| {
            seen.lock()
                .unwrap()
                .push(p["q"].as_str().unwrap_or("?").to_owned());
            async { Ok(None) }
        })
        .start();
    let count = |q: &str| started.lock().unwrap().iter().filter(|s| *s == q).count();
    let task = |q: &str| NewTask::new("t", json!({ "q": q })).queue(q);

    // The worker runs tasks of the queue before it is paused.
    put(&b, task(paused)).await;
    assert!(
        until(LONG, async || count(paused) == 1).await,
        "the worker never ran"
    );

    b.set_queue_paused(paused, true).await.unwrap();
    assert_eq!(b.paused_queues().await.unwrap(), [paused]);
    // The worker's copy of the paused set is at most PAUSES_EVERY old.
    tokio::time::sleep(PAUSES_EVERY + Duration::from_millis(500)).await;
    for _ in 0..3 {
        put(&b, task(paused)).await;
    }
    put(&b, task(other)).await;
    assert!(
        until(LONG, async || count(other) == 1).await,
        "the other queue stopped too"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(count(paused), 1, "a task of the paused queue started");
    assert_eq!(b.stats(paused).await.unwrap(), stats(3, 0, 0, 0));

    b.set_queue_paused(paused, false).await.unwrap();
    assert!(b.paused_queues().await.unwrap().is_empty());
    assert!(
        until(LONG, async || count(paused) == 4
            && b.stats(paused).await.unwrap() == QueueStats::default())
        .await,
        "resumed, the queue's tasks did not all complete: {:?}",
        b.stats(paused).await
    );
    worker.shutdown().await;
}

/// `delete_dead` deletes the dead tasks named, and only them: not other dead
/// tasks, not ready or running tasks, not dead tasks of another queue; unknown
/// ids count 0.
async fn delete_dead_deletes_only_the_named_dead_tasks(b: Arc<dyn Broker>) {
    let (q, elsewhere) = ("conf-delete", "conf-delete-other");
    /// Enqueues `n` tasks on `q`, leases them and fails them for good.
    async fn dead(b: &Arc<dyn Broker>, q: &str, n: usize) -> Vec<TaskId> {
        for i in 0..n {
            put(b, NewTask::new("t", json!(i)).queue(q).max_attempts(1)).await;
        }
        let leases = b.lease(q, n, LONG).await.unwrap();
        assert_eq!(leases.len(), n);
        for l in &leases {
            assert_eq!(
                b.fail(&l.as_ref(), "boom", None).await.unwrap(),
                FailOutcome::Dead
            );
        }
        leases.iter().map(|l| l.task.id).collect()
    }
    let gone = dead(&b, q, 3).await;
    let kept = dead(&b, q, 1).await[0];
    let other_queue = dead(&b, elsewhere, 1).await[0];
    let running = put(&b, NewTask::new("t", json!("run")).queue(q)).await;
    assert_eq!(b.lease(q, 1, LONG).await.unwrap()[0].task.id, running);
    let ready = put(&b, NewTask::new("t", json!("wait")).queue(q)).await;
    assert_eq!(b.stats(q).await.unwrap(), stats(1, 0, 1, 4));

    assert_eq!(b.delete_dead(q, &[]).await.unwrap(), 0);
    assert_eq!(b.delete_dead(q, &[TaskId::new()]).await.unwrap(), 0);
    let mut ids = gone.clone();
    ids.extend([running, ready, other_queue, TaskId::new()]);
    assert_eq!(b.delete_dead(q, &ids).await.unwrap(), 3);
    for id in &gone {
        assert_eq!(b.status(q, *id).await.unwrap(), None, "{id} is still there");
    }
    assert_eq!(b.stats(q).await.unwrap(), stats(1, 0, 1, 1));
    let state = async |q, id| b.status(q, id).await.unwrap().map(|s| s.state);
    assert_eq!(state(q, kept).await, Some(TaskState::Dead));
    assert_eq!(state(q, running).await, Some(TaskState::Running));
    assert_eq!(state(q, ready).await, Some(TaskState::Ready));
    assert_eq!(state(elsewhere, other_queue).await, Some(TaskState::Dead));
    assert_eq!(b.dead(q, 10).await.unwrap()[0].id, kept);
    // Deleted once: a second time counts 0.
    assert_eq!(b.delete_dead(q, &gone).await.unwrap(), 0);
}

/// `oldest_ready` is the earliest not-before of the ready tasks, whatever
/// their priority; delayed and leased tasks do not count.
async fn oldest_ready_is_the_longest_waiting_task_of_any_priority(b: Arc<dyn Broker>) {
    let q = "conf-oldest";
    assert_eq!(b.oldest_ready(q).await.unwrap(), None);
    let t0 = chrono::Utc::now().timestamp_millis();
    put(&b, NewTask::new("t", json!(1)).queue(q).priority(2)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    put(&b, NewTask::new("t", json!(2)).queue(q).priority(9)).await;
    put(
        &b,
        NewTask::new("t", json!(3))
            .queue(q)
            .delay(Duration::from_secs(60)),
    )
    .await;
    let oldest = b.oldest_ready(q).await.unwrap().unwrap();
    let t1 = chrono::Utc::now().timestamp_millis();
    // The low-priority task waits longest (clocks of the broker and the test
    // may differ by a little).
    assert!(
        (t0 - 1000..=t1 - 15).contains(&oldest),
        "{t0} {oldest} {t1}"
    );
    // Leasing both ready tasks (the higher priority first) leaves none ready.
    let leases = b.lease(q, 2, LONG).await.unwrap();
    assert_eq!(leases.len(), 2);
    assert_eq!(b.oldest_ready(q).await.unwrap(), None);
}
