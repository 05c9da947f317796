//! The parameters of a run, resolved in one place for every origin.
//!
//! Whatever starts a run (`sluice job run -p …`, `POST /api/jobs/{name}/trigger`,
//! a cron fire, a file arriving in a watched directory), its parameters are built
//! the same way: the job's defaults, then what the origin adds, then the fire
//! placeholders `{{fire_time}}` / `{{fire_date}}`: the fire's instant in the
//! trigger's zone for a scheduled fire, the current instant in UTC for every
//! other origin (only when the job's config uses them and they were not given).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use sluice_batch::model::Params;
use sluice_schedule::{FileTrigger, TriggerDef};

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
}

/// The parameters of a run of `job` started from `origin`.
///
/// # Errors
///
/// A file fire of a trigger the config does not know.
pub fn resolve(settings: &Settings, job: &str, origin: Origin<'_>) -> Result<Params, String> {
    let mut params: Params = settings
        .jobs
        .jobs
        .get(job)
        .map(|j| j.params.clone().into_iter().collect())
        .unwrap_or_default();
    match origin {
        Origin::Manual(extra) => {
            params.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            add_fire_params(settings, job, &mut params, Utc::now());
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
            let local = at.with_timezone(&trigger.spec.tz());
            params.insert("fire_time".into(), local.to_rfc3339());
            params.insert("fire_date".into(), local.format("%Y-%m-%d").to_string());
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
            add_fire_params(settings, job, &mut params, Utc::now());
        }
    }
    Ok(params)
}

/// `{{fire_time}}` / `{{fire_date}}` for a run started at `now` (UTC), when the
/// job's config uses them and they are not given.
fn add_fire_params(settings: &Settings, job: &str, params: &mut Params, now: DateTime<Utc>) {
    let Some(raw) = settings.jobs.jobs.get(job) else {
        return;
    };
    let mut used = std::collections::BTreeSet::new();
    for table in raw.steps.iter().flat_map(|s| s.tables()) {
        placeholders(table, &mut used);
    }
    for (name, value) in [
        ("fire_time", now.to_rfc3339()),
        ("fire_date", now.format("%Y-%m-%d").to_string()),
    ] {
        if used.contains(name) {
            params.entry(name.into()).or_insert(value);
        }
    }
}
