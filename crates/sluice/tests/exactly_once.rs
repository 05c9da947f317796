//! Exactly once into any database (issue #14, point 2): `sql_append` and
//! `sql_upsert` into a database other than the repository's (SQLite, PostgreSQL,
//! MariaDB), killed between the target's commit and the repository's, or with
//! kill -9 at whatever point the load has reached, then run again: every row is
//! in the target once, none is missing.
//!
//! The repository is a SQLite file; the target is another SQLite file or a
//! scratch database of the test kit. The deterministic crash uses the step's
//! test hook `SLUICE_FAULT_AFTER_TARGET_COMMIT=N`: the process aborts right after
//! chunk N committed in the target (with its `sluice_checkpoint` row) and before
//! the repository recorded it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bin::{BIN, text};
use sluice_testkit::db::{Server, ServerDb};

/// Rows per chunk.
const CHUNK: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Append,
    Upsert,
}

/// A CSV of `rows` rows, a target database and a config loading one into the
/// other, with the repository in its own SQLite file.
struct Load {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    kind: Kind,
    target: String,
    _db: Option<ServerDb>,
}

async fn load(kind: Kind, mode: Mode, rows: u64) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let (target, db) = match kind {
        Kind::Sqlite => (
            format!("sqlite://{}", dir.path().join("data.db").display()),
            None,
        ),
        Kind::Postgres => {
            let db = ServerDb::new(Server::Postgres, "sluice_x").await;
            (db.url.clone(), Some(db))
        }
        Kind::MySql => {
            let db = ServerDb::new(Server::MySql, "sluice_x").await;
            (db.url.clone(), Some(db))
        }
    };
    let csv = dir.path().join("air.csv");
    write_csv(&csv, rows);
    let writer = match mode {
        // No key: a chunk written twice shows as duplicate rows.
        Mode::Append => format!(
            r#"{{ kind = "sql_append", url = "{target}", table = "air_quality", create = true, columns = ["id BIGINT", "station TEXT", "pm10 TEXT", "note TEXT"] }}"#
        ),
        Mode::Upsert => format!(
            r#"{{ kind = "sql_upsert", url = "{target}", table = "air_quality", key = ["id"], create = true, columns = ["id BIGINT NOT NULL", "station TEXT", "pm10 TEXT", "note TEXT"] }}"#
        ),
    };
    let repo = format!("sqlite://{}", dir.path().join("repo.db").display());
    let cfg = crate::bin::jobs_config(
        dir.path(),
        &repo,
        &format!(
            r#"lease = "2s"

[[job]]
name = "air-load"

[[job.step]]
name = "load"
chunk = {CHUNK}
reader = {{ kind = "csv", path = "{csv}" }}
writer = {writer}
"#,
            csv = csv.display(),
        ),
    );
    Load {
        dir,
        cfg,
        kind,
        target,
        _db: db,
    }
}

/// `n` rows: id, station, pm10, a 40-character note.
fn write_csv(path: &Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,station,pm10,note").unwrap();
    for i in 1..=n {
        writeln!(f, "{i},station-{},{},{i:0>40}", i % 500, i % 150).unwrap();
    }
    f.flush().unwrap();
}

impl Load {
    /// `sluice job run --local air-load`, quiet logs but warnings.
    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.args(["job", "run", "--local", "air-load", "-c"])
            .arg(&self.cfg)
            .env("RUST_LOG", "warn")
            .env_remove("SLUICE_FAULT_AFTER_TARGET_COMMIT");
        c
    }

    /// Runs again until the dead process's lease has expired (exit 3 meanwhile).
    fn run_after_lease(&self) -> Output {
        crate::bin::after_lease(|| self.command().output().unwrap())
    }

    /// `(commits, written)` of the step's latest execution in the repository (0s
    /// before there is one).
    async fn repository(&self) -> (i64, i64) {
        let url = format!(
            "sqlite://{}?mode=ro",
            self.dir.path().join("repo.db").display()
        );
        let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
            return (0, 0);
        };
        let sql = "SELECT commit_count, written_count FROM batch_step_execution \
                   ORDER BY id DESC LIMIT 1";
        let row = sqlx::query_as(sql).fetch_optional(&pool).await;
        pool.close().await;
        row.ok().flatten().unwrap_or((0, 0))
    }

    /// `SELECT` of one row of four integers in the target.
    async fn target_row(&self, sql: &str) -> (i64, i64, i64, i64) {
        match self.kind {
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.target).await.unwrap();
                sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.target).await.unwrap();
                sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
            }
            Kind::MySql => {
                let pool = sqlx::MySqlPool::connect(&self.target).await.unwrap();
                sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
            }
        }
    }

    /// Rows, distinct ids, lowest and highest id in the target table.
    async fn ids(&self) -> (i64, i64, i64, i64) {
        self.target_row(
            "SELECT COUNT(*), COUNT(DISTINCT id), COALESCE(MIN(id), 0), COALESCE(MAX(id), 0) \
             FROM air_quality",
        )
        .await
    }

    /// The chunk sequence of the step's row in the target's `sluice_checkpoint`.
    async fn target_commits(&self) -> i64 {
        self.target_row(
            "SELECT commits, execution_id, job_instance_id, COUNT(*) FROM sluice_checkpoint \
             GROUP BY commits, execution_id, job_instance_id",
        )
        .await
        .0
    }
}

