//! The built-in writers against real databases and files.
//!
//! Each SQL scenario runs on SQLite (a temporary file), PostgreSQL (a fresh
//! database per test on `SLUICE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and MariaDB/MySQL (a fresh
//! database per test on `SLUICE_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`); `scripts/test` starts both servers.

use serde_json::{Value, json};
use sluice_batch::writers::{
    Column, DbKind, FileFormat, FileWriter, SqlWriter, SqlWriterOptions, WriteMode,
};
use sluice_batch::{
    CheckpointKey, Chunk, Committed, StepCounts, TargetCheckpoint, WriteError, Writer,
};
use sqlx::{MySqlPool, PgPool, SqlitePool};

mod common;
use common::{Server, ServerDb, WriteItems};

/// A database for one test, dropped with it.
struct TestDb {
    kind: DbKind,
    url: String,
    _server: Option<ServerDb>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    async fn new(kind: DbKind) -> TestDb {
        let server = match kind {
            DbKind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("w.db").display());
                return TestDb {
                    kind,
                    url,
                    _server: None,
                    _dir: Some(dir),
                };
            }
            DbKind::Postgres => Server::Postgres,
            DbKind::MySql => Server::MySql,
        };
        let db = ServerDb::new(server, "sluice_w").await;
        TestDb {
            kind,
            url: db.url.clone(),
            _server: Some(db),
            _dir: None,
        }
    }

    fn writer(&self, options: SqlWriterOptions) -> SqlWriter {
        SqlWriter::new(&self.url, options).unwrap()
    }

    /// A writer opened without a checkpoint, and a pool to check what it writes.
    async fn opened_and_check(&self, options: SqlWriterOptions) -> (SqlWriter, Check) {
        (self.opened(options).await, self.check().await)
    }

    /// A writer, opened without a checkpoint.
    async fn opened(&self, options: SqlWriterOptions) -> SqlWriter {
        let mut w = self.writer(options);
        w.open(None).await.unwrap();
        w
    }

    /// A pool to check what the writer wrote.
    async fn check(&self) -> Check {
        match self.kind {
            DbKind::Sqlite => Check::Sqlite(one_connection(&self.url).await),
            DbKind::Postgres => Check::Postgres(one_connection(&self.url).await),
            DbKind::MySql => Check::MySql(one_connection(&self.url).await),
        }
    }

    /// The SQL type of a JSON column here.
    fn json_type(&self) -> &'static str {
        match self.kind {
            DbKind::Postgres => "JSONB",
            _ => "JSON",
        }
    }
}

