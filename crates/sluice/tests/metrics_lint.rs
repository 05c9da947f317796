//! `/metrics` is clean for Prometheus (issue #12, point 6): after every area of the
//! process has recorded something, each family in the scrape has `# HELP` and
//! `# TYPE`, `promtool check metrics` prints no warning, and the families are
//! exactly those of `docs/specs/metrics.md`.
//!
//! Everything runs in this process, so one scrape sees it all (the test binary has
//! one global recorder): the gateway, its upstream and the memory store through the
//! harness; a tiered store over a private Redis (purge notices); a Memcached store
//! on a dead port (store errors, entries too large); a queue worker on that Redis
//! (enqueues, completions, retries, dead letters, lost leases, depth); a broker on
//! the dead port (broker errors); a node with an access log (dropped lines); the
//! scheduler on SQLite (fires, lateness, misfires of a trigger whose last claim is
//! in the past); and the alert helpers (firing gauge, notification counter).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use sluice_core::{Clock, SystemClock};
use sluice_queue::{
    Broker, Completion, Enqueued, Envelope, FailOutcome, Lease, LeaseRef, LeaseRequest, NewTask,
    QueueError, QueueStats, RedisBroker, RetryPolicy, TaskError, TaskId, TaskState, TaskStatus,
    Worker,
};
use sluice_schedule::{
    ClaimStore, LaunchError, Launcher, Misfire, Overlap, Scheduler, SqlClaims, TriggerDef,
    TriggerSpec,
};
use sluice_testkit::servers::RedisServer;

use crate::support::{ADMIN, Harness, Node, ROUTE, UPSTREAM, air};

const PROMTOOL_MISSING: &str = "promtool is not installed: run scripts/test (it installs it) \
     or `apt-get install --no-install-recommends prometheus` (Debian's package ships /usr/bin/promtool)";

