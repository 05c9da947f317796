//! `chasqui-bench`: the ChasquiMQ peer of bench/queue.
//!
//! ```text
//! chasqui-bench enqueue URL QUEUE TASKS [CHUNK=1000]   Producer::add_bulk, CHUNK jobs a call
//! chasqui-bench work    URL QUEUE [CONCURRENCY=100]    one Consumer; exits when drained
//! ```
//!
//! Each prints one JSON line: `{"enqueued":N,"seconds":S}` or
//! `{"processed":N,"seconds":S}` (seconds from the first job run to the queue drained).
//!
//! The consumer uses `ConsumerConfig::default()` but for the queue name and the
//! concurrency. ChasquiMQ acknowledges with a batched `XACKDEL` after the handler
//! returned (`ack_batch` 256, `ack_idle_ms` 5), which also deletes the stream entry, so
//! the queue is drained when the stream's `XLEN` is 0: a side task polls it every
//! 10 ms (the same period as `sluice-queue-bench work --exit-when-empty`) and then
//! cancels the consumer, whose shutdown flushes the last acks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chasquimq::{Bytes, Consumer, ConsumerConfig, HandlerError, Producer, ProducerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Serialize, Deserialize)]
struct Noop {}

fn usage() -> ! {
    eprintln!("usage: chasqui-bench enqueue URL QUEUE TASKS [CHUNK] | work URL QUEUE [CONCURRENCY]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    let (url, queue) = (args[1].clone(), args[2].clone());
    let num = |i: usize, d: usize| -> usize {
        args.get(i).map_or(d, |v| v.parse().unwrap_or_else(|_| usage()))
    };
    let res = match args[0].as_str() {
        "enqueue" => enqueue(&url, &queue, num(3, 0), num(4, 1000)).await,
        "work" => work(&url, &queue, num(3, 100)).await,
        _ => usage(),
    };
    if let Err(e) = res {
        eprintln!("chasqui-bench: {e}");
        std::process::exit(1);
    }
}

async fn enqueue(url: &str, queue: &str, tasks: usize, chunk: usize) -> Result<(), String> {
    let cfg = ProducerConfig { queue_name: queue.into(), ..Default::default() };
    let producer = Producer::<Noop>::connect(url, cfg).await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut left = tasks;
    while left > 0 {
        let n = left.min(chunk.max(1));
        producer
            .add_bulk((0..n).map(|_| Noop {}).collect())
            .await
            .map_err(|e| e.to_string())?;
        left -= n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({"enqueued": tasks, "seconds": secs}));
    Ok(())
}

async fn work(url: &str, queue: &str, concurrency: usize) -> Result<(), String> {
    let cfg = ConsumerConfig { queue_name: queue.into(), concurrency, ..Default::default() };
    let processed = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let token = CancellationToken::new();

    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    // The stream key, as chasquimq's `redis::keys::stream_key` (crate-private) makes it.
    let stream = format!("{{chasqui:{queue}}}:stream");
    let (t, f) = (token.clone(), first.clone());
    let watcher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let len: Result<u64, _> = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await;
            match len {
                Ok(0) if f.get().is_some() => break,
                Ok(_) => {}
                Err(e) => eprintln!("chasqui-bench: XLEN: {e}"),
            }
        }
        t.cancel();
    });

    let (p, f) = (processed.clone(), first.clone());
    let consumer = Consumer::<Noop>::new(url, cfg);
    consumer
        .run(
            move |_job| {
                let (p, f) = (p.clone(), f.clone());
                async move {
                    f.get_or_init(Instant::now);
                    p.fetch_add(1, Ordering::Relaxed);
                    Ok::<Bytes, HandlerError>(Bytes::new())
                }
            },
            token,
        )
        .await
        .map_err(|e| e.to_string())?;
    watcher.abort();
    let secs = first.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "{}",
        serde_json::json!({"processed": processed.load(Ordering::Relaxed), "seconds": secs})
    );
    Ok(())
}
