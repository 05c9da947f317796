//! `sluice-schedule-bench`: many fixed-rate triggers on one scheduler node, claiming
//! on a local Redis, for `bench/schedule/run` (issue #7).
//!
//! ```text
//! sluice-schedule-bench [--redis redis://127.0.0.1:6379] [--triggers 10000]
//!                       [--period 10] [--duration 60] [--enqueue 1] [--metrics 1]
//!                       [--mode scheduler|naive] [--namespace NS] [--keep]
//! ```
//!
//! Trigger `i` (of N) is `every PERIOD s` at a fixed rate, anchored at
//! `epoch + i·(PERIOD/N)` (whole milliseconds), so the N triggers' fires are spread
//! evenly: 10,000 triggers every 10 s fire once every millisecond, 1,000 a second,
//! not 10,000 at once. `misfire = skip`, `overlap = allow`. Claims go to a
//! `RedisClaims` in a fresh namespace; the launcher enqueues one no-op task
//! (`bench.noop` on queue `bench`) per fire on a `RedisBroker` in the same namespace
//! (its own connection, as `sluice serve` has), or nothing with `--enqueue 0`.
//! `--metrics 1` installs the Prometheus recorder `sluice serve` installs (same
//! buckets, no upkeep thread) and renders it every 15 s, as a scrape would.
//!
//! Measured:
//! - **lateness**: `now - due instant` when the scheduler calls `Launcher::launch`,
//!   which it does right after the claim came back won (`overlap = allow`: no
//!   check in between). That is the claim's lateness plus nothing but a metrics
//!   call. The claim store is wrapped to also take `now - due` the moment the
//!   claim's answer arrives (`claim_lateness_ms`).
//! - **exactly once**: every (trigger, instant) the launcher saw is counted. The
//!   window is [first fired instant, last fired instant] over all triggers; every
//!   instant of every trigger in it must fire exactly once (`missing`,
//!   `duplicates`, `off_grid` must be 0), and the window's edges must be near the
//!   start and the stop (`gap_start_ms`, `gap_end_ms`). Then the Redis marks (the
//!   claims' high-water marks) must equal each trigger's last fired instant.
//! - claims won / refused / failed (refused must be 0 on one node);
//! - the process's peak RSS (`VmHWM`), its RSS before the scheduler started, and
//!   its CPU seconds.
//!
//! `--mode naive` runs a naive peer instead of the scheduler, for comparison: one
//! tokio task per trigger that sleeps until its next instant, then claims,
//! launches and records like the scheduler does (no heap, no pauses, no misfires).
//!
//! Prints one JSON object on stdout. The bench's own records (16 bytes a fire,
//! about 1 MiB for 60,000 fires) are part of the RSS. The namespace's keys are
//! deleted at the end unless `--keep`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sluice_core::{Redis, RedisOptions, SystemClock, UnixMillis};
use sluice_queue::{Broker, NewTask, RedisBroker};
use sluice_schedule::{
    ClaimError, ClaimStore, LastFire, LaunchError, Launcher, Misfire, Overlap, RedisClaims,
    Scheduler, TriggerDef, TriggerSpec,
};

