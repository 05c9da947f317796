//! `sluice job …` end to end: the binary, a config, real files and databases.

use crate::bin::{BIN, terminate, text, wait_until};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The admin token the configs that need one read from `SLUICE_TEST_ADMIN`.
const ADMIN_TOKEN: &str = "s3cret-s3cret-s3cret";

/// `sluice ARGS -c CONFIG`, quiet logs, the test admin token in the environment.
fn command(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("SLUICE_TEST_ADMIN", ADMIN_TOKEN);
    c
}

/// `command` in the background, output piped.
fn spawn_piped(mut c: Command) -> std::process::Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `sluice job ARGS -c CONFIG`.
fn sluice(config: &Path, args: &[&str]) -> Output {
    sluice_cmd(config, &[&["job"], args].concat())
}

/// `sluice ARGS -c CONFIG`.
fn sluice_cmd(config: &Path, args: &[&str]) -> Output {
    command(config, args).output().unwrap()
}

/// The `STEP ` line of a run's output and its counts (those after the state).
fn step_counts<'a>(stdout: &'a str, step: &str) -> (&'a str, Vec<u64>) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{step} ")))
        .unwrap();
    let counts = line
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    (line, counts)
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

/// `jobs.toml` in `dir`: job `air-load` loads `csv` into `data_url`.
fn config(dir: &Path, csv: &Path, data_url: &str) -> PathBuf {
    let repo = format!("sqlite://{}", dir.join("repo.db").display());
    crate::bin::jobs_config(
        dir,
        &repo,
        &format!(
            r#"lease = "2s"

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
"#,
            csv = csv.display(),
        ),
    )
}

/// Count, sum of ids and sum of pm25 in the `air_quality` table of a SQLite file.
async fn sqlite_rows(db: &Path) -> (i64, i64, f64) {
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let sql = "SELECT COUNT(*), COALESCE(SUM(id), 0), COALESCE(SUM(pm25), 0) FROM air_quality";
    sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
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
    let Load { dir, cfg, data, .. } = load_with(5_000, &[17, 4242]);
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
    let out = run_on_new_csv(&cfg, &dir.path().join("other.csv"), 10, &[]);
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
    let out = run_on_new_csv(
        &cfg,
        &dir.path().join("worse.csv"),
        100,
        &[1, 2, 3, 4, 5, 6, 7],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("skip limit of 5 exceeded") && t.contains("position 6"),
        "{t}"
    );
}

/// Writes a `rows`-row CSV at `csv` and runs `air-load` on it (a new instance).
fn run_on_new_csv(cfg: &Path, csv: &Path, rows: u64, bad_rows: &[u64]) -> Output {
    write_csv(csv, rows, bad_rows);
    let file = format!("file={}", csv.display());
    sluice(cfg, &["run", "--local", "air-load", "-p", &file])
}

/// `sluice job run --local air-load -c cfg` in the background, output piped.
fn spawn_run(cfg: &Path) -> std::process::Child {
    spawn_piped(command(cfg, &["job", "run", "--local", "air-load"]))
}

/// A temp dir with a CSV and a config loading it into `data.db`, its repository
/// in `repo.db`.
struct Load {
    dir: tempfile::TempDir,
    csv: PathBuf,
    cfg: PathBuf,
    data: PathBuf,
    repo: PathBuf,
}

/// A `rows`-row CSV without bad rows.
fn load(rows: u64) -> Load {
    load_with(rows, &[])
}

/// A `rows`-row CSV whose `bad_rows` are broken.
fn load_with(rows: u64, bad_rows: &[u64]) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("air.csv");
    write_csv(&csv, rows, bad_rows);
    let data = dir.path().join("data.db");
    let cfg = config(dir.path(), &csv, &format!("sqlite://{}", data.display()));
    let repo = dir.path().join("repo.db");
    Load {
        dir,
        csv,
        cfg,
        data,
        repo,
    }
}

