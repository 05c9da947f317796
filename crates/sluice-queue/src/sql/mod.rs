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
//! Worker announcements are rows of `sluice_workers`, one per node, upserted with
//! an expiry; rows past it are ignored and deleted by the next announcement.
//! Paused queues are rows of `sluice_paused_queues`, one per paused queue.
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
use sluice_core::{Clock, SystemClock, UnixMillis};
use sluice_sql::{
    Arg, ConnectSettings, Db, DbKind, Decodable, Journal, Migration, Migrator, Row, Statement,
    push_placeholder,
};
use sqlx::Row as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::broker::{
    Broker, CancelOutcome, LeaseRequest, LiveWorker, QueueError, RunningTask, WorkerBeat,
};
use crate::task::{
    Completion, Enqueued, Envelope, FailOutcome, Lease, LeaseRef, NewTask, QueueStats, TaskId,
    TaskState, TaskStatus,
};

/// Readers of a SQLite file (writes go through one connection).
const SQLITE_READERS: u32 = 4;

/// Connections to PostgreSQL.
const PG_CONNECTIONS: u32 = 16;

mod broker;
mod enqueue;
mod presence;
mod rows;
mod statement;
#[cfg(test)]
mod tests;

use rows::{COLUMNS, EXPIRE_SQL, INSERT_COLUMNS, PICK_SQL, bind_new, insert_sql, millis, to_u32};
use statement::{Col, PG_NOW, Q, Tx};

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
const MIGRATOR: Migrator = Migrator::new(
    "sluice_queue_migrations",
    0x736C_7569_6365_5155,
    &[
        Migration::new(1, include_str!("0001_init.sql")),
        Migration::new(2, include_str!("0002_workers.sql")),
        Migration::new(3, include_str!("0003_paused.sql")),
    ],
);

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
}

use sluice_core::redact_url;
