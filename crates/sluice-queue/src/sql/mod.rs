//! The SQL broker: tasks in one table of SQLite (the embedded default) or
//! PostgreSQL (several nodes).
//!
//! One table, `sluice_tasks`, holds every task with its state (`ready`, `running`,
//! `completed`, `dead`); a task is *delayed* while it is `ready` with a not-before
//! time ahead. A lease is one conditional `UPDATE … RETURNING` that flips the next
//! ready rows to `running` with a fresh random token and a deadline; extending,
//! acknowledging and failing all check that token in their `WHERE` clause, so a
//! worker whose lease ran out cannot touch the new holder's attempt. Idempotency
//! keys live in `sluice_task_keys`, one row per `(queue, key)` until its window
//! ends, and are claimed with `INSERT … ON CONFLICT DO NOTHING` in the enqueue's
//! transaction.
//!
//! Statements are written once where both databases accept the same text; the
//! current time is the token `{now}`, which becomes a bound parameter holding the
//! process clock on SQLite and the database clock
//! (`clock_timestamp()`) on PostgreSQL, so that nodes with skewed clocks agree on
//! deadlines. Three things differ per database:
//!
//! - **Concurrency.** PostgreSQL picks rows with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent leasers never wait on each other. SQLite has one writer at a time:
//!   each process writes through a single connection (so its own workers queue in
//!   memory instead of spinning on the lock) and takes the write lock up front with
//!   `BEGIN IMMEDIATE`; other processes wait up to the busy timeout. The database
//!   runs in WAL mode with `synchronous = NORMAL`, so readers never block writers.
//! - **Batches.** PostgreSQL extends and acknowledges a whole batch in one
//!   statement over `UNNEST`ed arrays, SQLite over `json_each` of one JSON array
//!   argument; a bulk enqueue is a few multi-row `INSERT`s in one transaction.
//! - **Random tokens** come from `gen_random_uuid()` or `randomblob(16)`.
//!
//! Completed tasks with a result TTL stay as `completed` rows until their
//! `expires_at`; a lease deletes a bounded number of expired rows and keys at most
//! every few seconds.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sluice_cache::{Clock, SystemClock, UnixMillis};
use sluice_sql::{
    Arg, ConnectSettings, Db, DbKind, Journal, Migration, Migrator, Row, Statement,
    push_placeholder,
};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Decode, MySql, Postgres, Row as _, Sqlite, Type};

use crate::broker::{Broker, QueueError};
use crate::task::{
    Completion, Enqueued, Envelope, FailOutcome, Lease, LeaseRef, NewTask, QueueStats, TaskId,
    TaskState, TaskStatus,
};

/// Readers of a SQLite file (writes go through one connection).
const SQLITE_READERS: u32 = 4;

/// Connections to PostgreSQL.
const PG_CONNECTIONS: u32 = 16;

/// PostgreSQL's clock in milliseconds. A scalar sub-select is evaluated once per
/// statement (an init plan), so it can bound an index scan.
const PG_NOW: &str = "(SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)";

/// Expired results and keys are swept at most this often (ms).
const SWEEP_EVERY_MS: i64 = 5_000;

/// Rows deleted per sweep and table.
const SWEEP_LIMIT: i64 = 1_000;

/// Rows per multi-row `INSERT` of an enqueue (10 parameters each).
const INSERT_CHUNK: usize = 500;

/// Ids per `IN (…)` list.
const ID_CHUNK: usize = 500;

/// The schema's history, oldest first (the same text on both databases).
/// Append only: never edit an applied file. The advisory lock key is
/// `"sluiceQU"` as big-endian bytes.
const MIGRATOR: Migrator = Migrator {
    table: "sluice_queue_migrations",
    lock_key: 0x736C_7569_6365_5155,
    migrations: &[Migration {
        version: 1,
        sqlite: include_str!("0001_init.sql"),
        postgres: include_str!("0001_init.sql"),
    }],
};

/// The columns of `sluice_tasks`, as [`stored_from_row`] reads them.
const COLUMNS: &str = "id, queue, name, payload, priority, attempt, max_attempts, state, \
     not_before, lease_token, lease_until, idempotency_key, created_at, last_error, result, \
     result_ttl_ms, expires_at, finished_at, redelivered";

/// Leases that ran out go back to ready (a redelivery) or, on their last attempt,
/// to the dead-letter queue. `$1` is the queue.
const EXPIRE_SQL: &str = "UPDATE sluice_tasks SET \
     state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'ready' END, \
     finished_at = CASE WHEN attempt >= max_attempts THEN {now} ELSE finished_at END, \
     not_before = CASE WHEN attempt >= max_attempts THEN not_before ELSE {now} END, \
     redelivered = CASE WHEN attempt >= max_attempts THEN redelivered ELSE redelivered + 1 END, \
     last_error = 'lease expired during attempt ' || attempt || ' of ' || max_attempts \
         || ' (worker died or hung)', \
     lease_until = NULL \
     WHERE id IN (SELECT id FROM sluice_tasks \
         WHERE queue = $1 AND state = 'running' AND lease_until <= {now}{lock})";

/// Leases the next ready tasks. `$1` queue, `$2` how many, `$3` visibility (ms).
const PICK_SQL: &str = "WITH picked AS (SELECT id FROM sluice_tasks \
         WHERE queue = $1 AND state = 'ready' AND not_before <= {now} \
         ORDER BY priority DESC, not_before, id LIMIT $2{lock}) \
     UPDATE sluice_tasks SET state = 'running', attempt = attempt + 1, \
         lease_token = {token}, lease_until = {now} + $3 \
     WHERE id IN (SELECT id FROM picked) AND state = 'ready' \
     RETURNING {columns}";

