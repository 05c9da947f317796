//! Enqueueing: queue registration, idempotency keys and multi-row inserts.

use super::*;

impl SqlBroker {
    /// Registers `queues` in `sluice_queues` (once per process and queue).
    pub(super) async fn register_queues(
        &self,
        tx: &mut Tx<'_>,
        queues: &[&str],
    ) -> Result<(), QueueError> {
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

    pub(super) fn unknown_queues<'t>(&self, tasks: &'t [NewTask]) -> Vec<&'t str> {
        let known = self.known_queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<&str> = Vec::new();
        for t in tasks {
            if !known.contains(&t.queue) && !out.contains(&t.queue.as_str()) {
                out.push(&t.queue);
            }
        }
        out
    }

    pub(super) fn remember_queues(&self, queues: &[&str]) {
        let mut known = self.known_queues.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(queues.iter().map(|q| (*q).to_owned()));
    }

    /// Inserts tasks (the body of `enqueue_many`, without the counting).
    pub(super) async fn insert_tasks(
        &self,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, QueueError> {
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
