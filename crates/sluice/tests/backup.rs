//! `sluice backup …` and `kind = "backup"` steps through the binary: the
//! repository backed up by a job and restored over itself; an S3 bucket
//! (moto) with secrets from the environment, listed, verified and restored
//! through `--job` and `--from s3://…`; a corrupt artifact failing `verify`.

use std::path::Path;
use std::process::{Command, Output};

use crate::bin::{BIN, text};
use sluice_testkit::S3Server;

/// `sluice ARGS -c CONFIG` with `env`.
fn sluice(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).arg("-c").arg(config).env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `sql` on SQLite file `path`, returns the first column of the first row.
fn sqlite_count(path: &Path, sql: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", path.display());
        let db = sluice_sql::Db::connect(&url, &sluice_sql::ConnectSettings::new())
            .await
            .unwrap();
        let r = db
            .fetch_all(&sluice_sql::Statement::new(sql))
            .await
            .unwrap();
        let n = r[0].get_at::<i64>(0).unwrap();
        db.close().await;
        n
    })
}

fn sqlite_script(path: &Path, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", path.display());
        let db = sluice_sql::Db::connect(
            &url,
            &sluice_sql::ConnectSettings::new().create(sluice_sql::Journal::Wal),
        )
        .await
        .unwrap();
        db.execute_script(sql).await.unwrap();
        db.close().await;
    });
}

#[test]
fn the_repository_backs_up_and_restores_over_itself() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo.db");
    let backups = dir.path().join("backups");
    let data = dir.path().join("data.db");
    sqlite_script(&data, "CREATE TABLE t (id INTEGER PRIMARY KEY);");
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[repository]
url = "sqlite://{repo}"

[[job]]
name = "hello"
params = {{ n = "1" }}
[[job.step]]
name = "say"
tasklet = {{ kind = "shell", command = "true" }}

[[job]]
name = "nightly"
[[job.step]]
name = "repo"
tasklet = {{ kind = "backup", repository = true, destination = {{ kind = "dir", path = "{backups}" }}, retention = {{ keep_last = 5 }} }}

