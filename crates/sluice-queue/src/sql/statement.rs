//! The statement templates the broker writes once for both databases (`{now}`,
//! `{lock}`, `{token}`, `{columns}`) and the transaction they run in.

use super::*;

/// PostgreSQL's clock in milliseconds. A scalar sub-select is evaluated once per
/// statement (an init plan), so it can bound an index scan.
pub(super) const PG_NOW: &str = "(SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)";

impl SqlBroker {
    /// Begins a writing transaction. On SQLite it takes the database's write lock
    /// at once (waiting up to the busy timeout), so that it never reads a snapshot
    /// it then fails to upgrade, and reads the clock once the lock is held.
    pub(super) async fn begin(&self) -> Result<Tx<'_>, QueueError> {
        let inner = self.pool.writer.begin_write().await.map_err(self.err())?;
        let now = (self.dialect() == DbKind::Sqlite).then(|| self.clock.now_millis());
        Ok(Tx {
            inner,
            now,
            broker: self,
        })
    }

    /// The time a statement outside a transaction runs at: SQLite's clock (bound
    /// for `{now}`), or 0 on PostgreSQL (which reads its own).
    pub(super) fn statement_now(&self) -> UnixMillis {
        match self.dialect() {
            DbKind::Sqlite => self.clock.now_millis(),
            _ => 0,
        }
    }

    /// Runs one statement outside a transaction; `write` picks SQLite's writer.
    pub(super) async fn fetch_all(&self, write: bool, q: Q) -> Result<Vec<Row>, QueueError> {
        let pool = if write {
            &self.pool.writer
        } else {
            &self.pool.reader
        };
        let st = q.render(self.dialect(), self.statement_now());
        pool.fetch_all(&st).await.map_err(self.err())
    }

    /// Runs one writing statement outside a transaction; returns rows affected.
    pub(super) async fn execute(&self, q: Q) -> Result<u64, QueueError> {
        let st = q.render(self.dialect(), self.statement_now());
        self.pool.writer.execute(&st).await.map_err(self.err())
    }
}

/// A statement template and its arguments. The template's `{now}` is the current
/// time in ms, `{lock}` PostgreSQL's `FOR UPDATE SKIP LOCKED`, `{token}` a fresh
/// random token per row and `{columns}` the task columns.
pub(super) struct Q {
    pub(super) sql: String,
    pub(super) args: Vec<Arg>,
}

impl Q {
    pub(super) fn new(sql: impl Into<String>) -> Self {
        Q {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub(super) fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The statement for `dialect`; on SQLite `now` is bound after the other
    /// arguments.
    pub(super) fn render(self, dialect: DbKind, now: UnixMillis) -> Statement<'static> {
        let Q { sql, mut args } = self;
        let mut sql = sql.replace("{columns}", COLUMNS);
        match dialect {
            DbKind::Sqlite | DbKind::MySql => {
                if sql.contains("{now}") {
                    sql = sql.replace("{now}", &format!("${}", args.len() + 1));
                    args.push(Arg::I64(now));
                }
                sql = sql
                    .replace("{lock}", "")
                    .replace("{token}", "lower(hex(randomblob(16)))");
            }
            DbKind::Postgres => {
                sql = sql
                    .replace("{now}", PG_NOW)
                    .replace("{lock}", " FOR UPDATE SKIP LOCKED")
                    .replace("{token}", "replace(gen_random_uuid()::text, '-', '')");
            }
        }
        Statement {
            sql: sql.into(),
            args,
        }
    }
}

/// A writing transaction.
pub(super) struct Tx<'b> {
    pub(super) inner: sluice_sql::Tx,
    /// The time of the transaction: SQLite's clock when it began, PostgreSQL's
    /// once asked for.
    pub(super) now: Option<UnixMillis>,
    pub(super) broker: &'b SqlBroker,
}

impl Tx<'_> {
    /// The transaction's time (one round trip on PostgreSQL, the first time).
    pub(super) async fn now(&mut self) -> Result<UnixMillis, QueueError> {
        if let Some(now) = self.now {
            return Ok(now);
        }
        let rows = self.fetch_all(Q::new("SELECT {now} AS now_ms")).await?;
        let now = match rows.first() {
            Some(r) => r.col("now_ms", self.broker.dialect().as_str())?,
            None => self.broker.clock.now_millis(),
        };
        self.now = Some(now);
        Ok(now)
    }

    pub(super) async fn execute(&mut self, q: Q) -> Result<u64, QueueError> {
        let st = q.render(self.inner.kind(), self.now.unwrap_or_default());
        self.inner.execute(&st).await.map_err(self.broker.err())
    }

    pub(super) async fn fetch_all(&mut self, q: Q) -> Result<Vec<Row>, QueueError> {
        let st = q.render(self.inner.kind(), self.now.unwrap_or_default());
        self.inner.fetch_all(&st).await.map_err(self.broker.err())
    }

    pub(super) async fn commit(self) -> Result<(), QueueError> {
        self.inner.commit().await.map_err(self.broker.err())
    }
}

/// Reading a column of a task row, its errors as the broker's.
pub(super) trait Col {
    fn col<T: Decodable>(&self, column: &str, broker: &'static str) -> Result<T, QueueError>;
}

impl Col for Row {
    fn col<T: Decodable>(&self, column: &str, broker: &'static str) -> Result<T, QueueError> {
        self.get(column).map_err(|e| QueueError::Unavailable {
            broker,
            message: format!("reading column {column}: {e}"),
        })
    }
}
