//! Database-change triggers through `sluice serve`: rows changing in a
//! PostgreSQL table run a job with the changed keys as its parameter; a
//! polled query's result changing on SQLite runs one with the new rows' count.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use sluice_testkit::db::{Server, ServerDb};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

use crate::bin::{BIN, KillOnDrop, terminate, text, wait_until};

fn sluice(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).arg("-c").arg(cfg).env("RUST_LOG", "warn");
    c
}

fn run(cfg: &Path, args: &[&str]) -> Output {
    sluice(cfg, args).output().unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_change_runs_the_job_with_the_changed_keys() {
    let db = ServerDb::new(Server::Postgres, "dbchange").await;
    let mut pg = PgConnection::connect(&db.url).await.unwrap();
    pg.execute("CREATE TABLE stations (id INT PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = format!("sqlite://{}?mode=rwc", dir.path().join("data.db").display());
    let mut lite = SqliteConnection::connect(&data).await.unwrap();
    lite.execute("CREATE TABLE prices (id INTEGER PRIMARY KEY, price INTEGER)")
        .await
        .unwrap();
    let keys_out = dir.path().join("keys.txt");
    let rows_out = dir.path().join("rows.txt");
    let port = sluice_testkit::free_port();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"

[repository]
url = "sqlite://{repo}"

[[job]]
name = "refresh-stations"
params = {{ changed_keys = "" }}

[[job.step]]
name = "refresh"
tasklet = {{ kind = "shell", command = "echo {{{{params.changed_keys}}}} {{{{params.changed_keys_count}}}} >> {keys}" }}

[[job.trigger]]
name = "stations"
kind = "pg_change"
database = "{url}"
table = "stations"
debounce = "300ms"
poll = "500ms"
format = "list"

[[job]]
name = "reprice"

[[job.step]]
name = "note"
tasklet = {{ kind = "shell", command = "echo {{{{params.changed_rows_count}}}} >> {rows}" }}

[[job.trigger]]
name = "prices"
kind = "sql_change"
database = "{data}"
query = "SELECT id, price FROM prices ORDER BY id"
every = "300ms"
"#,
            repo = dir.path().join("repo.db").display(),
            keys = keys_out.display(),
            rows = rows_out.display(),
            url = db.url,
        ),
    )
    .unwrap();
    let out = run(&cfg, &["check"]);
    assert!(out.status.success(), "{}", text(&out));
    let server = sluice(&cfg, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(server.id());
    // Wait for the row trigger and the query's first look.
    for _ in 0..300 {
        let installed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'sluice_change_stations'",
        )
        .fetch_one(&mut pg)
        .await
        .unwrap();
        let looked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sluice_sql_change'",
        )
        .fetch_one(&mut lite)
        .await
        .unwrap();
        let looked = looked == 1
            && sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sluice_sql_change")
                .fetch_one(&mut lite)
                .await
                .unwrap()
                == 1;
        if installed == 1 && looked {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    pg.execute("INSERT INTO stations VALUES (7, 'Jongno'), (8, 'Jung'); UPDATE stations SET name = 'Jongno-gu' WHERE id = 7")
        .await
        .unwrap();
    lite.execute("INSERT INTO prices VALUES (1, 100), (2, 200)")
        .await
        .unwrap();
    wait_until(
        60,
        || !lines(&keys_out).is_empty() && !lines(&rows_out).is_empty(),
        || format!("no runs: {:?} {:?}", lines(&keys_out), lines(&rows_out)),
    );
    assert_eq!(lines(&keys_out), ["7,8 2"]);
    assert_eq!(lines(&rows_out), ["2"]);
    // A delete: one more run, with that key alone.
    pg.execute("DELETE FROM stations WHERE id = 8")
        .await
        .unwrap();
    wait_until(
        60,
        || lines(&keys_out).len() >= 2,
        || format!("no second run: {:?}", lines(&keys_out)),
    );
    assert_eq!(lines(&keys_out), ["7,8 2", "8 1"]);
    let list = run(&cfg, &["schedule", "list"]);
    let l = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        l.contains("refresh-stations/stations")
            && l.contains("pg_change stations")
            && l.contains("reprice/prices")
            && l.contains("sql_change"),
        "{}",
        text(&list)
    );
    terminate(server);
    // `schedule uninstall` removes the row trigger and the change log.
    let out = run(
        &cfg,
        &["schedule", "uninstall", "refresh-stations/stations"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'sluice_change_stations'",
    )
    .fetch_one(&mut pg)
    .await
    .unwrap();
    let log: Option<String> = sqlx::query_scalar("SELECT to_regclass('sluice_changes')::text")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!((left, log), (0, None));
    let out = run(&cfg, &["schedule", "uninstall", "reprice/prices"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("pg_change triggers: refresh-stations/stations"),
        "{}",
        text(&out)
    );
    pg.close().await.unwrap();
    lite.close().await.unwrap();
}

#[test]
fn a_pg_change_without_a_postgres_database_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"sqlite://{}\"\n\n{}\n[[job.trigger]]\nkind = \"pg_change\"\ntable = \"t\"\n\n\
             [[job.trigger]]\nkind = \"pg_change\"\ntable = \"t\"\ndatabase = \"mysql://root@127.0.0.1/x\"\ndebounce = \"soon\"\n",
            dir.path().join("repo.db").display(),
            crate::bin::shell_job_toml("j", "s", "true"),
        ),
    )
    .unwrap();
    let out = run(&cfg, &["check"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        err.contains("job[0].trigger[0].database")
            && err.contains("the repository is not PostgreSQL"),
        "{err}"
    );
    assert!(
        err.contains("pg_change needs a PostgreSQL database")
            && err.contains("invalid debounce \"soon\""),
        "{err}"
    );
}

/// An `sql_change` on the repository itself (its default `database`): the
/// embedded SQLite file that also holds the queue, so the fire must not hold
/// a write lock while it enqueues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_change_on_the_embedded_repository_runs_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo.db");
    let url = format!("sqlite://{}?mode=rwc", repo.display());
    let mut lite = SqliteConnection::connect(&url).await.unwrap();
    lite.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    let out_file = dir.path().join("runs.txt");
    let port = sluice_testkit::free_port();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[repository]\nurl = \"sqlite://{}\"\n\n{}\n\
             [[job.trigger]]\nname = \"orders\"\nkind = \"sql_change\"\nquery = \"SELECT count(*) AS n FROM orders\"\nevery = \"200ms\"\n",
            repo.display(),
            crate::bin::shell_job_toml(
                "count",
                "note",
                &format!("echo {{{{params.changed_rows}}}} >> {}", out_file.display())
            ),
        ),
    )
    .unwrap();
    let server = sluice(&cfg, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(server.id());
    // The first look records the empty result.
    for _ in 0..300 {
        let looked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sluice_sql_change'",
        )
        .fetch_one(&mut lite)
        .await
        .unwrap();
        if looked == 1
            && sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sluice_sql_change")
                .fetch_one(&mut lite)
                .await
                .unwrap()
                == 1
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    lite.execute("INSERT INTO orders VALUES (1), (2), (3)")
        .await
        .unwrap();
    wait_until(
        60,
        || !lines(&out_file).is_empty(),
        || format!("no run: {:?}", lines(&out_file)),
    );
    assert_eq!(lines(&out_file), ["[3]"]);
    terminate(server);
    lite.close().await.unwrap();
}
