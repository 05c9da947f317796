-- sluice-batch job repository, version 1, for SQLite and PostgreSQL: {identity} is
-- the auto-increment primary key of each (see sluice_sql::Migration); see
-- docs/batch-repository.md.
-- Times are Unix milliseconds; parameters, checkpoints and items are JSON text.

CREATE TABLE batch_job_instance (
    id                {identity},
    job_name          TEXT    NOT NULL,
    params_key        TEXT    NOT NULL,
    params            TEXT    NOT NULL,
    -- The lease: which process runs the instance, as which execution, until when.
    lock_owner        TEXT,
    lock_execution_id BIGINT,
    lock_until        BIGINT,
    UNIQUE (job_name, params_key)
);

CREATE TABLE batch_job_execution (
    id             {identity},
    instance_id    BIGINT  NOT NULL REFERENCES batch_job_instance (id),
    job_name       TEXT    NOT NULL,
    params         TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN
                       ('STARTING', 'STARTED', 'COMPLETED', 'FAILED', 'STOPPING', 'STOPPED', 'ABANDONED')),
    created_at     BIGINT  NOT NULL,
    started_at     BIGINT,
    ended_at       BIGINT,
    exit_message   TEXT    NOT NULL DEFAULT '',
    owner          TEXT    NOT NULL,
    lease_until    BIGINT,
    stop_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX batch_job_execution_instance ON batch_job_execution (instance_id);
CREATE INDEX batch_job_execution_job ON batch_job_execution (job_name, id);

CREATE TABLE batch_step_execution (
    id              {identity},
    execution_id    BIGINT NOT NULL REFERENCES batch_job_execution (id),
    step_name       TEXT   NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN
                        ('STARTING', 'STARTED', 'COMPLETED', 'FAILED', 'STOPPING', 'STOPPED', 'ABANDONED')),
    read_count      BIGINT NOT NULL DEFAULT 0,
    processed_count BIGINT NOT NULL DEFAULT 0,
    filtered_count  BIGINT NOT NULL DEFAULT 0,
    written_count   BIGINT NOT NULL DEFAULT 0,
    skip_count      BIGINT NOT NULL DEFAULT 0,
    commit_count    BIGINT NOT NULL DEFAULT 0,
    rollback_count  BIGINT NOT NULL DEFAULT 0,
    checkpoint      TEXT   NOT NULL DEFAULT 'null',
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT,
    exit_message    TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX batch_step_execution_execution ON batch_step_execution (execution_id);

CREATE TABLE batch_skip (
    id                {identity},
    step_execution_id BIGINT NOT NULL REFERENCES batch_step_execution (id),
    step_name         TEXT   NOT NULL,
    position          BIGINT NOT NULL,
    phase             TEXT   NOT NULL,
    reason            TEXT   NOT NULL,
    item              TEXT,
    created_at        BIGINT NOT NULL
);
CREATE INDEX batch_skip_step ON batch_skip (step_execution_id);
