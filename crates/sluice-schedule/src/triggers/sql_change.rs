//! `kind = "sql_change"`: a query whose result changed runs a job, with the new
//! result's first rows as a parameter. SQLite, MariaDB/MySQL and PostgreSQL.
//!
//! Every `every` the query runs; its result (column names and every row, in
//! the order the query gives them: say `ORDER BY`) is hashed (SHA-256). The
//! hash and a sequence number are kept per trigger in the table
//! `sluice_sql_change` of the same database (created on start; sluice needs to
//! write there), so a restart does not fire for an unchanged result, and a
//! result that changed while no sluice ran fires once on start. The first look
//! of a new trigger only records the result.
//!
//! A changed result is claimed in the [`ClaimStore`] by (trigger, next
//! sequence number), so two nodes never both fire one change; the winner
//! enqueues the run, then moves the stored hash with a compare-and-set
//! (`… WHERE seq = <seen>`). A launch that fails leaves the change to fire
//! again; a node that dies between the two fires it again with the same
//! sequence number, the fire's idempotency key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_sql::{Db, DbKind, Statement};

use super::change::{ChangeFire, ChangeLauncher, TAKEOVER_AFTER, duration, param_name, shown};
use super::{TriggerError, TriggerField};
use crate::claim::{ClaimStore, LastFire};

/// Shortest `every` of a `sql_change` trigger.
pub const MIN_SQL_EVERY: Duration = Duration::from_millis(100);

/// `kind = "sql_change"`: runs the job when a query's result changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlChange {
    /// `sqlite://…`, `mysql://…` or `postgres://…`; default the repository's.
    pub database: Option<String>,
    /// The query whose result is watched (give an `ORDER BY`, so that an
    /// unchanged result reads the same). Columns must read as numbers, text
    /// or bytes: cast dates and decimals to text.
    pub query: String,
    /// How often the query runs. Default `30s`.
    pub every: Option<String>,
    /// Most rows of the new result put in the parameter. Default 100.
    pub max_rows: Option<usize>,
    /// The job parameter that gets the new result's first rows, as JSON (an
    /// array of values for one column, of objects for several);
    /// `PARAM_count` gets its number of rows. Default `changed_rows`.
    pub param: Option<String>,
}

/// A `sql_change` trigger, checked.
#[derive(Debug, Clone)]
pub struct SqlChangeTrigger {
    /// Unique id (`JOB/NAME` or `JOB#N`).
    pub id: String,
    /// The job it runs.
    pub job: String,
    /// The database URL (`None`: the repository's, filled in by the binary).
    pub database: Option<String>,
    /// The query.
    pub query: String,
    /// The period.
    pub every: Duration,
    /// Most rows in the parameter.
    pub max_rows: usize,
    /// The parameter.
    pub param: String,
}

impl RawSqlChange {
    /// Checks the keys of trigger `id` of `job`.
    ///
    /// # Errors
    ///
    /// Every wrong key, named.
    pub fn build(&self, id: String, job: &str) -> Result<SqlChangeTrigger, Vec<TriggerError>> {
        let mut errs = Vec::new();
        if self.query.trim().is_empty() {
            errs.push(TriggerError::new(
                TriggerField::Query,
                "query must not be empty",
            ));
        }
        let every = duration(
            self.every.as_deref(),
            Duration::from_secs(30),
            TriggerField::Every,
            &mut errs,
        );
        if every < MIN_SQL_EVERY {
            errs.push(TriggerError::new(
                TriggerField::Every,
                format!("every must be at least {MIN_SQL_EVERY:?}"),
            ));
        }
        let max_rows = self.max_rows.unwrap_or(100);
        if max_rows == 0 {
            errs.push(TriggerError::new(
                TriggerField::MaxKeys,
                "max_rows must be at least 1",
            ));
        }
        let param = param_name(self.param.as_deref(), "changed_rows", &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(SqlChangeTrigger {
            id,
            job: job.to_owned(),
            database: self.database.clone(),
            query: self.query.trim().to_owned(),
            every,
            max_rows,
            param,
        })
    }
}

/// A query's result: its hash, number of rows, and first rows.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// SHA-256 (hex) of the column names and every row.
    pub hash: String,
    /// How many rows.
    pub rows: u64,
    /// The first rows, as the parameter shows them.
    pub first: Vec<Value>,
}

/// Decodes column `i` of `row` as JSON, trying the types `$t` in turn.
macro_rules! cell {
    ($row:expr, $i:expr, $($t:ty),+) => {{
        use sqlx::Row as _;
        let mut out = None;
        $(
            if out.is_none() {
                if let Ok(v) = $row.try_get::<Option<$t>, _>($i) {
                    out = Some(v.map_or(Value::Null, |v| Value::from(v)));
                }
            }
        )+
        out
    }};
}

