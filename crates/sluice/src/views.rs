//! The JSON shapes of jobs, executions, steps and triggers, shared by the CLI's
//! `--json` output and the REST API (whose OpenAPI schemas they also are), so a
//! script and an API client read the same fields.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_batch::model::{BatchStatus, JobExecution, StepCounts, StepExecution};
use sluice_schedule::LastFire;
use utoipa::ToSchema;

use crate::config::Settings;

/// An RFC 3339 time (UTC, milliseconds) of Unix milliseconds.
pub fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A configured job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its description.
    pub description: Option<&'a str>,
    /// Its steps' names, in order.
    pub steps: Vec<&'a str>,
    /// Its last execution.
    pub last: Option<ExecutionView<'a>>,
}

/// An execution: the repository's record, times as RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView<'a> {
    /// Its id.
    pub id: i64,
    /// The job instance it runs (job and identifying parameters).
    pub instance_id: i64,
    /// The job.
    pub job_name: &'a str,
    /// The parameters it runs with.
    #[schema(value_type = HashMap<String, String>)]
    pub params: &'a sluice_batch::model::Params,
    /// `STARTING`, `STARTED`, `COMPLETED`, `FAILED`, `STOPPING`, `STOPPED` or
    /// `ABANDONED`.
    #[schema(value_type = String)]
    pub status: BatchStatus,
    /// When it was created.
    pub created_at: Option<String>,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Why it ended.
    pub exit_message: &'a str,
    /// The process running it.
    pub owner: &'a str,
    /// Until when its owner's lease holds.
    pub lease_until: Option<String>,
    /// `owner gone, lease ends at …` when it runs and its owner is not live.
    pub owner_gone: Option<String>,
}

impl<'a> ExecutionView<'a> {
    /// The view of `e`.
    pub fn of(e: &'a JobExecution) -> Self {
        Self {
            id: e.id,
            instance_id: e.instance_id,
            job_name: &e.job_name,
            params: &e.params,
            status: e.status,
            created_at: rfc3339(Some(e.created_at)),
            started_at: rfc3339(e.started_at),
            ended_at: rfc3339(e.ended_at),
            exit_message: &e.exit_message,
            owner: &e.owner,
            lease_until: rfc3339(e.lease_until),
            owner_gone: None,
        }
    }
}

/// An execution and its steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionDetail<'a> {
    /// The execution.
    pub execution: ExecutionView<'a>,
    /// Its steps, in the order they ran.
    pub steps: Vec<StepView<'a>>,
}

/// The counts of a step execution.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StepCounts)]
pub struct CountsSchema {
    /// Items read.
    pub read: u64,
    /// Items processed.
    pub processed: u64,
    /// Items the processor filtered out.
    pub filtered: u64,
    /// Items written.
    pub written: u64,
    /// Items skipped.
    pub skipped: u64,
    /// Chunks committed.
    pub commits: u64,
    /// Chunks rolled back.
    pub rollbacks: u64,
}

/// A step execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView<'a> {
    /// Its id.
    pub id: i64,
    /// The step's name.
    pub step_name: &'a str,
    /// Its status (as an execution's).
    #[schema(value_type = String)]
    pub status: BatchStatus,
    /// Items read, processed, filtered, written, skipped; chunks committed and
    /// rolled back.
    #[schema(value_type = CountsSchema)]
    pub counts: StepCounts,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Why it ended; a shell tasklet's exit and the tail of its output.
    pub exit_message: &'a str,
}

impl<'a> StepView<'a> {
    /// The view of `s`.
    pub fn of(s: &'a StepExecution) -> Self {
        Self {
            id: s.id,
            step_name: &s.step_name,
            status: s.status,
            counts: s.counts,
            started_at: rfc3339(Some(s.started_at)),
            ended_at: rfc3339(s.ended_at),
            exit_message: &s.exit_message,
        }
    }
}

