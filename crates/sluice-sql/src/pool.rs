//! [`Db`]: an open pool to one of the three databases, and the one way to open
//! it ([`Db::connect`], [`ConnectSettings`]).
//!
//! SQLite's rules live here once: every connection waits up to
//! [`SQLITE_BUSY_TIMEOUT`] for another writer, and an in-memory database
//! (`:memory:`, `mode=memory`) gets exactly one connection, kept forever, since
//! each new connection would be a new, empty database.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection as _, Executor as _};

use crate::DbKind;
use crate::error::{ErrorClass, SqlError};
use crate::statement::{Statement, build_query};
use crate::tx::{Row, Tx};

/// How long a SQLite connection waits for another connection's write lock.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection pool to SQLite, PostgreSQL or MySQL/MariaDB. Cheap to
/// clone (the pools are shared).
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL or MariaDB.
    MySql(MySqlPool),
}

/// Runs `$body` with `$pool` bound to the concrete sqlx pool of a [`Db`]
/// (the body is compiled once per database).
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
            $crate::Db::MySql($pool) => $body,
        }
    };
}

/// Whether a SQLite URL names an in-memory database.
pub fn is_memory_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.contains(":memory:") || lower.contains("mode=memory")
}

/// How SQLite journals: what a new database (or every one) is switched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Journal {
    /// Leave the database's journal mode as it is.
    #[default]
    Keep,
    /// WAL: readers never block the writer; a commit is one sync of the log.
    Wal,
    /// WAL for a database file this connect creates; an existing one keeps its mode.
    WalWhenNew,
}

/// How to open a database: pool size and timeouts, and the per-database
/// session settings callers choose. [`ConnectSettings::new`] gives one
/// connection, a 30 s acquire timeout and no other setting.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectSettings {
    /// At most this many connections (SQLite in memory: always one).
    pub max_connections: u32,
    /// How long taking a connection (connecting included) may take.
    pub acquire_timeout: Duration,
    /// Close idle connections after this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// SQLite: create the file when missing.
    pub create_if_missing: bool,
    /// SQLite: the journal mode.
    pub journal: Journal,
    /// SQLite: `synchronous = NORMAL` (safe with WAL; one sync per checkpoint).
    pub synchronous_normal: bool,
    /// SQLite: enforce foreign keys.
    pub foreign_keys: bool,
    /// PostgreSQL: make one direct connection before the pool, so that a refused
    /// connection, unknown host or bad password is reported at once and by name
    /// (the pool would retry until its timeout and say only "pool timed out").
    pub check_first: bool,
    /// MySQL: run sessions in strict mode (`STRICT_ALL_TABLES`), so that a bad
    /// value is refused rather than truncated with a warning.
    pub mysql_strict: bool,
    /// Log statements, and slow ones, at debug level; off for bulk writers.
    pub log_statements: bool,
}

/// Setters that turn a boolean field of [`ConnectSettings`] on.
macro_rules! flag_setters {
    ($($(#[$doc:meta])* $field:ident;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $field(mut self) -> Self {
                self.$field = true;
                self
            }
        )*
    };
}

/// Setters of fields of [`ConnectSettings`].
macro_rules! value_setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

impl ConnectSettings {
    /// One connection, 30 s acquire timeout, sqlx's default idle timeout, no
    /// session settings.
    pub fn new() -> Self {
        Self {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            create_if_missing: false,
            journal: Journal::Keep,
            synchronous_normal: false,
            foreign_keys: false,
            check_first: false,
            mysql_strict: false,
            log_statements: true,
        }
    }

    value_setters! {
        /// Sets [`max_connections`](Self::max_connections).
        max_connections: u32;
        /// Sets [`acquire_timeout`](Self::acquire_timeout).
        acquire_timeout: Duration;
        /// Sets [`idle_timeout`](Self::idle_timeout).
        idle_timeout: Option<Duration>;
    }

    /// SQLite: creates the file when missing, with `journal`.
    #[must_use]
    pub fn create(mut self, journal: Journal) -> Self {
        self.create_if_missing = true;
        self.journal = journal;
        self
    }

    flag_setters! {
        /// SQLite: `synchronous = NORMAL`.
        synchronous_normal;
        /// SQLite: foreign keys on.
        foreign_keys;
        /// PostgreSQL: one direct connection first (see [`check_first`](Self::check_first)).
        check_first;
        /// MySQL: strict sessions.
        mysql_strict;
    }

