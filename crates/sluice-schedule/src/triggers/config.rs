//! `[[job.trigger]]`: the trigger config, one tagged enum of kinds (the registry:
//! a new kind is one variant here and its file), and the keys every kind shares.
//!
//! The shared keys (`name`, `misfire`, `catch_up_max`, `overlap`, `params`) are one
//! struct, [`RawTriggerShared`], not repeated in every kind. serde cannot check
//! unknown keys of a struct that flattens another (`deny_unknown_fields` does not
//! work with `#[serde(flatten)]`), so the check is left to the kinds: each kind's
//! struct denies unknown keys, and [`RawTrigger`] flattens the shared keys first,
//! so only the keys they did not take reach the kind. A config loader that keeps
//! positions (TOML with spans) does not go through serde's buffering at all: it
//! splits the table by [`RawTriggerShared::KEYS`], reads `kind`, and calls
//! [`RawTriggerKind::deserialize_kind`], so every error keeps its line and key
//! (`unknown field \`timezone\`` points at `timezone`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

use super::{
    ChangeTrigger, FileTrigger, Misfire, Overlap, RawAt, RawCron, RawEvery, RawPgChange,
    RawSqlChange, RawWatch, TriggerError, TriggerField,
};
use crate::scheduler::TriggerDef;

/// `[[job.trigger]]`: when a job runs by itself. `kind` picks what fires it (see
/// `RawTriggerKind`); the keys of `RawTriggerShared` go with every kind.
#[derive(Debug, Clone, Deserialize)]
pub struct RawTrigger {
    /// The keys every kind has.
    #[serde(flatten)]
    pub shared: RawTriggerShared,
    /// `kind = "cron" | "every" | "at" | "watch" | "pg_change" | "sql_change"`
    /// and that kind's keys.
    #[serde(flatten)]
    pub kind: RawTriggerKind,
}

/// The keys of a `[[job.trigger]]` of any kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTriggerShared {
    /// Names the trigger (`JOB/NAME`); default `JOB#N` by position.
    pub name: Option<String>,
    /// `fire_once` (default), `skip` or `catch_up`: fires missed while no
    /// scheduler ran (not with `watch`).
    pub misfire: Option<String>,
    /// Most missed fires `catch_up` makes up (default 100).
    pub catch_up_max: Option<usize>,
    /// `skip` (default), `queue` or `allow`: while the previous run goes on (not
    /// with `watch`).
    pub overlap: Option<String>,
    /// Parameters of the runs it starts (over the job's defaults).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl RawTriggerShared {
    /// The keys of this struct, for a loader that splits a trigger's table.
    pub const KEYS: &'static [&'static str] =
        &["name", "misfire", "catch_up_max", "overlap", "params"];
}

/// What fires a job: `kind = …` and the kind's own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawTriggerKind {
    /// `kind = "cron"`: a cron pattern in a time zone.
    Cron(RawCron),
    /// `kind = "every"`: a fixed rate or fixed delay interval.
    Every(RawEvery),
    /// `kind = "at"`: once.
    At(RawAt),
    /// `kind = "watch"`: each file arriving in a directory.
    Watch(RawWatch),
    /// `kind = "pg_change"`: rows of a PostgreSQL table changing (debounced).
    PgChange(RawPgChange),
    /// `kind = "sql_change"`: a query's result changing (polled).
    SqlChange(RawSqlChange),
}

impl RawTriggerKind {
    /// The `kind` words, in the order of the variants.
    pub const KINDS: &'static [&'static str] =
        &["cron", "every", "at", "watch", "pg_change", "sql_change"];

    /// Reads kind `kind`'s keys (the table without `kind` and without the shared
    /// keys) straight from `rest`, so the deserializer's positions survive.
    ///
    /// # Errors
    ///
    /// An unknown kind, or the kind's own errors (unknown key, wrong type, missing
    /// key), as `D` reports them.
    pub fn deserialize_kind<'de, D: Deserializer<'de>>(
        kind: &str,
        rest: D,
    ) -> Result<Self, D::Error> {
        match kind {
            "cron" => RawCron::deserialize(rest).map(Self::Cron),
            "every" => RawEvery::deserialize(rest).map(Self::Every),
            "at" => RawAt::deserialize(rest).map(Self::At),
            "watch" => RawWatch::deserialize(rest).map(Self::Watch),
            "pg_change" => RawPgChange::deserialize(rest).map(Self::PgChange),
            "sql_change" => RawSqlChange::deserialize(rest).map(Self::SqlChange),
            other => Err(D::Error::unknown_variant(other, Self::KINDS)),
        }
    }

    /// The error for a trigger without `kind` whose keys are `keys`: when one of
    /// them is a kind's own key (`cron = …`), it says to add that kind.
    pub fn missing<'a>(keys: impl IntoIterator<Item = &'a str>) -> TriggerError {
        let keys: Vec<&str> = keys.into_iter().collect();
        let message = match Self::KINDS.iter().find(|k| keys.contains(k)) {
            Some(k) => format!("missing `kind`: add kind = \"{k}\""),
            None if keys.contains(&"table") => "missing `kind`: add kind = \"pg_change\"".to_owned(),
            None if keys.contains(&"query") => "missing `kind`: add kind = \"sql_change\"".to_owned(),
            None => {
                "missing `kind`: add kind = \"cron\", \"every\", \"at\", \"watch\", \"pg_change\" or \"sql_change\" with its keys"
                    .to_owned()
            }
        };
        TriggerError::new(TriggerField::Kind, message)
    }
}

