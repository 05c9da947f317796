//! [`SqlWriter`]: chunked upserts (or appends) into SQLite, PostgreSQL and
//! MySQL/MariaDB.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sluice_sql::{
    ConnectSettings, Db, DbKind, DbUrl, ErrorClass, Journal, SqlError, on_db, quote_ident as quote,
    quote_path,
};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlArguments};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, Connection, Database, Encode, Executor, Row, Type};

use super::ident::{check_ident, check_table, check_type, derived_name};
use crate::api::{Chunk, ChunkForm, Committed, Rows, SqlStatement, WriteError, Writer};

mod cells;
mod checkpoint;
mod config;
mod copy;
#[macro_use]
mod multirow;
mod plan;
mod postgres;
#[cfg(test)]
mod tests;

use cells::{Cell, Cells, Src};
pub use checkpoint::CHECKPOINT_TABLE;
pub use config::{RawSqlAppendWriter, RawSqlUpsertWriter};
use copy::copy_in;
use multirow::{bind_rows, canonical_int, run_extra};
use postgres::{ArrayType, pg_text};

/// At most this many rows per SQLite statement (a chunk of more takes several,
/// in one transaction).
const SQLITE_STATEMENT_ROWS: usize = 1000;

/// From this many rows on, a PostgreSQL upsert chunk is written in bulk (`COPY`,
/// or one `MERGE` from arrays) rather than with multi-row `INSERT … VALUES`.
const DEFAULT_PG_BULK_MIN_ROWS: usize = 2;

/// How a [`SqlWriter`] treats rows whose key already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Insert, or update the non-key columns of the row with the same key
    /// (`ON CONFLICT … DO UPDATE` / `ON DUPLICATE KEY UPDATE`). Re-writing a chunk
    /// is idempotent. Without a key it is a plain insert.
    #[default]
    Upsert,
    /// Plain inserts (on PostgreSQL: one `COPY … FROM STDIN` per chunk); a
    /// duplicate key is an item error.
    Append,
}

/// A declared column of the target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name (and the item key it is read from).
    pub name: String,
    /// Its SQL type as written in `CREATE TABLE`: `TEXT`, `BIGINT`,
    /// `DOUBLE PRECISION`, `TIMESTAMP`, `BOOLEAN`, `JSONB`, `VARCHAR(40)`, …
    pub sql_type: String,
    /// Whether it may be NULL (key columns never are).
    pub nullable: bool,
}

impl Column {
    /// A nullable column.
    pub fn new(name: impl Into<String>, sql_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sql_type: sql_type.into(),
            nullable: true,
        }
    }

    /// The same column, `NOT NULL`.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// What a [`SqlWriter`] writes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlWriterOptions {
    /// The target table, `table` or `schema.table`.
    pub table: String,
    /// The conflict key (the primary key when the writer creates the table);
    /// empty: plain inserts.
    pub key: Vec<String>,
    /// The columns, in order. `None`: the keys of the first item written, typed
    /// `TEXT` (`VARCHAR(255)` for MySQL key and index columns). Item keys that are
    /// not columns are ignored; columns an item lacks are written as NULL.
    pub columns: Option<Vec<Column>>,
    /// `CREATE TABLE IF NOT EXISTS` (with the declared types, `NOT NULL`s,
    /// `PRIMARY KEY (key)` and [`indexes`](Self::indexes)) before the first chunk.
    pub create: bool,
    /// Secondary indexes created with the table, each a list of columns.
    pub indexes: Vec<Vec<String>>,
    /// Upsert or append.
    pub mode: WriteMode,
    /// At most this many bind parameters per statement (default and ceiling: the
    /// database's limit, [`DbKind::max_params`]). Larger chunks are split into
    /// several statements of the same transaction.
    pub max_params: Option<usize>,
    /// On PostgreSQL, upsert chunks of fewer rows than this are written with
    /// multi-row `INSERT … VALUES … ON CONFLICT`, split at the parameter limit;
    /// larger ones in bulk, with one statement whatever their size (see
    /// [`SqlWriter`]). `None`: 2, so only single items take the multi-row path.
    pub pg_bulk_min_rows: Option<usize>,
}

