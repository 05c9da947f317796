//! The task table's rows: the columns read back and the multi-row insert of
//! new tasks.

use super::*;

/// The columns of `sluice_tasks`, as [`stored_from_row`] reads them.
pub(super) const COLUMNS: &str = "id, queue, name, payload, priority, attempt, max_attempts, state, \
     not_before, lease_token, lease_until, idempotency_key, created_at, last_error, result, \
     result_ttl_ms, expires_at, finished_at, redelivered";

/// Leases that ran out go back to ready (a redelivery) or, on their last attempt,
/// to the dead-letter queue. `$1` is the queue.
pub(super) const EXPIRE_SQL: &str = "UPDATE sluice_tasks SET \
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
pub(super) const PICK_SQL: &str = "WITH picked AS (SELECT id FROM sluice_tasks \
         WHERE queue = $1 AND state = 'ready' AND not_before <= {now} \
         ORDER BY priority DESC, not_before, id LIMIT $2{lock}) \
     UPDATE sluice_tasks SET state = 'running', attempt = attempt + 1, \
         lease_token = {token}, lease_until = {now} + $3 \
     WHERE id IN (SELECT id FROM picked) AND state = 'ready' \
     RETURNING {columns}";

impl SqlBroker {
    /// Reads a task row back.
    pub(super) fn stored(&self, row: &Row) -> Result<Stored, QueueError> {
        stored_from_row(row, self.dialect().as_str())
    }
}

/// A task row with its bookkeeping.
pub(super) struct Stored {
    pub(super) task: Envelope,
    pub(super) state: String,
    pub(super) lease_token: Option<String>,
    pub(super) lease_until: Option<i64>,
    pub(super) result: Option<String>,
    pub(super) expires_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
    pub(super) redelivered: i64,
}

pub(super) fn stored_from_row(r: &Row, broker: &'static str) -> Result<Stored, QueueError> {
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

pub(super) fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// `d` in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The stored row of a new task, bound in [`INSERT_COLUMNS`] order.
pub(super) const INSERT_COLUMNS: &str = "id, queue, name, payload, priority, max_attempts, not_before, \
     idempotency_key, created_at, result_ttl_ms, attempt, state";

/// Binds one new task's ten parameters (see [`INSERT_COLUMNS`]).
pub(super) fn bind_new(q: Q, t: &NewTask, payload: String, now: UnixMillis) -> Q {
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
pub(super) fn insert_sql(rows: usize, dialect: DbKind) -> String {
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
