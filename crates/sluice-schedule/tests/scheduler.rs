//! The scheduler against real claim stores: each instant fires once across nodes
//! (with a node killed, with a node whose clock is behind), misfire policies after
//! downtime (pure, with fixed instants), overlap and pauses.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sluice_core::{Clock, ManualClock, Redis, RedisOptions, SystemClock};
use sluice_schedule::{
    ClaimStore, LaunchError, Launcher, MISFIRE_COUNT_LIMIT, Misfire, MissedFires, Overlap,
    RedisClaims, Scheduler, SqlClaims, TriggerDef, TriggerSpec, misfires, missed_fires,
};

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_claims(ns: &str) -> Arc<dyn ClaimStore> {
    let redis = Redis::connect(&RedisOptions {
        urls: vec![redis_url()],
        namespace: ns.to_owned(),
        ..RedisOptions::default()
    })
    .unwrap();
    Arc::new(RedisClaims::new(redis))
}

/// Records every fire; tasks "run" for `busy` after launch.
#[derive(Default)]
struct Recorder {
    fires: Mutex<Vec<(String, DateTime<Utc>, usize)>>,
    busy_until: Mutex<BTreeMap<String, std::time::Instant>>,
    busy: Duration,
    n: AtomicUsize,
}

struct NodeLauncher(Arc<Recorder>, usize);

#[async_trait]
impl Launcher for NodeLauncher {
    async fn launch(&self, t: &TriggerDef, at: DateTime<Utc>) -> Result<String, LaunchError> {
        let id = format!("task-{}", self.0.n.fetch_add(1, Ordering::SeqCst));
        self.0
            .fires
            .lock()
            .unwrap()
            .push((t.id.clone(), at, self.1));
        self.0
            .busy_until
            .lock()
            .unwrap()
            .insert(id.clone(), std::time::Instant::now() + self.0.busy);
        Ok(id)
    }
    async fn running(&self, task: &str) -> bool {
        self.0
            .busy_until
            .lock()
            .unwrap()
            .get(task)
            .is_some_and(|u| std::time::Instant::now() < *u)
    }
}

/// A clock `offset_ms` behind the system's.
#[derive(Debug)]
struct Behind(i64);

impl Clock for Behind {
    fn now_millis(&self) -> i64 {
        SystemClock.now_millis() - self.0
    }
}

/// Trigger `id` of job `j`, every second.
fn every_second(id: &str) -> TriggerDef {
    cron_trigger(id, "j", "*/1 * * * * *")
}

/// Trigger `id` of `job` on the UTC `cron` expression, firing a missed run once,
/// overlaps allowed.
fn cron_trigger(id: &str, job: &str, cron: &str) -> TriggerDef {
    TriggerDef {
        id: id.into(),
        job: job.into(),
        spec: TriggerSpec::cron(cron, "UTC").unwrap(),
        misfire: Misfire::FireOnce,
        overlap: Overlap::Allow,
    }
}

/// A scheduler (node 0, system clock) of `defs` on `store`, recording in `rec`.
async fn start_node(
    defs: Vec<TriggerDef>,
    store: &Arc<dyn ClaimStore>,
    rec: &Arc<Recorder>,
) -> Scheduler {
    Scheduler::start(
        defs,
        store.clone(),
        Arc::new(NodeLauncher(rec.clone(), 0)),
        Arc::new(SystemClock),
    )
    .await
}

