//! Issue #14 points 3 and 7: `sluice job run` runs here when no worker is live
//! and through the queue when one is; Ctrl-C cancels a task no worker started and
//! leaves a running one going; `task cancel` and `queue list`; the follower rides
//! out a Redis restart and a repository outage, and gives up with exit 75; a
//! killed worker's run shows as "owner gone, lease ends at …". Real binaries,
//! SQLite files, PostgreSQL and redis-server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bin::{BIN, text, wait_until};
use sluice_testkit::servers::RedisServer;

/// `sluice ARGS -c CONFIG`, quiet logs.
fn command(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).arg("-c").arg(cfg).env("RUST_LOG", "warn");
    c
}

fn sluice(cfg: &Path, args: &[&str]) -> Output {
    command(cfg, args).output().unwrap()
}

/// A config in `dir`: job `nap` sleeps `{{params.secs}}` seconds (default 0),
/// its repository in `repo.db`; `queue` is the `[queue]` table's lines (none:
/// the embedded default, the queue in the repository's SQLite file).
fn nap_config(dir: &Path, queue: &str) -> PathBuf {
    let repo = format!("sqlite://{}", dir.join("repo.db").display());
    nap_config_at(&dir.join("nap.toml"), &repo, queue)
}

/// The `nap` config at `cfg` with its repository at `repo` (a URL).
fn nap_config_at(cfg: &Path, repo: &str, queue: &str) -> PathBuf {
    let cfg = cfg.to_path_buf();
    std::fs::write(
        &cfg,
        format!(
            r#"[repository]
url = "{repo}"

{queue}

[[job]]
name = "nap"
params = {{ secs = "0" }}

[[job.step]]
name = "sleep"
tasklet = {{ kind = "shell", command = "sleep {{{{params.secs}}}}" }}
"#
        ),
    )
    .unwrap();
    cfg
}

/// `sluice serve` on a free port, output dropped; killed when dropped.
struct Serve(Child);

impl Serve {
    /// `serve` on `cfg`, once its worker has announced itself.
    fn live(cfg: &Path) -> Self {
        let serve = Self::start(cfg);
        wait_until(
            60,
            || jobs_worker_live(cfg),
            || format!("serve never announced a worker: {}", queue_list(cfg)),
        );
        serve
    }

