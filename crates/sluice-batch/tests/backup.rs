//! The backup tasklet against real databases: a round trip (back up, change,
//! restore, compare) on SQLite, PostgreSQL and MariaDB; retention over days
//! of backups on a manual clock; a corrupt artifact found by verify and
//! refused by restore; a SQLite backup taken while a writer keeps inserting;
//! a failing dump that leaves nothing behind and no password in its error; a
//! large backup uploaded to S3 (moto) in parts, verified and restored.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_batch::Tasklet;
use sluice_batch::tasklets::backup::{
    BackupError, BackupSource, BackupTasklet, DestinationSpec, Listed, Manifest, Retention,
    SourceKind,
};
use sluice_core::ManualClock;
use sluice_sql::{ConnectSettings, Db, Journal, Statement};

mod common;
use common::{Server, ServerDb};

type Rows = Vec<(i64, String)>;

async fn rows(url: &str) -> Rows {
    let db = Db::connect(url, &ConnectSettings::new()).await.unwrap();
    let got = db
        .fetch_all(&Statement::new("SELECT id, name FROM items ORDER BY id"))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<i64>("id").unwrap(),
                r.get::<String>("name").unwrap(),
            )
        })
        .collect();
    db.close().await;
    got
}

async fn script(url: &str, sql: &str) {
    let db = Db::connect(url, &ConnectSettings::new().create(Journal::Wal))
        .await
        .unwrap();
    db.execute_script(sql).await.unwrap();
    db.close().await;
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn manifests(dest: &DestinationSpec) -> Vec<Manifest> {
    dest.open()
        .unwrap()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| match l {
            Listed::Ok(m) => m,
            Listed::Broken { name, error } => panic!("broken manifest {name}: {error}"),
        })
        .collect()
}

/// Back up `url`, change its rows, restore, and find the rows as they were.
async fn round_trip(url: &str, kind: SourceKind) {
    script(
        url,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL);
         INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'naïve ✓');",
    )
    .await;
    let before = rows(url).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = DestinationSpec::Dir(dir.path().join("backups"));
    let source = BackupSource::from_url(url).unwrap();
    assert_eq!(source.kind, kind);
    let mut t = BackupTasklet::new(source.clone(), dest.clone());
    let msg = t.execute().await.unwrap();
    assert!(msg.starts_with("backup "), "{msg}");
    assert_eq!(t.counts().unwrap().written, 1);
    let ms = manifests(&dest).await;
    assert_eq!(ms.len(), 1);
    let m = &ms[0];
    assert_eq!(m.source, kind);
    assert!(m.raw_bytes > 0 && m.compressed_bytes > 0, "{m:?}");
    assert!(msg.contains(&m.sha256), "{msg}");
    assert!(!serde_json::to_string(m).unwrap().contains("://"), "{m:?}");
    let names = files(dir.path().join("backups").as_path());
    let mut want = vec![m.artifact.clone(), m.file_name()];
    want.sort();
    assert_eq!(names, want);

    script(
        url,
        "DELETE FROM items WHERE id = 1; UPDATE items SET name = 'changed' WHERE id = 2;
         INSERT INTO items (id, name) VALUES (4, 'four');",
    )
    .await;
    assert_ne!(rows(url).await, before);
    let d = dest.open().unwrap();
    d.verify(m).await.unwrap();
    let latest = d.find("latest").await.unwrap();
    assert_eq!(&latest, m);
    let loaded = d.restore(m, &source).await.unwrap();
    assert_eq!(loaded, m.raw_bytes);
    assert_eq!(rows(url).await, before);
}

#[tokio::test]
async fn sqlite_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data.db").display());
    round_trip(&url, SourceKind::Sqlite).await;
    // No restore leftovers beside the database.
    assert_eq!(files(dir.path()), vec!["data.db".to_owned()]);
}

#[tokio::test]
async fn postgres_round_trip() {
    let db = ServerDb::new(Server::Postgres, "backup_pg").await;
    round_trip(&db.url, SourceKind::Postgres).await;
}

#[tokio::test]
async fn mariadb_round_trip() {
    let db = ServerDb::new(Server::MySql, "backup_my").await;
    round_trip(&db.url, SourceKind::Mysql).await;
}

