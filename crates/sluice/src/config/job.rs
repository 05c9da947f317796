//! `[repository]` and `[[job]]`: batch jobs and where their runs are recorded.
//!
//! A step's `reader`, `processor`, `writer` and `tasklet` tables are kept as TOML
//! values here and typed (as the enums of `step.rs`) when a job is built for a
//! run, after `{{params.NAME}}` placeholders in their strings are replaced by the
//! run's parameters. `sluice check` builds every step once with its default
//! parameters, so typos are still found before anything runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use sluice_schedule::{RawTrigger, TriggerPlan};

use super::{ConfigError, Dur, RawRetry, Source, span};

/// `[repository]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRepository {
    /// `sqlite://sluice.db` (default) or `postgres://user@host/db`.
    pub url: Option<Spanned<String>>,
    /// How long after its process dies a running execution counts as dead (its
    /// lease); heartbeats go out every third of it. Default `30s`.
    pub lease: Option<Dur>,
    /// How often `sluice serve` samples the dashboard's chart series (requests
    /// a second, hit ratio, upstream calls, quota left, queue depths) into the
    /// repository. Default `15s`; at least `1s`.
    pub series_interval: Option<Dur>,
    /// How long chart samples are kept; older ones are deleted as new ones
    /// land. Default `7d`.
    pub series_retention: Option<Dur>,
}

/// `[[job.step]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// The step's name, unique in its job.
    pub name: Spanned<String>,
    /// Items per chunk (and per commit). Default 500.
    pub chunk: Option<usize>,
    /// Split the step into this many partitions, each run as a task by any worker
    /// (the reader is split by file offset or key range). Default 1.
    pub partitions: Option<Spanned<usize>>,
    /// Items that may be skipped before the step fails. Default 0.
    pub skip_limit: Option<u64>,
    /// Retries of a chunk on transient errors. Default `{ max = 3, backoff =
    /// "1s", max_backoff = "30s" }`.
    pub retry: Option<RawRetry>,
    /// Chunk step: where items come from (`kind = "csv" | "jsonl" | "json" |
    /// "http_pages" | "sql"`).
    pub reader: Option<toml::Value>,
    /// Chunk step: what happens to each item (`kind = "jq"`).
    pub processor: Option<toml::Value>,
    /// Chunk step: where chunks go (`kind = "sql_upsert" | "sql_append" | "csv" |
    /// "jsonl" | "cache"`).
    pub writer: Option<toml::Value>,
    /// Tasklet step (`kind = "sql" | "shell" | "http" | "backup"`), instead of
    /// reader/processor/writer.
    pub tasklet: Option<toml::Value>,
}

impl RawStep {
    /// The step's `reader`, `processor`, `writer` and `tasklet` tables, those given.
    pub fn tables(&self) -> impl Iterator<Item = &toml::Value> {
        [&self.reader, &self.processor, &self.writer, &self.tasklet]
            .into_iter()
            .flatten()
    }
}

/// `[[job]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// The job's name (`sluice job run NAME`).
    pub name: Spanned<String>,
    /// Default parameters; `-p k=v` overrides them. They identify the instance
    /// (a run with the same ones resumes it after a failure or a stop), except
    /// those named in `non_identifying`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Parameters that do not identify the instance (as in Spring Batch): kept
    /// with each execution, left out of the instance key, so a run that differs
    /// only in them resumes the instance. `fire_time` / `fire_date` added to a
    /// run by hand or for a file never identify it; a scheduled fire's do. E.g.
    /// `non_identifying = ["requested_by"]`.
    #[serde(default)]
    pub non_identifying: Vec<String>,
    /// What `sluice job list` shows.
    pub description: Option<String>,
    /// The steps, in order.
    #[serde(default, rename = "step")]
    pub steps: Vec<RawStep>,
    /// When it runs by itself.
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<RawTrigger>,
}

/// A configured directory trigger, checked.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The watcher's view.
    pub trigger: sluice_schedule::FileTrigger,
    /// The parameter that gets the file's path.
    pub param: String,
    /// Parameters of its runs.
    pub params: BTreeMap<String, String>,
}

/// A configured database-change trigger (`pg_change`, `sql_change`), checked.
#[derive(Debug, Clone)]
pub struct ChangeSettings {
    /// The watcher's view (its database filled in).
    pub trigger: sluice_schedule::ChangeTrigger,
    /// Parameters of its runs.
    pub params: BTreeMap<String, String>,
}