impl SqlWriterOptions {
    /// Upserts into `table`, columns from the first item, no key (plain inserts)
    /// until [`key`](Self::key) is set.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            key: Vec::new(),
            columns: None,
            create: false,
            indexes: Vec::new(),
            mode: WriteMode::Upsert,
            max_params: None,
            pg_bulk_min_rows: None,
        }
    }

    /// Sets the conflict key.
    pub fn key<S: Into<String>>(mut self, key: impl IntoIterator<Item = S>) -> Self {
        self.key = key.into_iter().map(Into::into).collect();
        self
    }

    /// Declares the columns.
    pub fn columns(mut self, columns: Vec<Column>) -> Self {
        self.columns = Some(columns);
        self
    }

    /// Creates the table if it does not exist.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Adds a secondary index (created with the table).
    pub fn index<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.indexes
            .push(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Caps the bind parameters per statement.
    pub fn max_params(mut self, max: usize) -> Self {
        self.max_params = Some(max);
        self
    }
}

/// One column as written.
#[derive(Debug, Clone)]
struct PlanCol {
    pub(super) name: String,
    pub(super) quoted: String,
    /// PostgreSQL: the type values (sent as text) are cast to.
    pub(super) cast: String,
    /// A JSON column: every value is written as its JSON text.
    pub(super) json: bool,
    /// SQLite: the table's column has INTEGER affinity (its declared type
    /// contains `INT`), so a string that is an integer in canonical form (what
    /// SQLite would turn it into and back) is bound as that integer: the same
    /// value stored, with no text to copy and convert.
    pub(super) int_affinity: bool,
}

/// The columns and statements of the target, known once the columns are.
#[derive(Debug)]
struct Plan {
    pub(super) cols: Vec<PlanCol>,
    /// Indexes into `cols` of the conflict key, when upserting with one.
    pub(super) upsert_key: Vec<usize>,
    /// `INSERT … VALUES` statements by row count.
    pub(super) inserts: HashMap<usize, Arc<str>>,
    /// PostgreSQL `UNNEST` statements by array types and `MERGE` or not.
    pub(super) unnest: UnnestCache,
}

/// PostgreSQL `UNNEST` statements by array types and `MERGE` or not.
type UnnestCache = Mutex<HashMap<(Vec<ArrayType>, bool), Arc<str>>>;

/// Connections kept from one chunk to the next (no pool round trip per chunk).
#[derive(Default)]
struct Held {
    sqlite: Option<PoolConnection<Sqlite>>,
    pg: Option<PoolConnection<Postgres>>,
    mysql: Option<PoolConnection<MySql>>,
}

/// Writes chunks into a table of SQLite, PostgreSQL or MySQL/MariaDB, each chunk
/// all or nothing.
///
/// # Statements
///
/// - **SQLite** and **MySQL/MariaDB**: multi-row `INSERT … VALUES (…), (…)` with
///   `ON CONFLICT (key) DO UPDATE SET c = excluded.c` (SQLite) or
///   `ON DUPLICATE KEY UPDATE c = VALUES(c)` (MySQL), as many rows per statement
///   as the bind-parameter limit allows ([`DbKind::max_params`], or
///   [`SqlWriterOptions::max_params`]; on MySQL also half of
///   `max_allowed_packet`). A chunk that takes one statement runs it on its own
///   (a statement is atomic); one that takes several runs them in one
///   transaction.
/// - **PostgreSQL**: in [`WriteMode::Append`] (or without a key), one
///   `COPY … FROM STDIN` per chunk. Upserts first try the same `COPY` (new keys
///   are usually new rows, and `COPY` is the fastest way in); when a key exists
///   it fails as a whole, and the chunk is written with one
///   `MERGE … USING (SELECT … FROM UNNEST($1::int8[], $2::text[], …))`
///   (`INSERT … SELECT … FROM UNNEST(…) ON CONFLICT` before PostgreSQL 15, or
///   when a concurrent writer inserts a key in between); after such a failure
///   the next 1, 2, 4, … 64 chunks skip the `COPY`, so that an update-heavy
///   load rarely pays for it (each failed `COPY` leaves one duplicate-key line in
///   the server's log). Single items use multi-row `INSERT … VALUES`.
///   Duplicate keys within a chunk keep the last item, as writing the items in
///   turn would.
///
/// # Values
///
/// Values are bound with their JSON types: strings as text, integers as `i64`,
/// floats as `f64`, booleans, `null` (or a missing key) as NULL, arrays and
/// objects as JSON text; every value of a JSON-typed column as its JSON text. On
/// PostgreSQL, integer, float and boolean columns whose values all have the
/// matching JSON type go as typed arrays; everything else goes as text with an
/// explicit cast to the column's type (`$1::bigint`), so that the server parses
/// a numeric string into a numeric column, as `COPY` does. Identifiers are
/// validated and quoted; values are never put into SQL text.
///
/// # Connections
///
/// The writer keeps one connection from chunk to chunk (from a small pool that
/// replaces it when it breaks). A SQLite database the writer creates is put in
/// WAL mode (one sync per commit); an existing one keeps its journal mode.
/// MySQL sessions run in strict mode (`STRICT_ALL_TABLES`), so that a bad value
/// is refused rather than truncated with a warning.
///
/// # Errors
///
/// A constraint or data error is [`WriteError::Item`] (the step re-writes the
/// chunk item by item); a lost connection, pool timeout, deadlock or lock
/// timeout is [`WriteError::Transient`]; anything else (missing table, bad SQL
/// type) is [`WriteError::Fatal`], with the database's message and the table.
pub struct SqlWriter {
    url: String,
    kind: DbKind,
    connect: DbUrl,
    options: SqlWriterOptions,
    table_q: String,
    table_parts: Vec<String>,
    max_params: usize,
    pool: Option<Db>,
    plan: Option<Plan>,
    /// PostgreSQL: `(cast type, is json)` by column name, from the catalog.
    pg_types: HashMap<String, (String, bool)>,
    /// SQLite: the declared type of each column of the table, by name.
    sqlite_types: HashMap<String, String>,
    /// MySQL: the byte budget of one statement (half of `max_allowed_packet`).
    max_bytes: usize,
    /// PostgreSQL 15 or later: upsert with `MERGE`.
    pg_merge: bool,
    /// PostgreSQL upserts: chunks to go before trying `COPY` first again.
    pg_copy_skip: u32,
    /// PostgreSQL upserts: how many chunks to skip after the next failed `COPY`.
    pg_copy_backoff: u32,
    held: Held,
    statements: u64,
    /// `sluice_checkpoint` is known to exist in the target.
    checkpoint_table: bool,
}

