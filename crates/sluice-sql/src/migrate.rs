//! The one migration runner: embedded, numbered scripts applied once each, in
//! order, each in its own transaction with its bookkeeping row, serialised
//! across processes (PostgreSQL: an advisory lock; SQLite: the write lock of
//! `BEGIN IMMEDIATE`), so that several nodes starting at once migrate once.

use crate::error::SqlError;
use crate::statement::Statement;
use crate::{Db, DbKind};

/// One embedded migration, in each dialect it runs on.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version; applied in increasing order, each once.
    pub version: i64,
    /// The script for SQLite.
    pub sqlite: &'static str,
    /// The script for PostgreSQL.
    pub postgres: &'static str,
}

/// A schema's migrations and where their bookkeeping lives.
#[derive(Debug, Clone, Copy)]
pub struct Migrator {
    /// The table recording applied versions, e.g. `sluice_batch_migrations`.
    pub table: &'static str,
    /// The PostgreSQL advisory lock key that serialises migrating processes (any
    /// constant, one per schema).
    pub lock_key: i64,
    /// The history, oldest first. Append only: never edit an applied script.
    pub migrations: &'static [Migration],
}

impl Migrator {
    /// Applies the migrations `db` lacks; `applied_at` (ms) is recorded with
    /// each.
    ///
    /// # Errors
    ///
    /// [`SqlError::Migration`] when a script fails (it is rolled back),
    /// [`SqlError::Db`] for the bookkeeping, [`SqlError::UnsupportedUrl`] on
    /// MySQL, which no schema of sluice lives on.
    pub async fn run(&self, db: &Db, applied_at: i64) -> Result<(), SqlError> {
        if db.kind() == DbKind::MySql {
            return Err(SqlError::UnsupportedUrl {
                url: "mysql (pool)".into(),
                expected: "sqlite:// or postgres:// for a migrated schema",
            });
        }
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} \
             (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            self.table
        );
        let check = format!("SELECT version FROM {} WHERE version = $1", self.table);
        let record = format!(
            "INSERT INTO {} (version, applied_at) VALUES ($1, $2)",
            self.table
        );
        for m in self.migrations {
            // SQLite: BEGIN IMMEDIATE holds the write lock from here on.
            let mut tx = db.begin_write().await?;
            let script = if db.kind() == DbKind::Postgres {
                // Serialise with any other process migrating the same database;
                // released at commit.
                tx.execute(&Statement::new("SELECT pg_advisory_xact_lock($1)").bind(self.lock_key))
                    .await?;
                m.postgres
            } else {
                m.sqlite
            };
            tx.execute(&Statement::new(create.as_str())).await?;
            let applied = !tx
                .fetch_all(&Statement::new(check.as_str()).bind(m.version))
                .await?
                .is_empty();
            if !applied {
                tx.execute_script(script)
                    .await
                    .map_err(|source| SqlError::Migration {
                        version: m.version,
                        source,
                    })?;
                tx.execute(
                    &Statement::new(record.as_str())
                        .bind(m.version)
                        .bind(applied_at),
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}
