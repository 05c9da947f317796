//! [`SqlTasklet`]: one SQL statement, or a statement repeated until it affects no
//! row; `tasklet = { kind = "sql", … }`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sluice_sql::{ConnectSettings, Db};

use crate::job::{Tasklet, TaskletError};
use crate::readers::sql::DEFAULT_CONNECT_TIMEOUT;

/// `kind = "sql"`: one SQL statement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlTasklet {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The statement.
    pub sql: String,
    /// Run it again until it affects no row (batched deletes). Default `false`.
    #[serde(default)]
    pub repeat: bool,
}

kind!(RawSqlTasklet => dyn crate::job::Tasklet, |c, _ctx| Self::build(c));

impl RawSqlTasklet {
    /// The tasklet (it connects when it runs).
    pub fn build(self) -> SqlTasklet {
        let t = SqlTasklet::new(self.url, self.sql);
        if self.repeat {
            t.batch(BatchLoop::default())
        } else {
            t
        }
    }
}

/// Repeating a statement until it affects no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLoop {
    /// Pause between batches (lets replicas and other writers keep up).
    pub pause: Duration,
    /// Stop with an error after this many batches (a statement that never runs
    /// out of rows, e.g. an `UPDATE` that does not change its own condition).
    pub max_batches: Option<u64>,
}

impl Default for BatchLoop {
    fn default() -> Self {
        Self {
            pause: Duration::ZERO,
            max_batches: Some(1_000_000),
        }
    }
}

/// Runs SQL on SQLite, PostgreSQL or MySQL.
///
/// Without [`batch`](Self::batch), `sql` (one statement, or several separated by
/// `;`) runs once; the exit message is `N rows affected`. With it, `sql` must
/// affect a bounded number of rows per run, for example
/// `DELETE FROM t WHERE id IN (SELECT id FROM t WHERE ts < '2020-01-01' LIMIT 1000)`
/// (MySQL: `DELETE FROM t WHERE ts < '2020-01-01' LIMIT 1000`); it runs again, each
/// time in its own transaction, until it affects no row, and the exit message is
/// `N rows affected in K batches`. Rows of batches committed before a failure stay
/// deleted: the statement is naturally resumable.
#[derive(Debug, Clone)]
pub struct SqlTasklet {
    /// Database URL (`sqlite:…`, `postgres://…`, `mysql://…`).
    pub url: String,
    /// The statement(s).
    pub sql: String,
    /// Repeat until no row is affected.
    pub batch: Option<BatchLoop>,
}

impl SqlTasklet {
    /// Runs `sql` once on `url`.
    pub fn new(url: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            sql: sql.into(),
            batch: None,
        }
    }

    /// Repeats the statement until it affects no row.
    #[must_use]
    pub fn batch(mut self, batch: BatchLoop) -> Self {
        self.batch = Some(batch);
        self
    }

    async fn run_once(db: &Db, sql: &str, in_tx: bool) -> Result<u64, sqlx::Error> {
        if in_tx {
            let mut tx = db.begin().await?;
            let n = tx.execute_script(sql).await?;
            tx.commit().await?;
            Ok(n)
        } else {
            db.execute_script(sql).await
        }
    }

    async fn run(&self, db: &Db) -> Result<String, TaskletError> {
        let Some(batch) = self.batch else {
            let n = Self::run_once(db, &self.sql, false)
                .await
                .map_err(TaskletError::Sql)?;
            return Ok(format!("{n} rows affected"));
        };
        let (mut total, mut batches) = (0u64, 0u64);
        loop {
            let n = Self::run_once(db, &self.sql, true)
                .await
                .map_err(|source| TaskletError::SqlBatch {
                    batch: batches + 1,
                    rows: total,
                    done: batches,
                    source,
                })?;
            if n == 0 {
                return Ok(format!("{total} rows affected in {batches} batches"));
            }
            total += n;
            batches += 1;
            tracing::debug!(batches, rows = total, "SQL batch committed");
            if batch.max_batches.is_some_and(|m| batches >= m) {
                return Err(TaskletError::TooManyBatches {
                    batches,
                    rows: total,
                });
            }
            if !batch.pause.is_zero() {
                tokio::time::sleep(batch.pause).await;
            }
        }
    }
}

#[async_trait]
impl Tasklet for SqlTasklet {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        let settings = ConnectSettings::new().acquire_timeout(DEFAULT_CONNECT_TIMEOUT);
        let db = Db::connect(&self.url, &settings)
            .await
            .map_err(TaskletError::Connect)?;
        let res = self.run(&db).await;
        db.close().await;
        res
    }
}
