-- sluice-queue SQL broker, version 1 (SQLite and PostgreSQL: the same text).
-- Times are Unix milliseconds on the broker's clock; payloads and results are JSON text.

CREATE TABLE IF NOT EXISTS sluice_tasks (
    id              TEXT   PRIMARY KEY,
    queue           TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    priority        BIGINT NOT NULL,
    attempt         BIGINT NOT NULL DEFAULT 0,
    max_attempts    BIGINT NOT NULL,
    -- 'ready' (delayed while not_before is ahead), 'running', 'completed', 'dead'
    state           TEXT   NOT NULL,
    not_before      BIGINT NOT NULL,
    lease_token     TEXT,
    lease_until     BIGINT,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL,
    last_error      TEXT,
    result          TEXT,
    result_ttl_ms   BIGINT NOT NULL DEFAULT 0,
    -- completed rows are kept until then
    expires_at      BIGINT,
    finished_at     BIGINT,
    redelivered     BIGINT NOT NULL DEFAULT 0
);

-- Leasing: the next ready tasks of a queue, highest priority, then oldest, first.
CREATE INDEX IF NOT EXISTS sluice_tasks_ready
    ON sluice_tasks (queue, priority DESC, not_before, id) WHERE state = 'ready';

-- Leases that ran out.
CREATE INDEX IF NOT EXISTS sluice_tasks_running
    ON sluice_tasks (queue, lease_until) WHERE state = 'running';

-- Dead letters, oldest death first.
CREATE INDEX IF NOT EXISTS sluice_tasks_dead
    ON sluice_tasks (queue, finished_at) WHERE state = 'dead';

-- Only partial indexes besides the primary key: a statement that names a task by
-- id (and checks its state and token) has no other index to pick, even on a table
-- PostgreSQL has not analysed yet.

-- Results past their TTL.
CREATE INDEX IF NOT EXISTS sluice_tasks_expires
    ON sluice_tasks (expires_at) WHERE state = 'completed';

-- Idempotency keys, each deduplicating until `until`.
CREATE TABLE IF NOT EXISTS sluice_task_keys (
    queue   TEXT   NOT NULL,
    key     TEXT   NOT NULL,
    task_id TEXT   NOT NULL,
    until   BIGINT NOT NULL,
    PRIMARY KEY (queue, key)
);

CREATE INDEX IF NOT EXISTS sluice_task_keys_until ON sluice_task_keys (until);

-- Queues that have held tasks.
CREATE TABLE IF NOT EXISTS sluice_queues (
    name       TEXT   PRIMARY KEY,
    created_at BIGINT NOT NULL
);
