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
use sqlx::error::BoxDynError;
use sluice_sql::{
    ConnectSettings, Db, DbKind, DbUrl, ErrorClass, Journal, SqlError, on_db, quote_ident as quote,
    quote_path,
};
use sqlx::mysql::{MySql, MySqlArguments};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, Connection, Database, Encode, Executor, Row, Type};

use super::ident::{check_ident, check_table, check_type, derived_name};
use crate::api::{Rows, SqlStatement, WriteError, Writer};
use crate::model::Item;

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
    name: String,
    quoted: String,
    /// PostgreSQL: the type values (sent as text) are cast to.
    cast: String,
    /// A JSON column: every value is written as its JSON text.
    json: bool,
    /// SQLite: the table's column has INTEGER affinity (its declared type
    /// contains `INT`), so a string that is an integer in canonical form (what
    /// SQLite would turn it into and back) is bound as that integer: the same
    /// value stored, with no text to copy and convert.
    int_affinity: bool,
}

/// The columns and statements of the target, known once the columns are.
#[derive(Debug)]
struct Plan {
    cols: Vec<PlanCol>,
    /// Indexes into `cols` of the conflict key, when upserting with one.
    upsert_key: Vec<usize>,
    /// `INSERT … VALUES` statements by row count.
    inserts: HashMap<usize, Arc<str>>,
    /// PostgreSQL `UNNEST` statements by array types and `MERGE` or not.
    unnest: UnnestCache,
}

/// PostgreSQL `UNNEST` statements by array types and `MERGE` or not.
type UnnestCache = Mutex<HashMap<(Vec<ArrayType>, bool), Arc<str>>>;

/// The type of one column's array in a PostgreSQL `UNNEST` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArrayType {
    /// `int8[]`: an integer column whose values are all integers or null.
    Int8,
    /// `float8[]`: a floating-point column whose values are all numbers or null.
    Float8,
    /// `bool[]`: a boolean column whose values are all booleans or null.
    Bool,
    /// `text[]`, cast to the column's type by the server.
    Text,
}

impl ArrayType {
    /// The array type for column `c` in this chunk: binary where every value
    /// fits, else text.
    fn of<'a>(c: &PlanCol, mut values: impl Iterator<Item = Option<Cell<'a>>>) -> Self {
        let mut all =
            |f: fn(&Value) -> bool| values.all(|v| v.is_none_or(|v| v.json().is_some_and(f)));
        match c.cast.as_str() {
            "bigint" | "integer" | "smallint" if all(Value::is_i64) => Self::Int8,
            "double precision" | "real" if all(Value::is_number) => Self::Float8,
            "boolean" if all(Value::is_boolean) => Self::Bool,
            _ => Self::Text,
        }
    }

    fn pg_name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Float8 => "float8",
            Self::Bool => "bool",
            Self::Text => "text",
        }
    }
}

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