#[tokio::test]
async fn retention_keeps_what_any_rule_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    script(
        &url,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);",
    )
    .await;
    let dest = DestinationSpec::Dir(dir.path().join("b"));
    // Sunday 1 November 2026, noon UTC; one backup a day for ten days.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T12:00:00Z")
        .unwrap()
        .timestamp_millis();
    let clock = ManualClock::new(start);
    let mut t = BackupTasklet::new(BackupSource::from_url(&url).unwrap(), dest.clone())
        .retention(Retention {
            keep_last: Some(2),
            keep_weekly: Some(2),
            ..Retention::default()
        })
        .clock(Arc::new(clock.clone()));
    for _ in 0..10 {
        t.execute().await.unwrap();
        clock.advance(std::time::Duration::from_secs(86_400));
    }
    // keep_last: the 10th and 9th; keep_weekly: the 10th (week of Mon 9th) and
    // the 8th (Sunday, the end of the week before).
    let days: Vec<String> = manifests(&dest)
        .await
        .iter()
        .map(|m| m.created_at.format("%d").to_string())
        .collect();
    assert_eq!(days, ["08", "09", "10"]);
    // Artifact and manifest went together: three of each, nothing else.
    let names = files(&dir.path().join("b"));
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".json")).count(), 3);
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".sqlite.zst")).count(),
        3
    );
}

#[tokio::test]
async fn verify_finds_a_corrupt_artifact_and_restore_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let url = format!("sqlite://{}", path.display());
    script(
        &url,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO items VALUES (1, 'kept');",
    )
    .await;
    let dest = DestinationSpec::Dir(dir.path().join("b"));
    let source = BackupSource::from_url(&url).unwrap();
    BackupTasklet::new(source.clone(), dest.clone())
        .run()
        .await
        .unwrap();
    let m = manifests(&dest).await.remove(0);
    let d = dest.open().unwrap();
    d.verify(&m).await.unwrap();
    let artifact = dir.path().join("b").join(&m.artifact);
    let good = std::fs::read(&artifact).unwrap();

    // One flipped byte: the checksum no longer matches.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&artifact, &bad).unwrap();
    let e = d.verify(&m).await.unwrap_err();
    assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
    script(&url, "INSERT INTO items VALUES (2, 'after');").await;
    let e = d.restore(&m, &source).await.unwrap_err();
    assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
    // The database was not touched.
    assert_eq!(rows(&url).await.len(), 2);

    // Cut short: the zstd stream is incomplete.
    std::fs::write(&artifact, &good[..good.len() - 7]).unwrap();
    let e = d.verify(&m).await.unwrap_err().to_string();
    assert!(e.contains("is corrupt"), "{e}");

    std::fs::write(&artifact, &good).unwrap();
    d.verify(&m).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_under_a_writer_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    script(
        &url,
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    )
    .await;
    // The writer inserts one row into each table per transaction: any
    // consistent snapshot has as many rows in a as in b.
    let stop = Arc::new(AtomicBool::new(false));
    let db = Db::connect(&url, &ConnectSettings::new()).await.unwrap();
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let pad = "x".repeat(500);
                db.execute_script(&format!(
                    "BEGIN; INSERT INTO a (v) VALUES ('{pad}'); INSERT INTO b (v) VALUES ('{pad}'); COMMIT;"
                ))
                .await
                .unwrap();
                n += 1;
            }
            n
        })
    };
    let count = |db: Db| async move {
        let r = db
            .fetch_all(&Statement::new("SELECT COUNT(*) AS n FROM a"))
            .await
            .unwrap();
        r[0].get::<i64>("n").unwrap()
    };
    while count(db.clone()).await < 200 {
        tokio::task::yield_now().await;
    }
    let dest = DestinationSpec::Dir(dir.path().join("b"));
    let report = BackupTasklet::new(BackupSource::from_url(&url).unwrap(), dest.clone())
        .run()
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let inserted = writer.await.unwrap();
    db.close().await;

    let copy = dir.path().join("copy.db");
    let d = dest.open().unwrap();
    d.restore(
        &report.manifest,
        &BackupSource::from_url(&copy.display().to_string()).unwrap(),
    )
    .await
    .unwrap();
    let copy_url = format!("sqlite://{}", copy.display());
    let c = Db::connect(&copy_url, &ConnectSettings::new())
        .await
        .unwrap();
    let check = c
        .fetch_all(&Statement::new("PRAGMA integrity_check"))
        .await
        .unwrap();
    assert_eq!(check[0].get_at::<String>(0).unwrap(), "ok");
    let n = |t: &'static str| {
        let c = c.clone();
        async move {
            c.fetch_all(&Statement::new(format!("SELECT COUNT(*) AS n FROM {t}")))
                .await
                .unwrap()[0]
                .get::<i64>("n")
                .unwrap()
        }
    };
    let (na, nb) = (n("a").await, n("b").await);
    assert_eq!(na, nb);
    assert!(na >= 200 && na as u64 <= inserted, "{na} of {inserted}");
    c.close().await;
}

