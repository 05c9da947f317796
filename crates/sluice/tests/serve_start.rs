//! `sluice serve` at start (issue #14 point 4): a gateway-only config opens no
//! database and starts no worker; with jobs, whatever can fail at start (an
//! unreachable repository, a missing watched directory) fails before
//! "listening" is logged, and `check` reports it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bin::{BIN, check, gateway_toml};

/// `serve` in `dir` (its working directory) until it exits, killed after
/// `limit` if it is still running: its exit code (None when killed) and stderr.
fn serve_until_exit(dir: &Path, cfg: &Path, limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(cfg)
        .current_dir(dir)
        .env("START_TEST_KEY", "k")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            return (None, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// With no jobs, `serve` proxies from a read-only working directory, starts
/// no worker and writes nothing there (no `./sluice.db`, no queue polled).
#[tokio::test]
async fn a_gateway_only_config_opens_no_database_and_starts_no_worker() {
    let sim = crate::bin::sim(Duration::from_millis(5), "k").await;
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_testkit::free_port();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        gateway_toml(port, &sim.base_url(), "START_TEST_KEY", ""),
    )
    .unwrap();
    // A read-only working directory: mode 0555, and, as root (who writes
    // anywhere), the server runs as `nobody` through util-linux `setpriv`,
    // from a copy of the binary it can reach.
    let bin_dir = tempfile::tempdir().unwrap();
    let mut command = if is_root() {
        let bin = bin_dir.path().join("sluice");
        std::fs::copy(BIN, &bin).unwrap();
        set_mode(bin_dir.path(), 0o755);
        set_mode(&cfg, 0o644);
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin);
        c
    } else {
        Command::new(BIN)
    };
    set_mode(dir.path(), 0o555);
    let mut child = command
        .args(["--log-format", "json", "serve", "-c"])
        .arg(&cfg)
        .current_dir(dir.path())
        .env("START_TEST_KEY", "k")
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("sluice gateway listening"))
        .expect("serve logs listening");
    let v: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(v["workers"], false, "{listening}");
    assert_eq!(v["jobs"], 0, "{listening}");
    sluice::init_tls();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!(
            "http://127.0.0.1:{port}/air/getCtprvnRltmMesureDnsty?sidoName=x&returnType=json"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait().unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    set_mode(dir.path(), 0o755);
    assert_eq!(files, ["gateway.toml"], "serve wrote into its directory");
    for l in &rest {
        assert!(
            !l.contains("sqlx") && !l.contains("worker"),
            "a gateway-only node touched a database or ran a worker: {l}"
        );
    }
}

/// A job whose repository cannot be reached: `serve` fails at start, saying
/// so, and never logs "listening" (PostgreSQL and a SQLite file in a missing
/// directory).
#[test]
fn an_unreachable_repository_fails_serve_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    for repo in [
        "postgres://postgres@127.0.0.1:1/none".to_owned(),
        format!("sqlite://{}/no/such/dir/repo.db", dir.path().display()),
    ] {
        let cfg = dir.path().join("jobs.toml");
        let text = format!(
            "{}\n[repository]\nurl = \"{repo}\"\n\n[[job]]\nname = \"j\"\n\n[[job.step]]\n\
             name = \"s\"\ntasklet = {{ kind = \"shell\", command = \"true\" }}\n",
            gateway_toml(
                sluice_testkit::free_port(),
                "http://127.0.0.1:1/x",
                "START_TEST_KEY",
                ""
            )
        );
        std::fs::write(&cfg, text).unwrap();
        let (code, err) = serve_until_exit(dir.path(), &cfg, Duration::from_secs(60));
        assert!(
            code.is_some_and(|c| c != 0),
            "{repo}: serve kept running: {err}"
        );
        assert!(err.contains("job repository"), "{repo}: {err}");
        assert!(!err.contains("listening"), "{repo}: listened first: {err}");
    }
}