# Another database's backups in the same directory: each step sees its own.
[[job.step]]
name = "data"
tasklet = {{ kind = "backup", source = "sqlite://{data}", destination = {{ kind = "dir", path = "{backups}" }}, retention = {{ keep_last = 1 }} }}
"#,
            repo = repo.display(),
            data = data.display(),
            backups = backups.display()
        ),
    )
    .unwrap();
    let o = sluice(&cfg, &["check"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sluice(&cfg, &["job", "run", "--local", "hello"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sluice(&cfg, &["job", "run", "--local", "nightly"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let instances = "SELECT COUNT(*) FROM batch_job_instance";
    assert_eq!(sqlite_count(&repo, instances), 2);

    let o = sluice(&cfg, &["backup", "list", "--job", "nightly"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("pick one with --step"), "{}", text(&o));
    let o = sluice(
        &cfg,
        &["backup", "list", "--job", "nightly", "--step", "repo"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("sqlite (repository) \"repo.db\""), "{out}");
    assert!(out.contains("present"), "{out}");
    let o = sluice(
        &cfg,
        &["backup", "verify", "--from", &backups.display().to_string()],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        stdout(&o).matches("  ok  sha256 ").count(),
        2,
        "{}",
        text(&o)
    );

    // More runs after the backup; the restore takes them away again.
    for n in ["2", "3"] {
        let o = sluice(
            &cfg,
            &["job", "run", "--local", "hello", "-p", &format!("n={n}")],
            &[],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(sqlite_count(&repo, instances), 4);
    let o = sluice(
        &cfg,
        &[
            "backup", "restore", "latest", "--job", "nightly", "--step", "repo",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).starts_with("restored backup "), "{}", text(&o));
    assert_eq!(sqlite_count(&repo, instances), 2);
    let o = sluice(&cfg, &["job", "list"], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Unknown ids and jobs are bad input.
    let o = sluice(
        &cfg,
        &[
            "backup", "verify", "nope", "--job", "nightly", "--step", "repo",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = sluice(&cfg, &["backup", "list", "--job", "hello"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no backup step"));

    // A corrupt artifact: verify and list --verify fail, naming it.
    let artifact = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".zst"))
        .unwrap();
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 4);
    let mut bytes = std::fs::read(&artifact).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&artifact, &bytes).unwrap();
    let from = backups.display().to_string();
    let o = sluice(&cfg, &["backup", "verify", "--from", &from], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stdout(&o).contains("CORRUPT"), "{}", text(&o));
    let o = sluice(&cfg, &["backup", "list", "--verify", "--from", &from], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = sluice(&cfg, &["backup", "restore", "latest", "--from", &from], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--to"),
        "{}",
        text(&o)
    );
}

#[test]
fn s3_backups_list_verify_and_restore() {
    let s3 = S3Server::start();
    s3.create_bucket("sluice-bk");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.db");
    sqlite_script(
        &data,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a'), ('b');",
    );
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[repository]
url = "sqlite://{repo}"

[[job]]
name = "nightly"
[[job.step]]
name = "data"
[job.step.tasklet]
kind = "backup"
source = "sqlite://{data}"
level = 9
retention = {{ keep_last = 2 }}
destination = {{ kind = "s3", bucket = "sluice-bk", prefix = "nightly/", endpoint = "{endpoint}", region = "eu-west-1", access_key_id = {{ env = "BK_KEY_ID" }}, secret_access_key = {{ env = "BK_SECRET" }} }}
"#,
            repo = dir.path().join("repo.db").display(),
            data = data.display(),
            endpoint = s3.endpoint
        ),
    )
    .unwrap();
    const SECRET: &str = "very/Secret+Key0123";
    let env = [("BK_KEY_ID", "testing"), ("BK_SECRET", SECRET)];
    for run in 0..3 {
        let args = ["job", "run", "--local", "nightly", "--rerun"];
        let o = sluice(&cfg, &args[..if run == 0 { 4 } else { 5 }], &env);
        assert!(o.status.success(), "{}", text(&o));
        assert!(!text(&o).contains(SECRET));
    }
    // keep_last = 2: two backups, artifact and manifest each.
    let keys = s3.keys("sluice-bk");
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("nightly/")), "{keys:?}");
    let o = sluice(&cfg, &["backup", "list", "--job", "nightly"], &env);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", text(&o));
    let o = sluice(&cfg, &["backup", "verify", "--job", "nightly"], &env);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o).matches("  ok  ").count(), 2, "{}", text(&o));
    // Without the secret the destination cannot be opened; the error says which key.
    let o = sluice(
        &cfg,
        &["backup", "list", "--job", "nightly"],
        &[("BK_KEY_ID", "x")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("secret_access_key"), "{}", text(&o));

    sqlite_script(&data, "DELETE FROM t; INSERT INTO t (v) VALUES ('z');");
    let o = sluice(
        &cfg,
        &["backup", "restore", "latest", "--job", "nightly"],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        sqlite_count(&data, "SELECT COUNT(*) FROM t WHERE v IN ('a', 'b')"),
        2
    );
    assert_eq!(sqlite_count(&data, "SELECT COUNT(*) FROM t"), 2);

    // The same bucket from the command line, the AWS_* variables naming it.
    let aws = [
        ("AWS_ENDPOINT", s3.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let o = sluice(
        &cfg,
        &[
            "backup",
            "list",
            "--from",
            "s3://sluice-bk/nightly",
            "--json",
        ],
        &aws,
    );
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = doc["backups"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{doc}");
    assert_eq!(list[0]["source"], "sqlite");
    assert_eq!(list[0]["ok"], true);
    let copy = dir.path().join("copy.db");
    let to = copy.display().to_string();
    let o = sluice(
        &cfg,
        &[
            "backup",
            "restore",
            "latest",
            "--from",
            "s3://sluice-bk/nightly",
            "--to",
            &to,
        ],
        &aws,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sqlite_count(&copy, "SELECT COUNT(*) FROM t"), 2);
}
