//! The cleanup tasklets on real databases: old rows deleted or archived in
//! bounded batches, the counts reported, a crash between a file archive's
//! append and its delete mended; old files removed by age and pattern.

mod common;

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sluice_batch::Tasklet;
use sluice_batch::config::{Kind, NoContext};
use sluice_batch::tasklets::RawTasklet;
use sluice_sql::{ConnectSettings, Db, DbKind, Statement};

const OLD: i64 = 2_500;
const NEW: i64 = 500;

/// `events` with `OLD` rows 100 days old (ids 1..) and `NEW` rows from now
/// (ids 10001..), and an empty `events_archive` of the same shape.
async fn seed(url: &str) -> Db {
    let db = Db::connect(url, &ConnectSettings::new()).await.unwrap();
    let (ts, old, new) = match db.kind() {
        DbKind::Sqlite => ("TEXT", "datetime('now', '-100 days')", "datetime('now')"),
        DbKind::Postgres => ("TIMESTAMPTZ", "now() - interval '100 days'", "now()"),
        DbKind::MySql => (
            "DATETIME",
            "UTC_TIMESTAMP() - INTERVAL 100 DAY",
            "UTC_TIMESTAMP()",
        ),
    };
    for t in ["events", "events_archive"] {
        db.execute_script(&format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, created_at {ts} NOT NULL, note VARCHAR(50))"
        ))
        .await
        .unwrap();
    }
    for (from, n, at) in [(1, OLD, old), (10_001, NEW, new)] {
        // In slices, within every database's statement size.
        for start in (0..n).step_by(500) {
            let values: Vec<String> = (start..(start + 500).min(n))
                .map(|i| format!("({}, {at}, 'row {}')", from + i, from + i))
                .collect();
            db.execute_script(&format!(
                "INSERT INTO events (id, created_at, note) VALUES {}",
                values.join(", ")
            ))
            .await
            .unwrap();
        }
    }
    db
}

async fn count(db: &Db, sql: &str) -> i64 {
    db.fetch_all(&Statement::new(sql.to_owned())).await.unwrap()[0]
        .get_at::<i64>(0)
        .unwrap()
}

fn tasklet(v: Value) -> Box<dyn Tasklet> {
    let raw: RawTasklet = serde_json::from_value(v).unwrap();
    raw.build(&NoContext).unwrap()
}

/// Delete, then archive to a table, then a dry run, on one database.
async fn rows_on(url: &str) {
    let db = seed(url).await;
    let base = json!({"kind": "cleanup", "url": url, "table": "events", "column": "created_at",
                      "older_than": "90d", "batch": 300, "pause": "1ms"});
    // A dry run counts and removes nothing.
    let mut dry = base.clone();
    dry["dry_run"] = json!(true);
    let mut t = tasklet(dry);
    let msg = t.execute().await.unwrap();
    assert!(
        msg.contains("dry run: 2500 rows of events older than 90d would be deleted"),
        "{msg}"
    );
    assert_eq!(t.counts().unwrap().read, 2_500);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events").await, OLD + NEW);

    // Archive the rows older than 90 days with ids up to 1000 (a `where`), then
    // delete the rest of the old ones.
    let mut arch = base.clone();
    arch["archive_table"] = json!("events_archive");
    arch["where"] = json!("id <= 1000");
    arch["key"] = json!(["id"]);
    let mut t = tasklet(arch);
    let msg = t.execute().await.unwrap();
    let c = t.counts().unwrap();
    assert!(
        msg.contains("moved 1000 rows of events older than 90d to events_archive in 4 batches"),
        "{msg}"
    );
    assert_eq!((c.read, c.written, c.commits), (1_000, 1_000, 4));
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM events_archive").await,
        1_000
    );
    assert_eq!(
        count(&db, "SELECT MAX(id) FROM events_archive").await,
        1_000
    );

    let mut t = tasklet(base);
    let msg = t.execute().await.unwrap();
    let c = t.counts().unwrap();
    assert!(
        msg.contains("deleted 1500 rows of events older than 90d in 5 batches"),
        "{msg}"
    );
    assert_eq!((c.written, c.commits), (1_500, 5));
    // Only the new rows are left, untouched.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events").await, NEW);
    assert_eq!(count(&db, "SELECT MIN(id) FROM events").await, 10_001);
    db.close().await;
}