struct Args {
    redis: String,
    triggers: usize,
    period_s: u64,
    duration_s: u64,
    enqueue: bool,
    metrics: bool,
    namespace: String,
    keep: bool,
    naive: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("sluice-schedule-bench: {msg}\nsee the source's doc for the options");
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        redis: std::env::var("SLUICE_BENCH_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        triggers: 10_000,
        period_s: 10,
        duration_s: 60,
        enqueue: true,
        metrics: true,
        namespace: String::new(),
        keep: false,
        naive: false,
    };
    sluice_bench::flags(std::env::args().skip(1), &["--keep"], usage, |flag, v| {
        let Some(v) = v else {
            a.keep = true;
            return;
        };
        match flag {
            "--redis" => a.redis = v.text(),
            "--triggers" => a.triggers = v.num() as usize,
            "--period" => a.period_s = v.num(),
            "--duration" => a.duration_s = v.num(),
            "--enqueue" => a.enqueue = v.num() != 0,
            "--metrics" => a.metrics = v.num() != 0,
            "--namespace" => a.namespace = v.text(),
            "--mode" => {
                a.naive = match v.text().as_str() {
                    "scheduler" => false,
                    "naive" => true,
                    other => usage(&format!("--mode is scheduler or naive, not '{other}'")),
                }
            }
            _ => usage(&format!("unknown option '{flag}'")),
        }
    });
    if a.triggers == 0 || a.period_s == 0 || a.duration_s == 0 {
        usage("--triggers, --period and --duration must be positive");
    }
    if a.namespace.is_empty() {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        a.namespace = format!("ssb-{}-{n:08x}", std::process::id());
    }
    a
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn trigger_index(id: &str) -> u32 {
    id.strip_prefix("bench-")
        .and_then(|s| s.parse().ok())
        .unwrap_or(u32::MAX)
}

/// One fire the launcher saw.
#[derive(Clone, Copy)]
struct Fire {
    trigger: u32,
    /// Lateness at launch, µs.
    late_us: i32,
    at_ms: i64,
}

/// The claim store, counting outcomes and timing the claims' answers.
#[derive(Debug)]
struct Counting {
    inner: RedisClaims,
    won: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    records: AtomicU64,
    claim_late_us: Mutex<Vec<i32>>,
}

#[async_trait]
impl ClaimStore for Counting {
    async fn claim(&self, trigger: &str, at: UnixMillis) -> Result<bool, ClaimError> {
        let r = self.inner.claim(trigger, at).await;
        let late = unix_micros() - at * 1000;
        match &r {
            Ok(true) => {
                self.won.fetch_add(1, Ordering::Relaxed);
                self.claim_late_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(late.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32);
            }
            Ok(false) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
    async fn marks(&self) -> Result<HashMap<String, UnixMillis>, ClaimError> {
        self.inner.marks().await
    }
    async fn record(&self, trigger: &str, fire: &LastFire) -> Result<(), ClaimError> {
        let r = self.inner.record(trigger, fire).await;
        self.records.fetch_add(1, Ordering::Relaxed);
        r
    }
    async fn last_fires(&self) -> Result<HashMap<String, LastFire>, ClaimError> {
        self.inner.last_fires().await
    }
    async fn set_paused(&self, trigger: &str, paused: bool) -> Result<(), ClaimError> {
        self.inner.set_paused(trigger, paused).await
    }
    async fn pause_until(&self, trigger: &str, until: UnixMillis) -> Result<(), ClaimError> {
        self.inner.pause_until(trigger, until).await
    }
    async fn pauses(&self) -> Result<HashMap<String, Option<UnixMillis>>, ClaimError> {
        self.inner.pauses().await
    }
    async fn paused(&self) -> Result<HashSet<String>, ClaimError> {
        self.inner.paused().await
    }
}

struct BenchLauncher {
    broker: Option<RedisBroker>,
    fires: Mutex<Vec<Fire>>,
    enqueue_errors: AtomicU64,
    n: AtomicU64,
}

#[async_trait]
impl Launcher for BenchLauncher {
    async fn launch(&self, t: &TriggerDef, at: DateTime<Utc>) -> Result<String, LaunchError> {
        let at_ms = at.timestamp_millis();
        let late = unix_micros() - at_ms * 1000;
        self.fires
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Fire {
                trigger: trigger_index(&t.id),
                late_us: late.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                at_ms,
            });
        let Some(b) = &self.broker else {
            return Ok(format!("noop-{}", self.n.fetch_add(1, Ordering::Relaxed)));
        };
        match b
            .enqueue(NewTask::new("bench.noop", json!({})).queue("bench"))
            .await
        {
            Ok(e) => Ok(e.id.to_string()),
            Err(e) => {
                self.enqueue_errors.fetch_add(1, Ordering::Relaxed);
                Err(LaunchError::Enqueue(e.to_string()))
            }
        }
    }

    async fn running(&self, _task: &str) -> bool {
        false
    }
}

/// (VmHWM, VmRSS) in KiB.
fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// User + system CPU seconds of this process.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and stime are
    // fields 14 and 15 of the whole line, in clock ticks (100 a second on Linux).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

fn percentile(sorted: &[i32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn lateness_json(mut v: Vec<i32>) -> serde_json::Value {
    v.sort_unstable();
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "p50": r3(percentile(&v, 50.0)),
        "p90": r3(percentile(&v, 90.0)),
        "p99": r3(percentile(&v, 99.0)),
        "p999": r3(percentile(&v, 99.9)),
        "max": r3(v.last().map_or(f64::NAN, |&x| f64::from(x) / 1000.0)),
        "min": r3(v.first().map_or(f64::NAN, |&x| f64::from(x) / 1000.0)),
        "over_25ms": v.iter().filter(|&&x| x > 25_000).count(),
        "samples": v.len(),
    })
}

fn main() {
    let a = parse();
    let out = sluice_bench::run_main("sluice-schedule-bench", run(a));
    println!("{out}");
}

async fn run(a: Args) -> Result<serde_json::Value, String> {
    let prom = a.metrics.then(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            )
            .expect("static buckets")
            .build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    });