#[tokio::test]
async fn a_failed_dump_leaves_nothing_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let dest = DestinationSpec::Dir(dir.path().join("b"));
    let url = "postgres://postgres:Sup3r%2FSecret@127.0.0.1:5432/sluice_no_such_db";
    let mut t = BackupTasklet::new(BackupSource::from_url(url).unwrap(), dest.clone());
    let e = t.execute().await.unwrap_err().to_string();
    assert!(e.contains("pg_dump failed (exit code 1)"), "{e}");
    assert!(e.contains("sluice_no_such_db"), "{e}");
    assert!(!e.contains("Sup3r"), "{e}");
    assert_eq!(t.counts().unwrap().written, 0);
    assert!(files(&dir.path().join("b")).is_empty());
    assert!(manifests(&dest).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backup_goes_to_s3_in_parts() {
    use sluice_batch::tasklets::backup::S3Spec;
    use sluice_core::config::RawSecret;

    let s3 = tokio::task::spawn_blocking(sluice_testkit::S3Server::start)
        .await
        .unwrap();
    s3.create_bucket("sluice-large");
    let dir = tempfile::tempdir().unwrap();
    // Keys from files (moto takes any); read when the destination opens.
    let secret = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        Some(RawSecret {
            env: None,
            file: Some(serde_spanned::Spanned::new(0..0, p.display().to_string())),
        })
    };
    let dest = DestinationSpec::S3(S3Spec {
        bucket: "sluice-large".into(),
        prefix: "big/one".into(),
        endpoint: Some(s3.endpoint.clone()),
        region: None,
        access_key_id: secret("id", "testing"),
        secret_access_key: secret("key", "testing-secret"),
        from_env: false,
    });
    // 24 MiB that zstd cannot shrink: more than one upload part.
    let path = dir.path().join("big.db");
    let url = format!("sqlite://{}", path.display());
    script(
        &url,
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24)
         INSERT INTO blobs (b) SELECT randomblob(1048576) FROM n;",
    )
    .await;
    let report = BackupTasklet::new(BackupSource::from_url(&url).unwrap(), dest.clone())
        .run()
        .await
        .unwrap();
    let m = report.manifest;
    assert!(m.compressed_bytes > 20 << 20, "{m:?}");
    // (The server comes back from the blocking thread: dropping it would stop it.)
    let (s3, keys) = tokio::task::spawn_blocking(move || {
        let keys = s3.keys("sluice-large");
        (s3, keys)
    })
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            format!("big/one/{}", m.file_name()),
            format!("big/one/{}", m.artifact)
        ]
    );
    let d = dest.open().unwrap();
    let v = d.verify(&m).await.unwrap();
    assert_eq!(v.compressed, m.compressed_bytes);
    let copy = dir.path().join("copy.db");
    d.restore(
        &m,
        &BackupSource::from_url(&copy.display().to_string()).unwrap(),
    )
    .await
    .unwrap();
    let db = Db::connect(
        &format!("sqlite://{}", copy.display()),
        &ConnectSettings::new(),
    )
    .await
    .unwrap();
    let n = db
        .fetch_all(&Statement::new("SELECT COUNT(*) AS n FROM blobs"))
        .await
        .unwrap()[0]
        .get::<i64>("n")
        .unwrap();
    assert_eq!(n, 24);
    db.close().await;
    drop(s3);
}

#[tokio::test]
async fn what_a_crashed_backup_left_is_never_listed_and_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    script(
        &url,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);",
    )
    .await;
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    // A crash mid-dump leaves a temporary artifact; one between the artifact
    // and its manifest leaves an artifact alone.
    std::fs::write(b.join(".20261204T010000.000Z-0001.sqlite.zst.tmp"), b"half").unwrap();
    std::fs::write(b.join(".20261204T010000.000Z-0001.json.tmp"), b"{").unwrap();
    std::fs::write(b.join("20261204T020000.000Z-0002.sqlite.zst"), b"whole?").unwrap();
    let dest = DestinationSpec::Dir(b.clone());
    assert!(manifests(&dest).await.is_empty());
    let mut t = BackupTasklet::new(BackupSource::from_url(&url).unwrap(), dest.clone());
    t.execute().await.unwrap();
    let ms = manifests(&dest).await;
    assert_eq!(ms.len(), 1);
    assert!(
        files(&b).iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        files(&b)
    );
}