impl fmt::Debug for SqlWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlWriter")
            .field("kind", &self.kind)
            .field("table", &self.options.table)
            .field("mode", &self.options.mode)
            .field("key", &self.options.key)
            .field("open", &self.pool.is_some())
            .finish_non_exhaustive()
    }
}

impl SqlWriter {
    /// A writer to the database at `url` (`sqlite://path.db`, created if missing;
    /// `postgres://…`; `mysql://…`). Checks the URL, the identifiers and the types
    /// without connecting: it connects in [`Writer::open`].
    ///
    /// # Errors
    ///
    /// [`WriteError::Fatal`] for an unknown scheme, a malformed URL, an invalid
    /// table, column, key or index name or SQL type, or inconsistent options.
    pub fn new(url: &str, options: SqlWriterOptions) -> Result<Self, WriteError> {
        let connect = DbUrl::parse(url).map_err(|e| match e {
            SqlError::UnsupportedUrl { .. } => WriteError::Fatal(format!(
                "sql writer: unsupported database URL scheme in {:?}: use sqlite://, postgres:// or mysql://",
                sluice_core::redact_url(url)
            )),
            other => WriteError::Fatal(format!("sql writer: {other}")),
        })?;
        let kind = connect.kind();
        let table_parts = check_table(&options.table).map_err(fatal)?;
        validate_options(&options).map_err(fatal)?;
        let max_params = options
            .max_params
            .unwrap_or(usize::MAX)
            .min(kind.max_params());
        if let Some(cols) = &options.columns
            && cols.len() > max_params
        {
            return Err(fatal(format!(
                "table {}: {} columns exceed the {max_params} bind parameters of one statement",
                options.table,
                cols.len()
            )));
        }
        Ok(Self {
            url: url.to_owned(),
            kind,
            connect,
            table_q: quote_path(kind, &table_parts),
            table_parts,
            max_params,
            options,
            pool: None,
            plan: None,
            pg_types: HashMap::new(),
            sqlite_types: HashMap::new(),
            max_bytes: usize::MAX,
            pg_merge: false,
            pg_copy_skip: 0,
            pg_copy_backoff: 1,
            held: Held::default(),
            statements: 0,
            checkpoint_table: false,
        })
    }