    /// Statement logging off.
    #[must_use]
    pub fn quiet(mut self) -> Self {
        self.log_statements = false;
        self
    }
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// A parsed database URL: its kind and driver settings, checked without
/// connecting.
#[derive(Debug, Clone)]
pub enum DbUrl {
    /// SQLite.
    Sqlite(SqliteConnectOptions),
    /// PostgreSQL.
    Postgres(PgConnectOptions),
    /// MySQL or MariaDB (`mariadb://` is read as `mysql://`).
    MySql(MySqlConnectOptions),
}

impl DbUrl {
    /// Parses `url` (`sqlite:…`, `postgres://…`, `postgresql://…`, `mysql://…`,
    /// `mariadb://…`).
    ///
    /// # Errors
    ///
    /// [`SqlError::UnsupportedUrl`] for another scheme, [`SqlError::InvalidUrl`]
    /// for a malformed URL; both name the URL with its password redacted.
    pub fn parse(url: &str) -> Result<Self, SqlError> {
        let kind = DbKind::from_url(url).ok_or_else(|| SqlError::UnsupportedUrl {
            url: sluice_core::redact_url(url),
            expected: "sqlite://, postgres:// or mysql://",
        })?;
        let bad = |e: sqlx::Error| SqlError::InvalidUrl {
            url: sluice_core::redact_url(url),
            message: scrub(url, &e.to_string()),
        };
        Ok(match kind {
            DbKind::Sqlite => Self::Sqlite(SqliteConnectOptions::from_str(url).map_err(bad)?),
            DbKind::Postgres => Self::Postgres(PgConnectOptions::from_str(url).map_err(bad)?),
            DbKind::MySql => {
                let normalized = match url.get(..8) {
                    Some(s) if s.eq_ignore_ascii_case("mariadb:") => {
                        Cow::Owned(format!("mysql:{}", &url[8..]))
                    }
                    _ => Cow::Borrowed(url),
                };
                Self::MySql(MySqlConnectOptions::from_str(&normalized).map_err(bad)?)
            }
        })
    }

    /// Which database.
    pub fn kind(&self) -> DbKind {
        match self {
            Self::Sqlite(_) => DbKind::Sqlite,
            Self::Postgres(_) => DbKind::Postgres,
            Self::MySql(_) => DbKind::MySql,
        }
    }

    /// Opens a pool with `settings`. `url` is the URL this was parsed from, for
    /// the error message (redacted).
    ///
    /// # Errors
    ///
    /// [`SqlError::Connect`], naming the URL with its password redacted (and
    /// removed from the driver's message), with the error's class.
    pub async fn connect(&self, url: &str, settings: &ConnectSettings) -> Result<Db, SqlError> {
        let fail = |e: sqlx::Error| SqlError::Connect {
            url: sluice_core::redact_url(url),
            message: scrub(url, &e.to_string()),
            class: ErrorClass::of(&e),
        };
        let s = settings;
        Ok(match self {
            Self::Sqlite(o) => {
                let mut o = o.clone().busy_timeout(SQLITE_BUSY_TIMEOUT);
                if s.create_if_missing {
                    o = o.create_if_missing(true);
                }
                let wal = match s.journal {
                    Journal::Keep => false,
                    Journal::Wal => true,
                    Journal::WalWhenNew => !o.get_filename().exists(),
                };
                if wal {
                    o = o.journal_mode(SqliteJournalMode::Wal);
                }
                if s.synchronous_normal {
                    o = o.synchronous(SqliteSynchronous::Normal);
                }
                if s.foreign_keys {
                    o = o.foreign_keys(true);
                }
                o = log_levels(o, s.log_statements);
                let pool = SqlitePoolOptions::new().acquire_timeout(s.acquire_timeout);
                let pool = if is_memory_url(url) {
                    // Each connection to `:memory:` would be its own database: keep
                    // exactly one, forever.
                    pool.min_connections(1)
                        .max_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    let pool = pool
                        .max_connections(s.max_connections)
                        .idle_timeout(s.idle_timeout);
                    if s.idle_timeout.is_none() {
                        pool.max_lifetime(None)
                    } else {
                        pool
                    }
                };
                // Opening can meet another process's lock (a `serve` creating or
                // migrating the file while `queue list` opens it) with a BUSY the
                // busy handler does not cover (the WAL switch, recovery): try again
                // within the busy timeout.
                let start = std::time::Instant::now();
                let pool = loop {
                    match pool.clone().connect_with(o.clone()).await {
                        Err(e)
                            if ErrorClass::of(&e) == ErrorClass::Transient
                                && start.elapsed() < SQLITE_BUSY_TIMEOUT =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        r => break r.map_err(fail)?,
                    }
                };
                Db::Sqlite(pool)
            }
            Self::Postgres(o) => {
                let o = log_levels(o.clone(), s.log_statements);
                if s.check_first {
                    PgConnection::connect_with(&o)
                        .await
                        .map_err(fail)?
                        .close()
                        .await
                        .map_err(fail)?;
                }
                Db::Postgres(
                    PgPoolOptions::new()
                        .max_connections(s.max_connections)
                        .acquire_timeout(s.acquire_timeout)
                        .idle_timeout(s.idle_timeout)
                        .connect_with(o)
                        .await
                        .map_err(fail)?,
                )
            }
            Self::MySql(o) => {
                let o = log_levels(o.clone(), s.log_statements);
                let strict = s.mysql_strict;
                Db::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(s.max_connections)
                        .acquire_timeout(s.acquire_timeout)
                        .idle_timeout(s.idle_timeout)
                        .after_connect(move |conn, _| {
                            Box::pin(async move {
                                if strict {
                                    conn.execute(
                                        "SET SESSION sql_mode = \
                                         CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
                                    )
                                    .await?;
                                }
                                Ok(())
                            })
                        })
                        .connect_with(o)
                        .await
                        .map_err(fail)?,
                )
            }
        })
    }
}

