//! sluice-sql against real databases: error classes, statements, quoting and
//! migrations on SQLite, PostgreSQL and MariaDB/MySQL.

use sluice_sql::{
    ConnectSettings, Db, DbKind, ErrorClass, Migration, Migrator, SqlError, Statement, quote_ident,
};
use sluice_testkit::db::{Server, ServerDb};

async fn open(kind: DbKind) -> (Db, Option<ServerDb>, Option<tempfile::TempDir>) {
    let settings = ConnectSettings::new()
        .max_connections(2)
        .create(sluice_sql::Journal::Wal);
    match kind {
        DbKind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            (Db::connect(&url, &settings).await.unwrap(), None, Some(dir))
        }
        DbKind::Postgres | DbKind::MySql => {
            let server = if kind == DbKind::Postgres {
                Server::Postgres
            } else {
                Server::MySql
            };
            let sdb = ServerDb::new(server, "sluice_sql").await;
            let db = Db::connect(&sdb.url, &settings).await.unwrap();
            (db, Some(sdb), None)
        }
    }
}

fn class(r: Result<u64, sqlx::Error>) -> ErrorClass {
    ErrorClass::of(&r.unwrap_err())
}

async fn suite(kind: DbKind) {
    let (db, _server, _dir) = open(kind).await;
    assert_eq!(db.kind(), kind);
    let t = quote_ident(kind, "we\"ird`name");
    db.execute_script(&format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v VARCHAR(10) NOT NULL)"
    ))
    .await
    .unwrap();
    let p = |n| {
        if kind == DbKind::Postgres {
            format!("${n}")
        } else {
            "?".into()
        }
    };
    let insert = format!("INSERT INTO {t} (id, v) VALUES ({}, {})", p(1), p(2));
    let one = Statement::new(insert.as_str()).bind(1).bind("a");
    assert_eq!(db.execute(&one).await.unwrap(), 1);
    assert_eq!(class(db.execute(&one).await), ErrorClass::UniqueViolation);
    let null = Statement::new(insert.as_str()).bind(2).bind(None::<&str>);
    assert_eq!(class(db.execute(&null).await), ErrorClass::Data);
    assert_eq!(
        class(
            db.execute(&Statement::new("SELECT * FROM no_such_table"))
                .await
        ),
        ErrorClass::Other
    );
    let rows = db
        .fetch_all(&Statement::new(format!("SELECT id, v FROM {t}")))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i64>("id").unwrap(), 1);
    assert_eq!(rows[0].get_at::<String>(1).unwrap(), "a");
    // A transaction rolls back when dropped.
    let mut tx = db.begin_write().await.unwrap();
    tx.execute(&Statement::new(insert.as_str()).bind(3).bind("b"))
        .await
        .unwrap();
    drop(tx);
    let n = db
        .fetch_all(&Statement::new(format!("SELECT id FROM {t}")))
        .await
        .unwrap()
        .len();
    assert_eq!(n, 1);
    db.close().await;
    assert_eq!(class(db.execute(&one).await), ErrorClass::Transient);
}

#[tokio::test]
async fn classes_statements_and_quoting_on_every_database() {
    for kind in [DbKind::Sqlite, DbKind::Postgres, DbKind::MySql] {
        suite(kind).await;
    }
}

#[tokio::test]
async fn unreachable_is_transient_and_hides_the_password() {
    let settings = ConnectSettings::new().acquire_timeout(std::time::Duration::from_millis(500));
    for url in [
        "postgres://u:s3cret-pw@127.0.0.1:1/db",
        "mysql://u:s3cret-pw@127.0.0.1:1/db",
    ] {
        let e = Db::connect(url, &settings).await.unwrap_err();
        assert!(matches!(e, SqlError::Connect { .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert!(!e.to_string().contains("s3cret-pw"), "{e}");
    }
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        script: "CREATE TABLE m (id {identity})",
    },
    Migration {
        version: 2,
        script: "ALTER TABLE m ADD COLUMN note TEXT",
    },
];

#[tokio::test]
async fn migrations_apply_once_even_concurrently() {
    for kind in [DbKind::Sqlite, DbKind::Postgres] {
        let (db, _server, _dir) = open(kind).await;
        let m = Migrator {
            table: "test_migrations",
            lock_key: 42,
            migrations: MIGRATIONS,
        };
        let (a, b) = tokio::join!(m.run(&db, 1), m.run(&db, 2));
        a.unwrap();
        b.unwrap();
        m.run(&db, 3).await.unwrap();
        let rows = db
            .fetch_all(&Statement::new("SELECT version FROM test_migrations"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{kind}");
        db.execute(&Statement::new("INSERT INTO m (note) VALUES ('x')"))
            .await
            .unwrap();
    }
}

/// Opening a SQLite file another connection holds a write lock on (as when
/// `sluice queue list` opens the file a starting `serve` is migrating) waits
/// for the lock within the busy timeout instead of failing "database is
/// locked", also when opening switches the file to WAL.
#[tokio::test]
async fn opening_a_locked_sqlite_file_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let keep = ConnectSettings::new()
        .max_connections(1)
        .create(sluice_sql::Journal::Keep);
    let holder = Db::connect(&url, &keep).await.unwrap();
    holder
        .execute_script("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    let mut tx = holder.begin_write().await.unwrap();
    tx.execute(&Statement::new("INSERT INTO t VALUES (1)"))
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        tx.commit().await.unwrap();
    });
    let wal = ConnectSettings::new()
        .max_connections(1)
        .create(sluice_sql::Journal::Wal);
    let opened = Db::connect(&url, &wal).await;
    release.await.unwrap();
    let db = opened.unwrap_or_else(|e| panic!("opening failed: {e}"));
    let n = db
        .fetch_all(&Statement::new("SELECT COUNT(*) AS n FROM t"))
        .await
        .unwrap();
    assert_eq!(n.len(), 1);
}
