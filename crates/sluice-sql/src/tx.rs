//! [`Tx`] and [`Row`]: a transaction and a result row on any of the three
//! databases, so that a statement written once (see [`Statement`]) runs on
//! whichever pool is in use without a `match` at every call.

use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Executor as _, MySql, Postgres, Row as _, Sqlite, Transaction, Type};

use crate::DbKind;
use crate::statement::{Statement, build_query};

/// A transaction on one of the databases (see [`Db::begin`](crate::Db::begin)
/// and [`Db::begin_write`](crate::Db::begin_write)). Dropped without
/// [`commit`](Self::commit), it rolls back.
#[derive(Debug)]
pub enum Tx {
    /// SQLite.
    Sqlite(Transaction<'static, Sqlite>),
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
    /// MySQL or MariaDB.
    MySql(Transaction<'static, MySql>),
}

/// Runs `$body` with `$tx` bound to the concrete sqlx transaction of a [`Tx`].
macro_rules! on_tx {
    ($t:expr, $tx:ident => $body:expr) => {
        match $t {
            Tx::Sqlite($tx) => $body,
            Tx::Postgres($tx) => $body,
            Tx::MySql($tx) => $body,
        }
    };
}

impl Tx {
    /// Which database.
    pub fn kind(&self) -> DbKind {
        match self {
            Tx::Sqlite(_) => DbKind::Sqlite,
            Tx::Postgres(_) => DbKind::Postgres,
            Tx::MySql(_) => DbKind::MySql,
        }
    }

    /// Runs `st`; rows affected.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn execute(&mut self, st: &Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(on_tx!(self, tx => build_query(&st.sql, &st.args)
            .execute(&mut **tx)
            .await?
            .rows_affected()))
    }

    /// Runs `st`; its first row, if any.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn fetch_optional(&mut self, st: &Statement<'_>) -> Result<Option<Row>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx) => build_query(&st.sql, &st.args)
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Sqlite),
            Tx::Postgres(tx) => build_query(&st.sql, &st.args)
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Postgres),
            Tx::MySql(tx) => build_query(&st.sql, &st.args)
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::MySql),
        })
    }

    /// Runs `st`; its first row.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error::RowNotFound`] when it returns none; the database's.
    pub async fn fetch_one(&mut self, st: &Statement<'_>) -> Result<Row, sqlx::Error> {
        self.fetch_optional(st)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs `st`; all its rows.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn fetch_all(&mut self, st: &Statement<'_>) -> Result<Vec<Row>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx) => wrap(
                build_query(&st.sql, &st.args).fetch_all(&mut **tx).await?,
                Row::Sqlite,
            ),
            Tx::Postgres(tx) => wrap(
                build_query(&st.sql, &st.args).fetch_all(&mut **tx).await?,
                Row::Postgres,
            ),
            Tx::MySql(tx) => wrap(
                build_query(&st.sql, &st.args).fetch_all(&mut **tx).await?,
                Row::MySql,
            ),
        })
    }

    /// Runs a script of one or more statements without arguments; rows
    /// affected in total.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn execute_script(&mut self, script: &str) -> Result<u64, sqlx::Error> {
        // `Executor::execute` returns a boxed `Send` future, unlike
        // `RawSql::execute`, whose generic future trips async-trait's `Send` check.
        Ok(on_tx!(self, tx => (&mut **tx)
            .execute(sqlx::raw_sql(script))
            .await?
            .rows_affected()))
    }

    /// Commits.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        on_tx!(self, tx => tx.commit().await)
    }
}

fn wrap<R>(raw: Vec<R>, f: fn(R) -> Row) -> Vec<Row> {
    raw.into_iter().map(f).collect()
}

/// A type every database decodes (`i64`, `String`, `bool`, their `Option`s, …):
/// what [`Row::get`] reads.
pub trait Decodable:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + for<'r> Decode<'r, MySql>
    + Type<MySql>
{
}

impl<T> Decodable for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + for<'r> Decode<'r, MySql>
        + Type<MySql>
{
}

/// A result row from one of the databases.
#[allow(missing_debug_implementations)]
pub enum Row {
    /// SQLite.
    Sqlite(SqliteRow),
    /// PostgreSQL.
    Postgres(PgRow),
    /// MySQL or MariaDB.
    MySql(MySqlRow),
}

impl Row {
    /// The value of `column`, decoded as `T` (a type every database decodes:
    /// `i64`, `String`, `bool`, their `Option`s, …).
    ///
    /// # Errors
    ///
    /// A missing column or a value that does not decode as `T`.
    pub fn get<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: Decodable,
    {
        match self {
            Row::Sqlite(r) => r.try_get(column),
            Row::Postgres(r) => r.try_get(column),
            Row::MySql(r) => r.try_get(column),
        }
    }

    /// The value of the `index`-th column (0-based), decoded as `T`.
    ///
    /// # Errors
    ///
    /// A missing column or a value that does not decode as `T`.
    pub fn get_at<T>(&self, index: usize) -> Result<T, sqlx::Error>
    where
        T: Decodable,
    {
        match self {
            Row::Sqlite(r) => r.try_get(index),
            Row::Postgres(r) => r.try_get(index),
            Row::MySql(r) => r.try_get(index),
        }
    }
}
