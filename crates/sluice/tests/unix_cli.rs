//! The CLI as a Unix tool: `--json` on every listing command, exit 2 for an
//! unknown job, execution, trigger or task, one `job finished` log line per run,
//! no database notices at the default log level, a shell step's output in
//! `job status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bin::{BIN, text};
use serde_json::Value;

/// `sluice ARGS -c CONFIG` at the default log level (`RUST_LOG` unset), or at
/// `log`.
fn command(cfg: &Path, args: &[&str], log: Option<&str>) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).arg("-c").arg(cfg).env_remove("NO_COLOR");
    match log {
        Some(l) => c.env("RUST_LOG", l),
        None => c.env_remove("RUST_LOG"),
    };
    c
}

/// `sluice ARGS -c CONFIG` at the default log level.
fn sluice(cfg: &Path, args: &[&str]) -> Output {
    command(cfg, args, None).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `sluice ARGS --json`: exit 0, and stdout is exactly one JSON document.
fn json(cfg: &Path, args: &[&str]) -> Value {
    let o = sluice(cfg, &[args, &["--json"]].concat());
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    let out = stdout(&o);
    assert_eq!(
        out.trim_end().lines().count(),
        1,
        "{args:?}: one line of JSON: {out}"
    );
    assert!(!out.contains('\x1b'), "{args:?}: no colour: {out:?}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// `jobs.toml` in `dir` with its repository at `repo` (a URL): job `greet` (a
/// shell step writing to stdout and stderr, triggered every hour), job `fail` (a
/// shell step that writes and exits 3), job `slow` (a shell step that writes and
/// times out after 500 ms), job `load` (3 CSV rows, one of them
/// broken and skipped, into a JSONL file).
fn config(dir: &Path, repo: &str) -> PathBuf {
    let csv = dir.join("in.csv");
    std::fs::write(&csv, "id,name\n1,a\n2\n3,c\n").unwrap();
    crate::bin::jobs_config(
        dir,
        repo,
        &format!(
            r#"
[[job]]
name = "greet"
description = "says hello"

[[job.step]]
name = "say"
tasklet = {{ kind = "shell", command = "echo hello-out; echo hello-err >&2" }}

[[job.trigger]]
name = "hourly"
kind = "every"
every = "1h"

[[job]]
name = "fail"

[[job.step]]
name = "boom"
tasklet = {{ kind = "shell", command = "echo partial-out; echo boom-err >&2; exit 3" }}

[[job]]
name = "slow"

[[job.step]]
name = "nap"
tasklet = {{ kind = "shell", command = "echo napping; sleep 30", timeout = "500ms" }}

[[job]]
name = "load"

[[job.step]]
name = "copy"
chunk = 10
skip_limit = 5
reader = {{ kind = "csv", path = "{csv}" }}
writer = {{ kind = "jsonl", path = "{out}" }}
"#,
            csv = csv.display(),
            out = dir.join("out.jsonl").display(),
        ),
    )
}

/// A config with a SQLite repository in `dir`.
/// The SQLite config in `dir`, after a run of `greet` (completed) and one of
/// `fail` (failed, exit 1).
fn greeted_and_failed(dir: &Path) -> PathBuf {
    let cfg = sqlite_config(dir);
    assert!(run(&cfg, "greet").status.success());
    assert_eq!(run(&cfg, "fail").status.code(), Some(1));
    cfg
}

fn sqlite_config(dir: &Path) -> PathBuf {
    config(dir, &format!("sqlite://{}", dir.join("repo.db").display()))
}

/// `job run --local NAME`: its output.
fn run(cfg: &Path, name: &str) -> Output {
    sluice(cfg, &["job", "run", "--local", name])
}

/// The `job finished` log lines of `stderr`.
fn finished_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("job finished"))
        .collect()
}

/// `--json` on `job list`, `job status [EXEC]`, `job history`, `job skips`,
/// `queue stats` and `schedule list`: one JSON document each, with snake_case
/// fields and RFC 3339 times.
#[test]
fn every_listing_command_prints_one_json_document_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = greeted_and_failed(dir.path());
    assert!(run(&cfg, "load").status.success());

    let list = json(&cfg, &["job", "list"]);
    let jobs = list.as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fail", "greet", "load", "slow"], "{list}");
    let greet = &jobs[1];
    assert_eq!(greet["description"], "says hello", "{list}");
    assert_eq!(greet["steps"], serde_json::json!(["say"]), "{list}");
    assert_eq!(greet["last"]["status"], "COMPLETED", "{list}");
    assert_eq!(greet["last"]["job_name"], "greet", "{list}");
    let started = greet["last"]["started_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok(),
        "RFC 3339: {started}"
    );

    let recent = json(&cfg, &["job", "status"]);
    let ids: Vec<i64> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2, 1], "newest first: {recent}");
    assert_eq!(recent[1]["status"], "FAILED", "{recent}");

    let one = json(&cfg, &["job", "status", "3"]);
    assert_eq!(one["execution"]["id"], 3, "{one}");
    assert_eq!(one["execution"]["job_name"], "load", "{one}");
    let step = &one["steps"][0];
    assert_eq!(step["step_name"], "copy", "{one}");
    assert_eq!(step["status"], "COMPLETED", "{one}");
    assert_eq!(step["counts"]["read"], 3, "{one}");
    assert_eq!(step["counts"]["written"], 2, "{one}");
    assert_eq!(step["counts"]["skipped"], 1, "{one}");
    let ended = step["ended_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ended).is_ok(),
        "{ended}"
    );

    let history = json(&cfg, &["job", "history", "greet"]);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["id"], 1, "{history}");

    let skips = json(&cfg, &["job", "skips", "3"]);
    assert_eq!(skips.as_array().unwrap().len(), 1, "{skips}");
    assert_eq!(skips[0]["step_name"], "copy", "{skips}");
    assert_eq!(skips[0]["phase"], "read", "{skips}");
    assert_eq!(skips[0]["position"], 2, "{skips}");
    assert!(
        skips[0]["reason"].as_str().unwrap().contains("field"),
        "{skips}"
    );
    // An execution that skipped nothing: an empty array, not a sentence.
    assert_eq!(json(&cfg, &["job", "skips", "1"]), serde_json::json!([]));

    // No queue has held a task yet: an empty array.
    assert_eq!(json(&cfg, &["queue", "stats"]), serde_json::json!([]));
    // A queue shows once it holds a task: enqueue one (no worker runs it; its
    // follower waits for one) and look while it waits.
    let mut follower = command(&cfg, &["job", "run", "--queue", "greet"], None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let jobs_queue = |stats: &Value| {
        stats
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "jobs")
            .cloned()
    };
    let end = Instant::now() + Duration::from_secs(20);
    let mut stats = json(&cfg, &["queue", "stats"]);
    while jobs_queue(&stats).is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        stats = json(&cfg, &["queue", "stats"]);
    }
    let _ = Command::new("kill")
        .args(["-KILL", &follower.id().to_string()])
        .status();
    let _ = follower.wait();
    let jobs_queue = jobs_queue(&stats).unwrap_or_else(|| panic!("queue jobs in {stats}"));
    assert_eq!(jobs_queue["ready"], 1, "{stats}");
    for field in ["ready", "delayed", "running", "dead"] {
        assert!(jobs_queue[field].is_u64(), "{field} in {stats}");
    }
    assert!(jobs_queue["owners_gone"].is_array(), "{stats}");

    let schedule = json(&cfg, &["schedule", "list"]);
    let t = &schedule[0];
    assert_eq!(t["id"], "greet/hourly", "{schedule}");
    assert_eq!(t["job"], "greet", "{schedule}");
    assert_eq!(t["kind"], "schedule", "{schedule}");
    assert_eq!(t["paused"], false, "{schedule}");
    assert_eq!(t["misfire"], "fire_once", "{schedule}");
    let next = t["next"].as_array().unwrap();
    assert_eq!(next.len(), 3, "{schedule}");
    for n in next {
        assert!(
            chrono::DateTime::parse_from_rfc3339(n.as_str().unwrap()).is_ok(),
            "{n}"
        );
    }
    assert!(
        sluice(&cfg, &["schedule", "pause", "greet/hourly"])
            .status
            .success()
    );
    assert_eq!(json(&cfg, &["schedule", "list"])[0]["paused"], true);
}

