//! The SQL job repository, each scenario against SQLite (a temporary file) and
//! PostgreSQL (a fresh database per test on `SLUICE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `scripts/test` starts one).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_batch::repository::{Heartbeat, Launch, RepoError, Repository, SqlRepository};
use sluice_batch::{
    BatchStatus, Job, JobRunner, NoProgress, NonIdentifying, Params, RunOptions, SkipRecord, Step,
    StepCounts, StepExecution, Tasklet, TaskletError,
};
use sluice_core::ManualClock;

mod common;
use common::{Server, ServerDb};

const LONG: Duration = Duration::from_secs(60);

/// A database for one test; a PostgreSQL one is dropped with it.
struct TestDb {
    url: String,
    _server: Option<ServerDb>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("repo.db").display());
        TestDb {
            url,
            _server: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> TestDb {
        let db = ServerDb::new(Server::Postgres, "sluice_t").await;
        TestDb {
            url: db.url.clone(),
            _server: Some(db),
            _dir: None,
        }
    }

    async fn repo(&self) -> SqlRepository {
        let repo = SqlRepository::connect(&self.url).await.unwrap();
        repo.migrate().await.unwrap();
        repo
    }
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts (or resumes) an execution of `job` for `owner` with a long lease, no
/// rerun.
async fn start(repo: &SqlRepository, job: &str, params: &Params, owner: &str) -> Launch {
    repo.start_execution(job, params, owner, LONG, false)
        .await
        .unwrap()
}

/// The last execution of `step` in instance `instance_id`; it must exist.
async fn last_step(repo: &SqlRepository, instance_id: i64, step: &str) -> StepExecution {
    repo.last_step_execution(instance_id, step)
        .await
        .unwrap()
        .unwrap()
}

/// Runs each scenario once on SQLite and once on PostgreSQL, as separate tests.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

on_both!(
    migrate_is_idempotent_and_concurrent,
    full_lifecycle,
    live_lease_means_already_running,
    racing_processes_one_wins,
    expired_lease_is_taken_over,
    completed_needs_rerun,
    request_stop_reaches_heartbeat,
    non_identifying_params_resume_one_instance,
);

async fn migrate_is_idempotent_and_concurrent(db: &TestDb) {
    // Two processes migrating a fresh database at once, then again.
    let a = SqlRepository::connect(&db.url).await.unwrap();
    let b = SqlRepository::connect(&db.url).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    a.migrate().await.unwrap();
    b.migrate().await.unwrap();
    // The schema works.
    let launch = start(&a, "j", &Params::new(), "a").await;
    assert_eq!(
        b.execution(launch.execution.id).await.unwrap().0.id,
        launch.execution.id
    );
}

async fn full_lifecycle(db: &TestDb) {
    let repo = db.repo().await;
    let p = params(&[("date", "2025-01-01"), ("city", "서울")]);
    let launch = start(&repo, "load", &p, "host-1").await;
    assert!(launch.previous.is_none());
    assert_eq!(launch.instance.job_name, "load");
    assert_eq!(launch.instance.params, p);
    assert_eq!(
        launch.instance.params_key,
        sluice_batch::model::params_key(&p)
    );
    let exec = launch.execution.clone();
    assert_eq!(exec.status, BatchStatus::Started);
    assert_eq!(exec.owner, "host-1");
    assert_eq!(exec.instance_id, launch.instance.id);
    assert!(exec.lease_until.unwrap() > exec.started_at.unwrap());
    assert_eq!(
        repo.heartbeat(exec.id, "host-1", LONG).await.unwrap(),
        Heartbeat::Alive
    );

    let mut step = repo
        .start_step(exec.id, "read-csv", StepCounts::default(), &json!(null))
        .await
        .unwrap();
    assert_eq!(step.status, BatchStatus::Started);
    assert_eq!(step.checkpoint, json!(null));

    // One chunk with two skips, one of them with a huge multi-byte item.
    step.counts.add(&StepCounts {
        read: 10,
        processed: 8,
        filtered: 1,
        written: 7,
        skipped: 2,
        commits: 1,
        rollbacks: 0,
    });
    step.checkpoint = json!({"line": 11});
    let huge = "가".repeat(3000); // 9000 bytes
    let skips = vec![
        SkipRecord {
            step_execution_id: step.id,
            step_name: step.step_name.clone(),
            position: 4,
            phase: "read".into(),
            reason: "row 4: 3 fields, expected 5".into(),
            item: Some("a,b,c".into()),
        },
        SkipRecord {
            step_execution_id: step.id,
            step_name: step.step_name.clone(),
            position: 9,
            phase: "write".into(),
            reason: "constraint".into(),
            item: Some(huge.clone()),
        },
    ];
    repo.commit_chunk(&step, "host-1", &skips).await.unwrap();
    repo.commit_chunk(&step, "host-1", &[]).await.unwrap();

    step.status = BatchStatus::Completed;
    step.exit_message = "done".into();
    repo.finish_step(&step).await.unwrap();
    let step2 = repo
        .start_step(
            exec.id,
            "index",
            StepCounts::default(),
            &json!({"k": [1, 2]}),
        )
        .await
        .unwrap();
    repo.finish_execution(exec.id, BatchStatus::Completed, "")
        .await
        .unwrap();

    let (got, steps) = repo.execution(exec.id).await.unwrap();
    assert_eq!(got.status, BatchStatus::Completed);
    assert!(got.ended_at.is_some());
    assert_eq!(got.params, p);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].id, step.id);
    assert_eq!(steps[0].status, BatchStatus::Completed);
    assert_eq!(steps[0].counts, step.counts);
    assert_eq!(steps[0].checkpoint, json!({"line": 11}));
    assert_eq!(steps[0].exit_message, "done");
    assert!(steps[0].ended_at.is_some());
    assert_eq!(steps[1].id, step2.id);
    assert_eq!(steps[1].checkpoint, json!({"k": [1, 2]}));

    let last = last_step(&repo, launch.instance.id, "read-csv").await;
    assert_eq!(last.id, step.id);
    assert!(
        repo.last_step_execution(launch.instance.id, "nope")
            .await
            .unwrap()
            .is_none()
    );

    let recorded = repo.skips(exec.id).await.unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0], skips[0]);
    assert_eq!(recorded[1].position, 9);
    let item = recorded[1].item.as_deref().unwrap();
    assert!(item.len() <= 4096 && item.len() > 4090, "{}", item.len());
    assert!(huge.starts_with(item));

    // A second job, to see the listing filter.
    let other = start(&repo, "other", &Params::new(), "host-1").await;
    let mine = repo.executions(Some("load"), 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, exec.id);
    let all = repo.executions(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![other.execution.id, exec.id]
    );
    assert_eq!(repo.executions(None, 1).await.unwrap().len(), 1);

    assert!(matches!(
        repo.execution(999_999).await,
        Err(RepoError::NoSuchExecution(999_999))
    ));
    assert!(repo.skips(999_999).await.unwrap().is_empty());
}

