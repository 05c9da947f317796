//! `kind = "pg_change"`: a PostgreSQL table's changes run a job, debounced,
//! with the changed keys as a parameter.
//!
//! On start, sluice installs (idempotently, under an advisory lock so that
//! several nodes may start at once) in the table's database:
//!
//! * `sluice_changes (id bigserial, table_name, op, key jsonb, at)`: the change
//!   log; `sluice_change_cursors (consumer, table_name, last_id)`: how far each
//!   trigger has fired;
//! * the function `sluice_change_log()` and, on the table, the row trigger
//!   `sluice_change_<table>` (`AFTER INSERT OR UPDATE OR DELETE … FOR EACH ROW`),
//!   which appends the changed row's key (the key columns as JSON: the value for
//!   one column, an object for several) to the log **in the changing
//!   transaction** (an update that changes the key logs the old key too), and
//!   `pg_notify('sluice_changes', 'schema.table')` as a
//!   wake-up. A change made while no sluice runs is logged all the same, and
//!   fired when one starts; a rolled-back change is never seen.
//!
//! A node LISTENs for the wake-up and also polls (every `poll`, 5 s by
//! default) in case a notification was missed. Changes after the trigger's
//! cursor fire once they have been quiet for `debounce` (measured by the
//! database's clock, so every node agrees), or once the oldest has waited ten
//! debounce periods (a table that never stops changing still fires). The fire
//! is claimed in the [`ClaimStore`] by (trigger, last change id); the winner
//! then locks the cursor row, fires the range `(cursor, last id]` and moves the
//! cursor in that transaction, so ranges never overlap and a range whose launch
//! failed is fired again. A node stopping finishes the fire it is in; a node
//! killed between the enqueue and the commit leaves its range to fire again
//! (at least once, never lost). Change rows every trigger of their table has
//! passed are deleted.
//!
//! To remove it from a database: [`uninstall`] (or the SQL in its docs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_sql::{Db, Row, Statement};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::change::{ChangeFire, ChangeLauncher, TAKEOVER_AFTER, duration, param_name, shown};
use super::{TriggerError, TriggerField};
use crate::claim::{ClaimStore, LastFire};

/// The `NOTIFY` channel of the change log.
pub const CHANNEL: &str = "sluice_changes";

/// `kind = "pg_change"`: runs the job when rows of a PostgreSQL table change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPgChange {
    /// PostgreSQL URL of the table's database; default the repository's (when
    /// it is PostgreSQL).
    pub database: Option<String>,
    /// The table (`name` or `schema.name`, as SQL reads it).
    pub table: String,
    /// The column (`"id"`) or columns (`["region", "day"]`) naming a changed
    /// row; default the table's primary key.
    pub key: Option<Columns>,
    /// Which changes fire: any of `insert`, `update`, `delete`. Default all.
    pub ops: Option<Vec<String>>,
    /// Quiet time after the last change before the job fires. Default `2s`.
    pub debounce: Option<String>,
    /// Most keys listed in the parameter; beyond it the parameter is `many`
    /// (the count is in `PARAM_count`). Default 1000.
    pub max_keys: Option<usize>,
    /// The job parameter that gets the changed keys (`PARAM_count` gets how
    /// many). Default `changed_keys`.
    pub param: Option<String>,
    /// `json` (default: `[1,2]`, `[{"a":1,"b":"x"}]`) or `list` (`1,2`;
    /// several key columns joined by `:`).
    pub format: Option<String>,
    /// How often a node looks for changes when no notification came. Default `5s`.
    pub poll: Option<String>,
}

/// One column name or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    /// `key = "id"`.
    One(String),
    /// `key = ["region", "day"]`.
    Many(Vec<String>),
}

/// A kind of row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
}

impl Op {
    /// The word in config and in the change log.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// How the changed keys are written into the parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// A JSON array.
    Json,
    /// A comma-separated list (key columns joined by `:`).
    List,
}

/// A `pg_change` trigger, checked.
#[derive(Debug, Clone)]
pub struct PgChangeTrigger {
    /// Unique id (`JOB/NAME` or `JOB#N`).
    pub id: String,
    /// The job it runs.
    pub job: String,
    /// The database URL (`None`: the repository's, filled in by the binary).
    pub database: Option<String>,
    /// The table as configured.
    pub table: String,
    /// The key columns; empty: the primary key.
    pub key: Vec<String>,
    /// The changes that fire.
    pub ops: Vec<Op>,
    /// Quiet time before a fire.
    pub debounce: Duration,
    /// Most keys listed.
    pub max_keys: usize,
    /// The parameter of the keys.
    pub param: String,
    /// How the keys are written.
    pub format: KeyFormat,
    /// The fallback poll period.
    pub poll: Duration,
}

