//! The public-data kit: `preset = "data.go.kr"` on an upstream, and a paged load
//! larger than one day's quota spread over several (simulated) days.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::config::{Env, Settings, Source};
use sluice::runtime::Runtime;
use sluice_batch::model::{BatchStatus, Params};
use sluice_batch::step::NoProgress;
use sluice_batch::{JobRunner, RunOptions};
use sluice_core::{Clock, ManualClock};
use sluice_testkit::{ItemsShape, SimConfig, SimUpstream};

use crate::support::{KEY, Node, init_logs};

/// Settings from `text` (with `{SIM}`), on `clock`, the service key in
/// `AIRKOREA_KEY`.
fn settings(text: &str, sim: &SimUpstream, clock: &ManualClock) -> Result<Settings, String> {
    let src = Source {
        file: PathBuf::from("kit.toml"),
        text: text.replace("{SIM}", &sim.base_url()),
    };
    let env = Env {
        var: &|n| (n == "AIRKOREA_KEY").then(|| KEY.to_owned()),
        clock: Arc::new(clock.clone()),
        secrets_optional: false,
    };
    src.parse()
        .map_err(|e| e.to_string())?
        .resolve(&src, &env)
        .map_err(|e| e.to_string())
}

fn sim_config(rows: usize, quota: Option<u64>) -> SimConfig {
    SimConfig {
        latency: Duration::ZERO,
        service_key: KEY.to_owned(),
        daily_quota: quota,
        rows_per_sido: rows,
        ..Default::default()
    }
}

const PORTAL: &str = r#"
[[upstream]]
name = "portal"
preset = "data.go.kr"
base_url = "{SIM}"
secret_query = { serviceKey = { env = "AIRKOREA_KEY" } }
rate_limit = { per_day = 100 }
retries = { max = 0 }
"#;

/// The acceptance case: 25,000 rows, 100 a page, a quota of 100 calls a day with
/// 10 kept for the gateway: 90 pages a day, so the load takes three days; each
/// day's run suspends with the reset time, the next resumes where it stopped,
/// and every row lands exactly once with every page fetched exactly once.
#[tokio::test]
async fn a_dataset_larger_than_the_quota_loads_over_three_days_every_row_once() {
    init_logs();
    const ROWS: usize = 25_000;
    let sim = SimUpstream::start(sim_config(ROWS, Some(100)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.db");
    let repo = dir.path().join("repo.db");
    // The shipped example, pointed at the simulator and the temporary directory.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/portal-load.toml"
    ))
    .unwrap();
    let text = example
        .replace(
            "https://apis.data.go.kr/B552584/ArpltnInforInqireSvc",
            "{SIM}",
        )
        .replace("portal-repo.db", &repo.display().to_string())
        .replace("portal.db", &db.display().to_string())
        .replace("DATA_GO_KR_KEY", "AIRKOREA_KEY");
    // Two in the afternoon in Seoul, so that the reset is hours away.
    let clock = ManualClock::new(1_764_133_200_000);
    let rt = Runtime::new(settings(&text, &sim, &clock).unwrap_or_else(|e| panic!("{e}")));
    let repo = rt.repository().await.unwrap();
    let params = Params::from([("sido".to_owned(), "서울".to_owned())]);
    let mut days = Vec::new();
    for day in 1..=4 {
        let job = rt.job("portal-mirror", &params).unwrap();
        let report = JobRunner::new(repo.clone())
            .run(job, &params, RunOptions::default(), &NoProgress)
            .await
            .unwrap();
        let e = &report.execution;
        days.push((e.status, sim.quota_used(), report.steps[0].counts.written));
        if e.status == BatchStatus::Completed {
            break;
        }
        assert_eq!(
            e.status,
            BatchStatus::Stopped,
            "day {day}: {}",
            e.exit_message
        );
        assert!(report.suspended, "day {day}: {}", e.exit_message);
        // The message says what is spent and when it comes back.
        let m = &e.exit_message;
        assert!(
            m.contains("upstream portal has 10 calls left today, within the reserve of 10")
                && m.contains("it resets at"),
            "{m}"
        );
        let at = report.resume_at_ms.expect("a resume time");
        assert!(at > clock.now_millis(), "the reset lies ahead: {at}");
        // The reset is a Seoul midnight (UTC 15:00).
        assert_eq!(at.rem_euclid(86_400_000), 15 * 3_600_000, "{at}");
        // The next day, on both sides.
        clock.set(at + 1_000);
        sim.advance_days(1);
    }
    let statuses: Vec<_> = days.iter().map(|d| d.0).collect();
    assert_eq!(
        statuses,
        [
            BatchStatus::Stopped,
            BatchStatus::Stopped,
            BatchStatus::Completed
        ],
        "{days:?}"
    );
    // 90 pages a day, 70 on the third; never more than the budget less the reserve.
    let used: Vec<_> = days.iter().map(|d| d.1).collect();
    assert_eq!(used, [90, 90, 70], "{days:?}");
    assert_eq!(sim.calls(), 250, "every page fetched exactly once");
    // Every row once: the primary key would refuse a second copy, and the
    // counts add up across the three executions of one instance.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let (n, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT stationName) FROM air")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((n, distinct), (ROWS as i64, ROWS as i64));
    assert_eq!(days.last().unwrap().2, ROWS as u64, "{days:?}");
}