#[tokio::test]
async fn rows_are_deleted_and_archived_in_batches_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    rows_on(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("c.db").display()
    ))
    .await;
}

#[tokio::test]
async fn rows_are_deleted_and_archived_in_batches_on_postgres() {
    let db = common::ServerDb::new(common::Server::Postgres, "sluice_cleanup").await;
    rows_on(&db.url).await;
}

#[tokio::test]
async fn rows_are_deleted_and_archived_in_batches_on_mariadb() {
    let db = common::ServerDb::new(common::Server::MySql, "sluice_cleanup").await;
    rows_on(&db.url).await;
}

/// Archive to a file on every database; before the second run, the state a
/// crash between an append and its delete leaves (lines in the file past the
/// recorded length, the rows still in the table) is made by hand: the file is
/// cut back and each row ends up in it exactly once.
async fn file_archive_on(url: &str) {
    let db = seed(url).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let spec = json!({"kind": "cleanup", "url": url, "table": "events", "column": "created_at",
                      "older_than": "90d", "batch": 400, "pause": "0s", "key": ["id"],
                      "archive_file": file.display().to_string(), "where": "id <= 1200"});
    let mut t = tasklet(spec.clone());
    let msg = t.execute().await.unwrap();
    assert!(msg.contains("archived 1200 rows"), "{msg}");
    // The crash: rows 1201..1300 appended, their delete never committed.
    let mut text = std::fs::read_to_string(&file).unwrap();
    for id in 1201..=1300 {
        text.push_str(&format!("{{\"id\":{id},\"partial\":true}}\n"));
    }
    text.push_str("{\"id\":13"); // a torn last line
    std::fs::write(&file, text).unwrap();
    let mut all = spec;
    all["where"] = json!("1 = 1");
    let mut t = tasklet(all);
    let msg = t.execute().await.unwrap();
    assert!(msg.contains("archived 1300 rows"), "{msg}");
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<i64> = lines.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert!(
        lines
            .iter()
            .all(|v| v.get("partial").is_none() && v["note"].is_string())
    );
    ids.sort_unstable();
    assert_eq!(ids, (1..=OLD).collect::<Vec<_>>(), "every old row once");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events").await, NEW);
    db.close().await;
}

#[tokio::test]
async fn a_file_archive_survives_a_crash_between_append_and_delete_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    file_archive_on(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("f.db").display()
    ))
    .await;
}

#[tokio::test]
async fn a_file_archive_survives_a_crash_between_append_and_delete_on_postgres() {
    let db = common::ServerDb::new(common::Server::Postgres, "sluice_cleanup").await;
    file_archive_on(&db.url).await;
}

#[tokio::test]
async fn a_file_archive_survives_a_crash_between_append_and_delete_on_mariadb() {
    let db = common::ServerDb::new(common::Server::MySql, "sluice_cleanup").await;
    file_archive_on(&db.url).await;
}

#[tokio::test]
async fn unix_time_columns_compare_as_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
    let db = Db::connect(&url, &ConnectSettings::new()).await.unwrap();
    let now = chrono::Utc::now().timestamp();
    db.execute_script(&format!(
        "CREATE TABLE s (id INTEGER PRIMARY KEY, at_s INTEGER, at_ms INTEGER);
         INSERT INTO s VALUES (1, {old}, {old}000), (2, {now}, {now}000), (3, {old2}, {old2}000);",
        old = now - 8 * 86_400,
        old2 = now - 6 * 86_400,
    ))
    .await
    .unwrap();
    let mut t = tasklet(
        json!({"kind": "cleanup", "url": url, "table": "s", "column": "at_ms",
        "column_type": "unix_millis", "older_than": "7d"}),
    );
    t.execute().await.unwrap();
    assert_eq!(t.counts().unwrap().written, 1);
    let mut t = tasklet(
        json!({"kind": "cleanup", "url": url, "table": "s", "column": "at_s",
        "column_type": "unix_seconds", "older_than": "5d"}),
    );
    t.execute().await.unwrap();
    assert_eq!(t.counts().unwrap().written, 1);
    assert_eq!(count(&db, "SELECT id FROM s").await, 2);
}

