//! What a database error means for the caller: [`ErrorClass`] (retry, a refused
//! row, a duplicate key, or neither), decided once from the driver's error codes
//! rather than by each caller reading the message; and [`SqlError`], this
//! crate's own error.

use sqlx::error::DatabaseError;

use crate::DbKind;

/// What can be done about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Retrying may succeed: the connection was lost or refused, the pool timed
    /// out or is closed, or the database reported a serialization failure, a
    /// deadlock, a busy or locked database, too many connections, a cancelled
    /// statement or that it is shutting down.
    Transient,
    /// A unique or primary-key violation.
    UniqueViolation,
    /// The data was refused: another constraint (not null, foreign key, check),
    /// a value that does not fit its column, a value that cannot be encoded.
    Data,
    /// Anything else (bad SQL, a missing table, permissions, …): retrying the
    /// same thing fails the same way.
    Other,
}

impl ErrorClass {
    /// The class of `e`.
    pub fn of(e: &sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Database(db) => Self::of_database(db.as_ref()),
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => Self::Transient,
            E::Encode(_) => Self::Data,
            _ => Self::Other,
        }
    }

    /// The class of an error the database reported.
    pub fn of_database(db: &dyn DatabaseError) -> Self {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        match database_kind(db) {
            DbKind::Postgres => match code.as_str() {
                "23505" => Self::UniqueViolation,
                "21000" => Self::Data,
                "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" => {
                    Self::Transient
                }
                c => match c.get(..2) {
                    Some("22" | "23") => Self::Data,
                    Some("08" | "53") => Self::Transient,
                    _ => Self::Other,
                },
            },
            DbKind::Sqlite => {
                let extended = code.parse::<i32>().unwrap_or(1);
                match extended {
                    // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
                    1555 | 2067 => Self::UniqueViolation,
                    _ => match extended & 0xff {
                        // CONSTRAINT, MISMATCH, TOOBIG
                        18..=20 => Self::Data,
                        // BUSY, LOCKED, IOERR, FULL, PROTOCOL
                        5 | 6 | 10 | 13 | 15 => Self::Transient,
                        _ => Self::Other,
                    },
                }
            }
            DbKind::MySql => {
                let number = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map_or(0, |m| m.number());
                match number {
                    1062 | 1586 => Self::UniqueViolation,
                    1048 | 1169 | 1264 | 1265 | 1292 | 1364 | 1366 | 1367 | 1406 | 1411 | 1451
                    | 1452 | 1690 | 3140 | 3819 | 4025 | 1153 | 1301 => Self::Data,
                    1040 | 1053 | 1158..=1161 | 1205 | 1213 | 1927 | 2002 | 2003 | 2006 | 2013 => {
                        Self::Transient
                    }
                    _ => match code.get(..2) {
                        Some("22" | "23") => Self::Data,
                        Some("08" | "40") => Self::Transient,
                        _ => Self::Other,
                    },
                }
            }
        }
    }

    /// Whether retrying may succeed.
    pub fn is_transient(self) -> bool {
        self == Self::Transient
    }
}

/// Whether `e` says that what a DDL statement creates exists already: a
/// duplicate table or object (`42P07`, `42710`) or a unique violation in the
/// catalog, which is how PostgreSQL reports two `CREATE TABLE IF NOT EXISTS`
/// racing. Once the object exists, such a lost race is harmless.
pub fn is_already_exists(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            ErrorClass::of_database(db.as_ref()) == ErrorClass::UniqueViolation
                || matches!(db.code().as_deref(), Some("42P07" | "42710"))
        }
        _ => false,
    }
}

/// Which driver reported `db`.
fn database_kind(db: &dyn DatabaseError) -> DbKind {
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        DbKind::Postgres
    } else if db
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some()
    {
        DbKind::MySql
    } else {
        DbKind::Sqlite
    }
}

/// `e` as text for a message: the database's message with its code (and
/// PostgreSQL's detail), or the driver's text for other errors:
///
/// - PostgreSQL: `{message} (SQLSTATE {code})[: {detail}]`;
/// - SQLite: `{message} (SQLite code {code})`;
/// - MySQL: `{message} (error {number}, SQLSTATE {code})`.
pub fn describe(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = e else {
        return e.to_string();
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let msg = db.message();
    match database_kind(db.as_ref()) {
        DbKind::Postgres => {
            let text = format!("{msg} (SQLSTATE {code})");
            match db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.detail())
            {
                Some(detail) => format!("{text}: {detail}"),
                None => text,
            }
        }
        DbKind::Sqlite => format!("{msg} (SQLite code {code})"),
        DbKind::MySql => {
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map_or(0, |m| m.number());
            format!("{msg} (error {number}, SQLSTATE {code})")
        }
    }
}

/// An error of this crate: opening a database, migrating it, or a statement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL names no supported database (or one the caller does not take).
    #[error("unsupported database URL {url}: use {expected}")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
        /// What the caller takes, e.g. `sqlite://path.db or postgres://user@host/db`.
        expected: &'static str,
    },
    /// The URL could not be parsed into connection settings.
    #[error("invalid URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong, with any password of the URL removed.
        message: String,
    },
    /// The database could not be opened.
    #[error("cannot open {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's error, with any password of the URL removed.
        message: String,
        /// What it means.
        class: ErrorClass,
    },
    /// A migration failed (it was rolled back).
    #[error("migration {version}: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The database's error.
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl SqlError {
    /// What can be done about it (an unsupported or invalid URL is
    /// [`ErrorClass::Other`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Connect { class, .. } => *class,
            Self::Migration { source, .. } | Self::Db(source) => ErrorClass::of(source),
            Self::UnsupportedUrl { .. } | Self::InvalidUrl { .. } => ErrorClass::Other,
        }
    }
}