/// A configured trigger, checked.
#[derive(Debug, Clone)]
pub struct TriggerSettings {
    /// The scheduler's view.
    pub def: sluice_schedule::TriggerDef,
    /// Parameters of its runs.
    pub params: BTreeMap<String, String>,
}

/// The jobs of a config, checked for shape.
#[derive(Debug, Clone, Default)]
pub struct JobsSettings {
    /// Repository URL.
    pub repository_url: String,
    /// Lease of running executions.
    pub lease: Duration,
    /// How often chart series are sampled.
    pub series_interval: Duration,
    /// How long chart samples are kept.
    pub series_retention: Duration,
    /// The jobs, by name.
    pub jobs: BTreeMap<String, RawJob>,
    /// Every job's scheduled triggers.
    pub triggers: Vec<TriggerSettings>,
    /// Every job's directory triggers.
    pub watches: Vec<WatchSettings>,
    /// Every job's database-change triggers.
    pub changes: Vec<ChangeSettings>,
}

impl JobsSettings {
    /// The scheduled trigger `id` (`JOB#N` or `JOB/NAME`).
    ///
    /// # Errors
    ///
    /// An unknown id, naming the known ones.
    pub fn trigger(&self, id: &str) -> Result<&TriggerSettings, String> {
        self.triggers
            .iter()
            .find(|t| t.def.id == id)
            .ok_or_else(|| {
                let ids: Vec<&str> = self.triggers.iter().map(|t| t.def.id.as_str()).collect();
                format!("no trigger {id:?}; triggers: {}", none_or_list(&ids))
            })
    }

    /// The job `name`.
    ///
    /// # Errors
    ///
    /// An unknown name, naming the known jobs.
    pub fn job(&self, name: &str) -> Result<&RawJob, String> {
        self.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            format!("no job named {name:?}; jobs: {}", none_or_list(&known))
        })
    }
}

/// `a, b, c`, or `none` for an empty list.
pub(crate) fn none_or_list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 100
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An error at `name` (the name of a `what`) unless it is a valid name.
fn check_name(
    what: &str,
    name: &Spanned<String>,
    key: String,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) {
    check_name_at(what, name.get_ref(), span(name), key, src, errs);
}

/// [`check_name`] for a name without a span (located by its key).
fn check_name_at(
    what: &str,
    name: &str,
    at: Option<std::ops::Range<usize>>,
    key: String,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) {
    if !valid_name(name) {
        errs.push(src.err(
            at,
            key,
            format!("{what} name {name:?} must be 1 to 100 letters, digits, '-', '_' or '.'"),
        ));
    }
}

