//! The SQL job repository (SQLite and PostgreSQL).
//!
//! One implementation serves both databases: every statement is written once, in
//! the dialect both accept (`$1` placeholders, `ON CONFLICT … DO NOTHING`,
//! `RETURNING`, `TRUE` / `FALSE`), and runs through sluice-sql's [`Tx`] / [`Row`]
//! pair, which dispatches to the pool in use. Only three things differ, all
//! decided in sluice-sql: how a writing transaction begins (SQLite takes the write
//! lock up front with `BEGIN IMMEDIATE`, so two writers queue on the busy timeout
//! instead of failing on a stale snapshot), how migrations are serialised
//! (PostgreSQL takes an advisory lock) and the migration files themselves
//! (identity columns).
//!
//! Every operation that writes is one transaction, so a process that dies half-way
//! through leaves nothing half-done.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::{Clock, SystemClock};
use sluice_sql::{ConnectSettings, Db, DbKind, Journal, Migration, Migrator, Row, Statement, Tx};

use super::{ExecutionFilter, Heartbeat, Launch, RepoError, Repository};
use crate::model::{
    BatchStatus, JobExecution, JobInstance, Millis, NonIdentifying, Params, SkipRecord, StepCounts,
    StepExecution, format_millis, identifying, params_key, truncate,
};

/// The largest `item` kept with a skip, in bytes (cut on a character boundary).
const MAX_SKIP_ITEM: usize = 4096;

/// The schema's history, oldest first. Append only: never edit an applied file.
/// The advisory lock key is `"sluiceBM"` as big-endian bytes (any constant would
/// do).
const MIGRATOR: Migrator = Migrator::new(
    "sluice_batch_migrations",
    0x736C_7569_6365_424D,
    &[
        Migration::new(1, include_str!("../../migrations/0001_init.sql")),
        Migration::new(2, include_str!("../../migrations/0002_non_identifying.sql")),
    ],
);

/// The columns of `batch_job_execution`, in the order [`execution_from_row`] reads.
const EXECUTION_COLUMNS: &str = "id, instance_id, job_name, params, non_identifying, status, \
     created_at, started_at, ended_at, exit_message, owner, lease_until";

/// The job repository on SQLite or PostgreSQL.
///
/// Open it with [`SqlRepository::connect`], then call
/// [`Repository::migrate`] once before use. It holds a connection pool and is cheap
/// to share behind an `Arc`. The times it records (creation, start, end, leases)
/// come from its [`Clock`]: the system clock unless
/// [`with_clock`](Self::with_clock) gives another.
#[derive(Debug, Clone)]
pub struct SqlRepository {
    pool: Db,
    /// The URL, password redacted, for error messages.
    url: String,
    /// The URL as given (compared with writers' URLs; never shown).
    raw_url: Secret,
    clock: Arc<dyn Clock>,
}

impl SqlRepository {
    /// Opens the repository at `url`:
    ///
    /// - `sqlite://path/to/file.db` (or `sqlite:path.db`): the file is created when
    ///   missing; WAL journal, 5 s busy timeout, foreign keys on;
    /// - `sqlite::memory:`: a private in-memory database (one connection; gone when
    ///   the repository is dropped), for tests and demos;
    /// - `postgres://user:password@host:port/db` (or `postgresql://…`).
    ///
    /// The schema is not touched: call [`Repository::migrate`] next.
    ///
    /// # Errors
    ///
    /// [`RepoError::Db`], naming the URL (password redacted), when the scheme is
    /// none of the above or the database cannot be opened.
    pub async fn connect(url: &str) -> Result<SqlRepository, RepoError> {
        let shown = redact_url(url);
        let settings = match DbKind::from_url(url) {
            Some(DbKind::Sqlite) => ConnectSettings::new()
                .max_connections(8)
                .create(Journal::Wal)
                .foreign_keys(),
            Some(DbKind::Postgres) => ConnectSettings::new().max_connections(10).check_first(),
            _ => {
                return Err(RepoError::Db(format!(
                    "unsupported job repository URL {shown}: use sqlite://path/to/file.db, \
                     sqlite::memory: or postgres://user@host/db"
                )));
            }
        };
        let pool = Db::connect(url, &settings)
            .await
            .map_err(|e| RepoError::Db(e.to_string()))?;
        Ok(SqlRepository {
            pool,
            url: shown,
            raw_url: Secret::new(url),
            clock: Arc::new(SystemClock),
        })
    }

