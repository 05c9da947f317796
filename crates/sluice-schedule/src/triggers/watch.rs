//! Event triggers: a file arriving in a watched directory runs a job, with the
//! file's path as a parameter.
//!
//! A `notify` watcher reports changes in the directory (not its subdirectories);
//! a file fires once it has been quiet for the settle time (so a file still being
//! written is not picked up half-way), if its name matches the pattern. Each
//! (trigger, file, modification time) is claimed once cluster-wide like a
//! scheduled instant, so several nodes watching a shared directory run the job
//! once per arrival, and a file replaced by a newer version runs it again. Files
//! already in the directory when the watcher starts are handled as arrivals: those
//! not claimed before (while no node was watching) fire now.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{TriggerError, TriggerField};
use crate::claim::{ClaimStore, LastFire};
use crate::scheduler::LaunchError;

/// `kind = "watch"`: runs the job for each file arriving in a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    /// The directory whose arriving files run the job.
    pub watch: String,
    /// File names to take, `*` wildcards (`*.csv`); default `*`. Dot-files
    /// and partial files (`.part`, `.partial`, `.tmp`, `.temp`, `.crdownload`,
    /// `.download`, `.filepart`, `.swp`, `~`, `.tmp-sluice`) are never taken
    /// unless the pattern starts with `.` or ends with that suffix.
    pub pattern: Option<String>,
    /// Quiet time before a file counts as arrived. Default `1s`.
    pub settle: Option<String>,
    /// The job parameter that gets the file's path. Default `file`.
    pub param: Option<String>,
}

impl RawWatch {
    /// The watcher's view of trigger `id` of `job`, and the parameter that gets
    /// the file's path.
    ///
    /// # Errors
    ///
    /// A settle time that is not a duration ([`TriggerField::Settle`]), a param
    /// that is not a plain name ([`TriggerField::Param`]); all of them.
    pub fn build(&self, id: String, job: &str) -> Result<(FileTrigger, String), Vec<TriggerError>> {
        let mut errs = Vec::new();
        let settle = match &self.settle {
            None => Duration::from_secs(1),
            Some(s) => humantime::parse_duration(s.trim()).unwrap_or_else(|e| {
                errs.push(TriggerError::new(
                    TriggerField::Settle,
                    format!("invalid settle \"{s}\": {e} (expected a duration such as \"1s\" or \"300ms\")"),
                ));
                Duration::ZERO
            }),
        };
        let param = super::change::param_name(self.param.as_deref(), "file", &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        let trigger = FileTrigger {
            id,
            job: job.to_owned(),
            dir: PathBuf::from(&self.watch),
            pattern: self.pattern.clone(),
            settle,
        };
        Ok((trigger, param))
    }
}

/// A directory trigger.
#[derive(Debug, Clone)]
pub struct FileTrigger {
    /// Unique id (`JOB/NAME` or `JOB#N`).
    pub id: String,
    /// The job it runs.
    pub job: String,
    /// The watched directory.
    pub dir: PathBuf,
    /// File-name pattern: `*` matches any run of characters (`*.csv`); `None`
    /// is `*`. Dot-files and partial files never match unless asked (see
    /// [`matches()`]).
    pub pattern: Option<String>,
    /// How long a file must be quiet before it fires.
    pub settle: Duration,
}

/// Runs a job for an arrived file.
#[async_trait]
pub trait FileLauncher: Send + Sync + 'static {
    /// Enqueues a run of `trigger.job` for `path`; returns the task id.
    ///
    /// # Errors
    ///
    /// A [`LaunchError`] saying why it could not.
    async fn launch_file(&self, trigger: &FileTrigger, path: &Path) -> Result<String, LaunchError>;
}

/// Name endings of files still being written (a download, an editor's or a
/// copy tool's temporary, sluice's own file writer): never taken unless the
/// pattern itself ends with one.
pub const PARTIAL_SUFFIXES: &[&str] = &[
    ".part",
    ".partial",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
    ".filepart",
    ".swp",
    "~",
    ".tmp-sluice",
];

/// Whether `name` matches `pattern` (`*` wildcards only). Dot-files and
/// partial files ([`PARTIAL_SUFFIXES`]) never match unless asked: a pattern
/// starting with `.` takes dot-files, one ending with a partial suffix takes
/// those files.
pub fn matches(pattern: Option<&str>, name: &str) -> bool {
    let p = pattern.unwrap_or("*");
    if name.starts_with('.') && !p.starts_with('.') {
        return false;
    }
    if PARTIAL_SUFFIXES
        .iter()
        .any(|s| name.ends_with(s) && !p.ends_with(s))
    {
        return false;
    }
    glob(p, name)
}

