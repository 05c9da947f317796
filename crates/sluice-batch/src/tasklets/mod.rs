//! Tasklets: steps that do one thing.
//!
//! - [`SqlTasklet`]: one SQL statement (or script), or a statement repeated in
//!   small transactions until it affects no row ([`BatchLoop`]), for large
//!   `DELETE`/`UPDATE`s that must not lock a table for minutes;
//! - [`ShellTasklet`]: a shell command with a timeout, its output captured into the
//!   exit message;
//! - [`HttpTasklet`]: one `GET` through a gateway [`Upstream`] (secrets, quota and
//!   `ok_when` apply).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_upstream::{Upstream, encode_component};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::job::Tasklet;
use crate::readers::sql::DEFAULT_CONNECT_TIMEOUT;
use sluice_sql::{ConnectSettings, Db};

/// Repeating a statement until it affects no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLoop {
    /// Pause between batches (lets replicas and other writers keep up).
    pub pause: Duration,
    /// Stop with an error after this many batches (a statement that never runs
    /// out of rows, e.g. an `UPDATE` that does not change its own condition).
    pub max_batches: Option<u64>,
}

impl Default for BatchLoop {
    fn default() -> Self {
        Self {
            pause: Duration::ZERO,
            max_batches: Some(1_000_000),
        }
    }
}

/// Runs SQL on SQLite, PostgreSQL or MySQL.
///
/// Without [`batch`](Self::batch), `sql` (one statement, or several separated by
/// `;`) runs once; the exit message is `N rows affected`. With it, `sql` must
/// affect a bounded number of rows per run, for example
/// `DELETE FROM t WHERE id IN (SELECT id FROM t WHERE ts < '2020-01-01' LIMIT 1000)`
/// (MySQL: `DELETE FROM t WHERE ts < '2020-01-01' LIMIT 1000`); it runs again, each
/// time in its own transaction, until it affects no row, and the exit message is
/// `N rows affected in K batches`. Rows of batches committed before a failure stay
/// deleted: the statement is naturally resumable.
#[derive(Debug, Clone)]
pub struct SqlTasklet {
    /// Database URL (`sqlite:…`, `postgres://…`, `mysql://…`).
    pub url: String,
    /// The statement(s).
    pub sql: String,
    /// Repeat until no row is affected.
    pub batch: Option<BatchLoop>,
}

impl SqlTasklet {
    /// Runs `sql` once on `url`.
    pub fn new(url: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            sql: sql.into(),
            batch: None,
        }
    }

    /// Repeats the statement until it affects no row.
    #[must_use]
    pub fn batch(mut self, batch: BatchLoop) -> Self {
        self.batch = Some(batch);
        self
    }

    async fn run_once(db: &Db, sql: &str, in_tx: bool) -> Result<u64, sqlx::Error> {
        if in_tx {
            let mut tx = db.begin().await?;
            let n = tx.execute_script(sql).await?;
            tx.commit().await?;
            Ok(n)
        } else {
            db.execute_script(sql).await
        }
    }

    async fn run(&self, db: &Db) -> Result<String, String> {
        let Some(batch) = self.batch else {
            let n = Self::run_once(db, &self.sql, false)
                .await
                .map_err(|e| format!("SQL failed: {e}"))?;
            return Ok(format!("{n} rows affected"));
        };
        let (mut total, mut batches) = (0u64, 0u64);
        loop {
            let n = Self::run_once(db, &self.sql, true).await.map_err(|e| {
                format!(
                    "SQL failed in batch {} after {total} rows affected in {batches} batches: {e}",
                    batches + 1
                )
            })?;
            if n == 0 {
                return Ok(format!("{total} rows affected in {batches} batches"));
            }
            total += n;
            batches += 1;
            tracing::debug!(batches, rows = total, "SQL batch committed");
            if batch.max_batches.is_some_and(|m| batches >= m) {
                return Err(format!(
                    "stopped after {batches} batches ({total} rows affected): the statement still affects rows"
                ));
            }
            if !batch.pause.is_zero() {
                tokio::time::sleep(batch.pause).await;
            }
        }
    }
}

#[async_trait]
impl Tasklet for SqlTasklet {
    async fn execute(&mut self) -> Result<String, String> {
        let settings = ConnectSettings::new().acquire_timeout(DEFAULT_CONNECT_TIMEOUT);
        let db = Db::connect(&self.url, &settings)
            .await
            .map_err(|e| format!("connecting to the database: {e}"))?;
        let res = self.run(&db).await;
        db.close().await;
        res
    }
}

/// Default size of the captured tail of stdout and of stderr.
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;

/// Runs a shell command (`sh -c command`) with a timeout.
///
/// stdout and stderr are captured (their last [`tail_bytes`](Self::tail_bytes)
/// each). The command runs in its own process group; on timeout the whole group
/// is killed (`kill -KILL -PGID`), so children it started die with it.
///
/// Exit 0 → `Ok("exit 0 in 1.2s\nstdout:\n…")`; another exit code →
/// `Err("exit code 3 …\nstderr:\n…")`; a timeout → `Err("timed out after …")`.
#[derive(Debug, Clone)]
pub struct ShellTasklet {
    /// The command, run with `sh -c`.
    pub command: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Longest run; the process group is killed after it.
    pub timeout: Duration,
    /// Working directory (default: the current one).
    pub cwd: Option<PathBuf>,
    /// How many bytes of the end of stdout and of stderr are kept.
    pub tail_bytes: usize,
}