impl RawPgChange {
    /// Checks the keys of trigger `id` of `job`.
    ///
    /// # Errors
    ///
    /// Every wrong key, named.
    pub fn build(&self, id: String, job: &str) -> Result<PgChangeTrigger, Vec<TriggerError>> {
        let mut errs = Vec::new();
        if self.table.trim().is_empty() {
            errs.push(TriggerError::new(
                TriggerField::Table,
                "table must not be empty",
            ));
        }
        if let Some(url) = &self.database
            && sluice_sql::DbKind::from_url(url) != Some(sluice_sql::DbKind::Postgres)
        {
            errs.push(TriggerError::new(
                TriggerField::Database,
                format!(
                    "pg_change needs a PostgreSQL database (postgres://…), not {}; use kind = \"sql_change\" to poll others",
                    shown(url)
                ),
            ));
        }
        let key = match &self.key {
            None => Vec::new(),
            Some(Columns::One(c)) => vec![c.clone()],
            Some(Columns::Many(cs)) => cs.clone(),
        };
        if self.key.is_some() && (key.is_empty() || key.iter().any(|c| c.trim().is_empty())) {
            errs.push(TriggerError::new(
                TriggerField::Key,
                "key must name one or more columns",
            ));
        }
        let ops = match &self.ops {
            None => vec![Op::Insert, Op::Update, Op::Delete],
            Some(words) => {
                let mut ops = Vec::new();
                for w in words {
                    match w.to_ascii_lowercase().as_str() {
                        "insert" => ops.push(Op::Insert),
                        "update" => ops.push(Op::Update),
                        "delete" => ops.push(Op::Delete),
                        _ => errs.push(TriggerError::new(
                            TriggerField::Ops,
                            format!("unknown op {w:?}: use \"insert\", \"update\" or \"delete\""),
                        )),
                    }
                }
                if words.is_empty() {
                    errs.push(TriggerError::new(
                        TriggerField::Ops,
                        "ops must name at least one of \"insert\", \"update\", \"delete\"",
                    ));
                }
                ops
            }
        };
        let debounce = duration(
            self.debounce.as_deref(),
            Duration::from_secs(2),
            TriggerField::Debounce,
            &mut errs,
        );
        let poll = duration(
            self.poll.as_deref(),
            Duration::from_secs(5),
            TriggerField::Poll,
            &mut errs,
        );
        if poll < Duration::from_millis(100) {
            errs.push(TriggerError::new(
                TriggerField::Poll,
                "poll must be at least 100ms",
            ));
        }
        let max_keys = self.max_keys.unwrap_or(1000);
        if max_keys == 0 {
            errs.push(TriggerError::new(
                TriggerField::MaxKeys,
                "max_keys must be at least 1",
            ));
        }
        let param = param_name(self.param.as_deref(), "changed_keys", &mut errs);
        let format = match self.format.as_deref() {
            None | Some("json") => KeyFormat::Json,
            Some("list") => KeyFormat::List,
            Some(other) => {
                errs.push(TriggerError::new(
                    TriggerField::Format,
                    format!("unknown format {other:?}: use \"json\" or \"list\""),
                ));
                KeyFormat::Json
            }
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(PgChangeTrigger {
            id,
            job: job.to_owned(),
            database: self.database.clone(),
            table: self.table.trim().to_owned(),
            key,
            ops,
            debounce,
            max_keys,
            param,
            format,
            poll,
        })
    }
}

/// A PostgreSQL string literal of `s`.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A PostgreSQL identifier of `s`.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS sluice_changes (
    id BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    op TEXT NOT NULL,
    key JSONB NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    xid BIGINT NOT NULL DEFAULT pg_current_xact_id()::text::bigint
);
CREATE INDEX IF NOT EXISTS sluice_changes_by_table ON sluice_changes (table_name, xid);
CREATE TABLE IF NOT EXISTS sluice_change_cursors (
    consumer TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    last_id BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION sluice_change_key(r JSONB, cols TEXT[]) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $sluice$
DECLARE
    k JSONB := '{}'::jsonb;
    c TEXT;
BEGIN
    IF array_length(cols, 1) = 1 THEN
        -- TG_ARGV counts from 0: take the first element whatever its index.
        RETURN COALESCE(r -> cols[array_lower(cols, 1)], 'null'::jsonb);
    END IF;
    FOREACH c IN ARRAY cols LOOP
        k := k || jsonb_build_object(c, r -> c);
    END LOOP;
    RETURN k;
END
$sluice$;
CREATE OR REPLACE FUNCTION sluice_change_log() RETURNS trigger LANGUAGE plpgsql AS $sluice$
DECLARE
    t TEXT := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    k JSONB;
    o JSONB;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := sluice_change_key(to_jsonb(OLD), TG_ARGV);
    ELSE
        k := sluice_change_key(to_jsonb(NEW), TG_ARGV);
    END IF;
    INSERT INTO sluice_changes (table_name, op, key) VALUES (t, lower(TG_OP), k);
    IF TG_OP = 'UPDATE' THEN
        -- An update that changes the key changes the old key's row too.
        o := sluice_change_key(to_jsonb(OLD), TG_ARGV);
        IF o IS DISTINCT FROM k THEN
            INSERT INTO sluice_changes (table_name, op, key) VALUES (t, 'update', o);
        END IF;
    END IF;
    PERFORM pg_notify('sluice_changes', t);
    RETURN NULL;
END
$sluice$;
";

/// Why a `pg_change` trigger cannot start.
fn start_err(t: &PgChangeTrigger, url: &str, what: impl std::fmt::Display) -> String {
    format!(
        "trigger {}: pg_change on {} ({}): {what}",
        t.id,
        t.table,
        shown(url)
    )
}

/// A table, as the catalog names it.
struct Table {
    schema: String,
    name: String,
}

impl Table {
    /// `schema.name`, as the change log names it.
    fn logged(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

/// Runs `st` on `db`; its rows.
async fn rows(db: &Db, st: Statement<'_>) -> Result<Vec<Row>, String> {
    db.fetch_all(&st)
        .await
        .map_err(|e| sluice_sql::describe(&e))
}

/// The text column `i` of every row.
fn texts(rows: &[Row], i: usize) -> Result<Vec<String>, String> {
    rows.iter()
        .map(|r| r.get_at::<String>(i).map_err(|e| e.to_string()))
        .collect()
}

/// Looks `table` up in the catalog: its name and oid.
async fn lookup(db: &Db, table: &str) -> Result<(Table, i64), String> {
    let found = rows(
        db,
        Statement::new(
            "SELECT n.nspname::text, c.relname::text, c.oid::bigint FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        )
        .bind(table),
    )
    .await?;
    let Some(r) = found.first() else {
        return Err("no such table".into());
    };
    let get = |e: sqlx::Error| e.to_string();
    Ok((
        Table {
            schema: r.get_at(0).map_err(get)?,
            name: r.get_at(1).map_err(get)?,
        },
        r.get_at(2).map_err(get)?,
    ))
}

/// Looks `table` up; its key columns (`key`, checked, or the primary key).
async fn resolve(db: &Db, table: &str, key: &[String]) -> Result<(Table, Vec<String>), String> {
    let (table, oid) = lookup(db, table).await?;
    let columns = texts(
        &rows(
            db,
            Statement::new(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::bigint::oid \
                 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            )
            .bind(oid),
        )
        .await?,
        0,
    )?;
    let key = if key.is_empty() {
        let pk = texts(
            &rows(
                db,
                Statement::new(
                    "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                     ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = $1::bigint::oid AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)",
                )
                .bind(oid),
            )
            .await?,
            0,
        )?;
        if pk.is_empty() {
            return Err("the table has no primary key: name the key column(s) with key = …".into());
        }
        pk
    } else {
        for k in key {
            if !columns.contains(k) {
                return Err(format!(
                    "no column {k:?} for key; columns: {}",
                    columns.join(", ")
                ));
            }
        }
        key.to_vec()
    };
    Ok((table, key))
}

/// A running `pg_change` trigger of one node.
pub(super) struct PgWatch {
    t: PgChangeTrigger,
    db: Db,
    pool: PgPool,
    url: String,
    table: String,
    store: Arc<dyn ClaimStore>,
    launcher: Arc<dyn ChangeLauncher>,
    /// A claim lost to another node: its mark and when; after
    /// [`TAKEOVER_AFTER`] without the cursor passing it, this node takes over.
    lost: Option<(i64, Instant)>,
    /// A mark this node claimed but has not fired yet (its launch failed):
    /// it fires it again without a new claim.
    held: Option<i64>,
}

/// What one look at the change log found.
enum Step {
    /// Nothing new.
    Idle,
    /// Changes, not quiet yet: look again in this long.
    Wait(Duration),
    /// Fired (or another node did): look again now.
    Again,
}

impl PgWatch {
    /// Connects, installs the change log and the table's row trigger, and
    /// creates the trigger's cursor (at the oldest running transaction: a new
    /// trigger fires for changes from now on).
    pub(super) async fn connect(
        t: PgChangeTrigger,
        store: Arc<dyn ClaimStore>,
        launcher: Arc<dyn ChangeLauncher>,
    ) -> Result<Self, String> {
        let url = t.database.clone().unwrap_or_default();
        if sluice_sql::DbKind::from_url(&url) != Some(sluice_sql::DbKind::Postgres) {
            return Err(start_err(
                &t,
                &url,
                "pg_change needs a PostgreSQL database (postgres://…); use sql_change for others",
            ));
        }
        let settings = sluice_sql::ConnectSettings::new()
            .max_connections(3)
            .check_first();
        let db = Db::connect(&url, &settings)
            .await
            .map_err(|e| start_err(&t, &url, e))?;
        let Db::Postgres(pool) = db.clone() else {
            return Err(start_err(&t, &url, "not a PostgreSQL database"));
        };
        let (table, key) = resolve(&db, &t.table, &t.key)
            .await
            .map_err(|e| start_err(&t, &url, e))?;
        install(&db, &t.id, &table, &key)
            .await
            .map_err(|e| start_err(&t, &url, format!("cannot install the change trigger: {e}")))?;
        tracing::info!(trigger = %t.id, table = %table.logged(), "pg_change trigger installed");
        Ok(Self {
            table: table.logged(),
            t,
            db,
            pool,
            url,
            store,
            launcher,
            lost: None,
            held: None,
        })
    }

    /// Watches until `stop` turns true (or aborted).
    pub(super) async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut listener = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if listener.is_none() {
                listener = self.listen().await;
            }
            let next = match self.step().await {
                Ok(Step::Again) => continue,
                Ok(Step::Idle) => self.t.poll,
                Ok(Step::Wait(d)) => {
                    // Debouncing: more notifications change nothing until then.
                    if super::change::pause(d.min(self.t.poll), &mut stop).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(trigger = %self.t.id, database = %shown(&self.url), error = %e, "pg_change: cannot read the change log; trying again");
                    self.t.poll
                }
            };
            match listener.as_mut() {
                Some(l) => tokio::select! {
                    n = l.recv() => match n {
                        // A burst of changes is one wake-up.
                        Ok(_) => while l.next_buffered().is_some() {},
                        Err(e) => {
                            tracing::debug!(trigger = %self.t.id, error = %e, "pg_change: listener lost; polling");
                            listener = None;
                        }
                    },
                    () = tokio::time::sleep(next) => {}
                    _ = stop.changed() => return,
                },
                None => {
                    if super::change::pause(next, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await.ok()?;
        l.listen(CHANNEL).await.ok()?;
        Some(l)
    }

    /// Looks at the changes after the cursor; fires them when they are quiet.
    ///
    /// The cursor is a transaction id bound, not a change id: every change of
    /// a transaction older than it has been fired. Change ids are handed out
    /// when a row changes, not when its transaction commits, so a long
    /// transaction can commit ids lower than ones already seen; the snapshot's
    /// `xmin` (the oldest transaction still running) is the bound below which
    /// nothing more can appear.
    async fn step(&mut self) -> Result<Step, String> {
        let get = |e: sqlx::Error| e.to_string();
        let found = rows(
            &self.db,
            Statement::new("SELECT last_id FROM sluice_change_cursors WHERE consumer = $1")
                .bind(self.t.id.as_str()),
        )
        .await?;
        let cursor: i64 = match found.first() {
            Some(r) => r.get_at(0).map_err(get)?,
            None => return Err("the trigger's cursor row is gone (uninstalled?)".into()),
        };
        let found = rows(
            &self.db,
            Statement::new(
                "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) \
                 SELECT (SELECT xmin FROM s), count(c.id), \
                 (EXTRACT(EPOCH FROM clock_timestamp() - max(c.at)) * 1000)::bigint, \
                 (EXTRACT(EPOCH FROM clock_timestamp() - min(c.at)) * 1000)::bigint \
                 FROM sluice_changes c WHERE c.table_name = $1 AND c.xid >= $2 \
                 AND c.xid < (SELECT xmin FROM s)",
            )
            .bind(self.table.as_str())
            .bind(cursor),
        )
        .await?;
        let Some(r) = found.first() else {
            return Ok(Step::Idle);
        };
        let upto: i64 = r.get_at(0).map_err(get)?;
        let n: i64 = r.get_at(1).map_err(get)?;
        let quiet: Option<i64> = r.get_at(2).map_err(get)?;
        let age: Option<i64> = r.get_at(3).map_err(get)?;
        if n == 0 || upto <= cursor {
            self.lost = None;
            return Ok(Step::Idle);
        }
        let secs = |ms: Option<i64>| Duration::from_millis(ms.unwrap_or(0).max(0).unsigned_abs());
        let (quiet, age) = (secs(quiet), secs(age));
        let max_wait = self.t.debounce * 10;
        if quiet < self.t.debounce && age < max_wait {
            return Ok(Step::Wait(
                (self.t.debounce - quiet).min(max_wait - age) + Duration::from_millis(20),
            ));
        }
        if paused(self.store.as_ref(), &self.t.id).await {
            return Ok(Step::Wait(self.t.poll)); // the changes wait for the resume
        }
        match self.store.claim(&self.t.id, upto).await {
            Ok(true) => self.lost = None,
            Ok(false) if self.held.is_some_and(|h| h >= upto) => {} // our own claim
            Ok(false) => match self.lost {
                Some((_, since)) if since.elapsed() >= TAKEOVER_AFTER => {
                    tracing::warn!(trigger = %self.t.id, "pg_change: the node that claimed these changes did not fire them; taking over");
                }
                Some(_) => return Ok(Step::Wait(self.t.poll)),
                None => {
                    self.lost = Some((upto, Instant::now()));
                    return Ok(Step::Wait(self.t.poll));
                }
            },
            Err(err) => {
                tracing::warn!(trigger = %self.t.id, error = %err, "pg_change: cannot claim; trying again");
                return Ok(Step::Wait(self.t.poll));
            }
        }
        self.held = Some(upto);
        self.lost = None;
        self.fire(upto).await?;
        Ok(Step::Again)
    }

    /// Takes the changes of the transactions from the cursor to `upto` (the
    /// cursor row locked: one node at a time), fires them, moves the cursor,
    /// prunes.
    async fn fire(&mut self, upto: i64) -> Result<(), String> {
        let e = |e: sqlx::Error| sluice_sql::describe(&e);
        let mut tx = self.db.begin().await.map_err(e)?;
        let from: i64 = tx
            .fetch_one(
                &Statement::new(
                    "SELECT last_id FROM sluice_change_cursors WHERE consumer = $1 FOR UPDATE",
                )
                .bind(self.t.id.as_str()),
            )
            .await
            .map_err(e)?
            .get_at(0)
            .map_err(e)?;
        if from >= upto {
            self.held = None;
            return Ok(()); // another node fired it
        }
        let ops = self
            .t
            .ops
            .iter()
            .map(|o| literal(o.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let range = format!("table_name = $1 AND xid >= $2 AND xid < $3 AND op IN ({ops})");
        let count: i64 = tx
            .fetch_one(
                &Statement::new(format!(
                    "SELECT count(DISTINCT key) FROM sluice_changes WHERE {range}"
                ))
                .bind(self.table.as_str())
                .bind(from)
                .bind(upto),
            )
            .await
            .map_err(e)?
            .get_at(0)
            .map_err(e)?;
        let limit = i64::try_from(self.t.max_keys).unwrap_or(i64::MAX);
        let keys: Vec<String> = if count > limit {
            Vec::new()
        } else {
            let found = tx
                .fetch_all(
                    &Statement::new(format!(
                        "SELECT key::text FROM sluice_changes WHERE {range} \
                         GROUP BY key ORDER BY min(id)"
                    ))
                    .bind(self.table.as_str())
                    .bind(from)
                    .bind(upto),
                )
                .await
                .map_err(e)?;
            texts(&found, 0)?
        };
        if count > 0 {
            let value = if count > limit {
                "many".to_owned()
            } else {
                keys_param(&keys, self.t.format)
            };
            let fire = ChangeFire {
                trigger: self.t.id.clone(),
                job: self.t.job.clone(),
                params: BTreeMap::from([
                    (self.t.param.clone(), value),
                    (format!("{}_count", self.t.param), count.to_string()),
                ]),
                mark: upto,
            };
            let (outcome, task) = match self.launcher.launch_change(&fire).await {
                Ok(task) => {
                    tracing::info!(trigger = %self.t.id, job = %self.t.job, keys = count, task = %task, "table changed; job enqueued");
                    (
                        format!("fired task {task} for {count} changed keys"),
                        Some(task),
                    )
                }
                Err(err) => {
                    // The cursor stays: the range fires again.
                    tracing::warn!(trigger = %self.t.id, error = %err, "pg_change: could not enqueue the run; trying again");
                    drop(tx); // rolled back
                    let last = LastFire {
                        at: upto,
                        outcome: format!("error: {err}"),
                        task: None,
                    };
                    let _ = self.store.record(&self.t.id, &last).await;
                    return Err(format!("could not enqueue the run: {err}"));
                }
            };
            let last = LastFire {
                at: upto,
                outcome,
                task,
            };
            let _ = self.store.record(&self.t.id, &last).await;
            metrics::counter!(crate::scheduler::FIRES, "trigger" => self.t.id.clone(), "outcome" => "change").increment(1);
        }
        tx.execute(
            &Statement::new("UPDATE sluice_change_cursors SET last_id = $2 WHERE consumer = $1")
                .bind(self.t.id.as_str())
                .bind(upto),
        )
        .await
        .map_err(e)?;
        tx.commit().await.map_err(e)?;
        self.held = None;
        self.db
            .execute(
                &Statement::new(
                    "DELETE FROM sluice_changes WHERE table_name = $1 AND xid < \
                     (SELECT min(last_id) FROM sluice_change_cursors WHERE table_name = $1)",
                )
                .bind(self.table.as_str()),
            )
            .await
            .map_err(e)?;
        Ok(())
    }
}

/// Whether `trigger` is paused (a store that does not answer: not paused; the
/// claim that follows fails then).
pub(super) async fn paused(store: &dyn ClaimStore, trigger: &str) -> bool {
    store.paused().await.is_ok_and(|p| p.contains(trigger))
}

/// The keys (JSON texts) as the parameter's value.
fn keys_param(keys: &[String], format: KeyFormat) -> String {
    let values: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::from_str(k).unwrap_or_else(|_| serde_json::Value::String(k.clone())))
        .collect();
    match format {
        KeyFormat::Json => serde_json::Value::Array(values).to_string(),
        KeyFormat::List => values.iter().map(plain).collect::<Vec<_>>().join(","),
    }
}

/// A key as plain text: a string unquoted, an object's values joined by `:`.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => m.values().map(plain).collect::<Vec<_>>().join(":"),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Installs the change log, the function and `table`'s row trigger, and the
/// cursor of `consumer`, under an advisory lock.
async fn install(
    db: &Db,
    consumer: &str,
    table: &Table,
    key: &[String],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    tx.execute_script("SELECT pg_advisory_xact_lock(hashtext('sluice_changes'))")
        .await?;
    tx.execute_script(SCHEMA).await?;
    let args = key
        .iter()
        .map(|k| literal(k))
        .collect::<Vec<_>>()
        .join(", ");
    let trigger = format!(
        "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} \
         FOR EACH ROW EXECUTE FUNCTION sluice_change_log({args})",
        ident(&format!("sluice_change_{}", table.name)),
        table.quoted()
    );
    tx.execute_script(&trigger).await?;
    tx.execute(
        &Statement::new(
            "INSERT INTO sluice_change_cursors (consumer, table_name, last_id) \
             VALUES ($1, $2, pg_snapshot_xmin(pg_current_snapshot())::text::bigint) \
             ON CONFLICT (consumer) DO UPDATE SET table_name = excluded.table_name, \
             last_id = CASE WHEN sluice_change_cursors.table_name = excluded.table_name \
             THEN sluice_change_cursors.last_id ELSE excluded.last_id END",
        )
        .bind(consumer)
        .bind(table.logged()),
    )
    .await?;
    tx.commit().await
}

/// Removes what `pg_change` installed for `table` from the database at `url`:
/// the row trigger, the table's cursors and logged changes; and, when no other
/// table is watched any more, the change log, the cursors and the function.
/// The same by hand:
///
/// ```sql
/// DROP TRIGGER IF EXISTS sluice_change_<table> ON <table>;
/// DELETE FROM sluice_change_cursors WHERE table_name = '<schema>.<table>';
/// DELETE FROM sluice_changes WHERE table_name = '<schema>.<table>';
/// -- when no table is watched any more:
/// DROP TABLE sluice_changes, sluice_change_cursors;
/// DROP FUNCTION sluice_change_log(), sluice_change_key(JSONB, TEXT[]);
/// ```
///
/// # Errors
///
/// A database that cannot be reached or a table that does not exist, named.
pub async fn uninstall(url: &str, table: &str) -> Result<(), String> {
    let err =
        |e: &dyn std::fmt::Display| format!("pg_change uninstall on {table} ({}): {e}", shown(url));
    let db = match Db::connect(url, &sluice_sql::ConnectSettings::new()).await {
        Ok(db) if db.kind() == sluice_sql::DbKind::Postgres => db,
        Ok(_) => return Err(err(&"not a PostgreSQL database")),
        Err(e) => return Err(err(&e)),
    };
    let (t, _) = lookup(&db, table).await.map_err(|e| err(&e))?;
    let run = async {
        let mut tx = db.begin().await?;
        tx.execute_script("SELECT pg_advisory_xact_lock(hashtext('sluice_changes'))")
            .await?;
        tx.execute_script(&format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            ident(&format!("sluice_change_{}", t.name)),
            t.quoted()
        ))
        .await?;
        let exists: Option<String> = tx
            .fetch_one(&Statement::new(
                "SELECT to_regclass('sluice_change_cursors')::text",
            ))
            .await?
            .get_at(0)?;
        if exists.is_some() {
            for sql in [
                "DELETE FROM sluice_change_cursors WHERE table_name = $1",
                "DELETE FROM sluice_changes WHERE table_name = $1",
            ] {
                tx.execute(&Statement::new(sql).bind(t.logged())).await?;
            }
            let left: i64 = tx
                .fetch_one(&Statement::new(
                    "SELECT count(*) FROM sluice_change_cursors",
                ))
                .await?
                .get_at(0)?;
            let triggers: i64 = tx
                .fetch_one(&Statement::new(
                    "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sluice\\_change\\_%'",
                ))
                .await?
                .get_at(0)?;
            if left == 0 && triggers == 0 {
                tx.execute_script(
                    "DROP TABLE IF EXISTS sluice_changes, sluice_change_cursors; \
                     DROP FUNCTION IF EXISTS sluice_change_log(); \
                     DROP FUNCTION IF EXISTS sluice_change_key(JSONB, TEXT[])",
                )
                .await?;
            }
        }
        tx.commit().await
    };
    run.await.map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_as_json_or_a_list() {
        let keys = ["1".to_owned(), "\"b\"".to_owned()];
        assert_eq!(keys_param(&keys, KeyFormat::Json), r#"[1,"b"]"#);
        assert_eq!(keys_param(&keys, KeyFormat::List), "1,b");
        let composite = [r#"{"day": 3, "region": "north"}"#.to_owned()];
        assert_eq!(keys_param(&composite, KeyFormat::List), "3:north");
    }

    #[test]
    fn bad_keys_are_named() {
        let raw: RawPgChange = serde_json::from_str(
            r#"{"table": "t", "ops": ["upsert"], "debounce": "soon", "max_keys": 0, "format": "xml"}"#,
        )
        .unwrap();
        let errs = raw.build("j#0".into(), "j").unwrap_err();
        let fields: Vec<TriggerField> = errs.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                TriggerField::Ops,
                TriggerField::Debounce,
                TriggerField::MaxKeys,
                TriggerField::Format
            ]
        );
        let raw: RawPgChange =
            serde_json::from_str(r#"{"table": "t", "key": ["a", "b"], "ops": ["insert"]}"#)
                .unwrap();
        let t = raw.build("j#0".into(), "j").unwrap();
        assert_eq!(t.key, ["a", "b"]);
        assert_eq!(t.ops, [Op::Insert]);
        assert_eq!(t.param, "changed_keys");
    }
}