/// The multi-row statement path of SQLite and MySQL, which differ only in types:
/// bind the first batch, then run the batches in turn on one held connection, in
/// one transaction when there are several, binding each next batch while the
/// database runs the one before (SQLite runs statements on its own thread).
macro_rules! write_statements {
    ($self:ident, $cells:ident, $extra:ident, $db:ident, $args:ty, $held:ident) => {{
        let cells = $cells;
        let extra = $extra;
        let batches = $self.batches(cells);
        let sqls: Vec<Arc<str>> = batches.iter().map(|b| $self.insert_sql(b.len())).collect();
        let plan = $self.plan.as_ref().ok_or_else(not_planned)?;
        let table = $self.options.table.as_str();
        let bind = |range: &Range<usize>| {
            let mut args = <$args>::default();
            bind_rows::<$db, _>(&mut args, plan, cells, range.clone())
                .map_err(|e| encode_error(table, e))
                .map(|()| args)
        };
        let first = bind(&batches[0])?;
        let held = $self.held.$held.take();
        let Some(Db::$db(pool)) = &$self.pool else {
            return Err(not_open());
        };
        let mut conn = $self.acquire(pool, held).await?;
        let err = |e| map_sqlx_error(table, e);
        let mut ran = 0;
        let result = async {
            if batches.len() == 1 && extra.is_empty() {
                // One statement is atomic on its own (SQLite; InnoDB in autocommit): no
                // BEGIN/COMMIT round trips.
                ran += 1;
                sqlx::query_with(&sqls[0], first)
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
                return Ok(());
            }
            let mut tx = conn.begin().await.map_err(err)?;
            let mut next = Some(first);
            for (i, sql) in sqls.iter().enumerate() {
                let Some(args) = next.take() else { break };
                ran += 1;
                // The statement is sent first (`join!` polls in order), then the
                // next batch is bound while it runs.
                let (done, bound) =
                    tokio::join!(sqlx::query_with(sql, args).execute(&mut *tx), async {
                        batches.get(i + 1).map(&bind)
                    },);
                done.map_err(err)?;
                next = bound.transpose()?;
            }
            run_extra::<$db>(&mut tx, extra, table, |r| r.rows_affected())
                .await
                .map_err(err)??;
            tx.commit().await.map_err(err)
        }
        .await;
        $self.held.$held = Self::keep(&result, conn);
        $self.statements += ran;
        result
    }};
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
        // A small pool that replaces a broken connection; the writer keeps one
        // connection from chunk to chunk. A SQLite file the writer creates is put
        // in WAL mode (one sync per commit); an existing one keeps its journal.
        let settings = ConnectSettings::new()
            .acquire_timeout(Duration::from_secs(10))
            .quiet();
        let settings = match self.kind {
            DbKind::Sqlite => settings.create(Journal::WalWhenNew).idle_timeout(None),
            DbKind::Postgres => settings.max_connections(2),
            DbKind::MySql => settings.max_connections(2).mysql_strict(),
        };
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

    async fn check_table_exists(&self) -> Result<(), WriteError> {
        let sql = format!("SELECT * FROM {} WHERE 1 = 0", self.table_q);
        self.exec_ddl(&sql).await
    }

    async fn exec_ddl(&self, sql: &str) -> Result<(), WriteError> {
        let Some(db) = self.pool.as_ref() else {
            return Err(not_open());
        };
        let res = on_db!(db, p => p.execute(sql).await.map(drop));
        res.map_err(|e| self.err(e))
    }

    /// Fixes the columns: creates the table when asked, reads PostgreSQL's column
    /// types and builds the plan.
    async fn make_plan(&mut self, cols: Vec<Column>) -> Result<(), WriteError> {
        if self.options.create {
            for sql in self.create_sql(&cols) {
                self.exec_ddl(&sql).await?;
            }
        } else {
            self.check_table_exists().await?;
        }
        if let Some(Db::Postgres(pool)) = &self.pool {
            let rows = sqlx::query(
                "SELECT a.attname::text, \
                   CASE t.typname WHEN 'bpchar' THEN 'bpchar' WHEN 'bit' THEN 'varbit' \
                     ELSE format_type(a.atttypid, NULL) END, \
                   t.typname IN ('json', 'jsonb') \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .bind(&self.table_q)
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            self.pg_types = rows
                .into_iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        (r.get::<String, _>(1), r.get::<bool, _>(2)),
                    )
                })
                .collect();
        }
        if let Some(Db::Sqlite(pool)) = &self.pool {
            let (schema, table) = match self.table_parts.as_slice() {
                [schema, table] => (schema.as_str(), table.as_str()),
                parts => ("main", parts.last().map_or("", String::as_str)),
            };
            let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?1, ?2)")
                .bind(table)
                .bind(schema)
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            self.sqlite_types = rows
                .into_iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
                .collect();
        }
        let kind = self.kind;
        let plan_cols: Vec<PlanCol> = cols
            .iter()
            .map(|c| {
                let declared_json = c.sql_type.trim().to_ascii_uppercase().starts_with("JSON");
                let (cast, json) = match self.pg_types.get(&c.name) {
                    Some((t, j)) => (t.clone(), *j),
                    None => (c.sql_type.trim().to_owned(), declared_json),
                };
                // SQLite's first affinity rule: a declared type containing "INT".
                let int_affinity = self
                    .sqlite_types
                    .get(&c.name)
                    .is_some_and(|t| t.to_ascii_uppercase().contains("INT"));
                PlanCol {
                    name: c.name.clone(),
                    quoted: quote(kind, &c.name),
                    cast,
                    json,
                    int_affinity,
                }
            })
            .collect();
        let upsert_key = if self.options.mode == WriteMode::Upsert {
            self.options
                .key
                .iter()
                .map(|k| {
                    plan_cols.iter().position(|c| &c.name == k).ok_or_else(|| {
                        fatal(format!(
                            "table {}: key column {k:?} is not among the columns",
                            self.options.table
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        self.plan = Some(Plan {
            cols: plan_cols,
            upsert_key,
            inserts: HashMap::new(),
            unnest: Mutex::new(HashMap::new()),
        });
        Ok(())
    }

    /// `CREATE TABLE IF NOT EXISTS` and `CREATE INDEX IF NOT EXISTS` statements.
    fn create_sql(&self, cols: &[Column]) -> Vec<String> {
        let kind = self.kind;
        let key = &self.options.key;
        let indexed = |name: &str| {
            key.iter().any(|k| k == name)
                || self.options.indexes.iter().flatten().any(|c| c == name)
        };
        let single_int_key = key.len() == 1;
        let mut defs: Vec<String> = cols
            .iter()
            .map(|c| {
                let mut ty = c.sql_type.trim().to_owned();
                if kind == DbKind::MySql && indexed(&c.name) && ty.eq_ignore_ascii_case("TEXT") {
                    // MySQL cannot index TEXT without a prefix length.
                    ty = "VARCHAR(255)".into();
                }
                if kind == DbKind::Sqlite
                    && single_int_key
                    && key[0] == c.name
                    && ty.to_ascii_uppercase().contains("INT")
                {
                    // `INTEGER PRIMARY KEY` is SQLite's rowid: no separate key index.
                    ty = "INTEGER".into();
                }
                let not_null = !c.nullable || key.iter().any(|k| k == &c.name);
                format!(
                    "{} {ty}{}",
                    quote(kind, &c.name),
                    if not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        if !key.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", self.quoted_list(key)));
        }
        let table_name = self
            .table_parts
            .last()
            .map(String::as_str)
            .unwrap_or_default();
        let index_name =
            |cols: &[String]| derived_name(table_name, &format!("{}_idx", cols.join("_")));
        if kind == DbKind::MySql {
            for idx in &self.options.indexes {
                defs.push(format!(
                    "INDEX {} ({})",
                    quote(kind, &index_name(idx)),
                    self.quoted_list(idx)
                ));
            }
        }
        let mut create = format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table_q,
            defs.join(", ")
        );
        if kind == DbKind::MySql {
            create.push_str(" DEFAULT CHARSET = utf8mb4");
        }
        let mut out = vec![create];
        if kind != DbKind::MySql {
            for idx in &self.options.indexes {
                let name = index_name(idx);
                let (name_q, on) = match (kind, self.table_parts.as_slice()) {
                    (DbKind::Sqlite, [schema, table]) => (
                        format!("{}.{}", quote(kind, schema), quote(kind, &name)),
                        quote(kind, table),
                    ),
                    _ => (quote(kind, &name), self.table_q.clone()),
                };
                out.push(format!(
                    "CREATE INDEX IF NOT EXISTS {name_q} ON {on} ({})",
                    self.quoted_list(idx)
                ));
            }
        }
        out
    }

    fn quoted_list(&self, names: &[String]) -> String {
        names
            .iter()
            .map(|n| quote(self.kind, n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The conflict clause of an upsert, or an empty string.
    fn conflict_clause(&self, plan: &Plan) -> String {
        let keys: Vec<&str> = plan
            .upsert_key
            .iter()
            .map(|&i| plan.cols[i].quoted.as_str())
            .collect();
        let updates: Vec<&str> = plan
            .cols
            .iter()
            .enumerate()
            .filter(|(i, _)| !plan.upsert_key.contains(i))
            .map(|(_, c)| c.quoted.as_str())
            .collect();
        sluice_sql::upsert_clause(self.kind, &keys, &updates)
    }

    fn column_list(plan: &Plan) -> String {
        plan.cols
            .iter()
            .map(|c| c.quoted.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The multi-row `INSERT` for `rows` rows (cached).
    fn insert_sql(&mut self, rows: usize) -> Arc<str> {
        let Some(plan) = self.plan.as_ref() else {
            return Arc::from("");
        };
        if let Some(sql) = plan.inserts.get(&rows) {
            return sql.clone();
        }
        let ncols = plan.cols.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table_q,
            Self::column_list(plan)
        );
        sql.reserve(rows * ncols * 12);
        let mut n = 0usize;
        for r in 0..rows {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for (i, c) in plan.cols.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                n += 1;
                sluice_sql::push_placeholder(&mut sql, self.kind, n);
                if self.kind == DbKind::Postgres {
                    sql.push_str("::");
                    sql.push_str(&c.cast);
                }
            }
            sql.push(')');
        }
        sql.push_str(&self.conflict_clause(plan));
        let sql: Arc<str> = Arc::from(sql);
        if let Some(plan) = self.plan.as_mut() {
            // Chunks are usually all the same size: a few entries suffice.
            if plan.inserts.len() >= 16 {
                plan.inserts.clear();
            }
            plan.inserts.insert(rows, sql.clone());
        }
        sql
    }

    /// Splits `n` rows into statements under the parameter (and byte) limits.
    fn batches(&self, cells: &Cells<'_>) -> Vec<Range<usize>> {
        let ncols = self.plan.as_ref().map_or(1, |p| p.cols.len().max(1));
        let mut per_stmt = (self.max_params / ncols).max(1);
        if self.kind == DbKind::Sqlite {
            // Several statements per chunk, so that binding one overlaps running
            // the one before.
            per_stmt = per_stmt.min(SQLITE_STATEMENT_ROWS);
        }
        let nrows = cells.rows();
        let mut out = Vec::new();
        if self.max_bytes == usize::MAX {
            let mut start = 0;
            while start < nrows {
                let end = (start + per_stmt).min(nrows);
                out.push(start..end);
                start = end;
            }
            return out;
        }
        let mut start = 0;
        let mut bytes = 0usize;
        for i in 0..nrows {
            let size: usize = cells
                .row(i)
                .iter()
                .map(|v| 16 + v.map_or(0, Cell::text_len))
                .sum();
            if i > start && (i - start >= per_stmt || bytes + size > self.max_bytes) {
                out.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < nrows {
            out.push(start..nrows);
        }
        out
    }

    async fn write_chunk(
        &mut self,
        items: &[Item],
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let rows: Vec<&Map<String, Value>> = items
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
        if self.plan.is_none() {
            let first = rows[0];
            let mut cols = Vec::with_capacity(first.len());
            for name in first.keys() {
                check_ident("column", name)
                    .map_err(|e| fatal(format!("table {}: {e}", self.options.table)))?;
                cols.push(Column::new(name.clone(), "TEXT"));
            }
            if cols.is_empty() {
                return Err(WriteError::Item(format!(
                    "table {}: the first item has no keys to take the columns from",
                    self.options.table
                )));
            }
            if cols.len() > self.max_params {
                return Err(fatal(format!(
                    "table {}: {} columns exceed the {} bind parameters of one statement",
                    self.options.table,
                    cols.len(),
                    self.max_params
                )));
            }
            for k in &self.options.key {
                if !first.contains_key(k) {
                    return Err(fatal(format!(
                        "table {}: key column {k:?} is not a key of the first item",
                        self.options.table
                    )));
                }
            }
            self.make_plan(cols).await?;
        }
        self.write_cells(Src::Items(&rows), extra).await
    }

    /// Writes a chunk given as rows: as its items would be.
    async fn write_rows_chunk(
        &mut self,
        rows: &Rows,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        if self.plan.is_none() {
            // The columns an item's keys would give: sorted, as in a JSON object.
            let mut names: Vec<&String> = rows.keys().iter().collect();
            names.sort();
            let mut cols = Vec::with_capacity(names.len());
            for name in names {
                check_ident("column", name)
                    .map_err(|e| fatal(format!("table {}: {e}", self.options.table)))?;
                cols.push(Column::new(name.clone(), "TEXT"));
            }
            if cols.is_empty() {
                return Err(WriteError::Item(format!(
                    "table {}: the first item has no keys to take the columns from",
                    self.options.table
                )));
            }
            if cols.len() > self.max_params {
                return Err(fatal(format!(
                    "table {}: {} columns exceed the {} bind parameters of one statement",
                    self.options.table,
                    cols.len(),
                    self.max_params
                )));
            }
            for k in &self.options.key {
                if !rows.keys().contains(k) {
                    return Err(fatal(format!(
                        "table {}: key column {k:?} is not a key of the first item",
                        self.options.table
                    )));
                }
            }
            self.make_plan(cols).await?;
        }
        self.write_cells(Src::Rows(rows), extra).await
    }

    async fn write_cells(
        &mut self,
        src: Src<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let cells = Cells::new(plan, src);
        match self.kind {
            DbKind::Sqlite => self.write_sqlite(&cells, extra).await,
            DbKind::Postgres => self.write_postgres(cells, extra).await,
            DbKind::MySql => self.write_mysql(&cells, extra).await,
        }
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

    async fn write_sqlite(
        &mut self,
        cells: &Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        write_statements!(self, cells, extra, Sqlite, SqliteArguments, sqlite)
    }

    async fn write_mysql(
        &mut self,
        cells: &Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        // `$n` statements are for SQLite and PostgreSQL: never handed to MySQL.
        debug_assert!(extra.is_empty());
        write_statements!(self, cells, extra, MySql, MySqlArguments, mysql)
    }

    async fn write_postgres(
        &mut self,
        mut cells: Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        if !plan.upsert_key.is_empty() {
            // `ON CONFLICT DO UPDATE` and `MERGE` cannot touch a row twice in one
            // statement: keep the last item of each key, as writing them in turn would.
            cells = cells.dedupe_last(plan);
        }
        let bulk_min = self
            .options
            .pg_bulk_min_rows
            .unwrap_or(DEFAULT_PG_BULK_MIN_ROWS);
        if !extra.is_empty() {
            // With the repository's chunk commit: one transaction of multi-row
            // statements and the commit.
            return self.pg_multirow(&cells, extra).await;
        }
        if plan.upsert_key.is_empty() {
            // Append, or upsert without a key: plain inserts, streamed.
            return self.pg_copy(&cells).await.map_err(|e| self.err(e));
        }
        if cells.rows() < bulk_min {
            return self.pg_multirow(&cells, &[]).await;
        }
        // New keys are most often new rows: COPY them, the fastest way in. If a key
        // exists, the COPY fails as a whole and the chunk is upserted instead.
        if self.pg_copy_skip == 0 {
            match self.pg_copy(&cells).await {
                Ok(()) => {
                    self.pg_copy_backoff = 1;
                    return Ok(());
                }
                Err(e) if is_unique_violation(&e) => {
                    // Try COPY first again only after a few chunks, more each time
                    // it fails in a row (when most keys exist it would always fail).
                    self.pg_copy_skip = self.pg_copy_backoff;
                    self.pg_copy_backoff = (self.pg_copy_backoff * 2).min(64);
                }
                Err(e) => return Err(self.err(e)),
            }
        } else {
            self.pg_copy_skip -= 1;
        }
        self.pg_unnest(&cells).await
    }

    /// `COPY … FROM STDIN` of the chunk, in text format: one statement, atomic on
    /// its own.
    async fn pg_copy(&mut self, cells: &Cells<'_>) -> Result<(), sqlx::Error> {
        let Some(plan) = self.plan.as_ref() else {
            return Err(sqlx::Error::Protocol("sql writer: no plan".into()));
        };
        let statement = format!(
            "COPY {} ({}) FROM STDIN",
            self.table_q,
            Self::column_list(plan)
        );
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg).await?;
        self.statements += 1;
        let result = copy_in(&mut conn, &statement, plan, cells).await.map(drop);
        if let Ok(()) | Err(sqlx::Error::Database(_)) = &result {
            // The server answered: the connection is fine.
            self.held.pg = Some(conn);
        }
        result
    }

    /// Multi-row `INSERT … VALUES … ON CONFLICT`, split at the parameter limit,
    /// in one transaction when split.
    async fn pg_multirow(
        &mut self,
        cells: &Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let ncols = self.plan.as_ref().map_or(1, |p| p.cols.len().max(1));
        let per_stmt = (self.max_params / ncols).max(1);
        let batches: Vec<Range<usize>> = (0..cells.rows())
            .step_by(per_stmt)
            .map(|s| s..(s + per_stmt).min(cells.rows()))
            .collect();
        let sqls: Vec<Arc<str>> = batches.iter().map(|b| self.insert_sql(b.len())).collect();
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let mut stmts = Vec::with_capacity(batches.len());
        for (range, sql) in batches.iter().zip(sqls) {
            let mut args = PgArguments::default();
            for r in range.clone() {
                for (c, v) in plan.cols.iter().zip(cells.row(r)) {
                    args.add(pg_text(*v, c.json))
                        .map_err(|e| self.encode_err(e))?;
                }
            }
            stmts.push((sql, args));
        }
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg)
            .await
            .map_err(|e| self.err(e))?;
        let mut ran = 0;
        let table = self.options.table.clone();
        let result = async {
            if stmts.len() == 1 && extra.is_empty() {
                // One statement is atomic on its own: no BEGIN/COMMIT round trips.
                let (sql, args) = stmts.pop().expect("one statement");
                ran += 1;
                sqlx::query_with(&sql, args).execute(&mut *conn).await?;
                return Ok(Ok(()));
            }
            let mut tx = conn.begin().await?;
            for (sql, args) in stmts {
                ran += 1;
                sqlx::query_with(&sql, args).execute(&mut *tx).await?;
            }
            let rows = |r: &sqlx::postgres::PgQueryResult| r.rows_affected();
            if let Err(e) = run_extra::<Postgres>(&mut tx, extra, &table, rows).await? {
                return Ok(Err(e));
            }
            tx.commit().await.map(Ok)
        }
        .await
        .map_err(|e| self.err(e))
        .and_then(|r| r);
        self.statements += ran;
        self.held.pg = Self::keep(&result, conn);
        result
    }

    /// An upsert of the whole chunk in one statement whose rows come from one
    /// array per column: `MERGE … USING (SELECT … FROM UNNEST($1, …))` on
    /// PostgreSQL 15 and later, `INSERT … SELECT … FROM UNNEST(…) ON CONFLICT`
    /// before (and when a concurrent insert makes the `MERGE` hit the key).
    async fn pg_unnest(&mut self, cells: &Cells<'_>) -> Result<(), WriteError> {
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let sig: Vec<ArrayType> = (0..plan.cols.len())
            .map(|c| ArrayType::of(&plan.cols[c], cells.column(c)))
            .collect();
        let merge_sql = self.pg_merge.then(|| self.unnest_sql(plan, &sig, true));
        let insert_sql = self.unnest_sql(plan, &sig, false);
        let table = self.options.table.as_str();
        let build = || unnest_args(plan, &sig, cells).map_err(|e| encode_error(table, e));
        let args = build()?;
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg)
            .await
            .map_err(|e| map_sqlx_error(table, e))?;
        let mut ran = 1;
        let result = match &merge_sql {
            None => sqlx::query_with(&insert_sql, args)
                .execute(&mut *conn)
                .await
                .map(drop),
            Some(merge_sql) => match sqlx::query_with(merge_sql, args).execute(&mut *conn).await {
                Err(e) if is_unique_violation(&e) => {
                    // A row with the key appeared since MERGE looked (a concurrent
                    // writer): ON CONFLICT handles that race.
                    ran += 1;
                    match build() {
                        Ok(args) => sqlx::query_with(&insert_sql, args)
                            .execute(&mut *conn)
                            .await
                            .map(drop),
                        Err(e) => {
                            self.held.pg = Some(conn);
                            return Err(e);
                        }
                    }
                }
                other => other.map(drop),
            },
        };
        self.statements += ran;
        let result = result.map_err(|e| map_sqlx_error(table, e));
        self.held.pg = Self::keep(&result, conn);
        result
    }

    /// The `UNNEST` statement for one combination of array types (cached).
    fn unnest_sql(&self, plan: &Plan, sig: &[ArrayType], merge: bool) -> Arc<str> {
        let cache_key = (sig.to_vec(), merge);
        if let Some(sql) = plan
            .unnest
            .lock()
            .ok()
            .and_then(|m| m.get(&cache_key).cloned())
        {
            return sql;
        }
        let arrays = sig
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::{}[]", i + 1, ty.pg_name()))
            .collect::<Vec<_>>()
            .join(", ");
        let aliases = (0..sig.len())
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let select = plan
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("u.c{i}::{} AS {}", c.cast, c.quoted))
            .collect::<Vec<_>>()
            .join(", ");
        let source = format!("SELECT {select} FROM UNNEST({arrays}) AS u({aliases})");
        let columns = Self::column_list(plan);
        let sql = if merge {
            let on = plan
                .upsert_key
                .iter()
                .map(|&i| format!("sluice_t.{0} = sluice_s.{0}", plan.cols[i].quoted))
                .collect::<Vec<_>>()
                .join(" AND ");
            let updates = plan
                .cols
                .iter()
                .enumerate()
                .filter(|(i, _)| !plan.upsert_key.contains(i))
                .map(|(_, c)| format!("{0} = sluice_s.{0}", c.quoted))
                .collect::<Vec<_>>();
            let values = plan
                .cols
                .iter()
                .map(|c| format!("sluice_s.{}", c.quoted))
                .collect::<Vec<_>>()
                .join(", ");
            let mut sql = format!(
                "MERGE INTO {} AS sluice_t USING ({source}) AS sluice_s ON {on}",
                self.table_q
            );
            if !updates.is_empty() {
                sql.push_str(" WHEN MATCHED THEN UPDATE SET ");
                sql.push_str(&updates.join(", "));
            }
            sql.push_str(&format!(
                " WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
            ));
            sql
        } else {
            format!(
                "INSERT INTO {} ({columns}) {source}{}",
                self.table_q,
                self.conflict_clause(plan)
            )
        };
        let sql: Arc<str> = Arc::from(sql);
        if let Ok(mut m) = plan.unnest.lock() {
            if m.len() >= 16 {
                m.clear();
            }
            m.insert(cache_key, sql.clone());
        }
        sql
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

    async fn write(&mut self, items: &[Item]) -> Result<(), WriteError> {
        if items.is_empty() {
            return Ok(());
        }
        if self.pool.is_none() {
            self.prepare().await?;
        }
        self.write_chunk(items, &[]).await
    }

    fn database_url(&self) -> Option<&str> {
        Some(self.url())
    }

    fn takes_rows(&self) -> bool {
        true
    }

    async fn write_rows(&mut self, rows: &Rows) -> Result<(), WriteError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.pool.is_none() {
            self.prepare().await?;
        }
        self.write_rows_chunk(rows, &[]).await
    }

    async fn write_rows_committing(
        &mut self,
        rows: &Rows,
        commit: &[SqlStatement],
    ) -> Result<bool, WriteError> {
        if self.kind == DbKind::MySql || rows.is_empty() {
            return self.write_rows(rows).await.map(|()| false);
        }
        if self.pool.is_none() {
            self.prepare().await?;
        }
        self.write_rows_chunk(rows, commit).await.map(|()| true)
    }

    async fn write_committing(
        &mut self,
        items: &[Item],
        commit: &[SqlStatement],
    ) -> Result<bool, WriteError> {
        if self.kind == DbKind::MySql || items.is_empty() {
            return self.write(items).await.map(|()| false);
        }
        if self.pool.is_none() {
            self.prepare().await?;
        }
        self.write_chunk(items, commit).await.map(|()| true)
    }
}

/// Runs `extra` in `tx`; `Ok(Err(..))` when a `must_affect` statement affected
/// nothing (the caller drops the transaction: everything rolls back).
async fn run_extra<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    extra: &[SqlStatement],
    table: &str,
    rows: fn(&<DB as Database>::QueryResult) -> u64,
) -> Result<Result<(), WriteError>, sqlx::Error>
where
    DB: Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'e> &'e mut <DB as Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    for st in extra {
        let done = sluice_sql::build_query::<DB>(&st.sql, &st.args)
            .execute(&mut **tx)
            .await?;
        if st.must_affect && rows(&done) == 0 {
            return Ok(Err(WriteError::Fatal(format!(
                "table {table}: this process lost its lease on the job; the chunk was rolled back"
            ))));
        }
    }
    Ok(Ok(()))
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

/// Binds the values of rows `range` of `cells` with their JSON types, row by row,
/// column by column (text from [`Rows`] as a JSON string).
fn bind_rows<'q, DB, A>(
    args: &mut A,
    plan: &Plan,
    cells: &Cells<'q>,
    range: Range<usize>,
) -> Result<(), BoxDynError>
where
    DB: Database,
    A: Arguments<'q, Database = DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
{
    args.reserve(
        range.len() * plan.cols.len(),
        range.len() * plan.cols.len() * 16,
    );
    for r in range {
        for (c, v) in plan.cols.iter().zip(cells.row(r)) {
            match *v {
                None => args.add(None::<String>)?,
                Some(v) if c.json => args.add(v.json_text())?,
                Some(v @ (Cell::Text(_) | Cell::Json(Value::String(_)))) => {
                    let s = v.as_str().unwrap_or_default();
                    match canonical_int(s).filter(|_| c.int_affinity) {
                        Some(i) => args.add(i)?,
                        None => args.add(s)?,
                    }
                }
                Some(Cell::Json(Value::Bool(b))) => args.add(*b)?,
                Some(Cell::Json(Value::Number(n))) => {
                    if let Some(i) = n.as_i64() {
                        args.add(i)?;
                    } else if n.is_u64() {
                        // Beyond i64: as text, for the database to cast where it can.
                        args.add(n.to_string())?;
                    } else {
                        args.add(n.as_f64().unwrap_or(f64::NAN))?;
                    }
                }
                Some(Cell::Json(v)) => args.add(v.to_string())?,
            }
        }
    }
    Ok(())
}

/// `s` as an integer when it is one written exactly as that integer prints: an
/// optional `-`, digits without a leading zero (but `0`), within `i64`. (Not
/// `+1`, `01`, `-0` or ` 1`, which a database may store differently from the
/// integer's text.)
fn canonical_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let b = digits.as_bytes();
    let canonical = !b.is_empty()
        && b.len() <= 19
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] != b'0' || (b.len() == 1 && digits.len() == s.len()));
    if canonical { s.parse().ok() } else { None }
}

/// A value in PostgreSQL's text form (`None`: NULL).
fn pg_text(v: Option<Cell<'_>>, json: bool) -> Option<Cow<'_, str>> {
    match v? {
        v if json => Some(Cow::Owned(v.json_text())),
        Cell::Text(s) => Some(Cow::Borrowed(s)),
        Cell::Json(Value::Null) => None,
        Cell::Json(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
        Cell::Json(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Cell::Json(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
        Cell::Json(v) => Some(Cow::Owned(v.to_string())),
    }
}

/// One value of a chunk: a JSON value of an item, or a text field of [`Rows`]
/// (written as the JSON string it stands for would be).
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Cell<'a> {
    /// The JSON value, when it is one.
    fn json(self) -> Option<&'a Value> {
        match self {
            Cell::Json(v) => Some(v),
            Cell::Text(_) => None,
        }
    }

    /// The text of a string.
    fn as_str(self) -> Option<&'a str> {
        match self {
            Cell::Json(v) => v.as_str(),
            Cell::Text(s) => Some(s),
        }
    }

    /// The value as JSON text (a string quoted).
    fn json_text(self) -> String {
        match self {
            Cell::Json(v) => v.to_string(),
            Cell::Text(s) => Value::from(s).to_string(),
        }
    }

    /// An estimate of the bytes it takes in a MySQL statement.
    fn text_len(self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::Json(Value::String(s)) => s.len(),
            Cell::Json(v @ (Value::Array(_) | Value::Object(_))) => v.to_string().len(),
            Cell::Json(_) => 8,
        }
    }
}

/// Where a chunk's values come from.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// Items (JSON objects).
    Items(&'a [&'a Map<String, Value>]),
    /// Rows of text.
    Rows(&'a Rows),
}

/// The values of a chunk, row by row, one per column (`None`: null or missing).
struct Cells<'a> {
    ncols: usize,
    cells: Vec<Option<Cell<'a>>>,
}

impl<'a> Cells<'a> {
    fn new(plan: &Plan, src: Src<'a>) -> Self {
        let ncols = plan.cols.len();
        match src {
            Src::Items(rows) => {
                let mut cells = Vec::with_capacity(rows.len() * ncols);
                for row in rows {
                    cells.extend(
                        plan.cols
                            .iter()
                            .map(|c| row.get(&c.name).filter(|v| !v.is_null()).map(Cell::Json)),
                    );
                }
                Self { ncols, cells }
            }
            Src::Rows(rows) => {
                let at: Vec<Option<usize>> = plan
                    .cols
                    .iter()
                    .map(|c| rows.keys().iter().position(|k| *k == c.name))
                    .collect();
                let mut cells = Vec::with_capacity(rows.len() * ncols);
                for r in 0..rows.len() {
                    cells.extend(
                        at.iter()
                            .map(|i| i.and_then(|i| rows.get(r, i)).map(Cell::Text)),
                    );
                }
                Self { ncols, cells }
            }
        }
    }

    fn rows(&self) -> usize {
        self.cells.len().checked_div(self.ncols).unwrap_or(0)
    }

    fn row(&self, r: usize) -> &[Option<Cell<'a>>] {
        &self.cells[r * self.ncols..(r + 1) * self.ncols]
    }

    fn column(&self, c: usize) -> impl Iterator<Item = Option<Cell<'a>>> + '_ {
        self.cells
            .iter()
            .skip(c)
            .step_by(self.ncols.max(1))
            .copied()
    }

    /// Keeps, for each key, only the last row with it (in the place of the
    /// first). Keys compare by their text form, as the database sees them (`1`
    /// and `"1"` are the same key); a row with a NULL key is its own.
    fn dedupe_last(self, plan: &Plan) -> Self {
        let n = self.rows();
        let mut slots: Vec<usize> = Vec::with_capacity(n);
        let mut kept: Vec<usize> = Vec::with_capacity(n);
        let mut place = |slot: Option<usize>, r: usize, kept: &mut Vec<usize>| match slot {
            Some(s) => kept[s] = r,
            None => {
                slots.push(kept.len());
                kept.push(r);
            }
        };
        let int_key = match plan.upsert_key.as_slice() {
            [k] => self
                .column(*k)
                .all(|v| v.and_then(Cell::json).is_some_and(Value::is_i64))
                .then_some(*k),
            _ => None,
        };
        let text_key = match plan.upsert_key.as_slice() {
            [k] if int_key.is_none() => Some(*k),
            _ => None,
        };
        if let Some(k) = int_key {
            let mut seen: HashMap<i64, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                let key = self.row(r)[k]
                    .and_then(Cell::json)
                    .and_then(Value::as_i64)
                    .unwrap_or_default();
                let slot = seen.get(&key).copied();
                if slot.is_none() {
                    seen.insert(key, kept.len());
                }
                place(slot, r, &mut kept);
            }
        } else if let Some(k) = text_key.filter(|&k| {
            !plan.cols[k].json
                && self
                    .column(k)
                    .all(|v| v.and_then(Cell::as_str).and_then(canonical_int).is_some())
        }) {
            // One key column of integers as text: distinct when increasing (the
            // usual case: no hashing), else compared as integers (equal integers in
            // canonical form have equal text).
            let keys: Vec<i64> = self
                .column(k)
                .map(|v| {
                    v.and_then(Cell::as_str)
                        .and_then(canonical_int)
                        .unwrap_or_default()
                })
                .collect();
            if keys.windows(2).all(|w| w[0] < w[1]) {
                return self;
            }
            let mut seen: HashMap<i64, usize> = HashMap::with_capacity(n);
            for (r, key) in keys.into_iter().enumerate() {
                let slot = seen.get(&key).copied();
                if slot.is_none() {
                    seen.insert(key, kept.len());
                }
                place(slot, r, &mut kept);
            }
        } else if let Some(k) = text_key {
            // One key column: no vector per row.
            let json = plan.cols[k].json;
            let mut seen: HashMap<Cow<'a, str>, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                let slot = match pg_text(self.row(r)[k], json) {
                    Some(key) => match seen.get(&key) {
                        Some(&s) => Some(s),
                        None => {
                            seen.insert(key, kept.len());
                            None
                        }
                    },
                    None => None,
                };
                place(slot, r, &mut kept);
            }
        } else {
            let mut seen: HashMap<Vec<Cow<'a, str>>, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                let row = self.row(r);
                let key: Option<Vec<Cow<'a, str>>> = plan
                    .upsert_key
                    .iter()
                    .map(|&i| pg_text(row[i], plan.cols[i].json))
                    .collect();
                let slot = match key {
                    Some(key) => match seen.get(&key) {
                        Some(&s) => Some(s),
                        None => {
                            seen.insert(key, kept.len());
                            None
                        }
                    },
                    None => None,
                };
                place(slot, r, &mut kept);
            }
        }
        if kept.len() == n {
            return self;
        }
        let mut cells = Vec::with_capacity(kept.len() * self.ncols);
        for &r in &kept {
            cells.extend_from_slice(self.row(r));
        }
        Self {
            ncols: self.ncols,
            cells,
        }
    }
}

