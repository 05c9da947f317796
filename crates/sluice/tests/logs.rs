//! Log analysis through the binary (issue #16 part 2): the shipped examples
//! check and run (`logs-nginx.toml` on its sample log, `logs-sluice.toml` on the
//! access log of a real `sluice serve`), a run killed between the stats table's
//! commit and the repository's gives the stats of an uninterrupted run, and a
//! `when = "query"` alert rule over the stats table fires to a webhook and
//! resolves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_testkit::{WebhookReceiver, WebhookRequest};

use crate::bin::{BIN, KillOnDrop, after_lease, sim, terminate, text, wait_until};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

/// `sluice ARGS` in `dir`, logging warnings only.
fn sluice_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("AIRKOREA_KEY", "logs-test-key")
        .env_remove("SLUICE_FAULT_AFTER_TARGET_COMMIT")
        .output()
        .unwrap()
}

/// `examples/NAME` (and the sample log) copied into `dir` under the same
/// relative paths.
fn copy_example(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("examples/data")).unwrap();
    std::fs::copy(
        format!("{EXAMPLES}/data/nginx-access.log"),
        dir.join("examples/data/nginx-access.log"),
    )
    .unwrap();
    let to = dir.join("examples").join(name);
    std::fs::copy(format!("{EXAMPLES}/{name}"), &to).unwrap();
    to
}