/// A pool of one connection to `url`.
async fn one_connection<DB: sqlx::Database>(url: &str) -> sqlx::Pool<DB> {
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// Every row of `sql` (its `?`/`$n` parameters bound to `binds`) on `pool`, each
/// column read as text.
async fn text_rows<DB>(pool: &sqlx::Pool<DB>, sql: &str, binds: &[&str]) -> Vec<Vec<Option<String>>>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use sqlx::Row;
    let mut query = sqlx::query::<DB>(sql);
    for b in binds {
        query = query.bind(*b);
    }
    let rows = query
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

/// A connection to read back what was written, every value as text.
enum Check {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl Check {
    fn kind(&self) -> DbKind {
        match self {
            Check::Sqlite(_) => DbKind::Sqlite,
            Check::Postgres(_) => DbKind::Postgres,
            Check::MySql(_) => DbKind::MySql,
        }
    }

    /// `column` as text, quoted for this database.
    fn text(&self, column: &str) -> String {
        match self.kind() {
            DbKind::MySql => self.cast(&format!("`{column}`")),
            _ => self.cast(&format!("\"{column}\"")),
        }
    }

    /// The SQL expression `expr` cast to text on this database.
    fn cast(&self, expr: &str) -> String {
        match self.kind() {
            DbKind::Sqlite => format!("CAST({expr} AS TEXT)"),
            DbKind::Postgres => format!("{expr}::text"),
            DbKind::MySql => format!("CAST({expr} AS CHAR)"),
        }
    }

    /// Every row of `sql` with `binds`, as text.
    async fn query(&self, sql: &str, binds: &[&str]) -> Vec<Vec<Option<String>>> {
        match self {
            Check::Sqlite(p) => text_rows(p, sql, binds).await,
            Check::Postgres(p) => text_rows(p, sql, binds).await,
            Check::MySql(p) => text_rows(p, sql, binds).await,
        }
    }

    /// The first column of every row of `sql` with `binds` (never NULL).
    async fn strings(&self, sql: &str, binds: &[&str]) -> Vec<String> {
        let rows = self.query(sql, binds).await;
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }

    /// Rows of `SELECT <columns as text> FROM table <rest>`.
    async fn rows(&self, table: &str, columns: &[&str], rest: &str) -> Vec<Vec<Option<String>>> {
        let cols = columns
            .iter()
            .map(|c| self.text(c))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {cols} FROM {table} {rest}");
        self.query(&sql, &[]).await
    }

    /// Every row of `table` in `id` order.
    async fn rows_by_id(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        self.rows(table, columns, "ORDER BY id").await
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT {} FROM {table}", self.cast("COUNT(*)"));
        self.strings(&sql, &[]).await[0].parse().unwrap()
    }

    /// Names of the tables of the database.
    async fn tables(&self) -> Vec<String> {
        let sql = match self.kind() {
            DbKind::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
            DbKind::Postgres => "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            DbKind::MySql => {
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE()"
            }
        };
        self.strings(sql, &[]).await
    }

    /// Names of the indexes of `table` (other than the primary key) and the
    /// columns of its primary key.
    async fn indexes_and_key(&self, table: &str) -> (Vec<String>, Vec<String>) {
        let (indexes, key) = match self.kind() {
            DbKind::Sqlite => (
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? \
                 AND sql IS NOT NULL ORDER BY name",
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
            ),
            DbKind::Postgres => (
                "SELECT indexname::text FROM pg_indexes WHERE tablename = $1 \
                 AND indexname NOT LIKE '%_pkey' ORDER BY 1",
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY a.attnum",
            ),
            DbKind::MySql => (
                "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = ? AND index_name <> 'PRIMARY' \
                 ORDER BY 1",
                "SELECT CAST(column_name AS CHAR) FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = ? AND index_name = 'PRIMARY' \
                 ORDER BY seq_in_index",
            ),
        };
        (
            self.strings(indexes, &[table]).await,
            self.strings(key, &[table]).await,
        )
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// The wide table of the upsert scenario: 30 columns, so that 2,500 rows need
/// more than one statement on every database (75,000 parameters).
const EXTRA: usize = 24;

fn measurement_columns() -> Vec<Column> {
    let mut cols = vec![
        Column::new("id", "BIGINT"),
        Column::new("station", "TEXT").not_null(),
        Column::new("ts", "TIMESTAMP"),
        Column::new("pm10", "DOUBLE PRECISION"),
        Column::new("pm25", "DOUBLE PRECISION"),
        Column::new("note", "VARCHAR(40)"),
    ];
    cols.extend((0..EXTRA).map(|i| Column::new(format!("c{i:02}"), "TEXT")));
    cols
}

fn measurement(id: i64, version: &str) -> Value {
    let mut item = json!({
        "id": id,
        "station": format!("station-{}", id % 17),
        "ts": format!("2024-01-{:02} {:02}:00:00", 1 + id % 28, id % 24),
        "pm10": id as f64 + 0.5,
        "pm25": format!("{}.25", id % 100),
        "note": format!("{version} {id}"),
    });
    for i in 0..EXTRA {
        item[format!("c{i:02}")] = json!(format!("{version}-{i}"));
    }
    item
}

/// `measurement(id, version)` for each id of `ids`.
fn measurements(ids: std::ops::Range<i64>, version: &str) -> Vec<Value> {
    ids.map(|id| measurement(id, version)).collect()
}

fn measurement_options() -> SqlWriterOptions {
    SqlWriterOptions::new("measurements")
        .key(["id"])
        .columns(measurement_columns())
        .create(true)
        .index(["station", "ts"])
}

/// Options for a table `name` created with a `BIGINT` key `id` and `columns`.
fn keyed_table(name: &str, columns: &[(&str, &str)]) -> SqlWriterOptions {
    let columns = std::iter::once(Column::new("id", "BIGINT"))
        .chain(columns.iter().map(|(c, t)| Column::new(*c, *t)))
        .collect();
    SqlWriterOptions::new(name)
        .key(["id"])
        .columns(columns)
        .create(true)
}

/// `CREATE TABLE` with declared types, primary key and an index.
async fn create_with_types_key_and_index(db: &TestDb) {
    let mut w = db.opened(measurement_options()).await;
    assert_eq!(w.kind(), db.kind);
    assert_eq!(w.url(), db.url);
    let check = db.check().await;
    assert_eq!(check.tables().await, vec!["measurements".to_string()]);
    let (indexes, key) = check.indexes_and_key("measurements").await;
    assert_eq!(indexes, vec!["measurements_station_ts_idx".to_string()]);
    assert_eq!(key, vec!["id".to_string()]);
    // Opening again (a restart) is harmless.
    let _again = db.opened(measurement_options()).await;
    w.write_items(&[measurement(1, "v1")]).await.unwrap();
    assert_eq!(check.count("measurements").await, 1);
    // Declared types are applied: a numeric column refuses text.
    let mut bad = measurement(2, "v1");
    bad["pm10"] = json!("not a number");
    let res = w.write_items(&[bad]).await;
    // SQLite stores what it cannot convert as it is.
    if db.kind != DbKind::Sqlite {
        assert!(matches!(res, Err(WriteError::Item(_))), "{res:?}");
    }
    // Too long for VARCHAR(40): refused, never silently cut.
    let mut long = measurement(3, "v1");
    long["note"] = json!("x".repeat(41));
    let res = w.write_items(&[long]).await;
    if db.kind != DbKind::Sqlite {
        assert!(matches!(res, Err(WriteError::Item(_))), "{res:?}");
    }
}

/// On PostgreSQL, the multi-row `INSERT … VALUES` path even for big chunks (by
/// default they go through `COPY` or `MERGE … UNNEST`, see
/// `postgres_bulk_upserts`).
fn multirow(mut options: SqlWriterOptions) -> SqlWriterOptions {
    options.pg_bulk_min_rows = Some(usize::MAX);
    options
}

/// 2,500 items in one chunk (split across statements), then an overlapping set
/// that updates rather than duplicates.
async fn upsert_splits_and_updates(db: &TestDb) {
    let (mut w, check) = db.opened_and_check(multirow(measurement_options())).await;
    let first = measurements(0..2500, "v1");
    w.write_items(&first).await.unwrap();
    assert!(
        w.statements() >= 2,
        "2,500 rows × 30 columns must take more than one statement, took {}",
        w.statements()
    );
    assert_eq!(check.count("measurements").await, 2500);

    let second = measurements(2000..3000, "v2");
    w.write_items(&second).await.unwrap();
    assert_eq!(check.count("measurements").await, 3000);
    // Writing the same chunk again changes nothing (idempotent).
    w.write_items(&second).await.unwrap();
    assert_eq!(check.count("measurements").await, 3000);

    let cols = ["id", "station", "pm10", "pm25", "note", "c00", "c23"];
    let rows = check
        .rows(
            "measurements",
            &cols,
            "WHERE id IN (10, 1999, 2000, 2100, 2999) ORDER BY id",
        )
        .await;
    let row = |id: i64, v: &str| {
        vec![
            s(&id.to_string()),
            s(&format!("station-{}", id % 17)),
            s(&format!("{}.5", id)),
            s(&format!("{}.25", id % 100)),
            s(&format!("{v} {id}")),
            s(&format!("{v}-0")),
            s(&format!("{v}-23")),
        ]
    };
    assert_eq!(
        rows,
        vec![
            row(10, "v1"),
            row(1999, "v1"),
            row(2000, "v2"),
            row(2100, "v2"),
            row(2999, "v2")
        ]
    );
    let ts = check.rows("measurements", &["ts"], "WHERE id = 2100").await;
    let ts = ts[0][0].clone().unwrap();
    assert!(ts.starts_with("2024-01-01 12:00:00"), "{ts}");

    // Duplicate keys inside one chunk: the last one wins.
    let dup = vec![
        measurement(5, "a"),
        measurement(5, "b"),
        measurement(6, "c"),
    ];
    w.write_items(&dup).await.unwrap();
    let rows = check
        .rows("measurements", &["note"], "WHERE id IN (5, 6) ORDER BY id")
        .await;
    assert_eq!(rows, vec![vec![s("b 5")], vec![s("c 6")]]);
    assert_eq!(check.count("measurements").await, 3000);
}

/// A chunk with one item violating NOT NULL: an item error, and nothing of the
/// chunk committed, even the statements before the bad one.
async fn not_null_violation_rolls_back_the_chunk(db: &TestDb) {
    let (mut w, check) = db
        .opened_and_check(multirow(measurement_options()).max_params(90))
        .await;
    let mut chunk = measurements(0..10, "v1");
    chunk[8]["station"] = Value::Null;
    let err = w.write_items(&chunk).await.unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    assert!(err.to_string().contains("measurements"), "{err}");
    assert!(
        w.statements() >= 3,
        "three rows a statement: {}",
        w.statements()
    );
    assert_eq!(check.count("measurements").await, 0);
    // The step then writes the items one by one: all but the bad one go in.
    for item in &chunk {
        let res = w.write_items(std::slice::from_ref(item)).await;
        assert_eq!(res.is_ok(), !item["station"].is_null(), "{res:?}");
    }
    assert_eq!(check.count("measurements").await, 9);
    // A missing key is NULL too.
    let mut missing = measurement(20, "v1");
    missing.as_object_mut().unwrap().remove("station");
    let err = w
        .write_items(&[measurement(21, "v1"), missing])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    assert_eq!(check.count("measurements").await, 9);
    // A duplicate key in append mode is an item error as well.
    let mut append = db
        .opened(measurement_options().mode(WriteMode::Append))
        .await;
    let err = append
        .write_items(&[measurement(100, "v1"), measurement(1, "v1")])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    assert_eq!(check.count("measurements").await, 9);
}

/// JSON types (int, float, bool, null, nested object) round-trip, and a numeric
/// string in a numeric column is cast by the database.
async fn json_types_round_trip(db: &TestDb) {
    let options = keyed_table(
        "typed",
        &[
            ("i", "BIGINT"),
            ("f", "DOUBLE PRECISION"),
            ("b", "BOOLEAN"),
            ("n", "TEXT"),
            ("obj", db.json_type()),
            ("txt", "TEXT"),
        ],
    );
    let (mut w, check) = db.opened_and_check(options).await;
    let obj = json!({"a": 1, "b": [true, null, "x"], "c": {"d": 2.5}});
    w.write_items(&[
        json!({"id": 1, "i": 42, "f": 1.25, "b": true, "n": null, "obj": obj, "txt": "plain", "ignored": 1}),
        json!({"id": 2, "i": -7, "f": -0.5, "b": false, "obj": [1, 2], "txt": "{\"not\": \"json\"}"}),
    ])
    .await
    .unwrap();
    // The same statement again, with other JSON types in the same columns.
    w.write_items(&[
        json!({"id": 3, "i": "9000000000", "f": "3.75", "b": true, "n": null, "obj": "a string", "txt": 12}),
        json!({"id": 4, "i": 9_000_000_001_i64, "f": 7, "b": false, "n": null, "obj": null, "txt": true}),
    ])
    .await
    .unwrap();
    let rows = check
        .rows_by_id("typed", &["id", "i", "f", "b", "n", "obj", "txt"])
        .await;
    let (t, f) = match db.kind {
        DbKind::Postgres => ("true", "false"),
        _ => ("1", "0"),
    };
    let txt_true = match db.kind {
        DbKind::Postgres => "true",
        _ => "1",
    };
    let json_of = |v: &Option<String>| -> Option<Value> {
        v.as_deref().map(|s| serde_json::from_str(s).unwrap())
    };
    assert_eq!(rows[0][..5], [s("1"), s("42"), s("1.25"), s(t), None]);
    assert_eq!(json_of(&rows[0][5]), Some(obj));
    assert_eq!(rows[0][6], s("plain"));
    assert_eq!(rows[1][..5], [s("2"), s("-7"), s("-0.5"), s(f), None]);
    assert_eq!(json_of(&rows[1][5]), Some(json!([1, 2])));
    assert_eq!(rows[1][6], s("{\"not\": \"json\"}"));
    assert_eq!(
        rows[2][..5],
        [s("3"), s("9000000000"), s("3.75"), s(t), None]
    );
    assert_eq!(json_of(&rows[2][5]), Some(json!("a string")));
    assert_eq!(rows[2][6], s("12"));
    // SQLite keeps a REAL column's 7 as 7.0.
    let seven = if db.kind == DbKind::Sqlite {
        "7.0"
    } else {
        "7"
    };
    assert_eq!(
        rows[3][..5],
        [s("4"), s("9000000001"), s(seven), s(f), None]
    );
    assert_eq!(rows[3][5], None);
    assert_eq!(rows[3][6], s(txt_true));
}

/// Append mode (PostgreSQL: COPY) with tabs, newlines, backslashes, quotes and
/// Korean text.
async fn append_keeps_special_characters(db: &TestDb) {
    let options =
        keyed_table("notes", &[("body", "TEXT"), ("extra", "TEXT")]).mode(WriteMode::Append);
    let (mut w, check) = db.opened_and_check(options).await;
    let bodies = [
        "tab\there",
        "new\nline and\r\ncrlf",
        "back\\slash \\N \\t \\\\",
        "quotes ' \" `` ''",
        "서울 종로구 대기질 측정소 — 미세먼지 좋음",
        "",
        "\\.",
        "comma, semicolon; pipe|",
        "emoji 🌫️ and NUL-free \u{7f}",
    ];
    let items: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"id": i, "body": b, "extra": if i % 2 == 0 { Value::Null } else { json!({"k": b}) }}))
        .collect();
    w.write_items(&items).await.unwrap();
    if db.kind == DbKind::Postgres {
        assert_eq!(w.statements(), 1, "one COPY for the chunk");
    }
    let rows = check.rows_by_id("notes", &["id", "body", "extra"]).await;
    assert_eq!(rows.len(), bodies.len());
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(rows[i][1].as_deref(), Some(*b), "row {i}");
        let extra: Option<Value> = rows[i][2]
            .as_deref()
            .map(|s| serde_json::from_str(s).unwrap());
        if i % 2 == 0 {
            assert_eq!(extra, None);
        } else {
            assert_eq!(extra, Some(json!({"k": b})));
        }
    }
    // Appending again adds rows; a bad one refuses the whole chunk.
    w.write_items(&[json!({"id": 100, "body": "more"})])
        .await
        .unwrap();
    let err = w
        .write_items(&[
            json!({"id": 101, "body": "x"}),
            json!({"id": "not a number", "body": "y"}),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    assert_eq!(check.count("notes").await, bodies.len() as i64 + 1);
}

/// Bad identifiers and types are refused before any SQL runs.
async fn bad_identifiers_are_refused(db: &TestDb) {
    let fatal_at = |url: &str, options: SqlWriterOptions| match SqlWriter::new(url, options) {
        Err(WriteError::Fatal(m)) => m,
        other => panic!("expected a fatal error, got {other:?}"),
    };
    let fatal = |options| fatal_at(&db.url, options);
    let one_column = |name: &str, ty: &str| {
        SqlWriterOptions::new("t")
            .columns(vec![Column::new(name, ty)])
            .create(true)
    };
    let m = fatal(SqlWriterOptions::new("t; DROP TABLE x").create(true));
    assert!(m.contains("invalid table name"), "{m}");
    fatal(SqlWriterOptions::new("a.b.c"));
    fatal(SqlWriterOptions::new("\"t\""));
    let m = fatal(one_column("a\" TEXT); DROP TABLE x; --", "TEXT"));
    assert!(m.contains("invalid column name"), "{m}");
    let m = fatal(one_column("a", "TEXT); DROP TABLE x; --"));
    assert!(m.contains("invalid SQL type"), "{m}");
    fatal(SqlWriterOptions::new("t").key(["id`"]).create(true));
    fatal(
        SqlWriterOptions::new("t")
            .key(["id"])
            .columns(vec![Column::new("a", "TEXT")]),
    );
    fatal(SqlWriterOptions::new("t").index(["x y"]));
    fatal_at("redis://127.0.0.1/", SqlWriterOptions::new("t"));

    // Columns from the first item: a bad key is refused before CREATE TABLE.
    let mut w = db
        .opened(SqlWriterOptions::new("from_items").create(true))
        .await;
    let err = w
        .write_items(&[json!({"ok": 1, "bad key); DROP TABLE x; --": 2})])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Fatal(_)), "{err:?}");
    let check = db.check().await;
    assert!(
        check.tables().await.is_empty(),
        "{:?}",
        check.tables().await
    );

    // A missing table is fatal, with the table in the message.
    let mut w = db.writer(SqlWriterOptions::new("missing").key(["id"]));
    let err = w.open(None).await.unwrap_err();
    assert!(matches!(err, WriteError::Fatal(_)), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
}

