//! An nginx access log through a chunk step into per-minute stats (`log_stats`)
//! on SQLite, PostgreSQL and MariaDB: counts, errors and p50/p95/p99 against
//! values computed here; a run that fails mid-way and is restarted, and runs
//! after the log grew and rotated, give the stats of one uninterrupted run.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_batch::model::Params;
use sluice_batch::readers::{LogFormat, LogReader};
use sluice_batch::repository::{Repository, SqlRepository};
use sluice_batch::writers::log_stats::{LogStatsSpec, LogStatsWriter, Rule};
use sluice_batch::{
    BatchStatus, CheckpointStore, Chunk, ChunkStep, Committed, Job, JobRunner, NoProgress,
    RunOptions, SqlStatement, Step, WriteError, Writer,
};

/// 2026-12-04T10:00:00Z.
const BASE_MS: i64 = 1_796_378_400_000;

/// Line `i`: its time (ms), method, path, status and request time (s).
fn fields(i: u64) -> (i64, &'static str, String, u16, f64) {
    let t = BASE_MS + (i as i64) * 137_000 / 1000;
    let method = if i.is_multiple_of(3) { "POST" } else { "GET" };
    let status = if i.is_multiple_of(17) {
        502
    } else if i.is_multiple_of(11) {
        404
    } else {
        200
    };
    let rt = ((i * 7919) % 1000 + 1) as f64 / 1000.0;
    (t, method, format!("/r{}", i % 5), status, rt)
}

fn append(path: &Path, from: u64, to: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        let (t, method, path, status, rt) = fields(i);
        let time = chrono::DateTime::from_timestamp_millis(t)
            .unwrap()
            .format("%d/%b/%Y:%H:%M:%S +0000");
        writeln!(
            f,
            "10.0.0.{} - - [{time}] \"{method} {path}?n={i} HTTP/1.1\" {status} {} \"-\" \"test\" {rt:.3} {rt:.3}",
            i % 200,
            i * 3
        )
        .unwrap();
    }
}

/// One row of the stats table, as compared.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    requests: i64,
    errors: i64,
    p: [f64; 3],
    top: String,
}

/// What the table must hold for lines `0..n`: by (window start, method).
fn expected(n: u64) -> BTreeMap<(i64, String), Row> {
    type Group = (Vec<f64>, i64, BTreeMap<String, i64>);
    let mut groups: BTreeMap<(i64, String), Group> = BTreeMap::new();
    // Whole seconds in the log: the window of a line is that of its second.
    for i in 0..n {
        let (t, method, path, status, rt) = fields(i);
        let t = t - t.rem_euclid(1000);
        let g = groups
            .entry((t - t.rem_euclid(60_000), method.to_owned()))
            .or_default();
        g.0.push(rt);
        g.1 += i64::from(status >= 500);
        *g.2.entry(path).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|(k, (mut v, errors, paths))| {
            v.sort_by(f64::total_cmp);
            let q = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
            let mut top: Vec<(String, i64)> = paths.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            top.truncate(3);
            let row = Row {
                requests: v.len() as i64,
                errors,
                p: [q(0.5), q(0.95), q(0.99)],
                top: serde_json::to_string(&top).unwrap(),
            };
            (k, row)
        })
        .collect()
}

fn writer(url: &str) -> LogStatsWriter {
    LogStatsWriter::new(
        url,
        LogStatsSpec {
            table: "web_stats".into(),
            window: std::time::Duration::from_secs(60),
            group_by: vec!["method".into()],
            value: Some("request_time".into()),
            error_when: Rule::parse("status >= 500").unwrap(),
            count_when: vec![("not_found".into(), Rule::parse("status == 404").unwrap())],
            top: Some(("path".into(), 3, 30)),
            time_field: "time_ms".into(),
        },
    )
    .unwrap()
}

/// A writer that fails its `fail_at`-th chunk (1-based) before writing it.
struct FailOnce {
    inner: LogStatsWriter,
    chunks: u64,
    fail_at: u64,
}

#[async_trait]
impl Writer for FailOnce {
    async fn open(&mut self, cp: Option<&serde_json::Value>) -> Result<(), WriteError> {
        self.inner.open(cp).await
    }

