//! Reading the rows of a table or query from SQLite, PostgreSQL or MySQL with
//! keyset pagination.
//!
//! Each page is one statement that starts after the key of the last row returned:
//!
//! ```text
//! SELECT cols FROM src AS sluice_src
//!  WHERE (sluice_src.k1, sluice_src.k2) > ($1, $2)
//!  ORDER BY sluice_src.k1, sluice_src.k2 LIMIT page
//! ```
//!
//! so a page costs an index range scan however deep into the table it is, and the
//! checkpoint (`{"after": [k1, k2]}`) resumes exactly after the last row returned,
//! whatever was inserted or deleted meanwhile before it. The key columns must be
//! unique together and not null.
//!
//! Rows become JSON objects: integers, floats, text, booleans and nulls keep their
//! type; every other type (numeric, dates and times, JSON, UUID, binary, …) is
//! selected as text (`CAST(col AS TEXT)` / `CAST(col AS CHAR)`).

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Number, Value, json};
use sluice_sql::{ConnectSettings, Db, DbKind, ErrorClass, on_db, quote_ident};
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Executor, Row, Statement, TypeInfo, ValueRef};

use crate::api::{ReadError, ReadItem, Reader};
use crate::config::ConfigError;

mod config;

pub use config::RawSqlReader;

/// Binds one JSON value to a query of any of the three databases.
macro_rules! bind_json {
    ($q:expr, $v:expr) => {
        match $v {
            Value::Null => $q.bind(None::<String>),
            Value::Bool(b) => $q.bind(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => $q.bind(i),
                None => match n.as_f64().filter(|_| n.as_u64().is_none()) {
                    Some(f) => $q.bind(f),
                    None => $q.bind(n.to_string()),
                },
            },
            Value::String(s) => $q.bind(s.clone()),
            other => $q.bind(other.to_string()),
        }
    };
}

/// `e` as a reader error: transient ones (see [`ErrorClass::Transient`]) or fatal, with
/// what was being done.
fn read_error(what: &str, e: &sqlx::Error) -> ReadError {
    let msg = format!("{what}: {e}");
    if ErrorClass::of(e).is_transient() {
        ReadError::Transient(msg)
    } else {
        ReadError::Fatal(msg)
    }
}

/// Opens the pool of a reader or tasklet: at most `max` connections, connection
/// failures retried for `wait`; an error is transient when retrying may help.
pub(crate) async fn connect(url: &str, max: u32, wait: Duration) -> Result<Db, ReadError> {
    let settings = ConnectSettings::new()
        .max_connections(max)
        .acquire_timeout(wait);
    Db::connect(url, &settings).await.map_err(|e| {
        let msg = format!("connecting to the database: {e}");
        if e.class().is_transient() {
            ReadError::Transient(msg)
        } else {
            ReadError::Fatal(msg)
        }
    })
}

/// What rows are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlSource {
    /// A table (or view) name, used as written (it may be schema-qualified and is
    /// not quoted).
    Table(String),
    /// A `FROM` fragment: tables, joins and a `WHERE` clause, with or without the
    /// leading `FROM` (`events WHERE kind = 'click'`). It is read as the subquery
    /// `(SELECT * FROM fragment)`, so its column names must be unique.
    Query(String),
}

/// The statements of one reader, built once its source is described.
#[derive(Debug)]
struct Plan {
    /// Output column names, in order.
    columns: Vec<String>,
    /// The first page.
    first: String,
    /// A page after a key.
    next: String,
    /// `SELECT COUNT(*)` of the source.
    count: String,
}

/// How long connecting may take by default.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The alias of the source in every statement.
const SRC: &str = "sluice_src";

/// Reads rows from SQLite, PostgreSQL or MySQL with keyset pagination.
///
/// ```no_run
/// # use sluice_batch::readers::SqlReader;
/// let reader = SqlReader::table("postgres://app@db/app", "events", ["tenant", "id"])
///     .columns(["tenant", "id", "kind", "created_at"])
///     .page_size(1000);
/// ```
///
/// Checkpoint: `{"after": [k1, k2, …], "position": n}`, the key of the last row
/// returned and how many rows were returned before it; resuming reads the rows
/// whose key is greater.
#[derive(Debug)]
pub struct SqlReader {
    url: String,
    source: SqlSource,
    key: Vec<String>,
    columns: Vec<String>,
    page_size: usize,
    count_total: bool,
    connect_timeout: Duration,
    db: Option<Db>,
    plan: Option<Plan>,
    buffer: VecDeque<(Value, Vec<Value>)>,
    after: Option<Vec<Value>>,
    exhausted: bool,
    position: u64,
    total: Option<u64>,
    /// This reader's share, `(index, of)`, split on the first key column.
    partition: Option<(usize, usize)>,
    /// The share's key range `[lo, hi)`, fixed when first opened and kept in the
    /// checkpoint so a restart reads the same range.
    range: Option<(i64, i64)>,
}