async fn live_lease_means_already_running(db: &TestDb) {
    let repo = db.repo().await;
    let p = params(&[("day", "1")]);
    let first = start(&repo, "j", &p, "host-a").await;
    match repo.start_execution("j", &p, "host-b", LONG, true).await {
        Err(RepoError::AlreadyRunning {
            job,
            execution_id,
            owner,
            lease_until,
        }) => {
            assert_eq!(job, "j");
            assert_eq!(execution_id, first.execution.id);
            assert_eq!(owner, "host-a");
            assert_eq!(Some(lease_until), first.execution.lease_until);
        }
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    // Other parameters are another instance.
    start(&repo, "j", &params(&[("day", "2")]), "host-b").await;
    // Once finished, the instance is free again.
    repo.finish_execution(first.execution.id, BatchStatus::Failed, "boom")
        .await
        .unwrap();
    let again = start(&repo, "j", &p, "host-b").await;
    assert_eq!(again.instance.id, first.instance.id);
    assert_eq!(again.previous.unwrap().status, BatchStatus::Failed);
}

async fn racing_processes_one_wins(db: &TestDb) {
    // Two "processes": separate repositories, separate pools.
    let a = Arc::new(db.repo().await);
    let b = Arc::new(SqlRepository::connect(&db.url).await.unwrap());
    const PER_PROCESS: usize = 4;
    for round in 0..20 {
        // Even rounds reuse one instance; odd rounds also race to create theirs.
        let p = if round % 2 == 0 {
            params(&[("shared", "yes")])
        } else {
            params(&[("round", &round.to_string())])
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2 * PER_PROCESS));
        let mut tasks = Vec::new();
        for (name, repo) in [("a", &a), ("b", &b)] {
            for i in 0..PER_PROCESS {
                let (repo, barrier, p) = (repo.clone(), barrier.clone(), p.clone());
                let owner = format!("{name}-{i}");
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    repo.start_execution("race", &p, &owner, LONG, true).await
                }));
            }
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(launch) => winners.push(launch),
                Err(RepoError::AlreadyRunning { execution_id, .. }) => losers.push(execution_id),
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let won = winners[0].execution.id;
        assert!(
            losers.iter().all(|&id| id == won),
            "round {round}: {losers:?} vs {won}"
        );
        a.finish_execution(won, BatchStatus::Completed, "")
            .await
            .unwrap();
    }
    let runs = a.executions(Some("race"), 100).await.unwrap();
    assert_eq!(runs.len(), 20);
    assert!(runs.iter().all(|e| e.status == BatchStatus::Completed));
}

