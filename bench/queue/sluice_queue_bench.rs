//! `sluice-queue-bench`: enqueues tasks, or runs one worker process, for
//! `bench/queue/run` and the kill -9 tests (`bench/sluice-bench/tests/kill.rs`).
//!
//! ```text
//! sluice-queue-bench enqueue --broker URL [--namespace NS] [--queue Q] --tasks N [--batch 1000]
//! sluice-queue-bench work    --broker URL [--namespace NS] [--queue Q] [--concurrency 50]
//!                            [--batch 100] [--visibility-ms 30000] [--handler noop|record]
//!                            [--record-url redis://…] [--record-prefix P]
//!                            [--sleep-ms-max 0] [--exit-when-empty]
//! ```
//!
//! Each prints one JSON line on stdout when done: `{"enqueued":N,"seconds":S}` or
//! `{"processed":N,"seconds":S}` (seconds from the first task leased to the queue
//! found empty). The `record` handler counts each run of each task in a Redis hash
//! `P:runs` and remembers the first runner's pid in `P:first`, so a test can tell
//! completions, duplicates and whose death caused them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_queue::{NewTask, TaskError, Worker};

struct Args {
    cmd: String,
    broker: String,
    namespace: String,
    queue: String,
    tasks: usize,
    batch: usize,
    concurrency: usize,
    visibility_ms: u64,
    handler: String,
    record_url: String,
    record_prefix: String,
    sleep_ms_max: u64,
    exit_when_empty: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "sluice-queue-bench: {msg}\nusage: sluice-queue-bench enqueue|work --broker URL [options]; see the source's doc"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| usage("missing command"));
    if cmd != "enqueue" && cmd != "work" {
        usage(&format!("unknown command '{cmd}'"));
    }
    let mut a = Args {
        cmd,
        broker: String::new(),
        namespace: "sluice-bench".into(),
        queue: "bench".into(),
        tasks: 0,
        batch: 0,
        concurrency: 50,
        visibility_ms: 30_000,
        handler: "noop".into(),
        record_url: "redis://127.0.0.1:6379".into(),
        record_prefix: "sluice-bench-record".into(),
        sleep_ms_max: 0,
        exit_when_empty: false,
    };
    sluice_bench::flags(it, &["--exit-when-empty"], usage, |flag, v| {
        let Some(v) = v else {
            a.exit_when_empty = true;
            return;
        };
        match flag {
            "--broker" => a.broker = v.text(),
            "--namespace" => a.namespace = v.text(),
            "--queue" => a.queue = v.text(),
            "--tasks" => a.tasks = v.num() as usize,
            "--batch" => a.batch = v.num() as usize,
            "--concurrency" => a.concurrency = v.num() as usize,
            "--visibility-ms" => a.visibility_ms = v.num(),
            "--handler" => a.handler = v.text(),
            "--record-url" => a.record_url = v.text(),
            "--record-prefix" => a.record_prefix = v.text(),
            "--sleep-ms-max" => a.sleep_ms_max = v.num(),
            _ => usage(&format!("unknown option '{flag}'")),
        }
    });
    if a.broker.is_empty() {
        usage("--broker URL is required");
    }
    if a.handler != "noop" && a.handler != "record" {
        usage(&format!("--handler is noop or record, not '{}'", a.handler));
    }
    a
}

fn main() {
    let a = parse();
    sluice_bench::run_main("sluice-queue-bench", run(a));
}

async fn run(a: Args) -> Result<(), String> {
    let broker = sluice_queue::connect(&a.broker, &a.namespace)
        .await
        .map_err(|e| e.to_string())?;
    if a.cmd == "enqueue" {
        let batch = if a.batch == 0 { 1000 } else { a.batch };
        let name = if a.handler == "record" {
            "bench.record"
        } else {
            "bench.noop"
        };
        let start = Instant::now();
        let mut left = a.tasks;
        while left > 0 {
            let n = left.min(batch);
            let tasks: Vec<NewTask> = (0..n)
                .map(|_| {
                    NewTask::new(name, json!({}))
                        .queue(&a.queue)
                        .max_attempts(25)
                })
                .collect();
            broker
                .enqueue_many(tasks)
                .await
                .map_err(|e| e.to_string())?;
            left -= n;
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{}", json!({"enqueued": a.tasks, "seconds": secs}));
        return Ok(());
    }
    let processed = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut b = Worker::builder(broker.clone())
        .queue(&a.queue, a.concurrency)
        .visibility(Duration::from_millis(a.visibility_ms))
        .poll(Duration::from_millis(5))
        .grace(Duration::from_secs(5));
    if a.batch > 0 {
        b = b.batch(a.batch);
    }
    let (p, f) = (processed.clone(), first.clone());
    b = b.handler_fn("bench.noop", move |_ctx, _p| {
        let (p, f) = (p.clone(), f.clone());
        async move {
            f.get_or_init(Instant::now);
            p.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
    });
    let client = redis::Client::open(a.record_url.as_str()).map_err(|e| e.to_string())?;
    let conn = if a.handler == "record" {
        Some(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("record Redis: {e}"))?,
        )
    } else {
        None
    };
    let (p, f) = (processed.clone(), first.clone());
    let prefix = a.record_prefix.clone();
    let sleep_max = a.sleep_ms_max;
    let pid = std::process::id();
    b = b.handler_fn("bench.record", move |ctx, _p| {
        let (p, f, prefix) = (p.clone(), f.clone(), prefix.clone());
        let mut conn = conn.clone();
        async move {
            f.get_or_init(Instant::now);
            if sleep_max > 0 {
                let ms = rand::random::<u64>() % (sleep_max + 1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let Some(c) = conn.as_mut() else {
                return Err(TaskError::Fatal("no record connection".into()));
            };
            let id = ctx.id.to_string();
            redis::pipe()
                .cmd("HINCRBY")
                .arg(format!("{prefix}:runs"))
                .arg(&id)
                .arg(1)
                .ignore()
                .cmd("HSETNX")
                .arg(format!("{prefix}:first"))
                .arg(&id)
                .arg(pid)
                .ignore()
                .query_async::<()>(c)
                .await
                .map_err(|e| TaskError::Retryable(format!("record: {e}")))?;
            p.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
    });
    let w = b.start();
    if !a.exit_when_empty {
        // Runs until killed (the kill -9 tests) or SIGTERM.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        term.recv().await;
        w.shutdown().await;
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = broker.stats(&a.queue).await.map_err(|e| e.to_string())?;
        if s.ready + s.delayed == 0
            && (s.running == 0 || w.in_flight() == 0)
            && first.get().is_some()
        {
            break;
        }
    }
    w.shutdown().await;
    let secs = first.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "{}",
        json!({"processed": processed.load(Ordering::Relaxed), "seconds": secs})
    );
    Ok(())
}