    fn start(cfg: &Path) -> Serve {
        let port = sluice_testkit::free_port();
        let child = command(cfg, &["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Serve(child)
    }

    /// SIGTERM, then reaps it (a clean shutdown).
    fn terminate(mut self) {
        signal(&self.0, "TERM");
        let _ = self.0.wait();
    }

    /// SIGKILL, then reaps it.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// `queue list --json`.
fn queue_list(cfg: &Path) -> serde_json::Value {
    let out = sluice(cfg, &["queue", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Its own redis-server, a temp dir and a `nap` config whose queue is that
/// Redis (under `namespace`).
fn nap_on_redis(namespace: &str) -> (RedisServer, tempfile::TempDir, PathBuf) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let queue = format!(
        "[queue]\nurl = \"{}\"\nnamespace = \"{namespace}\"",
        redis.url()
    );
    let cfg = nap_config(dir.path(), &queue);
    (redis, dir, cfg)
}

/// Waits up to 60 s for a COMPLETED run of `nap` in `job history`.
fn wait_nap_completed(cfg: &Path) {
    wait_until(
        60,
        || {
            let h = sluice(cfg, &["job", "history", "nap"]);
            String::from_utf8_lossy(&h.stdout).contains("COMPLETED")
        },
        || "the run never completed on the worker".into(),
    );
}

/// Whether a live worker serves the `jobs` queue.
fn jobs_worker_live(cfg: &Path) -> bool {
    queue_list(cfg)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["queues"].as_array().unwrap().iter().any(|q| q == "jobs"))
}

/// Counts of the `jobs` queue (zeros when it never held a task).
fn jobs_counts(cfg: &Path) -> [u64; 4] {
    let list = queue_list(cfg);
    let q = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "jobs");
    match q {
        Some(q) => ["ready", "delayed", "running", "dead"].map(|k| q[k].as_u64().unwrap()),
        None => [0; 4],
    }
}

/// A `sluice job run` in the background whose output lines are collected.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    err_lines: Arc<Mutex<Vec<String>>>,
    err: mpsc::Receiver<String>,
}

impl Follower {
    fn start(cfg: &Path, args: &[&str]) -> Follower {
        let mut child = command(cfg, &[&["job", "run"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let (tx, err) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let err_lines = Arc::new(Mutex::new(Vec::new()));
        let el = err_lines.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                s.push_str(&line);
                s.push('\n');
                el.lock().unwrap().push(line);
            }
            let _ = tx.send(s);
        });
        Follower {
            child,
            lines,
            err_lines,
            err,
        }
    }

    /// Waits until a stderr line contains `needle`.
    fn wait_err_line(&mut self, secs: u64, needle: &str) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !self
            .err_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                Instant::now() < end && self.child.try_wait().unwrap().is_none(),
                "no {needle:?} on stderr within {secs}s:\n{}",
                self.err_lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stdout(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a stdout line contains `needle`; returns that line.
    fn wait_line(&mut self, secs: u64, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "job run ended ({st}) before printing {needle:?}:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.err.recv().unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} within {secs}s:\n{}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The task id of the `enqueued job … as task ID` line.
    fn task_id(&mut self) -> String {
        let l = self.wait_line(30, "as task ");
        l.split("as task ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .to_owned()
    }

    /// Waits for the process to end: its exit code, stdout and stderr.
    fn finish(mut self, secs: u64) -> (Option<i32>, String, String) {
        let end = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("job run did not end within {secs}s:\n{}", self.stdout());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = self
            .err
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        // The reader thread may still hold the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.stdout(), err)
    }
}

/// No `sluice serve`: `job run` says it runs here, runs the job, and leaves no
/// task on the queue; `--queue` and `--local` together are refused by clap.
#[tokio::test]
async fn job_run_without_a_live_worker_runs_here_and_leaves_no_task() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = nap_config(dir.path(), "");
    let out = sluice(&cfg, &["job", "run", "nap"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no live worker serves queue jobs: running the job in this process"),
        "{stdout}"
    );
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    assert!(!stdout.contains("enqueued"), "{stdout}");
    assert_eq!(jobs_counts(&cfg), [0; 4]);
    // Nothing of this process is announced once it ended.
    assert_eq!(queue_list(&cfg)["workers"], serde_json::json!([]));

    let both = sluice(&cfg, &["job", "run", "nap", "--local", "--queue"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("cannot be used with"),
        "{}",
        text(&both)
    );
}

/// With `sluice serve` live, `job run` enqueues and the worker runs it; `queue
/// list` shows the worker; `--local` runs here anyway. After a clean shutdown
/// the worker is gone from `queue list`, `--queue` enqueues anyway, and Ctrl-C
/// cancels the task no worker started (exit 130); `task cancel` cancels a
/// waiting one and refuses an unknown one.
#[tokio::test]
async fn job_run_uses_a_live_worker_and_ctrl_c_cancels_a_waiting_task() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = nap_config(dir.path(), "");
    let serve = Serve::live(&cfg);
    let listed = sluice(&cfg, &["queue", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("worker ") && listed.contains("queues ") && listed.contains("jobs"),
        "{listed}"
    );

    let out = sluice(&cfg, &["job", "run", "nap"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("serves queue jobs: enqueueing"), "{stdout}");
    assert!(stdout.contains("enqueued job nap as task"), "{stdout}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");

    let local = sluice(&cfg, &["job", "run", "nap", "--local", "-p", "secs=1"]);
    assert!(local.status.success(), "{}", text(&local));
    let local_out = String::from_utf8_lossy(&local.stdout);
    assert!(
        !local_out.contains("enqueued") && local_out.contains("COMPLETED"),
        "{local_out}"
    );

    serve.terminate();
    assert!(!jobs_worker_live(&cfg), "{}", queue_list(&cfg));
    let listed = sluice(&cfg, &["queue", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("no live worker"),
        "{}",
        text(&listed)
    );

    // --queue without a worker: the task waits; Ctrl-C cancels it.
    let mut f = Follower::start(&cfg, &["nap", "--queue", "-p", "secs=2"]);
    let id = f.task_id();
    f.wait_line(30, &format!("task {id}: ready"));
    assert_eq!(jobs_counts(&cfg), [1, 0, 0, 0]);
    signal(&f.child, "INT");
    let (code, _, err) = f.finish(30);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("cancelled task {id} (no worker had started it)")),
        "{err}"
    );
    assert_eq!(jobs_counts(&cfg), [0; 4]);

    // `task cancel` of a waiting task: the follower then says the truth.
    let mut f = Follower::start(&cfg, &["nap", "--queue", "-p", "secs=3"]);
    let id = f.task_id();
    let c = sluice(&cfg, &["task", "cancel", &id]);
    assert!(c.status.success(), "{}", text(&c));
    assert!(
        String::from_utf8_lossy(&c.stdout).contains(&format!("cancelled task {id}")),
        "{}",
        text(&c)
    );
    let (code, _, err) = f.finish(30);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("disappeared from the queue before any worker ran it"),
        "{err}"
    );
    let again = sluice(&cfg, &["task", "cancel", &id]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("unknown"),
        "{}",
        text(&again)
    );
    assert_eq!(jobs_counts(&cfg), [0; 4]);
}

/// Ctrl-C while a worker runs the task leaves it running and says where; the
/// run completes on the worker; `task cancel` refuses a running task.
#[tokio::test]
async fn ctrl_c_leaves_a_running_task_going_on_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = nap_config(dir.path(), "");
    let serve = Serve::live(&cfg);
    let mut f = Follower::start(&cfg, &["nap", "-p", "secs=4"]);
    let id = f.task_id();
    f.wait_line(30, "execution #");
    let refused = sluice(&cfg, &["task", "cancel", &id]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is running on a worker"),
        "{}",
        text(&refused)
    );
    signal(&f.child, "INT");
    let (code, _, err) = f.finish(30);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("task {id} keeps running on worker "))
            && err.contains(&format!("sluice task status {id}")),
        "{err}"
    );
    wait_nap_completed(&cfg);
    serve.terminate();
}

/// Issue #14 point 7: Redis (the broker) is killed for a few seconds while the
/// worker runs the job and comes back empty; the follower says it lost the
/// broker and that it is back, follows the run through the repository, and
/// exits 0 with the job's outcome.
#[tokio::test]
async fn the_follower_rides_out_a_redis_restart_and_exits_with_the_job_outcome() {
    let (mut redis, _dir, cfg) = nap_on_redis("follow");
    let serve = Serve::live(&cfg);
    let mut f = Follower::start(&cfg, &["nap", "-p", "secs=8"]);
    f.wait_line(30, "execution #");
    redis.kill();
    std::thread::sleep(Duration::from_secs(3));
    redis.restart();
    let (code, stdout, err) = f.finish(90);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(err.contains("lost the broker"), "{err}");
    assert!(err.contains("broker back after"), "{err}");
    // The restarted Redis is empty: the run is followed through the repository.
    assert!(err.contains("following its execution #"), "{err}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    serve.terminate();
}

/// The follower gives up after `--follow-timeout` without the broker: exit 75
/// and how to follow the task later.
#[tokio::test]
async fn the_follower_gives_up_with_exit_75_and_says_how_to_follow() {
    let (mut redis, _dir, cfg) = nap_on_redis("giveup");
    let mut f = Follower::start(&cfg, &["nap", "--queue", "--follow-timeout", "2s"]);
    let id = f.task_id();
    f.wait_line(30, &format!("task {id}: ready"));
    redis.kill();
    let (code, _, err) = f.finish(60);
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("lost the broker"), "{err}");
    assert!(
        err.contains(&format!("gave up following task {id}")),
        "{err}"
    );
    assert!(err.contains(&format!("sluice task status {id}")), "{err}");
}

/// A worker killed with SIGKILL mid-run: once its announcement ran out, `job
/// status` and `queue stats` show its run as "owner gone, lease ends at <time>".
#[tokio::test]
async fn a_killed_workers_run_shows_owner_gone_with_the_lease_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = nap_config(dir.path(), "");
    let serve = Serve::live(&cfg);
    let mut f = Follower::start(&cfg, &["nap", "-p", "secs=40"]);
    f.wait_line(30, "execution #");
    serve.kill();
    let gone = |out: &Output| {
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.lines().any(|l| {
            l.contains("owner gone")
                && l.contains("lease ends at ")
                && l.trim_end().ends_with("UTC")
        })
    };
    wait_until(
        25,
        || gone(&sluice(&cfg, &["job", "status"])),
        || text(&sluice(&cfg, &["job", "status"])),
    );
    let stats = sluice(&cfg, &["queue", "stats"]);
    assert!(gone(&stats), "{}", text(&stats));
    // The single execution's view says the same, with the owner's node id.
    let status = sluice(&cfg, &["job", "status"]);
    let s = String::from_utf8_lossy(&status.stdout);
    let exec = s
        .lines()
        .find_map(|l| l.trim().strip_prefix('#'))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_owned();
    let one = sluice(&cfg, &["job", "status", &exec]);
    let one_out = String::from_utf8_lossy(&one.stdout);
    assert!(
        one_out.contains("owner gone (") && one_out.contains("lease ends at 20"),
        "{one_out}"
    );
    // The follower, still following, says so too; Ctrl-C leaves the task to
    // the next worker.
    f.wait_err_line(
        30,
        &format!("running execution #{exec} is gone: its lease ends at 20"),
    );
    signal(&f.child, "INT");
    let (code, _, err) = f.finish(30);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("which is gone: its lease ends at 20"), "{err}");
}

