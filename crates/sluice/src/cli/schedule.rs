//! `sluice schedule …`: list the triggers with their next fires, pause and resume
//! them (on every node: the pause is kept in the claim store).

use std::process::ExitCode;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use sluice_schedule::{ClaimStore, LastFire};

use crate::config::Settings;
use crate::runtime::Runtime;

/// `sluice schedule …`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every trigger: its job, last fire, and next three fire times in its zone and UTC.
    List {
        /// One JSON document: an array of `{id, job, kind, rule, paused,
        /// last_fire, next}` (times RFC 3339, UTC).
        #[arg(long)]
        json: bool,
    },
    /// Pauses a trigger (on every node). An unknown trigger exits 2.
    Pause {
        /// The trigger's id (`JOB#N` or `JOB/NAME`, see `list`).
        id: String,
    },
    /// Resumes a paused trigger.
    Resume {
        /// The trigger's id.
        id: String,
    },
}

/// Runs `sluice schedule …`.
///
/// # Errors
///
/// The claim store's errors; an unknown trigger.
pub async fn run(cmd: ScheduleCommand, rt: &Runtime) -> Result<ExitCode, String> {
    let settings = rt.settings();
    let store = rt.claims().await?;
    match cmd {
        ScheduleCommand::Pause { id } => {
            return set_paused(store.as_ref(), settings, &id, true).await;
        }
        ScheduleCommand::Resume { id } => {
            return set_paused(store.as_ref(), settings, &id, false).await;
        }
        ScheduleCommand::List { json: true } => {
            let last = store.last_fires().await.map_err(|e| e.to_string())?;
            let paused = store.paused().await.map_err(|e| e.to_string())?;
            let views = views(settings, &last, &paused, Utc::now());
            super::out::json(&views);
        }
        ScheduleCommand::List { json: false } => {
            let last = store.last_fires().await.map_err(|e| e.to_string())?;
            if settings.jobs.triggers.is_empty() && settings.jobs.watches.is_empty() {
                outln!("no triggers ([[job.trigger]] in the config)");
            }
            for w in &settings.jobs.watches {
                let t = &w.trigger;
                outln!("{}  job {}  {}", t.id, t.job, watch_rule(w));
                print_last_fire(last.get(&t.id), None);
            }
            let paused = store.paused().await.map_err(|e| e.to_string())?;
            let now = Utc::now();
            for t in &settings.jobs.triggers {
                let d = &t.def;
                let state = if paused.contains(&d.id) {
                    "  PAUSED"
                } else {
                    ""
                };
                let what = format!(
                    "{}  misfire {:?}  overlap {}{state}",
                    d.spec.describe(),
                    d.misfire,
                    d.overlap.as_str()
                );
                outln!("{}  job {}  {what}", d.id, d.job);
                print_last_fire(last.get(&d.id), Some(d.spec.tz()));
                for next in d.spec.upcoming(now, 3) {
                    outln!(
                        "  next       {}  ({} UTC)",
                        next.with_timezone(&d.spec.tz()).to_rfc3339(),
                        next.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A trigger in `schedule list --json`.
#[derive(Serialize)]
struct TriggerView<'a> {
    id: &'a str,
    job: &'a str,
    /// `schedule` (cron, every, at) or `watch`.
    kind: &'static str,
    /// What fires it: `every 1s`, `cron … in Europe/Paris`, `watch DIR (PATTERN)`.
    rule: String,
    /// What happens to fires missed while no node ran (schedules only):
    /// `fire_once`, `skip`, `catch_up(max N)`.
    misfire: Option<String>,
    /// What happens when a fire comes while the last run still runs (schedules only).
    overlap: Option<&'static str>,
    paused: bool,
    last_fire: Option<LastFireView<'a>>,
    /// The next three fire times (schedules only).
    next: Vec<String>,
}

/// A trigger's last fire in `--json` output.
#[derive(Serialize)]
struct LastFireView<'a> {
    /// Its scheduled instant (a file fire's is the file's arrival).
    at: Option<String>,
    outcome: &'a str,
    task: Option<&'a str>,
}

impl<'a> LastFireView<'a> {
    fn of(l: &'a LastFire) -> Self {
        Self {
            at: super::out::rfc3339(Some(l.at)),
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
fn watch_rule(w: &crate::config::WatchSettings) -> String {
    let t = &w.trigger;
    format!(
        "watch {} ({}), the path in parameter {}",
        t.dir.display(),
        t.pattern.as_deref().unwrap_or("*"),
        w.param
    )
}

/// Every watch and trigger of `settings` for `schedule list --json`.
fn views<'a>(
    settings: &'a Settings,
    last: &'a HashMap<String, LastFire>,
    paused: &HashSet<String>,
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
        paused: paused.contains(id),
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
    watches.chain(triggers).collect()
}

/// `  last fire  …`: its outcome, after its instant in `tz` for scheduled
/// triggers (a file fire's instant is the file's arrival, not shown).
fn print_last_fire(last: Option<&LastFire>, tz: Option<chrono_tz::Tz>) {
    let Some(l) = last else {
        outln!("  last fire  never");
        return;
    };
    match tz {
        Some(tz) => {
            let at = DateTime::<Utc>::from_timestamp_millis(l.at).unwrap_or_default();
            outln!(
                "  last fire  {}  {}",
                at.with_timezone(&tz).to_rfc3339(),
                l.outcome
            );
        }
        None => outln!("  last fire  {}", l.outcome),
    }
}

/// Pauses or resumes a trigger the config knows; an unknown one is invalid
/// input (exit 2, naming the known ones).
async fn set_paused(
    store: &dyn ClaimStore,
    settings: &Settings,
    id: &str,
    paused: bool,
) -> Result<ExitCode, String> {
    if let Err(e) = settings.jobs.trigger(id) {
        return Ok(super::out::invalid_input(e));
    }
    store
        .set_paused(id, paused)
        .await
        .map_err(|e| e.to_string())?;
    outln!("trigger {id} {}", if paused { "paused" } else { "resumed" });
    Ok(ExitCode::SUCCESS)
}
