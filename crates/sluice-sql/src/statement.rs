//! Statements: bound arguments ([`Arg`]), a statement with its arguments
//! ([`Statement`]), placeholders, identifier quoting and the upsert clause.
//!
//! Every SQL text sluice builds goes through these few functions, so that a
//! dialect difference (`?` or `$n`, `"x"` or `` `x` ``, `ON CONFLICT` or
//! `ON DUPLICATE KEY`) is decided in one place. Values are always bound, never
//! put into SQL text.

use std::borrow::Cow;

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use crate::DbKind;

/// One bound argument, the same on every database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An integer.
    I64(i64),
    /// Text.
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::OptText(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}

/// A statement and its arguments, independent of the database it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'s> {
    /// The SQL text, with the placeholders of the database it is meant for.
    pub sql: Cow<'s, str>,
    /// The arguments, in placeholder order.
    pub args: Vec<Arg>,
}

impl<'s> Statement<'s> {
    /// `sql` without arguments yet.
    pub fn new(sql: impl Into<Cow<'s, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Binds the next argument.
    #[must_use]
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// The sqlx query of `sql` with `args` bound, for database `DB`.
pub fn build_query<'q, DB>(sql: &'q str, args: &'q [Arg]) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    args.iter()
        .fold(sqlx::query::<DB>(sql), |query, arg| match arg {
            Arg::I64(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::OptText(v) => query.bind(v.as_deref()),
        })
}

/// Appends the placeholder of the `n`-th argument (1-based): `$n` on
/// PostgreSQL, `?` on SQLite and MySQL. (SQLite also takes `$n`, but sqlx looks
/// each numbered one up by name, in linear time: thousands of them in one
/// statement cost quadratic time.)
pub fn push_placeholder(sql: &mut String, kind: DbKind, n: usize) {
    match kind {
        DbKind::Postgres => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
        DbKind::Sqlite | DbKind::MySql => sql.push('?'),
    }
}

/// `sql` written with `?` placeholders, each replaced by `kind`'s, numbered in
/// turn (`$1, $2, …` on PostgreSQL). For statements written once for every
/// database; `sql` must hold no `?` other than placeholders.
pub fn dialect(kind: DbKind, sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            push_placeholder(&mut out, kind, n);
        } else {
            out.push(c);
        }
    }
    out
}

/// `name` quoted as an identifier of `kind`: `` `name` `` on MySQL, `"name"`
/// elsewhere, with a quote character inside doubled (so that any text is one
/// identifier, never SQL).
pub fn quote_ident(kind: DbKind, name: &str) -> String {
    match kind {
        DbKind::MySql => format!("`{}`", name.replace('`', "``")),
        DbKind::Sqlite | DbKind::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// A dotted name (`table`, `schema.table`) quoted part by part.
pub fn quote_path<S: AsRef<str>>(kind: DbKind, parts: &[S]) -> String {
    parts
        .iter()
        .map(|p| quote_ident(kind, p.as_ref()))
        .collect::<Vec<_>>()
        .join(".")
}

/// The clause that turns an `INSERT` into an upsert on the conflict `keys`
/// (quoted column names), updating the `updates` columns (quoted) from the row
/// that was to be inserted:
///
/// - SQLite and PostgreSQL: `ON CONFLICT (k) DO UPDATE SET c = excluded.c`, or
///   `ON CONFLICT (k) DO NOTHING` without updates;
/// - MySQL: `ON DUPLICATE KEY UPDATE c = VALUES(c)` (without updates the first
///   key is set to itself, so that a duplicate is not an error).
///
/// The clause starts with a space. Empty when `keys` is.
pub fn upsert_clause<S: AsRef<str>>(kind: DbKind, keys: &[S], updates: &[S]) -> String {
    let Some(first) = keys.first() else {
        return String::new();
    };
    let join = |f: &dyn Fn(&str) -> String, cols: &[S]| {
        cols.iter()
            .map(|c| f(c.as_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        DbKind::Sqlite | DbKind::Postgres => {
            let keys = join(&|k| k.to_owned(), keys);
            if updates.is_empty() {
                format!(" ON CONFLICT ({keys}) DO NOTHING")
            } else {
                let set = join(&|c| format!("{c} = excluded.{c}"), updates);
                format!(" ON CONFLICT ({keys}) DO UPDATE SET {set}")
            }
        }
        DbKind::MySql => {
            let set = if updates.is_empty() {
                let k = first.as_ref();
                format!("{k} = {k}")
            } else {
                join(&|c| format!("{c} = VALUES({c})"), updates)
            };
            format!(" ON DUPLICATE KEY UPDATE {set}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(DbKind::Sqlite, "a"), "\"a\"");
        assert_eq!(quote_ident(DbKind::Postgres, "we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident(DbKind::MySql, "a`b"), "`a``b`");
        assert_eq!(quote_path(DbKind::Postgres, &["s", "t"]), "\"s\".\"t\"");
        assert_eq!(quote_path(DbKind::MySql, &["t"]), "`t`");
    }

    #[test]
    fn placeholders() {
        let mut s = String::new();
        for n in 1..=3 {
            push_placeholder(&mut s, DbKind::Postgres, n);
            push_placeholder(&mut s, DbKind::Sqlite, n);
            push_placeholder(&mut s, DbKind::MySql, n);
        }
        assert_eq!(s, "$1??$2??$3??");
    }

    #[test]
    fn upserts() {
        let k = ["\"id\""];
        assert_eq!(
            upsert_clause(DbKind::Sqlite, &k, &["\"v\"", "\"w\""]),
            " ON CONFLICT (\"id\") DO UPDATE SET \"v\" = excluded.\"v\", \"w\" = excluded.\"w\""
        );
        assert_eq!(
            upsert_clause(DbKind::Postgres, &k, &[]),
            " ON CONFLICT (\"id\") DO NOTHING"
        );
        assert_eq!(
            upsert_clause(DbKind::MySql, &["`id`"], &["`v`"]),
            " ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)"
        );
        assert_eq!(
            upsert_clause(DbKind::MySql, &["`id`"], &[]),
            " ON DUPLICATE KEY UPDATE `id` = `id`"
        );
        assert_eq!(upsert_clause::<&str>(DbKind::MySql, &[], &[]), "");
    }

    #[test]
    fn statements_collect_arguments() {
        let s = Statement::new("SELECT $1, $2, $3")
            .bind(1)
            .bind("x")
            .bind(None::<&str>);
        assert_eq!(
            s.args,
            [Arg::I64(1), Arg::Text("x".into()), Arg::OptText(None)]
        );
    }
}
