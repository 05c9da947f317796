//! [`LogStatsWriter`]: aggregates of log items by time window and group,
//! merged into a SQL table (SQLite, PostgreSQL, MySQL/MariaDB) in the same
//! transaction as the step's checkpoint, so that a restart neither counts a
//! line twice nor loses one.
//!
//! # The table
//!
//! One row per window and group, keyed by `(window_start, group_key)`:
//!
//! | column | |
//! |---|---|
//! | `window_start` | the window's start, Unix ms |
//! | `window_time` | the same, RFC 3339 (UTC) |
//! | `group_key` | the group's values as a JSON array (`["air"]`; `[]` without `group_by`) |
//! | one per `group_by` field | its value as text (NULL when missing) |
//! | `requests`, `errors`, `error_rate` | items, items matching `error_when`, their ratio |
//! | `<name>_count`, `<name>_ratio` | per `count_when` rule |
//! | `value_count`, `value_sum`, `value_mean`, `value_min`, `value_max` | of the `value` field |
//! | `p50`, `p95`, `p99` | its percentiles, within 1 % (see [`agg`]) |
//! | `top` | JSON `[[value, count], …]`, the `top.n` most frequent values |
//! | `state` | the mergeable aggregate (JSON: counts, histogram, count map) |
//! | `updated_at` | Unix ms of the last merge |
//!
//! # Exactly once
//!
//! A chunk's partial aggregates are merged into their rows (read with
//! `FOR UPDATE` on PostgreSQL and MySQL, under SQLite's write lock) and the
//! step's checkpoint is stored in the same transaction, in the target's
//! `sluice_checkpoint` table (the SQL writer's [`CheckpointStore`]), whatever
//! database the repository is in. A crash between that commit and the
//! repository's repeats nothing: the next run resumes from the target's row.
//!
//! An item without a time in `time_field` is left out (a warning says how
//! many): refusing it would make the step rewrite the chunk item by item,
//! without the checkpoint in each item's transaction.
//!
//! That row is kept per job and step **across instances** (instance id 0):
//! every run of the job, scheduled or by hand (`--rerun` too), goes on from
//! where the previous one stopped in the log, so each line is counted once
//! over the life of the table. (The step's start then logs that it resumes
//! from the target's checkpoint.) To count a log again from its start, delete
//! the table's rows and the step's `sluice_checkpoint` row.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sluice_sql::{Db, DbKind, Statement, quote_ident, quote_path};

use super::sql::map_sqlx_error;
use super::{SqlWriter, SqlWriterOptions};
use crate::api::{
    CheckpointKey, CheckpointStore, Chunk, Committed, SqlStatement, TargetCheckpoint, WriteError,
    Writer,
};

pub mod agg;
mod config;
pub mod rule;

pub use agg::Agg;
pub use config::{RawLogStatsWriter, RawTop};
pub use rule::Rule;

/// What a [`LogStatsWriter`] computes and where it writes.
#[derive(Debug, Clone)]
pub struct LogStatsSpec {
    /// The table (`name` or `schema.name`).
    pub table: String,
    /// The window length.
    pub window: Duration,
    /// The fields making a group.
    pub group_by: Vec<String>,
    /// The field of the percentiles.
    pub value: Option<String>,
    /// Which items are errors.
    pub error_when: Rule,
    /// More counts by rule: `(name, rule)`.
    pub count_when: Vec<(String, Rule)>,
    /// `(field, n, keep)` of the top values.
    pub top: Option<(String, usize, usize)>,
    /// The field of the item's time.
    pub time_field: String,
}

/// The longest group value and group key kept (VARCHAR(255)).
const KEY_CHARS: usize = 255;

/// Columns the writer owns: a `group_by` field or `count_when` name may not
/// take them.
const OWN: [&str; 17] = [
    "window_start",
    "window_time",
    "group_key",
    "requests",
    "errors",
    "error_rate",
    "value_count",
    "value_sum",
    "value_mean",
    "value_min",
    "value_max",
    "p50",
    "p95",
    "p99",
    "top",
    "state",
    "updated_at",
];

fn ident_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 56
}