/// A trigger, checked: what the scheduler or the watcher takes.
#[derive(Debug, Clone)]
pub enum TriggerPlan {
    /// A cron, every or at trigger, for the scheduler.
    Scheduled(TriggerDef),
    /// A watch trigger, for the watchers.
    Watch {
        /// The watcher's view.
        trigger: FileTrigger,
        /// The job parameter that gets the file's path.
        param: String,
    },
    /// A `pg_change` or `sql_change` trigger, for the change watchers.
    Change(ChangeTrigger),
}

impl RawTrigger {
    /// The trigger's id: `JOB/NAME`, or `JOB#N` by its position `index`.
    pub fn id(&self, job: &str, index: usize) -> String {
        match &self.shared.name {
            Some(n) => format!("{job}/{n}"),
            None => format!("{job}#{index}"),
        }
    }

    /// An event trigger's plan `built`, with an error for each scheduling
    /// policy given to it (they apply to cron, every and at only).
    fn event_plan(
        &self,
        word: &str,
        built: Result<TriggerPlan, Vec<TriggerError>>,
    ) -> Result<TriggerPlan, Vec<TriggerError>> {
        let s = &self.shared;
        let mut errs = Vec::new();
        for (given, field) in [
            (
                s.misfire.is_some() || s.catch_up_max.is_some(),
                TriggerField::Misfire,
            ),
            (s.overlap.is_some(), TriggerField::Overlap),
        ] {
            if given {
                errs.push(TriggerError::new(
                    field,
                    format!("{} applies to cron, every and at, not {word}", field.key()),
                ));
            }
        }
        match built {
            Ok(plan) if errs.is_empty() => Ok(plan),
            Ok(_) => Err(errs),
            Err(more) => Err(errs.into_iter().chain(more).collect()),
        }
    }

    /// Checks the trigger at `index` of `job` and builds what runs it.
    ///
    /// # Errors
    ///
    /// Every problem found (not only the first), each naming its field.
    pub fn build(&self, job: &str, index: usize) -> Result<TriggerPlan, Vec<TriggerError>> {
        let id = self.id(job, index);
        let s = &self.shared;
        let spec = match &self.kind {
            RawTriggerKind::Cron(c) => c.into_spec(),
            RawTriggerKind::Every(e) => e.into_spec(),
            RawTriggerKind::At(a) => a.into_spec(),
            RawTriggerKind::Watch(w) => {
                let built = w
                    .build(id, job)
                    .map(|(trigger, param)| TriggerPlan::Watch { trigger, param });
                return self.event_plan("watch", built);
            }
            RawTriggerKind::PgChange(p) => {
                let built = p
                    .build(id, job)
                    .map(|t| TriggerPlan::Change(ChangeTrigger::Pg(t)));
                return self.event_plan("pg_change", built);
            }
            RawTriggerKind::SqlChange(q) => {
                let built = q
                    .build(id, job)
                    .map(|t| TriggerPlan::Change(ChangeTrigger::Sql(t)));
                return self.event_plan("sql_change", built);
            }
        };
        let misfire = s
            .misfire
            .as_deref()
            .map_or(Ok(Misfire::FireOnce), |m| Misfire::parse(m, s.catch_up_max));
        let overlap = s
            .overlap
            .as_deref()
            .map_or(Ok(Overlap::Skip), Overlap::parse);
        match (spec, misfire, overlap) {
            (Ok(spec), Ok(misfire), Ok(overlap)) => Ok(TriggerPlan::Scheduled(TriggerDef {
                id,
                job: job.to_owned(),
                spec,
                misfire,
                overlap,
            })),
            (spec, misfire, overlap) => Err([spec.err(), misfire.err(), overlap.err()]
                .into_iter()
                .flatten()
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_keys_are_the_fields_of_the_shared_struct() {
        let all = format!(
            "{{{}}}",
            RawTriggerShared::KEYS
                .iter()
                .map(|k| match *k {
                    "params" => "\"params\": {}".to_owned(),
                    "catch_up_max" => "\"catch_up_max\": 1".to_owned(),
                    k => format!("\"{k}\": \"x\""),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _: RawTriggerShared = serde_json::from_str(&all).unwrap();
    }

    #[test]
    fn the_tagged_enum_reads_every_kind_and_denies_strangers() {
        let t: RawTrigger =
            serde_json::from_str(r#"{"kind": "cron", "cron": "0 * * * *", "name": "h"}"#).unwrap();
        assert_eq!(t.id("j", 0), "j/h");
        assert!(matches!(t.build("j", 0), Ok(TriggerPlan::Scheduled(_))));
        let e =
            serde_json::from_str::<RawTrigger>(r#"{"kind": "every", "every": "1m", "cron": "x"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `cron`"), "{e}");
        let e = RawTriggerKind::missing(["name", "cron"]);
        assert_eq!(e.field, TriggerField::Kind);
        assert!(e.message.contains("add kind = \"cron\""), "{}", e.message);
    }

    #[test]
    fn a_watch_with_schedule_policies_is_told_so() {
        let t: RawTrigger = serde_json::from_str(
            r#"{"kind": "watch", "watch": "/tmp", "overlap": "queue", "param": "a b"}"#,
        )
        .unwrap();
        let errs = t.build("j", 1).unwrap_err();
        let fields: Vec<TriggerField> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, [TriggerField::Overlap, TriggerField::Param]);
    }
}