// Issue #12, point 6: "Metrics pass `promtool check metrics` with no warning: every
// family has `# HELP`."
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_family_has_help_and_type_and_promtool_finds_nothing() {
    // Fail first, and fast, when the linter is missing: never skip.
    let version = Command::new("promtool")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{PROMTOOL_MISSING} ({e})"));
    assert!(version.status.success(), "{PROMTOOL_MISSING}");

    let redis = RedisServer::start();
    let mut dead = RedisServer::start();
    dead.kill();
    let dead_port = dead.port();

    let h = gateway_upstream_and_memory_store().await;
    tiered_store_purges(&h, &redis.url()).await;
    memcached_on_a_dead_port(&h, dead_port).await;
    access_log(&h).await;
    queue_worker(&redis.url()).await;
    broker_on_a_dead_port(dead_port).await;
    scheduler().await;
    job_run().await;
    alerts().await;

    let r = h.get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = r.body;

    // (a) Every family has both lines, and every sample belongs to a family.
    let families = families(&text);
    for (name, f) in &families {
        assert!(f.help, "family {name} has no # HELP line in\n{text}");
        assert!(
            f.kind.is_some(),
            "family {name} has no # TYPE line in\n{text}"
        );
    }

    // The families are exactly the specified ones, each with its specified type.
    let spec = spec_families();
    let seen: BTreeMap<&str, &str> = families
        .iter()
        .map(|(n, f)| (n.as_str(), f.kind.as_deref().unwrap_or("")))
        .collect();
    let missing: Vec<_> = spec
        .keys()
        .filter(|n| !seen.contains_key(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "specified families absent from the scrape: {missing:?}\n{text}"
    );
    for (name, kind) in &seen {
        let want = spec.get(*name).unwrap_or_else(|| {
            panic!("family {name} is not in docs/specs/metrics.md; specify it there")
        });
        assert_eq!(
            kind, want,
            "type of {name} (docs/specs/metrics.md says {want})"
        );
    }

    // (b) promtool agrees, without a single warning.
    let (code, out) = promtool_check(&text);
    assert!(
        code == Some(0) && out.trim().is_empty(),
        "`promtool check metrics` exited {code:?} with:\n{out}\nfor the scrape:\n{text}"
    );
}

/// The harness gateway, with a 2 KiB `max_body` so a big answer is not stored.
async fn gateway_upstream_and_memory_store() -> Harness {
    let h = Harness::default_with(
        "\n[store]\nkind = \"memory\"\nmax_bytes = \"1MiB\"\nmax_body = \"2KiB\"\n",
    )
    .await;
    assert_eq!(h.get(&air("서울")).await.status, 200);
    assert!(h.get(&air("서울")).await.cache_status().contains("hit"));
    let big = "/air/getCtprvnRltmMesureDnsty?sidoName=부산&returnType=json&numOfRows=40&pageNo=1";
    let r = h.get(big).await;
    assert_eq!(r.status, 200);
    assert!(
        r.cache_status().contains("too-large"),
        "{}",
        r.cache_status()
    );
    h
}

/// A tiered store over Redis: an admin purge comes back as a purge notice.
async fn tiered_store_purges(h: &Harness, redis_url: &str) {
    let node = Node::start(
        &h.sim,
        &format!(
            "admin_token = {{ env = \"ADMIN_TOKEN\" }}\n{UPSTREAM}{ROUTE}\n[store]\nkind = \"tiered\"\nurl = \"{redis_url}\"\nnamespace = \"lint\"\n"
        ),
    )
    .await;
    let path = air("대구");
    assert_eq!(node.get(&path).await.status, 200);
    let r = node
        .purge(&json!({ "url": path }).to_string(), Some(ADMIN))
        .await;
    assert_eq!(r.status, 200);
    wait_for_metric("sluice_store_purge_notices_total{").await;
}

/// A Memcached store nobody answers for, with a 1 KiB item size: reads fail and
/// answers are too large to keep.
async fn memcached_on_a_dead_port(h: &Harness, port: u16) {
    let node = Node::start(
        &h.sim,
        &format!(
            "{UPSTREAM}{ROUTE}\n[store]\nkind = \"memcached\"\nurl = \"memcache://127.0.0.1:{port}\"\nnamespace = \"lint\"\nmax_item_size = \"1KiB\"\n"
        ),
    )
    .await;
    assert_eq!(node.get(&air("광주")).await.status, 200);
    wait_for_metric("sluice_store_too_large_total{").await;
    wait_for_metric("sluice_store_errors_total{store=\"memcached\"").await;
}

/// A node with a JSON access log: its dropped-lines counter is registered.
async fn access_log(h: &Harness) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let node = Node::start(
        &h.sim,
        &format!(
            "access_log = \"json\"\naccess_log_path = \"{}\"\n{UPSTREAM}{ROUTE}",
            log.display()
        ),
    )
    .await;
    assert_eq!(node.get(&air("인천")).await.status, 200);
    wait_for_metric("sluice_access_log_dropped_total ").await;
}