async fn expired_lease_is_taken_over(db: &TestDb) {
    let repo = db.repo().await;
    let p = params(&[("file", "big.csv")]);
    let dead = repo
        .start_execution("import", &p, "dead-host", Duration::from_millis(200), false)
        .await
        .unwrap();
    let mut step = repo
        .start_step(
            dead.execution.id,
            "load",
            StepCounts::default(),
            &json!(null),
        )
        .await
        .unwrap();
    step.counts.read = 500;
    step.counts.written = 500;
    step.counts.commits = 5;
    step.checkpoint = json!({"line": 501});
    repo.commit_chunk(&step, "dead-host", &[]).await.unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;

    let next = start(&repo, "import", &p, "new-host").await;
    assert_eq!(next.instance.id, dead.instance.id);
    let previous = next.previous.expect("the dead execution");
    assert_eq!(previous.id, dead.execution.id);
    assert_eq!(previous.status, BatchStatus::Abandoned);
    assert!(
        previous
            .exit_message
            .starts_with("process dead-host died: lease expired at "),
        "{}",
        previous.exit_message
    );

    let (stored, steps) = repo.execution(dead.execution.id).await.unwrap();
    assert_eq!(stored.status, BatchStatus::Abandoned);
    assert_eq!(stored.exit_message, previous.exit_message);
    assert_eq!(steps[0].status, BatchStatus::Abandoned);

    // The new execution resumes from the dead one's last committed chunk.
    let resume = last_step(&repo, next.instance.id, "load").await;
    assert_eq!(resume.id, step.id);
    assert_eq!(resume.checkpoint, json!({"line": 501}));
    assert_eq!(resume.counts.read, 500);

    // The dead process wakes up: it has lost the instance.
    assert!(matches!(
        repo.heartbeat(dead.execution.id, "dead-host", LONG).await,
        Err(RepoError::LeaseLost(id)) if id == dead.execution.id
    ));
    step.checkpoint = json!({"line": 601});
    assert!(matches!(
        repo.commit_chunk(&step, "dead-host", &[]).await,
        Err(RepoError::LeaseLost(id)) if id == dead.execution.id
    ));
    let unchanged = last_step(&repo, next.instance.id, "load").await;
    assert_eq!(unchanged.checkpoint, json!({"line": 501}));
    // The same owner name with another execution id does not pass either.
    assert!(matches!(
        repo.heartbeat(dead.execution.id, "new-host", LONG).await,
        Err(RepoError::LeaseLost(_))
    ));
    assert_eq!(
        repo.heartbeat(next.execution.id, "new-host", LONG)
            .await
            .unwrap(),
        Heartbeat::Alive
    );
    // A late finish of the dead execution neither rewrites its status nor releases
    // the new one's lease.
    repo.finish_execution(dead.execution.id, BatchStatus::Failed, "late")
        .await
        .unwrap();
    let (stored, _) = repo.execution(dead.execution.id).await.unwrap();
    assert_eq!(stored.status, BatchStatus::Abandoned);
    assert_eq!(stored.exit_message, previous.exit_message);
    assert!(matches!(
        repo.start_execution("import", &p, "third", LONG, false).await,
        Err(RepoError::AlreadyRunning { execution_id, .. }) if execution_id == next.execution.id
    ));
}

async fn completed_needs_rerun(db: &TestDb) {
    let repo = db.repo().await;
    let p = params(&[("month", "2025-01")]);
    let first = start(&repo, "report", &p, "h").await;
    repo.finish_execution(first.execution.id, BatchStatus::Completed, "")
        .await
        .unwrap();
    for _ in 0..2 {
        match repo.start_execution("report", &p, "h2", LONG, false).await {
            Err(RepoError::AlreadyCompleted { job, execution_id }) => {
                assert_eq!(job, "report");
                assert_eq!(execution_id, first.execution.id);
            }
            other => panic!("expected AlreadyCompleted, got {other:?}"),
        }
    }
    // The refusal left no claim behind: another owner can rerun at once.
    let rerun = repo
        .start_execution("report", &p, "h3", LONG, true)
        .await
        .unwrap();
    assert!(rerun.previous.is_none());
    assert_eq!(rerun.instance.id, first.instance.id);
    assert_ne!(rerun.execution.id, first.execution.id);
    assert_eq!(repo.executions(Some("report"), 10).await.unwrap().len(), 2);
}