impl SqlReader {
    /// Reads all columns of `table`, ordered by the unique `key` columns, in pages
    /// of 1000 rows.
    pub fn table<K: Into<String>>(
        url: impl Into<String>,
        table: impl Into<String>,
        key: impl IntoIterator<Item = K>,
    ) -> Self {
        Self::new(url.into(), SqlSource::Table(table.into()), key)
    }

    /// Reads the rows of a `FROM`/`WHERE` fragment (see [`SqlSource::Query`]).
    pub fn query<K: Into<String>>(
        url: impl Into<String>,
        fragment: impl Into<String>,
        key: impl IntoIterator<Item = K>,
    ) -> Self {
        Self::new(url.into(), SqlSource::Query(fragment.into()), key)
    }

    fn new<K: Into<String>>(
        url: String,
        source: SqlSource,
        key: impl IntoIterator<Item = K>,
    ) -> Self {
        Self {
            url,
            source,
            key: key.into_iter().map(Into::into).collect(),
            columns: Vec::new(),
            page_size: 1000,
            count_total: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            db: None,
            plan: None,
            buffer: VecDeque::new(),
            after: None,
            exhausted: false,
            position: 0,
            total: None,
            partition: None,
            range: None,
        }
    }

    /// Reads only share `index` of `of` (0-based): the rows whose first key
    /// column (an integer) falls in the `index`-th of `of` equal ranges between
    /// its minimum and maximum, measured when the reader first opens.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Partition`] when `index` is not below `of`.
    pub fn partition(mut self, index: usize, of: usize) -> Result<Self, ConfigError> {
        if of == 0 || index >= of {
            return Err(ConfigError::Partition { index, of });
        }
        self.partition = Some((index, of));
        Ok(self)
    }

    /// The columns each item gets, by exact name (quoted in the SQL). Empty or
    /// `["*"]` (the default): every column of the source.
    #[must_use]
    pub fn columns<C: Into<String>>(mut self, columns: impl IntoIterator<Item = C>) -> Self {
        self.columns = columns.into_iter().map(Into::into).collect();
        if self.columns.len() == 1 && self.columns[0] == "*" {
            self.columns.clear();
        }
        self
    }

    setters! {
        /// Rows per statement (default 1000).
        #[must_use]
        page_size(page_size: usize);
        /// Counts the source's rows on open (`SELECT COUNT(*)`), for
        /// [`total`](Reader::total) and so the ETA. Off by default: a count scans
        /// the whole source.
        #[must_use]
        count_total(count_total: bool);
        /// How long connecting (and taking a pooled connection) may take, retries
        /// included, before it is a transient error (default 30 s).
        #[must_use]
        connect_timeout(connect_timeout: Duration);
    }

    /// The `FROM` part of every statement: the source, narrowed to this
    /// partition's key range.
    fn source_sql(&self, d: DbKind) -> String {
        let base = self.base_source_sql();
        match self.range {
            Some((lo, hi)) => {
                let k = quote_ident(d, &self.key[0]);
                format!(
                    "(SELECT * FROM {base} WHERE {SRC}.{k} >= {lo} AND {SRC}.{k} < {hi}) AS {SRC}"
                )
            }
            None => base,
        }
    }

