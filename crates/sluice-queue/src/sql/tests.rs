//! Unit tests of the SQL broker: templates, inserts, connecting, sweeping and
//! the manual clock on SQLite.

use super::*;

#[test]
fn renders_now_per_dialect() {
    let q = || Q::new("SELECT $1, {now}, {now}{lock}").bind(7_i64);
    let Statement { sql, args } = q().render(DbKind::Sqlite, 42);
    assert_eq!(sql, "SELECT $1, $2, $2");
    assert_eq!(args.len(), 2);
    assert!(matches!(args[1], Arg::I64(42)));
    let Statement { sql, args } = q().render(DbKind::Postgres, 42);
    assert_eq!(
        sql,
        format!("SELECT $1, {PG_NOW}, {PG_NOW} FOR UPDATE SKIP LOCKED")
    );
    assert_eq!(args.len(), 1);
}

#[test]
fn insert_sql_numbers_parameters() {
    assert!(insert_sql(2, DbKind::Sqlite).ends_with(
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'ready'), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'ready')"
    ));
    let sql = insert_sql(2, DbKind::Postgres);
    assert!(sql.ends_with(
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 'ready'), \
         ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20, 0, 'ready')"
    ));
}

#[tokio::test]
async fn connect_errors_never_show_the_password() {
    let err = SqlBroker::connect("postgres://u:s3cret-pw@127.0.0.1:1/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = SqlBroker::connect("mysql://u:s3cret-pw@h/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("s3cret-pw") && err.contains("unsupported"),
        "{err}"
    );
}

#[tokio::test]
async fn memory_database_works() {
    let b = SqlBroker::connect("sqlite::memory:").await.unwrap();
    assert_eq!(b.kind(), "sqlite");
    let e = b
        .enqueue(NewTask::new("t", serde_json::json!(1)))
        .await
        .unwrap();
    let leases = b.lease("default", 5, Duration::from_secs(5)).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].task.id, e.id);
    assert!(format!("{b:?}").contains("sqlite"));
}

#[tokio::test]
async fn expired_results_and_keys_are_swept() {
    let clock = sluice_core::ManualClock::new(1_000_000);
    let b = SqlBroker::connect("sqlite::memory:")
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let count = |table: &'static str| {
        let b = b.clone();
        async move {
            let rows = b
                .fetch_all(false, Q::new(format!("SELECT COUNT(*) AS n FROM {table}")))
                .await
                .unwrap();
            rows[0].col::<i64>("n", "sqlite").unwrap()
        }
    };
    b.enqueue(
        NewTask::new("t", serde_json::json!(1))
            .result_ttl(Duration::from_secs(1))
            .idempotency_key("k")
            .idempotency_window(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let l = b.lease("default", 1, Duration::from_secs(5)).await.unwrap();
    let done = Completion {
        lease: l[0].as_ref(),
        result: Some(serde_json::json!("ok")),
    };
    assert_eq!(b.complete(&[done]).await.unwrap(), 1);
    assert_eq!(count("sluice_tasks").await, 1);
    assert_eq!(count("sluice_task_keys").await, 1);
    clock.advance(Duration::from_secs(10));
    assert!(
        b.lease("default", 1, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(count("sluice_tasks").await, 0);
    assert_eq!(count("sluice_task_keys").await, 0);
}

#[tokio::test]
async fn a_manual_clock_drives_sqlite_leases() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let clock = sluice_core::ManualClock::new(1_000_000);
    let b = SqlBroker::connect(&url)
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    b.enqueue(NewTask::new("t", serde_json::json!(null)).delay(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(b.stats("default").await.unwrap().delayed, 1);
    // One task at most, for ten seconds.
    let lease_one = || b.lease("default", 1, Duration::from_secs(10));
    assert!(lease_one().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(60));
    let l = lease_one().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].deadline, 1_070_000);
    clock.advance(Duration::from_secs(11));
    let again = lease_one().await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].task.attempt, 2);
    assert_ne!(again[0].token, l[0].token);
}
