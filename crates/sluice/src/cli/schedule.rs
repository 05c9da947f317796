//! `sluice schedule …`: list the triggers with their next fires, pause and resume
//! them (on every node: the pause is kept in the claim store).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
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
    /// Removes what a `pg_change` trigger installed in its database: the row
    /// trigger on its table, its cursors and logged changes (and the change log
    /// itself once no table is watched). Stop `serve` first: it installs them
    /// again on start.
    Uninstall {
        /// The `pg_change` trigger's id.
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
        ScheduleCommand::Uninstall { id } => {
            let found = settings.jobs.changes.iter().find(|c| c.trigger.id() == id);
            let Some(sluice_schedule::ChangeTrigger::Pg(t)) = found.map(|c| &c.trigger) else {
                let ids: Vec<&str> = settings
                    .jobs
                    .changes
                    .iter()
                    .filter(|c| c.trigger.kind() == "pg_change")
                    .map(|c| c.trigger.id())
                    .collect();
                return Ok(super::out::invalid_input(format!(
                    "no pg_change trigger {id:?}; pg_change triggers: {}",
                    if ids.is_empty() {
                        "none".to_owned()
                    } else {
                        ids.join(", ")
                    }
                )));
            };
            let url = t.database.clone().unwrap_or_default();
            sluice_schedule::triggers::pg_change::uninstall(&url, &t.table).await?;
            outln!(
                "trigger {id}: removed sluice_change_{} and its logged changes",
                t.table.rsplit('.').next().unwrap_or(&t.table)
            );
            return Ok(ExitCode::SUCCESS);
        }
        ScheduleCommand::List { json: true } => {
            let last = store.last_fires().await.map_err(|e| e.to_string())?;
            let paused = store.pauses().await.map_err(|e| e.to_string())?;
            let views = crate::views::trigger_views(settings, &last, &paused, Utc::now());
            super::out::json(&views);
        }
        ScheduleCommand::List { json: false } => {
            let last = store.last_fires().await.map_err(|e| e.to_string())?;
            if settings.jobs.triggers.is_empty()
                && settings.jobs.watches.is_empty()
                && settings.jobs.changes.is_empty()
            {
                outln!("no triggers ([[job.trigger]] in the config)");
            }
            for c in &settings.jobs.changes {
                let t = &c.trigger;
                outln!("{}  job {}  {}", t.id(), t.job(), t.rule());
                print_last_fire(last.get(t.id()), None);
            }
            for w in &settings.jobs.watches {
                let t = &w.trigger;
                outln!("{}  job {}  {}", t.id, t.job, crate::views::watch_rule(w));
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
    let change = settings.jobs.changes.iter().any(|c| c.trigger.id() == id);
    if let (Err(e), false) = (settings.jobs.trigger(id), change) {
        return Ok(super::out::invalid_input(e));
    }
    store
        .set_paused(id, paused)
        .await
        .map_err(|e| e.to_string())?;
    outln!("trigger {id} {}", if paused { "paused" } else { "resumed" });
    Ok(ExitCode::SUCCESS)
}