/// The upstream's own quota code (22, its budget spent elsewhere) suspends a
/// load too, naming the code and its meaning, instead of failing it.
#[tokio::test]
async fn the_portals_quota_code_suspends_the_load_with_the_reset_time() {
    init_logs();
    // The portal's own quota (5) is smaller than what sluice was told (100).
    let sim = SimUpstream::start(sim_config(1_000, Some(5)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"{PORTAL}
[repository]
url = "sqlite://{repo}"

[[job]]
name = "mirror"

[[job.step]]
name = "load"
reader = {{ kind = "http_pages", upstream = "portal", path = "/getCtprvnRltmMesureDnsty", query = {{ sidoName = "서울" }}, size = 100 }}
writer = {{ kind = "jsonl", path = "{out}" }}
"#,
        repo = dir.path().join("repo.db").display(),
        out = dir.path().join("out.jsonl").display(),
    );
    let clock = ManualClock::new(1_764_133_200_000);
    let rt = Runtime::new(settings(&text, &sim, &clock).unwrap_or_else(|e| panic!("{e}")));
    let repo = rt.repository().await.unwrap();
    let params = Params::new();
    let report = JobRunner::new(repo.clone())
        .run(
            rt.job("mirror", &params).unwrap(),
            &params,
            RunOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
    let e = &report.execution;
    assert_eq!(e.status, BatchStatus::Stopped, "{}", e.exit_message);
    assert!(report.suspended);
    let m = &e.exit_message;
    assert!(
        m.contains("page 6")
            && m.contains("reports its daily quota spent")
            && m.contains("22")
            && m.contains("LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR")
            && m.contains("it resets at"),
        "{m}"
    );
    // The five pages read are committed: 500 rows written, and the checkpoint
    // points at page 6.
    assert_eq!(report.steps[0].counts.written, 500, "{:?}", report.steps[0]);
    // The next day it finishes, fetching only the pages left.
    clock.set(report.resume_at_ms.unwrap() + 1_000);
    sim.advance_days(1);
    sim.reset_calls();
    let report = JobRunner::new(repo)
        .run(
            rt.job("mirror", &params).unwrap(),
            &params,
            RunOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
    // Five pages were left, which the portal's quota of five allows.
    assert_eq!(
        report.execution.status,
        BatchStatus::Completed,
        "{}",
        report.execution.exit_message
    );
    assert_eq!(sim.calls(), 5);
    let lines = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1_000);
}

/// Through the gateway, the preset gives clients one shape: XML becomes JSON,
/// a lone item and an empty result become lists, counts become numbers; a bad
/// key's error names the code and what it means.
#[tokio::test]
async fn the_preset_normalises_bodies_and_explains_codes_through_the_gateway() {
    init_logs();
    let sim = SimUpstream::start(SimConfig {
        items_shape: ItemsShape::Item,
        ..sim_config(21, None)
    })
    .await
    .unwrap();
    let config = r#"
[[upstream]]
name = "portal"
preset = "data.go.kr"
base_url = "{SIM}"
secret_query = { serviceKey = { env = "AIRKOREA_KEY" } }

[[upstream]]
name = "badkey"
preset = "data.go.kr"
base_url = "{SIM}"
secret_query = { serviceKey = { env = "ADMIN_TOKEN" } }
retries = { max = 0 }

[[route]]
name = "air"
path = "/air/{*rest}"
upstream = "portal"
ttl = "1m"

[[route]]
name = "bad"
path = "/bad/{*rest}"
upstream = "badkey"
ttl = "1m"
"#;
    let node = Node::start(&sim, config).await;
    // XML (no returnType), page 3 of 10 rows: one lone row, sent as an object.
    for (query, rows) in [
        ("pageNo=3&numOfRows=10", 1),
        ("pageNo=1&numOfRows=10", 10),
        ("pageNo=9&numOfRows=10", 0),
    ] {
        for fmt in ["", "&returnType=json"] {
            let r = node
                .get(&format!(
                    "/air/getCtprvnRltmMesureDnsty?sidoName=%EC%84%9C%EC%9A%B8&{query}{fmt}"
                ))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(
                r.header("content-type").starts_with("application/json"),
                "{:?}",
                r.headers
            );
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let body = &v["response"]["body"];
            assert_eq!(
                body["items"].as_array().map(Vec::len),
                Some(rows),
                "{query}{fmt}: {}",
                r.body
            );
            assert_eq!(body["totalCount"], serde_json::json!(21), "{}", r.body);
            assert_eq!(body["numOfRows"], serde_json::json!(10), "{}", r.body);
        }
    }
    let r = node
        .get("/bad/getCtprvnRltmMesureDnsty?sidoName=%EC%84%9C%EC%9A%B8")
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains(r#""upstream_code":"30""#), "{}", r.body);
    // The operator's log says what the code means.
    let logs = crate::support::logs();
    assert!(
        logs.contains("wrong key, or the key encoded twice"),
        "no meaning logged"
    );
    assert!(!r.body.contains(KEY), "{}", r.body);
}

/// Preset mistakes are located errors.
#[test]
fn preset_errors_name_the_key_and_the_choices() {
    let clock = ManualClock::starting_now();
    let check = |upstream: &str| {
        let text = format!(
            "[[upstream]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9\"\n{upstream}\n\
             [[route]]\npath = \"/p/{{*rest}}\"\nupstream = \"p\"\nttl = \"1m\"\n"
        );
        let src = Source {
            file: PathBuf::from("kit.toml"),
            text,
        };
        let env = Env {
            var: &|_| None,
            clock: Arc::new(clock.clone()),
            secrets_optional: false,
        };
        match src.parse() {
            Err(e) => e.to_string(),
            Ok(raw) => match raw.resolve(&src, &env) {
                Err(e) => e.to_string(),
                Ok(_) => String::new(),
            },
        }
    };
    let e = check("preset = \"data.gov.kr\"");
    assert!(
        e.contains("kit.toml:4") && e.contains("unknown preset \"data.gov.kr\"; known: data.go.kr"),
        "{e}"
    );
    let e = check("preset = \"data.go.kr\"\ncodes = { \"03\" = \"maybe\" }");
    assert!(
        e.contains("upstream[0].codes.03") && e.contains("use ok, empty, retry, quota or fail"),
        "{e}"
    );
    let e = check("codes = { \"03\" = \"fail\" }");
    assert!(e.contains("set `preset` too"), "{e}");
    assert_eq!(
        check(
            "preset = \"data.go.kr\"\ncodes = { \"03\" = \"fail\", \"77\" = \"retry\" }\nnormalize = false"
        ),
        ""
    );
}

/// Through `sluice serve`: a suspended load's `job.run` task is put back on the
/// queue delayed until a minute after the quota's reset (the next Seoul
/// midnight), its attempt not counted, and the execution is STOPPED with the
/// reason: the queue resumes it after the reset by itself.
#[tokio::test]
async fn on_the_queue_a_suspended_load_waits_for_the_reset() {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    init_logs();
    let sim = SimUpstream::start(sim_config(5_000, None)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_testkit::free_port();
    let cfg = dir.path().join("sluice.toml");
    let admin = "kit-admin-token-0123456789";
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token = {{ env = "T_ADMIN" }}

[[upstream]]
name = "portal"
preset = "data.go.kr"
base_url = "{base}"
secret_query = {{ serviceKey = {{ env = "T_KEY" }} }}
rate_limit = {{ per_day = 30 }}

[repository]
url = "sqlite://{repo}"

[[job]]
name = "mirror"

[[job.step]]
name = "load"
reader = {{ kind = "http_pages", upstream = "portal", path = "/getCtprvnRltmMesureDnsty", query = {{ sidoName = "서울" }}, size = 100, quota_reserve = 10 }}
writer = {{ kind = "jsonl", path = "{out}" }}
"#,
            base = sim.base_url(),
            repo = dir.path().join("repo.db").display(),
            out = dir.path().join("out.jsonl").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(crate::bin::BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .envs([("T_ADMIN", admin), ("T_KEY", KEY), ("RUST_LOG", "warn")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{port}/api/v1{p}");
    let call = |m: reqwest::Method, p: String| {
        let req = client.request(m, url(&p)).bearer_auth(admin);
        async move {
            let r = req.send().await.ok()?;
            serde_json::from_str::<serde_json::Value>(&r.text().await.ok()?).ok()
        }
    };
    let end = Instant::now() + Duration::from_secs(60);
    let started = loop {
        if let Some(v) = call(reqwest::Method::POST, "/jobs/mirror/runs".into()).await
            && v["task"].is_string()
        {
            break v;
        }
        assert!(Instant::now() < end, "serve never took the run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let task = started["task"].as_str().unwrap().to_owned();
    let status = loop {
        let v = call(reqwest::Method::GET, format!("/queues/jobs/tasks/{task}"))
            .await
            .unwrap_or_default();
        if v["state"] == "delayed" {
            break v;
        }
        assert!(Instant::now() < end, "the task was never delayed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exec = call(
        reqwest::Method::GET,
        "/executions?job=mirror&limit=1".into(),
    )
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let e = &exec["items"][0];
    assert_eq!(e["status"], "STOPPED", "{exec}");
    assert!(
        e["exit_message"]
            .as_str()
            .unwrap_or("")
            .contains("within the reserve of 10"),
        "{exec}"
    );
    // 20 pages of 100: the budget of 30 less the reserve of 10.
    assert_eq!(sim.calls(), 20);
    // Not before a minute after the next Seoul midnight (15:00 UTC).
    let not_before =
        chrono::DateTime::parse_from_rfc3339(status["task"]["not_before"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let mut reset = now - now.rem_euclid(day) + 15 * 3_600_000;
    if reset <= now {
        reset += day;
    }
    assert!(
        (not_before - (reset + 60_000)).abs() < 5_000,
        "not before {not_before}, reset {reset}: {status}"
    );
    assert_eq!(
        status["task"]["attempt"], 0,
        "the attempt is not counted: {status}"
    );
}