    /// The same repository, taking the time from `clock` (tests: a
    /// `ManualClock`).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// The URL this repository was opened with, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this repository is on PostgreSQL (otherwise SQLite).
    pub fn is_postgres(&self) -> bool {
        self.pool.kind() == DbKind::Postgres
    }

    /// Closes the connection pool, waiting for connections in use to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a transaction that will write. On SQLite it takes the database's
    /// write lock at once (waiting up to the busy timeout), so that a transaction
    /// never reads a snapshot it then fails to upgrade.
    async fn write(&self) -> Result<Tx, RepoError> {
        Ok(self.pool.begin_write().await?)
    }

    /// Begins a read-only transaction (a consistent view on SQLite).
    async fn read(&self) -> Result<Tx, RepoError> {
        Ok(self.pool.begin().await?)
    }

    async fn execution_in(tx: &mut Tx, id: i64) -> Result<Option<JobExecution>, RepoError> {
        let sql = format!("SELECT {EXECUTION_COLUMNS} FROM batch_job_execution WHERE id = $1");
        tx.fetch_optional(&Statement::new(&sql).bind(id))
            .await?
            .map(|r| execution_from_row(&r))
            .transpose()
    }
}

#[async_trait]
impl Repository for SqlRepository {
    async fn migrate(&self) -> Result<(), RepoError> {
        MIGRATOR
            .run(&self.pool, self.now())
            .await
            .map_err(|e| RepoError::Db(format!("{e} ({})", self.url)))
    }

