//! A batch job built in Rust: a CSV file → a custom processor (a closure) → an
//! upserting SQLite table, recorded in a SQLite job repository.
//!
//! ```sh
//! cargo run -p sluice-batch --example custom_job
//! ```
//!
//! Run it twice: the second run finds the instance COMPLETED and says so; delete
//! `target/custom-job/` to start over.

use std::io::Write;
use std::sync::Arc;

use serde_json::{Value, json};
use sluice_batch::model::Params;
use sluice_batch::readers::CsvReader;
use sluice_batch::repository::{RepoError, Repository, SqlRepository};
use sluice_batch::writers::{Column, SqlWriter, SqlWriterOptions};
use sluice_batch::{ChunkStep, Job, JobRunner, NoProgress, ProcessError, RunOptions, Step};

/// The custom processor: parse numbers, grade the air, drop rows without a reading.
fn grade(item: &Value) -> Result<Option<Value>, ProcessError> {
    let pm10 = match item["pm10"].as_str() {
        None | Some("-") => return Ok(None), // no reading: filtered
        Some(v) => v
            .parse::<f64>()
            .map_err(|e| ProcessError::item(format!("pm10 {v:?} is not a number: {e}")))?,
    };
    let grade = match pm10 {
        x if x <= 30.0 => "good",
        x if x <= 80.0 => "moderate",
        x if x <= 150.0 => "bad",
        _ => "very bad",
    };
    Ok(Some(json!({
        "station": item["station"],
        "ts": item["ts"],
        "pm10": pm10,
        "grade": grade,
    })))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new("target/custom-job");
    std::fs::create_dir_all(dir)?;
    let csv = dir.join("air.csv");
    let mut f = std::fs::File::create(&csv)?;
    writeln!(f, "station,ts,pm10")?;
    for (i, station) in ["중구", "종로구", "강남구", "송파구"].iter().enumerate() {
        for h in 0..24 {
            let pm10 = if h == 3 {
                "-".to_owned()
            } else {
                format!("{}", 20 + i * 25 + h)
            };
            writeln!(f, "{station},2026-11-25 {h:02}:00,{pm10}")?;
        }
    }
    writeln!(f, "마포구,2026-11-25 00:00,n/a")?; // a bad reading: skipped, recorded
    drop(f);

    let repo =
        SqlRepository::connect(&format!("sqlite://{}", dir.join("repo.db").display())).await?;
    repo.migrate().await?;
    let writer = SqlWriter::new(
        &format!("sqlite://{}", dir.join("data.db").display()),
        SqlWriterOptions::new("air_grade")
            .key(["station", "ts"])
            .create(true)
            .columns(vec![
                Column::new("station", "TEXT").not_null(),
                Column::new("ts", "TEXT").not_null(),
                Column::new("pm10", "DOUBLE PRECISION"),
                Column::new("grade", "TEXT"),
            ]),
    )?;
    let job = Job::new("air-grade").step(Step::Chunk(
        ChunkStep::new("grade", CsvReader::new(&csv), writer)
            .chunk(25)
            .skip_limit(3)
            .processor(grade),
    ));
    let mut params = Params::new();
    params.insert("day".into(), "2026-11-25".into());
    let runner = JobRunner::new(Arc::new(repo.clone()));
    match runner
        .run(job, &params, RunOptions::default(), &NoProgress)
        .await
    {
        Ok(report) => {
            println!(
                "execution {} {}",
                report.execution.id, report.execution.status
            );
            for s in &report.steps {
                println!("  step {} {}: {:?}", s.step_name, s.status, s.counts);
            }
            for skip in repo.skips(report.execution.id).await? {
                println!("  skipped row {}: {}", skip.position, skip.reason);
            }
        }
        Err(e @ RepoError::AlreadyCompleted { .. }) => println!("{e}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
