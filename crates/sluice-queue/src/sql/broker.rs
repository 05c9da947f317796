//! The [`Broker`] operations: lease, extend, complete, fail, release, status,
//! stats and the dead-letter queue.

use super::*;

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

    async fn lease_request(&self, req: LeaseRequest<'_>) -> Result<Vec<Lease>, QueueError> {
        let (queue, visibility) = (req.queue, req.visibility);
        self.maybe_sweep().await;
        let max = i64::try_from(req.max.get()).unwrap_or(i64::MAX);
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
                let sql = format!(
                    "UPDATE sluice_tasks AS t SET lease_until = {PG_NOW} + $3 \
                     FROM UNNEST($1::text[], $2::text[]) AS d(id, token) \
                     WHERE t.id = d.id AND t.lease_token = d.token \
                     AND t.lease_until IS NOT NULL RETURNING t.id, t.lease_token"
                );
                let rows = pg_over_leases(&sql, leases)
                    .bind(vis)
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
                let row = pg_over_leases(&sql, &leases)
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

    async fn release_delayed(
        &self,
        lease: &LeaseRef,
        delay: Duration,
        reason: &str,
    ) -> Result<bool, QueueError> {
        let q = Q::new(
            "UPDATE sluice_tasks SET state = 'ready', \
             attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END, \
             not_before = {now} + $3, last_error = $4, lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.id.to_string())
        .bind(lease.token.as_str())
        .bind(millis(delay))
        .bind(reason);
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
        self.names("sluice_queues").await
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
        match ids {
            None => self.execute(Q::new(SET).bind(queue)).await,
            Some(ids) => self.execute_for_ids(SET, queue, ids).await,
        }
    }

    async fn purge_dead(&self, queue: &str) -> Result<u64, QueueError> {
        self.execute(Q::new(PURGE_SQL).bind(queue)).await
    }

    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<u64, QueueError> {
        self.execute_for_ids(PURGE_SQL, queue, ids).await
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        self.pause_queue(queue, paused).await
    }

    async fn paused_queues(&self) -> Result<Vec<String>, QueueError> {
        self.paused().await
    }

    async fn oldest_ready(&self, queue: &str) -> Result<Option<i64>, QueueError> {
        let q = Q::new(
            "SELECT MIN(not_before) AS oldest FROM sluice_tasks \
             WHERE queue = $1 AND state = 'ready' AND not_before <= {now}",
        )
        .bind(queue);
        let rows = self.fetch_all(false, q).await?;
        let broker = self.dialect().as_str();
        match rows.first() {
            Some(r) => r.col::<Option<i64>>("oldest", broker),
            None => Ok(None),
        }
    }

    async fn announce(&self, beat: &WorkerBeat, ttl: Duration) -> Result<(), QueueError> {
        self.announce_worker(beat, ttl).await
    }

    async fn withdraw(&self, node: &str) -> Result<(), QueueError> {
        self.withdraw_worker(node).await
    }

    async fn workers(&self) -> Result<Vec<LiveWorker>, QueueError> {
        self.live_workers().await
    }

    async fn cancel(&self, queue: &str, id: TaskId) -> Result<CancelOutcome, QueueError> {
        self.cancel_task(queue, id).await
    }

    async fn running(&self, queue: &str, limit: usize) -> Result<Vec<RunningTask>, QueueError> {
        self.running_tasks(queue, limit).await
    }
}

/// Deletes the dead tasks of queue `$1`.
const PURGE_SQL: &str = "DELETE FROM sluice_tasks WHERE queue = $1 AND state = 'dead'";

impl SqlBroker {
    /// Runs `sql` (a statement over queue `$1` ending in a `WHERE` clause) once per
    /// [`ID_CHUNK`] of `ids`, narrowed with `AND id IN (…)`; rows affected in all.
    async fn execute_for_ids(
        &self,
        sql: &str,
        queue: &str,
        ids: &[TaskId],
    ) -> Result<u64, QueueError> {
        let mut n = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let q = chunk.iter().fold(
                Q::new(format!("{sql} AND id IN ({list})")).bind(queue),
                |q, id| q.bind(id.to_string()),
            );
            n += self.execute(q).await?;
        }
        Ok(n)
    }
}

/// A PostgreSQL statement over `leases`: their ids bound to `$1` and their tokens
/// to `$2` as parallel text arrays, for `UNNEST`; further parameters from `$3`.
fn pg_over_leases<'q>(
    sql: &'q str,
    leases: &[LeaseRef],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (ids, tokens): (Vec<String>, Vec<String>) = leases
        .iter()
        .map(|l| (l.id.to_string(), l.token.clone()))
        .unzip();
    sqlx::query(sql).bind(ids).bind(tokens)
}
