-- sluice-queue SQL broker, version 2: worker announcements (SQLite and PostgreSQL).
-- One row per node, upserted every few seconds; a row whose expires_at is past
-- (broker clock, Unix ms) is ignored and deleted by the next announcement.

CREATE TABLE IF NOT EXISTS sluice_workers (
    node       TEXT   PRIMARY KEY,
    -- JSON array of queue names
    queues     TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