/// The broker's pools. On SQLite one connection writes (so this process's
/// workers queue in memory rather than on the file lock) and a few read; on
/// PostgreSQL (and for `:memory:`) both are the same pool.
#[derive(Debug, Clone)]
struct Pools {
    writer: Db,
    reader: Db,
}

impl Pools {
    fn one(db: Db) -> Self {
        Pools {
            writer: db.clone(),
            reader: db,
        }
    }
}

/// A [`Broker`] on SQLite (`sqlite://path/to/queue.db`) or PostgreSQL
/// (`postgres://user@host/db`).
///
/// Open it with [`SqlBroker::connect`]; it creates its tables when missing. It
/// holds a connection pool and is cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice_queue::{Broker, Completion, NewTask, SqlBroker};
/// # async fn demo() -> Result<(), sluice_queue::QueueError> {
/// let broker = SqlBroker::connect("sqlite://queue.db").await?;
/// broker.enqueue(NewTask::new("email.send", serde_json::json!({"to": "a@b.c"}))).await?;
/// for lease in broker.lease("default", 10, Duration::from_secs(30)).await? {
///     // … run the handler, then acknowledge:
///     broker.complete(&[Completion { lease: lease.as_ref(), result: None }]).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlBroker {
    pool: Pools,
    /// The URL, password redacted, for error messages.
    url: String,
    /// SQLite's clock (PostgreSQL uses the database's).
    clock: Arc<dyn Clock>,
    /// When expired results and keys were last swept (ms, `clock`).
    last_sweep: Arc<AtomicI64>,
    /// Queues this process has registered in `sluice_queues`.
    known_queues: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for SqlBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBroker")
            .field("kind", &self.dialect().as_str())
            .field("url", &self.url)
            .finish()
    }
}

impl SqlBroker {
    /// Opens the broker at `url` and creates its tables when missing:
    ///
    /// - `sqlite://path/to/queue.db` (or `sqlite:path.db`): the file is created when
    ///   missing; WAL journal, `synchronous = NORMAL`, 10 s busy timeout;
    /// - `sqlite::memory:`: a private in-memory queue (one connection; gone when the
    ///   broker is dropped), for tests and demos;
    /// - `postgres://user:password@host:port/db` (or `postgresql://…`).
    ///
    /// Several processes may open the same database at once: table creation is
    /// idempotent and serialised (an advisory lock on PostgreSQL, the write lock on
    /// SQLite).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`], naming the URL with its password redacted, when
    /// the scheme is neither of the above or the database cannot be opened.
    pub async fn connect(url: &str) -> Result<SqlBroker, QueueError> {
        let shown = redact_url(url);
        let kind = DbKind::from_url(url);
        let fail = |e: sluice_sql::SqlError| QueueError::Unavailable {
            broker: kind.map_or("sqlite", DbKind::as_str),
            message: e.to_string(),
        };
        let pool = match kind {
            Some(DbKind::Sqlite) => {
                let settings = ConnectSettings::new()
                    .create(Journal::Wal)
                    .synchronous_normal();
                // The writer first: it creates the file and switches it to WAL.
                let writer = Db::connect(url, &settings).await.map_err(fail)?;
                if sluice_sql::is_memory_url(url) {
                    // One connection, for reads and writes.
                    Pools::one(writer)
                } else {
                    let reader = Db::connect(url, &settings.max_connections(SQLITE_READERS))
                        .await
                        .map_err(fail)?;
                    Pools { writer, reader }
                }
            }
            Some(DbKind::Postgres) => {
                let settings = ConnectSettings::new()
                    .max_connections(PG_CONNECTIONS)
                    .check_first();
                Pools::one(Db::connect(url, &settings).await.map_err(fail)?)
            }
            _ => {
                return Err(QueueError::Unavailable {
                    broker: "sqlite",
                    message: format!(
                        "unsupported queue URL {shown}: use sqlite://path/to/queue.db, \
                         sqlite::memory: or postgres://user@host/db"
                    ),
                });
            }
        };
        let broker = SqlBroker::new(pool, shown);
        broker.migrate().await?;
        Ok(broker)
    }

    /// A broker on an open SQLite pool (reads and writes through it); creates the
    /// tables when missing.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] when the tables cannot be created.
    pub async fn from_sqlite_pool(pool: SqlitePool) -> Result<SqlBroker, QueueError> {
        let broker = SqlBroker::new(Pools::one(pool.into()), "sqlite (pool)".into());
        broker.migrate().await?;
        Ok(broker)
    }

    /// A broker on an open PostgreSQL pool; creates the tables when missing.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] when the tables cannot be created.
    pub async fn from_pg_pool(pool: PgPool) -> Result<SqlBroker, QueueError> {
        let broker = SqlBroker::new(Pools::one(pool.into()), "postgres (pool)".into());
        broker.migrate().await?;
        Ok(broker)
    }

