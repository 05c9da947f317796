//! The parameters of a run, resolved in one place for every origin.
//!
//! Whatever starts a run (`sluice job run -p …`, `POST /api/jobs/{name}/trigger`,
//! a cron fire, a file arriving in a watched directory, a database change), its parameters are built
//! the same way: the job's defaults, then what the origin adds, then the fire
//! placeholders `{{fire_time}}` / `{{fire_date}}`, always in one format
//! ([`sluice_schedule::fire_params`]): for a scheduled fire, the fire's instant in
//! the trigger's zone; for every other origin, the current instant in the zone of
//! the job's first trigger (UTC when it has none), and only when the job's config
//! uses them and they were not given.
//!
//! ## Identifying parameters
//!
//! As in Spring Batch, a run's parameters identify its instance, except:
//!
//! - the names in the job's `non_identifying = […]` list;
//! - `fire_time` / `fire_date` added to a run by hand or for a file (not given
//!   with `-p`): so `sluice job run NAME` after a FAILED or STOPPED run resumes
//!   that instance from its checkpoint instead of starting a new one from zero.
//!
//! A scheduled fire's `fire_time` / `fire_date` do identify it: each fire is its
//! own instance.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sluice_batch::model::{NonIdentifying, Params};
use sluice_schedule::{ChangeFire, FileTrigger, TriggerDef, fire_params};

use crate::config::{Settings, placeholders};