/// The arguments of an `UNNEST` statement: one array per column.
fn unnest_args(
    plan: &Plan,
    sig: &[ArrayType],
    cells: &Cells<'_>,
) -> Result<PgArguments, BoxDynError> {
    let mut args = PgArguments::default();
    for (i, (c, ty)) in plan.cols.iter().zip(sig).enumerate() {
        let values = cells.column(i);
        match ty {
            ArrayType::Int8 => args.add(
                values
                    .map(|v| v.and_then(Cell::json).and_then(Value::as_i64))
                    .collect::<Vec<Option<i64>>>(),
            )?,
            ArrayType::Float8 => args.add(
                values
                    .map(|v| v.and_then(Cell::json).and_then(Value::as_f64))
                    .collect::<Vec<Option<f64>>>(),
            )?,
            ArrayType::Bool => args.add(
                values
                    .map(|v| v.and_then(Cell::json).and_then(Value::as_bool))
                    .collect::<Vec<Option<bool>>>(),
            )?,
            ArrayType::Text => args.add(
                values
                    .map(|v| pg_text(v, c.json))
                    .collect::<Vec<Option<Cow<'_, str>>>>(),
            )?,
        }
    }
    Ok(args)
}

/// Appends one row in `COPY … FROM STDIN` text format.
fn copy_text_row(buf: &mut Vec<u8>, plan: &Plan, row: &[Option<Cell<'_>>]) {
    use std::io::Write as _;
    for (i, (c, v)) in plan.cols.iter().zip(row).enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        match *v {
            None => buf.extend_from_slice(b"\\N"),
            Some(v) if c.json => copy_escape(buf, &v.json_text()),
            Some(Cell::Text(s)) => copy_escape(buf, s),
            // Numbers and booleans never need escaping.
            Some(Cell::Json(Value::Number(n))) => {
                let _ = write!(buf, "{n}");
            }
            Some(Cell::Json(Value::Bool(b))) => {
                buf.extend_from_slice(if *b { b"true" } else { b"false" });
            }
            Some(Cell::Json(Value::String(s))) => copy_escape(buf, s),
            Some(Cell::Json(v)) => copy_escape(buf, &v.to_string()),
        }
    }
    buf.push(b'\n');
}