/// Writes per-window aggregates of log items (see the module docs).
pub struct LogStatsWriter {
    url: String,
    kind: DbKind,
    spec: LogStatsSpec,
    table_q: String,
    pool: Option<Db>,
    /// The target's `sluice_checkpoint` (the SQL writer's implementation).
    store: SqlWriter,
}

impl std::fmt::Debug for LogStatsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStatsWriter")
            .field("url", &sluice_core::redact_url(&self.url))
            .field("table", &self.spec.table)
            .field("window", &self.spec.window)
            .field("group_by", &self.spec.group_by)
            .finish_non_exhaustive()
    }
}

/// A partial aggregate of one (window, group), with the group's values.
struct Part {
    groups: Vec<Option<String>>,
    agg: Agg,
}

impl LogStatsWriter {
    /// A writer into `table` of the database at `url` (connects when opened).
    ///
    /// # Errors
    ///
    /// A bad URL, table or column name, a window under a second.
    pub fn new(url: &str, spec: LogStatsSpec) -> Result<Self, String> {
        let store = SqlWriter::new(url, SqlWriterOptions::new(spec.table.clone()))
            .map_err(|e| format!("log_stats: {e}"))?;
        let kind = store.kind();
        let parts: Vec<&str> = spec.table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| ident_ok(p)) {
            return Err(format!(
                "log_stats: table {:?} must be `name` or `schema.name` of letters, digits and _",
                spec.table
            ));
        }
        if spec.window < Duration::from_secs(1) {
            return Err("log_stats: window must be at least 1s".into());
        }
        let mut names = std::collections::BTreeSet::new();
        let flag_cols = spec
            .count_when
            .iter()
            .flat_map(|(k, _)| [format!("{k}_count"), format!("{k}_ratio")]);
        for c in spec.group_by.iter().cloned().chain(flag_cols) {
            if !ident_ok(&c) || OWN.contains(&c.as_str()) || !names.insert(c.clone()) {
                return Err(format!(
                    "log_stats: column {c:?} (from group_by or count_when) must be letters, digits and _, \
                     unique, and none of {}",
                    OWN.join(", ")
                ));
            }
        }
        Ok(Self {
            url: url.to_owned(),
            kind,
            table_q: quote_path(kind, &parts),
            spec,
            pool: None,
            store,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &LogStatsSpec {
        &self.spec
    }

    fn err(&self, e: sqlx::Error) -> WriteError {
        match map_sqlx_error(&self.spec.table, e) {
            // No item of the chunk is at fault for a row of aggregates.
            WriteError::Item(m) => WriteError::Fatal(m),
            other => other,
        }
    }

    fn q(&self, name: &str) -> String {
        quote_ident(self.kind, name)
    }

    fn create_sql(&self) -> String {
        let text = if self.kind == DbKind::MySql {
            "MEDIUMTEXT"
        } else {
            "TEXT"
        };
        let dbl = "DOUBLE PRECISION";
        let mut cols = vec![
            format!("{} BIGINT NOT NULL", self.q("window_start")),
            format!("{} VARCHAR(40) NOT NULL", self.q("window_time")),
            format!("{} VARCHAR({KEY_CHARS}) NOT NULL", self.q("group_key")),
        ];
        for g in &self.spec.group_by {
            cols.push(format!("{} VARCHAR({KEY_CHARS})", self.q(g)));
        }
        cols.push(format!("{} BIGINT NOT NULL", self.q("requests")));
        cols.push(format!("{} BIGINT NOT NULL", self.q("errors")));
        cols.push(format!("{} {dbl} NOT NULL", self.q("error_rate")));
        for (k, _) in &self.spec.count_when {
            cols.push(format!("{} BIGINT NOT NULL", self.q(&format!("{k}_count"))));
            cols.push(format!("{} {dbl} NOT NULL", self.q(&format!("{k}_ratio"))));
        }
        cols.push(format!("{} BIGINT NOT NULL", self.q("value_count")));
        for c in [
            "value_sum",
            "value_mean",
            "value_min",
            "value_max",
            "p50",
            "p95",
            "p99",
        ] {
            cols.push(format!("{} {dbl}", self.q(c)));
        }
        cols.push(format!("{} {text}", self.q("top")));
        cols.push(format!("{} {text} NOT NULL", self.q("state")));
        cols.push(format!("{} BIGINT NOT NULL", self.q("updated_at")));
        cols.push(format!(
            "PRIMARY KEY ({}, {})",
            self.q("window_start"),
            self.q("group_key")
        ));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table_q,
            cols.join(", ")
        )
    }

    async fn connect(&mut self) -> Result<(), WriteError> {
        if self.pool.is_some() {
            return Ok(());
        }
        let settings = crate::writers::sql::writer_connect_settings(self.kind);
        let db = Db::connect(&self.url, &settings).await.map_err(|e| {
            WriteError::Transient(format!(
                "log_stats: table {}: connecting to {}: {e}",
                self.spec.table,
                sluice_core::redact_url(&self.url)
            ))
        })?;
        match db.execute_script(&self.create_sql()).await {
            Ok(_) => {}
            Err(e) if sluice_sql::is_already_exists(&e) => {}
            Err(e) => return Err(self.err(e)),
        }
        self.pool = Some(db);
        Ok(())
    }

    /// The chunk's partial aggregates by (window start, group key).
    fn partials(&self, chunk: Chunk<'_>) -> Result<BTreeMap<(i64, String), Part>, WriteError> {
        let w = i64::try_from(self.spec.window.as_millis()).unwrap_or(i64::MAX);
        let mut out: BTreeMap<(i64, String), Part> = BTreeMap::new();
        let items = chunk.items();
        let mut untimed = 0u64;
        for item in items.iter() {
            let tf = &self.spec.time_field;
            let t = match item.get(tf) {
                Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.timestamp_millis())
                    .or_else(|| s.parse().ok()),
                _ => None,
            };
            // Refusing the item would make the step write the chunk item by
            // item, each without the checkpoint: not exactly once. It is left
            // out, and said.
            let Some(t) = t else {
                untimed += 1;
                continue;
            };
            let start = t.div_euclid(w) * w;
            let groups: Vec<Option<String>> = self
                .spec
                .group_by
                .iter()
                .map(|g| match item.get(g) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(cut(s, KEY_CHARS)),
                    Some(v) => Some(cut(&v.to_string(), KEY_CHARS)),
                })
                .collect();
            let key = group_key(&groups);
            let part = out.entry((start, key)).or_insert_with(|| Part {
                groups,
                agg: Agg::default(),
            });
            let a = &mut part.agg;
            a.count += 1;
            if self.spec.error_when.matches(item) {
                a.errors += 1;
            }
            for (name, rule) in &self.spec.count_when {
                let c = a.flags.entry(name.clone()).or_default();
                if rule.matches(item) {
                    *c += 1;
                }
            }
            if let Some(field) = &self.spec.value {
                let v = match item.get(field) {
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    _ => None,
                };
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    a.add_value(v);
                }
            }
            if let Some((field, _, keep)) = &self.spec.top {
                match item.get(field) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => a.add_top(&cut(s, 512), *keep),
                    Some(v) => a.add_top(&v.to_string(), *keep),
                }
            }
        }
        if untimed > 0 {
            tracing::warn!(table = %self.spec.table, items = untimed, field = %self.spec.time_field,
                "log_stats: items without a time (Unix ms or RFC 3339) in their time field are not counted");
        }
        Ok(out)
    }

    fn ph(&self, sql: &mut String, n: &mut usize) {
        *n += 1;
        sluice_sql::push_placeholder(sql, self.kind, *n);
    }

    /// Merges `parts` into their rows and runs `commit`, in one transaction.
    async fn merge(
        &self,
        parts: BTreeMap<(i64, String), Part>,
        commit: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let db = self
            .pool
            .as_ref()
            .ok_or_else(|| WriteError::Fatal("log_stats: write before open".into()))?;
        let keep = self.spec.top.as_ref().map_or(0, |t| t.2);
        let now = Utc::now().timestamp_millis();
        let mut tx = db.begin_write().await.map_err(|e| self.err(e))?;
        let lock = if self.kind == DbKind::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        for ((start, key), part) in parts {
            let mut sql = format!(
                "SELECT {} FROM {} WHERE {} = ",
                self.q("state"),
                self.table_q,
                self.q("window_start")
            );
            let mut n = 0;
            self.ph(&mut sql, &mut n);
            sql.push_str(&format!(" AND {} = ", self.q("group_key")));
            self.ph(&mut sql, &mut n);
            sql.push_str(lock);
            let st = Statement::new(sql).bind(start).bind(key.clone());
            let row = tx.fetch_optional(&st).await.map_err(|e| self.err(e))?;
            let (mut agg, exists) = match row {
                Some(r) => {
                    let text: String = r.get("state").map_err(|e| self.err(e))?;
                    let agg: Agg = serde_json::from_str(&text).map_err(|e| {
                        WriteError::Fatal(format!(
                            "log_stats: table {}: the state of window {start} group {key} is not valid: {e}",
                            self.spec.table
                        ))
                    })?;
                    (agg, true)
                }
                None => (Agg::default(), false),
            };
            agg.merge(&part.agg, keep);
            let st = self.row_statement(start, &key, &part.groups, &agg, now, exists);
            tx.execute(&st).await.map_err(|e| self.err(e))?;
        }
        for c in commit {
            let st = Statement {
                sql: Cow::Borrowed(c.sql.as_str()),
                args: c.args.clone(),
            };
            let done = tx.execute(&st).await.map_err(|e| self.err(e))?;
            if c.must_affect && done == 0 {
                return Err(WriteError::Fatal(format!(
                    "table {}: this execution lost its lease on the job, or a newer execution superseded it; the chunk was rolled back",
                    self.spec.table
                )));
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The `UPDATE` (or `INSERT`) of one row with `agg`'s columns.
    fn row_statement(
        &self,
        start: i64,
        key: &str,
        groups: &[Option<String>],
        agg: &Agg,
        now: i64,
        exists: bool,
    ) -> Statement<'static> {
        // Numbers computed here go into the SQL as literals (`f64` has no
        // argument type); text goes as arguments.
        let ratio = |c: u64| {
            lit(Some(if agg.count == 0 {
                0.0
            } else {
                c as f64 / agg.count as f64
            }))
        };
        let top =
            self.spec.top.as_ref().map(|(_, n, _)| {
                serde_json::to_string(&agg.top_n(*n)).unwrap_or_else(|_| "[]".into())
            });
        let state = serde_json::to_string(agg).unwrap_or_else(|_| "{}".into());
        // (column, SQL value or None for the next argument)
        let mut cols: Vec<(String, Option<String>)> = vec![
            ("requests".into(), Some(agg.count.to_string())),
            ("errors".into(), Some(agg.errors.to_string())),
            ("error_rate".into(), Some(ratio(agg.errors))),
        ];
        for (k, _) in &self.spec.count_when {
            let c = agg.flags.get(k).copied().unwrap_or(0);
            cols.push((format!("{k}_count"), Some(c.to_string())));
            cols.push((format!("{k}_ratio"), Some(ratio(c))));
        }
        cols.push(("value_count".into(), Some(agg.n.to_string())));
        let sum = (agg.n > 0).then_some(agg.sum);
        for (c, v) in [
            ("value_sum", sum),
            ("value_mean", agg.mean()),
            ("value_min", agg.min),
            ("value_max", agg.max),
            ("p50", agg.quantile(0.50)),
            ("p95", agg.quantile(0.95)),
            ("p99", agg.quantile(0.99)),
        ] {
            cols.push((c.into(), Some(lit(v))));
        }
        cols.push(("updated_at".into(), Some(now.to_string())));
        let mut args: Vec<sluice_sql::Arg> = Vec::new();
        cols.push(("top".into(), None));
        args.push(top.into());
        cols.push(("state".into(), None));
        args.push(state.into());
        let mut n = 0;
        let mut sql = String::new();
        if exists {
            sql.push_str(&format!("UPDATE {} SET ", self.table_q));
            for (i, (c, v)) in cols.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&self.q(c));
                sql.push_str(" = ");
                match v {
                    Some(v) => sql.push_str(v),
                    None => self.ph(&mut sql, &mut n),
                }
            }
            sql.push_str(&format!(" WHERE {} = ", self.q("window_start")));
            self.ph(&mut sql, &mut n);
            sql.push_str(&format!(" AND {} = ", self.q("group_key")));
            self.ph(&mut sql, &mut n);
            args.push(start.into());
            args.push(key.into());
        } else {
            let mut all: Vec<(String, Option<String>)> = vec![
                ("window_start".into(), Some(start.to_string())),
                ("window_time".into(), None),
                ("group_key".into(), None),
            ];
            let mut first_args: Vec<sluice_sql::Arg> = vec![
                DateTime::<Utc>::from_timestamp_millis(start)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                    .unwrap_or_default()
                    .into(),
                key.into(),
            ];
            for (g, v) in self.spec.group_by.iter().zip(groups) {
                all.push((g.clone(), None));
                first_args.push(v.clone().into());
            }
            all.extend(cols);
            first_args.extend(args);
            args = first_args;
            sql.push_str(&format!(
                "INSERT INTO {} ({}) VALUES (",
                self.table_q,
                all.iter()
                    .map(|(c, _)| self.q(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for (i, (_, v)) in all.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                match v {
                    Some(v) => sql.push_str(v),
                    None => self.ph(&mut sql, &mut n),
                }
            }
            sql.push(')');
        }
        Statement {
            sql: sql.into(),
            args,
        }
    }
}

/// A finite number as an SQL literal, else `NULL`.
fn lit(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:?}"),
        _ => "NULL".into(),
    }
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// The group's values as a JSON array, cut with a hash when longer than the
/// key column.
fn group_key(groups: &[Option<String>]) -> String {
    let key = serde_json::to_string(groups).unwrap_or_default();
    if key.chars().count() <= KEY_CHARS {
        return key;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}#{h:016x}", cut(&key, KEY_CHARS - 17))
}

#[async_trait]
impl Writer for LogStatsWriter {
    async fn open(&mut self, _: Option<&Value>) -> Result<(), WriteError> {
        self.connect().await
    }

    fn checkpoint_store(&mut self) -> Option<&mut dyn CheckpointStore> {
        Some(self)
    }

    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        commit: &[SqlStatement],
    ) -> Result<Committed, WriteError> {
        if chunk.is_empty() && commit.is_empty() {
            return Ok(Committed::Separately);
        }
        let parts = self.partials(chunk)?;
        self.connect().await?;
        self.merge(parts, commit).await?;
        Ok(if commit.is_empty() {
            Committed::Separately
        } else {
            Committed::Together
        })
    }

    async fn complete(&mut self) -> Result<(), WriteError> {
        if let Some(db) = self.pool.take() {
            db.close().await;
        }
        Ok(())
    }
}

