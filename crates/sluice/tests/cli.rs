//! The binary: `check`, `serve` with JSON logs, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bin::{BIN, KillOnDrop, check, gateway_toml};

#[test]
fn check_reports_errors_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\ncolour = 1\n").unwrap();
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1: server.colour: unknown field `colour`"),
        "{err}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = check(&good, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN)
        .args(["serve", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn serve_logs_json_and_drains_in_flight_requests_on_sigterm() {
    crate::support::init_logs();
    let sim = crate::bin::sim(Duration::from_millis(800), "cli+key/==").await;
    let port = sluice_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        gateway_toml(
            port,
            &sim.base_url(),
            "CLI_TEST_KEY",
            "shutdown_grace = \"10s\"\n",
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "-c"])
        .arg(&cfg)
        .env("CLI_TEST_KEY", "cli+key/==")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    // Never leave a server behind if an assertion fails.
    let _guard = KillOnDrop(pid);
    let mut lines = BufReader::new(stderr).lines();
    // Wait for the "listening" line.
    let first = lines.next().unwrap().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(v["message"], "sluice gateway listening");

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url =
        format!("http://127.0.0.1:{port}/air/getCtprvnRltmMesureDnsty?sidoName=x&returnType=json");
    let inflight = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The request in flight when SIGTERM arrived still completes.
    assert_eq!(inflight.await.unwrap().unwrap(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    for l in &rest {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string());
        assert!(
            !l.contains("cli+key") && !l.contains("cli%2Bkey"),
            "secret in log: {l}"
        );
    }
    assert!(
        rest.iter().any(|l| l.contains("shutdown signal received")),
        "{rest:?}"
    );
}

/// examples/jobs.toml written into `dir`, its databases there too.
fn jobs_example(dir: &std::path::Path) -> std::path::PathBuf {
    let text = crate::bin::example_jobs_toml(dir);
    assert!(
        text.contains("AIRKOREA_KEY"),
        "the example should use a secret"
    );
    let cfg = dir.join("jobs.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn a_reader_that_goes_away_ends_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = jobs_example(dir.path());
    for args in [
        &["job", "list"][..],
        &["job", "history", "air-quality-load"],
        &["schedule", "list"],
        &["queue", "stats"],
        &["check"],
    ] {
        // A pipe whose reading end is closed: every write to it fails (EPIPE).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(&args[..1])
            .arg("-c")
            .arg(&cfg)
            .args(&args[1..])
            .env("AIRKOREA_KEY", "k")
            .env("RUST_LOG", "warn")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn logs_to_a_pipe_are_not_coloured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = jobs_example(dir.path());
    let out = Command::new(BIN)
        .args(["job", "history", "-c"])
        .arg(&cfg)
        .arg("air-quality-load")
        .env("AIRKOREA_KEY", "k")
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("DEBUG"), "expected log lines: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in piped logs: {stderr}"
    );
}

#[test]
fn inspecting_commands_need_no_secrets_and_running_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = jobs_example(dir.path());
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(&args[..1])
            .arg("-c")
            .arg(&cfg)
            .args(&args[1..])
            .env_remove("AIRKOREA_KEY")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    for args in [
        &["queue", "stats"][..],
        &["job", "status"],
        &["job", "history", "air-quality-load"],
        &["job", "list"],
        &["schedule", "list"],
    ] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&["job", "run", "--local", "air-quality-load", "-p", "sido=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("environment variable AIRKOREA_KEY is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_locates_every_broken_step_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.toml");
    std::fs::write(
        &path,
        "[[job]]\nname = \"a\"\n[[job.step]]\nname = \"s\"\ntasklet = { kind = \"shell\", comand = \"true\" }\n\
         [[job.step]]\nname = \"t\"\nreader = { kind = \"jsonl\", path = \"in.jsonl\" }\nwriter = { kind = \"csv\", path = \"out.csv\", delimiter = \"ab\" }\n\
         [[job.step]]\nname = \"u\"\nreader = { kind = \"csv\", path = \"in.csv\", columns = [\"a\"] }\nwriter = { kind = \"jsonl\", path = \"out.jsonl\" }\n",
    )
    .unwrap();
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(
        err.contains("job[0].step[2].reader: columns needs header = true"),
        "{err}"
    );
    assert!(
        err.contains("jobs.toml:5:11: job[0].step[0].tasklet: unknown field `comand`"),
        "{err}"
    );
    assert!(
        err.contains(
            "jobs.toml:9:10: job[0].step[1].writer: delimiter \"ab\" must be one ASCII character"
        ),
        "{err}"
    );
}

/// `sluice sim --rows-per-sido N` serves an N-row dataset per `sidoName`: its
/// `totalCount`, a full last page, nothing past it (issue #14 point 10).
#[tokio::test]
async fn the_simulator_serves_a_dataset_of_the_size_asked() {
    sluice::init_tls();
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0", "--latency", "0ms"])
        .args(["--key", "plainkey", "--rows-per-sido", "1000000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let base = first
        .trim()
        .strip_prefix("simulated upstream on ")
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = |no: u64| {
        let url = format!(
            "{base}/getCtprvnRltmMesureDnsty?serviceKey=plainkey&sidoName=%EC%84%9C%EC%9A%B8\
             &returnType=json&numOfRows=1000&pageNo={no}"
        );
        let client = client.clone();
        async move {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        }
    };
    let last = page(1000).await;
    let body = &last["response"]["body"];
    assert_eq!(body["totalCount"], 1_000_000, "{last}");
    assert_eq!(
        body["items"]["item"].as_array().map(Vec::len),
        Some(1000),
        "{last}"
    );
    let past = page(1001).await;
    let items = &past["response"]["body"]["items"];
    assert!(
        items["item"].as_array().is_none_or(Vec::is_empty),
        "rows past the end: {past}"
    );
    let bad = Command::new(BIN)
        .args(["sim", "--rows-per-sido", "many"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--rows-per-sido"), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
}