/// A TCP proxy to `target` that can be cut: [`Cut::cut`] closes every open
/// connection and refuses new ones until [`Cut::heal`].
struct Cut {
    port: u16,
    down: tokio::sync::watch::Sender<bool>,
}

impl Cut {
    async fn start(target: std::net::SocketAddr) -> Cut {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                if *rx.borrow() {
                    continue; // dropped: refused
                }
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        Cut { port, down }
    }

    fn cut(&self) {
        self.down.send_replace(true);
    }

    fn heal(&self) {
        self.down.send_replace(false);
    }
}

/// Issue #14 point 7: the follower's repository (PostgreSQL, through a proxy
/// that is cut) goes away while the worker runs the job and finishes it; the
/// follower says it lost the repository, says when it is back, and exits 0
/// with the job's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_rides_out_a_repository_outage() {
    let redis = RedisServer::start();
    let db =
        sluice_testkit::db::ServerDb::new(sluice_testkit::db::Server::Postgres, "follow").await;
    // postgres://user@host:port/db → the host:port, and the URL through the proxy.
    let (head, rest) = db.url.split_once("://").unwrap();
    let at = rest.rfind('@').map_or(0, |i| i + 1);
    let slash = rest[at..].find('/').map_or(rest.len(), |i| at + i);
    let host_port = &rest[at..slash];
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let target = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let cut = Cut::start(target).await;
    let proxied = format!(
        "{head}://{}127.0.0.1:{}{}",
        &rest[..at],
        cut.port,
        &rest[slash..]
    );
    let dir = tempfile::tempdir().unwrap();
    let queue = format!(
        "[queue]\nurl = \"{}\"\nnamespace = \"repo-out\"",
        redis.url()
    );
    let direct = nap_config_at(&dir.path().join("direct.toml"), &db.url, &queue);
    let through = nap_config_at(&dir.path().join("proxied.toml"), &proxied, &queue);
    let serve = Serve::live(&direct);
    let mut f = Follower::start(&through, &["nap", "-p", "secs=4"]);
    f.wait_line(30, "execution #");
    cut.cut();
    // The worker finishes the run meanwhile.
    wait_nap_completed(&direct);
    f.wait_err_line(60, "lost the repository");
    cut.heal();
    let (code, stdout, err) = f.finish(60);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(err.contains("repository back after"), "{err}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    serve.terminate();
}