/// Appends `s` escaped for `COPY` text format: backslash, tab, newline and
/// carriage return become `\\`, `\t`, `\n` and `\r`.
fn copy_escape(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_copy_escape(bytes) {
        buf.extend_from_slice(bytes);
        return;
    }
    let mut from = 0;
    for (j, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[from..j]);
        buf.extend_from_slice(esc);
        from = j + 1;
    }
    buf.extend_from_slice(&bytes[from..]);
}

/// Whether `bytes` may hold a byte that `COPY` text format escapes: checked eight
/// bytes at a time for any byte below 0x0E (tab, newline and carriage return among
/// them) or a backslash. A `true` may be a false alarm; a `false` is certain.
fn needs_copy_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        // A zero byte of `v` sets its high bit in `(v - ONES) & !v & HIGH`.
        let low = x.wrapping_sub(ONES * 0x0E) & !x & HIGH;
        let v = x ^ (ONES * u64::from(b'\\'));
        let backslash = v.wrapping_sub(ONES) & !v & HIGH;
        if low | backslash != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x0E || b == b'\\')
}

/// Whether a database error is a unique (or primary key) violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    ErrorClass::of(e) == ErrorClass::UniqueViolation
}

/// The held PostgreSQL connection, or a new one from the pool.
async fn pg_acquire(
    pool: &Option<Db>,
    held: &mut Option<PoolConnection<Postgres>>,
) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    if let Some(c) = held.take() {
        return Ok(c);
    }
    match pool {
        Some(Db::Postgres(p)) => p.acquire().await,
        _ => Err(sqlx::Error::PoolClosed),
    }
}