/// Columns taken from the first item, typed TEXT, created on the first chunk.
async fn columns_from_the_first_item(db: &TestDb) {
    let (mut w, check) = db
        .opened_and_check(SqlWriterOptions::new("loose").key(["code"]).create(true))
        .await;
    w.write_items(&[
        json!({"code": "A1", "name": "서울", "value": 1.5}),
        json!({"code": "B2", "name": "부산"}),
    ])
    .await
    .unwrap();
    w.write_items(&[json!({"code": "A1", "name": "Seoul", "value": 2, "other": "ignored"})])
        .await
        .unwrap();
    let rows = check
        .rows("loose", &["code", "name", "value"], "ORDER BY code")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![s("A1"), s("Seoul"), s("2")],
            vec![s("B2"), s("부산"), None]
        ]
    );
}

/// A database that cannot be reached is a transient error.
async fn unreachable_database_is_transient(db: &TestDb) {
    let url = match db.kind {
        DbKind::Sqlite => return,
        DbKind::Postgres => "postgres://postgres@127.0.0.1:9/x",
        DbKind::MySql => "mysql://root@127.0.0.1:9/x",
    };
    let mut w = SqlWriter::new(url, SqlWriterOptions::new("t")).unwrap();
    let err = w.open(None).await.unwrap_err();
    assert!(matches!(err, WriteError::Transient(_)), "{err:?}");
}