async fn sqlite_rows<T>(db: &Path, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_example_checks_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "logs-nginx.toml");
    let out = sluice_in(dir.path(), &["check", "-c", "examples/logs-nginx.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = sluice_in(
        dir.path(),
        &[
            "job",
            "run",
            "nginx-stats",
            "--local",
            "-c",
            "examples/logs-nginx.toml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // What the sample holds, counted here.
    let sample = std::fs::read_to_string(format!("{EXAMPLES}/data/nginx-access.log")).unwrap();
    let good: Vec<&str> = sample.lines().filter(|l| l.contains("\" ")).collect();
    let bad = sample.lines().count() - good.len();
    assert_eq!(bad, 1);
    let errors = good.iter().filter(|l| l.contains("\" 502 ")).count() as i64;
    let not_found = good.iter().filter(|l| l.contains("\" 404 ")).count() as i64;
    let rows: Vec<(i64, i64, i64, f64)> = sqlite_rows(
        &dir.path().join("logs.db"),
        "SELECT SUM(requests), SUM(errors), SUM(not_found_count), MAX(p99) FROM nginx_stats",
    )
    .await;
    assert_eq!(rows[0].0, good.len() as i64);
    assert_eq!((rows[0].1, rows[0].2), (errors, not_found));
    assert!(rows[0].3 > 0.0);
    let t = text(&out);
    assert!(t.contains("skipped") && t.contains("COMPLETED"), "{t}");
    // Again: nothing new in the log, nothing counted twice.
    let out = sluice_in(
        dir.path(),
        &[
            "job",
            "run",
            "nginx-stats",
            "--local",
            "--rerun",
            "-c",
            "examples/logs-nginx.toml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let again: Vec<(i64, i64, i64, f64)> = sqlite_rows(
        &dir.path().join("logs.db"),
        "SELECT SUM(requests), SUM(errors), SUM(not_found_count), MAX(p99) FROM nginx_stats",
    )
    .await;
    assert_eq!(again, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sluice_example_counts_a_real_gateway_access_log() {
    crate::support::init_logs();
    let sim = sim(Duration::from_millis(2), "logs-test-key").await;
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_testkit::free_port();
    let cfg = copy_example(dir.path(), "logs-sluice.toml");
    let toml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace(
            "http://127.0.0.1:9000/B552584/ArpltnInforInqireSvc",
            &sim.base_url(),
        );
    std::fs::write(&cfg, toml).unwrap();
    let out = sluice_in(dir.path(), &["check", "-c", "examples/logs-sluice.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let child = Command::new(BIN)
        .args(["serve", "-c", "examples/logs-sluice.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env("AIRKOREA_KEY", "logs-test-key")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(
        30,
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        || "sluice serve did not listen".into(),
    );
    let air = format!("{base}/air/getCtprvnRltmMesureDnsty?sidoName=x&returnType=json");
    for _ in 0..4 {
        assert_eq!(client.get(&air).send().await.unwrap().status(), 200);
    }
    for _ in 0..2 {
        let r = client.get(format!("{base}/nowhere")).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let log = dir.path().join("access.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        10,
        || read().lines().count() >= 6,
        || format!("six lines in the access log:\n{}", read()),
    );
    terminate(child);
    let out = sluice_in(
        dir.path(),
        &[
            "job",
            "run",
            "access-stats",
            "--local",
            "-c",
            "examples/logs-sluice.toml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<(String, i64, i64, i64, f64, Option<f64>)> = sqlite_rows(
        &dir.path().join("logs.db"),
        "SELECT route, SUM(requests), SUM(errors), SUM(hit_count), \
         CAST(SUM(hit_count) AS REAL) / SUM(requests), MAX(p95) FROM access_stats \
         GROUP BY route ORDER BY route",
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(&rows[0].0, "-");
    assert_eq!((rows[0].1, rows[0].3), (2, 0));
    assert_eq!(&rows[1].0, "air");
    assert_eq!(
        (rows[1].1, rows[1].2, rows[1].3),
        (4, 0, 3),
        "a miss, three hits"
    );
    assert!((rows[1].4 - 0.75).abs() < 1e-9);
    assert!(rows[1].5.is_some_and(|p| p > 0.0));
}

/// `n` nginx lines over a few minutes.
fn write_nginx_log(path: &Path, n: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let sec = i / 20;
        let status = if i.is_multiple_of(23) { 503 } else { 200 };
        let rt = ((i * 7919) % 2000 + 1) as f64 / 1000.0;
        writeln!(
            f,
            "10.1.0.{} - - [04/Dec/2026:11:{:02}:{:02} +0000] \"{} /p{}?i={i} HTTP/1.1\" {status} 10 \"-\" \"t\" {rt:.3} -",
            i % 100,
            (sec / 60) % 60,
            sec % 60,
            if i.is_multiple_of(4) { "POST" } else { "GET" },
            i % 9
        )
        .unwrap();
    }
    f.flush().unwrap();
}

/// A job reading `dir/access.log` into `dir/stats.db`, repository `dir/repo.db`.
fn stats_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[repository]
url = "sqlite://{d}/repo.db"
lease = "2s"

[[job]]
name = "web-stats"

[[job.step]]
name = "stats"
chunk = 500
reader = {{ kind = "log", path = "{d}/access.log" }}
writer = {{ kind = "log_stats", url = "sqlite://{d}/stats.db", table = "web_stats", window = "1m", group_by = ["method"], value = "request_time", top = {{ field = "path", n = 3 }} }}
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    cfg
}

type StatRow = (i64, String, i64, i64, f64, f64, f64, String);

async fn stats(dir: &Path) -> Vec<StatRow> {
    sqlite_rows(
        &dir.join("stats.db"),
        "SELECT window_start, method, requests, errors, p50, p95, p99, top FROM web_stats \
         ORDER BY window_start, method",
    )
    .await
}

fn run_stats(cfg: &Path, fault: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(["job", "run", "web-stats", "--local", "-c"])
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .env_remove("SLUICE_FAULT_AFTER_TARGET_COMMIT");
    if let Some(n) = fault {
        c.env("SLUICE_FAULT_AFTER_TARGET_COMMIT", n);
    }
    c.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_two_commits_the_stats_match_an_uninterrupted_run() {
    const LINES: u64 = 4000;
    let whole = tempfile::tempdir().unwrap();
    write_nginx_log(&whole.path().join("access.log"), LINES);
    let out = run_stats(&stats_config(whole.path()), None);
    assert!(out.status.success(), "{}", text(&out));
    let want = stats(whole.path()).await;
    assert_eq!(
        want.iter().map(|r| r.2).sum::<i64>(),
        LINES as i64,
        "{want:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_nginx_log(&dir.path().join("access.log"), LINES);
    let cfg = stats_config(dir.path());
    // Dies right after chunk 3 committed in the stats database, before the
    // repository recorded it.
    let out = run_stats(&cfg, Some("3"));
    assert!(
        !out.status.success(),
        "the hook did not fire: {}",
        text(&out)
    );
    let part = stats(dir.path()).await;
    assert_eq!(part.iter().map(|r| r.2).sum::<i64>(), 1500);
    let out = after_lease(|| run_stats(&cfg, None));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("resuming from the target's checkpoint"),
        "{}",
        text(&out)
    );
    assert_eq!(stats(dir.path()).await, want, "every line counted once");
}

fn with_status<'a>(r: &'a [WebhookRequest], status: &str) -> Vec<&'a WebhookRequest> {
    r.iter().filter(|r| r.json()["status"] == status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_rule_over_the_stats_table_fires_and_resolves() {
    let hook = WebhookReceiver::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_nginx_log(&dir.path().join("access.log"), 1000);
    let cfg = stats_config(dir.path());
    let out = run_stats(&cfg, None);
    assert!(out.status.success(), "{}", text(&out));
    let errors: i64 = stats(dir.path())
        .await
        .iter()
        .filter(|r| r.1 == "GET")
        .map(|r| r.3)
        .sum();
    assert!(errors > 0);
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str(&format!(
        r#"
[alerts]
interval = "1s"

[[alerts.rule]]
name = "log-errors"
when = "query"
database = "sqlite://{d}/stats.db"
query = "SELECT method, SUM(errors) AS errors, 'server errors on ' || method AS summary FROM web_stats WHERE method = 'GET' GROUP BY method HAVING SUM(errors) > 0"
severity = "critical"
send_to = ["ops"]

[[alerts.webhook]]
name = "ops"
url = "{url}"
"#,
        d = dir.path().display(),
        url = hook.url()
    ));
    std::fs::write(&cfg, toml).unwrap();
    let check = crate::bin::check(&cfg, &[]);
    assert!(check.status.success(), "{}", text(&check));
    let port = sluice_testkit::free_port();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let got = hook
        .wait_until(Duration::from_secs(60), |r| {
            !with_status(r, "firing").is_empty()
        })
        .await;
    let m = with_status(&got, "firing")[0].json();
    let a = &m["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "log-errors");
    assert_eq!(a["labels"]["method"], "GET");
    assert_eq!(a["labels"]["errors"], errors.to_string());
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["annotations"]["summary"], "server errors on GET");

    // The row no longer comes back: resolved.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("stats.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE web_stats SET errors = 0")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let got = hook
        .wait_until(Duration::from_secs(60), |r| {
            !with_status(r, "resolved").is_empty()
        })
        .await;
    let r = with_status(&got, "resolved")[0].json();
    assert_eq!(r["alerts"][0]["labels"]["method"], "GET");
    terminate(child);
}

#[test]
fn a_bad_query_rule_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    let repo = format!("sqlite://{}/repo.db", dir.path().display());
    for (rule, says) in [
        (
            "when = \"query\"\nquery = \"SELECT 1\"",
            "alerts.rule[0].database: query needs `database`",
        ),
        (
            "when = \"query\"\ndatabase = \"sqlite://s.db\"",
            "alerts.rule[0].query: query needs `query`",
        ),
        (
            "when = \"query\"\ndatabase = \"redis://:hunter2@h/0\"\nquery = \"SELECT 1\"",
            "alerts.rule[0].database: unsupported database URL",
        ),
        (
            "when = \"query\"\ndatabase = \"sqlite://s.db\"\nquery = \"SELECT 1\"\nabove = 3",
            "alerts.rule[0].above: `above` does not apply to query",
        ),
        (
            "when = \"job_failed\"\nquery = \"SELECT 1\"",
            "alerts.rule[0].query: `query` does not apply to job_failed",
        ),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "[repository]\nurl = \"{repo}\"\n\n[alerts]\n\n[[alerts.rule]]\nname = \"r\"\n{rule}\n"
            ),
        )
        .unwrap();
        let out = crate::bin::check(&cfg, &[]);
        let t = text(&out);
        assert!(!out.status.success() && t.contains(says), "{rule}: {t}");
        assert!(!t.contains("hunter2"), "{t}");
    }
}
