//! [`RowCleanup`]: rows older than a retention deleted, or archived then deleted,
//! in bounded batches.
//!
//! Each batch is one short transaction (never one long lock over the table),
//! followed by a pause. Batches committed before a failure stay done, so the
//! tasklet is naturally restartable: a rerun finds only what is left.
//!
//! - **Delete**: SQLite `DELETE … WHERE rowid IN (SELECT rowid … LIMIT n)`,
//!   PostgreSQL the same over `ctid` with `FOR UPDATE SKIP LOCKED` (rows other
//!   transactions hold are left for the next batch), MySQL/MariaDB `DELETE …
//!   ORDER BY … LIMIT n`.
//! - **Archive to a table**: PostgreSQL in one statement (`WITH moved AS (DELETE
//!   … RETURNING *) INSERT INTO archive SELECT * FROM moved`); SQLite in one
//!   write transaction (no other writer can change the set between the copy and
//!   the delete); MySQL/MariaDB locks the batch's rows (`SELECT … FOR UPDATE`),
//!   copies and deletes them in key order, and rolls back when the two counts
//!   differ.
//! - **Archive to a file**: the batch is read, appended to the file as JSON
//!   lines and synced, then deleted in a transaction that also records the
//!   file's new length in `sluice_cleanup_state`. On start, a file longer than
//!   its recorded length lost its delete in a crash: it is cut back to that
//!   length, and the rows (still in the table) are archived again, once.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sluice_sql::{
    Arg, ConnectSettings, Db, DbKind, Statement, dialect, push_placeholder, quote_ident, quote_path,
};

use crate::api::Reader;
use crate::job::{Tasklet, TaskletError};
use crate::model::StepCounts;
use crate::readers::SqlReader;
use crate::readers::sql::DEFAULT_CONNECT_TIMEOUT;

/// What the age column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeColumn {
    /// A date-time (`timestamp`, `timestamptz`, `DATETIME`; on SQLite, text
    /// `YYYY-MM-DD HH:MM:SS` in UTC).
    Timestamp,
    /// Seconds since 1970.
    UnixSeconds,
    /// Milliseconds since 1970.
    UnixMillis,
}

/// Where removed rows are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archive {
    /// Another table of the same database, with the same columns.
    Table(String),
    /// A JSON-lines file.
    File(PathBuf),
}

/// Deletes (or archives, then deletes) rows older than a retention, in
/// batches; see the module doc. Built by [`RawCleanupTasklet`](super::RawCleanupTasklet).
#[derive(Debug, Clone)]
pub struct RowCleanup {
    pub(super) url: String,
    pub(super) table: String,
    pub(super) column: String,
    pub(super) column_type: AgeColumn,
    pub(super) older_than: Duration,
    pub(super) age_text: String,
    pub(super) condition: Option<String>,
    pub(super) batch: u64,
    pub(super) pause: Duration,
    pub(super) archive: Option<Archive>,
    pub(super) key: Vec<String>,
    pub(super) dry_run: bool,
    pub(super) max_batches: u64,
    pub(super) counts: StepCounts,
}

/// The state table of file archives.
const STATE_TABLE: &str = "sluice_cleanup_state";

fn sql_err(what: &str) -> impl Fn(sqlx::Error) -> TaskletError + '_ {
    move |e| TaskletError::Failed(format!("{what}: {}", sluice_sql::describe(&e)))
}

impl RowCleanup {
    fn quoted_table(&self, d: DbKind, name: &str) -> String {
        let parts: Vec<&str> = name.split('.').collect();
        quote_path(d, &parts)
    }

    /// The age test with the cutoff as a literal (computed here from a number,
    /// so it is never text from outside), ANDed with `where`.
    fn condition(&self, d: DbKind, now_ms: i64) -> String {
        let col = quote_ident(d, &self.column);
        let cutoff_ms = now_ms - self.older_than.as_millis() as i64;
        let age = match self.column_type {
            AgeColumn::UnixSeconds => format!("{col} < {}", cutoff_ms.div_euclid(1000)),
            AgeColumn::UnixMillis => format!("{col} < {cutoff_ms}"),
            AgeColumn::Timestamp => {
                let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(cutoff_ms)
                    .unwrap_or_default()
                    .format("%Y-%m-%d %H:%M:%S");
                match d {
                    DbKind::Postgres => format!("{col} < CAST('{t}+00' AS timestamptz)"),
                    DbKind::MySql => format!("{col} < CAST('{t}' AS DATETIME)"),
                    DbKind::Sqlite => format!("{col} < '{t}'"),
                }
            }
        };
        match &self.condition {
            Some(c) if !c.trim().is_empty() => format!("{age} AND ({c})"),
            _ => age,
        }
    }