/// The step's checkpoint row in the target's `sluice_checkpoint` for `execution`.
fn step_key(execution: i64) -> CheckpointKey {
    CheckpointKey {
        job: "air-load".into(),
        instance_id: 7,
        step: "load".into(),
        execution_id: execution,
    }
}

/// The checkpoint after chunk `commits` of 10 rows each.
fn after_chunk(commits: u64) -> TargetCheckpoint {
    TargetCheckpoint {
        counts: StepCounts {
            read: commits * 10,
            written: commits * 10,
            commits,
            ..StepCounts::default()
        },
        checkpoint: json!({"reader": {"row": commits * 10}, "writer": null}),
    }
}

/// `writer` writes `items` with the store's statements for chunk `commits` of `key`.
async fn write_with_checkpoint(
    writer: &mut SqlWriter,
    key: &CheckpointKey,
    commits: u64,
    items: &[Value],
) -> Result<Committed, WriteError> {
    let store = writer.checkpoint_store().unwrap();
    let statements = store.store_statements(key, &after_chunk(commits));
    writer.write(Chunk::Items(items), &statements).await
}

/// The checkpoint rides in the chunk's transaction, appends and upserts alike; a
/// later execution that claims the row gets it; the execution it superseded can
/// neither write a chunk (rolled back whole) nor claim the row again; a fresh
/// start resets it.
async fn checkpoint_store_fences_a_stale_execution(db: &TestDb) {
    for (table, mode) in [
        ("appended", WriteMode::Append),
        ("upserted", WriteMode::Upsert),
    ] {
        let options = keyed_table(table, &[("v", "TEXT")]).mode(mode);
        let (mut first, check) = db.opened_and_check(options.clone()).await;
        let store = first.checkpoint_store().unwrap();
        assert_eq!(store.claim(&step_key(1), true).await.unwrap(), None);
        let chunk = |ids: std::ops::Range<i64>| -> Vec<Value> {
            ids.map(|id| json!({"id": id, "v": format!("v{id}")}))
                .collect()
        };
        let done = write_with_checkpoint(&mut first, &step_key(1), 1, &chunk(0..10)).await;
        assert_eq!(done.unwrap(), Committed::Together, "{table}");

        // Execution 2 resumes: the target holds chunk 1.
        let mut second = db.opened(options.clone()).await;
        let store = second.checkpoint_store().unwrap();
        let held = store.claim(&step_key(2), false).await.unwrap();
        assert_eq!(held, Some(after_chunk(1)), "{table}");

        // Execution 1 is stale: its next chunk rolls back, data and all.
        let stale = write_with_checkpoint(&mut first, &step_key(1), 2, &chunk(10..20)).await;
        let Err(WriteError::Fatal(m)) = stale else {
            panic!("{table}: a stale execution wrote: {stale:?}");
        };
        assert!(m.contains("superseded"), "{m}");
        assert_eq!(
            check.count(table).await,
            10,
            "{table}: nothing of the stale chunk"
        );
        let store = first.checkpoint_store().unwrap();
        let Err(WriteError::Fatal(m)) = store.claim(&step_key(1), false).await else {
            panic!("{table}: a stale execution claimed the row again");
        };
        assert!(m.contains("execution 2") && m.contains("stale"), "{m}");

        // Execution 2 goes on; execution 3 finds its chunk.
        let done = write_with_checkpoint(&mut second, &step_key(2), 2, &chunk(10..20)).await;
        assert_eq!(done.unwrap(), Committed::Together);
        assert_eq!(check.count(table).await, 20, "{table}");
        let mut third = db.opened(options.clone()).await;
        let store = third.checkpoint_store().unwrap();
        assert_eq!(
            store.claim(&step_key(3), false).await.unwrap(),
            Some(after_chunk(2))
        );

        // A fresh start (a rerun) owes nothing to the row.
        assert_eq!(store.claim(&step_key(4), true).await.unwrap(), None);
        assert_eq!(store.claim(&step_key(5), false).await.unwrap(), None);
        let rows = check
            .query(
                &format!(
                    "SELECT {}, {} FROM sluice_checkpoint",
                    check.cast("execution_id"),
                    check.cast("commits")
                ),
                &[],
            )
            .await;
        assert_eq!(rows, [[s("5"), s("0")]], "{table}");
        // Reset for the next mode.
        let key = step_key(6);
        let store = third.checkpoint_store().unwrap();
        store.claim(&key, true).await.unwrap();
    }
}