async fn request_stop_reaches_heartbeat(db: &TestDb) {
    let repo = db.repo().await;
    let p = Params::new();
    let launch = start(&repo, "long", &p, "h").await;
    let id = launch.execution.id;
    assert_eq!(
        repo.heartbeat(id, "h", LONG).await.unwrap(),
        Heartbeat::Alive
    );
    assert!(!repo.stop_requested(id).await.unwrap());
    assert!(repo.request_stop(id).await.unwrap());
    // What the chunk loop reads at every chunk boundary.
    assert!(repo.stop_requested(id).await.unwrap());
    assert!(matches!(
        repo.stop_requested(999_999).await,
        Err(RepoError::NoSuchExecution(999_999))
    ));
    assert_eq!(
        repo.execution(id).await.unwrap().0.status,
        BatchStatus::Stopping
    );
    assert_eq!(
        repo.heartbeat(id, "h", LONG).await.unwrap(),
        Heartbeat::StopRequested
    );
    repo.finish_execution(id, BatchStatus::Stopped, "stopped on request")
        .await
        .unwrap();
    assert!(matches!(
        repo.finish_execution(999_999, BatchStatus::Failed, "")
            .await,
        Err(RepoError::NoSuchExecution(999_999))
    ));
    assert!(!repo.request_stop(id).await.unwrap());
    assert!(matches!(
        repo.request_stop(999_999).await,
        Err(RepoError::NoSuchExecution(999_999))
    ));
    // A stopped execution is resumed by the next run.
    let next = start(&repo, "long", &p, "h").await;
    let previous = next.previous.unwrap();
    assert_eq!(previous.id, id);
    assert_eq!(previous.status, BatchStatus::Stopped);
    assert_eq!(previous.exit_message, "stopped on request");
    assert_eq!(
        repo.heartbeat(next.execution.id, "h", LONG).await.unwrap(),
        Heartbeat::Alive
    );
}