/// The key of the step's row in the target: one per job and step, whatever
/// the instance, so that each run goes on where the last one stopped.
fn follow_key(key: &CheckpointKey) -> CheckpointKey {
    CheckpointKey {
        instance_id: 0,
        ..key.clone()
    }
}

#[async_trait]
impl CheckpointStore for LogStatsWriter {
    /// Claims the step's row of `sluice_checkpoint` in the target, kept per job
    /// and step across instances (instance id 0): a new instance (a scheduled
    /// fire, a `--rerun`) goes on from the last committed chunk of the previous
    /// one instead of counting the log again, with its counts (but the chunk
    /// sequence) from zero.
    async fn claim(
        &mut self,
        key: &CheckpointKey,
        fresh: bool,
    ) -> Result<Option<TargetCheckpoint>, WriteError> {
        let claimed = self.store.claim(&follow_key(key), false).await;
        // Its connection back: this writer writes through its own pool.
        self.store.close().await;
        Ok(claimed?.map(|mut t| {
            if fresh {
                t.counts = crate::model::StepCounts {
                    commits: t.counts.commits,
                    ..Default::default()
                };
            }
            t
        }))
    }

    fn store_statements(
        &self,
        key: &CheckpointKey,
        checkpoint: &TargetCheckpoint,
    ) -> Vec<SqlStatement> {
        self.store.store_statements(&follow_key(key), checkpoint)
    }
}

#[cfg(test)]
mod tests;
