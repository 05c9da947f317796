//! What the job repository records: instances, executions, step executions, skips.
//!
//! The vocabulary follows Spring Batch, which many users know:
//!
//! - a **job instance** is a job name plus its *identifying* parameters;
//! - each run of an instance is a **job execution**, with a [`BatchStatus`], times
//!   and an exit message;
//! - each step of an execution has a **step execution** with its counts and its
//!   reader's **checkpoint**, committed with every chunk, so that a restart resumes
//!   after the last committed chunk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Job parameters, `name → value`. They identify the instance, except those a
/// run names as non-identifying (see [`identifying`]).
pub type Params = BTreeMap<String, String>;

/// The names of a run's parameters that do not identify its instance (as in
/// Spring Batch): recorded with the execution, left out of the instance key, so
/// that a run differing only in them resumes the same instance.
pub type NonIdentifying = BTreeSet<String>;

/// The parameters of `params` that identify the instance: all but
/// `non_identifying`.
pub fn identifying(params: &Params, non_identifying: &NonIdentifying) -> Params {
    params
        .iter()
        .filter(|(k, _)| !non_identifying.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One item flowing through a chunk step: a JSON value (usually an object).
pub type Item = serde_json::Value;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The status of a job or step execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    /// Created, not yet running.
    Starting,
    /// Running (its process holds the lease).
    Started,
    /// Finished successfully.
    Completed,
    /// Finished with an error; can be restarted.
    Failed,
    /// A stop was requested; it stops at the next chunk boundary.
    Stopping,
    /// Stopped on request; can be restarted.
    Stopped,
    /// Its process died (lease expired); superseded by a later execution.
    Abandoned,
}

impl BatchStatus {
    /// Every status, in order.
    pub const ALL: [BatchStatus; 7] = [
        Self::Starting,
        Self::Started,
        Self::Completed,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
        Self::Abandoned,
    ];

    /// `STARTING`, `STARTED`, … as stored in the repository.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::Started => "STARTED",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Stopping => "STOPPING",
            Self::Stopped => "STOPPED",
            Self::Abandoned => "ABANDONED",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Whether an execution in this status may still be running.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Starting | Self::Started | Self::Stopping)
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job name with its identifying parameters (the instance key leaves the
/// non-identifying ones out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInstance {
    /// Repository id.
    pub id: i64,
    /// The job's name.
    pub job_name: String,
    /// The identifying parameters.
    pub params: Params,
    /// A stable key of the parameters (canonical JSON), unique per job name.
    pub params_key: String,
}

/// One run of a job instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecution {
    /// Repository id (what `job status EXEC` takes).
    pub id: i64,
    /// The instance it runs.
    pub instance_id: i64,
    /// The job's name.
    pub job_name: String,
    /// The parameters it ran with.
    pub params: Params,
    /// Those of [`params`](Self::params) that do not identify its instance.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub non_identifying: NonIdentifying,
    /// Where it stands.
    pub status: BatchStatus,
    /// When it was created.
    pub created_at: Millis,
    /// When it started running.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub ended_at: Option<Millis>,
    /// Why it ended (error message, `stopped on request`, …).
    pub exit_message: String,
    /// Which process runs it (`{hostname}-{pid}`).
    pub owner: String,
    /// Until when its owner's lease holds; a later time means it is alive.
    pub lease_until: Option<Millis>,
}

/// Counts of a step execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    /// Items read.
    pub read: u64,
    /// Items processed (passed to the processor and not failed).
    pub processed: u64,
    /// Items the processor filtered out (null or empty).
    pub filtered: u64,
    /// Items written.
    pub written: u64,
    /// Items skipped (read, process or write errors under the skip limit).
    pub skipped: u64,
    /// Chunks committed.
    pub commits: u64,
    /// Chunks rolled back (retried or isolated item by item).
    pub rollbacks: u64,
}

impl StepCounts {
    /// The counts' names, in the order of [`values`](Self::values).
    pub const NAMES: [&'static str; 7] = [
        "read",
        "processed",
        "filtered",
        "written",
        "skipped",
        "commits",
        "rollbacks",
    ];

    /// The seven counts, in the order of [`NAMES`](Self::NAMES) (and of the
    /// repository's columns, `read_count` … `rollback_count`).
    pub fn values(&self) -> [u64; 7] {
        [
            self.read,
            self.processed,
            self.filtered,
            self.written,
            self.skipped,
            self.commits,
            self.rollbacks,
        ]
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &StepCounts) {
        self.read += other.read;
        self.processed += other.processed;
        self.filtered += other.filtered;
        self.written += other.written;
        self.skipped += other.skipped;
        self.commits += other.commits;
        self.rollbacks += other.rollbacks;
    }
}

/// One step of one job execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExecution {
    /// Repository id.
    pub id: i64,
    /// The job execution it belongs to.
    pub execution_id: i64,
    /// The step's name.
    pub step_name: String,
    /// Where it stands.
    pub status: BatchStatus,
    /// Counts, cumulative across restarts of the same instance.
    pub counts: StepCounts,
    /// The reader's position after the last committed chunk (`null` before the
    /// first).
    pub checkpoint: serde_json::Value,
    /// When it started.
    pub started_at: Millis,
    /// When it ended.
    pub ended_at: Option<Millis>,
    /// Why it ended.
    pub exit_message: String,
}

/// A skipped item, as recorded in the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipRecord {
    /// The step execution it belongs to.
    pub step_execution_id: i64,
    /// The step's name.
    pub step_name: String,
    /// Where in the input (row or line number, 1-based, or item index).
    pub position: u64,
    /// `read`, `process` or `write`.
    pub phase: String,
    /// Why it was skipped.
    pub reason: String,
    /// The item (or raw row), when available, truncated to 4 KiB.
    pub item: Option<String>,
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `ms` as an RFC 3339 UTC time with milliseconds (`2026-12-03T11:22:33.401Z`),
/// the form every message that shows a repository time uses.
pub fn format_millis(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms since the Unix epoch"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// The canonical key of a parameter map (sorted JSON object).
pub fn params_key(params: &Params) -> String {
    serde_json::to_string(params).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in BatchStatus::ALL {
            assert_eq!(BatchStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BatchStatus::parse("RUNNING"), None);
        assert!(BatchStatus::Started.is_running());
        assert!(!BatchStatus::Failed.is_running());
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("서울", 4), "서");
        assert_eq!(truncate("서울", 6), "서울");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn params_key_is_canonical() {
        let mut a = Params::new();
        a.insert("b".into(), "2".into());
        a.insert("a".into(), "서울".into());
        assert_eq!(params_key(&a), r#"{"a":"서울","b":"2"}"#);
    }

    #[test]
    fn non_identifying_params_are_left_out_of_the_key() {
        let mut p = Params::new();
        p.insert("sido".into(), "서울".into());
        p.insert("fire_time".into(), "2026-12-03T11:00:00+00:00".into());
        let non: NonIdentifying = ["fire_time".to_owned()].into();
        assert_eq!(params_key(&identifying(&p, &non)), r#"{"sido":"서울"}"#);
        assert_eq!(identifying(&p, &NonIdentifying::new()), p);
    }

    #[test]
    fn times_are_shown_as_times() {
        assert_eq!(format_millis(1_796_159_325_401), "2026-12-01T21:08:45.401Z");
    }
}