    /// The key range of this reader's partition: `[lo, hi)` of the first key
    /// column, or `None` when the source is empty.
    async fn partition_range(
        &self,
        db: &Db,
        index: usize,
        of: usize,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let d = db.kind();
        let k = quote_ident(d, &self.key[0]);
        let sql = format!(
            "SELECT CAST(MIN({SRC}.{k}) AS BIGINT), CAST(MAX({SRC}.{k}) AS BIGINT) FROM {}",
            self.base_source_sql()
        );
        let sql = if d == DbKind::MySql {
            sql.replace("AS BIGINT)", "AS SIGNED)")
        } else {
            sql
        };
        let (min, max): (Option<i64>, Option<i64>) = on_db!(db, pool => sqlx::query(&sql)
            .fetch_one(pool)
            .await
            .and_then(|r| Ok((r.try_get::<Option<i64>, _>(0)?, r.try_get::<Option<i64>, _>(1)?)))
            .map_err(|e| read_error(
                &format!("measuring the key range of {:?} to partition it (the first key column must be an integer)", self.key[0]),
                &e,
            ))?);
        let (Some(min), Some(max)) = (min, max) else {
            return Ok(None);
        };
        let width = i128::from(max) - i128::from(min) + 1;
        let at = |i: usize| (i128::from(min) + width * i as i128 / of as i128) as i64;
        let hi = if index + 1 == of {
            max.saturating_add(1)
        } else {
            at(index + 1)
        };
        Ok(Some((at(index), hi)))
    }

    /// The source itself.
    fn base_source_sql(&self) -> String {
        match &self.source {
            SqlSource::Table(t) => format!("{t} AS {SRC}"),
            SqlSource::Query(q) => {
                let q = q.trim();
                let q = match q.split_once(char::is_whitespace) {
                    Some((first, rest)) if first.eq_ignore_ascii_case("from") => rest.trim(),
                    _ => q,
                };
                format!("(SELECT * FROM {q}) AS {SRC}")
            }
        }
    }

    /// Describes the source and builds the statements.
    async fn build_plan(&self, db: &Db) -> Result<Plan, ReadError> {
        let d = db.kind();
        let from = self.source_sql(d);
        let describe = format!("SELECT * FROM {from}");
        let described: Vec<(String, String)> = on_db!(db, pool => {
            let stmt = pool
                .prepare(&describe)
                .await
                .map_err(|e| read_error("describing the source", &e))?;
            stmt.columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
                .collect()
        });
        let find = |name: &str| -> Result<&str, ReadError> {
            described
                .iter()
                .find(|(n, _)| n == name)
                .or_else(|| described.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
                .map(|(_, t)| t.as_str())
                .ok_or_else(|| {
                    let names: Vec<&str> = described.iter().map(|(n, _)| n.as_str()).collect();
                    ReadError::Fatal(format!(
                        "column {name:?} is not in the source (it has {})",
                        names.join(", ")
                    ))
                })
        };
        let columns: Vec<String> = if self.columns.is_empty() {
            described.iter().map(|(n, _)| n.clone()).collect()
        } else {
            self.columns.clone()
        };
        let mut select = Vec::with_capacity(columns.len() + self.key.len());
        for c in &columns {
            select.push(select_expr(d, c, find(c)?, &quote_ident(d, c)));
        }
        let mut key_types = Vec::with_capacity(self.key.len());
        for (i, k) in self.key.iter().enumerate() {
            let ty = find(k)?;
            select.push(select_expr(
                d,
                k,
                ty,
                &quote_ident(d, &format!("sluice_key_{i}")),
            ));
            key_types.push(ty.to_owned());
        }
        let select = select.join(", ");
        let keys: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("{SRC}.{}", quote_ident(d, k)))
            .collect();
        let order = keys.join(", ");
        let params: Vec<String> = key_types
            .iter()
            .enumerate()
            .map(|(i, ty)| match d {
                // Parameters are typed by what is bound (bigint, double, text):
                // cast them to the column's type so any key type compares.
                DbKind::Postgres => format!("CAST(${} AS {ty})", i + 1),
                _ => "?".to_owned(),
            })
            .collect();
        let cond = if keys.len() == 1 {
            format!("{} > {}", keys[0], params[0])
        } else {
            format!("({order}) > ({})", params.join(", "))
        };
        let page = self.page_size;
        Ok(Plan {
            first: format!("SELECT {select} FROM {from} ORDER BY {order} LIMIT {page}"),
            next: format!("SELECT {select} FROM {from} WHERE {cond} ORDER BY {order} LIMIT {page}"),
            count: format!("SELECT COUNT(*) FROM {from}"),
            columns,
        })
    }

