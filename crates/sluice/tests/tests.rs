//! Integration tests of the sluice binary crate, against real sockets.

// Running the binary: its path, outputs for messages, polling, ending children, configs.
mod bin;

// Shared harness: simulated upstream + gateway on free ports, raw HTTP, log capture.
mod support;

// The gateway end to end: routing, keys, freshness, ok_when, coalescing, quotas, admin, metrics.
mod gateway;

// Config validation: located errors for every kind of mistake.
mod config;

// The binary: `check`, `serve` with JSON logs, graceful shutdown on SIGTERM.
mod cli;

// `job run`'s progress bar on a pseudo-terminal: bytes of a CSV, rates, whole log lines.
mod progress;

// `serve` at start: gateway-only configs touch no database; start failures come before listening.
mod serve_start;

// Several nodes on one Redis: cluster-wide coalescing, quota, purges, outages.
mod cluster;

// Bounded client connections: header and idle timeouts, the cap, head size, reserved paths, draining.
mod connections;

// Batch jobs through the binary: load, skips, no double run, kill -9 and restart.
mod jobs;

// The gateway against a hostile upstream: deep documents, echoed secrets, redirects, drips.
mod hostile;

// `/metrics` lint: every family has HELP and TYPE, promtool warns about nothing, names match the spec.
mod metrics_lint;

// Exactly once into any database: sql_append / sql_upsert into SQLite, PostgreSQL, MariaDB, aborted between commits or killed -9.
mod exactly_once;

// The REST API: the OpenAPI document and its routes, roles, sessions and CSRF, secrets, steering.
mod api;

// `job run` locally or through a live worker, Ctrl-C, `task cancel`, `queue list`, followers across outages, owner gone.
mod follow;

// The CLI as a Unix tool: `--json` everywhere, exit 2 for unknown ids, one `job finished` line, no database notices, shell output in `job status`.
mod unix_cli;

// The dashboard: sessions, CSRF and roles over HTTP; chromium headless driving it (screenshots in target/ui-screenshots).
mod ui;

// Alerts: every condition through real serve nodes, to a webhook (HMAC, retries through the queue, 4xx dead-lettered) and an SMTP sink; two PostgreSQL nodes send once; bad rules located.
mod alerts;

// The gateway access log of `sluice serve`: json and common lines for a miss, a hit and no route; no query, path or secret; config errors.
mod access_log;

// `queue pause` / `queue resume` / `queue dlq delete` and `paused` in `queue stats`.
mod queue_cli;

// The public-data kit: the data.go.kr preset and quota-aware paged loads across days.
mod portal_kit;

// Log analysis: the log examples check and run, a real gateway access log counted, exactly once across a crash, a query alert rule over the stats.
mod logs;

// Database-change triggers through `serve`: a PostgreSQL table change runs the job with the changed keys; an sql_change on SQLite.
mod db_change;

// Backups: the repository backed up by a job and restored over itself; S3 (moto) with secrets, list, verify, restore; a corrupt artifact.
mod backup;

// Mass e-mail: the email writer against the SMTP sink; kill -9 and resume sends each once, 5xx skipped, 4xx retried, dry run, a rate shared through Redis.
mod email;