    async fn start_execution_with(
        &self,
        job: &str,
        params: &Params,
        non_identifying: &NonIdentifying,
        owner: &str,
        lease: Duration,
        rerun: bool,
    ) -> Result<Launch, RepoError> {
        let instance_params = identifying(params, non_identifying);
        let key = params_key(&instance_params);
        let instance_json = to_json(&instance_params)?;
        let params_json = to_json(params)?;
        let non_identifying_json = to_json(non_identifying)?;
        let mut tx = self.write().await?;
        // Read the clock once the write lock is ours (SQLite may have queued us).
        let now = self.now();
        let until = now.saturating_add(millis(lease));

        // Find or create the instance.
        tx.execute(
            &Statement::new(
                "INSERT INTO batch_job_instance (job_name, params_key, params) VALUES ($1, $2, $3) \
                 ON CONFLICT (job_name, params_key) DO NOTHING",
            )
            .bind(job)
            .bind(key.as_str())
            .bind(instance_json.as_str()),
        )
        .await?;
        let instance_id: i64 = tx
            .fetch_one(
                &Statement::new(
                    "SELECT id FROM batch_job_instance WHERE job_name = $1 AND params_key = $2",
                )
                .bind(job)
                .bind(key.as_str()),
            )
            .await?
            .get("id")?;

        // Claim it: one conditional UPDATE, atomic on both databases. On PostgreSQL a
        // concurrent claimer blocks on the row and re-checks the condition after we
        // commit; on SQLite writers are serialised by BEGIN IMMEDIATE.
        let mut attempts = 0;
        loop {
            let claimed = tx
                .execute(
                    &Statement::new(
                        "UPDATE batch_job_instance \
                         SET lock_owner = $1, lock_execution_id = NULL, lock_until = $2 \
                         WHERE id = $3 AND (lock_until IS NULL OR lock_until < $4)",
                    )
                    .bind(owner)
                    .bind(until)
                    .bind(instance_id)
                    .bind(now),
                )
                .await?;
            if claimed == 1 {
                break;
            }
            let holder = tx
                .fetch_one(
                    &Statement::new(
                        "SELECT lock_owner, lock_execution_id, lock_until \
                         FROM batch_job_instance WHERE id = $1",
                    )
                    .bind(instance_id),
                )
                .await?;
            let lease_until: Option<i64> = holder.get("lock_until")?;
            attempts += 1;
            // On PostgreSQL the holder may have released (or let expire) the lease
            // between our UPDATE and SELECT: try again rather than report a holder
            // that is gone.
            if attempts >= 3 || lease_until.is_some_and(|t| t >= now) {
                return Err(RepoError::AlreadyRunning {
                    job: job.to_owned(),
                    execution_id: holder.get::<Option<i64>>("lock_execution_id")?.unwrap_or(0),
                    owner: holder
                        .get::<Option<String>>("lock_owner")?
                        .unwrap_or_default(),
                    lease_until: lease_until.unwrap_or(0),
                });
            }
        }

        // What happened last time?
        let sql = format!(
            "SELECT {EXECUTION_COLUMNS} FROM batch_job_execution \
             WHERE instance_id = $1 ORDER BY id DESC LIMIT 1"
        );
        let latest = tx
            .fetch_optional(&Statement::new(&sql).bind(instance_id))
            .await?
            .map(|r| execution_from_row(&r))
            .transpose()?;
        let previous = match latest {
            None => None,
            Some(prev) if prev.status.is_running() => {
                // We could claim the instance, so its lease expired: its process died.
                let msg = format!(
                    "process {} died: lease expired at {}",
                    prev.owner,
                    prev.lease_until
                        .map_or_else(|| "(never leased)".to_owned(), format_millis)
                );
                abandon(&mut tx, prev.id, now, &msg).await?;
                Some(JobExecution {
                    status: BatchStatus::Abandoned,
                    ended_at: Some(now),
                    exit_message: msg,
                    ..prev
                })
            }
            Some(prev) if prev.status == BatchStatus::Completed => {
                if !rerun {
                    // Dropping `tx` rolls the claim back.
                    return Err(RepoError::AlreadyCompleted {
                        job: job.to_owned(),
                        execution_id: prev.id,
                    });
                }
                None
            }
            Some(prev) => Some(prev),
        };

        let execution_id: i64 = tx
            .fetch_one(
                &Statement::new(
                    "INSERT INTO batch_job_execution (instance_id, job_name, params, \
                     non_identifying, status, created_at, started_at, exit_message, owner, \
                     lease_until, stop_requested) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6, '', $7, $8, FALSE) RETURNING id",
                )
                .bind(instance_id)
                .bind(job)
                .bind(params_json.as_str())
                .bind(non_identifying_json.as_str())
                .bind(BatchStatus::Started.as_str())
                .bind(now)
                .bind(owner)
                .bind(until),
            )
            .await?
            .get("id")?;
        tx.execute(
            &Statement::new("UPDATE batch_job_instance SET lock_execution_id = $1 WHERE id = $2")
                .bind(execution_id)
                .bind(instance_id),
        )
        .await?;
        tx.commit().await?;

        Ok(Launch {
            instance: JobInstance {
                id: instance_id,
                job_name: job.to_owned(),
                params: instance_params,
                params_key: key,
            },
            execution: JobExecution {
                id: execution_id,
                instance_id,
                job_name: job.to_owned(),
                params: params.clone(),
                non_identifying: non_identifying.clone(),
                status: BatchStatus::Started,
                created_at: now,
                started_at: Some(now),
                ended_at: None,
                exit_message: String::new(),
                owner: owner.to_owned(),
                lease_until: Some(until),
            },
            previous,
        })
    }