/// Runs one `COPY … FROM STDIN` with the chunk's rows, sent in pieces of about
/// [`COPY_PIECE_BYTES`], so that the server parses a piece while the next is
/// encoded.
async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    plan: &Plan,
    cells: &Cells<'_>,
) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut buf = Vec::with_capacity(COPY_PIECE_BYTES + 64 * 1024);
    for r in 0..cells.rows() {
        copy_text_row(&mut buf, plan, cells.row(r));
        if buf.len() >= COPY_PIECE_BYTES || r + 1 == cells.rows() {
            let piece =
                std::mem::replace(&mut buf, Vec::with_capacity(COPY_PIECE_BYTES + 64 * 1024));
            if let Err(e) = copy.send(piece).await {
                let _ = copy.abort("sluice: sending the chunk failed").await;
                return Err(e);
            }
        }
    }
    copy.finish().await
}

/// The size of the pieces a chunk's `COPY` data is sent in.
const COPY_PIECE_BYTES: usize = 128 * 1024;

/// Maps a database error to what can be done about it: refused data is an item
/// error (the step writes the chunk again item by item), a transient one may be
/// retried, anything else is fatal.
pub(crate) fn map_sqlx_error(table: &str, e: sqlx::Error) -> WriteError {
    class_error(ErrorClass::of(&e), format!("table {table}: {}", sluice_sql::describe(&e)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cols: &[(&str, &str)], key: Vec<usize>) -> Plan {
        Plan {
            cols: cols
                .iter()
                .map(|(n, t)| PlanCol {
                    name: n.to_string(),
                    quoted: format!("\"{n}\""),
                    cast: t.to_string(),
                    json: t.starts_with("json"),
                    int_affinity: false,
                })
                .collect(),
            upsert_key: key,
            inserts: HashMap::new(),
            unnest: Mutex::new(HashMap::new()),
        }
    }

    fn maps(items: &[Value]) -> Vec<&Map<String, Value>> {
        items.iter().map(|i| i.as_object().unwrap()).collect()
    }

    #[test]
    fn copy_escaping() {
        let p = plan(
            &[
                ("a", "text"),
                ("b", "text"),
                ("c", "text"),
                ("d", "jsonb"),
                ("e", "bigint"),
            ],
            vec![],
        );
        let items = [serde_json::json!({
            "a": "a\tb\nc\\d\re \"q\" 측정", "b": null, "c": "\\N", "d": {"k": "x\ty"}, "e": 7
        })];
        let rows = maps(&items);
        let cells = Cells::new(&p, Src::Items(&rows));
        let mut buf = Vec::new();
        copy_text_row(&mut buf, &p, cells.row(0));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "a\\tb\\nc\\\\d\\re \"q\" 측정\t\\N\t\\\\N\t{\"k\":\"x\\\\ty\"}\t7\n"
        );
    }

    #[test]
    fn dedupe_keeps_last() {
        let p = plan(&[("k", "bigint"), ("v", "text")], vec![0]);
        let notes = |cells: &Cells<'_>| -> Vec<String> {
            (0..cells.rows())
                .map(|r| cells.row(r)[1].unwrap().as_str().unwrap().to_owned())
                .collect()
        };
        // Integer keys (the fast path).
        let items = [
            serde_json::json!({"k": 1, "v": "a"}),
            serde_json::json!({"k": 2, "v": "b"}),
            serde_json::json!({"k": 1, "v": "c"}),
        ];
        let rows = maps(&items);
        let cells = Cells::new(&p, Src::Items(&rows)).dedupe_last(&p);
        assert_eq!(notes(&cells), ["c", "b"]);
        // Mixed: `1` and `"1"` are the same key; NULL keys are each their own.
        let items = [
            serde_json::json!({"k": 1, "v": "a"}),
            serde_json::json!({"k": 2, "v": "b"}),
            serde_json::json!({"k": "1", "v": "c"}),
            serde_json::json!({"v": "no key"}),
            serde_json::json!({"k": null, "v": "null key"}),
        ];
        let rows = maps(&items);
        let cells = Cells::new(&p, Src::Items(&rows)).dedupe_last(&p);
        assert_eq!(notes(&cells), ["c", "b", "no key", "null key"]);
        // No duplicates: unchanged.
        let rows = maps(&items[..2]);
        let cells = Cells::new(&p, Src::Items(&rows)).dedupe_last(&p);
        assert_eq!(notes(&cells), ["a", "b"]);
        // Text keys from rows: integers in canonical form (increasing, or not),
        // and other text.
        let keys: Arc<[String]> = vec!["k".to_owned(), "v".to_owned()].into();
        let mut rows = Rows::new(keys);
        for (k, v) in [("1", "a"), ("2", "b"), ("3", "c")] {
            rows.push_row([Some(k), Some(v)]);
        }
        let cells = Cells::new(&p, Src::Rows(&rows)).dedupe_last(&p);
        assert_eq!(notes(&cells), ["a", "b", "c"]);
        rows.push_row([Some("2"), Some("d")]);
        let cells = Cells::new(&p, Src::Rows(&rows)).dedupe_last(&p);
        assert_eq!(notes(&cells), ["a", "d", "c"]);
        rows.push_row([Some("02"), Some("e")]);
        rows.push_row([None, Some("f")]);
        rows.push_row([Some("x"), Some("g")]);
        rows.push_row([Some("x"), Some("h")]);
        let cells = Cells::new(&p, Src::Rows(&rows)).dedupe_last(&p);
        assert_eq!(notes(&cells), ["a", "d", "c", "e", "f", "h"]);
    }

    #[test]
    fn array_types_follow_the_values() {
        let p = plan(
            &[
                ("i", "bigint"),
                ("f", "double precision"),
                ("b", "boolean"),
                ("t", "text"),
            ],
            vec![],
        );
        let sig = |items: &[Value]| -> Vec<ArrayType> {
            let rows = maps(items);
            let cells = Cells::new(&p, Src::Items(&rows));
            (0..p.cols.len())
                .map(|c| ArrayType::of(&p.cols[c], cells.column(c)))
                .collect()
        };
        let a = serde_json::json!({"i": 1, "f": 2, "b": true, "t": "x"});
        let b = serde_json::json!({"i": null, "f": 2.5});
        let c = serde_json::json!({"i": "3", "f": "2.5", "b": "yes"});
        use ArrayType::*;
        assert_eq!(sig(&[a.clone(), b]), [Int8, Float8, Bool, Text]);
        assert_eq!(sig(&[a, c]), [Text, Text, Text, Text]);
    }

    #[test]
    fn canonical_integers() {
        for (s, v) in [("0", Some(0)), ("7", Some(7)), ("-12", Some(-12))] {
            assert_eq!(canonical_int(s), v, "{s}");
        }
        assert_eq!(canonical_int("-9223372036854775808"), Some(i64::MIN));
        for s in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "x",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert_eq!(canonical_int(s), None, "{s:?}");
        }
    }

    #[test]
    fn copy_escape_check() {
        assert!(!needs_copy_escape(b""));
        assert!(!needs_copy_escape(
            "plain text, 측정소 and more than eight".as_bytes()
        ));
        for i in 0..20 {
            for bad in [b'\t', b'\n', b'\r', b'\\'] {
                let mut v = vec![b'a'; i + 1];
                v[i] = bad;
                assert!(needs_copy_escape(&v), "{v:?}");
            }
        }
        let mut buf = Vec::new();
        copy_escape(&mut buf, "0123456789abcdef\\x");
        assert_eq!(buf, b"0123456789abcdef\\\\x");
    }

    #[test]
    fn rows_as_cells() {
        let p = plan(
            &[("b", "text"), ("missing", "text"), ("a", "bigint")],
            vec![],
        );
        let keys: Arc<[String]> = vec!["a".to_owned(), "b".to_owned()].into();
        let mut rows = Rows::new(keys);
        rows.push_row([Some("1"), Some("x\ty")]);
        rows.push_row([None, Some("")]);
        let cells = Cells::new(&p, Src::Rows(&rows));
        let mut buf = Vec::new();
        copy_text_row(&mut buf, &p, cells.row(0));
        copy_text_row(&mut buf, &p, cells.row(1));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "x\\ty\t\\N\t1\n\t\\N\t\\N\n"
        );
    }

    #[test]
    fn statements_fit_the_limits() {
        let opts = SqlWriterOptions::new("t")
            .key(["id"])
            .columns(vec![Column::new("id", "BIGINT"), Column::new("v", "TEXT")]);
        let mut w = SqlWriter::new("sqlite::memory:", opts.clone().max_params(10)).unwrap();
        w.plan = Some(plan(&[("id", "BIGINT"), ("v", "TEXT")], vec![0]));
        let item = serde_json::json!({"id": 1, "v": "x"});
        let map = item.as_object().unwrap();
        let rows = vec![map; 12];
        let p2 = plan(&[("id", "BIGINT"), ("v", "TEXT")], vec![0]);
        let cells = Cells::new(&p2, Src::Items(&rows));
        assert_eq!(w.batches(&cells), vec![0..5, 5..10, 10..12]);
        assert_eq!(
            &*w.insert_sql(2),
            "INSERT INTO \"t\" (\"id\", \"v\") VALUES (?,?),(?,?) ON CONFLICT (\"id\") DO UPDATE SET \"v\" = excluded.\"v\""
        );
        let mut p = SqlWriter::new("postgres://u@h/db", opts).unwrap();
        p.plan = Some(plan(&[("id", "BIGINT"), ("v", "TEXT")], vec![0]));
        assert_eq!(
            &*p.insert_sql(1),
            "INSERT INTO \"t\" (\"id\", \"v\") VALUES ($1::BIGINT,$2::TEXT) ON CONFLICT (\"id\") DO UPDATE SET \"v\" = excluded.\"v\""
        );
    }
}