    /// Which database the writer targets.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The database URL as given (it may hold a password: log
    /// [`redacted_url`](Self::redacted_url) instead).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        sluice_core::redact_url(&self.url)
    }

    /// The target table as configured.
    pub fn table(&self) -> &str {
        &self.options.table
    }

    /// The options.
    pub fn options(&self) -> &SqlWriterOptions {
        &self.options
    }

    /// The number of data statements (multi-row `INSERT`s, `COPY`s, merges) run so
    /// far, committed or not.
    pub fn statements(&self) -> u64 {
        self.statements
    }

    /// Closes the connection pool (it is opened again on the next write).
    pub async fn close(&mut self) {
        self.held = Held::default();
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
    }

    fn err(&self, e: sqlx::Error) -> WriteError {
        map_sqlx_error(&self.options.table, e)
    }

    async fn connect(&mut self) -> Result<(), WriteError> {
        if self.pool.is_some() {
            return Ok(());
        }
        let settings = writer_connect_settings(self.kind);
        let pool = self
            .connect
            .connect(&self.url, &settings)
            .await
            .map_err(|e| map_sql_error(&self.options.table, e))?;
        if let Db::Postgres(p) = &pool {
            let version: String = sqlx::query_scalar("SHOW server_version_num")
                .fetch_one(p)
                .await
                .map_err(|e| self.err(e))?;
            self.pg_merge = version.trim().parse::<u32>().is_ok_and(|v| v >= 150_000);
        }
        if let Db::MySql(p) = &pool {
            let packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
                .fetch_one(p)
                .await
                .map_err(|e| self.err(e))?;
            self.max_bytes = usize::try_from(packet / 2)
                .unwrap_or(usize::MAX)
                .max(64 * 1024);
        }
        self.pool = Some(pool);
        Ok(())
    }

    /// Connects, and when the columns are known, creates the table and plans.
    async fn prepare(&mut self) -> Result<(), WriteError> {
        // Give the kept connection back: DDL below goes through the pool (of one
        // connection, on SQLite).
        self.held = Held::default();
        self.connect().await?;
        if self.plan.is_none()
            && let Some(cols) = self.options.columns.clone()
        {
            self.make_plan(cols).await?;
        } else if self.plan.is_none() && !self.options.create {
            self.check_table_exists().await?;
        }
        Ok(())
    }

    /// Writes a chunk, items or rows, and runs `extra` in its transaction.
    async fn write_chunk(
        &mut self,
        chunk: Chunk<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let objects: Vec<&Map<String, Value>>;
        let src = match chunk {
            Chunk::Items(items) => {
                objects = items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| {
                        it.as_object().ok_or_else(|| {
                            WriteError::Item(format!(
                                "table {}: item {} of the chunk is not a JSON object",
                                self.options.table,
                                i + 1
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Src::Items(&objects)
            }
            Chunk::Rows(rows) => Src::Rows(rows),
        };
        if self.plan.is_none() {
            self.plan_from_keys(src.first_keys()).await?;
        }
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let cells = Cells::new(plan, src);
        match self.kind {
            DbKind::Sqlite => {
                write_statements!(self, &cells, extra, Sqlite, SqliteArguments, sqlite)
            }
            DbKind::Postgres => self.write_postgres(cells, extra).await,
            DbKind::MySql => {
                write_statements!(self, &cells, extra, MySql, MySqlArguments, mysql)
            }
        }
    }

    /// Plans the columns the first item's keys `names` give (typed `TEXT`), when
    /// none were declared.
    async fn plan_from_keys(&mut self, names: Vec<&String>) -> Result<(), WriteError> {
        let table = &self.options.table;
        let mut cols = Vec::with_capacity(names.len());
        for name in &names {
            check_ident("column", name).map_err(|e| fatal(format!("table {table}: {e}")))?;
            cols.push(Column::new((*name).clone(), "TEXT"));
        }
        if cols.is_empty() {
            return Err(WriteError::Item(format!(
                "table {table}: the first item has no keys to take the columns from"
            )));
        }
        if cols.len() > self.max_params {
            return Err(fatal(format!(
                "table {table}: {} columns exceed the {} bind parameters of one statement",
                cols.len(),
                self.max_params
            )));
        }
        if let Some(k) = self.options.key.iter().find(|k| !names.contains(k)) {
            return Err(fatal(format!(
                "table {table}: key column {k:?} is not a key of the first item"
            )));
        }
        self.make_plan(cols).await
    }

    /// The held connection, or a new one from the pool.
    async fn acquire<DB: Database>(
        &self,
        pool: &sqlx::Pool<DB>,
        held: Option<PoolConnection<DB>>,
    ) -> Result<PoolConnection<DB>, WriteError> {
        match held {
            Some(c) => Ok(c),
            None => pool.acquire().await.map_err(|e| self.err(e)),
        }
    }

    /// Keeps the connection for the next chunk unless the error says it may be
    /// broken.
    fn keep<DB: Database>(
        result: &Result<(), WriteError>,
        conn: PoolConnection<DB>,
    ) -> Option<PoolConnection<DB>> {
        match result {
            Ok(()) | Err(WriteError::Item(_)) => Some(conn),
            Err(_) => None,
        }
    }

    fn encode_err(&self, e: BoxDynError) -> WriteError {
        encode_error(&self.options.table, e)
    }
}

#[async_trait]
impl Writer for SqlWriter {
    async fn open(&mut self, _checkpoint: Option<&Value>) -> Result<(), WriteError> {
        self.prepare().await
    }

    fn chunk_form(&self) -> ChunkForm {
        ChunkForm::Rows
    }

    fn database_url(&self) -> Option<&str> {
        Some(self.url())
    }

    fn checkpoint_store(&mut self) -> Option<&mut dyn crate::api::CheckpointStore> {
        Some(self)
    }

    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        commit: &[SqlStatement],
    ) -> Result<Committed, WriteError> {
        // `commit` is in this database's dialect: the repository's statements
        // (never MySQL) or this writer's own checkpoint store's.
        if chunk.is_empty() {
            return Ok(Committed::Separately);
        }
        if self.pool.is_none() {
            self.prepare().await?;
        }
        self.write_chunk(chunk, commit).await?;
        Ok(if commit.is_empty() {
            Committed::Separately
        } else {
            Committed::Together
        })
    }
}

fn fatal(msg: String) -> WriteError {
    WriteError::Fatal(msg)
}

fn encode_error(table: &str, e: BoxDynError) -> WriteError {
    WriteError::Item(format!("table {table}: cannot encode a value: {e}"))
}

fn not_open() -> WriteError {
    WriteError::Fatal("sql writer: not open".into())
}

fn not_planned() -> WriteError {
    WriteError::Fatal("sql writer: columns not known yet".into())
}

/// Checks every name and type in the options, and their consistency.
fn validate_options(o: &SqlWriterOptions) -> Result<(), String> {
    let t = &o.table;
    for k in &o.key {
        check_ident("key column", k).map_err(|e| format!("table {t}: {e}"))?;
    }
    for (i, k) in o.key.iter().enumerate() {
        if o.key[..i].contains(k) {
            return Err(format!("table {t}: key column {k:?} is listed twice"));
        }
    }
    for idx in &o.indexes {
        if idx.is_empty() {
            return Err(format!("table {t}: an index needs at least one column"));
        }
        for c in idx {
            check_ident("index column", c).map_err(|e| format!("table {t}: {e}"))?;
        }
    }
    if let Some(cols) = &o.columns {
        if cols.is_empty() {
            return Err(format!("table {t}: `columns` is empty"));
        }
        for (i, c) in cols.iter().enumerate() {
            check_ident("column", &c.name).map_err(|e| format!("table {t}: {e}"))?;
            check_type(&c.name, &c.sql_type).map_err(|e| format!("table {t}: {e}"))?;
            if cols[..i].iter().any(|d| d.name == c.name) {
                return Err(format!("table {t}: column {:?} is declared twice", c.name));
            }
        }
        let has = |n: &String| cols.iter().any(|c| &c.name == n);
        if let Some(k) = o.key.iter().find(|k| !has(k)) {
            return Err(format!(
                "table {t}: key column {k:?} is not a declared column"
            ));
        }
        if let Some(c) = o.indexes.iter().flatten().find(|c| !has(c)) {
            return Err(format!(
                "table {t}: index column {c:?} is not a declared column"
            ));
        }
    }
    Ok(())
}

/// Maps a database error to what can be done about it: refused data is an item
/// error (the step writes the chunk again item by item), a transient one may be
/// retried, anything else is fatal.
pub(crate) fn map_sqlx_error(table: &str, e: sqlx::Error) -> WriteError {
    class_error(
        ErrorClass::of(&e),
        format!("table {table}: {}", sluice_sql::describe(&e)),
    )
}

/// Maps an error of opening the database as [`map_sqlx_error`] does.
fn map_sql_error(table: &str, e: SqlError) -> WriteError {
    class_error(e.class(), format!("table {table}: {e}"))
}

fn class_error(class: ErrorClass, text: String) -> WriteError {
    match class {
        ErrorClass::Data | ErrorClass::UniqueViolation => WriteError::Item(text),
        ErrorClass::Transient => WriteError::Transient(text),
        _ => WriteError::Fatal(text),
    }
}

/// How a writer into a SQL table connects: a small pool that replaces a broken
/// connection (the writer keeps one from chunk to chunk); a SQLite file the
/// writer creates is put in WAL mode (one sync per commit), an existing one keeps
/// its journal; MySQL in strict mode.
pub(crate) fn writer_connect_settings(kind: DbKind) -> ConnectSettings {
    let settings = ConnectSettings::new()
        .acquire_timeout(Duration::from_secs(10))
        .quiet();
    match kind {
        DbKind::Sqlite => settings.create(Journal::WalWhenNew).idle_timeout(None),
        DbKind::Postgres => settings.max_connections(2),
        DbKind::MySql => settings.max_connections(2).mysql_strict(),
    }
}
