//! [`ShellTasklet`]: a shell command with a timeout; `tasklet = { kind = "shell",
//! … }`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ConfigError, duration};
use crate::job::{Tasklet, TaskletError};

/// `kind = "shell"`: a shell command (`sh -c`); a non-zero exit fails the step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShellTasklet {
    /// The command.
    pub command: String,
    /// Environment variables added for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Longest run before it is killed. Default `1h`.
    pub timeout: Option<String>,
    /// Working directory. Default: sluice's.
    pub cwd: Option<String>,
}

kind!(RawShellTasklet => dyn crate::job::Tasklet, |c, _ctx| Self::build(c)?);

impl RawShellTasklet {
    /// The tasklet.
    ///
    /// # Errors
    ///
    /// A `timeout` that is not a duration.
    pub fn build(self) -> Result<ShellTasklet, ConfigError> {
        let timeout = match &self.timeout {
            Some(t) => duration(t)?,
            None => Duration::from_secs(3600),
        };
        let mut t = ShellTasklet::new(self.command, timeout);
        for (k, v) in self.env {
            t = t.env(k, v);
        }
        if let Some(c) = self.cwd {
            t = t.cwd(c);
        }
        Ok(t)
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
/// [`TaskletError::Exited`] (`exit code 3 …\nstderr:\n…`); a timeout →
/// [`TaskletError::TimedOut`] (`timed out after …`).
///
/// Either way the text (with the output tails) becomes the step execution's
/// exit message in the repository, which `sluice job status EXEC` prints
/// under the step and its `--json` carries as `exit_message`.
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
    async fn execute(&mut self) -> Result<String, TaskletError> {
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
        let mut child = cmd.spawn().map_err(|source| TaskletError::Spawn {
            command: self.command.clone(),
            source,
        })?;
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
            Ok(Err(e)) => return Err(TaskletError::Wait(e)),
            Err(_) => {
                return Err(TaskletError::TimedOut {
                    timeout: self.timeout,
                    output: section("stdout", &stdout) + &section("stderr", &stderr),
                });
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
        Err(TaskletError::Exited {
            status: how,
            seconds: took.as_secs_f64(),
            output: section("stderr", &stderr) + &section("stdout", &stdout),
        })
    }
}