    /// Uses `clock` for time on SQLite (tests move it instead of sleeping).
    /// PostgreSQL always uses the database's clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.last_sweep = Arc::new(AtomicI64::new(0));
        self
    }

    /// The URL this broker was opened with, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the connection pools, waiting for connections in use to return.
    pub async fn close(&self) {
        self.pool.writer.close().await;
        self.pool.reader.close().await;
    }

    fn new(pool: Pools, url: String) -> SqlBroker {
        SqlBroker {
            pool,
            url,
            clock: Arc::new(SystemClock),
            last_sweep: Arc::new(AtomicI64::new(0)),
            known_queues: Arc::default(),
        }
    }

    fn dialect(&self) -> DbKind {
        self.pool.writer.kind()
    }

    /// Maps a database error to [`QueueError::Unavailable`].
    fn err(&self) -> impl Fn(sqlx::Error) -> QueueError + '_ {
        move |e| QueueError::Unavailable {
            broker: self.dialect().as_str(),
            message: format!("{} ({})", e, self.url),
        }
    }

    async fn migrate(&self) -> Result<(), QueueError> {
        MIGRATOR
            .run(&self.pool.writer, self.clock.now_millis())
            .await
            .map_err(|e| QueueError::Unavailable {
                broker: self.dialect().as_str(),
                message: format!("{e} ({})", self.url),
            })
    }

    /// Begins a writing transaction. On SQLite it takes the database's write lock
    /// at once (waiting up to the busy timeout), so that it never reads a snapshot
    /// it then fails to upgrade, and reads the clock once the lock is held.
    async fn begin(&self) -> Result<Tx<'_>, QueueError> {
        let inner = self.pool.writer.begin_write().await.map_err(self.err())?;
        let now = (self.dialect() == DbKind::Sqlite).then(|| self.clock.now_millis());
        Ok(Tx {
            inner,
            now,
            broker: self,
        })
    }

    /// The time a statement outside a transaction runs at: SQLite's clock (bound
    /// for `{now}`), or 0 on PostgreSQL (which reads its own).
    fn statement_now(&self) -> UnixMillis {
        match self.dialect() {
            DbKind::Sqlite => self.clock.now_millis(),
            _ => 0,
        }
    }

    /// Runs one statement outside a transaction; `write` picks SQLite's writer.
    async fn fetch_all(&self, write: bool, q: Q) -> Result<Vec<Row>, QueueError> {
        let pool = if write {
            &self.pool.writer
        } else {
            &self.pool.reader
        };
        let st = q.render(self.dialect(), self.statement_now());
        pool.fetch_all(&st).await.map_err(self.err())
    }

    /// Runs one writing statement outside a transaction; returns rows affected.
    async fn execute(&self, q: Q) -> Result<u64, QueueError> {
        let st = q.render(self.dialect(), self.statement_now());
        self.pool.writer.execute(&st).await.map_err(self.err())
    }

    /// Deletes expired results and idempotency keys, at most every
    /// [`SWEEP_EVERY_MS`] and [`SWEEP_LIMIT`] rows at a time; failures are logged
    /// and left for the next sweep.
    async fn maybe_sweep(&self) {
        let now = self.clock.now_millis();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let results = Q::new(
            "DELETE FROM sluice_tasks WHERE id IN (SELECT id FROM sluice_tasks \
             WHERE state = 'completed' AND expires_at <= {now} LIMIT $1)",
        )
        .bind(SWEEP_LIMIT);
        let keys = Q::new(
            "DELETE FROM sluice_task_keys WHERE (queue, key) IN (SELECT queue, key \
             FROM sluice_task_keys WHERE until <= {now} LIMIT $1)",
        )
        .bind(SWEEP_LIMIT);
        for q in [results, keys] {
            if let Err(e) = self.execute(q).await {
                tracing::warn!(broker = self.dialect().as_str(), error = %e, "queue sweep failed");
            }
        }
    }

    /// Registers `queues` in `sluice_queues` (once per process and queue).
    async fn register_queues(&self, tx: &mut Tx<'_>, queues: &[&str]) -> Result<(), QueueError> {
        let now = tx.now().await?;
        for queue in queues {
            tx.execute(
                Q::new(
                    "INSERT INTO sluice_queues (name, created_at) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(*queue)
                .bind(now),
            )
            .await?;
        }
        Ok(())
    }

    fn unknown_queues<'t>(&self, tasks: &'t [NewTask]) -> Vec<&'t str> {
        let known = self.known_queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<&str> = Vec::new();
        for t in tasks {
            if !known.contains(&t.queue) && !out.contains(&t.queue.as_str()) {
                out.push(&t.queue);
            }
        }
        out
    }

    fn remember_queues(&self, queues: &[&str]) {
        let mut known = self.known_queues.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(queues.iter().map(|q| (*q).to_owned()));
    }

    /// Reads a task row back.
    fn stored(&self, row: &Row) -> Result<Stored, QueueError> {
        stored_from_row(row, self.dialect().as_str())
    }
}

/// A task row with its bookkeeping.
struct Stored {
    task: Envelope,
    state: String,
    lease_token: Option<String>,
    lease_until: Option<i64>,
    result: Option<String>,
    expires_at: Option<i64>,
    finished_at: Option<i64>,
    redelivered: i64,
}

