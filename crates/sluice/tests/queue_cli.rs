//! `sluice queue pause/resume` and `sluice queue dlq delete` against the queue in
//! the repository's SQLite file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::bin::{BIN, text};
use sluice_queue::{Broker, FailOutcome, NewTask, SqlBroker, TaskState};

/// `sluice queue ARGS -c CONFIG`.
fn queue(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn queue_pause_resume_and_dlq_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("repo.db");
    let cfg = crate::bin::jobs_config(dir.path(), &format!("sqlite://{}", db.display()), "");
    let broker = SqlBroker::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let q = "cli-q";
    for i in 0..2 {
        broker
            .enqueue(
                NewTask::new("t", serde_json::json!(i))
                    .queue(q)
                    .max_attempts(1),
            )
            .await
            .unwrap();
    }
    let leases = broker.lease(q, 2, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), 2);
    for l in &leases {
        assert_eq!(
            broker.fail(&l.as_ref(), "boom", None).await.unwrap(),
            FailOutcome::Dead
        );
    }
    let (gone, kept) = (leases[0].task.id, leases[1].task.id);

    let o = queue(&cfg, &["pause", q]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(broker.paused_queues().await.unwrap(), [q]);
    let o = queue(&cfg, &["stats"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with(q) && l.ends_with("  paused")),
        "{}",
        text(&o)
    );
    let o = queue(&cfg, &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["paused"], true, "{v}");
    let o = queue(&cfg, &["resume", q]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(broker.paused_queues().await.unwrap().is_empty());

    let o = queue(&cfg, &["dlq", "delete", q, &gone.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deleted 1 dead task(s) of queue cli-q"),
        "{}",
        text(&o)
    );
    assert_eq!(broker.status(q, gone).await.unwrap(), None);
    assert_eq!(
        broker.status(q, kept).await.unwrap().map(|s| s.state),
        Some(TaskState::Dead)
    );
    // An id that is not dead (any more): exit 2, saying so.
    let o = queue(&cfg, &["dlq", "delete", q, &gone.to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not in the dead-letter queue"),
        "{}",
        text(&o)
    );
}