/// Issue #14 point 6: parameters named non-identifying are recorded with the
/// execution but left out of the instance key, so a run differing only in them
/// resumes the instance; with every parameter identifying the key is as before.
async fn non_identifying_params_resume_one_instance(db: &TestDb) {
    let repo = db.repo().await;
    let non: NonIdentifying = ["fire_time".to_owned()].into();
    let first_params = params(&[("sido", "서울"), ("fire_time", "2026-12-03T11:00:00+00:00")]);
    let first = repo
        .start_execution_with("load", &first_params, &non, "h", LONG, false)
        .await
        .unwrap();
    assert_eq!(first.instance.params, params(&[("sido", "서울")]));
    assert_eq!(first.instance.params_key, r#"{"sido":"서울"}"#);
    repo.finish_execution(first.execution.id, BatchStatus::Failed, "boom")
        .await
        .unwrap();

    let later = params(&[("sido", "서울"), ("fire_time", "2026-12-03T12:00:00+00:00")]);
    let second = repo
        .start_execution_with("load", &later, &non, "h", LONG, false)
        .await
        .unwrap();
    assert_eq!(second.instance.id, first.instance.id);
    assert_eq!(second.previous.unwrap().id, first.execution.id);
    let (recorded, _) = repo.execution(second.execution.id).await.unwrap();
    assert_eq!(recorded.params, later, "every parameter is recorded");
    assert_eq!(recorded.non_identifying, non);
    repo.finish_execution(second.execution.id, BatchStatus::Completed, "")
        .await
        .unwrap();

    // With fire_time identifying, it is another instance.
    let other = start(&repo, "load", &later, "h").await;
    assert_ne!(other.instance.id, first.instance.id);
    assert!(other.execution.non_identifying.is_empty());
}

/// A repository created before migration 2 (no `non_identifying` column) keeps
/// working: its executions read back with every parameter identifying, and a
/// failed instance is resumed by a run with the same parameters.
#[tokio::test]
async fn a_version_1_repository_is_migrated_and_resumes_its_instances() {
    use sluice_sql::{ConnectSettings, Db, Journal, Migration, Migrator};
    const V1: Migrator = Migrator::new(
        "sluice_batch_migrations",
        0x736C_7569_6365_424D,
        &[Migration::new(
            1,
            include_str!("../migrations/0001_init.sql"),
        )],
    );
    let db = TestDb::sqlite();
    let pool = Db::connect(&db.url, &ConnectSettings::new().create(Journal::Wal))
        .await
        .unwrap();
    V1.run(&pool, 0).await.unwrap();
    pool.execute_script(
        "INSERT INTO batch_job_instance (id, job_name, params_key, params) \
         VALUES (1, 'load', '{\"day\":\"1\"}', '{\"day\":\"1\"}'); \
         INSERT INTO batch_job_execution (id, instance_id, job_name, params, status, \
         created_at, exit_message, owner) \
         VALUES (1, 1, 'load', '{\"day\":\"1\"}', 'FAILED', 0, 'boom', 'old-host');",
    )
    .await
    .unwrap();
    pool.close().await;

    let repo = db.repo().await;
    let (old, _) = repo.execution(1).await.unwrap();
    assert_eq!(old.params, params(&[("day", "1")]));
    assert!(old.non_identifying.is_empty());
    let next = start(&repo, "load", &params(&[("day", "1")]), "h").await;
    assert_eq!(next.instance.id, 1, "the old key still finds the instance");
    assert_eq!(next.previous.unwrap().id, 1);
}

#[tokio::test]
async fn bad_urls_give_clear_errors() {
    let err = |r: Result<SqlRepository, RepoError>| match r {
        Err(RepoError::Db(msg)) => msg,
        Err(e) => panic!("expected Db, got {e:?}"),
        Ok(_) => panic!("expected an error"),
    };

    let msg = err(SqlRepository::connect("mysql://app:hunter2@db.example/jobs").await);
    assert!(msg.contains("mysql://app:***@db.example/jobs"), "{msg}");
    assert!(msg.contains("sqlite://"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let msg = err(SqlRepository::connect("jobs.db").await);
    assert!(msg.contains("jobs.db"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}/no/such/dir/x.db", dir.path().display());
    let msg = err(SqlRepository::connect(&missing).await);
    assert!(msg.contains(&missing), "{msg}");

    // Nothing listens on port 1: fails at once, naming the URL without its password.
    let started = std::time::Instant::now();
    let msg = err(SqlRepository::connect("postgres://app:hunter2@127.0.0.1:1/jobs").await);
    assert!(msg.contains("postgres://app:***@127.0.0.1:1/jobs"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let repo = SqlRepository::connect("sqlite::memory:").await.unwrap();
    repo.migrate().await.unwrap();
    repo.migrate().await.unwrap();
    let launch = start(&repo, "j", &Params::new(), "h").await;
    let step = repo
        .start_step(launch.execution.id, "s", StepCounts::default(), &json!(1))
        .await
        .unwrap();
    repo.commit_chunk(&step, "h", &[]).await.unwrap();
    assert_eq!(
        repo.execution(launch.execution.id).await.unwrap().1.len(),
        1
    );
}

/// A tasklet that takes `by` of the clock's time.
struct Takes {
    clock: ManualClock,
    by: Duration,
}

#[async_trait::async_trait]
impl Tasklet for Takes {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        self.clock.advance(self.by);
        Ok("done".into())
    }
}

#[tokio::test]
async fn recorded_times_come_from_the_clock() {
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let clock = ManualClock::new(T0);
    let repo = SqlRepository::connect("sqlite::memory:")
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    repo.migrate().await.unwrap();
    let job = Job::new("timed").step(Step::Tasklet {
        name: "wait".into(),
        tasklet: Box::new(Takes {
            clock: clock.clone(),
            by: Duration::from_secs(90),
        }),
    });
    let report = JobRunner::new(Arc::new(repo.clone()))
        .clock(Arc::new(clock.clone()))
        .run(job, &Params::new(), RunOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.execution.status, BatchStatus::Completed);
    let (execution, steps) = repo.execution(report.execution.id).await.unwrap();
    assert_eq!(execution.created_at, T0);
    assert_eq!(execution.started_at, Some(T0));
    assert_eq!(execution.ended_at, Some(T0 + 90_000));
    assert_eq!(
        execution.lease_until,
        Some(T0 + 30_000),
        "30 s lease from T0"
    );
    assert_eq!(steps[0].started_at, T0);
    assert_eq!(steps[0].ended_at, Some(T0 + 90_000));
}