fn stored_from_row(r: &Row, broker: &'static str) -> Result<Stored, QueueError> {
    let id: String = r.col("id", broker)?;
    let corrupt = |message: String| QueueError::Corrupt {
        broker,
        id: id.clone(),
        message,
    };
    let task_id = TaskId::from_str(&id).map_err(&corrupt)?;
    let payload: String = r.col("payload", broker)?;
    let payload: Value =
        serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload is not JSON: {e}")))?;
    let priority: i64 = r.col("priority", broker)?;
    Ok(Stored {
        task: Envelope {
            id: task_id,
            name: r.col("name", broker)?,
            payload,
            queue: r.col("queue", broker)?,
            priority: u8::try_from(priority.clamp(0, i64::from(crate::task::MAX_PRIORITY)))
                .unwrap_or(0),
            attempt: to_u32(r.col("attempt", broker)?),
            max_attempts: to_u32(r.col("max_attempts", broker)?),
            not_before: r.col("not_before", broker)?,
            idempotency_key: r.col("idempotency_key", broker)?,
            created_at: r.col("created_at", broker)?,
            last_error: r.col("last_error", broker)?,
            result_ttl_ms: u64::try_from(r.col::<i64>("result_ttl_ms", broker)?).unwrap_or(0),
        },
        state: r.col("state", broker)?,
        lease_token: r.col("lease_token", broker)?,
        lease_until: r.col("lease_until", broker)?,
        result: r.col("result", broker)?,
        expires_at: r.col("expires_at", broker)?,
        finished_at: r.col("finished_at", broker)?,
        redelivered: r.col("redelivered", broker)?,
    })
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The stored row of a new task, bound in [`INSERT_COLUMNS`] order.
const INSERT_COLUMNS: &str = "id, queue, name, payload, priority, max_attempts, not_before, \
     idempotency_key, created_at, result_ttl_ms, attempt, state";

/// Binds one new task's ten parameters (see [`INSERT_COLUMNS`]).
fn bind_new(q: Q, t: &NewTask, payload: String, now: UnixMillis) -> Q {
    q.bind(t.id.to_string())
        .bind(t.queue.as_str())
        .bind(t.name.as_str())
        .bind(payload)
        .bind(i64::from(t.priority))
        .bind(i64::from(t.max_attempts.max(1)))
        .bind(now.saturating_add(millis(t.delay)))
        .bind(Arg::OptText(t.idempotency_key.clone()))
        .bind(now)
        .bind(millis(t.result_ttl))
}

/// `INSERT … VALUES (…), (…)` for `rows` new tasks. SQLite gets anonymous `?`
/// parameters: sqlx looks each numbered one up by name, which SQLite does in
/// linear time, so thousands of `$n` cost quadratic time.
fn insert_sql(rows: usize, dialect: DbKind) -> String {
    let mut sql = format!("INSERT INTO sluice_tasks ({INSERT_COLUMNS}) VALUES ");
    for r in 0..rows {
        let b = r * 10;
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 1..=10 {
            push_placeholder(&mut sql, dialect, b + c);
            sql.push_str(", ");
        }
        sql.push_str("0, 'ready')");
    }
    sql
}

impl SqlBroker {
    /// Inserts tasks (the body of `enqueue_many`, without the counting).
    async fn insert_tasks(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, QueueError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut payloads = Vec::with_capacity(tasks.len());
        for t in &tasks {
            t.validate().map_err(QueueError::Invalid)?;
            payloads.push(
                serde_json::to_string(&t.payload)
                    .map_err(|e| QueueError::Invalid(format!("payload of {}: {e}", t.id)))?,
            );
        }
        let new_queues = self.unknown_queues(&tasks);

        // The common case, one task without a key on a known queue: one statement,
        // no transaction.
        if tasks.len() == 1 && tasks[0].idempotency_key.is_none() && new_queues.is_empty() {
            let t = &tasks[0];
            let payload = payloads.pop().unwrap_or_default();
            let sql = format!(
                "INSERT INTO sluice_tasks ({INSERT_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, {{now}} + $7, $8, {{now}}, $9, 0, 'ready')"
            );
            let q = Q::new(sql)
                .bind(t.id.to_string())
                .bind(t.queue.as_str())
                .bind(t.name.as_str())
                .bind(payload)
                .bind(i64::from(t.priority))
                .bind(i64::from(t.max_attempts.max(1)))
                .bind(millis(t.delay))
                .bind(Arg::OptText(None))
                .bind(millis(t.result_ttl));
            self.execute(q).await?;
            return Ok(vec![Enqueued {
                id: t.id,
                duplicate: false,
            }]);
        }

        let mut tx = self.begin().await?;
        let now = tx.now().await?;
        self.register_queues(&mut tx, &new_queues).await?;

        let mut out = Vec::with_capacity(tasks.len());
        let mut insert: Vec<(&NewTask, String)> = Vec::with_capacity(tasks.len());
        for (t, payload) in tasks.iter().zip(payloads) {
            if let Some(key) = &t.idempotency_key {
                tx.execute(
                    Q::new(
                        "DELETE FROM sluice_task_keys WHERE queue = $1 AND key = $2 AND until <= $3",
                    )
                    .bind(t.queue.as_str())
                    .bind(key.as_str())
                    .bind(now),
                )
                .await?;
                let claimed = tx
                    .execute(
                        Q::new(
                            "INSERT INTO sluice_task_keys (queue, key, task_id, until) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (queue, key) DO NOTHING",
                        )
                        .bind(t.queue.as_str())
                        .bind(key.as_str())
                        .bind(t.id.to_string())
                        .bind(now.saturating_add(millis(t.idempotency_window))),
                    )
                    .await?;
                if claimed == 0 {
                    let rows = tx
                        .fetch_all(
                            Q::new(
                                "SELECT task_id FROM sluice_task_keys WHERE queue = $1 AND key = $2",
                            )
                            .bind(t.queue.as_str())
                            .bind(key.as_str()),
                        )
                        .await?;
                    let broker = self.dialect().as_str();
                    if let Some(row) = rows.first() {
                        let first: String = row.col("task_id", broker)?;
                        let id =
                            TaskId::from_str(&first).map_err(|message| QueueError::Corrupt {
                                broker,
                                id: first.clone(),
                                message,
                            })?;
                        out.push(Some(Enqueued {
                            id,
                            duplicate: true,
                        }));
                        continue;
                    }
                }
            }
            out.push(None);
            insert.push((t, payload));
        }
        for chunk in insert.chunks(INSERT_CHUNK) {
            let q = chunk.iter().fold(
                Q::new(insert_sql(chunk.len(), self.dialect())),
                |q, (t, payload)| bind_new(q, t, payload.clone(), now),
            );
            tx.execute(q).await?;
        }
        tx.commit().await?;
        self.remember_queues(&new_queues);
        Ok(tasks
            .iter()
            .zip(out)
            .map(|(t, e)| {
                e.unwrap_or(Enqueued {
                    id: t.id,
                    duplicate: false,
                })
            })
            .collect())
    }
}

#[async_trait]
impl Broker for SqlBroker {
    fn kind(&self) -> &'static str {
        self.dialect().as_str()
    }

    async fn enqueue(&self, task: NewTask) -> Result<Enqueued, QueueError> {
        let mut out = self.enqueue_many(vec![task]).await?;
        Ok(out.remove(0))
    }

    async fn enqueue_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, QueueError> {
        let queues: Vec<String> = tasks.iter().map(|t| t.queue.clone()).collect();
        let out = self.insert_tasks(tasks).await?;
        for (e, queue) in out.iter().zip(queues) {
            metrics::counter!(crate::metrics::ENQUEUED, "queue" => queue,
                "outcome" => if e.duplicate { "duplicate" } else { "new" })
            .increment(1);
        }
        Ok(out)
    }

    async fn lease(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Lease>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.maybe_sweep().await;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let expire = Q::new(EXPIRE_SQL).bind(queue);
        let pick = Q::new(PICK_SQL)
            .bind(queue)
            .bind(max)
            .bind(millis(visibility));
        let rows = match self.dialect() {
            DbKind::Sqlite | DbKind::MySql => {
                let mut tx = self.begin().await?;
                tx.execute(expire).await?;
                let rows = tx.fetch_all(pick).await?;
                tx.commit().await?;
                rows
            }
            // Each statement is atomic on its own; without a transaction around
            // them no row lock is held across round trips.
            DbKind::Postgres => {
                self.execute(expire).await?;
                self.fetch_all(true, pick).await?
            }
        };
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = self.stored(row)?;
            leases.push(Lease {
                token: s.lease_token.unwrap_or_default(),
                deadline: s.lease_until.unwrap_or_default(),
                task: s.task,
            });
        }
        // RETURNING keeps no order.
        leases.sort_by(|a, b| {
            b.task
                .priority
                .cmp(&a.task.priority)
                .then(a.task.not_before.cmp(&b.task.not_before))
                .then(a.task.id.cmp(&b.task.id))
        });
        Ok(leases)
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        visibility: Duration,
    ) -> Result<Vec<bool>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let vis = millis(visibility);
        match &self.pool.writer {
            Db::Postgres(pool) => {
                // `lease_until IS NOT NULL` is `state = 'running'` (every move out of
                // running clears it), written so that the planner has no partial
                // index to prefer over the primary key before it has statistics.
                let (ids, tokens) = lease_arrays(leases);
                let sql = format!(
                    "UPDATE sluice_tasks AS t SET lease_until = {PG_NOW} + $1 \
                     FROM UNNEST($2::text[], $3::text[]) AS d(id, token) \
                     WHERE t.id = d.id AND t.lease_token = d.token \
                     AND t.lease_until IS NOT NULL RETURNING t.id, t.lease_token"
                );
                let rows = sqlx::query(&sql)
                    .bind(vis)
                    .bind(ids)
                    .bind(tokens)
                    .fetch_all(pool)
                    .await
                    .map_err(self.err())?;
                let mut held = HashSet::new();
                for row in rows {
                    let id: String = row.try_get("id").map_err(self.err())?;
                    let token: Option<String> = row.try_get("lease_token").map_err(self.err())?;
                    held.insert((id, token.unwrap_or_default()));
                }
                Ok(leases
                    .iter()
                    .map(|l| held.contains(&(l.id.to_string(), l.token.clone())))
                    .collect())
            }
            _ => {
                // One statement over a JSON array of `[id, token]` pairs.
                let pairs: Vec<(String, &str)> = leases
                    .iter()
                    .map(|l| (l.id.to_string(), l.token.as_str()))
                    .collect();
                let pairs = serde_json::to_string(&pairs).unwrap_or_default();
                let rows = self
                    .fetch_all(
                        true,
                        Q::new(
                            "UPDATE sluice_tasks SET lease_until = {now} + $2 \
                             FROM json_each($1) AS j \
                             WHERE sluice_tasks.id = j.value ->> 0 \
                             AND sluice_tasks.lease_token = j.value ->> 1 \
                             AND sluice_tasks.state = 'running' \
                             RETURNING sluice_tasks.id AS id, sluice_tasks.lease_token AS token",
                        )
                        .bind(pairs)
                        .bind(vis),
                    )
                    .await?;
                let mut held = HashSet::new();
                for row in &rows {
                    let id: String = row.col("id", "sqlite")?;
                    let token: Option<String> = row.col("token", "sqlite")?;
                    held.insert((id, token.unwrap_or_default()));
                }
                Ok(leases
                    .iter()
                    .map(|l| held.contains(&(l.id.to_string(), l.token.clone())))
                    .collect())
            }
        }
    }

    async fn complete(&self, done: &[Completion]) -> Result<usize, QueueError> {
        if done.is_empty() {
            return Ok(0);
        }
        let mut results = Vec::with_capacity(done.len());
        for c in done {
            results.push(
                c.result
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| QueueError::Invalid(format!("result of {}: {e}", c.lease.id)))?,
            );
        }
        match &self.pool.writer {
            Db::Postgres(pool) => {
                let leases: Vec<LeaseRef> = done.iter().map(|c| c.lease.clone()).collect();
                let (ids, tokens) = lease_arrays(&leases);
                let sql = format!(
                    "WITH d AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) \
                         AS d(id, token, result)), \
                     kept AS (UPDATE sluice_tasks AS t SET state = 'completed', \
                         result = d.result, finished_at = {PG_NOW}, \
                         expires_at = {PG_NOW} + t.result_ttl_ms, \
                         lease_token = NULL, lease_until = NULL \
                         FROM d WHERE t.id = d.id AND t.lease_token = d.token \
                         AND t.state IN ('running', 'ready') AND t.result_ttl_ms > 0 \
                         RETURNING t.id), \
                     gone AS (DELETE FROM sluice_tasks AS t USING d \
                         WHERE t.id = d.id AND t.lease_token = d.token \
                         AND t.state IN ('running', 'ready') AND t.result_ttl_ms <= 0 \
                         RETURNING t.id) \
                     SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM gone) AS n"
                );
                let row = sqlx::query(&sql)
                    .bind(ids)
                    .bind(tokens)
                    .bind(results)
                    .fetch_one(pool)
                    .await
                    .map_err(self.err())?;
                let n: i64 = row.try_get("n").map_err(self.err())?;
                Ok(usize::try_from(n).unwrap_or(0))
            }
            _ => {
                // Two statements over a JSON array of `[id, token, result]`: rows
                // without a result TTL go, the others keep their result.
                let items: Vec<(String, &str, Option<String>)> = done
                    .iter()
                    .zip(results)
                    .map(|(c, r)| (c.lease.id.to_string(), c.lease.token.as_str(), r))
                    .collect();
                let items = serde_json::to_string(&items).unwrap_or_default();
                let mut tx = self.begin().await?;
                let gone = tx
                    .execute(
                        Q::new(
                            "DELETE FROM sluice_tasks WHERE rowid IN (SELECT t.rowid \
                             FROM json_each($1) AS j JOIN sluice_tasks AS t \
                             ON t.id = j.value ->> 0 \
                             WHERE t.lease_token = j.value ->> 1 \
                             AND t.state IN ('running', 'ready') AND t.result_ttl_ms <= 0)",
                        )
                        .bind(items.as_str()),
                    )
                    .await?;
                let kept = if usize::try_from(gone).unwrap_or(0) >= done.len() {
                    0
                } else {
                    tx.execute(
                        Q::new(
                            "UPDATE sluice_tasks SET state = 'completed', result = j.value ->> 2, \
                             finished_at = {now}, expires_at = {now} + result_ttl_ms, \
                             lease_token = NULL, lease_until = NULL \
                             FROM json_each($1) AS j \
                             WHERE sluice_tasks.id = j.value ->> 0 \
                             AND sluice_tasks.lease_token = j.value ->> 1 \
                             AND sluice_tasks.state IN ('running', 'ready') \
                             AND sluice_tasks.result_ttl_ms > 0",
                        )
                        .bind(items),
                    )
                    .await?
                };
                tx.commit().await?;
                Ok(usize::try_from(gone + kept).unwrap_or(0))
            }
        }
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<FailOutcome, QueueError> {
        let retry = retry_in.map_or(-1, millis);
        // The id and token name the lease; the queue adds nothing (and a condition
        // on it would offer PostgreSQL an index other than the primary key).
        let q = Q::new(
            "UPDATE sluice_tasks SET \
             state = CASE WHEN $3 >= 0 AND attempt < max_attempts THEN 'ready' ELSE 'dead' END, \
             not_before = CASE WHEN $3 >= 0 AND attempt < max_attempts \
                 THEN {now} + $3 ELSE not_before END, \
             finished_at = CASE WHEN $3 >= 0 AND attempt < max_attempts \
                 THEN NULL ELSE {now} END, \
             last_error = $4, lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'running' \
             RETURNING state, not_before",
        )
        .bind(lease.id.to_string())
        .bind(lease.token.as_str())
        .bind(retry)
        .bind(error);
        let rows = self.fetch_all(true, q).await?;
        let Some(row) = rows.first() else {
            return Ok(FailOutcome::LeaseLost);
        };
        let broker = self.dialect().as_str();
        let state: String = row.col("state", broker)?;
        Ok(if state == "ready" {
            FailOutcome::Retry(row.col("not_before", broker)?)
        } else {
            FailOutcome::Dead
        })
    }

    async fn release(&self, lease: &LeaseRef) -> Result<bool, QueueError> {
        let q = Q::new(
            "UPDATE sluice_tasks SET state = 'ready', \
             attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END, \
             not_before = {now}, lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.id.to_string())
        .bind(lease.token.as_str());
        Ok(self.execute(q).await? > 0)
    }

    async fn status(&self, queue: &str, id: TaskId) -> Result<Option<TaskStatus>, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS}, {{now}} AS now_ms FROM sluice_tasks WHERE id = $1 AND queue = $2"
        );
        let rows = self
            .fetch_all(false, Q::new(sql).bind(id.to_string()).bind(queue))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let now: i64 = row.col("now_ms", self.dialect().as_str())?;
        let s = self.stored(row)?;
        let state = match s.state.as_str() {
            "ready" if s.task.not_before > now => TaskState::Delayed,
            "completed" if s.expires_at.is_some_and(|t| t <= now) => return Ok(None),
            other => TaskState::parse(other).ok_or_else(|| QueueError::Corrupt {
                broker: self.dialect().as_str(),
                id: id.to_string(),
                message: format!("unknown state '{other}'"),
            })?,
        };
        let result = s
            .result
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| QueueError::Corrupt {
                broker: self.dialect().as_str(),
                id: id.to_string(),
                message: format!("result is not JSON: {e}"),
            })?;
        Ok(Some(TaskStatus {
            task: s.task,
            state,
            result,
            finished_at: s.finished_at,
            redelivered: to_u32(s.redelivered),
        }))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        // One count per state, each over its partial index.
        let q = Q::new(
            "SELECT \
             (SELECT COUNT(*) FROM sluice_tasks WHERE queue = $1 AND state = 'ready' \
                 AND not_before <= {now}) AS ready, \
             (SELECT COUNT(*) FROM sluice_tasks WHERE queue = $1 AND state = 'ready' \
                 AND not_before > {now}) AS delayed, \
             (SELECT COUNT(*) FROM sluice_tasks WHERE queue = $1 AND state = 'running') \
                 AS running, \
             (SELECT COUNT(*) FROM sluice_tasks WHERE queue = $1 AND state = 'dead') AS dead",
        )
        .bind(queue);
        let rows = self.fetch_all(false, q).await?;
        let broker = self.dialect().as_str();
        let Some(row) = rows.first() else {
            return Ok(QueueStats::default());
        };
        let count = |c: &str| -> Result<u64, QueueError> {
            Ok(u64::try_from(row.col::<i64>(c, broker)?).unwrap_or(0))
        };
        Ok(QueueStats {
            ready: count("ready")?,
            delayed: count("delayed")?,
            running: count("running")?,
            dead: count("dead")?,
        })
    }

    async fn queues(&self) -> Result<Vec<String>, QueueError> {
        let rows = self
            .fetch_all(
                false,
                Q::new("SELECT name FROM sluice_queues ORDER BY name"),
            )
            .await?;
        let broker = self.dialect().as_str();
        rows.iter().map(|r| r.col("name", broker)).collect()
    }

    async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sluice_tasks WHERE queue = $1 AND state = 'dead' \
             ORDER BY finished_at, id LIMIT $2"
        );
        let q = Q::new(sql)
            .bind(queue)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.fetch_all(false, q).await?;
        rows.iter()
            .map(|r| self.stored(r).map(|s| s.task))
            .collect()
    }

    async fn retry_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<u64, QueueError> {
        const SET: &str = "UPDATE sluice_tasks SET state = 'ready', attempt = 0, \
             not_before = {now}, finished_at = NULL, lease_token = NULL, lease_until = NULL \
             WHERE queue = $1 AND state = 'dead'";
        let Some(ids) = ids else {
            return self.execute(Q::new(SET).bind(queue)).await;
        };
        let mut n = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let q = chunk.iter().fold(
                Q::new(format!("{SET} AND id IN ({list})")).bind(queue),
                |q, id| q.bind(id.to_string()),
            );
            n += self.execute(q).await?;
        }
        Ok(n)
    }

    async fn purge_dead(&self, queue: &str) -> Result<u64, QueueError> {
        self.execute(
            Q::new("DELETE FROM sluice_tasks WHERE queue = $1 AND state = 'dead'").bind(queue),
        )
        .await
    }
}