    fn checkpoint_store(&mut self) -> Option<&mut dyn CheckpointStore> {
        self.inner.checkpoint_store()
    }

    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        commit: &[SqlStatement],
    ) -> Result<Committed, WriteError> {
        self.chunks += 1;
        if self.chunks == self.fail_at {
            return Err(WriteError::Fatal("injected failure".into()));
        }
        self.inner.write(chunk, commit).await
    }
}

async fn run(
    repo: &SqlRepository,
    log: &Path,
    w: impl Writer + 'static,
    rerun: bool,
) -> sluice_batch::RunReport {
    let job = Job::new("web-stats").step(Step::Chunk(
        ChunkStep::new(
            "stats",
            LogReader::new(log, LogFormat::named("combined").unwrap()),
            w,
        )
        .chunk(250),
    ));
    let options = RunOptions {
        rerun,
        ..RunOptions::default()
    };
    JobRunner::new(Arc::new(repo.clone()))
        .run(job, &Params::new(), options, &NoProgress)
        .await
        .unwrap()
}

async fn table(url: &str) -> BTreeMap<(i64, String), Row> {
    type Raw = (i64, String, i64, i64, f64, f64, f64, String, i64);
    let sql = "SELECT window_start, method, requests, errors, p50, p95, p99, top, not_found_count FROM web_stats";
    let rows: Vec<Raw> = if url.starts_with("sqlite") {
        let p = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&p).await.unwrap()
    } else if url.starts_with("postgres") {
        let p = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&p).await.unwrap()
    } else {
        let p = sqlx::MySqlPool::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&p).await.unwrap()
    };
    rows.into_iter()
        .map(|r| {
            assert!(r.8 >= 0);
            (
                (r.0, r.1),
                Row {
                    requests: r.2,
                    errors: r.3,
                    p: [r.4, r.5, r.6],
                    top: r.7,
                },
            )
        })
        .collect()
}

/// Same counts and top values; percentiles within 1 %.
fn assert_stats(got: &BTreeMap<(i64, String), Row>, want: &BTreeMap<(i64, String), Row>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(
            (g.requests, g.errors, &g.top),
            (w.requests, w.errors, &w.top),
            "{k:?}"
        );
        for (a, b) in g.p.iter().zip(&w.p) {
            assert!(
                (a - b).abs() <= b * 0.01 + 1e-9,
                "{k:?}: {:?} vs {:?}",
                g.p,
                w.p
            );
        }
    }
}

async fn stats_into(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqlRepository::connect(&format!(
        "sqlite://{}",
        dir.path().join("repo.db").display()
    ))
    .await
    .unwrap();
    repo.migrate().await.unwrap();
    let log = dir.path().join("access.log");
    append(&log, 0, 3000);

    // Fails at its 5th chunk: 4 chunks (1000 lines) are in the table.
    let failing = FailOnce {
        inner: writer(url),
        chunks: 0,
        fail_at: 5,
    };
    let report = run(&repo, &log, failing, false).await;
    assert_eq!(report.execution.status, BatchStatus::Failed);
    assert_stats(&table(url).await, &expected(1000));

    // Restarted: it resumes after chunk 4.
    let report = run(&repo, &log, writer(url), false).await;
    assert_eq!(report.execution.status, BatchStatus::Completed);
    assert!(report.execution.id > 0);
    // The instance's counts: 1000 before the failure, the other 2000 now.
    assert_eq!(report.steps[0].counts.read, 3000);
    assert_stats(&table(url).await, &expected(3000));

    // The log grows, is rotated, and grows again; the next run of the job
    // (a new start of the completed instance) goes on where the last stopped.
    append(&log, 3000, 3400);
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    append(&log, 3400, 3500);
    let report = run(&repo, &log, writer(url), true).await;
    assert_eq!(report.execution.status, BatchStatus::Completed);
    assert_eq!(report.steps[0].counts.read, 500);
    assert_stats(&table(url).await, &expected(3500));

    // Nothing new: nothing changes.
    let report = run(&repo, &log, writer(url), true).await;
    assert_eq!(report.steps[0].counts.read, 0);
    assert_stats(&table(url).await, &expected(3500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_log_stats_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    stats_into(&format!(
        "sqlite://{}",
        dir.path().join("stats.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_log_stats_into_postgres() {
    let db = common::ServerDb::new(common::Server::Postgres, "sluice_logs").await;
    stats_into(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_log_stats_into_mariadb() {
    let db = common::ServerDb::new(common::Server::MySql, "sluice_logs").await;
    stats_into(&db.url).await;
}