/// A worker on Redis through a broker that refuses every heartbeat, so leases
/// are lost while the tasks still complete, retry or die.
async fn queue_worker(redis_url: &str) {
    let real: Arc<dyn Broker> = Arc::new(RedisBroker::connect(redis_url, "lint").unwrap());
    let broker: Arc<dyn Broker> = Arc::new(RefusedHeartbeats(real.clone()));
    let w = Worker::builder(broker)
        .queue("lint", 4)
        .poll(Duration::from_millis(20))
        .visibility(Duration::from_millis(300))
        .handler_fn("ok", |_ctx, _p| async move { Ok(None) })
        .handler_fn("slow", |_ctx, _p| async move {
            // Outlives a heartbeat (every 100 ms), which is refused.
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok(None)
        })
        .handler_fn("flaky", |ctx, _p| async move {
            if ctx.attempt < 2 {
                Err(TaskError::Retryable("first attempt fails".into()))
            } else {
                Ok(None)
            }
        })
        .retry(
            "flaky",
            RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(20),
                factor: 2.0,
                max: Duration::from_millis(50),
                jitter: false,
            },
        )
        .handler_fn("bad", |_ctx, _p| async move {
            Err(TaskError::Fatal("always fails".into()))
        })
        .start();
    let mut ids = Vec::new();
    for name in ["ok", "slow", "flaky", "bad"] {
        let t = NewTask::new(name, json!({}))
            .queue("lint")
            .result_ttl(Duration::from_secs(60));
        ids.push((name, real.enqueue(t).await.unwrap().id));
    }
    let dup = || {
        NewTask::new("ok", json!({}))
            .queue("lint")
            .idempotency_key("once")
    };
    real.enqueue(dup()).await.unwrap();
    assert!(real.enqueue(dup()).await.unwrap().duplicate);
    for (name, id) in ids {
        let want = if name == "bad" {
            TaskState::Dead
        } else {
            TaskState::Completed
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = real.status("lint", id).await.unwrap();
            if s.as_ref().is_some_and(|s| s.state == want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "task {name} never reached {want:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    w.shutdown().await;
}

/// A Redis broker on a port where nothing listens.
async fn broker_on_a_dead_port(port: u16) {
    let b = RedisBroker::connect(&format!("redis://127.0.0.1:{port}"), "lint").unwrap();
    let t = NewTask::new("ok", json!({})).queue("lint");
    assert!(b.enqueue(t).await.is_err());
}

/// The scheduler with an every-second trigger on SQLite claims, until its first
/// fire is counted; and one last claimed a minute ago, whose missed instants are
/// made up (one) and skipped (the rest).
async fn scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("claims.db").display());
    let claims = Arc::new(SqlClaims::connect(&url).await.unwrap());
    let minute_ago = SystemClock.now_millis() / 1000 * 1000 - 60_000;
    assert!(claims.claim("lint#missed", minute_ago).await.unwrap());
    let missed = TriggerDef {
        id: "lint#missed".into(),
        job: "lint".into(),
        spec: TriggerSpec::cron("*/1 * * * * *", "UTC").unwrap(),
        misfire: Misfire::CatchUp { max: 1 },
        overlap: Overlap::Allow,
    };
    let launched = Arc::new(tokio::sync::Notify::new());
    let def = TriggerDef {
        id: "lint#0".into(),
        job: "lint".into(),
        spec: TriggerSpec::cron("*/1 * * * * *", "UTC").unwrap(),
        misfire: Misfire::Skip,
        overlap: Overlap::Allow,
    };
    let s = Scheduler::start(
        vec![def, missed],
        claims,
        Arc::new(Notifying(launched.clone())),
        Arc::new(SystemClock),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(5), launched.notified())
        .await
        .expect("an every-second trigger fires within 5 s");
    // The fire is counted once the launch returned.
    wait_for_metric("sluice_schedule_fires_total{").await;
    wait_for_metric(r#"sluice_schedule_misfires_total{trigger="lint#missed",action="fired"} 1"#)
        .await;
    wait_for_metric(r#"sluice_schedule_misfires_total{trigger="lint#missed",action="skipped"}"#)
        .await;
    s.shutdown().await;
}

/// A tasklet that does nothing.
struct Noop;

#[async_trait]
impl sluice_batch::Tasklet for Noop {
    async fn execute(&mut self) -> Result<String, sluice_batch::TaskletError> {
        Ok("done".into())
    }
}

/// A finished job run, recorded as every run is (`log_finished`): runs by
/// status, duration, last success, last run's items.
async fn job_run() {
    use sluice_batch::repository::{Repository, SqlRepository};
    let repo = SqlRepository::connect("sqlite::memory:").await.unwrap();
    repo.migrate().await.unwrap();
    let job = sluice_batch::Job::new("lint").step(sluice_batch::Step::Tasklet {
        name: "noop".into(),
        tasklet: Box::new(Noop),
    });
    let report = sluice_batch::JobRunner::new(Arc::new(repo))
        .run(
            job,
            &sluice_batch::model::Params::new(),
            sluice_batch::RunOptions::default(),
            &sluice_batch::NoProgress,
        )
        .await
        .unwrap();
    sluice::runtime::job_task::log_finished(&report);
    wait_for_metric("sluice_job_runs_total{").await;
    let page = sluice::telemetry::prometheus().render();
    for line in [
        r#"sluice_job_runs_total{job_name="lint",status="COMPLETED"} 1"#,
        r#"sluice_job_last_run_items{job_name="lint",step="noop",kind="read"} 0"#,
        r#"sluice_job_duration_seconds_count{job_name="lint"} 1"#,
    ] {
        assert!(page.lines().any(|l| l == line), "no `{line}` in:\n{page}");
    }
    assert!(
        page.lines()
            .any(|l| l
                .starts_with(r#"sluice_job_last_success_timestamp_seconds{job_name="lint"} 17"#)),
        "{page}"
    );
}

/// The alert families, through the helpers evaluation and delivery use: the
/// firing gauge of a rule, a delivery counted.
async fn alerts() {
    let rule = sluice::config::RuleSettings {
        name: "lint".into(),
        condition: sluice::config::Condition::JobFailed { job: None },
        severity: "warning".into(),
        labels: Default::default(),
        send_to: vec!["ops".into()],
    };
    sluice::alerts::record_firing(&[rule], &[]);
    sluice::alerts::count_notification("ops", "sent");
    wait_for_metric("sluice_alert_notifications_total{").await;
    let page = sluice::telemetry::prometheus().render();
    for line in [
        r#"sluice_alerts_firing{rule="lint"} 0"#,
        r#"sluice_alert_notifications_total{receiver="ops",result="sent"} 1"#,
    ] {
        assert!(page.lines().any(|l| l == line), "no `{line}` in:\n{page}");
    }
}

/// Polls the process's recorder until a line of its page starts with `prefix`.
async fn wait_for_metric(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = sluice::telemetry::prometheus().render();
        if text.lines().any(|l| l.starts_with(prefix)) {
            return;
        }
        assert!(Instant::now() < deadline, "no {prefix}… line in\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a scrape says about one family.
#[derive(Debug, Default)]
struct Family {
    help: bool,
    kind: Option<String>,
}

/// The families of a Prometheus text: `# HELP` and `# TYPE` lines, and every
/// sample's family (histogram and summary samples by their base name).
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            out.entry(name.to_owned()).or_default().help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or("");
            let kind = parts.next().unwrap_or("").to_owned();
            let f = out.entry(name.to_owned()).or_default();
            assert!(f.kind.is_none(), "family {name} has two # TYPE lines");
            f.kind = Some(kind);
        }
    }
    let typed: BTreeSet<String> = out.keys().cloned().collect();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|base| {
                typed.contains(*base)
                    && out[*base]
                        .kind
                        .as_deref()
                        .is_some_and(|k| k == "histogram" || k == "summary")
            })
            .unwrap_or(sample);
        out.entry(family.to_owned()).or_default();
    }
    out
}

/// Issue #15 point 7: `examples/prometheus/alerts.yml` passes `promtool check
/// rules` and its unit tests (`alerts_test.yml`, `promtool test rules`: each
/// alert fires on the series it is about and not before), and every metric
/// the rules and `examples/grafana/sluice.json` name is a family of
/// `docs/specs/metrics.md` (histograms with their `_bucket`); every dashboard
/// panel has a query on the Prometheus datasource.
#[test]
fn the_example_alert_rules_and_dashboard_use_real_metrics_and_pass_promtool() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let prometheus = format!("{examples}/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&prometheus)
            .output()
            .unwrap_or_else(|e| panic!("{PROMTOOL_MISSING} ({e})"));
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(format!("{prometheus}/alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{examples}/grafana/sluice.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard of {} panels", panels.len());
    let mut exprs = vec![rules];
    for p in panels {
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        assert_eq!(
            p["datasource"]["type"], "prometheus",
            "panel {}",
            p["title"]
        );
        for t in targets {
            let e = t["expr"].as_str().unwrap_or("");
            assert!(!e.is_empty(), "panel {}: an empty query", p["title"]);
            exprs.push(e.to_owned());
        }
    }
    let spec = spec_families();
    let mut named = 0;
    for text in &exprs {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("sluice_") {
                continue;
            }
            named += 1;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    word.strip_suffix(s)
                        .filter(|f| spec.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(word);
            assert!(
                spec.contains_key(family),
                "{word} is not a family of docs/specs/metrics.md (in {text})"
            );
        }
    }
    assert!(named > 20, "only {named} metric names found");
}

/// Family name → type, from the table of `docs/specs/metrics.md`.
fn spec_families() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/specs/metrics.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let spec: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            name.starts_with("sluice_")
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect();
    assert!(!spec.is_empty(), "no metric table in {path}");
    spec
}

/// Pipes `text` to `promtool check metrics`; its exit code and everything it said.
fn promtool_check(text: &str) -> (Option<i32>, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PROMTOOL_MISSING} ({e})"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

/// Launches nothing; wakes the test at the first fire.
struct Notifying(Arc<tokio::sync::Notify>);

#[async_trait]
impl Launcher for Notifying {
    async fn launch(&self, _t: &TriggerDef, _at: DateTime<Utc>) -> Result<String, LaunchError> {
        self.0.notify_one();
        Ok("lint-task".into())
    }
    async fn running(&self, _task: &str) -> bool {
        false
    }
}

/// A broker whose every heartbeat is refused (the lease counts as lost); the
/// rest goes to the real broker.
#[derive(Debug)]
struct RefusedHeartbeats(Arc<dyn Broker>);

/// Implements [`Broker`] for `RefusedHeartbeats`: `extend` refuses every
/// lease, each listed method hands its arguments on to the wrapped broker.
macro_rules! refuse_heartbeats_delegate_rest {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Broker for RefusedHeartbeats {
            fn kind(&self) -> &'static str {
                self.0.kind()
            }
            async fn extend(
                &self,
                leases: &[LeaseRef],
                _visibility: Duration,
            ) -> Result<Vec<bool>, QueueError> {
                Ok(vec![false; leases.len()])
            }
            $(
                async fn $name(&self, $($arg: $ty),*) -> Result<$ret, QueueError> {
                    self.0.$name($($arg),*).await
                }
            )*
        }
    };
}