/// A trigger: a schedule (cron, every, at), a directory watch or a database
/// change.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView<'a> {
    /// Its id: `JOB#N` or `JOB/NAME`.
    pub id: &'a str,
    /// The job it fires.
    pub job: &'a str,
    /// `schedule` (cron, every, at), `watch`, `pg_change` or `sql_change`.
    pub kind: &'static str,
    /// What fires it: `every 1s`, `cron … in Europe/Paris`, `watch DIR (PATTERN)`.
    pub rule: String,
    /// What happens to fires missed while no node ran (schedules only):
    /// `fire_once`, `skip`, `catch_up(max N)`.
    pub misfire: Option<String>,
    /// What happens when a fire comes while the last run still runs (schedules
    /// only).
    pub overlap: Option<&'static str>,
    /// Whether it is paused.
    pub paused: bool,
    /// When a timed pause ends (RFC 3339); none for a pause until resumed.
    pub paused_until: Option<String>,
    /// Its last fire.
    pub last_fire: Option<LastFireView<'a>>,
    /// The next three fire times (schedules only).
    pub next: Vec<String>,
}

/// A trigger's last fire.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastFireView<'a> {
    /// Its scheduled instant (a file fire's is the file's arrival).
    pub at: Option<String>,
    /// What it did: `fired task …`, `skipped_overlap`, …
    pub outcome: &'a str,
    /// The task it enqueued.
    pub task: Option<&'a str>,
}

impl<'a> LastFireView<'a> {
    fn of(l: &'a LastFire) -> Self {
        Self {
            at: rfc3339(Some(l.at)),
            outcome: &l.outcome,
            task: l.task.as_deref(),
        }
    }
}

/// A misfire policy as the config spells it: `fire_once`, `skip`,
/// `catch_up` (`catch_up(max N)`).
fn misfire_name(m: sluice_schedule::Misfire) -> String {
    match m {
        sluice_schedule::Misfire::FireOnce => "fire_once".into(),
        sluice_schedule::Misfire::Skip => "skip".into(),
        sluice_schedule::Misfire::CatchUp { max } => format!("catch_up(max {max})"),
    }
}

/// What fires a watch: `watch DIR (PATTERN), the path in parameter P`.
pub fn watch_rule(w: &crate::config::WatchSettings) -> String {
    let t = &w.trigger;
    format!(
        "watch {} ({}), the path in parameter {}",
        t.dir.display(),
        t.pattern.as_deref().unwrap_or("*"),
        w.param
    )
}

/// Every watch and trigger of `settings`, with their last fires and pauses
/// (`paused`: each paused trigger and when its pause ends).
pub fn trigger_views<'a>(
    settings: &'a Settings,
    last: &'a HashMap<String, LastFire>,
    paused: &HashMap<String, Option<i64>>,
    now: DateTime<Utc>,
) -> Vec<TriggerView<'a>> {
    // What every kind has; a scheduled trigger adds its policies and next fires.
    let base = |id: &'a str, job: &'a str, kind: &'static str, rule: String| TriggerView {
        id,
        job,
        kind,
        rule,
        misfire: None,
        overlap: None,
        paused: paused.contains_key(id),
        paused_until: rfc3339(paused.get(id).copied().flatten()),
        last_fire: last.get(id).map(LastFireView::of),
        next: Vec::new(),
    };
    let watches = settings
        .jobs
        .watches
        .iter()
        .map(|w| base(&w.trigger.id, &w.trigger.job, "watch", watch_rule(w)));
    let triggers = settings.jobs.triggers.iter().map(|t| {
        let d = &t.def;
        TriggerView {
            misfire: Some(misfire_name(d.misfire)),
            overlap: Some(d.overlap.as_str()),
            next: d
                .spec
                .upcoming(now, 3)
                .into_iter()
                .map(|n| n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .collect(),
            ..base(&d.id, &d.job, "schedule", d.spec.describe())
        }
    });
    let changes = settings.jobs.changes.iter().map(|c| {
        let t = &c.trigger;
        base(t.id(), t.job(), t.kind(), t.rule())
    });
    watches.chain(changes).chain(triggers).collect()
}