/// Checks names and the shape of every step; the tables are typed later.
pub(super) fn check_jobs(
    repo: &RawRepository,
    jobs: &[RawJob],
    positions: &[usize],
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> JobsSettings {
    let mut out = BTreeMap::new();
    let mut triggers = Vec::new();
    let mut watches: Vec<WatchSettings> = Vec::new();
    let mut changes: Vec<ChangeSettings> = Vec::new();
    let repository_url = repo
        .url
        .as_ref()
        .map_or_else(|| "sqlite://sluice.db".to_owned(), |u| u.get_ref().clone());
    for (n, j) in jobs.iter().enumerate() {
        let i = positions.get(n).copied().unwrap_or(n);
        let at = |k: &str| format!("job[{i}].{k}");
        let name = j.name.get_ref();
        check_name("job", &j.name, at("name"), src, errs);
        // Mistakes of the job as a whole are shown at its name.
        for (wrong, key, what) in [
            (out.contains_key(name), "name", "is defined twice"),
            (j.steps.is_empty(), "step", "has no [[job.step]]"),
        ] {
            if wrong {
                errs.push(src.err(span(&j.name), at(key), format!("job {name:?} {what}")));
            }
        }
        let mut seen = Vec::new();
        for (k, s) in j.steps.iter().enumerate() {
            let at = |f: &str| format!("job[{i}].step[{k}].{f}");
            let sname = s.name.get_ref();
            check_name("step", &s.name, at("name"), src, errs);
            if seen.contains(sname) {
                errs.push(src.err(
                    span(&s.name),
                    at("name"),
                    format!("step {sname:?} appears twice in job {name:?}"),
                ));
            }
            seen.push(sname.clone());
            let chunk_parts = s.reader.is_some() || s.writer.is_some() || s.processor.is_some();
            match (&s.tasklet, chunk_parts) {
                (Some(_), true) => errs.push(src.err(
                    span(&s.name),
                    at("tasklet"),
                    "a step is either a tasklet or a chunk step (reader/processor/writer), not both",
                )),
                (None, _) if s.reader.is_none() || s.writer.is_none() => errs.push(src.err(
                    span(&s.name),
                    at(if s.reader.is_none() { "reader" } else { "writer" }),
                    "a chunk step needs a reader and a writer (or write tasklet = { … } instead)",
                )),
                _ => {}
            }
            if let Some(p) = &s.partitions {
                let n = *p.get_ref();
                if !(1..=256).contains(&n) {
                    errs.push(src.err(span(p), at("partitions"), "partitions must be 1 to 256"));
                } else if n > 1 {
                    let kind = s
                        .reader
                        .as_ref()
                        .and_then(|r| r.get("kind"))
                        .and_then(|k| k.as_str())
                        .unwrap_or("");
                    if !matches!(kind, "csv" | "jsonl" | "sql") {
                        errs.push(src.err(
                            span(p),
                            at("partitions"),
                            format!(
                                "only csv, jsonl and sql readers can be partitioned (by file offset or key range), not {:?}",
                                if kind.is_empty() { "a tasklet" } else { kind }
                            ),
                        ));
                    }
                }
            }
            if s.chunk == Some(0) {
                errs.push(src.err(span(&s.name), at("chunk"), "chunk must be at least 1"));
            }
        }
        for (k, t) in j.triggers.iter().enumerate() {
            let at = |f: &str| format!("job[{i}].trigger[{k}].{f}");
            if let Some(n) = &t.shared.name {
                check_name_at("trigger", n, None, at("name"), src, errs);
            }
            let id = t.id(name, k);
            match t.build(name, k) {
                Ok(TriggerPlan::Scheduled(def)) => {
                    if triggers
                        .iter()
                        .any(|x: &TriggerSettings| x.def.id == def.id)
                    {
                        errs.push(src.err(
                            None,
                            at("name"),
                            format!("trigger {:?} is defined twice", def.id),
                        ));
                    }
                    triggers.push(TriggerSettings {
                        def,
                        params: t.shared.params.clone(),
                    });
                }
                Ok(TriggerPlan::Watch { trigger, param }) => watches.push(WatchSettings {
                    trigger,
                    param,
                    params: t.shared.params.clone(),
                }),
                Ok(TriggerPlan::Change(mut trigger)) => {
                    if trigger.database().is_none() {
                        let pg = sluice_sql::DbKind::from_url(&repository_url)
                            == Some(sluice_sql::DbKind::Postgres);
                        if matches!(trigger, sluice_schedule::ChangeTrigger::Pg(_)) && !pg {
                            errs.push(src.err(
                                None,
                                at("database"),
                                format!(
                                    "trigger {id}: pg_change needs database = \"postgres://…\" (the repository is not PostgreSQL)"
                                ),
                            ));
                        }
                        trigger.set_database(repository_url.clone());
                    }
                    if changes.iter().any(|c| c.trigger.id() == trigger.id()) {
                        errs.push(src.err(
                            None,
                            at("name"),
                            format!("trigger {:?} is defined twice", trigger.id()),
                        ));
                    }
                    changes.push(ChangeSettings {
                        trigger,
                        params: t.shared.params.clone(),
                    });
                }
                Err(found) => errs.extend(found.into_iter().map(|e| {
                    src.err(
                        None,
                        at(e.field.key()),
                        format!("trigger {id}: {}", e.message),
                    )
                })),
            }
        }
        out.insert(name.clone(), j.clone());
    }
    JobsSettings {
        repository_url,
        lease: repo.lease.map_or(Duration::from_secs(30), |d| d.0),
        series_interval: match repo.series_interval {
            Some(d) if d.0 < Duration::from_secs(1) => {
                errs.push(src.err(
                    None,
                    "repository.series_interval",
                    "series_interval must be at least 1s",
                ));
                Duration::from_secs(15)
            }
            Some(d) => d.0,
            None => Duration::from_secs(15),
        },
        series_retention: repo
            .series_retention
            .map_or(Duration::from_secs(7 * 86_400), |d| d.0),
        jobs: out,
        triggers,
        watches,
        changes,
    }
}

/// Replaces `{{params.NAME}}` in every string of `v` (but those under a
/// `template` key, which a component renders itself); unknown names are errors.
///
/// # Errors
///
/// The unknown parameter names, with the known ones.
pub fn substitute(
    v: &toml::Value,
    params: &BTreeMap<String, String>,
) -> Result<toml::Value, String> {
    Ok(match v {
        toml::Value::String(s) => toml::Value::String(substitute_str(s, params)?),
        toml::Value::Array(a) => toml::Value::Array(
            a.iter()
                .map(|x| substitute(x, params))
                .collect::<Result<_, _>>()?,
        ),
        // A `template` table holds templates a component renders itself (the
        // e-mail writer's MiniJinja `{{ field }}`): left as written.
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| match k.as_str() {
                    "template" => Ok((k.clone(), x.clone())),
                    _ => Ok((k.clone(), substitute(x, params)?)),
                })
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Replaces `{{params.NAME}}` in `s`.
///
/// # Errors
///
/// An unknown parameter, naming the known ones; an unclosed `{{`.
pub fn substitute_str(s: &str, params: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    for seg in segments(s)? {
        match seg {
            Segment::Text(t) => out.push_str(t),
            Segment::Param(name) => out.push_str(params.get(name).ok_or_else(|| {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
                format!(
                    "unknown parameter {name:?} in {s:?}; parameters: {}",
                    none_or_list(&known)
                )
            })?),
        }
    }
    Ok(out)
}

/// Every parameter name `v`'s strings refer to as `{{params.NAME}}` (placeholders
/// that do not parse are left to [`substitute`] to report).
pub fn placeholders(v: &toml::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        toml::Value::String(s) => {
            for seg in segments(s).unwrap_or_default() {
                if let Segment::Param(name) = seg {
                    out.insert(name.to_owned());
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| placeholders(x, out)),
        toml::Value::Table(t) => t
            .iter()
            .filter(|(k, _)| *k != "template")
            .for_each(|(_, x)| placeholders(x, out)),
        _ => {}
    }
}

/// A piece of a string with placeholders.
enum Segment<'a> {
    Text(&'a str),
    Param(&'a str),
}

/// Splits `s` into text and `{{params.NAME}}` placeholders.
fn segments(s: &str) -> Result<Vec<Segment<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push(Segment::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {s:?}"))?;
        let name = after[..end].trim();
        let pname = match name.strip_prefix("params.") {
            Some(p) => p,
            // A scheduled fire's instant and date, in the trigger's zone.
            None if name == "fire_time" || name == "fire_date" => name,
            None => {
                return Err(format!(
                    "unknown placeholder {{{{{name}}}}} in {s:?}; write {{{{params.NAME}}}}, {{{{fire_time}}}} or {{{{fire_date}}}}"
                ));
            }
        };
        out.push(Segment::Param(pname));
        rest = &after[end + 2..];
    }
    out.push(Segment::Text(rest));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_tables_are_left_as_written() {
        let mut p = BTreeMap::new();
        p.insert("issue".to_owned(), "12".to_owned());
        let v: toml::Value = toml::from_str(
            "smtp = \"smtp://h:25/{{params.issue}}\"\n[template]\nsubject = \"Hi {{ name }}\"\n",
        )
        .unwrap();
        let out = substitute(&v, &p).unwrap();
        assert_eq!(out["smtp"].as_str(), Some("smtp://h:25/12"));
        assert_eq!(out["template"]["subject"].as_str(), Some("Hi {{ name }}"));
    }

    #[test]
    fn placeholders_are_substituted() {
        let mut p = BTreeMap::new();
        p.insert("sido".to_owned(), "서울".to_owned());
        assert_eq!(
            substitute_str("a={{params.sido}}&b={{ params.sido }}", &p).unwrap(),
            "a=서울&b=서울"
        );
        assert!(
            substitute_str("{{params.nope}}", &p)
                .unwrap_err()
                .contains("unknown parameter \"nope\"")
        );
        assert!(
            substitute_str("{{sido}}", &p)
                .unwrap_err()
                .contains("params.NAME")
        );
        assert!(
            substitute_str("{{params.sido", &p)
                .unwrap_err()
                .contains("unclosed")
        );
        let v: toml::Value = toml::from_str("q = { s = \"{{params.sido}}\", n = 3 }").unwrap();
        let out = substitute(&v, &p).unwrap();
        assert_eq!(out["q"]["s"].as_str(), Some("서울"));
        assert_eq!(out["q"]["n"].as_integer(), Some(3));
    }
}