/// Runs `query` and hashes its result, keeping the first `keep` rows.
async fn run_query(db: &Db, query: &str, keep: usize) -> Result<QueryResult, String> {
    use sqlx::{Column as _, Row as _, TypeInfo as _};
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    let mut first = Vec::new();
    let mut names: Option<Vec<String>> = None;
    macro_rules! each {
        ($pool:expr, $($t:ty),+) => {{
            let mut stream = sqlx::raw_sql(query).fetch($pool);
            while let Some(row) = stream.try_next().await.map_err(|e| sluice_sql::describe(&e))? {
                let cols = names.get_or_insert_with(|| {
                    let n: Vec<String> = row.columns().iter().map(|c| c.name().to_owned()).collect();
                    hasher.update(Value::from(n.clone()).to_string());
                    n
                });
                let mut values = Vec::with_capacity(cols.len());
                for (i, c) in row.columns().iter().enumerate() {
                    match cell!(row, i, $($t),+) {
                        Some(v) => values.push(v),
                        None => return Err(format!(
                            "column {:?} ({}) cannot be read: cast it to text in the query",
                            c.name(),
                            c.type_info().name()
                        )),
                    }
                }
                let line = Value::from(values.clone()).to_string();
                hasher.update(b"\n");
                hasher.update(line.as_bytes());
                rows += 1;
                if first.len() < keep {
                    first.push(if values.len() == 1 {
                        values.pop().unwrap_or(Value::Null)
                    } else {
                        Value::Object(cols.iter().cloned().zip(values).collect())
                    });
                }
            }
        }};
    }
    match db {
        Db::Sqlite(p) => each!(p, i64, f64, String, Vec<u8>),
        Db::MySql(p) => each!(p, i64, u64, f64, f32, String, Vec<u8>),
        Db::Postgres(p) => each!(p, i64, i32, i16, f64, f32, bool, String, Value, Vec<u8>),
    }
    let _ = names;
    Ok(QueryResult {
        hash: hex(&hasher.finalize()),
        rows,
        first,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Placeholders `$1`… on PostgreSQL, `?` elsewhere.
fn sql(kind: DbKind, text: &str) -> String {
    if kind == DbKind::Postgres {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A `sql_change` trigger of one node: [`SqlChangeWatch::check`] runs the query
/// once (the watchers call it every period).
pub struct SqlChangeWatch {
    t: SqlChangeTrigger,
    db: Db,
    url: String,
    store: Arc<dyn ClaimStore>,
    launcher: Arc<dyn ChangeLauncher>,
    /// A claim lost to another node, and when.
    lost: Option<(i64, Instant)>,
    /// A sequence number this node claimed but has not fired (its launch
    /// failed): it fires it again without a new claim.
    held: Option<i64>,
}

impl std::fmt::Debug for SqlChangeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlChangeWatch")
            .field("trigger", &self.t.id)
            .finish_non_exhaustive()
    }
}

impl SqlChangeWatch {
    /// Connects, creates the state table, and runs the query once (a query
    /// that does not run is an error now, not a warning every period).
    ///
    /// # Errors
    ///
    /// A database that cannot be reached or a query that fails, named
    /// (without the URL's password).
    pub async fn connect(
        t: SqlChangeTrigger,
        store: Arc<dyn ClaimStore>,
        launcher: Arc<dyn ChangeLauncher>,
    ) -> Result<Self, String> {
        let url = t.database.clone().unwrap_or_default();
        let err = |e: &dyn std::fmt::Display| {
            format!("trigger {}: sql_change on {}: {e}", t.id, shown(&url))
        };
        // The watched database must exist (a mistyped SQLite path is an error,
        // not a new empty file), and keeps its journal mode.
        let settings = sluice_sql::ConnectSettings::new()
            .max_connections(2)
            .check_first();
        let db = Db::connect(&url, &settings).await.map_err(|e| err(&e))?;
        let ddl = "CREATE TABLE IF NOT EXISTS sluice_sql_change (\
                   trigger_id VARCHAR(200) PRIMARY KEY, hash VARCHAR(64) NOT NULL, seq BIGINT NOT NULL)";
        match db.execute_script(ddl).await {
            Ok(_) => {}
            Err(e) if sluice_sql::is_already_exists(&e) => {}
            Err(e) => return Err(err(&format!("cannot create sluice_sql_change: {e}"))),
        }
        run_query(&db, &t.query, 1)
            .await
            .map_err(|e| err(&format!("the query fails: {e}")))?;
        Ok(Self {
            t,
            db,
            url,
            store,
            launcher,
            lost: None,
            held: None,
        })
    }

    /// Polls until `stop` turns true (or aborted).
    pub(super) async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.check().await {
                tracing::warn!(trigger = %self.t.id, database = %shown(&self.url), error = %e, "sql_change: cannot check the query; trying again");
            }
            if super::change::pause(self.t.every, &mut stop).await {
                return;
            }
        }
    }

    /// The stored `(hash, seq)` of the trigger.
    async fn state(&self) -> Result<Option<(String, i64)>, String> {
        let kind = self.db.kind();
        let rows = self
            .db
            .fetch_all(
                &Statement::new(sql(
                    kind,
                    "SELECT hash, seq FROM sluice_sql_change WHERE trigger_id = $1",
                ))
                .bind(self.t.id.as_str()),
            )
            .await
            .map_err(|e| sluice_sql::describe(&e))?;
        match rows.first() {
            None => Ok(None),
            Some(r) => Ok(Some((
                r.get_at(0).map_err(|e| e.to_string())?,
                r.get_at(1).map_err(|e| e.to_string())?,
            ))),
        }
    }

    /// Runs the query once; fires when its result changed since the last
    /// fire (or, for a new trigger, since the first look). Returns the task
    /// this node fired, if it did.
    ///
    /// # Errors
    ///
    /// The query or the state table failing, the claim store not answering.
    pub async fn check(&mut self) -> Result<Option<String>, String> {
        let kind = self.db.kind();
        let result = run_query(&self.db, &self.t.query, self.t.max_rows).await?;
        let Some((hash, seq)) = self.state().await? else {
            let insert = match kind {
                DbKind::MySql => {
                    "INSERT IGNORE INTO sluice_sql_change (trigger_id, hash, seq) VALUES (?, ?, 0)"
                }
                _ => {
                    "INSERT INTO sluice_sql_change (trigger_id, hash, seq) VALUES ($1, $2, 0) ON CONFLICT (trigger_id) DO NOTHING"
                }
            };
            self.db
                .execute(
                    &Statement::new(sql(kind, insert))
                        .bind(self.t.id.as_str())
                        .bind(result.hash.as_str()),
                )
                .await
                .map_err(|e| sluice_sql::describe(&e))?;
            return Ok(None);
        };
        if hash == result.hash {
            self.lost = None;
            return Ok(None);
        }
        if super::pg_change::paused(self.store.as_ref(), &self.t.id).await {
            return Ok(None); // the change fires after the resume
        }
        let next = seq + 1;
        match self.store.claim(&self.t.id, next).await {
            Ok(true) => {}
            Ok(false) if self.held == Some(next) => {}
            Ok(false) => match self.lost {
                Some((mark, since)) if mark == next && since.elapsed() >= TAKEOVER_AFTER => {
                    tracing::warn!(trigger = %self.t.id, "sql_change: the node that claimed this change did not fire it; taking over");
                }
                Some((mark, _)) if mark == next => return Ok(None),
                _ => {
                    self.lost = Some((next, Instant::now()));
                    return Ok(None);
                }
            },
            Err(e) => return Err(e.to_string()),
        }
        self.lost = None;
        self.held = Some(next);
        // Enqueue first, then move the stored hash: no transaction is held
        // across the enqueue (the queue may live in this very SQLite file). A
        // node that dies in between fires the change again on restart with the
        // same mark, which the launcher's idempotency key turns into the task
        // already enqueued.
        let fire = ChangeFire {
            trigger: self.t.id.clone(),
            job: self.t.job.clone(),
            params: BTreeMap::from([
                (
                    self.t.param.clone(),
                    Value::from(result.first.clone()).to_string(),
                ),
                (format!("{}_count", self.t.param), result.rows.to_string()),
            ]),
            mark: next,
        };
        let task = match self.launcher.launch_change(&fire).await {
            Ok(task) => task,
            Err(e) => {
                // The hash stays: the change fires again.
                tracing::warn!(trigger = %self.t.id, error = %e, "sql_change: could not enqueue the run; trying again");
                let last = LastFire {
                    at: next,
                    outcome: format!("error: {e}"),
                    task: None,
                };
                let _ = self.store.record(&self.t.id, &last).await;
                return Ok(None);
            }
        };
        self.db
            .execute(
                &Statement::new(sql(
                    kind,
                    "UPDATE sluice_sql_change SET hash = $1, seq = $2 WHERE trigger_id = $3 AND seq = $4",
                ))
                .bind(result.hash.as_str())
                .bind(next)
                .bind(self.t.id.as_str())
                .bind(seq),
            )
            .await
            .map_err(|e| sluice_sql::describe(&e))?;
        self.held = None;
        tracing::info!(trigger = %self.t.id, job = %self.t.job, rows = result.rows, task = %task, "query result changed; job enqueued");
        metrics::counter!(crate::scheduler::FIRES, "trigger" => self.t.id.clone(), "outcome" => "change").increment(1);
        let last = LastFire {
            at: next,
            outcome: format!(
                "fired task {task} for a changed result ({} rows)",
                result.rows
            ),
            task: Some(task.clone()),
        };
        let _ = self.store.record(&self.t.id, &last).await;
        Ok(Some(task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_database() {
        assert_eq!(sql(DbKind::MySql, "a = $1 AND b = $12"), "a = ? AND b = ?");
        assert_eq!(sql(DbKind::Postgres, "a = $1"), "a = $1");
    }

    #[test]
    fn bad_keys_are_named() {
        let raw: RawSqlChange =
            serde_json::from_str(r#"{"query": " ", "every": "1ms", "param": "a b"}"#).unwrap();
        let errs = raw.build("j#0".into(), "j").unwrap_err();
        let fields: Vec<TriggerField> = errs.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                TriggerField::Query,
                TriggerField::Every,
                TriggerField::Param
            ]
        );
    }
}