impl ShellTasklet {
    /// `sh -c command` with a timeout, no extra environment, in the current
    /// directory.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self {
            command: command.into(),
            env: Vec::new(),
            timeout,
            cwd: None,
            tail_bytes: DEFAULT_TAIL_BYTES,
        }
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the working directory.
    #[must_use]
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

/// The last bytes of an output stream, and whether its start was cut.
type Tail = Arc<std::sync::Mutex<(VecDeque<u8>, bool)>>;

/// Reads `r` to its end into `into`, keeping the last `cap` bytes.
async fn tail<R: AsyncRead + Unpin>(mut r: R, cap: usize, into: Tail) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut t = into.lock().unwrap_or_else(|p| p.into_inner());
                t.0.extend(&buf[..n]);
                if t.0.len() > cap {
                    let extra = t.0.len() - cap;
                    t.0.drain(..extra);
                    t.1 = true;
                }
            }
        }
    }
}

/// The captured output as text, `…` marking a cut start.
fn text(t: &Tail) -> String {
    let t = t.lock().unwrap_or_else(|p| p.into_inner());
    let bytes: Vec<u8> = t.0.iter().copied().collect();
    let s = String::from_utf8_lossy(&bytes);
    let s = s.trim_end();
    if t.1 { format!("…{s}") } else { s.to_owned() }
}

fn section(name: &str, out: &str) -> String {
    if out.is_empty() {
        String::new()
    } else {
        format!("\n{name}:\n{out}")
    }
}

/// Kills process group `pgid` with `kill -KILL -- -PGID`.
#[cfg(unix)]
async fn kill_group(pgid: u32) {
    let res = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = res {
        tracing::warn!(pgid, error = %e, "could not run kill for the process group");
    }
}

#[async_trait]
impl Tasklet for ShellTasklet {
    async fn execute(&mut self) -> Result<String, String> {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not start sh -c {:?}: {e}", self.command))?;
        let pid = child.id();
        let cap = self.tail_bytes;
        let (out, err) = (Tail::default(), Tail::default());
        let readers = [
            child
                .stdout
                .take()
                .map(|s| tokio::spawn(tail(s, cap, out.clone()))),
            child
                .stderr
                .take()
                .map(|s| tokio::spawn(tail(s, cap, err.clone()))),
        ];
        let status = tokio::time::timeout(self.timeout, child.wait()).await;
        let timed_out = status.is_err();
        if timed_out {
            #[cfg(unix)]
            if let Some(pid) = pid {
                kill_group(pid).await;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        // A process that left the group (or a daemon it started) may hold the pipes
        // open: wait a little for the rest of the output, then take what came.
        let grace = tokio::time::Instant::now() + Duration::from_secs(2);
        for h in readers.into_iter().flatten() {
            let abort = h.abort_handle();
            if tokio::time::timeout_at(grace, h).await.is_err() {
                abort.abort();
            }
        }
        let (stdout, stderr) = (text(&out), text(&err));
        let took = started.elapsed();
        let status = match status {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("waiting for the command: {e}")),
            Err(_) => {
                return Err(format!(
                    "timed out after {:?}; the process group was killed{}{}",
                    self.timeout,
                    section("stdout", &stdout),
                    section("stderr", &stderr)
                ));
            }
        };
        if status.success() {
            return Ok(format!(
                "exit 0 in {:.1}s{}{}",
                took.as_secs_f64(),
                section("stdout", &stdout),
                section("stderr", &stderr)
            ));
        }
        let how = match status.code() {
            Some(c) => format!("exit code {c}"),
            None => {
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    match status.signal() {
                        Some(s) => format!("killed by signal {s}"),
                        None => "ended abnormally".to_owned(),
                    }
                }
                #[cfg(not(unix))]
                {
                    "ended abnormally".to_owned()
                }
            }
        };
        Err(format!(
            "{how} after {:.1}s{}{}",
            took.as_secs_f64(),
            section("stderr", &stderr),
            section("stdout", &stdout)
        ))
    }
}

/// One `GET` through an [`Upstream`].
///
/// The upstream injects its secrets, spends its quota, retries and applies
/// `ok_when`. Exit message: `HTTP 200, N bytes`.
#[derive(Debug, Clone)]
pub struct HttpTasklet {
    /// The upstream to call.
    pub upstream: Arc<Upstream>,
    /// Path appended to the upstream's base URL.
    pub path: String,
    /// Query parameters (raw values; encoded when sent).
    pub query: Vec<(String, String)>,
}

impl HttpTasklet {
    /// `GET path` on `upstream`, no query.
    pub fn new(upstream: Arc<Upstream>, path: impl Into<String>) -> Self {
        Self {
            upstream,
            path: path.into(),
            query: Vec::new(),
        }
    }

    /// Adds a query parameter.
    #[must_use]
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
}

#[async_trait]
impl Tasklet for HttpTasklet {
    async fn execute(&mut self) -> Result<String, String> {
        let query = self
            .query
            .iter()
            .map(|(n, v)| format!("{}={}", encode_component(n), encode_component(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .upstream
            .fetch(&self.path, &query, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let msg = format!("HTTP {}, {} bytes", resp.status, resp.body.len());
        if (200..300).contains(&resp.status) {
            Ok(msg)
        } else {
            Err(format!("upstream {} answered {msg}", self.upstream.name()))
        }
    }
}