/// Ids and tokens of `leases` as parallel arrays, for `UNNEST`.
fn lease_arrays(leases: &[LeaseRef]) -> (Vec<String>, Vec<String>) {
    leases
        .iter()
        .map(|l| (l.id.to_string(), l.token.clone()))
        .unzip()
}

use sluice_core::redact_url;

/// A statement template and its arguments. The template's `{now}` is the current
/// time in ms, `{lock}` PostgreSQL's `FOR UPDATE SKIP LOCKED`, `{token}` a fresh
/// random token per row and `{columns}` the task columns.
struct Q {
    sql: String,
    args: Vec<Arg>,
}

impl Q {
    fn new(sql: impl Into<String>) -> Self {
        Q {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The statement for `dialect`; on SQLite `now` is bound after the other
    /// arguments.
    fn render(self, dialect: DbKind, now: UnixMillis) -> Statement<'static> {
        let Q { sql, mut args } = self;
        let mut sql = sql.replace("{columns}", COLUMNS);
        match dialect {
            DbKind::Sqlite | DbKind::MySql => {
                if sql.contains("{now}") {
                    sql = sql.replace("{now}", &format!("${}", args.len() + 1));
                    args.push(Arg::I64(now));
                }
                sql = sql
                    .replace("{lock}", "")
                    .replace("{token}", "lower(hex(randomblob(16)))");
            }
            DbKind::Postgres => {
                sql = sql
                    .replace("{now}", PG_NOW)
                    .replace("{lock}", " FOR UPDATE SKIP LOCKED")
                    .replace("{token}", "replace(gen_random_uuid()::text, '-', '')");
            }
        }
        Statement {
            sql: sql.into(),
            args,
        }
    }
}

/// A writing transaction.
struct Tx<'b> {
    inner: sluice_sql::Tx,
    /// The time of the transaction: SQLite's clock when it began, PostgreSQL's
    /// once asked for.
    now: Option<UnixMillis>,
    broker: &'b SqlBroker,
}

