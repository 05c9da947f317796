//! The SQL job repository (SQLite and PostgreSQL).

/// The job repository on SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlRepository;