#[test]
fn bad_cleanup_configs_say_what_to_write() {
    let err = |v: Value| -> String {
        let raw: Result<RawTasklet, _> = serde_json::from_value(v);
        match raw {
            Err(e) => e.to_string(),
            Ok(r) => match r.build(&NoContext) {
                Err(e) => e.to_string(),
                Ok(_) => String::new(),
            },
        }
    };
    let base = json!({"kind": "cleanup", "url": "sqlite://x.db", "table": "t", "column": "c", "older_than": "1d"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert!(
        err(with("column_type", json!("epoch")))
            .contains("use timestamp, unix_seconds or unix_millis")
    );
    assert!(err(with("archive_file", json!("a.jsonl"))).contains("archive_file needs key"));
    assert!(err(with("batch", json!(0))).contains("batch: 0 rows; use 1 to 1000000"));
    assert!(err(with("older_than", json!("soon"))).contains("soon"));
    assert!(err(with("colour", json!("red"))).contains("unknown field `colour`"));
    let mysql = json!({"kind": "cleanup", "url": "mysql://root@h/db", "table": "t", "column": "c",
                       "older_than": "1d", "archive_table": "a"});
    assert!(err(mysql).contains("archive_table on MySQL/MariaDB needs key"));
    assert_eq!(err(base), "");
}

fn touch(path: &std::path::Path, age: Duration) {
    let f = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &f, b"0123456789").unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn old_files_matching_the_pattern_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let day = Duration::from_secs(86_400);
    std::fs::create_dir(d.join("sub")).unwrap();
    for (name, days) in [
        ("app.log.1", 20),
        ("app.log.2", 30),
        ("app.log.3", 40),
        ("app.log", 40),  // does not match *.log.*
        ("new.log.1", 1), // too young
        ("sub/app.log.9", 50),
    ] {
        touch(&d.join(name), day * days);
    }
    let spec = |extra: Value| {
        let mut v = json!({"kind": "file_cleanup", "path": d.display().to_string(),
                           "pattern": "*.log.*", "older_than": "14d"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        tasklet(v)
    };
    let mut t = spec(json!({"dry_run": true}));
    let msg = t.execute().await.unwrap();
    assert!(msg.contains("dry run: 3 of 4 files"), "{msg}");
    assert!(d.join("app.log.3").exists());
    // The newest matching file is kept whatever its age.
    let mut t = spec(json!({"keep_last": 2}));
    let msg = t.execute().await.unwrap();
    assert!(
        msg.contains("removed 2 of 4 files") && msg.contains("(20 bytes)"),
        "{msg}"
    );
    let c = t.counts().unwrap();
    assert_eq!((c.read, c.written), (4, 2));
    assert!(
        d.join("app.log.1").exists() && d.join("new.log.1").exists() && d.join("app.log").exists()
    );
    assert!(!d.join("app.log.3").exists() && !d.join("app.log.2").exists());
    assert!(d.join("sub/app.log.9").exists(), "not recursive");
    let mut t = spec(json!({"recursive": true}));
    t.execute().await.unwrap();
    assert!(!d.join("sub/app.log.9").exists() && !d.join("app.log.1").exists());
    assert!(d.join("sub").is_dir(), "directories stay");
    // A missing directory is an error that names it.
    let mut t = tasklet(
        json!({"kind": "file_cleanup", "path": d.join("nope").display().to_string(), "older_than": "1d"}),
    );
    let e = t.execute().await.unwrap_err().to_string();
    assert!(e.contains("listing") && e.contains("nope"), "{e}");
}