impl Tx<'_> {
    /// The transaction's time (one round trip on PostgreSQL, the first time).
    async fn now(&mut self) -> Result<UnixMillis, QueueError> {
        if let Some(now) = self.now {
            return Ok(now);
        }
        let rows = self.fetch_all(Q::new("SELECT {now} AS now_ms")).await?;
        let now = match rows.first() {
            Some(r) => r.col("now_ms", self.broker.dialect().as_str())?,
            None => self.broker.clock.now_millis(),
        };
        self.now = Some(now);
        Ok(now)
    }

    async fn execute(&mut self, q: Q) -> Result<u64, QueueError> {
        let st = q.render(self.inner.kind(), self.now.unwrap_or_default());
        self.inner.execute(&st).await.map_err(self.broker.err())
    }

    async fn fetch_all(&mut self, q: Q) -> Result<Vec<Row>, QueueError> {
        let st = q.render(self.inner.kind(), self.now.unwrap_or_default());
        self.inner.fetch_all(&st).await.map_err(self.broker.err())
    }

    async fn commit(self) -> Result<(), QueueError> {
        self.inner.commit().await.map_err(self.broker.err())
    }
}

/// Reading a column of a task row, its errors as the broker's.
trait Col {
    fn col<T>(&self, column: &str, broker: &'static str) -> Result<T, QueueError>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>
            + for<'r> Decode<'r, MySql>
            + Type<MySql>;
}

impl Col for Row {
    fn col<T>(&self, column: &str, broker: &'static str) -> Result<T, QueueError>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>
            + for<'r> Decode<'r, MySql>
            + Type<MySql>,
    {
        self.get(column).map_err(|e| QueueError::Unavailable {
            broker,
            message: format!("reading column {column}: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_now_per_dialect() {
        let q = || Q::new("SELECT $1, {now}, {now}{lock}").bind(7_i64);
        let Statement { sql, args } = q().render(DbKind::Sqlite, 42);
        assert_eq!(sql, "SELECT $1, $2, $2");
        assert_eq!(args.len(), 2);
        assert!(matches!(args[1], Arg::I64(42)));
        let Statement { sql, args } = q().render(DbKind::Postgres, 42);
        assert_eq!(
            sql,
            format!("SELECT $1, {PG_NOW}, {PG_NOW} FOR UPDATE SKIP LOCKED")
        );
        assert_eq!(args.len(), 1);
    }

    #[test]
    fn insert_sql_numbers_parameters() {
        assert!(insert_sql(2, DbKind::Sqlite).ends_with(
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'ready'), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'ready')"
        ));
        let sql = insert_sql(2, DbKind::Postgres);
        assert!(sql.ends_with(
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 'ready'), \
             ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20, 0, 'ready')"
        ));
    }

