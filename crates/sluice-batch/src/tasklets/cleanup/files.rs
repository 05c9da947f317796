//! [`FileCleanup`]: files older than a retention, matching a name pattern,
//! deleted from a directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::job::{Tasklet, TaskletError};
use crate::model::StepCounts;

/// Deletes the files under `dir` whose names match `pattern` and that were last
/// modified longer than `older_than` ago, keeping the newest `keep_last`
/// matching files whatever their age. Symbolic links are not followed (a link
/// itself can be removed); directories are never removed. Counts: `read` the
/// matching files, `written` the ones removed. Built by
/// [`RawFileCleanupTasklet`](super::RawFileCleanupTasklet).
#[derive(Debug, Clone)]
pub struct FileCleanup {
    pub(super) dir: PathBuf,
    pub(super) pattern: String,
    pub(super) older_than: Duration,
    pub(super) recursive: bool,
    pub(super) keep_last: usize,
    pub(super) dry_run: bool,
    pub(super) counts: StepCounts,
}

/// Whether `name` matches the wildcard `pattern` (`*` any run, `?` one character).
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl FileCleanup {
    /// The matching files under `dir`: (path, modified, size).
    fn matching(
        &self,
        dir: &Path,
        out: &mut Vec<(PathBuf, SystemTime, u64)>,
    ) -> Result<(), TaskletError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| TaskletError::Failed(format!("listing {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| TaskletError::Failed(format!("listing {}: {e}", dir.display())))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| TaskletError::Failed(format!("{}: {e}", path.display())))?;
            if meta.is_dir() {
                if self.recursive {
                    self.matching(&path, out)?;
                }
                continue;
            }
            let name = entry.file_name();
            if !wildcard(&self.pattern, &name.to_string_lossy()) {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((path, modified, meta.len()));
        }
        Ok(())
    }
}

#[async_trait]
impl Tasklet for FileCleanup {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        self.counts = StepCounts::default();
        let me = self.clone();
        let (found, removed, bytes, failed) = tokio::task::spawn_blocking(move || {
            let mut files = Vec::new();
            me.matching(&me.dir, &mut files)?;
            // Newest first: the first `keep_last` stay.
            files.sort_by_key(|f| std::cmp::Reverse(f.1));
            let cutoff = SystemTime::now()
                .checked_sub(me.older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let (mut removed, mut bytes, mut failed) = (0u64, 0u64, Vec::new());
            for (path, modified, size) in files.iter().skip(me.keep_last) {
                if *modified >= cutoff {
                    continue;
                }
                if me.dry_run {
                    tracing::info!(file = %path.display(), "dry run: would remove");
                    removed += 1;
                    bytes += size;
                    continue;
                }
                match std::fs::remove_file(path) {
                    Ok(()) => {
                        removed += 1;
                        bytes += size;
                    }
                    // Gone already (another cleaner): nothing to do.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => failed.push(format!("{}: {e}", path.display())),
                }
            }
            Ok::<_, TaskletError>((files.len() as u64, removed, bytes, failed))
        })
        .await
        .map_err(|e| TaskletError::Failed(format!("the cleanup thread failed: {e}")))??;
        self.counts.read = found;
        self.counts.commits = 1;
        let dir = self.dir.display();
        let pat = &self.pattern;
        if self.dry_run {
            return Ok(format!(
                "dry run: {removed} of {found} files matching {pat:?} in {dir} would be removed ({bytes} bytes)"
            ));
        }
        self.counts.written = removed;
        if !failed.is_empty() {
            self.counts.skipped = failed.len() as u64;
            return Err(TaskletError::Failed(format!(
                "removed {removed} files ({bytes} bytes) but could not remove {}: {}",
                failed.len(),
                failed
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(format!(
            "removed {removed} of {found} files matching {pat:?} in {dir} ({bytes} bytes)"
        ))
    }

    fn counts(&self) -> Option<StepCounts> {
        Some(self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_like_a_shell() {
        for (p, n, want) in [
            ("*", "a.log", true),
            ("*.log", "a.log", true),
            ("*.log", "a.log.1", false),
            ("*.log.*", "a.log.1", true),
            ("app-????.gz", "app-2024.gz", true),
            ("app-????.gz", "app-24.gz", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b", "xxaxxbxxc", false),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(wildcard(p, n), want, "{p} vs {n}");
        }
    }
}
