//! `examples/portal-load.toml` against the simulated portal: a dataset of 25,000
//! rows (250 pages of 100) behind a quota of 100 calls a day, of which the load
//! leaves 10 to the gateway. A manual clock stands in for the days: each day's
//! run loads 90 pages, suspends with the reset time, and the next day's run
//! resumes where it stopped, so the whole dataset lands in three days, every row
//! exactly once and every page fetched once.
//!
//! ```sh
//! cargo run -p sluice --example portal_load
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::config::{Env, Source};
use sluice::runtime::Runtime;
use sluice_batch::model::{BatchStatus, Params};
use sluice_batch::{JobRunner, NoProgress, RunOptions};
use sluice_core::ManualClock;
use sluice_testkit::{SimConfig, SimUpstream};

const ROWS: usize = 25_000;
const KEY: &str = "example+Key/with==";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    sluice::init_tls();
    let sim = SimUpstream::start(SimConfig {
        latency: Duration::from_millis(2),
        service_key: KEY.to_owned(),
        daily_quota: Some(100),
        rows_per_sido: ROWS,
        ..Default::default()
    })
    .await?;
    let dir = std::env::temp_dir().join(format!("sluice-portal-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/portal-load.toml");
    let text = std::fs::read_to_string(&example)?
        .replace(
            "https://apis.data.go.kr/B552584/ArpltnInforInqireSvc",
            &sim.base_url(),
        )
        .replace("portal-repo.db", &dir.join("repo.db").display().to_string())
        .replace("portal.db", &dir.join("portal.db").display().to_string());
    // 14:00 in Seoul on 2025-11-26: the reset is ten hours away.
    let clock = ManualClock::new(1_764_133_200_000);
    let src = Source {
        file: example,
        text,
    };
    let env = Env {
        var: &|n| (n == "DATA_GO_KR_KEY").then(|| KEY.to_owned()),
        clock: Arc::new(clock.clone()),
        secrets_optional: false,
    };
    let settings = src.parse()?.resolve(&src, &env)?;
    let rt = Runtime::new(settings);
    let repo = rt.repository().await?;
    let params = Params::from([("sido".to_owned(), "서울".to_owned())]);
    for day in 1.. {
        let job = rt.job("portal-mirror", &params)?;
        let report = JobRunner::new(repo.clone())
            .run(job, &params, RunOptions::default(), &NoProgress)
            .await?;
        let e = &report.execution;
        println!(
            "day {day}: execution {} {} — {} rows in all, {} calls to the portal today\n  {}",
            e.id,
            e.status,
            report.steps[0].counts.written,
            sim.quota_used(),
            if e.exit_message.is_empty() {
                "done"
            } else {
                &e.exit_message
            }
        );
        match (e.status, report.resume_at_ms) {
            (BatchStatus::Stopped, Some(at)) if report.suspended => {
                clock.set(at + 1_000);
                sim.advance_days(1);
            }
            _ => break,
        }
    }
    println!(
        "{} pages fetched for {ROWS} rows; data in {}",
        sim.calls(),
        dir.display()
    );
    Ok(())
}