    #[tokio::test]
    async fn connect_errors_never_show_the_password() {
        let err = SqlBroker::connect("postgres://u:s3cret-pw@127.0.0.1:1/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert!(err.contains("127.0.0.1:1"), "{err}");
        let err = SqlBroker::connect("mysql://u:s3cret-pw@h/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("s3cret-pw") && err.contains("unsupported"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn memory_database_works() {
        let b = SqlBroker::connect("sqlite::memory:").await.unwrap();
        assert_eq!(b.kind(), "sqlite");
        let e = b
            .enqueue(NewTask::new("t", serde_json::json!(1)))
            .await
            .unwrap();
        let leases = b.lease("default", 5, Duration::from_secs(5)).await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].task.id, e.id);
        assert!(format!("{b:?}").contains("sqlite"));
    }

    #[tokio::test]
    async fn expired_results_and_keys_are_swept() {
        let clock = sluice_cache::ManualClock::new(1_000_000);
        let b = SqlBroker::connect("sqlite::memory:")
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        let count = |table: &'static str| {
            let b = b.clone();
            async move {
                let rows = b
                    .fetch_all(false, Q::new(format!("SELECT COUNT(*) AS n FROM {table}")))
                    .await
                    .unwrap();
                rows[0].col::<i64>("n", "sqlite").unwrap()
            }
        };
        b.enqueue(
            NewTask::new("t", serde_json::json!(1))
                .result_ttl(Duration::from_secs(1))
                .idempotency_key("k")
                .idempotency_window(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        let l = b.lease("default", 1, Duration::from_secs(5)).await.unwrap();
        let done = Completion {
            lease: l[0].as_ref(),
            result: Some(serde_json::json!("ok")),
        };
        assert_eq!(b.complete(&[done]).await.unwrap(), 1);
        assert_eq!(count("sluice_tasks").await, 1);
        assert_eq!(count("sluice_task_keys").await, 1);
        clock.advance(Duration::from_secs(10));
        assert!(
            b.lease("default", 1, Duration::from_secs(5))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(count("sluice_tasks").await, 0);
        assert_eq!(count("sluice_task_keys").await, 0);
    }

    #[tokio::test]
    async fn a_manual_clock_drives_sqlite_leases() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let clock = sluice_cache::ManualClock::new(1_000_000);
        let b = SqlBroker::connect(&url)
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        b.enqueue(NewTask::new("t", serde_json::json!(null)).delay(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(b.stats("default").await.unwrap().delayed, 1);
        assert!(
            b.lease("default", 1, Duration::from_secs(10))
                .await
                .unwrap()
                .is_empty()
        );
        clock.advance(Duration::from_secs(60));
        let l = b
            .lease("default", 1, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].deadline, 1_070_000);
        clock.advance(Duration::from_secs(11));
        let again = b
            .lease("default", 1, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].task.attempt, 2);
        assert_ne!(again[0].token, l[0].token);
    }
}