/// `*`-wildcard matching of a whole name.
fn glob(p: &str, name: &str) -> bool {
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return name == p;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Running directory watchers; dropping it stops them.
pub struct Watchers {
    _watchers: Vec<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() {
        return None;
    }
    let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(t.as_millis() as i64)
}

/// Starts watching every trigger's directory.
///
/// # Errors
///
/// A directory that does not exist or cannot be watched, named.
pub fn start(
    triggers: Vec<FileTrigger>,
    store: Arc<dyn ClaimStore>,
    launcher: Arc<dyn FileLauncher>,
) -> Result<Watchers, String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, PathBuf)>();
    let mut watchers = Vec::new();
    for (i, t) in triggers.iter().enumerate() {
        if !t.dir.is_dir() {
            return Err(format!(
                "trigger {}: watched directory {} does not exist",
                t.id,
                t.dir.display()
            ));
        }
        let tx2 = tx.clone();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                for p in ev.paths {
                    let _ = tx2.send((i, p));
                }
            }
        })
        .map_err(|e| format!("trigger {}: cannot watch {}: {e}", t.id, t.dir.display()))?;
        w.watch(&t.dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("trigger {}: cannot watch {}: {e}", t.id, t.dir.display()))?;
        watchers.push(w);
        // Files already there count as arrivals.
        if let Ok(rd) = std::fs::read_dir(&t.dir) {
            for e in rd.flatten() {
                let _ = tx.send((i, e.path()));
            }
        }
    }
    let triggers = Arc::new(triggers);
    let task = tokio::spawn(async move {
        let mut pending: HashMap<(usize, PathBuf), Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(k) => { pending.insert(k, Instant::now()); }
                    None => return,
                },
                _ = tick.tick() => {
                    let ready: Vec<(usize, PathBuf)> = pending
                        .iter()
                        .filter(|((i, _), seen)| seen.elapsed() >= triggers[*i].settle)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for (i, path) in ready {
                        pending.remove(&(i, path.clone()));
                        let t = &triggers[i];
                        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        if !matches(t.pattern.as_deref(), name) {
                            continue;
                        }
                        let Some(mtime) = mtime_ms(&path) else {
                            continue; // gone, or a directory
                        };
                        let key = format!("{}:{}", t.id, path.display());
                        match store.claim(&key, mtime).await {
                            Ok(true) => {}
                            Ok(false) => continue,
                            Err(e) => {
                                tracing::warn!(trigger = %t.id, file = %path.display(), error = %e, "could not claim a file; trying again");
                                pending.insert((i, path), Instant::now());
                                continue;
                            }
                        }
                        let (outcome, task) = match launcher.launch_file(t, &path).await {
                            Ok(task) => {
                                tracing::info!(trigger = %t.id, job = %t.job, file = %path.display(), task = %task, "file arrived; job enqueued");
                                (format!("fired task {task} for {}", path.display()), Some(task))
                            }
                            Err(e) => {
                                tracing::warn!(trigger = %t.id, file = %path.display(), error = %e, "claimed a file but could not enqueue its run");
                                (format!("error: {e}"), None)
                            }
                        };
                        let _ = store.record(&t.id, &LastFire { at: mtime, outcome, task }).await;
                        metrics::counter!(crate::scheduler::FIRES, "trigger" => t.id.clone(), "outcome" => "file").increment(1);
                    }
                }
            }
        }
    });
    Ok(Watchers {
        _watchers: watchers,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        assert!(matches(Some("*.csv"), "air-2026.csv"));
        assert!(!matches(Some("*.csv"), "air.csv.part"));
        assert!(matches(Some("air-*-*.csv"), "air-11-25.csv"));
        assert!(!matches(Some("air-*-*.csv"), "air-1125.csv"));
        assert!(matches(Some("exact.txt"), "exact.txt"));
        assert!(matches(None, "x.json"));
        assert!(!matches(None, ".hidden"));
        // Dot-files never match unless the pattern asks for them.
        assert!(!matches(Some("*.csv"), ".air.csv"));
        assert!(!matches(Some("*"), ".air.csv"));
        assert!(matches(Some(".*.csv"), ".air.csv"));
        // Partial files never match, whatever the pattern, unless it names them.
        for partial in [
            "air.csv.part",
            "air.csv.partial",
            "air.csv.tmp",
            "air.csv.crdownload",
            "air.csv~",
            "air.csv.tmp-sluice",
        ] {
            assert!(!matches(Some("*"), partial), "{partial}");
            assert!(!matches(Some("air*"), partial), "{partial}");
            assert!(!matches(None, partial), "{partial}");
        }
        assert!(matches(Some("*.part"), "air.csv.part"));
        // `a*a` needs two characters, not one shared one.
        assert!(!matches(Some("a*a"), "a"));
        assert!(matches(Some("a*a"), "aa"));
    }
}