/// How long a statement runs before sqlx calls it slow (logged at debug level).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// `o` logging its statements, and its slow ones (over [`SLOW_STATEMENT`]), at
/// debug level only (sqlx's slow-statement default is a warning), or neither
/// when `log` is off. PostgreSQL notices (`relation … already exists,
/// skipping`) are sqlx's `sqlx::postgres::notice` events at info level; the
/// binary's default log filter keeps those out.
fn log_levels<O: sqlx::ConnectOptions>(o: O, log: bool) -> O {
    if log {
        o.log_statements(log::LevelFilter::Debug)
            .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT)
    } else {
        o.disable_statement_logging()
    }
}

/// `message` with every password of `url` (user info and `password=`
/// parameters) replaced by `***`: drivers sometimes quote the URL.
fn scrub(url: &str, message: &str) -> String {
    let mut message = message.to_owned();
    for secret in url_secrets(url) {
        message = message.replace(&secret, "***");
    }
    message
}

/// The passwords in `url` (user info and `password=` parameters).
fn url_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = auth.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            out.push(pw.to_owned());
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                out.push(v.to_owned());
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

impl Db {
    /// Parses `url` and opens a pool with `settings` (see [`DbUrl`]).
    ///
    /// # Errors
    ///
    /// As [`DbUrl::parse`] and [`DbUrl::connect`].
    pub async fn connect(url: &str, settings: &ConnectSettings) -> Result<Db, SqlError> {
        DbUrl::parse(url)?.connect(url, settings).await
    }

    /// Which database.
    pub fn kind(&self) -> DbKind {
        match self {
            Db::Sqlite(_) => DbKind::Sqlite,
            Db::Postgres(_) => DbKind::Postgres,
            Db::MySql(_) => DbKind::MySql,
        }
    }

    /// Closes the pool, waiting for connections in use to return.
    pub async fn close(&self) {
        on_db!(self, p => p.close().await);
    }

    /// Begins a transaction (on SQLite a deferred one: a consistent view).
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::MySql(p) => Tx::MySql(p.begin().await?),
        })
    }

    /// Begins a transaction that will write. On SQLite it takes the database's
    /// write lock at once (`BEGIN IMMEDIATE`, waiting up to the busy timeout), so
    /// that it never reads a snapshot it then fails to upgrade, and concurrent
    /// writers queue instead of failing.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Db::Sqlite(p) => Ok(Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?)),
            _ => self.begin().await,
        }
    }

    /// Runs `st` outside a transaction; rows affected.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn execute(&self, st: &Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(on_db!(self, p => build_query(&st.sql, &st.args).execute(p).await?.rows_affected()))
    }

    /// Runs `st` outside a transaction; its rows.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn fetch_all(&self, st: &Statement<'_>) -> Result<Vec<Row>, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) => rows(
                build_query(&st.sql, &st.args).fetch_all(p).await?,
                Row::Sqlite,
            ),
            Db::Postgres(p) => rows(
                build_query(&st.sql, &st.args).fetch_all(p).await?,
                Row::Postgres,
            ),
            Db::MySql(p) => rows(
                build_query(&st.sql, &st.args).fetch_all(p).await?,
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
    pub async fn execute_script(&self, script: &str) -> Result<u64, sqlx::Error> {
        Ok(on_db!(self, p => p.execute(script).await?.rows_affected()))
    }
}

fn rows<R>(raw: Vec<R>, wrap: fn(R) -> Row) -> Vec<Row> {
    raw.into_iter().map(wrap).collect()
}

impl From<SqlitePool> for Db {
    fn from(p: SqlitePool) -> Self {
        Db::Sqlite(p)
    }
}

impl From<PgPool> for Db {
    fn from(p: PgPool) -> Self {
        Db::Postgres(p)
    }
}

impl From<MySqlPool> for Db {
    fn from(p: MySqlPool) -> Self {
        Db::MySql(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_urls() {
        assert_eq!(url_secrets("postgres://u:pw@h/db"), ["pw"]);
        assert_eq!(url_secrets("postgres://u@h/db?password=x&a=b"), ["x"]);
        assert!(url_secrets("sqlite::memory:").is_empty());
        assert_eq!(scrub("mysql://u:s3@h/d", "bad s3 here"), "bad *** here");
        assert_eq!(
            url_secrets("postgres://u:s3cret@db/x?password=p2"),
            vec!["s3cret".to_owned(), "p2".to_owned()]
        );
    }

    #[test]
    fn memory_urls() {
        assert!(is_memory_url("sqlite::memory:"));
        assert!(is_memory_url("sqlite:file:x?mode=memory&cache=shared"));
        assert!(!is_memory_url("sqlite://x.db"));
    }

    #[test]
    fn parsing() {
        assert_eq!(
            DbUrl::parse("mariadb://u@h/d").unwrap().kind(),
            DbKind::MySql
        );
        let e = DbUrl::parse("redis://u:pw@h").unwrap_err();
        assert!(matches!(e, SqlError::UnsupportedUrl { .. }), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }
}