/// Where a run comes from, with what that origin adds to the parameters.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// By hand (CLI or API), with these overrides.
    Manual(&'a BTreeMap<String, String>),
    /// A scheduled trigger firing at this instant.
    Fire(&'a TriggerDef, DateTime<Utc>),
    /// A file arriving for a directory trigger.
    File(&'a FileTrigger, &'a Path),
    /// A database change (`pg_change`, `sql_change`), with what it adds.
    Change(&'a ChangeFire),
}

/// A run's parameters, and which of them do not identify its instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunParams {
    /// Every parameter, `name → value`.
    pub params: Params,
    /// The names among them that are left out of the instance key.
    pub non_identifying: NonIdentifying,
}

/// The parameters of a run of `job` started from `origin`.
///
/// # Errors
///
/// A file fire of a trigger the config does not know.
pub fn resolve(settings: &Settings, job: &str, origin: Origin<'_>) -> Result<RunParams, String> {
    resolve_at(settings, job, origin, Utc::now())
}

/// [`resolve`] for a run by hand or for a file started at `now`.
fn resolve_at(
    settings: &Settings,
    job: &str,
    origin: Origin<'_>,
    now: DateTime<Utc>,
) -> Result<RunParams, String> {
    let raw = settings.jobs.jobs.get(job);
    let mut params: Params = raw
        .map(|j| j.params.clone().into_iter().collect())
        .unwrap_or_default();
    let mut non_identifying: NonIdentifying = raw
        .map(|j| j.non_identifying.iter().cloned().collect())
        .unwrap_or_default();
    match origin {
        Origin::Manual(extra) => {
            params.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            add_fire_params(settings, job, &mut params, &mut non_identifying, now);
        }
        Origin::Fire(trigger, at) => {
            if let Some(tc) = settings
                .jobs
                .triggers
                .iter()
                .find(|t| t.def.id == trigger.id)
            {
                params.extend(tc.params.clone());
            }
            for (name, value) in fire_params(at, trigger.spec.tz()) {
                params.insert(name.into(), value);
            }
        }
        Origin::File(trigger, path) => {
            let Some(w) = settings
                .jobs
                .watches
                .iter()
                .find(|w| w.trigger.id == trigger.id)
            else {
                return Err(format!("unknown trigger {}", trigger.id));
            };
            params.extend(w.params.clone());
            params.insert(w.param.clone(), path.display().to_string());
            add_fire_params(settings, job, &mut params, &mut non_identifying, now);
        }
        Origin::Change(fire) => {
            let Some(c) = settings
                .jobs
                .changes
                .iter()
                .find(|c| c.trigger.id() == fire.trigger)
            else {
                return Err(format!("unknown trigger {}", fire.trigger));
            };
            params.extend(c.params.clone());
            params.extend(fire.params.clone());
            add_fire_params(settings, job, &mut params, &mut non_identifying, now);
        }
    }
    // Only names the run has: the key and the record stay tidy.
    non_identifying.retain(|n| params.contains_key(n));
    Ok(RunParams {
        params,
        non_identifying,
    })
}

/// The zone of a run of `job` that no trigger fired: its first trigger's, so
/// that a run by hand dates its output like a scheduled one (UTC without one).
fn job_zone(settings: &Settings, job: &str) -> Tz {
    settings
        .jobs
        .triggers
        .iter()
        .find(|t| t.def.job == job)
        .map_or(Tz::UTC, |t| t.def.spec.tz())
}

/// `{{fire_time}}` / `{{fire_date}}` for a run started at `now`, when the job's
/// config uses them and they are not given; those added do not identify the
/// instance.
fn add_fire_params(
    settings: &Settings,
    job: &str,
    params: &mut Params,
    non_identifying: &mut NonIdentifying,
    now: DateTime<Utc>,
) {
    let Some(raw) = settings.jobs.jobs.get(job) else {
        return;
    };
    let mut used = std::collections::BTreeSet::new();
    for table in raw.steps.iter().flat_map(|s| s.tables()) {
        placeholders(table, &mut used);
    }
    for (name, value) in fire_params(now, job_zone(settings, job)) {
        if used.contains(name) && !params.contains_key(name) {
            params.insert(name.into(), value);
            non_identifying.insert(name.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Settings of `toml` (written to a temporary file and loaded).
    fn settings(toml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, toml).unwrap();
        crate::config::load(&path, &crate::config::Env::inspect()).unwrap_or_else(|e| panic!("{e}"))
    }

    const JOB: &str = r#"
[[job]]
name = "stamp"
params = { region = "north", batch = "7" }
non_identifying = ["batch"]

[[job.step]]
name = "write"
tasklet = { kind = "shell", command = "echo {{fire_time}} {{fire_date}} {{params.region}}" }

[[job.trigger]]
name = "nightly"
kind = "cron"
cron = "0 30 0 * * *"
timezone = "Asia/Seoul"
"#;

    #[test]
    fn added_fire_params_and_listed_names_do_not_identify_a_manual_run() {
        let s = settings(JOB);
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 15, 30, 0).unwrap();
        let run = resolve_at(&s, "stamp", Origin::Manual(&BTreeMap::new()), now).unwrap();
        assert_eq!(run.params["fire_time"], "2026-12-04T00:30:00+09:00");
        assert_eq!(run.params["fire_date"], "2026-12-04");
        let non: Vec<&str> = run.non_identifying.iter().map(String::as_str).collect();
        assert_eq!(non, ["batch", "fire_date", "fire_time"]);

        // Given by hand, fire_time identifies the run.
        let given = BTreeMap::from([("fire_time".to_owned(), "x".to_owned())]);
        let run = resolve_at(&s, "stamp", Origin::Manual(&given), now).unwrap();
        assert_eq!(run.params["fire_time"], "x");
        assert!(!run.non_identifying.contains("fire_time"));
    }

    #[test]
    fn a_manual_and_a_scheduled_fire_time_have_one_format_and_zone() {
        let s = settings(JOB);
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 15, 30, 0).unwrap();
        let trigger = &s.jobs.triggers[0].def;
        let fired = resolve_at(&s, "stamp", Origin::Fire(trigger, at), at).unwrap();
        let manual = resolve_at(&s, "stamp", Origin::Manual(&BTreeMap::new()), at).unwrap();
        assert_eq!(fired.params["fire_time"], manual.params["fire_time"]);
        assert_eq!(fired.params["fire_date"], manual.params["fire_date"]);
        // A fire is its own instance: its fire_time identifies it.
        let non: Vec<&str> = fired.non_identifying.iter().map(String::as_str).collect();
        assert_eq!(non, ["batch"]);
    }
}
