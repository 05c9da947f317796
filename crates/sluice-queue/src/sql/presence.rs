//! Worker announcements (`sluice_workers`), paused queues
//! (`sluice_paused_queues`), cancelling a waiting task and listing leases.

use super::*;

impl SqlBroker {
    /// Upserts the worker's row with an expiry `ttl` ahead and deletes rows that
    /// ran out.
    pub(super) async fn announce_worker(
        &self,
        beat: &WorkerBeat,
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let queues = serde_json::to_string(&beat.queues)
            .map_err(|e| QueueError::Invalid(format!("worker {}: {e}", beat.node)))?;
        let upsert = Q::new(
            "INSERT INTO sluice_workers (node, queues, started_at, seen_at, expires_at) \
             VALUES ($1, $2, $3, {now}, {now} + $4) \
             ON CONFLICT (node) DO UPDATE SET queues = excluded.queues, \
             started_at = excluded.started_at, seen_at = excluded.seen_at, \
             expires_at = excluded.expires_at",
        )
        .bind(beat.node.as_str())
        .bind(queues)
        .bind(beat.started_at)
        .bind(millis(ttl).max(1));
        self.execute(upsert).await?;
        self.execute(Q::new(
            "DELETE FROM sluice_workers WHERE expires_at <= {now}",
        ))
        .await?;
        Ok(())
    }

    /// Deletes the worker's row.
    pub(super) async fn withdraw_worker(&self, node: &str) -> Result<(), QueueError> {
        self.execute(Q::new("DELETE FROM sluice_workers WHERE node = $1").bind(node))
            .await?;
        Ok(())
    }

    /// The rows that have not run out.
    pub(super) async fn live_workers(&self) -> Result<Vec<LiveWorker>, QueueError> {
        let rows = self
            .fetch_all(
                false,
                Q::new(
                    "SELECT node, queues, started_at, seen_at, expires_at FROM sluice_workers \
                     WHERE expires_at > {now} ORDER BY node",
                ),
            )
            .await?;
        let broker = self.dialect().as_str();
        rows.iter()
            .map(|r| {
                let node: String = r.col("node", broker)?;
                let queues: String = r.col("queues", broker)?;
                let queues = serde_json::from_str(&queues).map_err(|e| QueueError::Corrupt {
                    broker,
                    id: node.clone(),
                    message: format!("worker queues are not a JSON list: {e}"),
                })?;
                Ok(LiveWorker {
                    node,
                    queues,
                    started_at: r.col("started_at", broker)?,
                    seen_at: r.col("seen_at", broker)?,
                    expires_at: r.col("expires_at", broker)?,
                })
            })
            .collect()
    }

    /// Adds `queue` to `sluice_paused_queues` (a no-op when it is there), or
    /// deletes its row.
    pub(super) async fn pause_queue(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        crate::task::check_queue_name(queue).map_err(QueueError::Invalid)?;
        let q = if paused {
            Q::new(
                "INSERT INTO sluice_paused_queues (name, paused_at) VALUES ($1, {now}) \
                 ON CONFLICT (name) DO NOTHING",
            )
        } else {
            Q::new("DELETE FROM sluice_paused_queues WHERE name = $1")
        };
        self.execute(q.bind(queue)).await?;
        Ok(())
    }

    /// The names in `sluice_paused_queues`.
    pub(super) async fn paused(&self) -> Result<Vec<String>, QueueError> {
        self.names("sluice_paused_queues").await
    }

    /// The `name` column of `table` (one of ours), in order.
    pub(super) async fn names(&self, table: &'static str) -> Result<Vec<String>, QueueError> {
        let rows = self
            .fetch_all(
                false,
                Q::new(format!("SELECT name FROM {table} ORDER BY name")),
            )
            .await?;
        let broker = self.dialect().as_str();
        rows.iter().map(|r| r.col("name", broker)).collect()
    }

    /// Deletes a ready (or delayed) task; else says where it stands.
    pub(super) async fn cancel_task(
        &self,
        queue: &str,
        id: TaskId,
    ) -> Result<CancelOutcome, QueueError> {
        let gone = self
            .execute(
                Q::new("DELETE FROM sluice_tasks WHERE id = $1 AND queue = $2 AND state = 'ready'")
                    .bind(id.to_string())
                    .bind(queue),
            )
            .await?;
        if gone > 0 {
            return Ok(CancelOutcome::Cancelled);
        }
        Ok(match self.status(queue, id).await? {
            None => CancelOutcome::Unknown,
            Some(s) if s.state == TaskState::Running => CancelOutcome::Running,
            // Ready again between the two statements (a released lease): one more try.
            Some(s) if matches!(s.state, TaskState::Ready | TaskState::Delayed) => {
                let again = self
                    .execute(
                        Q::new(
                            "DELETE FROM sluice_tasks WHERE id = $1 AND queue = $2 \
                             AND state = 'ready'",
                        )
                        .bind(id.to_string())
                        .bind(queue),
                    )
                    .await?;
                if again > 0 {
                    CancelOutcome::Cancelled
                } else {
                    CancelOutcome::Running
                }
            }
            Some(s) => CancelOutcome::Finished(s.state),
        })
    }

    /// Leased tasks of `queue`, soonest lease end first.
    pub(super) async fn running_tasks(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<RunningTask>, QueueError> {
        let rows = self
            .fetch_all(
                false,
                Q::new(
                    "SELECT id, lease_until FROM sluice_tasks WHERE queue = $1 \
                     AND state = 'running' ORDER BY lease_until, id LIMIT $2",
                )
                .bind(queue)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await?;
        let broker = self.dialect().as_str();
        rows.iter()
            .map(|r| {
                let id: String = r.col("id", broker)?;
                let until: Option<i64> = r.col("lease_until", broker)?;
                Ok(RunningTask {
                    id: id.parse().map_err(|e: String| QueueError::Corrupt {
                        broker,
                        id: id.clone(),
                        message: e,
                    })?,
                    lease_until: until.unwrap_or(0),
                })
            })
            .collect()
    }
}