async fn three_nodes(secs: u64, kill_one: bool) {
    let ns = format!("ts-{:016x}", rand::random::<u64>());
    let rec = Arc::new(Recorder::default());
    let mut nodes = Vec::new();
    for node in 0..3 {
        // Node 2's clock runs 1.5 s behind: it must never fire a claimed instant.
        let clock: Arc<dyn Clock> = if node == 2 {
            Arc::new(Behind(1500))
        } else {
            Arc::new(SystemClock)
        };
        nodes.push(Some(
            Scheduler::start(
                vec![every_second("j#0")],
                redis_claims(&ns),
                Arc::new(NodeLauncher(rec.clone(), node)),
                clock,
            )
            .await,
        ));
    }
    let start = Utc::now();
    for s in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if kill_one && s == secs / 2 {
            // Abrupt: the node is dropped without a shutdown.
            if let Some(n) = nodes[0].take() {
                drop(n);
            }
        }
    }
    let end = Utc::now();
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
    let fires = rec.fires.lock().unwrap().clone();
    let mut by_instant: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for (_, at, _) in &fires {
        *by_instant.entry(*at).or_default() += 1;
    }
    let doubled: Vec<_> = by_instant.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "instants fired twice: {doubled:?}");
    // Every whole second strictly inside the window fired (edges may not have).
    let mut missing = Vec::new();
    let mut t = Utc.timestamp_opt(start.timestamp() + 1, 0).unwrap();
    while t < end - chrono::Duration::seconds(1) {
        if !by_instant.contains_key(&t) {
            missing.push(t);
        }
        t += chrono::Duration::seconds(1);
    }
    assert!(missing.is_empty(), "instants never fired: {missing:?}");
    assert!(
        by_instant.len() as u64 >= secs - 2,
        "{} fires in {secs} s",
        by_instant.len()
    );
    let nodes_used: std::collections::BTreeSet<usize> = fires.iter().map(|f| f.2).collect();
    eprintln!(
        "{} fires in {secs} s over nodes {nodes_used:?}, none doubled, none missed",
        by_instant.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_fire_each_second_once() {
    three_nodes(30, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_one_killed_midway_fire_each_second_once() {
    three_nodes(30, true).await;
}

async fn claims_are_once_and_monotone(store: Arc<dyn ClaimStore>) {
    assert!(store.claim("a", 1_000).await.unwrap());
    assert!(
        !store.claim("a", 1_000).await.unwrap(),
        "the same instant twice"
    );
    assert!(
        !store.claim("a", 500).await.unwrap(),
        "an earlier instant (clock stepped back)"
    );
    assert!(store.claim("a", 2_000).await.unwrap());
    assert!(
        store.claim("b", 1_500).await.unwrap(),
        "triggers are independent"
    );
    let marks = store.marks().await.unwrap();
    assert_eq!(marks.get("a"), Some(&2_000));
    assert_eq!(marks.get("b"), Some(&1_500));
    // Many racers, one winner per instant.
    let wins = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for _ in 0..8 {
        let (s, w) = (store.clone(), wins.clone());
        hs.push(tokio::spawn(async move {
            if s.claim("race", 42).await.unwrap() {
                w.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    store.set_paused("a", true).await.unwrap();
    assert!(store.paused().await.unwrap().contains("a"));
    store.set_paused("a", false).await.unwrap();
    assert!(!store.paused().await.unwrap().contains("a"));
    // A pause until a time: listed with its end while it lasts, gone after.
    let now = Utc::now().timestamp_millis();
    store.pause_until("a", now + 60_000).await.unwrap();
    store.pause_until("b", now - 1).await.unwrap();
    store.set_paused("c", true).await.unwrap();
    let p = store.pauses().await.unwrap();
    assert_eq!(p.get("a"), Some(&Some(now + 60_000)));
    assert_eq!(p.get("c"), Some(&None));
    assert!(!p.contains_key("b"), "an ended pause is not listed: {p:?}");
    assert!(store.paused().await.unwrap().contains("a"));
    // Resuming ends a timed pause; pausing for good replaces it.
    store.set_paused("a", false).await.unwrap();
    store.pause_until("c", now + 5_000).await.unwrap();
    let p = store.pauses().await.unwrap();
    assert!(!p.contains_key("a"));
    assert_eq!(p.get("c"), Some(&Some(now + 5_000)));
    store.set_paused("c", false).await.unwrap();
    let lf = sluice_schedule::LastFire {
        at: 2_000,
        outcome: "fired task t1".into(),
        task: Some("t1".into()),
    };
    store.record("a", &lf).await.unwrap();
    assert_eq!(store.last_fires().await.unwrap().get("a"), Some(&lf));
}

#[tokio::test]
async fn claims_on_redis() {
    claims_are_once_and_monotone(redis_claims(&format!("tc-{:016x}", rand::random::<u64>()))).await;
}

#[tokio::test]
async fn claims_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    claims_are_once_and_monotone(Arc::new(SqlClaims::connect(&url).await.unwrap())).await;
}

#[tokio::test]
async fn claims_on_postgres() {
    use sluice_testkit::db::{Server, ServerDb};
    let db = ServerDb::new(Server::Postgres, "sluice_sc").await;
    let store = Arc::new(SqlClaims::connect(&db.url).await.unwrap());
    claims_are_once_and_monotone(store.clone()).await;
    drop(store);
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn misfire_policies_after_downtime() {
    // Hourly at :20; last claimed 01:20, back at 05:50: 02:20 … 05:20 were missed.
    let spec = TriggerSpec::cron("0 20 * * * *", "UTC").unwrap();
    let (last, now) = (at("2026-11-25T01:20:00Z"), at("2026-11-25T05:50:00Z"));
    assert_eq!(
        misfires(&spec, Misfire::FireOnce, last, now),
        vec![at("2026-11-25T05:20:00Z")],
        "one run for all missed fires"
    );
    assert!(misfires(&spec, Misfire::Skip, last, now).is_empty());
    assert_eq!(
        misfires(&spec, Misfire::CatchUp { max: 2 }, last, now),
        vec![at("2026-11-25T04:20:00Z"), at("2026-11-25T05:20:00Z")]
    );
    assert_eq!(
        misfires(&spec, Misfire::CatchUp { max: 10 }, last, now).len(),
        4
    );
    // Nothing missed: nothing to make up.
    assert!(misfires(&spec, Misfire::FireOnce, at("2026-11-25T05:20:00Z"), now).is_empty());
}

#[test]
fn missed_fires_count_what_the_policy_drops() {
    // Hourly at :20; last claimed 01:20, back at 05:50: 4 instants were missed.
    let spec = TriggerSpec::cron("0 20 * * * *", "UTC").unwrap();
    let (last, now) = (at("2026-11-25T01:20:00Z"), at("2026-11-25T05:50:00Z"));
    let plan = |m: Misfire| missed_fires(&spec, m, last, now);
    assert_eq!(
        plan(Misfire::FireOnce),
        MissedFires {
            fire: vec![at("2026-11-25T05:20:00Z")],
            skipped: 3
        }
    );
    assert_eq!(
        plan(Misfire::Skip),
        MissedFires {
            fire: vec![],
            skipped: 4
        }
    );
    assert_eq!(plan(Misfire::CatchUp { max: 3 }).skipped, 1);
    assert_eq!(plan(Misfire::CatchUp { max: 10 }).skipped, 0);
    for m in [
        Misfire::FireOnce,
        Misfire::Skip,
        Misfire::CatchUp { max: 2 },
    ] {
        assert_eq!(plan(m).fire, misfires(&spec, m, last, now), "{m}");
    }
    // A month of a every-second trigger: the count stops at the limit.
    let every = TriggerSpec::cron("* * * * * *", "UTC").unwrap();
    let long = missed_fires(&every, Misfire::FireOnce, at("2026-10-25T00:00:00Z"), now);
    assert_eq!(long.fire, vec![now]);
    assert_eq!(long.skipped, MISFIRE_COUNT_LIMIT - 1);
}

/// The process's Prometheus recorder, installed once.
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("no other recorder in this test");
        handle
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_scheduler_counts_missed_instants_fired_and_skipped() {
    let page = prometheus();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("claims.db").display());
    let store: Arc<dyn ClaimStore> = Arc::new(SqlClaims::connect(&url).await.unwrap());
    // Hourly at :20, last claimed 01:20, the clock stands at 05:50: 4 instants missed.
    let last = at("2026-11-25T01:20:00Z").timestamp_millis();
    let clock = ManualClock::new(at("2026-11-25T05:50:00Z").timestamp_millis());
    let mut defs = Vec::new();
    for (id, misfire) in [
        ("mf#once", Misfire::FireOnce),
        ("mf#skip", Misfire::Skip),
        ("mf#catch", Misfire::CatchUp { max: 3 }),
    ] {
        assert!(store.claim(id, last).await.unwrap());
        defs.push(TriggerDef {
            misfire,
            ..cron_trigger(id, "j", "0 20 * * * *")
        });
    }
    let rec = Arc::new(Recorder::default());
    let s = Scheduler::start(
        defs,
        store.clone(),
        Arc::new(NodeLauncher(rec.clone(), 0)),
        Arc::new(clock),
    )
    .await;
    let want = [
        r#"sluice_schedule_misfires_total{trigger="mf#once",action="fired"} 1"#,
        r#"sluice_schedule_misfires_total{trigger="mf#once",action="skipped"} 3"#,
        r#"sluice_schedule_misfires_total{trigger="mf#skip",action="skipped"} 4"#,
        r#"sluice_schedule_misfires_total{trigger="mf#catch",action="fired"} 3"#,
        r#"sluice_schedule_misfires_total{trigger="mf#catch",action="skipped"} 1"#,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = page.render();
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "want {want:#?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown().await;
    let text = page.render();
    assert!(
        !text.contains(r#"trigger="mf#skip",action="fired""#),
        "skip makes nothing up:\n{text}"
    );
    // What was counted as fired was launched: 1 + 3 runs.
    assert_eq!(rec.fires.lock().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_makes_up_a_missed_fire_once() {
    let ns = format!("tm-{:016x}", rand::random::<u64>());
    let store = redis_claims(&ns);
    // The trigger last fired 10 minutes ago; it fires every minute.
    let ten_ago = SystemClock.now_millis() / 60_000 * 60_000 - 600_000;
    assert!(store.claim("m#0", ten_ago).await.unwrap());
    let rec = Arc::new(Recorder::default());
    let s = start_node(vec![cron_trigger("m#0", "m", "0 * * * * *")], &store, &rec).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rec.fires.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown().await;
    let fires = rec.fires.lock().unwrap().clone();
    let missed: Vec<_> = fires
        .iter()
        .filter(|f| f.1.timestamp_millis() < SystemClock.now_millis() - 1_000)
        .collect();
    assert_eq!(
        missed.len(),
        1,
        "one run for the ten missed fires: {fires:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_and_pause() {
    let ns = format!("to-{:016x}", rand::random::<u64>());
    let store = redis_claims(&ns);
    let rec = Arc::new(Recorder {
        busy: Duration::from_millis(2500),
        ..Recorder::default()
    });
    let mut skip = every_second("o#skip");
    skip.overlap = Overlap::Skip;
    let allow = every_second("o#allow");
    let paused = every_second("o#paused");
    store.set_paused("o#paused", true).await.unwrap();
    let s = start_node(vec![skip, allow, paused], &store, &rec).await;
    tokio::time::sleep(Duration::from_millis(6200)).await;
    s.shutdown().await;
    let fires = rec.fires.lock().unwrap().clone();
    let count = |id: &str| fires.iter().filter(|f| f.0 == id).count();
    assert!(count("o#allow") >= 5, "{fires:?}");
    assert!(count("o#paused") == 0, "a paused trigger does not fire");
    // Each run lasts 2.5 s: skip fires at most every third second.
    assert!(
        count("o#skip") <= count("o#allow") / 2 + 1 && count("o#skip") >= 1,
        "skip {} allow {}",
        count("o#skip"),
        count("o#allow")
    );
}