    async fn heartbeat(
        &self,
        execution_id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Heartbeat, RepoError> {
        let mut tx = self.write().await?;
        let until = self.now().saturating_add(millis(lease));
        let extended = tx
            .execute(
                &Statement::new(
                    "UPDATE batch_job_instance SET lock_until = $1 \
                     WHERE lock_execution_id = $2 AND lock_owner = $3",
                )
                .bind(until)
                .bind(execution_id)
                .bind(owner),
            )
            .await?;
        if extended == 0 {
            return Err(RepoError::LeaseLost(execution_id));
        }
        let stop: bool = tx
            .fetch_one(
                &Statement::new(
                    "UPDATE batch_job_execution SET lease_until = $1 WHERE id = $2 \
                     RETURNING stop_requested",
                )
                .bind(until)
                .bind(execution_id),
            )
            .await?
            .get("stop_requested")?;
        tx.commit().await?;
        Ok(if stop {
            Heartbeat::StopRequested
        } else {
            Heartbeat::Alive
        })
    }

    async fn finish_execution(
        &self,
        execution_id: i64,
        status: BatchStatus,
        exit_message: &str,
    ) -> Result<(), RepoError> {
        let mut tx = self.write().await?;
        // An execution taken over as ABANDONED keeps that status: a late finish from
        // its zombie process must not rewrite history.
        let updated = tx
            .execute(
                &Statement::new(
                    "UPDATE batch_job_execution SET status = $1, ended_at = $2, exit_message = $3 \
                     WHERE id = $4 AND status <> 'ABANDONED'",
                )
                .bind(status.as_str())
                .bind(self.now())
                .bind(exit_message)
                .bind(execution_id),
            )
            .await?;
        if updated == 0 && Self::execution_in(&mut tx, execution_id).await?.is_none() {
            return Err(RepoError::NoSuchExecution(execution_id));
        }
        tx.execute(
            &Statement::new(
                "UPDATE batch_job_instance \
                 SET lock_owner = NULL, lock_execution_id = NULL, lock_until = NULL \
                 WHERE lock_execution_id = $1",
            )
            .bind(execution_id),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn last_step_execution(
        &self,
        instance_id: i64,
        step: &str,
    ) -> Result<Option<StepExecution>, RepoError> {
        let mut tx = self.read().await?;
        let row = tx
            .fetch_optional(
                &Statement::new(
                    "SELECT s.* FROM batch_step_execution s \
                     JOIN batch_job_execution e ON e.id = s.execution_id \
                     WHERE e.instance_id = $1 AND s.step_name = $2 \
                     ORDER BY s.id DESC LIMIT 1",
                )
                .bind(instance_id)
                .bind(step),
            )
            .await?;
        tx.commit().await?;
        row.map(|r| step_from_row(&r)).transpose()
    }

    async fn start_step(
        &self,
        execution_id: i64,
        step: &str,
        counts: StepCounts,
        checkpoint: &serde_json::Value,
    ) -> Result<StepExecution, RepoError> {
        let now = self.now();
        let checkpoint_json = to_json(checkpoint)?;
        let mut tx = self.write().await?;
        let id: i64 = tx
            .fetch_one(
                &Statement::new(
                    "INSERT INTO batch_step_execution (execution_id, step_name, status, \
                     read_count, processed_count, filtered_count, written_count, skip_count, \
                     commit_count, rollback_count, checkpoint, started_at, exit_message) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, '') RETURNING id",
                )
                .bind(execution_id)
                .bind(step)
                .bind(BatchStatus::Started.as_str())
                .bind_counts(&counts)
                .bind(checkpoint_json.as_str())
                .bind(now),
            )
            .await?
            .get("id")?;
        tx.commit().await?;
        Ok(StepExecution {
            id,
            execution_id,
            step_name: step.to_owned(),
            status: BatchStatus::Started,
            counts,
            checkpoint: checkpoint.clone(),
            started_at: now,
            ended_at: None,
            exit_message: String::new(),
        })
    }

    async fn commit_chunk(
        &self,
        step: &StepExecution,
        owner: &str,
        skips: &[SkipRecord],
    ) -> Result<(), RepoError> {
        let statements = chunk_commit(step, owner, skips, self.now())?;
        let mut tx = self.write().await?;
        for st in &statements {
            let affected = tx
                .execute(&Statement {
                    sql: st.sql.as_str().into(),
                    args: st.args.clone(),
                })
                .await?;
            if st.must_affect && affected == 0 {
                return Err(RepoError::LeaseLost(step.execution_id));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    fn database_url(&self) -> Option<&str> {
        Some(self.raw_url.expose())
    }

    fn chunk_commit_statements(
        &self,
        step: &StepExecution,
        owner: &str,
        skips: &[SkipRecord],
    ) -> Option<Vec<SqlStatement>> {
        chunk_commit(step, owner, skips, self.now()).ok()
    }

    async fn finish_step(&self, step: &StepExecution) -> Result<(), RepoError> {
        let checkpoint_json = to_json(&step.checkpoint)?;
        let mut tx = self.write().await?;
        let updated = tx
            .execute(
                &Statement::new(
                    "UPDATE batch_step_execution SET status = $1, read_count = $2, \
                     processed_count = $3, filtered_count = $4, written_count = $5, \
                     skip_count = $6, commit_count = $7, rollback_count = $8, checkpoint = $9, \
                     ended_at = $10, exit_message = $11 WHERE id = $12",
                )
                .bind(step.status.as_str())
                .bind_counts(&step.counts)
                .bind(checkpoint_json.as_str())
                .bind(step.ended_at.unwrap_or_else(|| self.now()))
                .bind(step.exit_message.as_str())
                .bind(step.id),
            )
            .await?;
        if updated == 0 {
            return Err(RepoError::Db(format!(
                "no step execution {} (step {:?} of execution {})",
                step.id, step.step_name, step.execution_id
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn request_stop(&self, execution_id: i64) -> Result<bool, RepoError> {
        let mut tx = self.write().await?;
        let updated = tx
            .execute(
                &Statement::new(
                    "UPDATE batch_job_execution SET stop_requested = TRUE, status = 'STOPPING' \
                     WHERE id = $1 AND status IN ('STARTING', 'STARTED', 'STOPPING')",
                )
                .bind(execution_id),
            )
            .await?;
        if updated == 0 && Self::execution_in(&mut tx, execution_id).await?.is_none() {
            return Err(RepoError::NoSuchExecution(execution_id));
        }
        tx.commit().await?;
        Ok(updated > 0)
    }

    async fn stop_requested(&self, execution_id: i64) -> Result<bool, RepoError> {
        let mut tx = self.read().await?;
        let row = tx
            .fetch_optional(
                &Statement::new("SELECT stop_requested FROM batch_job_execution WHERE id = $1")
                    .bind(execution_id),
            )
            .await?;
        tx.commit().await?;
        match row {
            Some(r) => Ok(r.get("stop_requested")?),
            None => Err(RepoError::NoSuchExecution(execution_id)),
        }
    }

    async fn find_executions(
        &self,
        filter: &ExecutionFilter,
        limit: u32,
    ) -> Result<Vec<JobExecution>, RepoError> {
        let mut conds = vec!["id < $1".to_owned()];
        let mut args: Vec<sluice_sql::Arg> = vec![filter.before_id.unwrap_or(i64::MAX).into()];
        let mut cond = |c: &str, a: sluice_sql::Arg| {
            args.push(a);
            conds.push(format!("{c} ${}", args.len()));
        };
        if let Some(j) = &filter.job {
            cond("job_name =", j.clone().into());
        }
        if let Some(s) = filter.status {
            cond("status =", s.as_str().into());
        }
        if let Some(t) = filter.since_ms {
            cond("created_at >=", t.into());
        }
        let sql = format!(
            "SELECT {EXECUTION_COLUMNS} FROM batch_job_execution WHERE {} \
             ORDER BY id DESC LIMIT {limit}",
            conds.join(" AND ")
        );
        let st = args
            .into_iter()
            .fold(Statement::new(&sql), |st, a| st.bind(a));
        let mut tx = self.read().await?;
        let rows = tx.fetch_all(&st).await?;
        tx.commit().await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn execution(
        &self,
        execution_id: i64,
    ) -> Result<(JobExecution, Vec<StepExecution>), RepoError> {
        let mut tx = self.read().await?;
        let execution = Self::execution_in(&mut tx, execution_id)
            .await?
            .ok_or(RepoError::NoSuchExecution(execution_id))?;
        let rows = tx
            .fetch_all(
                &Statement::new(
                    "SELECT * FROM batch_step_execution WHERE execution_id = $1 ORDER BY id",
                )
                .bind(execution_id),
            )
            .await?;
        tx.commit().await?;
        let steps = rows.iter().map(step_from_row).collect::<Result<_, _>>()?;
        Ok((execution, steps))
    }

    async fn skips(&self, execution_id: i64) -> Result<Vec<SkipRecord>, RepoError> {
        let mut tx = self.read().await?;
        let rows = tx
            .fetch_all(
                &Statement::new(
                    "SELECT k.step_execution_id, k.step_name, k.position, k.phase, k.reason, \
                     k.item FROM batch_skip k \
                     JOIN batch_step_execution s ON s.id = k.step_execution_id \
                     WHERE s.execution_id = $1 ORDER BY k.id",
                )
                .bind(execution_id),
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(SkipRecord {
                    step_execution_id: r.get("step_execution_id")?,
                    step_name: r.get("step_name")?,
                    position: to_u64(r.get("position")?),
                    phase: r.get("phase")?,
                    reason: r.get("reason")?,
                    item: r.get("item")?,
                })
            })
            .collect()
    }
}

/// Marks a dead execution, and its steps that were still running, `ABANDONED`.
async fn abandon(tx: &mut Tx, execution_id: i64, now: Millis, msg: &str) -> Result<(), RepoError> {
    tx.execute(
        &Statement::new(
            "UPDATE batch_job_execution SET status = 'ABANDONED', ended_at = $1, exit_message = $2 \
             WHERE id = $3",
        )
        .bind(now)
        .bind(msg)
        .bind(execution_id),
    )
    .await?;
    tx.execute(
        &Statement::new(
            "UPDATE batch_step_execution SET status = 'ABANDONED', ended_at = $1, \
             exit_message = $2 \
             WHERE execution_id = $3 AND status IN ('STARTING', 'STARTED', 'STOPPING')",
        )
        .bind(now)
        .bind(msg)
        .bind(execution_id),
    )
    .await?;
    Ok(())
}

fn execution_from_row(r: &Row) -> Result<JobExecution, RepoError> {
    let id: i64 = r.get("id")?;
    Ok(JobExecution {
        id,
        instance_id: r.get("instance_id")?,
        job_name: r.get("job_name")?,
        params: from_json(&r.get::<String>("params")?, "parameters", "execution", id)?,
        non_identifying: from_json(
            &r.get::<String>("non_identifying")?,
            "non-identifying parameter names",
            "execution",
            id,
        )?,
        status: status(r)?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        ended_at: r.get("ended_at")?,
        exit_message: r.get("exit_message")?,
        owner: r.get("owner")?,
        lease_until: r.get("lease_until")?,
    })
}

fn step_from_row(r: &Row) -> Result<StepExecution, RepoError> {
    let id: i64 = r.get("id")?;
    Ok(StepExecution {
        id,
        execution_id: r.get("execution_id")?,
        step_name: r.get("step_name")?,
        status: status(r)?,
        counts: StepCounts {
            read: to_u64(r.get("read_count")?),
            processed: to_u64(r.get("processed_count")?),
            filtered: to_u64(r.get("filtered_count")?),
            written: to_u64(r.get("written_count")?),
            skipped: to_u64(r.get("skip_count")?),
            commits: to_u64(r.get("commit_count")?),
            rollbacks: to_u64(r.get("rollback_count")?),
        },
        checkpoint: from_json(
            &r.get::<String>("checkpoint")?,
            "checkpoint",
            "step execution",
            id,
        )?,
        started_at: r.get("started_at")?,
        ended_at: r.get("ended_at")?,
        exit_message: r.get("exit_message")?,
    })
}

/// The `status` column of `r`.
fn status(r: &Row) -> Result<BatchStatus, RepoError> {
    let s: String = r.get("status")?;
    BatchStatus::parse(&s)
        .ok_or_else(|| RepoError::Db(format!("unknown status {s:?} in the job repository")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, RepoError> {
    serde_json::to_string(v).map_err(|e| RepoError::Db(format!("cannot encode JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
    table: &str,
    id: i64,
) -> Result<T, RepoError> {
    serde_json::from_str(text)
        .map_err(|e| RepoError::Db(format!("bad {what} JSON in {table} {id}: {e}")))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

use sluice_core::{Secret, redact_url};

/// The statements of one chunk commit: the lease check (a write to the instance
/// row: on PostgreSQL it locks the row until commit, so a takeover cannot slip in
/// between check and commit), the step's counts and checkpoint, the chunk's skips.
fn chunk_commit(
    step: &StepExecution,
    owner: &str,
    skips: &[SkipRecord],
    now: Millis,
) -> Result<Vec<SqlStatement>, RepoError> {
    let checkpoint_json = to_json(&step.checkpoint)?;
    let mut out = vec![
        SqlStatement {
            sql: "UPDATE batch_job_instance SET lock_until = lock_until \
                  WHERE lock_execution_id = $1 AND lock_owner = $2"
                .into(),
            args: vec![Arg::I64(step.execution_id), Arg::from(owner)],
            must_affect: true,
        },
        SqlStatement {
            sql: "UPDATE batch_step_execution SET status = $1, read_count = $2, \
                  processed_count = $3, filtered_count = $4, written_count = $5, skip_count = $6, \
                  commit_count = $7, rollback_count = $8, checkpoint = $9 WHERE id = $10"
                .into(),
            args: std::iter::once(Arg::from(step.status.as_str()))
                .chain(step.counts.values().map(|n| Arg::I64(to_i64(n))))
                .chain([Arg::from(checkpoint_json.as_str()), Arg::I64(step.id)])
                .collect(),
            must_affect: false,
        },
    ];
    for skip in skips {
        out.push(SqlStatement {
            sql: "INSERT INTO batch_skip (step_execution_id, step_name, position, phase, \
                  reason, item, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                .into(),
            args: vec![
                Arg::I64(step.id),
                Arg::from(step.step_name.as_str()),
                Arg::I64(to_i64(skip.position)),
                Arg::from(skip.phase.as_str()),
                Arg::from(skip.reason.as_str()),
                Arg::from(skip.item.as_deref().map(|s| truncate(s, MAX_SKIP_ITEM))),
                Arg::I64(now),
            ],
            must_affect: false,
        });
    }
    Ok(out)
}

use crate::api::{SqlArg as Arg, SqlStatement};

/// Binding the seven step counts.
trait BindCounts {
    /// Binds the seven counts, in column order (`read_count` … `rollback_count`).
    fn bind_counts(self, c: &StepCounts) -> Self;
}

impl BindCounts for Statement<'_> {
    fn bind_counts(self, c: &StepCounts) -> Self {
        c.values().into_iter().fold(self, |q, n| q.bind(to_i64(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_never_shows_the_password() {
        let admin = std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let url = admin.replacen("://postgres@", "://postgres:s3cret-pw@", 1);
        let repo = SqlRepository::connect(&url).await.unwrap();
        let shown = format!("{repo:?}");
        assert!(
            !shown.contains("s3cret-pw") && shown.contains("SqlRepository"),
            "{shown}"
        );
        assert_eq!(repo.database_url(), Some(url.as_str()));
    }
}
