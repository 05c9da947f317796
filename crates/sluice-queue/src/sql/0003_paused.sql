-- sluice-queue SQL broker, version 3: paused queues (SQLite and PostgreSQL).
-- One row per paused queue; workers skip the queues listed here. Resuming
-- deletes the row.

CREATE TABLE IF NOT EXISTS sluice_paused_queues (
    name      TEXT   PRIMARY KEY,
    -- when it was paused (broker clock, Unix ms)
    paused_at BIGINT NOT NULL
);
