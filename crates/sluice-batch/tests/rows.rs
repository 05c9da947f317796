//! A CSV file into a SQL table through a chunk step with no processor: the reader
//! hands the writer rows of text (`Rows`) instead of JSON items. The same loads
//! as with items: bad rows skipped, a refused row found item by item, typed
//! columns cast, chunks committed with the repository's checkpoint (in one
//! transaction when the table is in the repository's database), a restart
//! idempotent.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use sluice_batch::model::Params;
use sluice_batch::readers::CsvReader;
use sluice_batch::repository::{Repository, SqlRepository};
use sluice_batch::writers::{Column, SqlWriter, SqlWriterOptions};
use sluice_batch::{BatchStatus, ChunkStep, Job, JobRunner, NoProgress, RunOptions, Step};
use sqlx::Row;

/// `n` rows; the rows numbered in `short` miss a field, the one numbered
/// `no_station` has an empty (null) station.
fn write_csv(path: &Path, n: u64, short: &[u64], no_station: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,station,pm10,pm25,note").unwrap();
    for i in 1..=n {
        if short.contains(&i) {
            writeln!(f, "{i},station-{i},{}", i % 150).unwrap();
        } else if i == no_station {
            writeln!(f, "{i},,{},{}.5,\"tab\there\"", i % 150, i % 80).unwrap();
        } else {
            writeln!(
                f,
                "{i},\"station, {}\",{},{}.5,\"측정 \\ \"\"{i}\"\"\"",
                i % 7,
                i % 150,
                i % 80
            )
            .unwrap();
        }
    }
    f.flush().unwrap();
}

fn writer(url: &str) -> SqlWriter {
    SqlWriter::new(
        url,
        SqlWriterOptions::new("air")
            .key(["id"])
            .create(true)
            .columns(vec![
                Column::new("id", "BIGINT").not_null(),
                Column::new("station", "TEXT").not_null(),
                Column::new("pm10", "BIGINT"),
                Column::new("pm25", "DOUBLE PRECISION"),
                Column::new("note", "TEXT"),
            ]),
    )
    .unwrap()
}

async fn run(repo: &SqlRepository, csv: &Path, url: &str) -> sluice_batch::RunReport {
    let job = Job::new("rows").step(Step::Chunk(
        ChunkStep::new("load", CsvReader::new(csv), writer(url))
            .chunk(300)
            .skip_limit(5),
    ));
    JobRunner::new(Arc::new(repo.clone()))
        .run(job, &Params::new(), RunOptions::default(), &NoProgress)
        .await
        .unwrap()
}

/// Count, sum of ids, sum of pm10, sum of pm25 and one row's note, as the
/// database has them.
async fn check(url: &str) -> (i64, i64, i64, f64, String) {
    let sql = "SELECT COUNT(*), SUM(id), SUM(pm10), SUM(pm25), \
               (SELECT note FROM air WHERE id = 2) FROM air";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let r = sqlx::query(sql).fetch_one(&pool).await.unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let sql = "SELECT COUNT(*), SUM(id)::bigint, SUM(pm10)::bigint, SUM(pm25), \
                   (SELECT note FROM air WHERE id = 2) FROM air";
        let r = sqlx::query(sql).fetch_one(&pool).await.unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    }
}

fn expected(n: u64, missing: &[u64]) -> (i64, i64, i64, f64, String) {
    let kept: Vec<u64> = (1..=n).filter(|i| !missing.contains(i)).collect();
    (
        kept.len() as i64,
        kept.iter().sum::<u64>() as i64,
        kept.iter().map(|i| i % 150).sum::<u64>() as i64,
        kept.iter().map(|i| (i % 80) as f64 + 0.5).sum(),
        "측정 \\ \"2\"".to_owned(),
    )
}

async fn load_and_reload(repo_url: &str, data_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("air.csv");
    write_csv(&csv, 1000, &[17, 640], 333);
    let repo = SqlRepository::connect(repo_url).await.unwrap();
    repo.migrate().await.unwrap();

    let report = run(&repo, &csv, data_url).await;
    assert_eq!(report.execution.status, BatchStatus::Completed);
    let c = &report.steps[0].counts;
    assert_eq!(
        (c.read, c.written, c.skipped, c.commits),
        (1000, 997, 3, 4),
        "{c:?}"
    );
    let skips = repo.skips(report.execution.id).await.unwrap();
    let mut positions: Vec<u64> = skips.iter().map(|s| s.position).collect();
    positions.sort_unstable();
    assert_eq!(positions, [17, 333, 640]);
    let refused = skips.iter().find(|s| s.position == 333).unwrap();
    assert_eq!(refused.phase, "write");
    let item = refused.item.as_deref().unwrap();
    assert!(
        item.contains("\"station\":null") && item.contains("\"id\":\"333\""),
        "{item}"
    );
    assert_eq!(check(data_url).await, expected(1000, &[17, 333, 640]));

    // The table exists and holds every key: a new instance upserts the same rows.
    let job = Job::new("rows-again").step(Step::Chunk(
        ChunkStep::new("load", CsvReader::new(&csv), writer(data_url))
            .chunk(1000)
            .skip_limit(5),
    ));
    let report = JobRunner::new(Arc::new(repo.clone()))
        .run(job, &Params::new(), RunOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.execution.status, BatchStatus::Completed);
    assert_eq!(check(data_url).await, expected(1000, &[17, 333, 640]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let repo = format!("sqlite://{}", dir.path().join("repo.db").display());
    let data = format!("sqlite://{}", dir.path().join("data.db").display());
    load_and_reload(&repo, &data).await;
    // The values are stored with the columns' types, as from text.
    let pool = sqlx::SqlitePool::connect(&data).await.unwrap();
    let types: (String, String, String, String) = sqlx::query_as(
        "SELECT typeof(id), typeof(pm10), typeof(pm25), typeof(note) FROM air WHERE id = 5",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        (
            "integer".into(),
            "integer".into(),
            "real".into(),
            "text".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_into_the_repository_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("both.db").display());
    load_and_reload(&url, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_into_postgres() {
    let data = common::ServerDb::new(common::Server::Postgres, "sluice_rows").await;
    let dir = tempfile::tempdir().unwrap();
    let repo = format!("sqlite://{}", dir.path().join("repo.db").display());
    load_and_reload(&repo, &data.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_into_the_repository_postgres_database() {
    let db = common::ServerDb::new(common::Server::Postgres, "sluice_rows").await;
    load_and_reload(&db.url, &db.url).await;
}
