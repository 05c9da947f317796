//! Helpers for tests that run the `sluice` binary: its path, a failed
//! command's whole output, polling, ending children.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A command's exit code, stdout and stderr, for assertion messages.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `done` every 200 ms until it holds; after `secs` seconds fails with `what()`.
pub(crate) fn wait_until(secs: u64, mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < end, "{}", what());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `sig` (`TERM`, `INT`, `KILL`, …) to `pid`; whether `kill` succeeded.
pub(crate) fn kill(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ends a `sluice serve` child with SIGTERM and reaps it.
pub(crate) fn terminate(mut child: Child) {
    kill(child.id(), "TERM");
    let _ = child.wait();
}

/// SIGKILLs a process when dropped: never leave a server behind when an
/// assertion fails.
pub(crate) struct KillOnDrop(pub(crate) u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill(self.0, "KILL");
    }
}

/// A gateway config: `[server] listen` on `port`, upstream `airkorea` at
/// `base_url` with its service key from the environment variable `key_env`,
/// route `air` (`/air/{*rest}`, 1 min TTL), and `extra_server` lines in
/// `[server]`.
pub(crate) fn gateway_toml(port: u16, base_url: &str, key_env: &str, extra_server: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
{extra_server}
[[upstream]]
name = "airkorea"
base_url = "{base_url}"
secret_query = {{ serviceKey = {{ env = "{key_env}" }} }}
ok_when = '.response.header.resultCode == "00"'

[[route]]
name = "air"
path = "/air/{{*rest}}"
upstream = "airkorea"
ttl = "1m"
"#
    )
}

/// `sluice check -c CONFIG` with `env` set.
pub(crate) fn check(cfg: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(["check", "-c"])
        .arg(cfg)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Runs `run` until it no longer exits 3 ("already running": a killed run's
/// repository lease has not run out yet), for at most 30 s; its last output.
pub(crate) fn after_lease(mut run: impl FnMut() -> Output) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run();
        if out.status.code() != Some(3) {
            return out;
        }
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already running"),
            "{}",
            text(&out)
        );
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `examples/jobs.toml`, its repository and data databases moved into `dir`.
pub(crate) fn example_jobs_toml(dir: &Path) -> String {
    std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs.toml"),
    )
    .unwrap()
    .replace(
        "sqlite://sluice.db",
        &format!("sqlite://{}", dir.join("repo.db").display()),
    )
    .replace(
        "sqlite://data.db",
        &format!("sqlite://{}", dir.join("data.db").display()),
    )
}

/// Writes `dir/jobs.toml`: `[repository] url = repo_url`, then `rest` (more
/// repository keys, the jobs); its path.
pub(crate) fn jobs_config(dir: &Path, repo_url: &str, rest: &str) -> std::path::PathBuf {
    let cfg = dir.join("jobs.toml");
    std::fs::write(&cfg, format!("[repository]\nurl = \"{repo_url}\"\n{rest}")).unwrap();
    cfg
}

/// A simulated upstream answering after `latency`, accepting `key`.
pub(crate) async fn sim(latency: Duration, key: &str) -> sluice_testkit::SimUpstream {
    sluice_testkit::SimUpstream::start(sluice_testkit::SimConfig {
        latency,
        service_key: key.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A `[[job]]` named `job` of one shell step `step` running `command` (put
/// into the TOML string as it is).
pub(crate) fn shell_job_toml(job: &str, step: &str, command: &str) -> String {
    format!(
        "[[job]]\nname = \"{job}\"\n\n[[job.step]]\nname = \"{step}\"\n\
         tasklet = {{ kind = \"shell\", command = \"{command}\" }}\n"
    )
}