    let opts = RedisOptions {
        urls: vec![a.redis.clone()],
        namespace: a.namespace.clone(),
        ..RedisOptions::default()
    };
    let redis = Redis::connect(&opts).map_err(|e| e.to_string())?;
    let claims = Arc::new(Counting {
        inner: RedisClaims::new(redis.clone()),
        won: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        records: AtomicU64::new(0),
        claim_late_us: Mutex::new(Vec::new()),
    });
    // Fail early when Redis is not there.
    claims.marks().await.map_err(|e| e.to_string())?;
    let broker = if a.enqueue {
        Some(RedisBroker::connect(&a.redis, &a.namespace).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let nominal = a.triggers as u64 * a.duration_s / a.period_s;
    let launcher = Arc::new(BenchLauncher {
        broker,
        fires: Mutex::new(Vec::with_capacity(nominal as usize + a.triggers)),
        enqueue_errors: AtomicU64::new(0),
        n: AtomicU64::new(0),
    });
    let period_ms = a.period_s * 1000;
    let base = TriggerSpec::every(&format!("{}s", a.period_s), false).map_err(|e| e.message)?;
    let defs: Vec<TriggerDef> = (0..a.triggers)
        .map(|i| {
            let offset = (i as u64 * period_ms / a.triggers as u64) as i64;
            TriggerDef {
                id: format!("bench-{i}"),
                job: "bench.noop".into(),
                spec: base
                    .clone()
                    .with_anchor(DateTime::UNIX_EPOCH + TimeDelta::milliseconds(offset)),
                misfire: Misfire::Skip,
                overlap: Overlap::Allow,
            }
        })
        .collect();
    let specs: Vec<TriggerSpec> = defs.iter().map(|d| d.spec.clone()).collect();
    let rss_before = rss_kib().1;
    let cpu0 = cpu_secs();

    eprintln!(
        "sluice-schedule-bench: {} triggers every {} s ({} fires/s), {} s, enqueue {}, metrics {}, namespace {}",
        a.triggers,
        a.period_s,
        a.triggers as f64 / a.period_s as f64,
        a.duration_s,
        a.enqueue,
        a.metrics,
        a.namespace
    );
    let t_start = wall_ms();
    let running = if a.naive {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut set = tokio::task::JoinSet::new();
        for d in defs {
            set.spawn(naive_trigger(
                d,
                claims.clone(),
                launcher.clone(),
                rx.clone(),
            ));
        }
        Running::Naive(tx, set)
    } else {
        Running::Scheduler(
            Scheduler::start(
                defs,
                claims.clone() as Arc<dyn ClaimStore>,
                launcher.clone() as Arc<dyn Launcher>,
                Arc::new(SystemClock),
            )
            .await,
        )
    };
    let mut rendered = 0usize;
    let mut rss_samples = Vec::new();
    for s in 1..=a.duration_s {
        tokio::time::sleep_until(
            tokio::time::Instant::now()
                + Duration::from_millis((t_start + s as i64 * 1000 - wall_ms()).max(0) as u64),
        )
        .await;
        rss_samples.push(rss_kib().1);
        if let Some(h) = &prom
            && s % 15 == 0
        {
            rendered = h.render().len();
        }
        if s % 10 == 0 {
            eprintln!(
                "  {s:>4} s: {} fires, RSS {} KiB",
                claims.won.load(Ordering::Relaxed),
                rss_kib().1
            );
        }
    }
    let t_stop = wall_ms();
    match running {
        Running::Scheduler(s) => s.shutdown().await,
        Running::Naive(tx, mut set) => {
            let _ = tx.send(true);
            while set.join_next().await.is_some() {}
        }
    }
    let t_after_shutdown = wall_ms();
    // Fires under way finish: wait until every won claim has been launched and
    // recorded.
    for _ in 0..500 {
        let won = claims.won.load(Ordering::Relaxed);
        if claims.records.load(Ordering::Relaxed) >= won
            && launcher
                .fires
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len() as u64
                >= won
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu_secs() - cpu0;
    let (hwm, rss_end) = rss_kib();

    // ---- exactly once -------------------------------------------------------------
    let fires = std::mem::take(&mut *launcher.fires.lock().unwrap_or_else(|e| e.into_inner()));
    let mut per: Vec<Vec<i64>> = vec![Vec::new(); a.triggers];
    let mut bad_ids = 0u64;
    for f in &fires {
        match per.get_mut(f.trigger as usize) {
            Some(v) => v.push(f.at_ms),
            None => bad_ids += 1,
        }
    }
    let first = fires.iter().map(|f| f.at_ms).min().unwrap_or(0);
    let last = fires.iter().map(|f| f.at_ms).max().unwrap_or(0);
    let (mut expected, mut missing, mut duplicates, mut off_grid) = (0u64, 0u64, 0u64, 0u64);
    let mut missing_examples = Vec::new();
    let ms = |m: i64| DateTime::<Utc>::from_timestamp_millis(m).unwrap_or_default();
    for (i, v) in per.iter_mut().enumerate() {
        v.sort_unstable();
        let before = v.len();
        v.dedup();
        duplicates += (before - v.len()) as u64;
        let want: Vec<i64> = specs[i]
            .between(ms(first - 1), ms(last), 1_000_000)
            .iter()
            .map(DateTime::timestamp_millis)
            .collect();
        expected += want.len() as u64;
        let got: HashSet<i64> = v.iter().copied().collect();
        let want_set: HashSet<i64> = want.iter().copied().collect();
        for w in &want {
            if !got.contains(w) {
                missing += 1;
                if missing_examples.len() < 5 {
                    missing_examples.push(format!("bench-{i}@{w}"));
                }
            }
        }
        off_grid += v.iter().filter(|x| !want_set.contains(x)).count() as u64;
    }
    // The Redis marks: each trigger's high-water mark is its last fired instant.
    let marks = claims.marks().await.map_err(|e| e.to_string())?;
    let mut mark_mismatch = 0u64;
    for (i, v) in per.iter().enumerate() {
        let m = marks.get(&format!("bench-{i}")).copied();
        if m != v.last().copied() {
            mark_mismatch += 1;
        }
    }
    let marks_extra = marks.len().saturating_sub(a.triggers);

    // Tasks enqueued (the ready zset of queue `bench`).
    let mut conn = redis.conn();
    let queued: i64 = if a.enqueue {
        redis::cmd("ZCARD")
            .arg(format!("{}:queue:{{bench}}:ready", a.namespace))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?
    } else {
        0
    };
    // Clean up the namespace.
    let mut deleted = 0u64;
    if !a.keep {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", a.namespace))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !keys.is_empty() {
                deleted += keys.len() as u64;
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }

    let late: Vec<i32> = fires.iter().map(|f| f.late_us).collect();
    let claim_late = std::mem::take(
        &mut *claims
            .claim_late_us
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let won = claims.won.load(Ordering::Relaxed);
    let exactly_once = !fires.is_empty()
        && missing == 0
        && duplicates == 0
        && off_grid == 0
        && bad_ids == 0
        && mark_mismatch == 0
        && marks_extra == 0
        && won == fires.len() as u64
        && (!a.enqueue || queued as u64 == won);
    Ok(json!({
        "triggers": a.triggers,
        "period_s": a.period_s,
        "duration_s": a.duration_s,
        "mode": if a.naive { "naive" } else { "scheduler" },
        "enqueue": a.enqueue,
        "metrics": a.metrics,
        "namespace": a.namespace,
        "fires": fires.len(),
        "nominal_fires": nominal,
        "window_first_ms": first,
        "window_last_ms": last,
        "window_s": (last - first) as f64 / 1000.0,
        "expected_in_window": expected,
        "missing": missing,
        "missing_examples": missing_examples,
        "duplicates": duplicates,
        "off_grid": off_grid,
        "gap_start_ms": first - t_start,
        "gap_end_ms": t_stop - last,
        "shutdown_ms": t_after_shutdown - t_stop,
        "claims_won": won,
        "claims_refused": claims.refused.load(Ordering::Relaxed),
        "claims_failed": claims.failed.load(Ordering::Relaxed),
        "records": claims.records.load(Ordering::Relaxed),
        "enqueue_errors": launcher.enqueue_errors.load(Ordering::Relaxed),
        "tasks_queued": queued,
        "marks": marks.len(),
        "mark_mismatch": mark_mismatch,
        "exactly_once": exactly_once,
        "lateness_ms": lateness_json(late),
        "claim_lateness_ms": lateness_json(claim_late),
        "rss_peak_kib": hwm,
        "rss_end_kib": rss_end,
        "rss_before_start_kib": rss_before,
        "rss_max_sampled_kib": rss_samples.iter().max().copied().unwrap_or(0),
        "metrics_page_bytes": rendered,
        "cpu_s": (cpu * 100.0).round() / 100.0,
        "keys_deleted": deleted,
    }))
}

enum Running {
    Scheduler(Scheduler),
    Naive(tokio::sync::watch::Sender<bool>, tokio::task::JoinSet<()>),
}

/// The naive peer: one task per trigger, sleeping until its next instant.
async fn naive_trigger(
    def: TriggerDef,
    claims: Arc<Counting>,
    launcher: Arc<BenchLauncher>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = wall_ms();
        let Some(next) =
            DateTime::<Utc>::from_timestamp_millis(now).and_then(|n| def.spec.next_after(n))
        else {
            return;
        };
        let at_ms = next.timestamp_millis();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis((at_ms - now).max(0) as u64)) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Ok(true) = claims.claim(&def.id, at_ms).await {
            let r = launcher.launch(&def, next).await;
            let fire = LastFire {
                at: at_ms,
                outcome: match &r {
                    Ok(t) => format!("fired task {t}"),
                    Err(e) => format!("error: {e}"),
                },
                task: r.ok(),
            };
            let _ = claims.record(&def.id, &fire).await;
        }
    }
}

fn wall_ms() -> i64 {
    use sluice_core::Clock;
    SystemClock.now_millis()
}