/// PostgreSQL upserts with the checkpoint: `COPY` under a savepoint while the
/// keys are new, the `UNNEST` upsert in the same transaction once some exist
/// (the failed `COPY` rolled back to its savepoint, the checkpoint stored once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bulk_upserts_commit_the_checkpoint_in_their_transaction() {
    let db = TestDb::new(DbKind::Postgres).await;
    let options = keyed_table("kept", &[("v", "TEXT")]);
    let (mut w, check) = db.opened_and_check(options).await;
    let key = step_key(1);
    w.checkpoint_store()
        .unwrap()
        .claim(&key, true)
        .await
        .unwrap();
    let chunk = |ids: std::ops::Range<i64>, v: &str| -> Vec<Value> {
        ids.map(|id| json!({"id": id, "v": format!("{v}{id}")}))
            .collect()
    };
    for (n, (ids, v)) in [(0..10, "a"), (5..15, "b"), (10..20, "c"), (0..20, "d")]
        .into_iter()
        .enumerate()
    {
        let done = write_with_checkpoint(&mut w, &key, n as u64 + 1, &chunk(ids, v)).await;
        assert_eq!(done.unwrap(), Committed::Together, "chunk {n}");
    }
    assert_eq!(check.count("kept").await, 20);
    let values = check.strings("SELECT v FROM kept ORDER BY id", &[]).await;
    assert_eq!(
        values,
        (0..20).map(|id| format!("d{id}")).collect::<Vec<_>>()
    );
    let mut next = db.opened(keyed_table("kept", &[("v", "TEXT")])).await;
    let store = next.checkpoint_store().unwrap();
    assert_eq!(
        store.claim(&step_key(2), false).await.unwrap(),
        Some(after_chunk(4))
    );
    // The superseded writer's upsert of existing keys rolls back whole.
    let stale = write_with_checkpoint(&mut w, &key, 5, &chunk(0..20, "e")).await;
    assert!(matches!(stale, Err(WriteError::Fatal(_))), "{stale:?}");
    let values = check.strings("SELECT v FROM kept WHERE id = 3", &[]).await;
    assert_eq!(values, ["d3"]);
}