/// An unknown trigger, job, execution or task is invalid input: exit 2, with a
/// message naming it (and, where the config knows them, the known ones).
#[test]
fn unknown_triggers_jobs_executions_and_tasks_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sqlite_config(dir.path());
    assert!(run(&cfg, "greet").status.success());
    let task = "0195a000-0000-7000-8000-000000000000";
    let cases: [(&[&str], &str); 12] = [
        (
            &["schedule", "pause", "nope"],
            "no trigger \"nope\"; triggers: greet/hourly",
        ),
        (
            &["schedule", "resume", "greet/daily"],
            "no trigger \"greet/daily\"",
        ),
        (
            &["job", "run", "nope"],
            "no job named \"nope\"; jobs: fail, greet, load, slow",
        ),
        (&["job", "run", "--queue", "nope"], "no job named \"nope\""),
        (&["job", "history", "nope"], "no job named \"nope\""),
        (&["job", "status", "999"], "no execution 999"),
        (&["job", "status", "999", "--json"], "no execution 999"),
        (&["job", "skips", "999"], "no execution 999"),
        (&["job", "restart", "999"], "no execution 999"),
        (&["job", "stop", "999"], "no execution 999"),
        (&["task", "status", task], task),
        (&["task", "cancel", task], task),
    ];
    for (args, says) in cases {
        let o = sluice(&cfg, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", text(&o));
        assert!(
            o.stdout.is_empty(),
            "{args:?}: nothing on stdout: {}",
            text(&o)
        );
    }
    // A known execution that is not running is not invalid input: exit 1.
    let o = sluice(&cfg, &["job", "stop", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // A known trigger pauses.
    let o = sluice(&cfg, &["schedule", "pause", "greet/hourly"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Each local run logs exactly one `job finished` line at the default level,
/// with its job, execution, status, counts and duration.
#[test]
fn a_local_run_logs_one_finished_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sqlite_config(dir.path());
    let o = run(&cfg, "load");
    assert!(o.status.success(), "{}", text(&o));
    let err = stderr(&o);
    let lines = finished_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    for field in [
        "INFO",
        "job=load",
        "execution=1",
        "status=COMPLETED",
        "read=3",
        "written=2",
        "skipped=1",
        "duration=",
    ] {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
    let o = run(&cfg, "fail");
    let err = stderr(&o);
    let lines = finished_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("job=fail") && lines[0].contains("status=FAILED"),
        "{err}"
    );
}

/// A run through a worker: the worker (`sluice serve`) logs one `job finished`
/// line, the follower (`job run`) none.
#[test]
fn a_worker_run_logs_one_finished_line_in_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sqlite_config(dir.path());
    let log = dir.path().join("serve.log");
    let port = sluice_testkit::free_port();
    let mut serve = command(
        &cfg,
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        None,
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let o = sluice(&cfg, &["job", "run", "--queue", "greet"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(finished_lines(&stderr(&o)).is_empty(), "{}", text(&o));
    // The worker logs the line before it acknowledges the task; the follower
    // saw the acknowledgement, so the line is in the log by now (but may be
    // flushed a moment later).
    let end = Instant::now() + Duration::from_secs(10);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    while finished_lines(&read()).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let _ = serve.wait();
    let all = read();
    let lines = finished_lines(&all);
    assert_eq!(lines.len(), 1, "{all}");
    assert!(
        lines[0].contains("job=greet")
            && lines[0].contains("execution=1")
            && lines[0].contains("status=COMPLETED")
            && lines[0].contains("duration="),
        "{all}"
    );
}

/// Against PostgreSQL, the second run's `CREATE TABLE IF NOT EXISTS` makes the
/// server send notices (`relation … already exists, skipping`); at the default
/// log level stderr shows none of them, nor any statement; with
/// `RUST_LOG=info` the notices show, so they are there to be hidden.
#[tokio::test]
async fn database_notices_stay_below_the_default_log_level() {
    let db =
        sluice_testkit::db::ServerDb::new(sluice_testkit::db::Server::Postgres, "unix_cli").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &db.url);
    for attempt in 0..2 {
        let o = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || sluice(&cfg, &["job", "run", "--local", "greet", "--rerun"])
        })
        .await
        .unwrap();
        assert!(o.status.success(), "run {attempt}: {}", text(&o));
        let err = stderr(&o);
        assert!(!err.contains("sqlx"), "run {attempt}: {err}");
        assert!(!err.contains("already exists"), "run {attempt}: {err}");
        assert!(
            !err.to_lowercase().contains("notice"),
            "run {attempt}: {err}"
        );
        assert_eq!(finished_lines(&err).len(), 1, "run {attempt}: {err}");
    }
    let o = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            command(
                &cfg,
                &["job", "run", "--local", "greet", "--rerun"],
                Some("info"),
            )
            .output()
            .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("already exists, skipping"),
        "RUST_LOG=info shows the notices: {}",
        text(&o)
    );
}

/// A shell step's output (the tail of its stdout and stderr) shows in `job
/// status EXEC`, indented under the step, and in its `--json`, when it
/// succeeded, when it failed and when it timed out.
#[test]
fn a_shell_steps_output_shows_in_job_status() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = greeted_and_failed(dir.path());
    assert_eq!(run(&cfg, "slow").status.code(), Some(1));

    for (exec, step, status, lines) in [
        (
            "1",
            "say",
            "COMPLETED",
            ["    exit 0 in ", "    hello-out", "    hello-err"],
        ),
        (
            "2",
            "boom",
            "FAILED",
            [
                "    step boom: exit code 3",
                "    partial-out",
                "    boom-err",
            ],
        ),
        (
            "3",
            "nap",
            "FAILED",
            [
                "    step nap: timed out after 500ms",
                "    stdout:",
                "    napping",
            ],
        ),
    ] {
        let o = sluice(&cfg, &["job", "status", exec]);
        assert!(o.status.success(), "{}", text(&o));
        let out = stdout(&o);
        let step = out
            .lines()
            .position(|l| l.starts_with(&format!("{step:<20} {status}")))
            .unwrap_or_else(|| panic!("the step's row in {out}"));
        let below: Vec<&str> = out.lines().skip(step + 1).collect();
        for want in lines {
            assert!(
                below.iter().any(|l| l.starts_with(want)),
                "{want:?} under the step in:\n{out}"
            );
        }

        let j = json(&cfg, &["job", "status", exec]);
        let msg = j["steps"][0]["exit_message"].as_str().unwrap();
        for want in lines {
            assert!(msg.contains(want.trim()), "{want:?} in {j}");
        }
        assert_eq!(j["steps"][0]["status"], status, "{j}");
    }
}
