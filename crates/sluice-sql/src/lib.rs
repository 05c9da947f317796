//! The one SQL layer of sluice: everything that talks to SQLite, PostgreSQL or
//! MySQL/MariaDB (the job repository, the SQL queue broker, the schedule's fire
//! claims, the SQL reader, writer and tasklet) opens, quotes, binds, migrates
//! and classifies errors through this crate, so that a dialect rule is written
//! once.
//!
//! - [`DbKind`]: which database a URL or pool is;
//! - [`Db`]: an open pool, opened by [`Db::connect`] with [`ConnectSettings`]
//!   (SQLite's busy timeout and in-memory rule live there, once), with
//!   [`Tx`] / [`Row`] to run a [`Statement`] on whichever database is in use;
//! - [`Statement`], [`Arg`], [`push_placeholder`], [`quote_ident`],
//!   [`upsert_clause`]: building SQL text;
//! - [`Migrator`]: embedded migrations, applied once across processes;
//! - [`ErrorClass`]: transient, unique violation, refused data or other, from
//!   the driver's codes; [`SqlError`], this crate's error.
//!
//! ```no_run
//! use sluice_sql::{ConnectSettings, Db, Statement};
//! # async fn demo() -> Result<(), sluice_sql::SqlError> {
//! let db = Db::connect("sqlite::memory:", &ConnectSettings::new()).await?;
//! db.execute(&Statement::new("CREATE TABLE t (id BIGINT PRIMARY KEY)")).await?;
//! db.execute(&Statement::new("INSERT INTO t (id) VALUES ($1)").bind(7)).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod error;
mod kind;
mod migrate;
mod pool;
mod statement;
mod tx;

pub use error::{ErrorClass, SqlError, describe, is_already_exists};
pub use kind::{DbKind, MYSQL_MAX_PARAMS, POSTGRES_MAX_PARAMS, SQLITE_MAX_PARAMS};
pub use migrate::{IDENTITY, Migration, Migrator};
pub use pool::{ConnectSettings, Db, DbUrl, Journal, SQLITE_BUSY_TIMEOUT, is_memory_url};
pub use statement::{
    Arg, Statement, build_query, dialect, push_placeholder, quote_ident, quote_path, upsert_clause,
};
pub use tx::{Decodable, Row, Tx};

/// sqlx, as this crate uses it (for callers that need the concrete pools).
pub use sqlx;