/// Runs each scenario on SQLite, PostgreSQL and MariaDB, as separate tests.
macro_rules! on_all {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::new(super::DbKind::Sqlite).await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::new(super::DbKind::Postgres).await;
                    super::$name(&db).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::new(super::DbKind::MySql).await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

on_all!(
    create_with_types_key_and_index,
    upsert_splits_and_updates,
    not_null_violation_rolls_back_the_chunk,
    json_types_round_trip,
    append_keeps_special_characters,
    bad_identifiers_are_refused,
    columns_from_the_first_item,
    unreachable_database_is_transient,
    checkpoint_store_fences_a_stale_execution,
);

/// PostgreSQL's bulk upserts: `COPY` while the keys are new, `MERGE … UNNEST`
/// once some exist (then `COPY` again after a back-off), all or nothing either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bulk_upserts() {
    let db = TestDb::new(DbKind::Postgres).await;
    let mut w = db.opened(measurement_options()).await;
    let check = db.check().await;

    // New keys: one COPY.
    let first = measurements(0..2500, "v1");
    w.write_items(&first).await.unwrap();
    assert_eq!(w.statements(), 1);
    assert_eq!(check.count("measurements").await, 2500);

    // Existing keys: the COPY fails as a whole, then one MERGE; a key twice in
    // the chunk keeps the last item.
    let mut second = measurements(2000..3000, "v2");
    second.push(measurement(2001, "v3"));
    w.write_items(&second).await.unwrap();
    assert_eq!(w.statements(), 3);
    assert_eq!(check.count("measurements").await, 3000);
    let rows = check
        .rows(
            "measurements",
            &["id", "note", "c05"],
            "WHERE id IN (1999, 2000, 2001) ORDER BY id",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            vec![s("1999"), s("v1 1999"), s("v1-5")],
            vec![s("2000"), s("v2 2000"), s("v2-5")],
            vec![s("2001"), s("v3 2001"), s("v3-5")]
        ]
    );

    // The next chunk skips the COPY (one MERGE), the one after tries it again.
    w.write_items(&[measurement(3000, "v1"), measurement(3001, "v1")])
        .await
        .unwrap();
    assert_eq!(w.statements(), 4);
    w.write_items(&[measurement(3002, "v1"), measurement(3003, "v1")])
        .await
        .unwrap();
    assert_eq!(w.statements(), 5);
    assert_eq!(check.count("measurements").await, 3004);

    // A NOT NULL violation among new keys (COPY) and among existing ones
    // (MERGE): an item error, nothing written.
    let mut bad = measurements(4000..4010, "v1");
    bad[5]["station"] = Value::Null;
    let err = w.write_items(&bad).await.unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    let mut bad = measurements(0..10, "v9");
    bad[7]["station"] = Value::Null;
    let err = w.write_items(&bad).await.unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    assert_eq!(check.count("measurements").await, 3004);
    let notes = check.rows("measurements", &["note"], "WHERE id = 3").await;
    assert_eq!(notes, vec![vec![s("v1 3")]]);
    // The connection is still good: the chunk without the bad item goes in.
    bad.remove(7);
    w.write_items(&bad).await.unwrap();
    let notes = check.rows("measurements", &["note"], "WHERE id = 3").await;
    assert_eq!(notes, vec![vec![s("v9 3")]]);

    // Through MERGE, typed arrays and text cast by the server alike.
    let options = keyed_table(
        "typed",
        &[
            ("i", "INTEGER"),
            ("f", "DOUBLE PRECISION"),
            ("b", "BOOLEAN"),
            ("j", "JSONB"),
            ("t", "TEXT"),
            ("n", "NUMERIC(10,2)"),
        ],
    );
    let mut w = db.opened(options).await;
    w.write_items(&[json!({"id": 1, "i": 1}), json!({"id": 2, "i": 2})])
        .await
        .unwrap();
    w.write_items(&[
        json!({"id": 1, "i": 7, "f": 1.5, "b": true, "j": {"a": [1, "x"]}, "t": "tab\there", "n": 1.23456}),
        json!({"id": 2, "i": "8", "f": "2.25", "b": "yes", "j": "s", "t": 5, "n": "2.5"}),
    ])
    .await
    .unwrap();
    let rows = check
        .rows_by_id("typed", &["id", "i", "f", "b", "j", "t", "n"])
        .await;
    assert_eq!(
        rows,
        vec![
            vec![
                s("1"),
                s("7"),
                s("1.5"),
                s("true"),
                s(r#"{"a": [1, "x"]}"#),
                s("tab\there"),
                s("1.23")
            ],
            vec![
                s("2"),
                s("8"),
                s("2.25"),
                s("true"),
                s(r#""s""#),
                s("5"),
                s("2.50")
            ],
        ]
    );
    // An integer out of the column's range is an item error, as is a bad value.
    let err = w
        .write_items(&[json!({"id": 1, "i": 1_i64 << 40}), json!({"id": 2})])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
    let err = w
        .write_items(&[json!({"id": 1, "f": "abc"}), json!({"id": 2})])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// FileWriter

fn chunk(range: std::ops::Range<i64>, tag: &str) -> Vec<Value> {
    range
        .map(|i| json!({"id": i, "name": format!("{tag}-{i}"), "value": i as f64 / 4.0}))
        .collect()
}

async fn restart_at_checkpoint(format: FileFormat) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out").join(match format {
        FileFormat::Csv => "data.csv",
        FileFormat::JsonLines => "data.jsonl",
    });
    let temp = FileWriter::temp_path_for(&path);
    let mut w = FileWriter::new(&path, format);
    w.open(None).await.unwrap();
    assert_eq!(w.checkpoint(), json!({"bytes": 0, "header_written": false}));
    w.write_items(&chunk(0..3, "one")).await.unwrap();
    w.write_items(&chunk(3..6, "two")).await.unwrap();
    let cp = w.checkpoint();
    assert_eq!(
        cp["bytes"].as_u64().unwrap(),
        std::fs::metadata(&temp).unwrap().len()
    );
    assert_eq!(cp["header_written"], json!(format == FileFormat::Csv));
    // Chunk 3 is written but its commit never happens (the process dies).
    w.write_items(&chunk(6..9, "three")).await.unwrap();
    drop(w);
    assert!(!path.exists());

    let mut w = FileWriter::new(&path, format);
    w.open(Some(&cp)).await.unwrap();
    assert_eq!(
        std::fs::metadata(&temp).unwrap().len(),
        cp["bytes"].as_u64().unwrap()
    );
    w.write_items(&chunk(6..9, "three-again")).await.unwrap();
    w.complete().await.unwrap();
    assert!(!temp.exists(), "the temp file is renamed away");

    let text = std::fs::read_to_string(&path).unwrap();
    let mut expected = Vec::new();
    expected.extend(chunk(0..3, "one"));
    expected.extend(chunk(3..6, "two"));
    expected.extend(chunk(6..9, "three-again"));
    match format {
        FileFormat::JsonLines => {
            let got: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(got, expected);
        }
        FileFormat::Csv => {
            let mut lines = vec!["id,name,value".to_string()];
            lines.extend(
                expected
                    .iter()
                    .map(|v| format!("{},{},{}", v["id"], v["name"].as_str().unwrap(), v["value"])),
            );
            assert_eq!(text, lines.join("\n") + "\n");
        }
    }
}

