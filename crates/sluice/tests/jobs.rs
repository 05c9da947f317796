//! `sluice job …` end to end: the binary, a config, real files and databases.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn sluice(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("job")
        .arg("-c")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `n` rows: id, station, ts, pm10, pm25, a 40-char note.
fn write_csv(path: &Path, n: u64, bad_rows: &[u64]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,station,ts,pm10,pm25,note").unwrap();
    for i in 1..=n {
        if bad_rows.contains(&i) {
            writeln!(f, "{i},broken row").unwrap();
            continue;
        }
        writeln!(
            f,
            "{i},station-{},2026-11-25 {:02}:00,{},{}.5,{:0>40}",
            i % 500,
            i % 24,
            i % 150,
            i % 80,
            i
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn config(dir: &Path, csv: &Path, data_url: &str, extra_step: &str) -> PathBuf {
    let cfg = dir.join("jobs.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[repository]
url = "sqlite://{repo}"
lease = "2s"

[[job]]
name = "air-load"
params = {{ file = "{csv}" }}

[[job.step]]
name = "load"
chunk = 1000
skip_limit = 5
retry = {{ max = 2, backoff = "50ms" }}
reader = {{ kind = "csv", path = "{{{{params.file}}}}" }}
processor = {{ kind = "jq", expr = "{{id: (.id | tonumber), station, ts, pm10: (.pm10 | tonumber), pm25: (.pm25 | tonumber), note}}" }}
writer = {{ kind = "sql_upsert", url = "{data_url}", table = "air_quality", key = ["id"], create = true, columns = ["id BIGINT NOT NULL", "station TEXT NOT NULL", "ts TEXT", "pm10 DOUBLE PRECISION", "pm25 DOUBLE PRECISION", "note TEXT"] }}
{extra_step}"#,
            repo = dir.join("repo.db").display(),
            csv = csv.display(),
        ),
    )
    .unwrap();
    cfg
}

async fn sqlite_rows(db: &Path) -> (i64, i64, f64) {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let row = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(id), 0), COALESCE(SUM(pm25), 0) FROM air_quality",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn expected_sums(n: u64, bad: &[u64]) -> (i64, i64, f64) {
    let ids = (1..=n).filter(|i| !bad.contains(i));
    let (mut count, mut sum, mut pm25) = (0i64, 0i64, 0f64);
    for i in ids {
        count += 1;
        sum += i as i64;
        pm25 += (i % 80) as f64 + 0.5;
    }
    (count, sum, pm25)
}

#[tokio::test]
async fn a_csv_job_loads_skips_bad_rows_and_does_not_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("air.csv");
    write_csv(&csv, 5_000, &[17, 4242]);
    let data = dir.path().join("data.db");
    let cfg = config(
        dir.path(),
        &csv,
        &format!("sqlite://{}", data.display()),
        "",
    );
    let out = sluice(&cfg, &["run", "--local", "air-load"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    // read 5000, 2 skipped (bad rows), 4998 written, 5 commits
    let line = stdout.lines().find(|l| l.starts_with("load ")).unwrap();
    let nums: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &nums[1..],
        ["COMPLETED", "5000", "4998", "0", "4998", "2", "5", "0"],
        "{line}"
    );
    assert_eq!(sqlite_rows(&data).await, expected_sums(5_000, &[17, 4242]));

    let skips = sluice(&cfg, &["skips", "1"]);
    let s = String::from_utf8_lossy(&skips.stdout);
    assert!(s.contains("#17") && s.contains("#4242"), "{}", text(&skips));

    // COMPLETED: not again unless asked.
    let again = sluice(&cfg, &["run", "--local", "air-load"]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--rerun"));
    let rerun = sluice(&cfg, &["run", "--local", "air-load", "--rerun"]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    assert_eq!(
        sqlite_rows(&data).await,
        expected_sums(5_000, &[17, 4242]),
        "upserts: no duplicates"
    );

    // New parameters are a new instance.
    let other = dir.path().join("other.csv");
    write_csv(&other, 10, &[]);
    let out = sluice(
        &cfg,
        &[
            "run",
            "--local",
            "air-load",
            "-p",
            &format!("file={}", other.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let history = sluice(&cfg, &["history", "air-load"]);
    assert_eq!(
        String::from_utf8_lossy(&history.stdout)
            .matches("COMPLETED")
            .count(),
        3,
        "{}",
        text(&history)
    );

    // Too many bad rows: the step fails naming the limit and the last reason.
    let worse = dir.path().join("worse.csv");
    write_csv(&worse, 100, &[1, 2, 3, 4, 5, 6, 7]);
    let out = sluice(
        &cfg,
        &[
            "run",
            "--local",
            "air-load",
            "-p",
            &format!("file={}", worse.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("skip limit of 5 exceeded") && t.contains("position 6"),
        "{t}"
    );
}

/// `sluice job -c cfg run air-load` in the background, output piped.
fn spawn_run(cfg: &Path) -> std::process::Child {
    Command::new(BIN)
        .args(["job", "-c"])
        .arg(cfg)
        .args(["run", "--local", "air-load"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A temp dir with a `rows`-row CSV and a config loading it into `data.db`.
struct Load {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    data: PathBuf,
    repo: PathBuf,
}

fn load(rows: u64) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    write_csv(&csv, rows, &[]);
    let data = dir.path().join("data.db");
    let cfg = config(
        dir.path(),
        &csv,
        &format!("sqlite://{}", data.display()),
        "",
    );
    let repo = dir.path().join("repo.db");
    Load {
        dir,
        cfg,
        data,
        repo,
    }
}

/// Waits until committed chunks hold `n` rows (the child must still be running).
async fn wait_written(repo: &Repo, n: u64, child: &mut std::process::Child) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let w = repo.written().await;
        if w >= n {
            return w;
        }
        assert!(Instant::now() < deadline, "the load never got to {n} rows");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the load ended before {n} rows were committed"
        );
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
}

/// `run` again until the dead process's lease has expired (exit 3 meanwhile).
fn run_after_lease(cfg: &Path) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = sluice(cfg, &["run", "--local", "air-load"]);
        if out.status.code() != Some(3) {
            return out;
        }
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already running"),
            "{}",
            text(&out)
        );
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test]
async fn a_killed_load_restarts_from_its_last_chunk_and_loads_every_row_once() {
    const ROWS: u64 = 200_000;
    let Load {
        dir: _dir,
        cfg,
        data,
        repo,
    } = load(ROWS);
    let mut child = spawn_run(&cfg);
    // Kill it once a good part is committed.
    let committed = wait_written(&Repo::Sqlite(repo.clone()), 40_000, &mut child).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(committed < ROWS, "killed too late: {committed}");

    // Running again: AlreadyRunning until the dead process's lease expires, then it
    // resumes (no manual clean-up).
    let out = run_after_lease(&cfg);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resumed execution 1"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("load ")).unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    // read, processed, filtered, written, skipped, commits, rollbacks
    assert_eq!(
        &nums[..5],
        [ROWS, ROWS, 0, ROWS, 0],
        "counts stay consistent: {line}"
    );
    assert_eq!(
        nums[5],
        ROWS / 1000,
        "one commit per chunk across both runs: {line}"
    );
    assert_eq!(sqlite_rows(&data).await, expected_sums(ROWS, &[]));

    let status = sluice(&cfg, &["status", "1"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("ABANDONED"),
        "{}",
        text(&status)
    );
}

/// Rows written by committed chunks, read from the repository.
async fn written_so_far(repo: &Path) -> u64 {
    use sqlx::Row;
    if !repo.exists() {
        return 0;
    }
    let Ok(pool) = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", repo.display())).await
    else {
        return 0;
    };
    let n = sqlx::query("SELECT COALESCE(MAX(written_count), 0) FROM batch_step_execution")
        .fetch_one(&pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(0);
    pool.close().await;
    n as u64
}

/// `examples/jobs.toml` in `dir`, its upstream at `base_url`, its databases in `dir`,
/// `page` rows a page.
fn example_jobs(dir: &Path, base_url: &str, page: u64) -> PathBuf {
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs.toml"),
    )
    .unwrap()
    .replace(
        "http://127.0.0.1:9000/B552584/ArpltnInforInqireSvc",
        base_url,
    )
    .replace(
        "sqlite://sluice.db",
        &format!("sqlite://{}", dir.join("repo.db").display()),
    )
    .replace(
        "sqlite://data.db",
        &format!("sqlite://{}", dir.join("data.db").display()),
    )
    .replace("size = 1000", &format!("size = {page}"));
    let cfg = dir.join("jobs.toml");
    std::fs::write(&cfg, example).unwrap();
    cfg
}

/// `job run --local air-quality-load -p sido=서울` with the test key.
fn run_air_load(cfg: &Path, log: &str) -> Output {
    Command::new(BIN)
        .args(["job", "-c"])
        .arg(cfg)
        .args(["run", "--local", "air-quality-load", "-p", "sido=서울"])
        .env("AIRKOREA_KEY", crate::support::KEY)
        .env("RUST_LOG", log)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_job_over_hostile_pages_fails_cleanly_and_leaks_nothing() {
    crate::support::init_logs();
    let h = sluice_testkit::HostileUpstream::start().await.unwrap();
    for behaviour in ["deep-xml/8000", "deep-json/200000", "echo-error-xml"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = example_jobs(dir.path(), &format!("{}/{behaviour}", h.base_url()), 1000);
        let out = run_air_load(&cfg, "info");
        let all = text(&out);
        // An exit code, not a signal: the process did not crash.
        assert!(
            matches!(out.status.code(), Some(c) if c != 0),
            "{behaviour}: {all}"
        );
        let want = if behaviour.starts_with("deep") {
            "deeper than 128"
        } else {
            "error code 30"
        };
        assert!(all.contains(want), "{behaviour}: {all}");
        assert!(all.contains("FAILED"), "{behaviour}: {all}");
        crate::support::assert_no_secret(behaviour, &all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_portal_job_loads_every_page_through_the_upstream() {
    crate::support::init_logs();
    let sim = sluice_testkit::SimUpstream::start(sluice_testkit::SimConfig {
        latency: Duration::from_millis(5),
        service_key: crate::support::KEY.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_jobs(dir.path(), &sim.base_url(), 7);
    // The total the portal reports for the province, asked directly.
    let body: serde_json::Value = serde_json::from_str(&reqwest::get(format!(
        "{}/getCtprvnRltmMesureDnsty?serviceKey={}&returnType=json&sidoName=%EC%84%9C%EC%9A%B8&numOfRows=1&pageNo=1",
        sim.base_url(),
        crate::support::KEY_ENCODED
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap())
    .unwrap();
    let total = body["response"]["body"]["totalCount"].as_u64().unwrap();
    assert!(total > 7, "the province should span several pages: {total}");

    let out = run_air_load(&cfg, "warn");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let load = stdout.lines().find(|l| l.starts_with("load ")).unwrap();
    let counts: Vec<u64> = load
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    // read, processed, filtered, written: every item of every page, once.
    assert_eq!(&counts[..4], [total, total, 0, total], "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("prune ") && l.contains("COMPLETED")),
        "{stdout}"
    );
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("data.db").display()
    ))
    .await
    .unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM air_quality")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    // The prune step then removed what is older than 30 days (the sim's readings may be).
    assert!(n as u64 <= total, "{n} rows of {total}");
    assert_eq!(sim.calls(), 1 + total.div_ceil(7), "one call per page");
    crate::support::assert_no_secret("job output", &text(&out));
}

#[tokio::test]
async fn stop_ends_a_run_at_a_chunk_boundary_and_restart_finishes_it() {
    const ROWS: u64 = 100_000;
    let Load {
        dir: _dir,
        cfg,
        data,
        repo,
    } = load(ROWS);
    let mut child = spawn_run(&cfg);
    wait_written(&Repo::Sqlite(repo), 10_000, &mut child).await;
    let stop = sluice(&cfg, &["stop", "1"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("STOPPED"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("load ")).unwrap();
    let written: u64 = line.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(
        written < ROWS && written.is_multiple_of(1000),
        "stopped at a chunk boundary: {line}"
    );
    assert_eq!(
        sqlite_rows(&data).await.0 as u64,
        written,
        "nothing after the boundary"
    );

    let out = sluice(&cfg, &["restart", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed execution 1"));
    assert_eq!(sqlite_rows(&data).await, expected_sums(ROWS, &[]));
}

/// Two `sluice job run` processes started together on one repository: exactly one
/// runs the instance, the other is told it is already running (exit 3).
async fn two_processes_one_instance(repo_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("air.csv");
    write_csv(&csv, 30_000, &[]);
    let data = dir.path().join("data.db");
    let cfg = config(
        dir.path(),
        &csv,
        &format!("sqlite://{}", data.display()),
        "",
    );
    let text_cfg = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("sqlite://{}", dir.path().join("repo.db").display()),
        repo_url,
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    // Create the schema first, so both start on equal terms.
    let list = sluice(&cfg, &["list"]);
    assert!(list.status.success(), "{}", text(&list));
    let spawn = || {
        Command::new(BIN)
            .args(["job", "-c"])
            .arg(&cfg)
            .args(["run", "--local", "air-load"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = tokio::task::spawn_blocking(move || {
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(3)], "{}\n---\n{}", text(&a), text(&b));
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("already running"),
        "{}",
        text(loser)
    );
    assert_eq!(sqlite_rows(&data).await, expected_sums(30_000, &[]));
    let history = sluice(&cfg, &["history", "air-load"]);
    assert_eq!(
        String::from_utf8_lossy(&history.stdout).lines().count(),
        1,
        "one execution only: {}",
        text(&history)
    );
}

#[tokio::test]
async fn two_processes_never_run_one_instance_at_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    two_processes_one_instance(&format!(
        "sqlite://{}",
        dir.path().join("shared.db").display()
    ))
    .await;
}

#[tokio::test]
async fn two_processes_never_run_one_instance_at_once_on_postgres() {
    let db = scratch_postgres().await;
    two_processes_one_instance(&db.url).await;
}

#[tokio::test]
async fn sigterm_stops_a_run_cleanly_and_it_restarts_at_once() {
    const ROWS: u64 = 100_000;
    let Load {
        dir: _dir,
        cfg,
        data,
        repo,
    } = load(ROWS);
    let mut child = spawn_run(&cfg);
    wait_written(&Repo::Sqlite(repo), 10_000, &mut child).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("STOPPED"),
        "{}",
        text(&out)
    );
    // No lease to wait for: the run released it.
    let again = sluice(&cfg, &["run", "--local", "air-load"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("resumed execution 1"));
    assert_eq!(sqlite_rows(&data).await, expected_sums(ROWS, &[]));
}

/// Where a test's repository (and, for the exactly-once test, its data) lives.
enum Repo {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Repo {
    fn url(&self) -> String {
        match self {
            Repo::Sqlite(p) => format!("sqlite://{}", p.display()),
            Repo::Postgres(u) => u.clone(),
        }
    }

    async fn written(&self) -> u64 {
        use sqlx::Row;
        let sql = "SELECT COALESCE(MAX(written_count), 0) FROM batch_step_execution";
        match self {
            Repo::Sqlite(p) => written_so_far(p).await,
            Repo::Postgres(u) => {
                let Ok(pool) = sqlx::PgPool::connect(u).await else {
                    return 0;
                };
                let n = sqlx::query(sql)
                    .fetch_one(&pool)
                    .await
                    .map(|r| r.get::<i64, _>(0))
                    .unwrap_or(0);
                pool.close().await;
                n as u64
            }
        }
    }

    async fn rows(&self) -> (i64, i64, f64) {
        use sqlx::Row;
        match self {
            Repo::Sqlite(p) => sqlite_rows(p).await,
            Repo::Postgres(u) => {
                let pool = sqlx::PgPool::connect(u).await.unwrap();
                let row = sqlx::query(
                    "SELECT COUNT(*), COALESCE(SUM(id), 0)::BIGINT, COALESCE(SUM(pm25), 0)::FLOAT8 FROM air_quality",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (row.get(0), row.get(1), row.get(2))
            }
        }
    }
}

/// A scratch PostgreSQL database for one test (the test kit's), dropped with it.
async fn scratch_postgres() -> sluice_testkit::db::ServerDb {
    sluice_testkit::db::ServerDb::new(sluice_testkit::db::Server::Postgres, "sluice_j").await
}

/// Plain appends (no key) into the repository's own database, killed with -9
/// mid-load and restarted: a chunk written twice would show as duplicate rows, so
/// only data and checkpoint committing in one transaction gets exactly `ROWS`.
async fn exactly_once_across_a_kill(repo: Repo) {
    const ROWS: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    write_csv(&csv, ROWS, &[]);
    let cfg = config(dir.path(), &csv, &repo.url(), "");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &format!("sqlite://{}", dir.path().join("repo.db").display()),
            &repo.url(),
        )
        .replace("kind = \"sql_upsert\"", "kind = \"sql_append\"")
        .replace("key = [\"id\"], ", "")
        .replace("\"id BIGINT NOT NULL\"", "\"id BIGINT\"");
    std::fs::write(&cfg, text_cfg).unwrap();
    let mut child = spawn_run(&cfg);
    wait_written(&repo, 40_000, &mut child).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run_after_lease(&cfg);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed execution 1"));
    assert_eq!(
        repo.rows().await,
        expected_sums(ROWS, &[]),
        "every row exactly once"
    );
}

#[tokio::test]
async fn appends_into_the_repository_database_are_exactly_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    exactly_once_across_a_kill(Repo::Sqlite(dir.path().join("repo.db"))).await;
}

#[tokio::test]
async fn appends_into_a_postgres_repository_are_exactly_once_across_a_kill() {
    let db = scratch_postgres().await;
    exactly_once_across_a_kill(Repo::Postgres(db.url.clone())).await;
}

/// Starts `sluice serve` (gateway and workers) on a free port.
fn serve(cfg: &Path) -> std::process::Child {
    let port = sluice_testkit::free_port();
    Command::new(BIN)
        .args(["serve", "-c"])
        .arg(cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sluice_cmd(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .env("SLUICE_TEST_ADMIN", "s3cret-s3cret-s3cret")
        .output()
        .unwrap()
}

/// `sluice job run` without `--local` enqueues a `job.run` task; the worker in
/// `sluice serve` runs it; a failed run lands in the dead-letter queue with its
/// error and `sluice queue dlq retry` runs it again.
#[tokio::test]
async fn job_runs_go_through_the_queue_to_a_serve_worker() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("air.csv");
    write_csv(&csv, 3_000, &[]);
    let data = dir.path().join("data.db");
    let cfg = config(
        dir.path(),
        &csv,
        &format!("sqlite://{}", data.display()),
        "",
    );
    let mut server = serve(&cfg);

    let out = sluice(&cfg, &["run", "air-load"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("enqueued job air-load as task"), "{stdout}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    assert_eq!(sqlite_rows(&data).await, expected_sums(3_000, &[]));
    let id = stdout
        .split("as task ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    let st = sluice_cmd(&cfg, &["task", "status", &id]);
    let st_out = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{}", text(&st));
    assert!(st_out.contains("state     completed"), "{st_out}");
    assert!(st_out.contains("\"status\":\"COMPLETED\""), "{st_out}");

    // A run that fails (its file is missing) is dead-lettered with its error.
    let missing = dir.path().join("later.csv");
    let p = format!("file={}", missing.display());
    let out = sluice(&cfg, &["run", "air-load", "-p", &p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("job air-load failed") && err.contains("later.csv"),
        "{err}"
    );
    let dlq = sluice_cmd(&cfg, &["queue", "dlq", "list"]);
    let dlq_out = String::from_utf8_lossy(&dlq.stdout);
    assert!(
        dlq_out.contains("job.run") && dlq_out.contains("later.csv"),
        "{dlq_out}"
    );
    let stats = sluice_cmd(&cfg, &["queue", "stats"]);
    assert!(
        String::from_utf8_lossy(&stats.stdout)
            .lines()
            .any(|l| l.starts_with("jobs") && l.trim_end().ends_with(" 1")),
        "{}",
        text(&stats)
    );

    // The file arrives; retrying the dead task runs the job to completion.
    write_csv(&missing, 500, &[]);
    let retry = sluice_cmd(&cfg, &["queue", "dlq", "retry", "--all"]);
    assert!(
        String::from_utf8_lossy(&retry.stdout).contains("1 task(s) back"),
        "{}",
        text(&retry)
    );
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = sluice_cmd(&cfg, &["queue", "stats"]);
        let line = String::from_utf8_lossy(&s.stdout)
            .lines()
            .find(|l| l.starts_with("jobs"))
            .map(str::to_owned)
            .unwrap_or_default();
        let nums: Vec<&str> = line.split_whitespace().skip(1).collect();
        if nums == ["0", "0", "0", "0"] {
            break;
        }
        assert!(
            Instant::now() < end,
            "the retried run did not finish: {line}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let hist = sluice(&cfg, &["history", "air-load"]);
    let h = String::from_utf8_lossy(&hist.stdout);
    assert!(h.matches("COMPLETED").count() >= 2, "{h}");

    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
}

/// `partitions = 3`: the CSV is split by file offset into three partition tasks;
/// a failed partition fails the step, and the restart runs only that partition
/// again (from its checkpoint), not the completed ones.
#[tokio::test]
async fn a_partitioned_step_fans_out_and_restarts_only_unfinished_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("air.csv");
    write_csv(&csv, 6_000, &[]);
    // Row 5900 (in the last third) gets a pm10 that is not a number, of the same
    // length, so the fixed file has the same byte offsets.
    let good = std::fs::read_to_string(&csv).unwrap();
    let row = good
        .lines()
        .find(|l| l.starts_with("5900,"))
        .unwrap()
        .to_owned();
    let fields: Vec<&str> = row.split(',').collect();
    let bad_pm10 = "x".repeat(fields[3].len());
    let bad_row = [
        fields[0], fields[1], fields[2], &bad_pm10, fields[4], fields[5],
    ]
    .join(",");
    std::fs::write(&csv, good.replace(&row, &bad_row)).unwrap();
    let data = dir.path().join("data.db");
    let cfg = config(
        dir.path(),
        &csv,
        &format!("sqlite://{}", data.display()),
        "",
    );
    let text_cfg = std::fs::read_to_string(&cfg).unwrap().replace(
        "chunk = 1000\nskip_limit = 5",
        "chunk = 500\nskip_limit = 0\npartitions = 3",
    );
    std::fs::write(&cfg, text_cfg).unwrap();

    let out = sluice(&cfg, &["run", "--local", "air-load"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("partition 2/3 failed"), "{all}");
    let hist = sluice(&cfg, &["history", "air-load:load"]);
    let h = String::from_utf8_lossy(&hist.stdout).to_string();
    assert_eq!(h.matches("COMPLETED").count(), 2, "{h}");
    assert_eq!(h.matches("FAILED").count(), 1, "{h}");
    assert!(h.contains("partition=2/3"), "{h}");

    // Fix the row (same length) and restart: only partition 2 runs again.
    std::fs::write(&csv, &good).unwrap();
    let out = sluice(&cfg, &["run", "--local", "air-load"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sqlite_rows(&data).await, expected_sums(6_000, &[]));
    let hist = sluice(&cfg, &["history", "air-load:load"]);
    let h = String::from_utf8_lossy(&hist.stdout).to_string();
    assert_eq!(h.lines().count(), 4, "3 partitions + 1 resumed: {h}");
    assert_eq!(h.matches("COMPLETED").count(), 3, "{h}");
    let first_two: Vec<&str> = h.lines().filter(|l| !l.contains("partition=2/3")).collect();
    assert_eq!(first_two.len(), 2, "completed partitions ran once: {h}");
}

/// A job with `every = "1s"` runs by itself under `sluice serve` (embedded: SQLite
/// queue and claims), with `{{fire_time}}` in its config; `sluice schedule list`
/// shows the trigger with its last and next fires; `pause` stops it, `resume`
/// starts it again; `POST /api/jobs/NAME/trigger` enqueues a run.
#[tokio::test]
async fn triggers_fire_jobs_under_serve_and_can_be_paused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fires.txt");
    let cfg = dir.path().join("sched.toml");
    let port = sluice_testkit::free_port();
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token = {{ env = "SLUICE_TEST_ADMIN" }}

[repository]
url = "sqlite://{repo}"

[[job]]
name = "stamp"

[[job.step]]
name = "write"
tasklet = {{ kind = "shell", command = "echo {{{{fire_time}}}} {{{{fire_date}}}} >> {out}" }}

[[job.trigger]]
kind = "every"
name = "tick"
every = "1s"
"#,
            repo = dir.path().join("repo.db").display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let mut server = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("SLUICE_TEST_ADMIN", "s3cret-s3cret-s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let end = Instant::now() + Duration::from_secs(30);
    while lines(&out).len() < 3 {
        assert!(
            Instant::now() < end,
            "the trigger did not fire 3 times: {:?}",
            lines(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = lines(&out);
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "each fire has its own instant: {seen:?}"
    );
    assert!(
        seen[0].contains("T") && seen[0].contains("+00:00"),
        "{seen:?}"
    );

    let list = sluice_cmd(&cfg, &["schedule", "list"]);
    let l = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success(), "{}", text(&list));
    assert!(l.contains("stamp/tick") && l.contains("every 1s"), "{l}");
    assert!(l.contains("last fire") && l.contains("fired task"), "{l}");
    assert_eq!(l.matches("  next ").count(), 3, "{l}");

    let p = sluice_cmd(&cfg, &["schedule", "pause", "stamp/tick"]);
    assert!(p.status.success(), "{}", text(&p));
    // The pause reaches the scheduler within a second; let running fires end.
    std::thread::sleep(Duration::from_millis(2500));
    let before = lines(&out).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(lines(&out).len(), before, "a paused trigger does not fire");
    let bad = sluice_cmd(&cfg, &["schedule", "pause", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("stamp/tick"),
        "{}",
        text(&bad)
    );

    // The API: without the token 401, with it 202 and a task id.
    let post = |auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: Bearer {a}")]);
        }
        c.arg(format!("http://127.0.0.1:{port}/api/jobs/stamp/trigger"));
        String::from_utf8_lossy(&c.output().unwrap().stdout).to_string()
    };
    assert!(post(None).ends_with("401"), "{}", post(None));
    let ok = post(Some("s3cret-s3cret-s3cret"));
    assert!(ok.ends_with("202") && ok.contains("\"task\""), "{ok}");
    let end = Instant::now() + Duration::from_secs(20);
    while lines(&out).len() == before {
        assert!(Instant::now() < end, "the API-triggered run did not happen");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Resume through the API (named trigger: /api/schedule/JOB/NAME/resume).
    let r = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "Authorization: Bearer s3cret-s3cret-s3cret"])
        .arg(format!(
            "http://127.0.0.1:{port}/api/schedule/stamp/tick/resume"
        ))
        .output()
        .unwrap();
    let r = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(r.ends_with("200") && r.contains("\"paused\":false"), "{r}");
    let n = lines(&out).len();
    let end = Instant::now() + Duration::from_secs(20);
    while lines(&out).len() < n + 2 {
        assert!(Instant::now() < end, "a resumed trigger fires again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
}

/// `watch`: files arriving in a directory run the job with their path, once each
/// even with two nodes watching (claims in the shared SQLite file); files that do
/// not match the pattern are left alone; a file there before the start counts.
#[tokio::test]
async fn files_arriving_in_a_watched_directory_run_the_job_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::write(inbox.join("early.csv"), "x\n").unwrap();
    let out = dir.path().join("seen.txt");
    let cfg = dir.path().join("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[repository]
url = "sqlite://{repo}"

[[job]]
name = "ingest"

[[job.step]]
name = "note"
tasklet = {{ kind = "shell", command = "echo {{{{params.path}}}} >> {out}" }}

[[job.trigger]]
kind = "watch"
name = "inbox"
watch = "{inbox}"
pattern = "*.csv"
param = "path"
settle = "300ms"
"#,
            repo = dir.path().join("repo.db").display(),
            out = out.display(),
            inbox = inbox.display(),
        ),
    )
    .unwrap();
    let nodes: Vec<_> = (0..2).map(|_| serve(&cfg)).collect();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(inbox.join("a.csv"), "1\n").unwrap();
    std::fs::write(inbox.join("notes.txt"), "no\n").unwrap();
    std::fs::write(inbox.join("b.csv"), "2\n").unwrap();
    let seen = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| l.rsplit('/').next().unwrap_or("").to_owned())
            .collect();
        v.sort();
        v
    };
    let end = Instant::now() + Duration::from_secs(30);
    while seen().len() < 3 {
        assert!(Instant::now() < end, "files not picked up: {:?}", seen());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both nodes saw every event; wait for a possible second run.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(seen(), ["a.csv", "b.csv", "early.csv"]);
    let list = sluice_cmd(&cfg, &["schedule", "list"]);
    let l = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        l.contains("ingest/inbox") && l.contains("watch") && l.contains("*.csv"),
        "{l}"
    );
    for mut n in nodes {
        let _ = Command::new("kill").arg(n.id().to_string()).status();
        let _ = n.wait();
    }
}