    fn order(&self, d: DbKind) -> String {
        std::iter::once(&self.column)
            .chain(&self.key)
            .map(|c| quote_ident(d, c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What identifies a row in a batch: the key, or SQLite's `rowid` / PostgreSQL's `ctid`.
    fn row_id(&self, d: DbKind) -> String {
        if self.key.is_empty() {
            match d {
                DbKind::Postgres => "ctid".into(),
                _ => "rowid".into(),
            }
        } else {
            let k: Vec<String> = self.key.iter().map(|c| quote_ident(d, c)).collect();
            format!("({})", k.join(", "))
        }
    }

    /// One batch of delete or archive-to-table; rows removed.
    async fn batch_in_db(&self, db: &Db, cond: &str) -> Result<u64, TaskletError> {
        let d = db.kind();
        let t = self.quoted_table(d, &self.table);
        let (order, n, id) = (self.order(d), self.batch, self.row_id(d));
        let pick = match d {
            DbKind::Postgres => format!(
                "SELECT {id} FROM {t} WHERE {cond} ORDER BY {order} LIMIT {n} FOR UPDATE SKIP LOCKED"
            ),
            _ => format!("SELECT {id} FROM {t} WHERE {cond} ORDER BY {order} LIMIT {n}"),
        };
        let delete = match d {
            DbKind::MySql => format!("DELETE FROM {t} WHERE {cond} ORDER BY {order} LIMIT {n}"),
            _ => format!("DELETE FROM {t} WHERE {id} IN ({pick})"),
        };
        let archive = match &self.archive {
            Some(Archive::Table(a)) => Some(self.quoted_table(d, a)),
            _ => None,
        };
        let mut tx = match d {
            DbKind::Sqlite => db.begin_write().await,
            _ => db.begin().await,
        }
        .map_err(sql_err("starting a batch"))?;
        let removed = match (&archive, d) {
            (None, _) => tx
                .execute(&Statement::new(delete))
                .await
                .map_err(sql_err("deleting a batch"))?,
            (Some(a), DbKind::Postgres) => tx
                .execute(&Statement::new(format!(
                    "WITH moved AS ({delete} RETURNING *) INSERT INTO {a} SELECT * FROM moved"
                )))
                .await
                .map_err(sql_err("archiving a batch"))?,
            (Some(a), _) => {
                if d == DbKind::MySql {
                    // Lock the batch (and, with an index on the age column, the
                    // range before it) so that the copy and the delete see one set.
                    tx.fetch_all(&Statement::new(format!("{pick} FOR UPDATE")))
                        .await
                        .map_err(sql_err("locking a batch"))?;
                }
                let copy = match d {
                    DbKind::MySql => format!(
                        "INSERT INTO {a} SELECT * FROM {t} WHERE {cond} ORDER BY {order} LIMIT {n}"
                    ),
                    _ => format!("INSERT INTO {a} SELECT * FROM {t} WHERE {id} IN ({pick})"),
                };
                let copied = tx
                    .execute(&Statement::new(copy))
                    .await
                    .map_err(sql_err("copying a batch to the archive table"))?;
                let deleted = tx
                    .execute(&Statement::new(delete))
                    .await
                    .map_err(sql_err("deleting an archived batch"))?;
                if copied != deleted {
                    return Err(TaskletError::Failed(format!(
                        "a batch copied {copied} rows to the archive but would delete {deleted}; rolled back (is the key unique?)"
                    )));
                }
                deleted
            }
        };
        tx.commit().await.map_err(sql_err("committing a batch"))?;
        Ok(removed)
    }

    /// The file archive's committed length, after cutting off an append whose
    /// delete did not commit.
    async fn file_state(&self, db: &Db, file: &PathBuf) -> Result<u64, TaskletError> {
        let d = db.kind();
        db.execute(&Statement::new(format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (name VARCHAR(255) PRIMARY KEY, file_len BIGINT NOT NULL)"
        )))
        .await
        .map_err(sql_err("creating sluice_cleanup_state"))?;
        let name = file.display().to_string();
        let sql = dialect(
            d,
            &format!("SELECT file_len FROM {STATE_TABLE} WHERE name = ?"),
        );
        let rows = db
            .fetch_all(&Statement::new(sql).bind(name.as_str()))
            .await
            .map_err(sql_err("reading sluice_cleanup_state"))?;
        let on_disk = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let recorded = match rows.first() {
            Some(r) => Some(
                r.get_at::<i64>(0)
                    .map_err(sql_err("reading sluice_cleanup_state"))? as u64,
            ),
            None => None,
        };
        let len = match recorded {
            Some(len) if on_disk > len => {
                tracing::warn!(file = %name, on_disk, committed = len,
                    "the archive file holds rows whose delete did not commit; cutting it back");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(file)
                    .map_err(|e| TaskletError::Failed(format!("opening {name}: {e}")))?;
                f.set_len(len)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| TaskletError::Failed(format!("truncating {name}: {e}")))?;
                len
            }
            Some(len) if on_disk == len => len,
            _ => {
                // New, or shorter than recorded (rotated away): start from what is there.
                let st = dialect(d, &format!("DELETE FROM {STATE_TABLE} WHERE name = ?"));
                db.execute(&Statement::new(st).bind(name.as_str()))
                    .await
                    .map_err(sql_err("writing sluice_cleanup_state"))?;
                let ins = dialect(
                    d,
                    &format!("INSERT INTO {STATE_TABLE} (name, file_len) VALUES (?, ?)"),
                );
                db.execute(&Statement::new(ins).bind(name.as_str()).bind(on_disk as i64))
                    .await
                    .map_err(sql_err("writing sluice_cleanup_state"))?;
                on_disk
            }
        };
        Ok(len)
    }

    /// One batch archived to `file` then deleted: (rows read, rows deleted).
    async fn batch_to_file(
        &self,
        db: &Db,
        cond: &str,
        file: &PathBuf,
    ) -> Result<(u64, u64), TaskletError> {
        let d = db.kind();
        let t = self.quoted_table(d, &self.table);
        let mut reader = SqlReader::query(
            self.url.clone(),
            format!("{t} WHERE {cond}"),
            self.key.clone(),
        )
        .page_size(self.batch as usize);
        reader
            .open(None)
            .await
            .map_err(|e| TaskletError::Failed(format!("reading a batch: {e}")))?;
        let mut items = Vec::new();
        while (items.len() as u64) < self.batch {
            match reader.read().await {
                Ok(Some(r)) => items.push(r.item),
                Ok(None) => break,
                Err(e) => return Err(TaskletError::Failed(format!("reading a batch: {e}"))),
            }
        }
        if items.is_empty() {
            return Ok((0, 0));
        }
        let name = file.display().to_string();
        let mut out = Vec::new();
        for it in &items {
            serde_json::to_writer(&mut out, it).map_err(|e| TaskletError::Failed(e.to_string()))?;
            out.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| TaskletError::Failed(format!("opening {name}: {e}")))?;
        f.write_all(&out)
            .and_then(|()| f.sync_data())
            .map_err(|e| TaskletError::Failed(format!("appending to {name}: {e}")))?;
        let new_len = f
            .metadata()
            .map_err(|e| TaskletError::Failed(format!("{name}: {e}")))?
            .len();
        // Delete by key, and record the file's length, in one transaction.
        let keys: Vec<String> = self.key.iter().map(|c| quote_ident(d, c)).collect();
        let mut sql = format!("DELETE FROM {t} WHERE ({}) IN (", keys.join(", "));
        let mut st_args = Vec::with_capacity(items.len() * keys.len());
        let mut n = 0;
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (j, k) in self.key.iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                push_placeholder(&mut sql, d, n);
                st_args.push(match it.get(k) {
                    Some(Value::Number(v)) if v.as_i64().is_some() => {
                        Arg::I64(v.as_i64().unwrap_or(0))
                    }
                    Some(Value::String(s)) => Arg::Text(s.clone()),
                    other => {
                        return Err(TaskletError::Failed(format!(
                            "key column {k:?} holds {}; archive_file needs integer or text keys",
                            other.map_or("nothing".to_owned(), Value::to_string)
                        )));
                    }
                });
            }
            sql.push(')');
        }
        sql.push(')');
        let mut st = Statement::new(sql);
        for a in st_args {
            st = st.bind(a);
        }
        let upd = dialect(
            d,
            &format!("UPDATE {STATE_TABLE} SET file_len = ? WHERE name = ?"),
        );
        let mut tx = match d {
            DbKind::Sqlite => db.begin_write().await,
            _ => db.begin().await,
        }
        .map_err(sql_err("starting a batch"))?;
        let deleted = tx
            .execute(&st)
            .await
            .map_err(sql_err("deleting an archived batch"))?;
        tx.execute(&Statement::new(upd).bind(new_len as i64).bind(name.as_str()))
            .await
            .map_err(sql_err("recording the archive's length"))?;
        tx.commit().await.map_err(sql_err("committing a batch"))?;
        Ok((items.len() as u64, deleted))
    }

    async fn run(&mut self, db: &Db) -> Result<String, TaskletError> {
        let d = db.kind();
        let now = chrono::Utc::now().timestamp_millis();
        let cond = self.condition(d, now);
        let table = &self.table;
        let age = self.age_text.clone();
        if self.dry_run {
            let t = self.quoted_table(d, table);
            let rows = db
                .fetch_all(&Statement::new(format!(
                    "SELECT COUNT(*) FROM {t} WHERE {cond}"
                )))
                .await
                .map_err(sql_err("counting rows"))?;
            let n = rows
                .first()
                .map(|r| r.get_at::<i64>(0))
                .transpose()
                .map_err(sql_err("counting rows"))?
                .unwrap_or(0) as u64;
            self.counts.read = n;
            return Ok(format!(
                "dry run: {n} rows of {table} older than {age} would be {}",
                match &self.archive {
                    None => "deleted".to_owned(),
                    Some(Archive::Table(a)) => format!("moved to {a}"),
                    Some(Archive::File(f)) => format!("archived to {} and deleted", f.display()),
                }
            ));
        }
        if let Some(Archive::File(f)) = &self.archive {
            let f = f.clone();
            self.file_state(db, &f).await?;
        }
        let mut batches = 0u64;
        loop {
            let (read, removed) = match &self.archive {
                Some(Archive::File(f)) => {
                    let f = f.clone();
                    self.batch_to_file(db, &cond, &f).await?
                }
                _ => {
                    let n = self.batch_in_db(db, &cond).await?;
                    (n, n)
                }
            };
            if read == 0 {
                break;
            }
            batches += 1;
            self.counts.read += read;
            self.counts.written += removed;
            self.counts.commits += 1;
            tracing::debug!(table = %table, batches, removed = self.counts.written, "cleanup batch committed");
            if batches >= self.max_batches {
                return Err(TaskletError::TooManyBatches {
                    batches,
                    rows: self.counts.written,
                });
            }
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
        }
        let n = self.counts.written;
        Ok(match &self.archive {
            None => format!("deleted {n} rows of {table} older than {age} in {batches} batches"),
            Some(Archive::Table(a)) => {
                format!("moved {n} rows of {table} older than {age} to {a} in {batches} batches")
            }
            Some(Archive::File(f)) => format!(
                "archived {n} rows of {table} older than {age} to {} and deleted them, in {batches} batches",
                f.display()
            ),
        })
    }
}

#[async_trait]
impl Tasklet for RowCleanup {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        self.counts = StepCounts::default();
        let settings = ConnectSettings::new().acquire_timeout(DEFAULT_CONNECT_TIMEOUT);
        let db = Db::connect(&self.url, &settings)
            .await
            .map_err(TaskletError::Connect)?;
        let res = self.run(&db).await;
        db.close().await;
        res.map_err(|e| match e {
            TaskletError::Failed(m) if self.counts.written > 0 => TaskletError::Failed(format!(
                "{m} (after {} rows removed in {} committed batches, which stay removed)",
                self.counts.written, self.counts.commits
            )),
            e => e,
        })
    }

    fn counts(&self) -> Option<StepCounts> {
        Some(self.counts)
    }
}