#[tokio::test]
async fn csv_file_restarts_at_its_checkpoint() {
    restart_at_checkpoint(FileFormat::Csv).await;
}

#[tokio::test]
async fn json_lines_file_restarts_at_its_checkpoint() {
    restart_at_checkpoint(FileFormat::JsonLines).await;
}

#[tokio::test]
async fn csv_escapes_delimiters_quotes_and_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let tricky = [
        "plain",
        "comma, inside",
        "semi; colon",
        "quote \" inside",
        "\"quoted\"",
        "new\nline",
        "cr\r\nlf",
        "tab\tin",
        "서울, \"종로\"\n측정소",
        "",
        " padded ",
    ];
    for delimiter in [b',', b';', b'\t'] {
        let path = dir.path().join(format!("tricky-{delimiter}.csv"));
        let mut w = FileWriter::csv(&path)
            .delimiter(delimiter)
            .columns(["id", "text", "nested", "missing"]);
        w.open(None).await.unwrap();
        let items: Vec<Value> = tricky
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"id": i, "text": t, "nested": {"t": t}, "extra": "dropped"}))
            .collect();
        w.write_items(&items).await.unwrap();
        w.complete().await.unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .from_path(&path)
            .unwrap();
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            ["id", "text", "nested", "missing"]
        );
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), tricky.len());
        for (i, (r, t)) in records.iter().zip(tricky).enumerate() {
            assert_eq!(&r[0], i.to_string());
            assert_eq!(&r[1], t);
            assert_eq!(
                serde_json::from_str::<Value>(&r[2]).unwrap(),
                json!({"t": t})
            );
            assert_eq!(&r[3], "");
        }
    }
    // Exact bytes for the common case.
    let path = dir.path().join("exact.csv");
    let mut w = FileWriter::csv(&path);
    w.write_items(&[json!({"a": "x,y", "b": "say \"hi\"", "c": "1\n2", "d": null, "e": true})])
        .await
        .unwrap();
    w.complete().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "a,b,c,d,e\n\"x,y\",\"say \"\"hi\"\"\",\"1\n2\",,true\n"
    );
    // A CSV row must be an object.
    let mut w = FileWriter::csv(dir.path().join("bad.csv"));
    let err = w.write_items(&[json!([1, 2])]).await.unwrap_err();
    assert!(matches!(err, WriteError::Item(_)), "{err:?}");
}

#[tokio::test]
async fn file_writer_fresh_open_discards_an_old_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    std::fs::write(FileWriter::temp_path_for(&path), "stale\n").unwrap();
    let mut w = FileWriter::json_lines(&path);
    w.open(None).await.unwrap();
    w.write_items(&[json!({"a": 1})]).await.unwrap();
    w.complete().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    // An empty CSV with declared columns still gets its header.
    let path = dir.path().join("empty.csv");
    let mut w = FileWriter::csv(&path).columns(["a", "b"]);
    w.open(None).await.unwrap();
    w.complete().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n");
    // A checkpoint past the end of the temp file cannot be resumed.
    let mut w = FileWriter::json_lines(dir.path().join("y.jsonl"));
    w.open(None).await.unwrap();
    let mut again = FileWriter::json_lines(dir.path().join("y.jsonl"));
    let err = again
        .open(Some(&json!({"bytes": 10, "header_written": false})))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Fatal(_)), "{err:?}");
}