/// A watched directory that does not exist: `check` reports it at its key,
/// `serve` fails before "listening"; other commands (`job list`) still work.
#[test]
fn a_missing_watched_directory_fails_check_and_serve_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("jobs.toml");
    let missing = dir.path().join("inbox");
    let text = format!(
        "{}\n[repository]\nurl = \"sqlite://{}\"\n\n[[job]]\nname = \"j\"\n\n[[job.step]]\n\
         name = \"s\"\ntasklet = {{ kind = \"shell\", command = \"true\" }}\n\n\
         [[job.trigger]]\nkind = \"watch\"\nwatch = \"{}\"\n",
        gateway_toml(
            sluice_testkit::free_port(),
            "http://127.0.0.1:1/x",
            "START_TEST_KEY",
            ""
        ),
        dir.path().join("repo.db").display(),
        missing.display()
    );
    let line = 1 + text.lines().position(|l| l.starts_with("watch =")).unwrap();
    std::fs::write(&cfg, text).unwrap();
    let out = check(&cfg, &[("START_TEST_KEY", "k")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("job[0].trigger[0].watch") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        err.contains(&format!("jobs.toml:{line}:")),
        "not located at line {line}: {err}"
    );
    let (code, err) = serve_until_exit(dir.path(), &cfg, Duration::from_secs(60));
    assert!(code.is_some_and(|c| c != 0), "serve kept running: {err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("listening"), "listened first: {err}");
    let list = Command::new(BIN)
        .args(["job", "list", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    std::fs::create_dir(&missing).unwrap();
    assert!(check(&cfg, &[("START_TEST_KEY", "k")]).status.success());
}

/// `/healthz` and `/readyz` report each component (issue #15 point 6): on a
/// node that runs jobs with its queue (and claims) on Redis, a Redis outage
/// shows as `broker` and `claims` down (healthz degraded, still 200; readyz
/// degraded with per-component status), and both are ok again once Redis is
/// back; a gateway-only node reports only its store.
#[tokio::test]
async fn the_probes_report_every_component_and_a_broker_outage() {
    let mut redis = sluice_testkit::servers::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_testkit::free_port();
    let cfg = dir.path().join("jobs.toml");
    let text = format!(
        "{}\n[queue]\nurl = \"{}\"\nnamespace = \"probes\"\n\n[repository]\nurl = \"sqlite://{}\"\n\n{}",
        gateway_toml(port, "http://127.0.0.1:1/x", "START_TEST_KEY", ""),
        redis.url(),
        dir.path().join("repo.db").display(),
        crate::bin::shell_job_toml("j", "s", "true"),
    );
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .env("START_TEST_KEY", "k")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = crate::bin::KillOnDrop(child.id());
    sluice::init_tls();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let probe = |path: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            Some((status, v))
        }
    };
    let until = async |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, v)) = probe("/readyz").await
                && ok(&v)
            {
                return v;
            }
            assert!(
                std::time::Instant::now() < end,
                "{what}: {:?}",
                probe("/readyz").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let ready = until("never ready", &|v| v["status"] == "ready").await;
    for c in ["store", "broker", "repository", "claims"] {
        assert_eq!(ready["components"][c]["status"], "ok", "{c}: {ready}");
    }
    redis.kill();
    let degraded = until("the outage never showed", &|v| v["status"] == "degraded").await;
    assert_eq!(
        degraded["components"]["broker"]["status"], "down",
        "{degraded}"
    );
    assert_eq!(
        degraded["components"]["claims"]["status"], "down",
        "{degraded}"
    );
    assert_eq!(
        degraded["components"]["repository"]["status"], "ok",
        "{degraded}"
    );
    let (code, health) = probe("/healthz").await.unwrap();
    assert_eq!(code, 200, "alive during the outage: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reason"].as_str().unwrap().contains("broker:"),
        "{health}"
    );
    redis.restart();
    until("never ready again", &|v| v["status"] == "ready").await;
    let (_, health) = probe("/healthz").await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    crate::bin::terminate(child);
}
