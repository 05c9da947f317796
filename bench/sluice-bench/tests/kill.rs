//! At least once, nothing lost: 10,000 tasks, two worker processes, one of them
//! killed with SIGKILL several times mid-run and restarted. Every task completes
//! and is recorded, none is dead-lettered, and every task that ran twice had its
//! first run in a process that was killed.
//!
//! The workers are `sluice-queue-bench work --handler record` processes: each run
//! increments the task's counter in a Redis hash and remembers its first runner's
//! pid.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_queue::NewTask;
use sluice_testkit::db::{Server, ServerDb};

const TASKS: usize = 10_000;
const KILLS: usize = 4;

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn worker(broker: &str, ns: &str, record: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice-queue-bench"))
        .args([
            "work",
            "--broker",
            broker,
            "--namespace",
            ns,
            "--queue",
            "kill",
        ])
        .args(["--handler", "record", "--record-url", &redis_url()])
        .args(["--record-prefix", record, "--sleep-ms-max", "8"])
        .args(["--concurrency", "16", "--visibility-ms", "3000"])
        .stdout(Stdio::null())
        .stderr(match std::env::var("SLUICE_TEST_WORKER_LOG") {
            Ok(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .unwrap(),
            ),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .expect("start a worker process")
}

async fn kill_a_worker_repeatedly(broker_url: &str) {
    let ns = format!("tk-{:016x}", rand::random::<u64>());
    let record = format!("{ns}-record");
    let broker = sluice_queue::connect(broker_url, &ns).await.unwrap();
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| NewTask::new("bench.record", serde_json::json!({ "i": i })).queue("kill"))
        .collect();
    let ids: HashSet<String> = broker
        .enqueue_many(tasks)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(ids.len(), TASKS);

    let mut steady = worker(broker_url, &ns, &record);
    let mut victim = worker(broker_url, &ns, &record);
    let mut killed = HashSet::new();
    let start = Instant::now();
    while killed.len() < KILLS && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(600)).await;
        if broker.stats("kill").await.unwrap().pending() == 0 {
            break;
        }
        killed.insert(victim.id());
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        victim = worker(broker_url, &ns, &record);
    }
    assert!(
        killed.len() >= 2,
        "the run ended before the worker was killed twice; make the tasks slower"
    );
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let s = broker.stats("kill").await.unwrap();
        if s.pending() == 0 {
            assert_eq!(s.dead, 0, "no task may be dead-lettered: {s:?}");
            break;
        }
        assert!(Instant::now() < end, "tasks left after 120 s: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in [&mut steady, &mut victim] {
        let _ = c.kill();
        let _ = c.wait();
    }

    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let runs: HashMap<String, u32> = redis::cmd("HGETALL")
        .arg(format!("{record}:runs"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let first: HashMap<String, u32> = redis::cmd("HGETALL")
        .arg(format!("{record}:first"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{record}:runs"))
        .arg(format!("{record}:first"))
        .query_async(&mut conn)
        .await
        .unwrap();

    let recorded: HashSet<&String> = runs.keys().collect();
    let missing = ids.iter().filter(|id| !recorded.contains(id)).count();
    assert_eq!(missing, 0, "every task's completion is recorded");
    assert_eq!(runs.len(), TASKS, "no unknown task ran");
    let duplicates: Vec<&String> = runs
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    for id in &duplicates {
        let pid = first[*id];
        assert!(
            killed.contains(&pid),
            "task {id} ran {} times, but its first run was in pid {pid}, which was never killed",
            runs[*id]
        );
    }
    eprintln!(
        "{broker_url}: {TASKS} tasks, {} kills, {} ran twice (all first run in a killed worker), 0 lost, 0 dead",
        killed.len(),
        duplicates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_survives_sigkill_of_a_worker() {
    kill_a_worker_repeatedly(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_broker_survives_sigkill_of_a_worker() {
    let db = ServerDb::new(Server::Postgres, "sluice_qk").await;
    kill_a_worker_repeatedly(&db.url).await;
}