impl Load {
    /// Rewrites the config, each `(from, to)` in turn.
    fn edit_config(&self, edits: &[(&str, &str)]) {
        let mut text = std::fs::read_to_string(&self.cfg).unwrap();
        for (from, to) in edits {
            text = text.replace(from, to);
        }
        std::fs::write(&self.cfg, text).unwrap();
    }

    /// The repository the config names.
    fn repository(&self) -> Repo {
        Repo::Sqlite(self.repo.clone())
    }

    /// The repository URL the config names.
    fn repo_url(&self) -> String {
        format!("sqlite://{}", self.repo.display())
    }
}

/// A `rows`-row load, started and past its first `n` committed rows.
async fn load_running(rows: u64, n: u64) -> (Load, std::process::Child) {
    let load = load(rows);
    let mut child = spawn_run(&load.cfg);
    wait_written(&load.repository(), n, &mut child).await;
    (load, child)
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

/// Starts the load, kills it (SIGKILL) once `n` rows are committed, and runs it
/// again after the lease: the rows committed before the kill, and that run.
async fn kill_and_run_again(cfg: &Path, repo: &Repo, n: u64) -> (u64, Output) {
    let mut child = spawn_run(cfg);
    let committed = wait_written(repo, n, &mut child).await;
    child.kill().unwrap();
    child.wait().unwrap();
    (committed, run_after_lease(cfg))
}

/// `run` again until the dead process's lease has expired (exit 3 meanwhile).
fn run_after_lease(cfg: &Path) -> Output {
    crate::bin::after_lease(|| sluice(cfg, &["run", "--local", "air-load"]))
}

#[tokio::test]
async fn a_killed_load_restarts_from_its_last_chunk_and_loads_every_row_once() {
    const ROWS: u64 = 200_000;
    let load = load(ROWS);
    let (cfg, data) = (&load.cfg, &load.data);
    // Kill it once a good part is committed. Running again: AlreadyRunning until
    // the dead process's lease expires, then it resumes (no manual clean-up).
    let (committed, out) = kill_and_run_again(cfg, &load.repository(), 40_000).await;
    assert!(committed < ROWS, "killed too late: {committed}");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resumed execution 1"), "{stdout}");
    let (line, nums) = step_counts(&stdout, "load");
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
    assert_eq!(sqlite_rows(data).await, expected_sums(ROWS, &[]));

    let status = sluice(cfg, &["status", "1"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("ABANDONED"),
        "{}",
        text(&status)
    );
}

/// `examples/jobs.toml` in `dir`, its upstream at `base_url`, its databases in `dir`,
/// `page` rows a page.
fn example_jobs(dir: &Path, base_url: &str, page: u64) -> PathBuf {
    let example = crate::bin::example_jobs_toml(dir)
        .replace(
            "http://127.0.0.1:9000/B552584/ArpltnInforInqireSvc",
            base_url,
        )
        .replace("size = 1000", &format!("size = {page}"));
    let cfg = dir.join("jobs.toml");
    std::fs::write(&cfg, example).unwrap();
    cfg
}

/// `job run --local air-quality-load -p sido=서울` with the test key.
fn run_air_load(cfg: &Path, log: &str) -> Output {
    command(
        cfg,
        &[
            "job",
            "run",
            "--local",
            "air-quality-load",
            "-p",
            "sido=서울",
        ],
    )
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
    let (_, counts) = step_counts(&stdout, "load");
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
    let (load, child) = load_running(ROWS, 10_000).await;
    let (cfg, data) = (&load.cfg, &load.data);
    let written = stop_execution_1(cfg, child, ROWS, 1000).await;
    assert_eq!(
        sqlite_rows(data).await.0 as u64,
        written,
        "nothing after the boundary"
    );

    let out = sluice(cfg, &["restart", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed execution 1"));
    assert_eq!(sqlite_rows(data).await, expected_sums(ROWS, &[]));
}

/// Two `sluice job run` processes started together on one repository: exactly one
/// runs the instance, the other is told it is already running (exit 3).
async fn two_processes_one_instance(repo_url: &str) {
    let load = load(30_000);
    load.edit_config(&[(&load.repo_url(), repo_url)]);
    let (cfg, data) = (&load.cfg, &load.data);
    // Create the schema first, so both start on equal terms.
    let list = sluice(cfg, &["list"]);
    assert!(list.status.success(), "{}", text(&list));
    let (a, b) = (spawn_run(cfg), spawn_run(cfg));
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
    assert_eq!(sqlite_rows(data).await, expected_sums(30_000, &[]));
    let history = sluice(cfg, &["history", "air-load"]);
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
    let (load, child) = load_running(ROWS, 10_000).await;
    let (cfg, data) = (&load.cfg, &load.data);
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
    let again = sluice(cfg, &["run", "--local", "air-load"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("resumed execution 1"));
    assert_eq!(sqlite_rows(data).await, expected_sums(ROWS, &[]));
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

    /// Rows written by committed chunks, read from the repository (0 before it
    /// exists).
    async fn written(&self) -> u64 {
        let sql = "SELECT COALESCE(MAX(written_count), 0) FROM batch_step_execution";
        let n: i64 = match self {
            Repo::Sqlite(p) => {
                let url = format!("sqlite://{}?mode=ro", p.display());
                let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
                    return 0;
                };
                let n = sqlx::query_scalar(sql).fetch_one(&pool).await;
                pool.close().await;
                n.unwrap_or(0)
            }
            Repo::Postgres(u) => {
                let Ok(pool) = sqlx::PgPool::connect(u).await else {
                    return 0;
                };
                let n = sqlx::query_scalar(sql).fetch_one(&pool).await;
                pool.close().await;
                n.unwrap_or(0)
            }
        };
        n as u64
    }

    async fn rows(&self) -> (i64, i64, f64) {
        match self {
            Repo::Sqlite(p) => sqlite_rows(p).await,
            Repo::Postgres(u) => {
                let pool = sqlx::PgPool::connect(u).await.unwrap();
                let sql = "SELECT COUNT(*), COALESCE(SUM(id), 0)::BIGINT, \
                           COALESCE(SUM(pm25), 0)::FLOAT8 FROM air_quality";
                sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
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
    let load = load(ROWS);
    let cfg = &load.cfg;
    load.edit_config(&[
        (&format!("sqlite://{}", load.data.display()), &repo.url()),
        (&load.repo_url(), &repo.url()),
        ("kind = \"sql_upsert\"", "kind = \"sql_append\""),
        ("key = [\"id\"], ", ""),
        ("\"id BIGINT NOT NULL\"", "\"id BIGINT\""),
    ]);
    let (_, out) = kill_and_run_again(cfg, &repo, 40_000).await;
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
    serve_with(cfg, &["--listen", &format!("127.0.0.1:{port}")])
}

/// Starts `sluice serve ARGS`, its output dropped.
fn serve_with(cfg: &Path, args: &[&str]) -> std::process::Child {
    command(cfg, &[&["serve"], args].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `sluice job run` without `--local` enqueues a `job.run` task; the worker in
/// `sluice serve` runs it; a failed run lands in the dead-letter queue with its
/// error and `sluice queue dlq retry` runs it again.
#[tokio::test]
async fn job_runs_go_through_the_queue_to_a_serve_worker() {
    let Load { dir, cfg, data, .. } = load(3_000);
    let server = serve(&cfg);

    let out = sluice(&cfg, &["run", "--queue", "air-load"]);
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
    let out = sluice(&cfg, &["run", "--queue", "air-load", "-p", &p]);
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
    wait_jobs_queue_empty(&cfg, 30, "the retried run did not finish");
    let hist = sluice(&cfg, &["history", "air-load"]);
    let h = String::from_utf8_lossy(&hist.stdout);
    assert!(h.matches("COMPLETED").count() >= 2, "{h}");

    terminate(server);
}

/// `partitions = 3`: the CSV is split by file offset into three partition tasks;
/// a failed partition fails the step, and the restart runs only that partition
/// again (from its checkpoint), not the completed ones.
#[tokio::test]
async fn a_partitioned_step_fans_out_and_restarts_only_unfinished_partitions() {
    let load = load(6_000);
    let (csv, cfg, data) = (&load.csv, &load.cfg, &load.data);
    // Row 5900 (in the last third) gets a pm10 that is not a number, of the same
    // length, so the fixed file has the same byte offsets.
    let good = std::fs::read_to_string(csv).unwrap();
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
    std::fs::write(csv, good.replace(&row, &bad_row)).unwrap();
    load.edit_config(&[(
        "chunk = 1000\nskip_limit = 5",
        "chunk = 500\nskip_limit = 0\npartitions = 3",
    )]);

    let out = sluice(cfg, &["run", "--local", "air-load"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("partition 2/3 failed"), "{all}");
    let hist = sluice(cfg, &["history", "air-load:load"]);
    let h = String::from_utf8_lossy(&hist.stdout).to_string();
    assert_eq!(h.matches("COMPLETED").count(), 2, "{h}");
    assert_eq!(h.matches("FAILED").count(), 1, "{h}");
    assert!(h.contains("partition=2/3"), "{h}");

    // Fix the row (same length) and restart: only partition 2 runs again.
    std::fs::write(csv, &good).unwrap();
    let out = sluice(cfg, &["run", "--local", "air-load"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sqlite_rows(data).await, expected_sums(6_000, &[]));
    let hist = sluice(cfg, &["history", "air-load:load"]);
    let h = String::from_utf8_lossy(&hist.stdout).to_string();
    assert_eq!(h.lines().count(), 4, "3 partitions + 1 resumed: {h}");
    assert_eq!(h.matches("COMPLETED").count(), 3, "{h}");
    let first_two: Vec<&str> = h.lines().filter(|l| !l.contains("partition=2/3")).collect();
    assert_eq!(first_two.len(), 2, "completed partitions ran once: {h}");
}

/// `jobs.toml` in `dir` (after `head`): a job of one shell step that runs `echo
/// ECHO`, with one trigger (`names`: job, step, trigger) whose rule is `rule`; its
/// repository in `dir/repo.db`.
fn shell_job(dir: &Path, head: &str, names: [&str; 3], echo: &str, rule: &str) -> PathBuf {
    let [job, step, trigger] = names;
    let repo = format!("sqlite://{}", dir.join("repo.db").display());
    let rest = format!(
        "\n{}\n[[job.trigger]]\nname = \"{trigger}\"\n{rule}",
        crate::bin::shell_job_toml(job, step, &format!("echo {echo}"))
    );
    crate::bin::jobs_config(dir, &repo, &format!("{rest}\n{head}"))
}

/// A job with `every = "1s"` runs by itself under `sluice serve` (embedded: SQLite
/// queue and claims), with `{{fire_time}}` in its config; `sluice schedule list`
/// shows the trigger with its last and next fires; `pause` stops it, `resume`
/// starts it again; `POST /api/jobs/NAME/trigger` enqueues a run.
#[tokio::test]
async fn triggers_fire_jobs_under_serve_and_can_be_paused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fires.txt");
    let port = sluice_testkit::free_port();
    let server_table = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = {{ env = \"SLUICE_TEST_ADMIN\" }}\n\n"
    );
    let cfg = shell_job(
        dir.path(),
        &server_table,
        ["stamp", "write", "tick"],
        &format!("{{{{fire_time}}}} {{{{fire_date}}}} >> {}", out.display()),
        "kind = \"every\"\nevery = \"1s\"\n",
    );
    let server = serve_with(&cfg, &[]);
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    wait_until(
        30,
        || lines(&out).len() >= 3,
        || format!("the trigger did not fire 3 times: {:?}", lines(&out)),
    );
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
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown trigger is invalid input"
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("stamp/tick"),
        "{}",
        text(&bad)
    );

    // The API: without the token 401, with it 202 and a task id.
    let post = |path: &str, auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: Bearer {a}")]);
        }
        c.arg(format!("http://127.0.0.1:{port}{path}"));
        String::from_utf8_lossy(&c.output().unwrap().stdout).to_string()
    };
    let trigger = "/api/jobs/stamp/trigger";
    assert!(
        post(trigger, None).ends_with("401"),
        "{}",
        post(trigger, None)
    );
    let ok = post(trigger, Some(ADMIN_TOKEN));
    assert!(ok.ends_with("202") && ok.contains("\"task\""), "{ok}");
    wait_until(
        20,
        || lines(&out).len() != before,
        || "the API-triggered run did not happen".into(),
    );

    // Resume through the API (named trigger: /api/schedule/JOB/NAME/resume).
    let r = post("/api/schedule/stamp/tick/resume", Some(ADMIN_TOKEN));
    assert!(r.ends_with("200") && r.contains("\"paused\":false"), "{r}");
    let n = lines(&out).len();
    wait_until(
        20,
        || lines(&out).len() >= n + 2,
        || "a resumed trigger fires again".into(),
    );
    terminate(server);
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
    let cfg = shell_job(
        dir.path(),
        "",
        ["ingest", "note", "inbox"],
        &format!("{{{{params.path}}}} >> {}", out.display()),
        &format!(
            "kind = \"watch\"\nwatch = \"{}\"\npattern = \"*.csv\"\nparam = \"path\"\nsettle = \"300ms\"\n",
            inbox.display()
        ),
    );
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
    wait_until(
        30,
        || seen().len() >= 3,
        || format!("files not picked up: {:?}", seen()),
    );
    // Both nodes saw every event; wait for a possible second run.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(seen(), ["a.csv", "b.csv", "early.csv"]);
    let list = sluice_cmd(&cfg, &["schedule", "list"]);
    let l = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        l.contains("ingest/inbox") && l.contains("watch") && l.contains("*.csv"),
        "{l}"
    );
    nodes.into_iter().for_each(terminate);
}

/// The `fire_time=…` parameter `sluice job status EXEC` shows.
fn fire_time_of(cfg: &Path, exec: &str) -> String {
    let out = sluice(cfg, &["status", exec]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fire_time=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no fire_time in {}", text(&out)))
}

/// The `jobs` line of `sluice queue stats` (empty when there is none).
fn jobs_stats_line(cfg: &Path) -> String {
    let s = sluice_cmd(cfg, &["queue", "stats"]);
    String::from_utf8_lossy(&s.stdout)
        .lines()
        .find(|l| l.starts_with("jobs"))
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Waits up to `secs` for the `jobs` queue to hold nothing (ready, delayed,
/// running, dead); fails saying `what` with the stats line.
fn wait_jobs_queue_empty(cfg: &Path, secs: u64, what: &str) {
    wait_until(
        secs,
        || {
            jobs_stats_line(cfg)
                .split_whitespace()
                .skip(1)
                .eq(["0", "0", "0", "0"])
        },
        || format!("{what}: {}", jobs_stats_line(cfg)),
    );
}

/// `job stop 1` on the run `child` of `rows` rows: it ends STOPPED (exit 4)
/// at a chunk boundary (of `chunk` rows); the rows its load step wrote.
async fn stop_execution_1(cfg: &Path, child: std::process::Child, rows: u64, chunk: u64) -> u64 {
    let stop = sluice(cfg, &["stop", "1"]);
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
        written < rows && written.is_multiple_of(chunk),
        "stopped at a chunk boundary: {line}"
    );
    written
}

/// Issue #14 point 1: a queued run whose execution a killed process still
/// holds waits for that repository lease (without spending an attempt) and then
/// resumes it; the wait's message shows the lease's end as a time.
#[tokio::test]
async fn r14_a_queued_run_waits_for_a_dead_owners_lease_and_resumes_it() {
    const ROWS: u64 = 100_000;
    let load = load(ROWS);
    load.edit_config(&[("lease = \"2s\"", "lease = \"8s\"")]);
    let (cfg, data) = (&load.cfg, &load.data);
    let mut child = spawn_run(cfg);
    wait_written(&load.repository(), 10_000, &mut child).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let server = serve(cfg);
    // `--queue`: the server may not have announced its worker yet.
    let out = sluice(cfg, &["run", "air-load", "--queue"]);
    terminate(server);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("already running as execution 1") && stdout.contains("lease until 20"),
        "the task waited for the dead process's lease: {stdout}"
    );
    assert!(!stdout.contains(" ms)"), "times shown as times: {stdout}");
    assert!(
        !stdout.contains("attempt 2/"),
        "waiting spent no attempt: {stdout}"
    );
    assert!(stdout.contains("resumed execution 1"), "{stdout}");
    assert_eq!(sqlite_rows(data).await, expected_sums(ROWS, &[]));
}

/// Issue #14 point 5: `job stop` takes effect at the next chunk boundary, read
/// from the repository with every chunk, not at the next heartbeat (the lease
/// here is 5 minutes: its heartbeat would come long after the run's end).
#[tokio::test]
async fn r14_stop_takes_effect_at_the_next_chunk_without_a_heartbeat() {
    const ROWS: u64 = 100_000;
    let load = load(ROWS);
    load.edit_config(&[
        ("lease = \"2s\"", "lease = \"5m\""),
        ("chunk = 1000", "chunk = 200"),
    ]);
    let (cfg, data) = (&load.cfg, &load.data);
    let mut child = spawn_run(cfg);
    wait_written(&load.repository(), 2_000, &mut child).await;
    let written = stop_execution_1(cfg, child, ROWS, 200).await;
    assert_eq!(sqlite_rows(data).await.0 as u64, written);

    // Its checkpoint lets the next run resume.
    let again = sluice(cfg, &["run", "--local", "air-load"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("resumed execution 1"));
    assert_eq!(sqlite_rows(data).await, expected_sums(ROWS, &[]));
}

/// Issue #14 point 6: `fire_time` / `fire_date` added to a manual run do not
/// identify it, so `job run` after a FAILED run resumes that instance from its
/// checkpoint although its fire_time differs.
#[tokio::test]
async fn r14_a_failed_manual_run_resumes_although_its_fire_time_differs() {
    const ROWS: u64 = 20_000;
    // Six broken rows in one chunk: over the skip limit of 5.
    let bad: Vec<u64> = (15_001..=15_006).collect();
    let load = load_with(ROWS, &bad);
    let (csv, cfg, data) = (&load.csv, &load.cfg, &load.data);
    let mut text_cfg = std::fs::read_to_string(cfg).unwrap();
    text_cfg.push_str(
        "\n[[job.step]]\nname = \"stamp\"\ntasklet = { kind = \"shell\", command = \"echo {{fire_time}} {{fire_date}}\" }\n",
    );
    std::fs::write(cfg, text_cfg).unwrap();

    let first = sluice(cfg, &["run", "--local", "air-load"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(text(&first).contains("FAILED"), "{}", text(&first));
    assert_eq!(
        sqlite_rows(data).await.0,
        15_000,
        "the chunks before the broken rows are committed"
    );

    write_csv(csv, ROWS, &[]);
    // fire_time has whole seconds: let the next one differ.
    std::thread::sleep(Duration::from_millis(1100));
    let second = sluice(cfg, &["run", "--local", "air-load"]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("resumed execution 1"),
        "{}",
        text(&second)
    );
    assert_ne!(fire_time_of(cfg, "1"), fire_time_of(cfg, "2"));
    assert_eq!(sqlite_rows(data).await, expected_sums(ROWS, &[]));
}

/// Issue #14 point 1, as reported: two `sluice serve` workers on one Redis queue
/// with a 3 s visibility (shorter than the 6 s repository lease), 20 runs
/// enqueued through the API, one worker killed with -9 and restarted twice
/// mid-run: every run ends COMPLETED (the killed ones resumed), none is
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_killed_workers_runs_are_resumed_never_dead_lettered() {
    const RUNS: usize = 20;
    const ROWS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let redis =
        std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = {
        use std::hash::{BuildHasher, RandomState};
        let r = RandomState::new().hash_one(Instant::now()) as u32;
        format!("t-r14-kill-{}-{r:x}", std::process::id())
    };
    let cfg = dir.path().join("jobs.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
admin_token = {{ env = "SLUICE_TEST_ADMIN" }}

[repository]
url = "sqlite://{repo}"
lease = "6s"

[queue]
url = "{redis}"
namespace = "{ns}"
visibility = "3s"
grace = "1s"
concurrency = {{ jobs = 2 }}

[[job]]
name = "air-load"

[[job.step]]
name = "load"
chunk = 500
reader = {{ kind = "csv", path = "{{{{params.file}}}}" }}
processor = {{ kind = "jq", expr = "{{id: (.id | tonumber), station, pm25: (.pm25 | tonumber)}}" }}
writer = {{ kind = "sql_upsert", url = "sqlite://{{{{params.file}}}}.db", table = "air_quality", key = ["id"], create = true, columns = ["id BIGINT NOT NULL", "station TEXT NOT NULL", "pm25 DOUBLE PRECISION"] }}
"#,
            repo = dir.path().join("repo.db").display(),
        ),
    )
    .unwrap();
    let files: Vec<PathBuf> = (0..RUNS)
        .map(|i| {
            let f = dir.path().join(format!("air-{i}.csv"));
            write_csv(&f, ROWS, &[]);
            f
        })
        .collect();

    let port = sluice_testkit::free_port();
    let steady = serve_with(&cfg, &["--listen", &format!("127.0.0.1:{port}")]);
    let mut killed = serve(&cfg);
    let post = |body: String| {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
            .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["-H", "Content-Type: application/json", "-d", &body])
            .arg(format!("http://127.0.0.1:{port}/api/jobs/air-load/trigger"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until(
        30,
        || {
            Command::new("curl")
                .args(["-s", &format!("http://127.0.0.1:{port}/healthz")])
                .status()
                .is_ok_and(|s| s.success())
        },
        || "the steady node never answered".into(),
    );
    for f in &files {
        let body = serde_json::json!({"params": {"file": f.display().to_string()}}).to_string();
        let answer = post(body);
        assert!(answer.ends_with("202"), "{answer}");
    }
    // Kill the second node with -9 twice while it runs jobs (it owns a started
    // execution), restarting it each time.
    let repo_url = format!("sqlite://{}?mode=ro", dir.path().join("repo.db").display());
    for _ in 0..2 {
        let owner = format!("%-{}", killed.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pool = sqlx::SqlitePool::connect(&repo_url).await.unwrap();
            let running: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM batch_job_execution WHERE status = 'STARTED' AND owner LIKE $1",
            )
            .bind(&owner)
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            pool.close().await;
            if running > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node to kill never ran a job: {}",
                jobs_stats_line(&cfg)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        killed.kill().unwrap();
        killed.wait().unwrap();
        killed = serve(&cfg);
    }
    wait_jobs_queue_empty(&cfg, 180, "the runs did not all finish");
    terminate(killed);
    terminate(steady);

    let dlq = sluice_cmd(&cfg, &["queue", "dlq", "list"]);
    assert!(
        !String::from_utf8_lossy(&dlq.stdout).contains("job.run"),
        "nothing dead-lettered: {}",
        text(&dlq)
    );
    let history = sluice(&cfg, &["history", "air-load", "--limit", "500"]);
    let h = String::from_utf8_lossy(&history.stdout).to_string();
    for f in &files {
        let file = format!("file={}]", f.display());
        assert!(
            h.lines()
                .any(|l| l.contains(&file) && l.contains(" COMPLETED ")),
            "{} never completed: {h}",
            f.display()
        );
        let db = PathBuf::from(format!("{}.db", f.display()));
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM air_quality")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        assert_eq!(n as u64, ROWS, "{}", f.display());
    }
    assert!(
        h.contains("ABANDONED"),
        "some runs were killed and resumed: {h}"
    );
}