refuse_heartbeats_delegate_rest! {
    fn enqueue(task: NewTask) -> Enqueued;
    fn lease_request(req: LeaseRequest<'_>) -> Vec<Lease>;
    fn complete(done: &[Completion]) -> usize;
    fn fail(lease: &LeaseRef, error: &str, retry_in: Option<Duration>) -> FailOutcome;
    fn release(lease: &LeaseRef) -> bool;
    fn release_delayed(lease: &LeaseRef, delay: Duration, reason: &str) -> bool;
    fn status(queue: &str, id: TaskId) -> Option<TaskStatus>;
    fn stats(queue: &str) -> QueueStats;
    fn queues() -> Vec<String>;
    fn dead(queue: &str, limit: usize) -> Vec<Envelope>;
    fn retry_dead(queue: &str, ids: Option<&[TaskId]>) -> u64;
    fn purge_dead(queue: &str) -> u64;
    fn delete_dead(queue: &str, ids: &[TaskId]) -> u64;
    fn set_queue_paused(queue: &str, paused: bool) -> ();
    fn paused_queues() -> Vec<String>;
    fn oldest_ready(queue: &str) -> Option<i64>;
    fn announce(beat: &sluice_queue::WorkerBeat, ttl: Duration) -> ();
    fn withdraw(node: &str) -> ();
    fn workers() -> Vec<sluice_queue::LiveWorker>;
    fn cancel(queue: &str, id: TaskId) -> sluice_queue::CancelOutcome;
    fn running(queue: &str, limit: usize) -> Vec<sluice_queue::RunningTask>;
}