    /// Reads the next page into the buffer.
    async fn fetch_page(&mut self) -> Result<(), ReadError> {
        let (Some(db), Some(plan)) = (&self.db, &self.plan) else {
            return Err(ReadError::Fatal("the SQL reader is not open".into()));
        };
        let sql = if self.after.is_some() {
            &plan.next
        } else {
            &plan.first
        };
        let after = self.after.clone().unwrap_or_default();
        let ncols = plan.columns.len();
        let nkeys = self.key.len();
        let decoded: Result<Vec<Vec<Value>>, String> = on_db!(db, pool => {
            let mut q = sqlx::query(sql);
            for v in &after {
                q = bind_json!(q, v);
            }
            let rows = q
                .fetch_all(pool)
                .await
                .map_err(|e| read_error("reading a page", &e))?;
            rows.iter()
                .map(|r| (0..ncols + nkeys).map(|i| r.cell(i)).collect())
                .collect()
        });
        let rows = decoded.map_err(|e| ReadError::Fatal(format!("decoding a row: {e}")))?;
        if rows.len() < self.page_size {
            self.exhausted = true;
        }
        for mut cells in rows {
            let key = cells.split_off(ncols);
            let item: Map<String, Value> = plan.columns.iter().cloned().zip(cells).collect();
            self.buffer.push_back((Value::Object(item), key));
        }
        Ok(())
    }
}

/// The select-list expression of column `name` of type `ty`, as `alias`: the
/// column itself when its type decodes natively, else cast to text.
fn select_expr(d: DbKind, name: &str, ty: &str, alias: &str) -> String {
    let col = format!("{SRC}.{}", quote_ident(d, name));
    let native = match d {
        DbKind::Sqlite => true,
        DbKind::Postgres => pg_native(ty),
        DbKind::MySql => mysql_native(ty),
    };
    match (native, d) {
        (true, _) => format!("{col} AS {alias}"),
        (false, DbKind::MySql) => format!("CAST({col} AS CHAR) AS {alias}"),
        (false, _) => format!("CAST({col} AS TEXT) AS {alias}"),
    }
}

fn pg_native(ty: &str) -> bool {
    matches!(
        ty,
        "BOOL"
            | "INT2"
            | "INT4"
            | "INT8"
            | "FLOAT4"
            | "FLOAT8"
            | "TEXT"
            | "VARCHAR"
            | "BPCHAR"
            | "NAME"
    )
}

fn mysql_native(ty: &str) -> bool {
    matches!(
        ty,
        "BOOLEAN"
            | "TINYINT"
            | "SMALLINT"
            | "MEDIUMINT"
            | "INT"
            | "BIGINT"
            | "TINYINT UNSIGNED"
            | "SMALLINT UNSIGNED"
            | "MEDIUMINT UNSIGNED"
            | "INT UNSIGNED"
            | "BIGINT UNSIGNED"
            | "FLOAT"
            | "DOUBLE"
            | "CHAR"
            | "VARCHAR"
            | "TINYTEXT"
            | "TEXT"
            | "MEDIUMTEXT"
            | "LONGTEXT"
            | "ENUM"
            | "NULL"
    )
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// One cell of a row as JSON.
trait JsonCell: Row + Sized
where
    usize: sqlx::ColumnIndex<Self>,
{
    /// Cell `i`, whose value (not NULL) has type `ty`, as JSON.
    fn typed_cell(&self, i: usize, ty: &str) -> Result<Value, sqlx::Error>;

    /// Cell `i` as JSON: NULL as `null`, else by its type.
    fn cell(&self, i: usize) -> Result<Value, String> {
        let raw = self.try_get_raw(i).map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        // SQLite: the type of the value's storage class.
        let ty = raw.type_info().name().to_owned();
        self.typed_cell(i, &ty)
            .map_err(|e| format!("column {i} ({ty}): {e}"))
    }
}

impl JsonCell for SqliteRow {
    fn typed_cell(&self, i: usize, storage: &str) -> Result<Value, sqlx::Error> {
        // SQLite is dynamically typed: decode by the value's storage class, and
        // turn integers of a column declared BOOLEAN into booleans.
        let declared = self.columns()[i].type_info().name().to_owned();
        Ok(match storage {
            "INTEGER" => {
                let n: i64 = self.try_get_unchecked(i)?;
                if declared.eq_ignore_ascii_case("BOOLEAN") {
                    Value::Bool(n != 0)
                } else {
                    Value::from(n)
                }
            }
            "REAL" => float(self.try_get_unchecked(i)?),
            "BLOB" => {
                let b: Vec<u8> = self.try_get_unchecked(i)?;
                Value::String(String::from_utf8_lossy(&b).into_owned())
            }
            _ => Value::String(self.try_get_unchecked(i)?),
        })
    }
}

impl JsonCell for PgRow {
    fn typed_cell(&self, i: usize, ty: &str) -> Result<Value, sqlx::Error> {
        Ok(match ty {
            "BOOL" => Value::Bool(self.try_get(i)?),
            "INT2" => Value::from(self.try_get::<i16, _>(i)?),
            "INT4" => Value::from(self.try_get::<i32, _>(i)?),
            "INT8" => Value::from(self.try_get::<i64, _>(i)?),
            "FLOAT4" => float(f64::from(self.try_get::<f32, _>(i)?)),
            "FLOAT8" => float(self.try_get(i)?),
            _ => Value::String(self.try_get(i)?),
        })
    }
}

impl JsonCell for MySqlRow {
    fn typed_cell(&self, i: usize, ty: &str) -> Result<Value, sqlx::Error> {
        Ok(match ty {
            "BOOLEAN" => Value::Bool(self.try_get(i)?),
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
                Value::from(self.try_get::<i64, _>(i)?)
            }
            t if t.ends_with(" UNSIGNED") => Value::from(self.try_get::<u64, _>(i)?),
            "FLOAT" => float(f64::from(self.try_get::<f32, _>(i)?)),
            "DOUBLE" => float(self.try_get(i)?),
            "NULL" => Value::Null,
            _ => match self.try_get::<String, _>(i) {
                Ok(s) => Value::String(s),
                // Binary strings (a cast of a BLOB, BINARY, …).
                Err(_) => {
                    let b: Vec<u8> = self.try_get_unchecked(i)?;
                    Value::String(String::from_utf8_lossy(&b).into_owned())
                }
            },
        })
    }
}