/// Every id of `1..=rows` exactly once.
fn every_row_once(rows: u64) -> (i64, i64, i64, i64) {
    let n = rows as i64;
    (n, n, 1, n)
}

/// The process dies right after chunk 3 committed in the target, before the
/// repository recorded it (which then holds 2 chunks); the run after it resumes
/// from the target's checkpoint instead of writing chunk 3 again.
async fn aborted_between_the_two_commits(kind: Kind, mode: Mode) {
    const ROWS: u64 = 10 * CHUNK;
    let load = load(kind, mode, ROWS).await;
    let out = load
        .command()
        .env("SLUICE_FAULT_AFTER_TARGET_COMMIT", "3")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the hook did not fire: {}",
        text(&out)
    );
    assert_eq!(
        load.repository().await,
        (2, 2 * CHUNK as i64),
        "{}",
        text(&out)
    );
    assert_eq!(load.target_commits().await, 3, "{}", text(&out));
    assert_eq!(load.ids().await, every_row_once(3 * CHUNK));

    let out = load.run_after_lease();
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("resumed execution 1"), "{t}");
    assert!(t.contains("resuming from the target's checkpoint"), "{t}");
    assert_eq!(
        load.ids().await,
        every_row_once(ROWS),
        "every row exactly once"
    );
    let chunks = (ROWS / CHUNK) as i64;
    assert_eq!(load.repository().await, (chunks, ROWS as i64));
    assert_eq!(load.target_commits().await, chunks);
}

/// Killed with SIGKILL once the repository records a few chunks (how far the
/// target got past them is up to the scheduler), then run again.
async fn killed_mid_load(kind: Kind, mode: Mode) {
    const ROWS: u64 = 100 * CHUNK;
    let load = load(kind, mode, ROWS).await;
    // Somewhere between 5 and 35 chunks in, varying from run to run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let at = (5 + nanos % 31) * CHUNK;
    let mut child = load
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if load.repository().await.1 >= at as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the load never got to {at} rows");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the load ended before {at} rows were committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (recorded_chunks, recorded) = load.repository().await;
    assert!(recorded < ROWS as i64, "killed too late: {recorded}");
    // The target commits first: it is never behind the repository.
    let target_chunks = load.target_commits().await;
    assert!(
        target_chunks >= recorded_chunks,
        "{target_chunks} < {recorded_chunks}"
    );

    let out = load.run_after_lease();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("resumed execution 1"), "{t}");
    // Killed between the two commits: the chunks the repository missed are not
    // written again (upserts would hide it in the rows, not in the resume point).
    assert_eq!(
        t.contains("resuming from the target's checkpoint"),
        target_chunks > recorded_chunks,
        "target {target_chunks} chunks, repository {recorded_chunks}: {t}"
    );
    assert_eq!(
        load.ids().await,
        every_row_once(ROWS),
        "every row exactly once"
    );
    assert_eq!(
        load.repository().await,
        ((ROWS / CHUNK) as i64, ROWS as i64)
    );
}

/// The four scenarios on one target database.
/// One test: `$f($kind, $mode)`.
macro_rules! case {
    ($name:ident, $f:ident, $kind:expr, $mode:expr) => {
        #[tokio::test]
        async fn $name() {
            $f($kind, $mode).await;
        }
    };
}

macro_rules! on {
    ($db:ident, $kind:expr) => {
        mod $db {
            use super::*;

            case!(
                append_aborted_between_the_two_commits,
                aborted_between_the_two_commits,
                $kind,
                Mode::Append
            );
            case!(
                upsert_aborted_between_the_two_commits,
                aborted_between_the_two_commits,
                $kind,
                Mode::Upsert
            );
            case!(append_killed_mid_load, killed_mid_load, $kind, Mode::Append);
            case!(upsert_killed_mid_load, killed_mid_load, $kind, Mode::Upsert);
        }
    };
}

on!(sqlite, Kind::Sqlite);
on!(postgres, Kind::Postgres);
on!(mariadb, Kind::MySql);
