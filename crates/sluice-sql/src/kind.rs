//! [`DbKind`]: which of the three databases a URL or a pool is.

use std::fmt;

/// SQLite's bind-parameter limit: `SQLITE_MAX_VARIABLE_NUMBER`, 32766 in the SQLite
/// bundled with sqlx 0.8 (`libsqlite3-sys` 0.30, SQLite 3.46; the default since
/// SQLite 3.32).
pub const SQLITE_MAX_PARAMS: usize = 32_766;
/// PostgreSQL's bind-parameter limit (the protocol's unsigned 16-bit count).
pub const POSTGRES_MAX_PARAMS: usize = 65_535;
/// MySQL's and MariaDB's bind-parameter limit for a prepared statement.
pub const MYSQL_MAX_PARAMS: usize = 65_535;

/// Which database a URL points to or a pool is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbKind {
    /// SQLite (`sqlite://path.db`, `sqlite:path.db`, `sqlite::memory:`).
    Sqlite,
    /// PostgreSQL (`postgres://…`, `postgresql://…`).
    Postgres,
    /// MySQL or MariaDB (`mysql://…`, `mariadb://…`).
    MySql,
}

impl DbKind {
    /// The kind of database a URL points to, from its scheme (case-insensitive).
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }

    /// `sqlite`, `postgres` or `mysql`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// The most bind parameters one statement may carry.
    pub fn max_params(self) -> usize {
        match self {
            Self::Sqlite => SQLITE_MAX_PARAMS,
            Self::Postgres => POSTGRES_MAX_PARAMS,
            Self::MySql => MYSQL_MAX_PARAMS,
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(DbKind::from_url("sqlite://x.db"), Some(DbKind::Sqlite));
        assert_eq!(DbKind::from_url("sqlite::memory:"), Some(DbKind::Sqlite));
        assert_eq!(DbKind::from_url("SQLite:x.db"), Some(DbKind::Sqlite));
        assert_eq!(
            DbKind::from_url("postgresql://h/db"),
            Some(DbKind::Postgres)
        );
        assert_eq!(DbKind::from_url("mariadb://h/db"), Some(DbKind::MySql));
        assert_eq!(DbKind::from_url("redis://h"), None);
        assert_eq!(DbKind::from_url(""), None);
    }
}