#[async_trait]
impl Reader for SqlReader {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), ReadError> {
        if self.key.is_empty() {
            return Err(ReadError::Fatal(
                "the SQL reader needs at least one key column".into(),
            ));
        }
        if self.page_size == 0 {
            return Err(ReadError::Fatal("the SQL reader's page size is 0".into()));
        }
        let after = match checkpoint {
            None | Some(Value::Null) => None,
            Some(cp) => match &cp["after"] {
                Value::Null => None,
                Value::Array(a) if a.len() == self.key.len() => Some(a.clone()),
                other => {
                    return Err(ReadError::Fatal(format!(
                        "checkpoint {cp} does not fit this reader: \"after\" is {other}, expected {} key values",
                        self.key.len()
                    )));
                }
            },
        };
        if self.db.is_none() {
            let db = connect(&self.url, 2, self.connect_timeout).await?;
            self.db = Some(db);
        }
        let Some(db) = self.db.clone() else {
            return Err(ReadError::Fatal("no database".into()));
        };
        if let Some((index, of)) = self.partition {
            let saved = checkpoint
                .and_then(|cp| cp["range"].as_array())
                .and_then(|r| Some((r.first()?.as_i64()?, r.get(1)?.as_i64()?)));
            let range = match saved {
                Some(r) => r,
                // An empty source: an empty range.
                None => self
                    .partition_range(&db, index, of)
                    .await?
                    .unwrap_or((0, 0)),
            };
            if self.range != Some(range) {
                self.range = Some(range);
                self.plan = None;
            }
        }
        if self.plan.is_none() {
            self.plan = Some(self.build_plan(&db).await?);
        }
        if self.count_total
            && self.total.is_none()
            && let Some(plan) = &self.plan
        {
            let n: i64 = on_db!(&db, pool => sqlx::query(&plan.count)
                .fetch_one(pool)
                .await
                .and_then(|r| r.try_get::<i64, _>(0))
                .map_err(|e| read_error("counting the rows", &e))?);
            self.total = u64::try_from(n).ok();
        }
        self.position = checkpoint
            .and_then(|cp| cp["position"].as_u64())
            .unwrap_or(0);
        self.after = after;
        self.buffer.clear();
        self.exhausted = false;
        Ok(())
    }

    async fn read(&mut self) -> Result<Option<ReadItem>, ReadError> {
        loop {
            if let Some((item, key)) = self.buffer.pop_front() {
                self.after = Some(key);
                self.position += 1;
                return Ok(Some(ReadItem {
                    item,
                    position: self.position,
                }));
            }
            if self.exhausted {
                return Ok(None);
            }
            self.fetch_page().await?;
        }
    }

    fn checkpoint(&self) -> Value {
        match self.range {
            Some((lo, hi)) => {
                json!({"after": self.after, "position": self.position, "range": [lo, hi]})
            }
            None => json!({"after": self.after, "position": self.position}),
        }
    }

    fn total(&self) -> Option<u64> {
        self.total
    }
}
